package render

import (
	"bufio"
	"io"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tcplens/tcplens/internal/procs"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// SocketColumns selects the optional columns of a socket listing.
type SocketColumns struct {
	Timers bool // -o
	Info   bool // -i
	Procs  bool // -p
}

// SocketWriter writes sockets one at a time, so a listing of a million
// sockets streams in constant memory. Call Flush at the end.
type SocketWriter interface {
	Write(s *sockdiag.Socket, owners []*procs.Process) error
	Flush() error
}

// NewSocketTable returns a writer of ss-like rows with fixed-width columns
// (a streaming listing cannot measure its widest row first).
func NewSocketTable(w io.Writer, c SocketColumns) SocketWriter {
	t := &socketTable{w: bufio.NewWriterSize(w, 256<<10), c: c}
	t.header()
	return t
}

type socketTable struct {
	w   *bufio.Writer
	c   SocketColumns
	buf []byte
}

const addrWidth = 22

func pad(b []byte, start, width int) []byte {
	for len(b)-start < width {
		b = append(b, ' ')
	}
	return append(b, ' ')
}

func (t *socketTable) header() {
	var b []byte
	col := func(name string, width int) {
		st := len(b)
		b = append(b, name...)
		b = pad(b, st, width)
	}
	col("State", 12)
	col("Recv-Q", 7)
	col("Send-Q", 7)
	col("Local", addrWidth)
	col("Peer", addrWidth)
	if t.c.Timers {
		col("Timer", 21)
	}
	if t.c.Info {
		col("RTT/var(ms)", 12)
		col("RTO(ms)", 8)
		col("Cwnd", 5)
		col("Retrans", 8)
		col("Idle", 8)
		col("Sent/Recv", 16)
	}
	if t.c.Procs {
		col("Process", 0)
	}
	t.w.Write(trimRight(b))
	t.w.WriteByte('\n')
}

func trimRight(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == ' ' {
		b = b[:len(b)-1]
	}
	return b
}

func (t *socketTable) Write(s *sockdiag.Socket, owners []*procs.Process) error {
	b := t.buf[:0]
	st := len(b)
	b = append(b, s.State.String()...)
	b = pad(b, st, 12)
	st = len(b)
	b = strconv.AppendUint(b, uint64(s.RecvQ), 10)
	b = pad(b, st, 7)
	st = len(b)
	b = strconv.AppendUint(b, uint64(s.SendQ), 10)
	b = pad(b, st, 7)
	st = len(b)
	b = s.Local.AppendTo(b)
	b = pad(b, st, addrWidth)
	st = len(b)
	b = s.Remote.AppendTo(b)
	b = pad(b, st, addrWidth)
	if t.c.Timers {
		st = len(b)
		b = appendTimer(b, s)
		b = pad(b, st, 21)
	}
	if t.c.Info {
		st = len(b)
		if s.HasInfo {
			i := &s.Info
			b = strconv.AppendFloat(b, float64(i.RTT)/1000, 'f', 1, 64)
			b = append(b, '/')
			b = strconv.AppendFloat(b, float64(i.RTTVar)/1000, 'f', 1, 64)
			b = pad(b, st, 12)
			st = len(b)
			b = strconv.AppendUint(b, uint64(i.RTO/1000), 10)
			b = pad(b, st, 8)
			st = len(b)
			b = strconv.AppendUint(b, uint64(i.SndCwnd), 10)
			b = pad(b, st, 5)
			st = len(b)
			b = strconv.AppendUint(b, uint64(i.TotalRetrans), 10)
			b = pad(b, st, 8)
			st = len(b)
			b = appendDuration(b, i.Idle())
			b = pad(b, st, 8)
			st = len(b)
			b = appendBytes(b, i.BytesSent)
			b = append(b, '/')
			b = appendBytes(b, i.BytesRecv)
			b = pad(b, st, 16)
		} else {
			b = append(b, '-')
			b = pad(b, st, 12+1+8+1+5+1+8+1+8+1+16)
		}
	}
	if t.c.Procs {
		b = appendOwners(b, owners)
	}
	b = append(trimRight(b), '\n')
	t.buf = b
	_, err := t.w.Write(b)
	return err
}

func appendOwners(b []byte, owners []*procs.Process) []byte {
	for i, p := range owners {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, p.Comm...)
		b = append(b, '/')
		b = strconv.AppendInt(b, int64(p.PID), 10)
	}
	return b
}

// appendBytes writes a byte count with a binary unit: 512B, 1.5K, 20M, 3.1G.
func appendBytes(b []byte, n uint64) []byte {
	const unit = 1024
	if n < unit {
		return append(strconv.AppendUint(b, n, 10), 'B')
	}
	f, u := float64(n), 0
	for f >= unit && u < 4 {
		f /= unit
		u++
	}
	prec := 1
	if f >= 100 {
		prec = 0
	}
	return append(strconv.AppendFloat(b, f, 'f', prec, 64), "BKMGT"[u])
}

func (t *socketTable) Flush() error { return t.w.Flush() }

// NewSocketJSON returns a writer of one JSON object per line.
func NewSocketJSON(w io.Writer, c SocketColumns) SocketWriter {
	return &socketJSON{w: bufio.NewWriterSize(w, 256<<10), c: c}
}

type socketJSON struct {
	w   *bufio.Writer
	c   SocketColumns
	buf []byte
}

// Write encodes by hand: encoding/json through reflection is the slowest
// part of a million-socket listing.
func (j *socketJSON) Write(s *sockdiag.Socket, owners []*procs.Process) error {
	b := append(j.buf[:0], `{"state":"`...)
	b = append(b, s.State.String()...)
	if s.Family == 10 {
		b = append(b, `","family":"inet6","local_addr":"`...)
	} else {
		b = append(b, `","family":"inet","local_addr":"`...)
	}
	b = s.Local.Addr().AppendTo(b)
	b = append(b, `","local_port":`...)
	b = strconv.AppendUint(b, uint64(s.Local.Port()), 10)
	b = append(b, `,"remote_addr":"`...)
	b = s.Remote.Addr().AppendTo(b)
	b = append(b, `","remote_port":`...)
	b = strconv.AppendUint(b, uint64(s.Remote.Port()), 10)
	b = appendField(b, "recv_q", uint64(s.RecvQ))
	b = appendField(b, "send_q", uint64(s.SendQ))
	b = append(b, `,"timer":"`...)
	b = append(b, s.Timer.String()...)
	b = append(b, '"')
	b = appendField(b, "timer_expires_ms", uint64(s.TimerExpires/time.Millisecond))
	b = appendField(b, "retrans", uint64(s.Retrans))
	b = appendField(b, "uid", uint64(s.UID))
	b = appendField(b, "inode", uint64(s.Inode))
	b = appendField(b, "cookie", s.Cookie)
	if s.HasInfo {
		i := &s.Info
		b = append(b, `,"info":{"rtt_us":`...)
		b = strconv.AppendUint(b, uint64(i.RTT), 10)
		b = appendField(b, "rttvar_us", uint64(i.RTTVar))
		b = appendField(b, "rto_us", uint64(i.RTO))
		b = appendField(b, "backoff", uint64(i.Backoff))
		b = appendField(b, "retransmits", uint64(i.Retransmits))
		b = appendField(b, "total_retrans", uint64(i.TotalRetrans))
		b = appendField(b, "lost", uint64(i.Lost))
		b = appendField(b, "unacked", uint64(i.Unacked))
		b = appendField(b, "last_data_sent_ms", uint64(i.LastDataSent))
		b = appendField(b, "last_data_recv_ms", uint64(i.LastDataRecv))
		b = appendField(b, "last_ack_recv_ms", uint64(i.LastAckRecv))
		b = appendField(b, "bytes_acked", i.BytesAcked)
		b = appendField(b, "bytes_received", i.BytesRecv)
		b = appendField(b, "bytes_sent", i.BytesSent)
		b = appendField(b, "snd_cwnd", uint64(i.SndCwnd))
		b = appendField(b, "min_rtt_us", uint64(i.MinRTT))
		b = append(b, '}')
	}
	if s.Cong != "" {
		b = append(b, `,"cong":"`...)
		b = appendJSONString(b, s.Cong)
		b = append(b, '"')
	}
	if j.c.Procs {
		b = append(b, `,"processes":[`...)
		for i, p := range owners {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"pid":`...)
			b = strconv.AppendInt(b, int64(p.PID), 10)
			b = append(b, `,"comm":"`...)
			b = appendJSONString(b, p.Comm)
			b = append(b, `"}`...)
		}
		b = append(b, ']')
	}
	b = append(b, "}\n"...)
	j.buf = b
	_, err := j.w.Write(b)
	return err
}

func appendField(b []byte, name string, v uint64) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return strconv.AppendUint(b, v, 10)
}

// appendJSONString escapes s for the inside of a JSON string; invalid UTF-8
// (a process may name itself anything) becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				b = append(b, `\ufffd`...)
			} else {
				b = append(b, s[i:i+n]...)
			}
			i += n
			continue
		}
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		default:
			b = append(b, c)
		}
		i++
	}
	return b
}

func (j *socketJSON) Flush() error { return j.w.Flush() }

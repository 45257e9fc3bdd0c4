package record

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// Captured is one full snapshot kept by a trigger: every socket except
// TIME_WAIT with its fields, and the TIME_WAIT tallies.
type Captured struct {
	Time   time.Time           `json:"time"`
	Role   string              `json:"role"` // before, trigger, after
	States analyze.StateCounts `json:"states"`
	Total  int                 `json:"total"`
	// Sockets holds at most Triggers.MaxSockets sockets; Omitted counts
	// the rest (listeners and non-ESTABLISHED sockets are kept first).
	Sockets  []CapturedSocket `json:"sockets"`
	Omitted  int              `json:"omitted,omitempty"`
	TimeWait []CapturedTW     `json:"time_wait"`
	// TimeWaitOmitted counts TIME_WAIT groups left out.
	TimeWaitOmitted int `json:"time_wait_omitted,omitempty"`
}

// CapturedSocket is the part of sockdiag.Socket worth keeping.
type CapturedSocket struct {
	State        string `json:"state"`
	Local        string `json:"local"`
	Remote       string `json:"remote"`
	RecvQ        uint32 `json:"recv_q"`
	SendQ        uint32 `json:"send_q"`
	Timer        string `json:"timer,omitempty"`
	TimerMs      int64  `json:"timer_ms,omitempty"`
	Retrans      uint8  `json:"retrans,omitempty"`
	UID          uint32 `json:"uid"`
	Inode        uint32 `json:"inode,omitempty"`
	RTTus        uint32 `json:"rtt_us,omitempty"`
	RTOus        uint32 `json:"rto_us,omitempty"`
	Backoff      uint8  `json:"backoff,omitempty"`
	Cwnd         uint32 `json:"cwnd,omitempty"`
	TotalRetrans uint32 `json:"total_retrans,omitempty"`
	LastSendMs   uint32 `json:"last_data_sent_ms,omitempty"`
	LastRecvMs   uint32 `json:"last_data_recv_ms,omitempty"`
	LastAckMs    uint32 `json:"last_ack_recv_ms,omitempty"`
	BytesAcked   uint64 `json:"bytes_acked,omitempty"`
	BytesRecv    uint64 `json:"bytes_received,omitempty"`
	Process      string `json:"process,omitempty"` // "comm/pid", first owner
}

// CapturedTW is one TIME_WAIT tally.
type CapturedTW struct {
	Side           string `json:"side"`
	Local          string `json:"local"`
	Remote         string `json:"remote"`
	Count          int    `json:"count"`
	MaxRemainingMs int64  `json:"max_remaining_ms"`
}

// capture converts a snapshot, keeping at most maxSockets sockets and
// maxSockets TIME_WAIT groups. Listeners come first in a snapshot; after
// them, sockets not ESTABLISHED are kept before ESTABLISHED ones, because
// the unusual states are what a trigger is about.
func capture(s *snapshot.Snapshot, role string, maxSockets int) *Captured {
	c := &Captured{Time: s.Time, Role: role, States: analyze.StateCounts(s.States), Total: s.Total()}
	keep := make([]int, 0, min(len(s.Sockets), maxSockets))
	for pass := 0; pass < 2 && len(keep) < maxSockets; pass++ {
		for i := range s.Sockets {
			if (s.Sockets[i].State == sockdiag.Established) != (pass == 1) {
				continue
			}
			if len(keep) == maxSockets {
				break
			}
			keep = append(keep, i)
		}
	}
	c.Omitted = len(s.Sockets) - len(keep)
	c.Sockets = make([]CapturedSocket, 0, len(keep))
	for _, i := range keep {
		c.Sockets = append(c.Sockets, captureSocket(s, &s.Sockets[i]))
	}
	tw := s.TimeWait
	if len(tw) > maxSockets {
		c.TimeWaitOmitted = len(tw) - maxSockets
		tw = tw[:maxSockets]
	}
	c.TimeWait = make([]CapturedTW, 0, len(tw))
	for _, g := range tw {
		c.TimeWait = append(c.TimeWait, CapturedTW{
			Side: g.Side.String(), Local: hostPort(g.Local.String(), g.LocalPort), Remote: hostPort(g.Remote.String(), g.RemotePort),
			Count: g.Count, MaxRemainingMs: g.MaxRemaining.Milliseconds(),
		})
	}
	return c
}

// hostPort writes "addr:port", or "addr:*" for a port dropped by the tally.
func hostPort(addr string, port uint16) string {
	p := "*"
	if port != 0 {
		p = strconv.Itoa(int(port))
	}
	if len(addr) > 0 && bytes.IndexByte([]byte(addr), ':') >= 0 {
		return "[" + addr + "]:" + p
	}
	return addr + ":" + p
}

func captureSocket(s *snapshot.Snapshot, sk *sockdiag.Socket) CapturedSocket {
	c := CapturedSocket{
		State: sk.State.String(), Local: sk.Local.String(), Remote: sk.Remote.String(),
		RecvQ: sk.RecvQ, SendQ: sk.SendQ, Retrans: sk.Retrans, UID: sk.UID, Inode: sk.Inode,
	}
	if sk.Timer != sockdiag.TimerOff {
		c.Timer, c.TimerMs = sk.Timer.String(), sk.TimerExpires.Milliseconds()
	}
	if sk.HasInfo {
		i := &sk.Info
		c.RTTus, c.RTOus, c.Backoff, c.Cwnd, c.TotalRetrans = i.RTT, i.RTO, i.Backoff, i.SndCwnd, i.TotalRetrans
		c.LastSendMs, c.LastRecvMs, c.LastAckMs = i.LastDataSent, i.LastDataRecv, i.LastAckRecv
		c.BytesAcked, c.BytesRecv = i.BytesAcked, i.BytesRecv
	}
	if owners := s.Owners(sk); len(owners) > 0 {
		c.Process = owners[0].Comm + "/" + strconv.Itoa(owners[0].PID)
	}
	return c
}

// encode gzips the JSON of c.
func (c *Captured) encode() ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(c); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// maxDecoded bounds what one blob may expand to, so a damaged or hostile
// file cannot make history allocate without limit.
const maxDecoded = 1 << 30

func decodeCaptured(b []byte) (*Captured, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("captured snapshot: %w", err)
	}
	var c Captured
	if err := json.NewDecoder(io.LimitReader(zr, maxDecoded)).Decode(&c); err != nil {
		return nil, fmt.Errorf("captured snapshot: %w", err)
	}
	return &c, nil
}

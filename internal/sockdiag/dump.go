package sockdiag

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrOverrun reports that the kernel dropped part of a dump because the
// receive buffer overflowed (ENOBUFS). The dump is incomplete; retry it.
var ErrOverrun = errors.New("netlink receive buffer overrun (ENOBUFS): dump incomplete")

// Request selects what a dump returns.
type Request struct {
	// Families to dump: unix.AF_INET, unix.AF_INET6. Empty means both, in
	// one walk of the kernel's socket hash (see Dumper.Dump).
	Families []uint8
	// States to dump, filtered in the kernel. Zero means AllMask.
	States StateMask
	// Info asks for tcp_info and the congestion algorithm of full sockets.
	Info bool
}

// Stats describes a finished dump.
type Stats struct {
	Sockets        int // sockets passed to the callback
	Batches        int // recv calls
	Skipped        int // messages that failed to parse (see LastParseError)
	LastParseError error
	// Interrupted is set when the kernel flagged NLM_F_DUMP_INTR: the socket
	// tables changed during the dump, so a socket may be missing or doubled.
	Interrupted bool
	// OneWalk is set when both families came from a single walk (the
	// TCPDIAG_GETSOCK request) rather than one request per family.
	OneWalk bool
}

// Add merges the stats of a later dump into st.
func (st *Stats) Add(o Stats) {
	st.Sockets += o.Sockets
	st.Batches += o.Batches
	st.Skipped += o.Skipped
	if o.LastParseError != nil {
		st.LastParseError = o.LastParseError
	}
	st.Interrupted = st.Interrupted || o.Interrupted
	st.OneWalk = st.OneWalk && o.OneWalk
}

// Dumper owns one NETLINK_SOCK_DIAG socket. The socket belongs to the
// network namespace of the thread that called Open; use netns.Run to open a
// Dumper for another namespace. A Dumper is not safe for concurrent use.
type Dumper struct {
	fd  int
	seq uint32
	buf []byte
	in  Interner
	req [sizeofNlmsg + max(sizeofReqV1, sizeofReqV2)]byte
	// noOneWalk remembers that this kernel refused TCPDIAG_GETSOCK.
	noOneWalk bool
}

// Open creates a Dumper in the calling thread's network namespace.
func Open() (*Dumper, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("open sock_diag socket: %w", err)
	}
	// A large buffer makes ENOBUFS unlikely; the kernel still fills about
	// 32 KiB per recv.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	// Never block for ever if the kernel stops answering.
	tv := unix.Timeval{Sec: 10}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set sock_diag receive timeout: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind sock_diag socket: %w", err)
	}
	return &Dumper{fd: fd, buf: make([]byte, 64<<10)}, nil
}

// Close releases the netlink socket.
func (d *Dumper) Close() error {
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

// Dump streams every matching TCP socket to fn. The *Socket is reused for
// the next socket: copy it to keep it. If fn returns an error the dump stops
// and Dump returns that error.
//
// With no Families, both families come from one TCPDIAG_GETSOCK request,
// one walk of the kernel's socket hash, in hash order (IPv4 and IPv6
// interleaved); if the kernel refuses that request, the Dumper falls back
// to one inet_diag_req_v2 per family for the rest of its life.
// Stats.OneWalk says which was used.
func (d *Dumper) Dump(ctx context.Context, r Request, fn func(*Socket) error) (Stats, error) {
	var st Stats
	fams := r.Families
	if len(fams) == 0 {
		fams = []uint8{unix.AF_INET, unix.AF_INET6}
	}
	states := r.States
	if states == 0 {
		states = AllMask
	}
	var ext uint8
	if r.Info {
		ext = 1<<(attrInfo-1) | 1<<(attrCong-1)
	}
	var s Socket
	if len(r.Families) == 0 && !d.noOneWalk {
		// Every inet_diag_req_v2 dump walks the whole established hash,
		// which holds both families, and skips the other family's sockets:
		// two requests walk it twice. The older TCPDIAG_GETSOCK request
		// (struct inet_diag_req) dumps with family AF_UNSPEC, so one walk
		// returns both: at 100,000 sockets about 40% less kernel CPU, at 1M
		// a quarter less wall time (docs/BENCHMARKS.md "One walk").
		// idiag_family, src_len and dst_len stay 0.
		var body [sizeofReqV1]byte
		body[3] = ext
		le.PutUint32(body[4+sizeofSockID:], uint32(states))
		before := st.Sockets + st.Skipped
		supported, err := d.request(ctx, tcpDiagGetSock, body[:], &s, &st, fn)
		if !refused(st.Sockets+st.Skipped > before, supported, err) {
			st.OneWalk = true
			return st, err
		}
		d.noOneWalk = true
	}
	for _, fam := range fams {
		// struct inet_diag_req_v2: family, protocol, ext, pad, states, then
		// a zero inet_diag_sockid (no filter). A family without a diag
		// handler (IPv6 disabled) answers "not supported": nothing to list.
		var body [sizeofReqV2]byte
		body[0], body[1], body[2] = fam, unix.IPPROTO_TCP, ext
		le.PutUint32(body[4:], uint32(states))
		if _, err := d.request(ctx, sockDiagByFamily, body[:], &s, &st, fn); err != nil {
			return st, err
		}
	}
	return st, nil
}

// request sends one dump request of type typ with body and passes every
// socket of the reply to fn. supported is false when the kernel has no
// handler for the request.
func (d *Dumper) request(ctx context.Context, typ uint16, body []byte, s *Socket, st *Stats, fn func(*Socket) error) (supported bool, err error) {
	if err := ctx.Err(); err != nil {
		return true, err
	}
	d.seq++
	b := d.req[:sizeofNlmsg+len(body)]
	le.PutUint32(b[0:], uint32(len(b)))
	le.PutUint16(b[4:], typ)
	le.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	le.PutUint32(b[8:], d.seq)
	le.PutUint32(b[12:], 0)
	copy(b[sizeofNlmsg:], body)
	if err := unix.Sendto(d.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return true, fmt.Errorf("send inet_diag request: %w", err)
	}
	return d.drain(ctx, d.seq, s, st, fn)
}

// refused says that the kernel turned a TCPDIAG_GETSOCK request down: no
// message came back, only an error that a kernel without the request gives
// (EOPNOTSUPP, ENOENT or EAFNOSUPPORT from a missing handler, EINVAL for an
// unknown message type).
func refused(delivered, supported bool, err error) bool {
	return !delivered && (!supported || errors.Is(err, unix.EINVAL))
}

// drain reads the replies to request seq until the dump ends.
func (d *Dumper) drain(ctx context.Context, seq uint32, s *Socket, st *Stats, fn func(*Socket) error) (bool, error) {
	for {
		if err := ctx.Err(); err != nil {
			return true, err
		}
		n, err := d.recv()
		if err != nil {
			return true, err
		}
		st.Batches++
		done, supported, err := d.handleBatch(d.buf[:n], seq, s, st, fn)
		if err != nil || done {
			return supported, err
		}
	}
}

// recv reads one datagram; MSG_TRUNC makes a truncated read visible.
func (d *Dumper) recv() (int, error) {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(d.fd),
			uintptr(unsafe.Pointer(&d.buf[0])), uintptr(len(d.buf)), unix.MSG_TRUNC, 0, 0)
		switch errno {
		case 0:
			if int(n) > len(d.buf) {
				return 0, fmt.Errorf("receive inet_diag: datagram of %d bytes exceeds %d-byte buffer", n, len(d.buf))
			}
			return int(n), nil
		case unix.EINTR:
			continue
		case unix.ENOBUFS:
			return 0, ErrOverrun
		case unix.EAGAIN:
			return 0, fmt.Errorf("receive inet_diag: kernel did not answer within 10s")
		default:
			return 0, fmt.Errorf("receive inet_diag: %w", errno)
		}
	}
}

// handleBatch walks the netlink messages of one datagram.
func (d *Dumper) handleBatch(b []byte, seq uint32, s *Socket, st *Stats, fn func(*Socket) error) (done, supported bool, err error) {
	supported = true
	for len(b) >= sizeofNlmsg {
		mlen := int(le.Uint32(b[0:4]))
		typ := le.Uint16(b[4:6])
		flags := le.Uint16(b[6:8])
		mseq := le.Uint32(b[8:12])
		if mlen < sizeofNlmsg || mlen > len(b) {
			return true, supported, fmt.Errorf("%w: netlink message length %d with %d bytes left", ErrMalformed, mlen, len(b))
		}
		payload := b[sizeofNlmsg:mlen]
		if next := align4(mlen); next < len(b) {
			b = b[next:]
		} else {
			b = nil
		}
		if mseq != seq {
			continue // left over from a dump that was abandoned
		}
		if flags&unix.NLM_F_DUMP_INTR != 0 {
			st.Interrupted = true
		}
		switch typ {
		case unix.NLMSG_DONE:
			if len(payload) >= 4 {
				if e := int32(le.Uint32(payload)); e < 0 {
					return true, supported, fmt.Errorf("inet_diag dump: %w", syscall.Errno(-e))
				}
			}
			return true, supported, nil
		case unix.NLMSG_ERROR:
			if len(payload) < 4 {
				return true, supported, fmt.Errorf("%w: short NLMSG_ERROR", ErrMalformed)
			}
			e := syscall.Errno(-int32(le.Uint32(payload)))
			if e == 0 {
				continue // an ACK
			}
			if e == unix.ENOENT || e == unix.EAFNOSUPPORT || e == unix.EOPNOTSUPP {
				return true, false, nil
			}
			return true, supported, fmt.Errorf("inet_diag request: %w", e)
		case sockDiagByFamily, tcpDiagGetSock:
			if err := ParseMessage(payload, s, &d.in); err != nil {
				st.Skipped++
				st.LastParseError = err
				continue
			}
			st.Sockets++
			if err := fn(s); err != nil {
				return true, supported, err
			}
		}
	}
	return false, supported, nil
}

// Command rawcount is the floor for a TCP socket dump: it asks the kernel for
// every TCP socket over NETLINK_SOCK_DIAG, exactly as ss and tcplens do, and
// only counts the sockets by state.
//
// It exists so the benchmarks in bench/ can say how close tcplens gets to
// what the kernel interface allows. It is written from scratch on purpose,
// without internal/sockdiag, so it stays a true baseline: one netlink socket,
// one inet_diag_req_v2 dump per address family with all states and no
// extensions, a single reused 64 KiB receive buffer, and a walk over the
// nlmsghdrs that reads idiag_state (byte 1 of struct inet_diag_msg, which
// follows the 16-byte nlmsghdr). Nothing is allocated per socket.
//
// The state mask is 0x1ffe by default: TCP states 1-12 (ESTABLISHED to
// NEW_SYN_RECV), which is what `ss -ta` and tcplens ask for. Bit 13,
// TCP_BOUND_INACTIVE (Linux 6.5+), would also make the kernel walk the whole
// bind hash for bound-but-unconnected sockets before the established hash;
// with many sockets that walk alone costs about half a plain dump again.
// -states all (0xffffffff) shows that cost.
//
// -one-walk sends the older TCPDIAG_GETSOCK request instead, which the
// kernel serves with family AF_UNSPEC: one walk of the established hash for
// both families, where two inet_diag_req_v2 requests walk it twice. That is
// the request tcplens uses.
//
// Usage:
//
//	rawcount [-netns NAME] [-states all|HEX] [-one-walk]
//
// It prints one JSON object: the total, the counts per state, the number of
// recv calls and bytes read, and the time spent in the dump itself.
package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tcplens/tcplens/internal/netns"
	"golang.org/x/sys/unix"
)

// Netlink and inet_diag constants, from the UAPI headers.
const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	tcpDiagGetSock   = 18 // TCPDIAG_GETSOCK: family AF_UNSPEC, one walk
	reqV1Len         = 60 // sizeof(struct inet_diag_req)
	nlmsgHdrLen      = 16 // sizeof(struct nlmsghdr)
	reqV2Len         = 56 // sizeof(struct inet_diag_req_v2)
	diagMsgLen       = 72 // sizeof(struct inet_diag_msg)
	recvBufLen       = 64 << 10
	// defaultStates is TCPF_ESTABLISHED ... TCPF_NEW_SYN_RECV.
	defaultStates = 0x1ffe
)

// stateNames follows include/net/tcp_states.h.
var stateNames = [...]string{
	1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1",
	5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT",
	9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV",
}

type result struct {
	Netns     string            `json:"netns,omitempty"`
	Mask      string            `json:"states_mask"`
	Total     uint64            `json:"total"`
	States    map[string]uint64 `json:"states"`
	Recvs     int               `json:"recv_calls"`
	Bytes     int64             `json:"bytes"`
	DumpMilli float64           `json:"dump_ms"`
}

func main() {
	fs := flag.NewFlagSet("rawcount", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	ns := fs.String("netns", "", "network namespace name or path (default: the caller's)")
	oneWalk := fs.Bool("one-walk", false, "one TCPDIAG_GETSOCK request for both families (as tcplens does) instead of one inet_diag_req_v2 per family (as ss does)")
	mask := uint32(defaultStates)
	fs.Func("states", "inet_diag state mask: hex such as 0x1ffe (default), or all (0xffffffff)", func(v string) error {
		if v == "all" {
			mask = ^uint32(0)
			return nil
		}
		m, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(v), "0x"), 16, 32)
		if err != nil || m == 0 {
			return fmt.Errorf("want all or a non-zero hex mask")
		}
		mask = uint32(m)
		return nil
	})
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: rawcount [-netns NAME] [-states all|HEX] [-one-walk]\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stdout)
			fs.Usage()
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "rawcount: %v (see -h)\n", err)
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "rawcount: unexpected argument %q (see -h)\n", fs.Arg(0))
		os.Exit(2)
	}

	var counts [256]uint64
	var res result
	start := time.Now()
	err := netns.Run(*ns, func() error {
		var err error
		res.Recvs, res.Bytes, err = dump(mask, *oneWalk, &counts)
		return err
	})
	res.DumpMilli = float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		fmt.Fprintf(os.Stderr, "rawcount: %v\n", err)
		os.Exit(1)
	}

	res.Netns = *ns
	res.Mask = fmt.Sprintf("%#x", mask)
	res.States = map[string]uint64{}
	for st, n := range counts {
		if n == 0 {
			continue
		}
		name := fmt.Sprintf("STATE_%d", st)
		if st < len(stateNames) && stateNames[st] != "" {
			name = stateNames[st]
		}
		res.States[name] = n
		res.Total += n
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(res); err != nil {
		fmt.Fprintf(os.Stderr, "rawcount: write result: %v\n", err)
		os.Exit(1)
	}
}

// dump counts every TCP socket in the states of mask in the calling thread's
// network namespace, for AF_INET and AF_INET6, into counts indexed by state.
func dump(mask uint32, compat bool, counts *[256]uint64) (recvs int, bytes int64, err error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, 0, fmt.Errorf("open sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	// A kernel that stops answering must not hang the benchmark.
	tv := unix.Timeval{Sec: 10}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return 0, 0, fmt.Errorf("set receive timeout: %w", err)
	}

	buf := make([]byte, recvBufLen)
	var req [nlmsgHdrLen + reqV2Len]byte
	fams := []uint8{unix.AF_INET, unix.AF_INET6}
	if compat {
		fams = fams[:1]
	}
	for i, family := range fams {
		seq := uint32(i + 1)
		// struct nlmsghdr
		binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
		binary.NativeEndian.PutUint16(req[4:], sockDiagByFamily)
		binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
		binary.NativeEndian.PutUint32(req[8:], seq)
		binary.NativeEndian.PutUint32(req[12:], 0)
		// struct inet_diag_req_v2: family, protocol, ext (none), pad,
		// states, then a zero inet_diag_sockid (no filter).
		req[16] = family
		req[17] = unix.IPPROTO_TCP
		binary.NativeEndian.PutUint32(req[20:], mask)
		msg := req[:]
		if compat {
			// struct inet_diag_req: family, src_len, dst_len, ext, a
			// 48-byte inet_diag_sockid, then the state mask.
			var c [nlmsgHdrLen + reqV1Len]byte
			copy(c[:], req[:nlmsgHdrLen])
			binary.NativeEndian.PutUint32(c[0:], uint32(len(c)))
			binary.NativeEndian.PutUint16(c[4:], tcpDiagGetSock)
			binary.NativeEndian.PutUint32(c[nlmsgHdrLen+52:], mask)
			msg = c[:]
		}
		if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return recvs, bytes, fmt.Errorf("send dump request (family %d): %w", family, err)
		}
		r, b, err := drain(fd, buf, seq, counts)
		recvs += r
		bytes += b
		if err != nil {
			return recvs, bytes, fmt.Errorf("dump family %d: %w", family, err)
		}
	}
	return recvs, bytes, nil
}

// drain reads one dump's replies until NLMSG_DONE and counts the states.
func drain(fd int, buf []byte, seq uint32, counts *[256]uint64) (recvs int, bytes int64, err error) {
	for recvs < 1<<24 { // bounded: 16M recvs is far beyond any real table
		n, err := unix.Read(fd, buf)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return recvs, bytes, fmt.Errorf("recv: %w", err)
		}
		recvs++
		bytes += int64(n)
		if n == 0 {
			return recvs, bytes, fmt.Errorf("netlink socket closed mid-dump")
		}
		for off := 0; off+nlmsgHdrLen <= n; {
			l := int(binary.NativeEndian.Uint32(buf[off:]))
			typ := binary.NativeEndian.Uint16(buf[off+4:])
			if l < nlmsgHdrLen || off+l > n {
				return recvs, bytes, fmt.Errorf("malformed netlink message (len %d at offset %d of %d)", l, off, n)
			}
			if binary.NativeEndian.Uint32(buf[off+8:]) == seq {
				switch typ {
				case unix.NLMSG_DONE:
					// A dump that failed midway says so here.
					if l >= nlmsgHdrLen+4 {
						if e := int32(binary.NativeEndian.Uint32(buf[off+nlmsgHdrLen:])); e < 0 {
							return recvs, bytes, fmt.Errorf("dump aborted by the kernel: %w", unix.Errno(-e))
						}
					}
					return recvs, bytes, nil
				case unix.NLMSG_ERROR:
					errno := int32(binary.NativeEndian.Uint32(buf[off+nlmsgHdrLen:]))
					if errno == 0 || errno == -int32(unix.ENOENT) {
						// An ack, or no diag handler for this family
						// (IPv6 disabled): nothing to count.
						return recvs, bytes, nil
					}
					return recvs, bytes, fmt.Errorf("kernel answered: %w", unix.Errno(-errno))
				case sockDiagByFamily, tcpDiagGetSock:
					if l >= nlmsgHdrLen+diagMsgLen {
						counts[buf[off+nlmsgHdrLen+1]]++
					}
				}
			}
			off += (l + 3) &^ 3 // NLMSG_ALIGN
		}
	}
	return recvs, bytes, fmt.Errorf("dump did not end after %d recv calls", recvs)
}

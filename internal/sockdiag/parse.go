package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Sizes and attribute numbers from include/uapi/linux/inet_diag.h.
const (
	sizeofDiagMsg = 72
	sizeofSockID  = 48
	sizeofReqV2   = 56
	sizeofReqV1   = 60 // struct inet_diag_req, used by TCPDIAG_GETSOCK
	sizeofNlmsg   = 16
	sizeofRtattr  = 4

	attrInfo     = 2
	attrCong     = 4
	attrShutdown = 8

	sockDiagByFamily = 20
	tcpDiagGetSock   = 18 // TCPDIAG_GETSOCK: one dump of both families
)

// ErrMalformed is returned (wrapped) for a message the parser cannot trust.
var ErrMalformed = errors.New("malformed inet_diag message")

var le = binary.LittleEndian // host order on every platform tcplens builds for

// ParseMessage decodes one inet_diag_msg payload (the bytes after the netlink
// header) into s. It never panics; a short or inconsistent message returns an
// error wrapping ErrMalformed. Cong names are interned in in, which may be nil.
func ParseMessage(b []byte, s *Socket, in *Interner) error {
	if len(b) < sizeofDiagMsg {
		return fmt.Errorf("%w: %d bytes, want at least %d", ErrMalformed, len(b), sizeofDiagMsg)
	}
	*s = Socket{}
	s.Family = b[0]
	s.State = State(b[1])
	s.Timer = Timer(b[2])
	s.Retrans = b[3]
	sport := binary.BigEndian.Uint16(b[4:6])
	dport := binary.BigEndian.Uint16(b[6:8])
	switch s.Family {
	case unix.AF_INET:
		s.Local = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[8:12])), sport)
		s.Remote = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[24:28])), dport)
	case unix.AF_INET6:
		s.Local = netip.AddrPortFrom(unmap(netip.AddrFrom16([16]byte(b[8:24]))), sport)
		s.Remote = netip.AddrPortFrom(unmap(netip.AddrFrom16([16]byte(b[24:40]))), dport)
	default:
		return fmt.Errorf("%w: address family %d", ErrMalformed, s.Family)
	}
	s.Interface = le.Uint32(b[40:44])
	s.Cookie = uint64(le.Uint32(b[44:48])) | uint64(le.Uint32(b[48:52]))<<32
	s.TimerExpires = time.Duration(le.Uint32(b[52:56])) * time.Millisecond
	s.RecvQ = le.Uint32(b[56:60])
	s.SendQ = le.Uint32(b[60:64])
	s.UID = le.Uint32(b[64:68])
	s.Inode = le.Uint32(b[68:72])

	attrs := b[sizeofDiagMsg:]
	for len(attrs) >= sizeofRtattr {
		alen := int(le.Uint16(attrs[0:2]))
		typ := le.Uint16(attrs[2:4]) & 0x3fff // strip NLA_F_NESTED / NLA_F_NET_BYTEORDER
		if alen < sizeofRtattr || alen > len(attrs) {
			return fmt.Errorf("%w: attribute %d length %d with %d bytes left", ErrMalformed, typ, alen, len(attrs))
		}
		val := attrs[sizeofRtattr:alen]
		switch typ {
		case attrInfo:
			s.HasInfo = true
			parseTCPInfo(val, &s.Info)
		case attrCong:
			s.Cong = in.intern(cstring(val))
		case attrShutdown:
			if len(val) >= 1 {
				s.Shutdown, s.HasShutdown = val[0], true
			}
		}
		next := align4(alen)
		if next >= len(attrs) {
			break
		}
		attrs = attrs[next:]
	}
	return nil
}

// unmap turns ::ffff:a.b.c.d (IPv4 on a dual-stack socket) into a.b.c.d so
// that it groups with plain IPv4 peers, as ss prints it.
func unmap(a netip.Addr) netip.Addr {
	if a.Is4In6() {
		return a.Unmap()
	}
	return a
}

func align4(n int) int { return (n + 3) &^ 3 }

func cstring(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}

// parseTCPInfo reads the fields present in b. Older kernels send a shorter
// struct tcp_info; fields beyond its end stay zero.
func parseTCPInfo(b []byte, t *TCPInfo) {
	u8 := func(off int) uint8 {
		if off < len(b) {
			return b[off]
		}
		return 0
	}
	u32 := func(off int) uint32 {
		if off+4 <= len(b) {
			return le.Uint32(b[off:])
		}
		return 0
	}
	u64 := func(off int) uint64 {
		if off+8 <= len(b) {
			return le.Uint64(b[off:])
		}
		return 0
	}
	// Offsets of struct tcp_info (include/uapi/linux/tcp.h); the test checks
	// them against unix.TCPInfo.
	t.State = u8(0)
	t.CAState = u8(1)
	t.Retransmits = u8(2)
	t.Probes = u8(3)
	t.Backoff = u8(4)
	t.Options = u8(5)
	t.RTO = u32(8)
	t.ATO = u32(12)
	t.SndMSS = u32(16)
	t.RcvMSS = u32(20)
	t.Unacked = u32(24)
	t.Sacked = u32(28)
	t.Lost = u32(32)
	t.Retrans = u32(36)
	t.LastDataSent = u32(44)
	t.LastDataRecv = u32(52)
	t.LastAckRecv = u32(56)
	t.PMTU = u32(60)
	t.RTT = u32(68)
	t.RTTVar = u32(72)
	t.SndSsthresh = u32(76)
	t.SndCwnd = u32(80)
	t.TotalRetrans = u32(100)
	t.BytesAcked = u64(120)
	t.BytesRecv = u64(128)
	t.SegsOut = u32(136)
	t.SegsIn = u32(140)
	t.NotsentBytes = u32(144)
	t.MinRTT = u32(148)
	t.BytesSent = u64(200)
	t.BytesRetrans = u64(208)
}

// Interner maps congestion-control names to shared strings so that parsing
// does not allocate a string per socket. The zero value is ready to use; a
// nil *Interner allocates every time.
type Interner struct {
	m map[string]string
}

func (in *Interner) intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if in == nil {
		return string(b)
	}
	if s, ok := in.m[string(b)]; ok { // no allocation for the lookup
		return s
	}
	if in.m == nil {
		in.m = make(map[string]string)
	}
	if len(in.m) >= 64 { // bounded: a hostile stream cannot grow it
		return string(b)
	}
	s := string(b)
	in.m[s] = s
	return s
}

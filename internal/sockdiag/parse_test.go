package sockdiag

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestTCPInfoOffsets checks parseTCPInfo's offsets against x/sys/unix's
// struct tcp_info.
func TestTCPInfoOffsets(t *testing.T) {
	var u unix.TCPInfo
	off := map[string]uintptr{
		"RTO": unsafe.Offsetof(u.Rto), "Unacked": unsafe.Offsetof(u.Unacked),
		"Lost": unsafe.Offsetof(u.Lost), "LastDataSent": unsafe.Offsetof(u.Last_data_sent),
		"LastDataRecv": unsafe.Offsetof(u.Last_data_recv), "LastAckRecv": unsafe.Offsetof(u.Last_ack_recv),
		"RTT": unsafe.Offsetof(u.Rtt), "RTTVar": unsafe.Offsetof(u.Rttvar),
		"SndCwnd": unsafe.Offsetof(u.Snd_cwnd), "TotalRetrans": unsafe.Offsetof(u.Total_retrans),
		"BytesAcked": unsafe.Offsetof(u.Bytes_acked), "BytesRecv": unsafe.Offsetof(u.Bytes_received),
		"MinRTT": unsafe.Offsetof(u.Min_rtt), "BytesSent": unsafe.Offsetof(u.Bytes_sent),
		"BytesRetrans": unsafe.Offsetof(u.Bytes_retrans), "NotsentBytes": unsafe.Offsetof(u.Notsent_bytes),
	}
	for name, o := range off {
		b := make([]byte, unsafe.Sizeof(u))
		width := reflect.ValueOf(TCPInfo{}).FieldByName(name).Type().Size()
		if width == 8 {
			binary.LittleEndian.PutUint64(b[o:], 0x0102030405060708)
		} else {
			binary.LittleEndian.PutUint32(b[o:], 0x01020304)
		}
		var ti TCPInfo
		parseTCPInfo(b, &ti)
		got := reflect.ValueOf(ti).FieldByName(name).Uint()
		if (width == 8 && got != 0x0102030405060708) || (width == 4 && got != 0x01020304) {
			t.Errorf("%s at offset %d: parsed %#x", name, o, got)
		}
	}
	// Byte fields.
	if unsafe.Offsetof(u.Backoff) != 4 || unsafe.Offsetof(u.Retransmits) != 2 {
		t.Fatal("unexpected tcp_info byte layout")
	}
	// ... and the parser reads them from there.
	b := make([]byte, unsafe.Sizeof(u))
	b[unsafe.Offsetof(u.Retransmits)], b[unsafe.Offsetof(u.Backoff)] = 7, 9
	var ti TCPInfo
	parseTCPInfo(b, &ti)
	if ti.Retransmits != 7 || ti.Backoff != 9 {
		t.Errorf("byte fields: retransmits %d, backoff %d; want 7, 9", ti.Retransmits, ti.Backoff)
	}
}

func msg(family byte, state State, attrs ...[]byte) []byte {
	b := make([]byte, sizeofDiagMsg)
	b[0], b[1], b[2], b[3] = family, byte(state), byte(TimerRetransmit), 3
	binary.BigEndian.PutUint16(b[4:], 40000)
	binary.BigEndian.PutUint16(b[6:], 443)
	copy(b[8:], []byte{10, 0, 0, 1})
	copy(b[24:], []byte{10, 0, 0, 2})
	binary.LittleEndian.PutUint32(b[52:], 1400)
	binary.LittleEndian.PutUint32(b[68:], 12345)
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

func attr(typ uint16, val []byte) []byte {
	b := make([]byte, 4, align4(4+len(val)))
	binary.LittleEndian.PutUint16(b[0:], uint16(4+len(val)))
	binary.LittleEndian.PutUint16(b[2:], typ)
	b = append(b, val...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func TestParseMessage(t *testing.T) {
	info := make([]byte, 104) // a kernel with a short tcp_info
	binary.LittleEndian.PutUint32(info[68:], 1500)
	binary.LittleEndian.PutUint32(info[100:], 9)
	b := msg(unix.AF_INET, Established, attr(attrInfo, info), attr(attrCong, []byte("cubic\x00")), attr(attrShutdown, []byte{2}))
	var s Socket
	var in Interner
	if err := ParseMessage(b, &s, &in); err != nil {
		t.Fatal(err)
	}
	want := Socket{
		Family: unix.AF_INET, State: Established,
		Local: netip.MustParseAddrPort("10.0.0.1:40000"), Remote: netip.MustParseAddrPort("10.0.0.2:443"),
		Timer: TimerRetransmit, TimerExpires: 1400 * time.Millisecond, Retrans: 3, Inode: 12345,
		HasInfo: true, Info: TCPInfo{RTT: 1500, TotalRetrans: 9}, Cong: "cubic", Shutdown: 2, HasShutdown: true,
	}
	if s != want {
		t.Fatalf("parsed\n %+v\nwant\n %+v", s, want)
	}
	// A second parse reuses the interned name.
	var s2 Socket
	_ = ParseMessage(b, &s2, &in)
	if unsafe.StringData(s.Cong) != unsafe.StringData(s2.Cong) {
		t.Error("congestion name not interned")
	}
}

func TestParseMessageRejects(t *testing.T) {
	var s Socket
	cases := map[string][]byte{
		"short":          make([]byte, 71),
		"bad family":     msg(99, Established),
		"attr too long":  msg(unix.AF_INET, Established, []byte{200, 0, 2, 0}),
		"attr too short": msg(unix.AF_INET, Established, []byte{2, 0, 2, 0}),
	}
	for name, b := range cases {
		if err := ParseMessage(b, &s, nil); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func nlmsg(typ uint16, seq uint32, payload []byte) []byte {
	b := make([]byte, sizeofNlmsg, sizeofNlmsg+len(payload))
	binary.LittleEndian.PutUint32(b[0:], uint32(sizeofNlmsg+len(payload)))
	binary.LittleEndian.PutUint16(b[4:], typ)
	binary.LittleEndian.PutUint32(b[8:], seq)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func TestHandleBatch(t *testing.T) {
	d := &Dumper{}
	var st Stats
	var s Socket
	n := 0
	batch := append(nlmsg(sockDiagByFamily, 7, msg(unix.AF_INET, TimeWait)), nlmsg(sockDiagByFamily, 6, msg(unix.AF_INET, TimeWait))...)
	batch = append(batch, nlmsg(sockDiagByFamily, 7, []byte{1, 2, 3})...)
	batch = append(batch, nlmsg(unix.NLMSG_DONE, 7, []byte{0, 0, 0, 0})...)
	done, ok, err := d.handleBatch(batch, 7, &s, &st, func(*Socket) error { n++; return nil })
	if !done || !ok || err != nil || n != 1 || st.Skipped != 1 {
		t.Fatalf("done=%v ok=%v err=%v sockets=%d skipped=%d; want one socket (other seq ignored), one skipped", done, ok, err, n, st.Skipped)
	}
	// An error reply for an unsupported family is not an error.
	enoent := make([]byte, 4)
	copy(enoent, errnoBytes(unix.ENOENT))
	done, ok, err = d.handleBatch(nlmsg(unix.NLMSG_ERROR, 1, enoent), 1, &s, &st, nil)
	if !done || ok || err != nil {
		t.Fatalf("ENOENT: done=%v supported=%v err=%v", done, ok, err)
	}
	// Any other error is.
	copy(enoent, errnoBytes(unix.EPERM))
	if _, _, err = d.handleBatch(nlmsg(unix.NLMSG_ERROR, 1, enoent), 1, &s, &st, nil); !errors.Is(err, unix.EPERM) {
		t.Fatalf("EPERM: err=%v", err)
	}
	// DUMP_INTR is reported.
	m := nlmsg(sockDiagByFamily, 2, msg(unix.AF_INET, TimeWait))
	binary.LittleEndian.PutUint16(m[6:], unix.NLM_F_DUMP_INTR|unix.NLM_F_MULTI)
	st = Stats{}
	d.handleBatch(m, 2, &s, &st, func(*Socket) error { return nil })
	if !st.Interrupted {
		t.Fatal("NLM_F_DUMP_INTR not reported")
	}
}

func FuzzParseMessage(f *testing.F) {
	f.Add(msg(unix.AF_INET, Established, attr(attrInfo, make([]byte, 232)), attr(attrCong, []byte("bbr\x00"))))
	f.Add(msg(unix.AF_INET6, TimeWait))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var s Socket
		var in Interner
		_ = ParseMessage(b, &s, &in)
	})
}

func FuzzHandleBatch(f *testing.F) {
	f.Add(append(nlmsg(sockDiagByFamily, 1, msg(unix.AF_INET, Listen)), nlmsg(unix.NLMSG_DONE, 1, []byte{0, 0, 0, 0})...))
	f.Add(nlmsg(unix.NLMSG_ERROR, 1, []byte{0xfe, 0xff, 0xff, 0xff}))
	// A one-walk reply: TCPDIAG_GETSOCK messages of both families.
	f.Add(append(nlmsg(tcpDiagGetSock, 1, msg(unix.AF_INET6, Established, attr(attrInfo, make([]byte, 232)))), nlmsg(tcpDiagGetSock, 1, msg(unix.AF_INET, TimeWait))...))
	f.Fuzz(func(t *testing.T, b []byte) {
		d := &Dumper{}
		var st Stats
		var s Socket
		_, _, _ = d.handleBatch(b, 1, &s, &st, func(*Socket) error { return nil })
	})
}

func errnoBytes(e unix.Errno) []byte {
	b := make([]byte, 4)
	v := -int32(e)
	binary.LittleEndian.PutUint32(b, uint32(v))
	return b
}

// TestNoAllocationPerSocket holds the streaming promise: walking a batch of
// full sockets (tcp_info and congestion name included) allocates nothing.
func TestNoAllocationPerSocket(t *testing.T) {
	var batch []byte
	for range 50 {
		batch = append(batch, nlmsg(sockDiagByFamily, 3, msg(unix.AF_INET6, Established, attr(attrInfo, make([]byte, 232)), attr(attrCong, []byte("cubic\x00"))))...)
	}
	d := &Dumper{}
	var st Stats
	var s Socket
	n := 0
	fn := func(*Socket) error { n++; return nil }
	d.handleBatch(batch, 3, &s, &st, fn) // interns "cubic" once
	allocs := testing.AllocsPerRun(20, func() { d.handleBatch(batch, 3, &s, &st, fn) })
	if allocs != 0 {
		t.Fatalf("%.1f allocations per batch of 50 sockets, want 0", allocs)
	}
	// One priming call, AllocsPerRun's warm-up call and its 20 runs.
	if n != 22*50 {
		t.Fatalf("parsed %d sockets, want %d", n, 22*50)
	}
}

// TestOneWalkRefusal feeds handleBatch the answers a kernel without
// TCPDIAG_GETSOCK gives, and checks that only those make the dumper fall
// back to one request per family.
func TestOneWalkRefusal(t *testing.T) {
	for _, c := range []struct {
		name    string
		batch   []byte
		refused bool
	}{
		{"no handler", nlmsg(unix.NLMSG_ERROR, 1, errnoBytes(unix.EOPNOTSUPP)), true},
		{"unknown type", nlmsg(unix.NLMSG_ERROR, 1, errnoBytes(unix.EINVAL)), true},
		{"permission", nlmsg(unix.NLMSG_ERROR, 1, errnoBytes(unix.EPERM)), false},
		{"empty table", nlmsg(unix.NLMSG_DONE, 1, []byte{0, 0, 0, 0}), false},
		{"sockets", append(nlmsg(tcpDiagGetSock, 1, msg(unix.AF_INET, Listen)), nlmsg(unix.NLMSG_DONE, 1, []byte{0, 0, 0, 0})...), false},
	} {
		d := &Dumper{}
		var st Stats
		var s Socket
		done, supported, err := d.handleBatch(c.batch, 1, &s, &st, func(*Socket) error { return nil })
		if !done {
			t.Fatalf("%s: batch not finished", c.name)
		}
		if got := refused(st.Sockets+st.Skipped > 0, supported, err); got != c.refused {
			t.Errorf("%s: refused = %v (supported %v, err %v), want %v", c.name, got, supported, err, c.refused)
		}
	}
}

package churn

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/tcplens/tcplens/internal/sockdiag"
)

func TestNetlinkDrops(t *testing.T) {
	const text = "sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n" +
		"ffff8b5c4e1c2000 0   0          00000000 0        0        0     2        0        6\n" +
		"ffff8b5c4e1c4000 4   4026531    00000005 2304     0        0     2        574      91234\n"
	if d, err := netlinkDrops([]byte(text), 91234); err != nil || d != 574 {
		t.Errorf("netlinkDrops = %d, %v; want 574", d, err)
	}
	if _, err := netlinkDrops([]byte(text), 7); err == nil {
		t.Error("a missing inode gave no error")
	}
	if _, err := netlinkDrops([]byte("sk Eth Pid\n1 2 3\n"), 6); err == nil {
		t.Error("a header without Drops gave no error")
	}
}

func FuzzNetlinkDrops(f *testing.F) {
	f.Add([]byte("sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode\nffff 4 0 5 0 0 0 2 12 77\n"), uint64(77))
	f.Add([]byte("Inode Drops\n77 x\n"), uint64(77))
	f.Add([]byte(""), uint64(0))
	f.Fuzz(func(t *testing.T, b []byte, ino uint64) {
		netlinkDrops(b, ino) // must not panic
	})
}

// event builds a netlink datagram with one destroy message, as
// inet_diag_handler_get_info lays it out.
func event(remote [4]byte, dport uint16, cookie uint64, acked uint64) []byte {
	msg := make([]byte, 72)
	msg[0] = 2 // AF_INET
	msg[1] = 7 // CLOSE
	binary.BigEndian.PutUint16(msg[4:], 40000)
	binary.BigEndian.PutUint16(msg[6:], dport)
	copy(msg[8:], []byte{127, 0, 0, 1})
	copy(msg[24:], remote[:])
	binary.LittleEndian.PutUint32(msg[44:], uint32(cookie))
	binary.LittleEndian.PutUint32(msg[48:], uint32(cookie>>32))
	info := make([]byte, 232)
	binary.LittleEndian.PutUint64(info[120:], acked)
	attr := make([]byte, 4+len(info))
	binary.LittleEndian.PutUint16(attr[0:], uint16(len(attr)))
	binary.LittleEndian.PutUint16(attr[2:], 2) // INET_DIAG_INFO
	copy(attr[4:], info)
	msg = append(msg, attr...)
	b := make([]byte, 16, 16+len(msg))
	binary.LittleEndian.PutUint32(b[0:], uint32(16+len(msg)))
	binary.LittleEndian.PutUint16(b[4:], sockDiagByFamily)
	return append(b, msg...)
}

func newTestListener(maxKeys int) *Listener {
	return &Listener{acc: newAcc(time.Unix(0, 0), maxKeys), listening: new([1024]uint64), cfg: Config{Top: 3}}
}

func TestHandleBoundsKeys(t *testing.T) {
	l := newTestListener(4)
	var sk sockdiag.Socket
	for i := range 10 {
		l.handle(event([4]byte{10, 0, 0, byte(i)}, 80, uint64(i+1), 100), false, time.Unix(1, 0), &sk, nil)
	}
	l.handle([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}, false, time.Unix(1, 0), &sk, nil)
	if len(l.acc.dests) != 4 || l.acc.otherDests.closed != 6 || l.acc.unparsed != 1 {
		t.Fatalf("tracked %d destinations, other %d, unparsed %d; want 4, 6, 1", len(l.acc.dests), l.acc.otherDests.closed, l.acc.unparsed)
	}
	w := l.acc.window(time.Unix(2, 0), 3)
	if len(w.Destinations) != 3 || w.OtherDestinations.Closed != 7 || w.Total.Closed != 10 || w.Total.BytesAcked != 1000 {
		t.Errorf("window: %d listed, other %d, total %d, acked %d", len(w.Destinations), w.OtherDestinations.Closed, w.Total.Closed, w.Total.BytesAcked)
	}
	if _, _, ok := w.ClientRate(w.Destinations[0].Addr); !ok {
		t.Error("a listed destination has no rate")
	}
	// Anything not listed may be hidden in "other": its rate is unknown.
	if _, _, ok := w.ClientRate(netip.MustParseAddrPort("192.0.2.1:80")); ok {
		t.Error("a destination folded into other claims a known rate")
	}
}

func TestPercentiles(t *testing.T) {
	var a agg
	var sk sockdiag.Socket
	for i := 1; i <= 100; i++ {
		a.add(&sk, time.Duration(i)*10*time.Millisecond, lifeKnown)
	}
	s := a.stats(1)
	// Lower bucket edges: within 19% below the true value, never above.
	for _, c := range []struct {
		got, want time.Duration
	}{{s.LifetimeP50, 500 * time.Millisecond}, {s.LifetimeP90, 900 * time.Millisecond}, {s.LifetimeP99, 990 * time.Millisecond}} {
		if c.got > c.want || float64(c.got) < 0.8*float64(c.want) {
			t.Errorf("percentile %s, want within 19%% below %s", c.got, c.want)
		}
	}
	if bucketOf(100*time.Hour) != nBuckets-1 || bucketOf(0) != 0 || bucketOf(-time.Second) != 0 {
		t.Error("bucketOf does not clamp")
	}
}

// FuzzHandle feeds arbitrary datagrams to the event walker: it must never
// panic and never count more closes than messages it could parse.
func FuzzHandle(f *testing.F) {
	f.Add(event([4]byte{10, 0, 0, 1}, 443, 1, 5))
	f.Add(append(event([4]byte{10, 0, 0, 1}, 443, 1, 5), event([4]byte{10, 0, 0, 2}, 80, 2, 7)...))
	f.Add([]byte{16, 0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		l := newTestListener(8)
		var sk sockdiag.Socket
		l.handle(b, false, time.Unix(1, 0), &sk, nil)
		if l.acc.total.closed > len(b)/(16+72) {
			t.Fatalf("%d closes from %d bytes", l.acc.total.closed, len(b))
		}
		l.acc.window(time.Unix(2, 0), 3)
	})
}

package analyze

import (
	"net/netip"
	"testing"

	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

func TestListenerFill(t *testing.T) {
	cases := []struct {
		queue, backlog uint32
		want           float64
	}{
		{0, 0, 0},
		{1, 0, 2}, // listen(fd, 0) with a connection waiting: full
		{3, 0, 2},
		{0, 4, 0},
		{2, 4, 0.5},
		{5, 4, 1.25}, // the kernel queues backlog+1
	}
	for _, c := range cases {
		if got := (Listener{AcceptQueue: c.queue, Backlog: c.backlog}).Fill(); got != c.want {
			t.Errorf("Fill(queue %d, backlog %d) = %v, want %v", c.queue, c.backlog, got, c.want)
		}
	}
}

// A backlog-0 listener with a connection waiting is the worst there is, so
// it must sort before fuller-looking queues, not after the empty ones.
func TestListenersSortBacklogZeroFirst(t *testing.T) {
	listen := func(addr string, queue, backlog uint32) sockdiag.Socket {
		return sockdiag.Socket{State: sockdiag.Listen, Local: netip.MustParseAddrPort(addr), RecvQ: queue, SendQ: backlog}
	}
	s := &snapshot.Snapshot{Sockets: []sockdiag.Socket{
		listen("127.0.0.1:1", 0, 128),
		listen("127.0.0.1:2", 100, 128),
		listen("127.0.0.1:3", 1, 0),
		listen("127.0.0.1:4", 0, 0),
	}}
	var got []uint16
	for _, l := range Listeners(s) {
		got = append(got, l.Local.Port())
	}
	want := []uint16{3, 2, 1, 4} // ties at 0 by connections, then address
	for i := range want {
		if i >= len(got) || got[i] != want[i] {
			t.Fatalf("order %v, want %v", got, want)
		}
	}
}

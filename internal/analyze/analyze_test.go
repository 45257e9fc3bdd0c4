package analyze

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcplens/tcplens/internal/procs"
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

// TestCloseWaitByProcess: a socket two processes share after a fork counts
// for both, a socket nobody visible holds goes to PID 0, peers are listed
// once each, and the process with the most comes first.
func TestCloseWaitByProcess(t *testing.T) {
	cw := func(inode uint32, remote string) sockdiag.Socket {
		return sockdiag.Socket{State: sockdiag.CloseWait, Local: netip.MustParseAddrPort("10.0.0.1:8080"),
			Remote: netip.MustParseAddrPort(remote), Inode: inode, HasInfo: true, Info: sockdiag.TCPInfo{LastDataRecv: inode * 1000}}
	}
	s := &snapshot.Snapshot{
		Sockets: []sockdiag.Socket{cw(1, "10.0.0.9:5000"), cw(2, "10.0.0.9:5000"), cw(3, "10.0.0.8:5000"), cw(4, "10.0.0.7:5000")},
		Procs: procs.NewTable([]*procs.Process{
			{PID: 100, Comm: "parent", SocketInodes: []uint32{1, 2, 3}},
			{PID: 200, Comm: "child", SocketInodes: []uint32{3}},
		}),
	}
	s.States[sockdiag.CloseWait] = 4
	got := CloseWaitByProcess(s, 5)
	if len(got) != 3 {
		t.Fatalf("%d groups: %+v", len(got), got)
	}
	p, u, c := got[0], got[1], got[2] // ties in PID order
	if p.PID != 100 || p.Count != 3 || p.Oldest != 3*time.Second || len(p.Peers) != 2 {
		t.Errorf("parent %+v: want 3 sockets, oldest 3s, 2 distinct peers", p)
	}
	if c.PID != 200 || c.Count != 1 || u.PID != 0 || u.Comm != "?" || u.Count != 1 {
		t.Errorf("child %+v, unowned %+v: the shared socket counts for the child too, the unowned one under PID 0", c, u)
	}
	if CloseWaitByProcess(&snapshot.Snapshot{}, 5) != nil {
		t.Error("groups without CLOSE_WAIT sockets")
	}
}

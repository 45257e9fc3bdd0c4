package snapshot_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/lab/harness"
)

// TestTimeWaitSides closes 5 connections from the client and 3 from the
// server, and checks that the tally tells the two apart.
func TestTimeWaitSides(t *testing.T) {
	ns := harness.NewT(t)
	l, err := ns.Listen("tcp", "127.0.0.1:6379")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pair := func() (net.Conn, net.Conn) {
		c, err := ns.Dial(context.Background(), nil, "tcp", "127.0.0.1:6379")
		if err != nil {
			t.Fatal(err)
		}
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c, s
	}
	for range 5 {
		c, s := pair()
		c.Close()
		io.ReadAll(s)
		s.Close()
	}
	for range 3 {
		c, s := pair()
		s.Close()
		io.ReadAll(c)
		c.Close()
	}
	var snap *snapshot.Snapshot
	deadline := time.Now().Add(5 * time.Second)
	for {
		if snap, err = snapshot.Take(context.Background(), snapshot.Options{Netns: ns.Name, Procs: true}); err != nil {
			t.Fatal(err)
		}
		if snap.Count(sockdiag.TimeWait) == 8 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	grouped := 0
	for _, g := range snap.TimeWait {
		grouped += g.Count
	}
	if grouped != 8 || snap.Count(sockdiag.TimeWait) != 8 || len(snap.TimeWait) != 2 {
		t.Fatalf("TIME_WAIT total %d, grouped %d, groups %+v; want 8 in two groups", snap.Count(sockdiag.TimeWait), grouped, snap.TimeWait)
	}
	lo := netip.MustParseAddr("127.0.0.1")
	for _, g := range snap.TimeWait {
		switch g.Side {
		case snapshot.Client:
			if g.Count != 5 || g.RemotePort != 6379 || g.LocalPort != 0 || g.Remote != lo {
				t.Errorf("client group %+v", g)
			}
		case snapshot.Server:
			if g.Count != 3 || g.LocalPort != 6379 || g.RemotePort != 0 {
				t.Errorf("server group %+v", g)
			}
		default:
			t.Errorf("unexpected group %+v", g)
		}
		if g.MaxRemaining <= 55*time.Second || g.MaxRemaining > snapshot.TimeWaitLen {
			t.Errorf("max remaining %s", g.MaxRemaining)
		}
	}
	if snap.Count(sockdiag.Listen) != 1 || len(snap.Sockets) != 1 || snap.Total() != 9 {
		t.Errorf("sockets kept %d, total %d", len(snap.Sockets), snap.Total())
	}
	if snap.Procs == nil || snap.Sysctls.EphemeralPorts() != 28232 || snap.Counters.Get("Tcp.ActiveOpens") != 8 {
		t.Errorf("procs %v, range %d, ActiveOpens %d", snap.Procs != nil, snap.Sysctls.EphemeralPorts(), snap.Counters.Get("Tcp.ActiveOpens"))
	}
	if len(snap.Sockets) == 1 {
		if ps := snap.Owners(&snap.Sockets[0]); len(ps) != 1 || ps[0].PID != os.Getpid() {
			t.Errorf("owners of the listener %v, want this process (%d)", ps, os.Getpid())
		}
	}
}

package doctor

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/lab/harness"
)

func TestListenOverflowQueueFull(t *testing.T) {
	t.Parallel()
	ns := harness.NewT(t)
	const addr = "127.0.0.1:9000"
	rawListen(t, ns, addr, 2) // never accepted
	// The kernel queues backlog+1 connections before it calls the queue full.
	nbConnect(t, ns, addr, 3)
	waitFor(t, 5*time.Second, "3 connections in the accept queue", func() bool { return acceptQueue(t, ns, addr) == 3 })

	r := diagnose(t, ns, 0, 0, "listen-overflow")
	f := findings(r, "listen-overflow")
	if len(f) != 1 {
		t.Fatalf("got %d findings, want 1: %+v", len(f), f)
	}
	got := mustSubject(t, f, addr)
	if got.Severity != Warning || got.Subjects[0].Kind != "listener" || r.ExitCode() != 1 {
		t.Errorf("got %v %s, want a warning about listener %s", got.Severity, got.Subjects[0].Kind, addr)
	}
	if got.Evidence["accept_queue"] != uint32(3) || got.Evidence["backlog"] != uint32(2) || got.Evidence["limited_by"] != "listen_backlog" {
		t.Errorf("evidence %v, want queue 3 of backlog 2 set by listen()", got.Evidence)
	}
	if !ownedBy(got, os.Getpid()) {
		t.Errorf("processes %v, want this test (pid %d)", got.Subjects[0].Processes, os.Getpid())
	}

	// Two more SYNs find the queue full and are dropped; their retransmit
	// comes after 1 s, outside the window. A slow trickle stays a warning.
	r = diagnoseAround(t, ns, 0, func() { nbConnect(t, ns, addr, 2); time.Sleep(500 * time.Millisecond) }, "listen-overflow")
	got = mustSubject(t, findings(r, "listen-overflow"), addr)
	if d := got.Evidence["listen_overflows_delta"].(int64); d < 1 || got.Severity != Warning {
		t.Errorf("got %v with %d overflows (%v/s), want a warning with >= 1", got.Severity, d, got.Evidence["drop_rate_per_s"])
	}
}

func TestListenOverflowBurst(t *testing.T) {
	t.Parallel()
	ns := harness.NewT(t)
	const addr = "127.0.0.1:9001"
	// The application asks for 128 but somaxconn caps the queue at 4.
	setSysctl(t, ns, "net.core.somaxconn", "4")
	rawListen(t, ns, addr, 128)

	// 95 SYNs dropped at once, and again at each SYN retransmit: the rate
	// stays far above 10/s even if a snapshot is slow on a busy machine.
	r := diagnoseAround(t, ns, 0, func() {
		nbConnect(t, ns, addr, 100)
		counterAtLeast(t, ns, "TcpExt.ListenOverflows", 90)
	}, "listen-overflow")
	f := findings(r, "listen-overflow")
	if len(f) != 1 {
		t.Fatalf("got %d findings, want 1: %+v", len(f), f)
	}
	got := mustSubject(t, f, addr)
	if got.Severity != Critical || r.ExitCode() != 2 {
		t.Errorf("severity %v (%v drops/s), want critical", got.Severity, got.Evidence["drop_rate_per_s"])
	}
	if got.Evidence["backlog"] != uint32(4) || got.Evidence["limited_by"] != "somaxconn" || got.Evidence["listen_overflows_delta"].(int64) < 90 {
		t.Errorf("evidence %v, want backlog 4 set by somaxconn and >= 90 overflows", got.Evidence)
	}
}

// TestListenOverflowBurstGone: the queue overflowed between the snapshots
// but was drained before the second, so only the counters tell.
func TestListenOverflowBurstGone(t *testing.T) {
	t.Parallel()
	ns := harness.NewT(t)
	const addr = "127.0.0.1:9002"
	fd := rawListen(t, ns, addr, 4) // room for 5

	r := diagnoseAround(t, ns, 0, func() {
		nbConnect(t, ns, addr, 7)
		counterAtLeast(t, ns, "TcpExt.ListenOverflows", 2)
		// Drain it: the 2 dropped SYNs come back after 1 s and find the
		// queue at 2 of 4, below the 80% mark, whenever that happens.
		acceptN(t, fd, 5)
	}, "listen-overflow")
	f := findings(r, "listen-overflow")
	if len(f) != 1 {
		t.Fatalf("got %d findings, want 1: %+v", len(f), f)
	}
	got := mustSubject(t, f, addr)
	if got.Severity != Warning || got.Evidence["listen_overflows_delta"].(int64) < 2 || got.Evidence["accept_queue"] != nil {
		t.Errorf("got %v %v, want a counter-only warning with >= 2 overflows", got.Severity, got.Evidence)
	}
}

// TestListenOverflowBacklogZeroKept: a listen(fd, 0) listener with a
// connection waiting is full, and must not be cut from the findings by
// listeners whose queues only look fuller.
func TestListenOverflowBacklogZeroKept(t *testing.T) {
	var socks []sockdiag.Socket
	for i := range maxSubjects {
		socks = append(socks, sockdiag.Socket{
			State: sockdiag.Listen, Local: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(8000+i)),
			RecvQ: 129, SendQ: 128,
		})
	}
	const zero = "10.0.0.1:9999"
	socks = append(socks, sockdiag.Socket{State: sockdiag.Listen, Local: netip.MustParseAddrPort(zero), RecvQ: 1, SendQ: 0})
	in := fakeInput(socks...)
	in.Now.Sysctls.Somaxconn = 4096
	f := listenOverflow{}.Check(in)
	if len(f) != maxSubjects {
		t.Fatalf("got %d findings, want %d", len(f), maxSubjects)
	}
	got := mustSubject(t, f, zero)
	if got.Evidence["fill_percent"] != 200.0 || got.Evidence["backlog"] != uint32(0) {
		t.Errorf("backlog-0 listener: evidence %v, want 200%% full", got.Evidence)
	}
	if f[0].Subjects[0].Name != zero {
		t.Errorf("first finding is about %s, want the backlog-0 listener %s", f[0].Subjects[0].Name, zero)
	}
}

package doctor

import (
	"net"
	"testing"
	"time"

	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/lab/harness"
)

// Three idle connections from this process: A without keepalive, B probing
// every second, C probing only after 10 s. With a 3 s idle timeout A (both
// ends) and C's client end are at risk; B and C's server end are not.
func TestIdleNoKeepalive(t *testing.T) {
	t.Parallel()
	ns := harness.NewT(t)
	fast := net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 3}
	holdListener(t, ns, &net.ListenConfig{KeepAlive: -1}, "127.0.0.1:7002")
	holdListener(t, ns, &net.ListenConfig{KeepAliveConfig: fast}, "127.0.0.1:7003")
	start := time.Now()
	dialB(t, ns, &net.Dialer{KeepAlive: -1}, "127.0.0.1:7002")
	dialB(t, ns, &net.Dialer{KeepAliveConfig: fast}, "127.0.0.1:7003")
	dialB(t, ns, &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 10 * time.Second, Interval: time.Second, Count: 3}}, "127.0.0.1:7003")

	// A 1 s timeout catches A after 1.5 s of silence.
	time.Sleep(time.Until(start.Add(1500 * time.Millisecond)))
	f := onlyFinding(t, diagnose(t, ns, 0, time.Second, "idle-no-keepalive"), "idle-no-keepalive")
	if f.Severity != Warning || f.Subjects[0].Kind != "process" || f.Subjects[0].Name != selfName(t) {
		t.Fatalf("%+v, want a warning for process %s", f, selfName(t))
	}
	if a := remotesOf(t, f.Subjects[0])["127.0.0.1:7002 outbound"]; a == nil || a["no_keepalive"] != 1 {
		t.Errorf("remotes %v, want 127.0.0.1:7002 without keepalive", f.Subjects[0].Numbers["remotes"])
	}

	// A 3 s timeout after 3.3 s: B's 1 s probes keep it alive.
	time.Sleep(time.Until(start.Add(3300 * time.Millisecond)))
	r := diagnose(t, ns, 0, 3*time.Second, "idle-no-keepalive")
	f = onlyFinding(t, r, "idle-no-keepalive")
	if f.Severity != Warning || f.Subjects[0].Name != selfName(t) || f.Subjects[0].Numbers["count"] != 3 {
		t.Fatalf("%+v, want a warning for 3 connections of %s", f, selfName(t))
	}
	rem := remotesOf(t, f.Subjects[0])
	if len(rem) != 3 {
		t.Errorf("remotes %v, want 3", rem)
	}
	if a := rem["127.0.0.1:7002 outbound"]; a == nil || a["no_keepalive"] != 1 {
		t.Errorf("A client: %v", a)
	}
	if a := rem["127.0.0.1 inbound"]; a == nil || a["no_keepalive"] != 1 || a["local"] != "127.0.0.1:7002" {
		t.Errorf("A server: %v", a)
	}
	c := rem["127.0.0.1:7003 outbound"]
	if c == nil || c["keepalive_too_slow"] != 1 || c["count"] != 1 {
		t.Fatalf("C client: %v, want one connection with slow keepalive", c)
	}
	if every := c["keepalive_every_s"].(float64); every < 9 || every > 11 {
		t.Errorf("C keepalive_every_s %v, want about 10", every)
	}
	if f.Evidence["idle_timeout_s"] != 3.0 || r.ExitCode() != 1 {
		t.Errorf("evidence %v exit %d", f.Evidence, r.ExitCode())
	}
}

func TestIdleNoKeepaliveThresholds(t *testing.T) {
	// Linux default keepalive: 7200 s before the first probe.
	slow := fakeConn(sockdiag.Established, "10.0.0.9:5432", 1)
	slow.Timer, slow.TimerExpires = sockdiag.TimerKeepalive, 6800*time.Second
	slow.Info.LastDataSent, slow.Info.LastDataRecv, slow.Info.LastAckRecv = 400_000, 400_000, 400_000
	// Go's default: a probe every 15 s, answered.
	goDefault := fakeConn(sockdiag.Established, "10.0.0.9:5432", 2)
	goDefault.Timer, goDefault.TimerExpires = sockdiag.TimerKeepalive, 10*time.Second
	goDefault.Info.LastDataSent, goDefault.Info.LastDataRecv, goDefault.Info.LastAckRecv = 400_000, 400_000, 5_000
	// Busy: idle below the timeout.
	busy := fakeConn(sockdiag.Established, "10.0.0.9:5432", 3)
	busy.Info.LastDataSent, busy.Info.LastDataRecv, busy.Info.LastAckRecv = 10, 400_000, 10

	f := idleNoKeepalive{}.Check(fakeInput(slow, goDefault, busy))
	if len(f) != 1 || f[0].Evidence["keepalive_too_slow"] != 1 || f[0].Evidence["connections"] != 1 {
		t.Fatalf("%+v, want one finding for the 7200 s keepalive connection only", f)
	}
	if f[0].Evidence["slowest_keepalive_s"] != 7200.0 {
		t.Errorf("slowest_keepalive_s %v, want 7200", f[0].Evidence["slowest_keepalive_s"])
	}
}

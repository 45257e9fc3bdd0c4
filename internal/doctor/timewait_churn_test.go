package doctor

import (
	"os"
	"testing"
	"time"

	"github.com/tcplens/tcplens/lab/harness"
)

func TestTimewaitChurnClient(t *testing.T) {
	t.Parallel()
	ns := harness.NewT(t)
	// Loopback reuse (the default 2) could recycle a TIME_WAIT port and
	// make the counts below inexact.
	setSysctl(t, ns, "net.ipv4.tcp_tw_reuse", "0")
	const dst = "127.0.0.1:5432"
	server(t, ns, dst, true)
	// One pooled connection stays open: it is how the rule names the
	// process behind the churn.
	dialHeld(t, ns, nil, dst)

	churnFast(t, ns, dst, 300)
	waitTW(t, ns, 300)
	if f := findings(diagnose(t, ns, 0, 0, "timewait-churn"), "timewait-churn"); len(f) != 0 {
		t.Fatalf("300 TIME_WAIT (5 closes/s): got %+v, want quiet", f)
	}

	churnFast(t, ns, dst, 400)
	tw := waitTW(t, ns, 700)
	r := diagnose(t, ns, 0, 0, "timewait-churn")
	f := findings(r, "timewait-churn")
	if len(f) != 1 {
		t.Fatalf("got %d findings, want 1: %+v", len(f), f)
	}
	got := mustSubject(t, f, dst)
	if got.Severity != Warning || got.Subjects[0].Kind != "destination" || got.Evidence["side"] != "client" {
		t.Errorf("severity %v kind %s side %v, want warning destination client", got.Severity, got.Subjects[0].Kind, got.Evidence["side"])
	}
	if got.Evidence["time_wait"] != tw || got.Evidence["close_rate_per_s"] != round1(float64(tw)/60) {
		t.Errorf("evidence %v, want %d TIME_WAIT at %d/60 per second", got.Evidence, tw, tw)
	}
	if !ownedBy(got, os.Getpid()) {
		t.Errorf("processes %v, want this test (pid %d)", got.Subjects[0].Processes, os.Getpid())
	}
	// The pooled connection, seen from the client side only (the server's
	// accepted end is inbound).
	if got.Evidence["established"] != 1 {
		t.Errorf("established %v, want the 1 pooled connection", got.Evidence["established"])
	}
	if r.ExitCode() != 1 {
		t.Errorf("exit code %d, want 1", r.ExitCode())
	}

	// With two snapshots a burst shows as growth, above the 60 s average.
	r = diagnoseAround(t, ns, 0, func() { churnFast(t, ns, dst, 300); waitTW(t, ns, 1000) }, "timewait-churn")
	got = mustSubject(t, findings(r, "timewait-churn"), dst)
	if rate, avg := got.Evidence["close_rate_per_s"].(float64), got.Evidence["avg_close_rate_per_s"].(float64); rate <= avg || got.Evidence["growth_per_s"] == nil {
		t.Errorf("rate %v avg %v: want the growth between snapshots to raise the rate", rate, avg)
	}
}

func TestTimewaitChurnServer(t *testing.T) {
	t.Parallel()
	ns := harness.NewT(t)
	const addr = "127.0.0.1:8080"
	serverClosesFirst(t, ns, addr)
	churnPeerCloses(t, ns, addr, 700)
	tw := waitTW(t, ns, 700)

	r := diagnose(t, ns, 0, 0, "timewait-churn")
	f := findings(r, "timewait-churn")
	if len(f) != 1 {
		t.Fatalf("got %d findings, want 1 (server side only): %+v", len(f), f)
	}
	got := mustSubject(t, f, addr)
	if got.Severity != Info || got.Subjects[0].Kind != "listener" || got.Evidence["side"] != "server" || got.Evidence["clients"] != 1 || got.Evidence["time_wait"] != tw {
		t.Errorf("got %v %s %v, want an info about listener %s with 1 client", got.Severity, got.Subjects[0].Kind, got.Evidence, addr)
	}
	if !ownedBy(got, os.Getpid()) {
		t.Errorf("processes %v, want the listener's owner (pid %d)", got.Subjects[0].Processes, os.Getpid())
	}
	if r.ExitCode() != 0 {
		t.Errorf("exit code %d, want 0 for server-side churn", r.ExitCode())
	}
}

// TestRulesAQuiet: a namespace with light, normal traffic gets no finding
// from any group A rule, with one snapshot or two.
func TestRulesAQuiet(t *testing.T) {
	t.Parallel()
	ns := harness.NewT(t)
	server(t, ns, "127.0.0.1:8000", true)
	serverClosesFirst(t, ns, "127.0.0.1:8001")
	rawListen(t, ns, "127.0.0.1:8002", 128)
	nbConnect(t, ns, "127.0.0.1:8002", 2) // a short accept queue is normal
	for range 3 {
		dialHeld(t, ns, nil, "127.0.0.1:8000")
	}
	churnFast(t, ns, "127.0.0.1:8000", 20)
	churnPeerCloses(t, ns, "127.0.0.1:8001", 20)
	waitTW(t, ns, 40)

	for _, iv := range []time.Duration{0, 200 * time.Millisecond} {
		r := diagnose(t, ns, iv, DefaultIdleTimeout, groupA...)
		if len(r.Findings) != 0 {
			t.Errorf("interval %v: got %d findings, want none: %+v", iv, len(r.Findings), r.Findings)
		}
	}
}

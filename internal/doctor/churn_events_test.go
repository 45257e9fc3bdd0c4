package doctor

import (
	"context"
	"testing"
	"time"

	"github.com/tcplens/tcplens/internal/churn"
	"github.com/tcplens/tcplens/lab/harness"
)

// TestChurnFromDestroyEvents: the kernel keeps only 5 TIME_WAIT sockets
// (tcp_max_tw_buckets), so the TIME_WAIT count says at most 5 closes/s; the
// destroy events see every one of the 200 closes. timewait-churn must use
// the measured rate and say so.
func TestChurnFromDestroyEvents(t *testing.T) {
	t.Parallel()
	ns := harness.NewT(t)
	setSysctl(t, ns, "net.ipv4.tcp_tw_reuse", "0")
	setSysctl(t, ns, "net.ipv4.tcp_max_tw_buckets", "5")
	const dst = "127.0.0.1:5432"
	server(t, ns, dst, true)
	dialHeld(t, ns, nil, dst)
	l, err := churn.Listen(context.Background(), churn.Config{Netns: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rules, err := Select([]string{"timewait-churn"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	prev := take(t, ns, true)
	l.Swap()
	l.Observe(prev)
	churnFast(t, ns, dst, 200)
	time.Sleep(500 * time.Millisecond)
	now := take(t, ns, true)
	w := l.Swap()

	// Without the events: 5 TIME_WAIT sockets, no finding.
	if f := findings(Diagnose(&Input{Now: now, Prev: prev}, rules), "timewait-churn"); len(f) != 0 {
		t.Fatalf("estimate from 5 TIME_WAIT sockets: got %+v, want quiet", f)
	}
	r := Diagnose(&Input{Now: now, Prev: prev, Churn: w}, rules)
	got := mustSubject(t, findings(r, "timewait-churn"), dst)
	ev := got.Evidence
	if ev["close_rate_source"] != "destroy_events" || ev["measured_closes"] != 200 || ev["dropped_events"] != uint64(0) {
		t.Fatalf("evidence %v: want 200 closes measured from destroy events, none dropped", ev)
	}
	if want := round1(200 / w.Duration().Seconds()); ev["close_rate_per_s"] != want {
		t.Errorf("close_rate_per_s %v, want %v", ev["close_rate_per_s"], want)
	}
	if r.Churn != w {
		t.Error("the report does not carry the churn window")
	}

	// A dropped event is never hidden: it is in the evidence and the notes.
	w.Dropped = 3
	r = Diagnose(&Input{Now: now, Prev: prev, Churn: w}, rules)
	if got := mustSubject(t, findings(r, "timewait-churn"), dst); got.Evidence["dropped_events"] != uint64(3) || len(r.Notes) == 0 {
		t.Errorf("dropped events: evidence %v, notes %v", got.Evidence, r.Notes)
	}
}

// TestRunMeasuresChurn: doctor.Run with an interval listens to destroy
// events itself; port-exhaustion and timewait-churn report measured rates
// for connections that lived far less than the interval.
func TestRunMeasuresChurn(t *testing.T) {
	t.Parallel()
	ns := harness.NewT(t)
	setSysctl(t, ns, "net.ipv4.tcp_tw_reuse", "0")
	setSysctl(t, ns, "net.ipv4.ip_local_port_range", "40000 40099")
	const dst = "127.0.0.1:5432"
	server(t, ns, dst, true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(300 * time.Millisecond) // after the first snapshot
		churnFast(t, ns, dst, 80)
	}()
	r := diagnose(t, ns, 1500*time.Millisecond, 0, "timewait-churn", "port-exhaustion")
	<-done
	if r.Churn == nil {
		t.Fatalf("no churn window; notes %v", r.Notes)
	}
	// 80 connections, two ends each, all in the namespace.
	if r.Churn.Total.Closed != 160 || r.Churn.Total.ShortLived != 160 {
		t.Errorf("window: %d closed, %d short-lived; want 160, 160", r.Churn.Total.Closed, r.Churn.Total.ShortLived)
	}
	for _, id := range []string{"timewait-churn", "port-exhaustion"} {
		got := mustSubject(t, findings(r, id), dst)
		if got.Evidence["close_rate_source"] != "destroy_events" || got.Evidence["measured_closes"] != 80 {
			t.Errorf("%s evidence %v: want 80 closes from destroy events", id, got.Evidence)
		}
	}
}

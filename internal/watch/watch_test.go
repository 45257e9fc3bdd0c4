package watch

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/lab/harness"
)

func TestRunSamplesAndDiagnoses(t *testing.T) {
	ns := harness.NewT(t)
	l, err := ns.Listen("tcp", "127.0.0.1:9000")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	w, err := New(Options{Netns: ns.Name, Interval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var samples []*Sample
	var conn net.Conn
	err = w.Run(ctx, func(s *Sample) error {
		samples = append(samples, s)
		if len(samples) == 2 {
			if conn, err = ns.Dial(ctx, nil, "tcp", "127.0.0.1:9000"); err != nil {
				return err
			}
		}
		if len(samples) == 4 {
			cancel()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if len(samples) != 4 {
		t.Fatalf("%d samples, want 4", len(samples))
	}
	if samples[0].Prev != nil || samples[1].Prev != samples[0].Snap || samples[0].Report == nil {
		t.Error("samples are not chained, or lack a report")
	}
	for i := 1; i < 4; i++ {
		if gap := samples[i].Time.Sub(samples[i-1].Time); gap < 90*time.Millisecond {
			t.Errorf("samples %d and %d only %s apart", i-1, i, gap)
		}
	}
	if samples[1].Snap.Count(sockdiag.Established) != 0 || samples[3].Snap.Count(sockdiag.Established) != 2 {
		t.Errorf("ESTABLISHED before/after the dial: %d, %d", samples[1].Snap.Count(sockdiag.Established), samples[3].Snap.Count(sockdiag.Established))
	}
	// The port budget comes with the sample: none before the dial, the
	// dialled connection's after.
	if b := samples[3].Budgets; len(samples[1].Budgets) != 0 || len(b) != 1 || b[0].DstPort != 9000 || b[0].InUse != 1 {
		t.Errorf("budgets before %v, after %v: want none, then 1 port in use towards :9000", samples[1].Budgets, b)
	}
	if w.Latest() != samples[3] {
		t.Error("Latest is not the last sample")
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := New(Options{Interval: -time.Second}); err == nil {
		t.Error("negative interval accepted")
	}
	if _, err := New(Options{Only: []string{"nope"}}); err == nil {
		t.Error("unknown rule accepted")
	}
}

// TestChurnCountsShortConnections: connections that open and close between
// two samples never appear in a snapshot, but every sample with Churn
// counts them.
func TestChurnCountsShortConnections(t *testing.T) {
	ns := harness.NewT(t)
	l, err := ns.Listen("tcp", "127.0.0.1:9000")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	w, err := New(Options{Netns: ns.Name, Interval: 400 * time.Millisecond, Churn: true, Procs: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const n = 30
	var samples []*Sample
	err = w.Run(ctx, func(s *Sample) error {
		samples = append(samples, s)
		switch len(samples) {
		case 2:
			// Between samples 2 and 3: n connections of about 2 ms each.
			for range n {
				c, err := ns.Dial(ctx, nil, "tcp", "127.0.0.1:9000")
				if err != nil {
					return err
				}
				time.Sleep(2 * time.Millisecond)
				c.Close()
			}
		case 3:
			cancel()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) != 3 || samples[0].Churn != nil || samples[1].Churn == nil {
		t.Fatalf("%d samples; first churn %v, second %v: want 3, nil, a window", len(samples), samples[0].Churn, samples[1].Churn)
	}
	s := samples[2]
	if s.Snap.Count(sockdiag.Established) != 0 {
		t.Errorf("the snapshot sees %d ESTABLISHED; the connections should be gone", s.Snap.Count(sockdiag.Established))
	}
	// Two ends per connection; none was ever in a snapshot.
	if c := s.Churn; c.Total.Closed != 2*n || c.Total.ShortLived != 2*n || c.Dropped != 0 {
		t.Errorf("churn window: %d closed, %d short-lived, %d dropped; want %d, %d, 0", c.Total.Closed, c.Total.ShortLived, c.Dropped, 2*n, 2*n)
	}
	if !s.Churn.Start.Equal(samples[1].Churn.End) || s.Report.Churn != s.Churn {
		t.Error("windows are not contiguous, or the report lacks the window")
	}
	if err := w.Close(); err != nil {
		t.Error(err)
	}
}

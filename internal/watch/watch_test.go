package watch

import (
	"context"
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

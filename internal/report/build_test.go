package report

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcplens/tcplens/internal/doctor"
	"github.com/tcplens/tcplens/internal/kernel"
	"github.com/tcplens/tcplens/internal/record"
	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/internal/watch"
)

// TestBuild writes a small recording (three full samples a second apart,
// with a tick for each, then two ticks without a full sample) and checks
// the charts' values: states per sample, counter rates per second, and the
// tick charts, which appear only because some intervals had no full sample.
func TestBuild(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	path := filepath.Join(t.TempDir(), "r.db")
	rec, err := record.Open(ctx, path, record.Options{MaxSize: 16 << 20, Top: 5, Triggers: record.DefaultTriggers()})
	if err != nil {
		t.Fatal(err)
	}
	var prev *snapshot.Snapshot
	for i, est := range []int{3, 5, 4} {
		s := &snapshot.Snapshot{Time: t0.Add(time.Duration(i) * time.Second)}
		s.States[sockdiag.Established] = est
		s.Counters = kernel.Counters{"Tcp.RetransSegs": int64(10 * i * i)} // +10, then +30
		if err := rec.Record(ctx, &watch.Sample{Time: s.Time, Snap: s, Prev: prev, Report: &doctor.Report{}}); err != nil {
			t.Fatal(err)
		}
		if err := rec.Tick(ctx, record.Tick{Time: s.Time, SampleID: rec.LastSample(), CurrEstab: est}); err != nil {
			t.Fatal(err)
		}
		prev = s
	}
	build := func() *Report {
		t.Helper()
		rd, err := record.OpenReader(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer rd.Close()
		r, err := Build(ctx, rd, Options{Now: t0})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	chart := func(r *Report, prefix string) *Chart {
		for _, c := range r.Charts {
			if strings.HasPrefix(c.Title, prefix) {
				return c
			}
		}
		return nil
	}
	values := func(s Series) []float64 {
		var v []float64
		for _, p := range s.Points {
			v = append(v, p.V)
		}
		return v
	}
	equal := slices.Equal[[]float64]

	r := build()
	if c := chart(r, "Every interval"); c != nil {
		t.Errorf("every interval had a full sample, yet the report has %q", c.Title)
	}
	st := chart(r, "Sockets per state")
	if st == nil || len(st.Series) != 1 || st.Series[0].Name != "ESTABLISHED" || !equal(values(st.Series[0]), []float64{3, 5, 4}) {
		t.Fatalf("states chart: %+v", st)
	}
	ct := chart(r, "Kernel counters")
	if ct == nil || len(ct.Series) != 1 || ct.Series[0].Name != "Tcp.RetransSegs" || !equal(values(ct.Series[0]), []float64{0, 10, 30}) {
		t.Fatalf("counter chart: %+v", ct)
	}

	// Two intervals without a full sample: CurrEstab jumps between them.
	closed := int64(6)
	for i, est := range []int{40, 7} {
		if err := rec.Tick(ctx, record.Tick{Time: t0.Add(time.Duration(3+i) * time.Second), CurrEstab: est, Closed: &closed}); err != nil {
			t.Fatal(err)
		}
	}
	rec.Close()
	r = build()
	tc := chart(r, "Every interval: kernel socket totals")
	if tc == nil || r.Ticks != 5 || !r.To.Equal(t0.Add(4*time.Second)) {
		t.Fatalf("tick chart %v, %d ticks, axis to %v: want the chart, 5 ticks, axis to the last tick", tc, r.Ticks, r.To)
	}
	var estab []float64
	for _, s := range tc.Series {
		if s.Name == "ESTAB+CLOSE_WAIT" {
			estab = values(s)
		}
	}
	if !equal(estab, []float64{3, 5, 4, 40, 7}) {
		t.Errorf("CurrEstab per tick %v, want 3 5 4 40 7", estab)
	}
	if cc := chart(r, "Every interval: connections closed"); cc == nil || !equal(values(cc.Series[0]), []float64{6, 6}) {
		t.Errorf("closed chart %+v: want 6/s for the two ticks that carry a count", cc)
	}
}

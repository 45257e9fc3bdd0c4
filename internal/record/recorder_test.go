package record

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/doctor"
	"github.com/tcplens/tcplens/internal/kernel"
	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/internal/watch"
)

// These tests feed the recorder synthetic samples: storage, pruning and
// triggers do not depend on where a snapshot came from, and thousands of
// samples are needed to fill a file. The kernel-backed paths are tested in
// cmd/tcplens (record_test.go).

var t0 = time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)

// synth builds a snapshot with est ESTABLISHED client sockets spread over
// 20 destinations and cw CLOSE_WAIT sockets.
func synth(at time.Time, est, cw int, retrans int64) *snapshot.Snapshot {
	s := &snapshot.Snapshot{Time: at, Took: time.Millisecond}
	s.Sysctls.LocalPortRange = kernel.PortRange{Lo: 32768, Hi: 60999}
	s.Counters = kernel.Counters{"Tcp.RetransSegs": retrans, "Tcp.ActiveOpens": int64(est)}
	local := netip.MustParseAddr("10.0.0.1")
	for i := range est + cw {
		sk := sockdiag.Socket{
			State:  sockdiag.Established,
			Local:  netip.AddrPortFrom(local, uint16(33000+i)),
			Remote: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, 0, byte(i % 20)}), 5432),
			Inode:  uint32(1000 + i), HasInfo: true,
		}
		if i >= est {
			sk.State = sockdiag.CloseWait
		}
		s.States[sk.State]++
		s.Sockets = append(s.Sockets, sk)
	}
	return s
}

func sample(prev, now *snapshot.Snapshot, findings ...doctor.Finding) *watch.Sample {
	if findings == nil {
		findings = []doctor.Finding{}
	}
	return &watch.Sample{Time: now.Time, Snap: now, Prev: prev, Report: &doctor.Report{Findings: findings}, Budgets: analyze.PortBudgets(now)}
}

func cwFinding(sev doctor.Severity, n int) doctor.Finding {
	return doctor.Finding{
		ID: "close-wait-leak", Severity: sev, Title: fmt.Sprintf("%d CLOSE_WAIT sockets in app/42", n),
		Evidence: map[string]any{"close_wait": n}, Explanation: "The program never called close().",
		Fix:      []string{"close the socket"},
		Subjects: []doctor.Subject{{Kind: "process", Name: "app/42"}},
	}
}

func open(t *testing.T, path string, mut func(*Options)) *Recorder {
	t.Helper()
	opt := Options{Retention: 24 * time.Hour, MaxSize: 256 << 20, Top: 10, Triggers: DefaultTriggers()}
	if mut != nil {
		mut(&opt)
	}
	r, err := Open(context.Background(), path, opt)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	var n int64
	for _, p := range []string{path, path + "-wal"} {
		st, err := os.Stat(p)
		if err == nil {
			n += st.Size()
		} else if !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	return n
}

func TestEpisodesCapturesAndReadBack(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "r.db")
	r := open(t, path, nil)
	var prev *snapshot.Snapshot
	// 0-4 quiet, 5-7 CLOSE_WAIT spike of 300 with a finding on 6 and 7
	// (warning, then critical), 8-11 quiet again, 12 the finding again (a
	// new episode: it was gone in between).
	for i := range 13 {
		cw := 0
		if i >= 5 && i <= 7 {
			cw = 300
		}
		now := synth(t0.Add(time.Duration(i)*time.Second), 50, cw, int64(i*3))
		var fs []doctor.Finding
		switch i {
		case 6:
			fs = append(fs, cwFinding(doctor.Warning, 300))
		case 7:
			fs = append(fs, cwFinding(doctor.Critical, 300), cwFinding(doctor.Critical, 300)) // duplicate subject: kept once
		case 12:
			fs = append(fs, cwFinding(doctor.Info, 1))
		}
		if err := r.Record(ctx, sample(prev, now, fs...)); err != nil {
			t.Fatal(err)
		}
		prev = now
	}
	if err := r.SetMeta(ctx, "netns", "test"); err != nil {
		t.Fatal(err)
	}
	st := r.Stats()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := Check(ctx, path); err != nil {
		t.Fatal(err)
	}
	rd, err := OpenReader(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()

	samples, err := rd.Samples(ctx, Window{})
	if err != nil || len(samples) != 13 {
		t.Fatalf("%d samples, %v", len(samples), err)
	}
	if samples[6].States[sockdiag.CloseWait] != 300 || samples[6].Total != 350 || samples[6].PortRange != 28232 {
		t.Errorf("sample 6: %+v", samples[6])
	}
	// A window picks samples 5..7.
	w := Window{Since: t0.Add(5 * time.Second), Until: t0.Add(7 * time.Second)}
	if s, _ := rd.Samples(ctx, w); len(s) != 3 {
		t.Errorf("window holds %d samples, want 3", len(s))
	}

	fs, err := rd.Findings(ctx, Window{})
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 2 {
		t.Fatalf("%d finding episodes, want 2: %+v", len(fs), fs)
	}
	if f := fs[0]; f.Rule != "close-wait-leak" || f.Samples != 2 || f.Severity != doctor.Critical ||
		!f.First.Equal(t0.Add(6*time.Second)) || !f.Last.Equal(t0.Add(7*time.Second)) || f.Subjects[0].Name != "app/42" || len(f.Fix) != 1 {
		t.Errorf("first episode: %+v", f)
	}
	if fs[1].Severity != doctor.Info || fs[1].Samples != 1 {
		t.Errorf("second episode: %+v", fs[1])
	}

	budgets, _ := rd.Budgets(ctx, Window{Since: t0, Until: t0})
	if len(budgets) != 10 || budgets[0].InUse < budgets[9].InUse || budgets[0].DstPort != 5432 {
		t.Errorf("budgets of sample 0: %+v", budgets)
	}
	deltas, _ := rd.CounterDeltas(ctx, Window{})
	if len(deltas) != 12 || deltas[0].Name != "Tcp.RetransSegs" || deltas[0].Delta != 3 {
		t.Errorf("counter deltas: %+v", deltas)
	}

	// Triggers: the jump at 5 opens a capture (4 before, 5 trigger, 6 and 7
	// after); the warning at 6 and the escalation at 7 arrive while it is
	// open and extend it by After samples each (8, 9). The fall of
	// CLOSE_WAIT at 8 is no trigger; ESTABLISHED did not move.
	caps, err := rd.Captures(ctx, Window{})
	if err != nil {
		t.Fatal(err)
	}
	if len(caps) != 1 || st.Captures != 1 {
		t.Fatalf("captures: %+v (stats %+v)", caps, st)
	}
	c := caps[0]
	if len(c.Reasons) != 3 || c.Reasons[0].Kind != "jump" || c.Reasons[0].State != "CLOSE_WAIT" || c.Reasons[0].To != 300 ||
		c.Reasons[1].Finding != "close-wait-leak" || c.Reasons[2].Severity != doctor.Critical {
		t.Errorf("reasons: %+v", c.Reasons)
	}
	d, err := rd.Capture(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	var roles []string
	for _, s := range d.Snaps {
		roles = append(roles, s.Role)
	}
	if got := strings.Join(roles, ","); got != "before,trigger,trigger,trigger,after,after" {
		t.Errorf("roles %s", got)
	}
	if d.Snaps[0].States[sockdiag.CloseWait] != 0 || d.Snaps[1].States[sockdiag.CloseWait] != 300 || len(d.Snaps[1].Sockets) != 350 {
		t.Errorf("snapshots around the jump: %+v", d.Snaps[:2])
	}
	if _, err := rd.Capture(ctx, 99); err == nil {
		t.Error("capture 99 found")
	}
}

func TestRateLimitAndSocketCap(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "r.db")
	r := open(t, path, func(o *Options) {
		o.Triggers.Burst, o.Triggers.Every, o.Triggers.After, o.Triggers.MaxSockets = 2, time.Hour, 0, 100
	})
	defer r.Close()
	var prev *snapshot.Snapshot
	// Alternate between 0 and 500 CLOSE_WAIT: a jump every other sample.
	for i := range 20 {
		now := synth(t0.Add(time.Duration(i)*time.Second), 10, (i%2)*500, 0)
		if err := r.Record(ctx, sample(prev, now)); err != nil {
			t.Fatal(err)
		}
		prev = now
	}
	st := r.Stats()
	if st.Captures != 2 || st.Suppressed != 8 {
		t.Errorf("stats %+v: want 2 captures and 8 suppressed triggers", st)
	}
	rd, err := OpenReader(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	d, err := rd.Capture(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	trig := d.Snaps[len(d.Snaps)-1]
	if len(trig.Sockets) != 100 || trig.Omitted != 410 || trig.Sockets[0].State != "CLOSE_WAIT" {
		t.Errorf("capped snapshot: %d sockets, %d omitted, first %+v", len(trig.Sockets), trig.Omitted, trig.Sockets[0])
	}
}

// TestMaxSizeHolds writes far more than --max-size allows, with captures,
// and checks after every sample that the database plus its WAL stays under
// the limit, that the oldest data went first and the newest is kept.
func TestMaxSizeHolds(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "r.db")
	const limit = 1 << 20
	r := open(t, path, func(o *Options) {
		o.MaxSize, o.Retention = limit, 0
		o.Triggers.Burst, o.Triggers.Every = 1000, time.Second
	})
	var prev *snapshot.Snapshot
	peak := int64(0)
	const n = 1200
	for i := range n {
		cw := 0
		if i%50 == 10 {
			cw = 400 // a capture every 50 samples
		}
		now := synth(t0.Add(time.Duration(i)*time.Second), 200, cw, int64(i))
		var fs []doctor.Finding
		if cw > 0 {
			fs = append(fs, cwFinding(doctor.Warning, cw))
		}
		if err := r.Record(ctx, sample(prev, now, fs...)); err != nil {
			t.Fatal(err)
		}
		prev = now
		if sz := fileSize(t, path); sz > peak {
			peak = sz
			if sz > limit {
				t.Fatalf("after sample %d the file takes %d bytes > %d", i, sz, limit)
			}
		}
	}
	st := r.Stats()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("peak %d bytes of %d; %+v", peak, limit, st)
	if st.Pruned == 0 {
		t.Fatal("never pruned: the test wrote too little")
	}
	if err := Check(ctx, path); err != nil {
		t.Fatal(err)
	}
	rd, err := OpenReader(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	first, last, count, err := rd.Span(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !last.Equal(t0.Add((n-1)*time.Second)) || !first.After(t0) || count < 100 {
		t.Errorf("kept %d samples %v .. %v: want the newest kept and the oldest gone", count, first, last)
	}
	caps, _ := rd.Captures(ctx, Window{})
	fs, _ := rd.Findings(ctx, Window{})
	if len(caps) == 0 || caps[0].First.Before(first.Add(-time.Minute)) || len(fs) == 0 || fs[0].First.Before(first.Add(-time.Minute)) {
		t.Errorf("captures or findings older than the samples survived: %d captures, %d findings, samples from %v", len(caps), len(fs), first)
	}
	// Reopening with the same limit keeps it.
	r = open(t, path, func(o *Options) { o.MaxSize = limit })
	r.Close()
	if sz := fileSize(t, path); sz > limit {
		t.Errorf("after reopening: %d bytes", sz)
	}
}

func TestRetention(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "r.db")
	r := open(t, path, func(o *Options) { o.Retention = time.Hour })
	var prev *snapshot.Snapshot
	for i := range 180 { // 3 h, one sample a minute
		now := synth(t0.Add(time.Duration(i)*time.Minute), 5, 0, 0)
		var fs []doctor.Finding
		if i == 10 || i == 170 {
			fs = append(fs, cwFinding(doctor.Warning, 3))
		}
		if err := r.Record(ctx, sample(prev, now, fs...)); err != nil {
			t.Fatal(err)
		}
		if err := r.Tick(ctx, Tick{Time: now.Time, SampleID: r.LastSample()}); err != nil {
			t.Fatal(err)
		}
		prev = now
	}
	r.Close()
	rd, err := OpenReader(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	first, last, n, _ := rd.Span(ctx)
	if n != 61 || !first.Equal(last.Add(-time.Hour)) {
		t.Errorf("%d samples from %v to %v, want the last hour (61)", n, first, last)
	}
	if ticks, _ := rd.Ticks(ctx, Window{}); len(ticks) != 61 || !ticks[0].Time.Equal(first) {
		t.Errorf("%d ticks after retention, want the last hour (61)", len(ticks))
	}
	fs, _ := rd.Findings(ctx, Window{})
	if len(fs) != 1 || !fs[0].First.Equal(t0.Add(170*time.Minute)) {
		t.Errorf("findings after retention: %+v", fs)
	}
}

func TestOpenRejects(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte(strings.Repeat("not sqlite ", 500)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, junk, Options{MaxSize: MinSize, Top: 1, Triggers: DefaultTriggers()}); err == nil || !strings.Contains(err.Error(), "not a tcplens recording") {
		t.Errorf("junk file: %v", err)
	}
	if _, err := OpenReader(ctx, junk); err == nil {
		t.Error("reader opened a junk file")
	}
	if _, err := OpenReader(ctx, filepath.Join(dir, "missing.db")); err == nil {
		t.Error("reader opened a missing file")
	}
	if _, err := os.Stat(filepath.Join(dir, "missing.db")); !os.IsNotExist(err) {
		t.Error("reader created the missing file")
	}
	good := filepath.Join(dir, "r.db")
	r := open(t, good, nil)
	if _, err := Open(ctx, good, Options{MaxSize: MinSize, Top: 1, Triggers: DefaultTriggers()}); err == nil || !strings.Contains(err.Error(), "another tcplens record") {
		t.Errorf("second writer: %v", err)
	}
	r.Close()
	for _, o := range []Options{
		{MaxSize: MinSize - 1, Top: 1, Triggers: DefaultTriggers()},
		{MaxSize: MinSize, Top: 0, Triggers: DefaultTriggers()},
		{MaxSize: MinSize, Top: 1, Retention: -1, Triggers: DefaultTriggers()},
		{MaxSize: MinSize, Top: 1},
	} {
		if _, err := Open(ctx, good, o); err == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
}

func TestCPUBudget(t *testing.T) {
	// Each one-second tick costs 1 ms (probe, tick) and a full sample cost
	// more: count the full samples over 1000 ticks and the CPU used.
	for _, c := range []struct {
		cost   time.Duration
		share  float64
		lo, hi int
	}{
		{10 * time.Millisecond, 0.025, 1000, 1000},
		{24 * time.Millisecond, 0.025, 999, 1000}, // the first sample is paid back first
		{44 * time.Millisecond, 0.025, 540, 550},  // 1000 x (25 - 1) / 44 = 545
		{60 * time.Millisecond, 0.025, 395, 405},  // 400
		{time.Second, 0, 1000, 1000},
	} {
		b := cpuBudget{share: c.share}
		n := 0
		used := time.Millisecond
		for i := range 1000 {
			b.account(t0.Add(time.Duration(i)*time.Second), used)
			used += time.Millisecond
			if i == 0 || b.due() {
				used += c.cost
				b.cost = c.cost
				n++
			}
		}
		if n < c.lo || n > c.hi {
			t.Errorf("cost %s, share %g: %d full samples in 1000 ticks, want %d..%d", c.cost, c.share, n, c.lo, c.hi)
		}
		if avg := float64(used) / float64(1000*time.Second); c.share > 0 && c.cost > 25*time.Millisecond && avg > c.share*1.01 {
			t.Errorf("cost %s: used %.2f%% of a core, budget %.2f%%", c.cost, avg*100, c.share*100)
		}
	}
	// Forced samples run the credit down, but at most maxStretch's worth.
	b := cpuBudget{share: 0.025, cost: 50 * time.Millisecond}
	b.account(t0, time.Millisecond)
	b.account(t0.Add(time.Second), 5*time.Second)
	if want := -750 * time.Millisecond; b.credit != want {
		t.Errorf("credit after 5 s of forced samples: %s, want the floor %s", b.credit, want)
	}
	b.account(t0.Add(maxStretch+3*time.Second), 5*time.Second)
	if !b.due() {
		t.Errorf("not due %s after a run of forced samples", maxStretch+3*time.Second)
	}

	tr := DefaultTriggers()
	base := probe{Sockstat: kernel.Sockstat{InUse: 10, TW: 1000}, CurrEstab: 500}
	for _, c := range []struct {
		p    probe
		want bool
	}{
		{base, false},
		{probe{Sockstat: kernel.Sockstat{InUse: 10, TW: 1400}, CurrEstab: 500}, false}, // +400 is < 50% of 1000
		{probe{Sockstat: kernel.Sockstat{InUse: 10, TW: 1500}, CurrEstab: 500}, true},
		{probe{Sockstat: kernel.Sockstat{InUse: 110, TW: 1000}, CurrEstab: 500}, true},
		{probe{Sockstat: kernel.Sockstat{InUse: 10, TW: 1000}, CurrEstab: 200}, true}, // mass disconnect
		{probe{Sockstat: kernel.Sockstat{InUse: 10, TW: 1000, Orphan: 99}, CurrEstab: 500}, false},
	} {
		if got := tr.probeJump(base, c.p); got != c.want {
			t.Errorf("probeJump(%+v) = %v", c.p, got)
		}
	}
}

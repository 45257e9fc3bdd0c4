package record

import (
	"context"
	"database/sql"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcplens/tcplens/internal/watch"
	"github.com/tcplens/tcplens/lab/harness"
)

// TestLoopTicksEveryInterval runs Loop on a real namespace with a CPU
// budget so small that only the first full sample is taken, and checks
// that every interval still got a tick with the kernel's totals, the
// counter deltas and the destroy events, against the connections the test
// made and ss.
func TestLoopTicksEveryInterval(t *testing.T) {
	ns := harness.NewT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := ns.Listen("tcp", "127.0.0.1:8090")
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
			go func() { // close after the client: the client end keeps TIME_WAIT
				buf := make([]byte, 1)
				c.Read(buf)
				c.Close()
			}()
		}
	}()

	w, err := watch.New(watch.Options{Netns: ns.Name, Interval: 100 * time.Millisecond, Churn: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	path := filepath.Join(t.TempDir(), "r.db")
	r := open(t, path, nil)
	defer r.Close()

	const conns = 20
	loopCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	var st LoopStats
	var loopErr error
	go func() {
		defer close(done)
		st, loopErr = Loop(loopCtx, w, r, LoopOptions{Netns: ns.Name, Interval: 100 * time.Millisecond, CPUBudget: 1e-9, Procs: ProcsNever})
	}()
	time.Sleep(300 * time.Millisecond)
	for i := range conns {
		c, err := ns.Dial(ctx, &net.Dialer{}, "tcp", "127.0.0.1:8090")
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		c.Close()
	}
	tw := func() int {
		out, err := ns.Exec(ctx, "ss", "-Htan", "state", "time-wait")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(out), "\n")
	}
	deadline := time.Now().Add(5 * time.Second)
	for tw() < conns && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(600 * time.Millisecond) // a few more ticks with the final counts
	stop()
	<-done
	if loopErr != nil {
		t.Fatal(loopErr)
	}
	if r.Stats().Samples != 1 {
		t.Fatalf("%d full samples, want 1 (the budget should space the rest out)", r.Stats().Samples)
	}

	rd, err := OpenReader(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	ticks, err := rd.Ticks(ctx, Window{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ticks) != st.Probes || len(ticks) < 8 {
		t.Fatalf("%d ticks for %d probes: want one per interval, at least 8", len(ticks), st.Probes)
	}
	var closed, opens int64
	withSample := 0
	for i, tk := range ticks {
		if tk.SampleID > 0 {
			withSample++
		}
		if i > 0 && tk.Closed == nil {
			t.Errorf("tick %d has no destroy-event count", i)
		}
		if tk.Closed != nil {
			closed += *tk.Closed
		}
		opens += tk.Counters["Tcp.ActiveOpens"]
	}
	last := ticks[len(ticks)-1]
	ssTW := tw()
	// The kernel may reset a connection instead of parking it in TIME_WAIT
	// under load (rarely); allow a slack of 2 against what the test made,
	// but the tick must agree with ss exactly.
	if withSample != 1 || ticks[0].SampleID != r.LastSample() {
		t.Errorf("%d ticks point at a full sample (first: %d), want only the first, sample %d", withSample, ticks[0].SampleID, r.LastSample())
	}
	if last.TimeWait != ssTW || ssTW < conns-2 {
		t.Errorf("last tick TIME_WAIT %d, ss %d, connections made %d", last.TimeWait, ssTW, conns)
	}
	if opens != conns {
		t.Errorf("Tcp.ActiveOpens deltas sum to %d, want %d", opens, conns)
	}
	if closed != 2*conns {
		t.Errorf("destroy events over the ticks: %d, want %d (both ends of %d connections)", closed, 2*conns, conns)
	}
}

// TestMigrateVersion1 opens a recording in the first schema: the writer
// adds the ticks table and keeps the samples; a reader of a version-1 file
// reads no ticks.
func TestMigrateVersion1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v1.db")
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"PRAGMA auto_vacuum=INCREMENTAL", "PRAGMA journal_mode=WAL", schema, "PRAGMA user_version=1",
		"INSERT INTO samples(t, took_us, total, " + strings.Join(stateColumns, ", ") + ", port_range) VALUES(" +
			strconv.FormatInt(t0.UnixMilli(), 10) + ", 1, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1000)"} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%.40s: %v", q, err)
		}
	}
	db.Close()

	rd, err := OpenReader(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if ticks, err := rd.Ticks(ctx, Window{}); err != nil || ticks != nil {
		t.Errorf("version-1 file: ticks %v, %v", ticks, err)
	}
	rd.Close()

	r := open(t, path, nil)
	if err := r.Tick(ctx, Tick{Time: t0.Add(time.Second), TimeWait: 7, Counters: map[string]int64{"Tcp.ActiveOpens": 2}}); err != nil {
		t.Fatal(err)
	}
	r.Close()
	rd, err = OpenReader(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if rd.version != SchemaVersion {
		t.Errorf("version after upgrade: %d", rd.version)
	}
	samples, _ := rd.Samples(ctx, Window{})
	ticks, err := rd.Ticks(ctx, Window{})
	if err != nil || len(samples) != 1 || len(ticks) != 1 || ticks[0].TimeWait != 7 || ticks[0].Counters["Tcp.ActiveOpens"] != 2 || ticks[0].Closed != nil {
		t.Errorf("after upgrade: %d samples, ticks %+v, %v", len(samples), ticks, err)
	}
}

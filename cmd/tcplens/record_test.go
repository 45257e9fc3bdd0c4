package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcplens/tcplens/internal/doctor"
	"github.com/tcplens/tcplens/internal/record"
	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/lab/harness"
)

// runMainEnv makes the test binary behave as tcplens itself, so a test can
// run a real `tcplens record` process and kill -9 it.
const runMainEnv = "TCPLENS_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// lastSample returns the newest sample id and time, or 0 before the first
// commit.
func lastSample(t *testing.T, path string) (int64, time.Time, int) {
	t.Helper()
	ctx := context.Background()
	if _, err := os.Stat(path); err != nil {
		return 0, time.Time{}, 0
	}
	rd, err := record.OpenReader(ctx, path)
	if err != nil {
		return 0, time.Time{}, 0 // not created yet
	}
	defer rd.Close()
	s, err := rd.Samples(ctx, record.Window{Since: time.Now().Add(-time.Minute)})
	if err != nil || len(s) == 0 {
		return 0, time.Time{}, 0
	}
	_, _, n, _ := rd.Span(ctx)
	return s[len(s)-1].ID, s[len(s)-1].Time, n
}

// TestRecordKill9 records at 100 ms in a real child process, kills it with
// SIGKILL right after seeing a commit, and checks that the file is intact,
// that every commit seen before the kill survived, that nothing but the
// sample in flight was lost, and that recording continues into the file.
func TestRecordKill9(t *testing.T) {
	ns := harness.NewT(t)
	l, err := ns.Listen("tcp", "127.0.0.1:7100")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	db := filepath.Join(t.TempDir(), "rec.db")
	const interval = 100 * time.Millisecond

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// --cpu-budget 0: a full sample every interval, whatever the race
	// detector does to the cost of one.
	cmd := exec.CommandContext(ctx, os.Args[0], "record", "--netns", ns.Name, "--db", db, "--interval", interval.String(), "--cpu-budget", "0")
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait for 15 samples (bounded), then kill right after a commit shows.
	var seenID int64
	deadline := time.Now().Add(15 * time.Second)
	for {
		id, _, _ := lastSample(t, db)
		if id >= 15 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("only %d samples after 15 s; stderr: %s", id, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Catch a fresh commit so the kill lands in the middle of the next
	// interval, while a sample may be in flight.
	start, _, _ := lastSample(t, db)
	for i := 0; i < 100; i++ {
		if seenID, _, _ = lastSample(t, db); seenID > start {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(interval / 2)
	seenID, _, _ = lastSample(t, db)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v", err)
	}
	if _, err := os.Stat(db + "-wal"); err != nil {
		t.Logf("no WAL file after the kill (%v)", err)
	}

	if err := record.Check(context.Background(), db); err != nil {
		t.Fatalf("after kill -9: %v", err)
	}
	id, last, n := lastSample(t, db)
	if id < seenID {
		t.Fatalf("commit %d was seen before the kill but is gone (last is %d)", seenID, id)
	}
	// The newest kept sample is at most the interval in flight (plus
	// scheduling slack on a loaded machine) older than the kill.
	if lost := killed.Sub(last); lost > 2*interval+400*time.Millisecond {
		t.Errorf("newest sample is %s older than the kill: more than the last interval was lost", lost)
	}
	if int64(n) != id {
		t.Errorf("%d samples with ids up to %d: a commit went missing in the middle", n, id)
	}
	t.Logf("seen %d before the kill, %d after; newest sample %s before the kill", seenID, id, killed.Sub(last).Round(time.Millisecond))

	// Recording continues into the same file (the lock died with the
	// process), and the ids go on from where they stopped.
	stdout, errOut, code := tcplens(t, "record", "--netns", ns.Name, "--db", db, "--interval", interval.String(), "--duration", "1s", "--json", "--cpu-budget", "0")
	if code != 0 {
		t.Fatalf("record after the crash: exit %d: %s", code, errOut)
	}
	var res struct {
		Stats record.Stats `json:"stats"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || res.Stats.Samples < 5 {
		t.Fatalf("second run: %v %q", err, stdout)
	}
	if err := record.Check(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	id2, _, n2 := lastSample(t, db)
	if id2 != id+int64(res.Stats.Samples) || n2 != n+res.Stats.Samples {
		t.Errorf("after continuing: last id %d, %d samples; want %d and %d", id2, n2, id+int64(res.Stats.Samples), n+res.Stats.Samples)
	}
}

// TestRecordSpike is the 2-second spike: 300 CLOSE_WAIT sockets
// that exist for about 2.7 s. A one-shot doctor run (two snapshots 1 s
// apart) before and after the spike finds nothing; the recording at 250 ms
// has the finding and a capture that holds the spike's sockets. The same
// recording then goes through history and report, and the report is loaded
// in headless Chromium.
func TestRecordSpike(t *testing.T) {
	ns := harness.NewT(t)
	l, err := ns.Listen("tcp", "127.0.0.1:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	calm := func(when string) {
		rep, err := doctor.Run(ctx, doctor.Options{Netns: ns.Name, Interval: time.Second, IdleTimeout: doctor.DefaultIdleTimeout})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range rep.Findings {
			if f.Severity >= doctor.Warning {
				t.Errorf("doctor %s the spike: %s %s: %s", when, f.Severity, f.ID, f.Title)
			}
		}
	}
	calm("before")

	db := filepath.Join(t.TempDir(), "spike.db")
	recCtx, stopRec := context.WithCancel(ctx)
	done := make(chan int, 1)
	var recOut, recErr bytes.Buffer
	go func() {
		done <- run(recCtx, []string{"record", "--netns", ns.Name, "--db", db, "--interval", "250ms", "--cpu-budget", "0"}, &recOut, &recErr)
	}()
	time.Sleep(1200 * time.Millisecond) // a few calm samples first

	// The spike: 300 clients connect and close; the server never closes
	// (CLOSE_WAIT), until it resets them all 2.7 s later.
	const n = 300
	var servers, clients []net.Conn
	accepted := make(chan net.Conn, n)
	go func() {
		for range n {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	spikeStart := time.Now()
	for range n {
		c, err := ns.Dial(ctx, &net.Dialer{KeepAlive: -1}, "tcp", "127.0.0.1:7000")
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	for range n {
		select {
		case c := <-accepted:
			servers = append(servers, c)
		case <-ctx.Done():
			t.Fatal("accept timed out")
		}
	}
	for _, c := range clients {
		c.Close()
	}
	time.Sleep(2700*time.Millisecond - time.Since(spikeStart))
	for _, c := range servers {
		c.(*net.TCPConn).SetLinger(0) // RST: no TIME_WAIT or LAST_ACK left behind
		c.Close()
	}
	spikeEnd := time.Now()
	time.Sleep(1200 * time.Millisecond)
	stopRec()
	if code := <-done; code != 0 {
		t.Fatalf("record exited %d: %s", code, recErr.String())
	}
	if out, _ := ns.Exec(ctx, "ss", "-Htan", "state", "close-wait"); len(bytes.TrimSpace(out)) != 0 {
		t.Fatalf("CLOSE_WAIT sockets left after the spike: %s", out)
	}
	calm("after")

	rd, err := record.OpenReader(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	fs, err := rd.Findings(ctx, record.Window{})
	if err != nil {
		t.Fatal(err)
	}
	var leak *record.Finding
	for i := range fs {
		if fs[i].Rule == "close-wait-leak" && fs[i].Severity >= doctor.Warning {
			leak = &fs[i]
		}
	}
	if leak == nil {
		t.Fatalf("no close-wait-leak finding recorded: %+v\nrecord said: %s", fs, recErr.String())
	}
	if leak.First.Before(spikeStart) || leak.Last.After(spikeEnd.Add(250*time.Millisecond)) {
		t.Errorf("finding %s..%s outside the spike %s..%s", leak.First, leak.Last, spikeStart, spikeEnd)
	}
	caps, err := rd.Captures(ctx, record.Window{})
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, c := range caps {
		var byFinding bool
		for _, r := range c.Reasons {
			byFinding = byFinding || r.Finding == "close-wait-leak"
		}
		d, err := rd.Capture(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range d.Snaps {
			cw := 0
			for _, sk := range s.Sockets {
				if sk.State == "CLOSE_WAIT" && strings.HasSuffix(sk.Local, ":7000") {
					cw++
				}
			}
			if cw == n && s.States[sockdiag.CloseWait] == n && byFinding {
				found = true
			}
		}
		t.Logf("capture %d: %d snapshots, reasons %v", c.ID, len(d.Snaps), c.Reasons)
	}
	if !found {
		t.Fatalf("no capture triggered by close-wait-leak holds the %d CLOSE_WAIT sockets", n)
	}

	// The spike's connections end while record runs; destroy events count
	// every one of them, which samples alone would not.
	churnRows, err := rd.Churn(ctx, record.Window{})
	if err != nil {
		t.Fatal(err)
	}
	closed := 0
	for _, c := range churnRows {
		if strings.HasSuffix(c.Dst, ":7000") {
			closed += c.Closed
		}
	}
	if closed < n {
		t.Errorf("churn recorded %d closes towards or on :7000, want at least the %d spike connections: %+v", closed, n, churnRows)
	}

	t.Run("history", func(t *testing.T) { testHistory(t, db) })
	t.Run("report", func(t *testing.T) { testReport(t, db) })
}

// TestRecordCPUBudget: with a budget no full sample fits, full samples stop
// after the first, the probe keeps running every interval, and a jump in
// the kernel's totals forces a full sample at once.
func TestRecordCPUBudget(t *testing.T) {
	ns := harness.NewT(t)
	l, err := ns.Listen("tcp", "127.0.0.1:7200")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	db := filepath.Join(t.TempDir(), "budget.db")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"record", "--netns", ns.Name, "--db", db, "--interval", "100ms", "--cpu-budget", "0.001", "--duration", "2500ms", "--json"}, &out, &errOut)
	}()
	time.Sleep(1200 * time.Millisecond)
	go func() { // the server ends; closed when the listener closes
		var conns []net.Conn
		for {
			c, err := l.Accept()
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return
			}
			conns = append(conns, c)
		}
	}()
	for range 200 {
		c, err := ns.Dial(ctx, nil, "tcp", "127.0.0.1:7200")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	if code := <-done; code != 0 {
		t.Fatalf("record: exit %d: %s", code, errOut.String())
	}
	var res struct {
		Stats record.Stats     `json:"stats"`
		Loop  record.LoopStats `json:"loop"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	// The budget allows only the first full sample; every later one must be
	// forced by the probe. The 200 dials take a while, so the probe may see
	// the jump in one step or in two.
	if res.Loop.Probes < 15 || res.Loop.ProbeForced < 1 || res.Loop.ProbeForced > 3 || res.Stats.Samples != 1+res.Loop.ProbeForced {
		t.Fatalf("%d probes, %d full samples, %d forced: want >= 15 probes, 1-3 forced and one unforced sample", res.Loop.Probes, res.Stats.Samples, res.Loop.ProbeForced)
	}
	rd, err := record.OpenReader(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	s, err := rd.Samples(context.Background(), record.Window{})
	if err != nil || len(s) != 1+res.Loop.ProbeForced || s[len(s)-1].States[sockdiag.Established] < 300 {
		t.Fatalf("samples %+v, %v: want the last forced one to hold the new connections", s, err)
	}

	// Every interval has a tick, full sample or not, and history and report
	// show them because full samples were spaced out.
	ticks, err := rd.Ticks(context.Background(), record.Window{})
	if err != nil || len(ticks) != res.Loop.Probes || res.Stats.Ticks != len(ticks) {
		t.Fatalf("%d ticks (%d in stats), %v: want one per probe (%d)", len(ticks), res.Stats.Ticks, err, res.Loop.Probes)
	}
	if last := ticks[len(ticks)-1]; last.CurrEstab != 400 || last.SampleID != 0 && last.SampleID != s[len(s)-1].ID {
		t.Errorf("last tick %+v: want CurrEstab 400 (both ends of 200 connections)", last)
	}
	hout, errs, code := tcplens(t, "history", "--db", db)
	if code != 0 || !strings.Contains(hout, "EVERY INTERVAL") || !strings.Contains(hout, fmt.Sprintf("%d of %d intervals", len(s), len(ticks))) {
		t.Errorf("history: exit %d %s: want an EVERY INTERVAL section with %d of %d intervals:\n%s", code, errs, len(s), len(ticks), hout)
	}
	hout, _, _ = tcplens(t, "history", "--db", db, "--json")
	var v historyView
	if err := json.Unmarshal([]byte(hout), &v); err != nil || len(v.Ticks) != len(ticks) || v.Ticks[len(v.Ticks)-1].CurrEstab != 400 {
		t.Errorf("history --json ticks: %d rows, %v", len(v.Ticks), err)
	}
	html := filepath.Join(t.TempDir(), "r.html")
	if _, errs, code := tcplens(t, "report", "--db", db, "-o", html); code != 0 {
		t.Fatalf("report: exit %d: %s", code, errs)
	}
	page, err := os.ReadFile(html)
	if err != nil || !bytes.Contains(page, []byte("Every interval: kernel socket totals")) || !bytes.Contains(page, []byte(fmt.Sprintf("%d intervals have", len(ticks)))) {
		t.Errorf("report lacks the every-interval chart (%v)", err)
	}
}

func testHistory(t *testing.T, db string) {
	out, errOut, code := tcplens(t, "history", "--db", db)
	if code != 0 {
		t.Fatalf("history: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"STATES", "CLOSE_WAIT", "close-wait-leak", "CAPTURES"} {
		if !strings.Contains(out, want) {
			t.Errorf("history lacks %q:\n%s", want, out)
		}
	}
	// The jump trigger's reason. A sample may land mid-spike, so the jump
	// shows up as 0 -> 300 or in steps (0 -> 283, 0 -> 106 then 106 -> 300);
	// that the capture holds all 300 sockets is checked above.
	if m := regexp.MustCompile(`CLOSE_WAIT (\d+) -> (\d+)`).FindStringSubmatch(out); m == nil || m[2] == "0" {
		t.Errorf("history lacks the CLOSE_WAIT jump trigger:\n%s", out)
	}
	out, _, code = tcplens(t, "history", "--db", db, "--since", "10m", "--until", "now", "--json")
	var v historyView
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil {
		t.Fatalf("history --json: exit %d, %v", code, err)
	}
	peak := 0
	for _, r := range v.States {
		peak = max(peak, r.States[sockdiag.CloseWait])
	}
	if peak != 300 || len(v.Findings) == 0 || len(v.Captures) == 0 || v.Samples < 15 {
		t.Errorf("history --json: peak CLOSE_WAIT %d, %d findings, %d captures, %d samples", peak, len(v.Findings), len(v.Captures), v.Samples)
	}
	// Aggregated: 3 rows at most.
	out, _, _ = tcplens(t, "history", "--db", db, "--rows", "3", "--json")
	var agg historyView
	if err := json.Unmarshal([]byte(out), &agg); err != nil || len(agg.States) > 4 || agg.BucketSeconds == 0 {
		t.Errorf("history --rows 3: %d rows, bucket %gs, %v", len(agg.States), agg.BucketSeconds, err)
	}
	out, _, code = tcplens(t, "history", "--db", db, "--capture", "1")
	if code != 0 || !strings.Contains(out, "capture 1") || !strings.Contains(out, "LISTEN") {
		t.Errorf("history --capture 1: exit %d\n%s", code, out)
	}
	// A window before the recording is empty, not an error.
	out, _, code = tcplens(t, "history", "--db", db, "--until", "2000-01-01T00:00:00Z")
	if code != 0 || !strings.Contains(out, "no samples") {
		t.Errorf("empty window: exit %d\n%s", code, out)
	}
}

func TestRecordHistoryReportRejectBadInput(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.db")
	os.WriteFile(junk, bytes.Repeat([]byte("junk"), 1000), 0o600)
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"record", "--db", filepath.Join(dir, "a.db"), "--interval", "50ms"}, 2},
		{[]string{"record", "--db", filepath.Join(dir, "a.db"), "--max-size", "12 parsecs"}, 2},
		{[]string{"record", "--db", filepath.Join(dir, "a.db"), "--max-size", "1000"}, 2},
		{[]string{"record", "--db", filepath.Join(dir, "a.db"), "--trigger-severity", "loud"}, 2},
		{[]string{"record", "--db", filepath.Join(dir, "a.db"), "--capture-before", "99"}, 2},
		{[]string{"record", "--db", filepath.Join(dir, "a.db"), "--retention", "-1h"}, 2},
		{[]string{"record", "--db", junk, "--duration", "1s"}, 1},
		{[]string{"history", "--db", filepath.Join(dir, "missing.db")}, 1},
		{[]string{"history", "--db", junk}, 1},
		{[]string{"history", "--db", junk, "--since", "last tuesday"}, 2},
		{[]string{"history", "--db", junk, "--since", "1m", "--until", "2h"}, 2},
		{[]string{"report", "--db", junk}, 2},
		{[]string{"report", "--db", filepath.Join(dir, "missing.db"), "-o", filepath.Join(dir, "r.html")}, 1},
	} {
		_, errOut, code := tcplens(t, c.args...)
		if code != c.code || strings.Count(errOut, "\n") != 1 || strings.Contains(errOut, "panic") {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and one line", c.args, code, errOut, c.code)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "a.db")); !os.IsNotExist(err) {
		t.Error("a rejected record command created its file")
	}
	if _, err := os.Stat(filepath.Join(dir, "r.html")); !os.IsNotExist(err) {
		t.Error("a failed report left a file")
	}
	if got := defaultDB(); os.Geteuid() == 0 && got != "/var/lib/tcplens/tcplens.db" {
		t.Errorf("default db for root: %s", got)
	}
}

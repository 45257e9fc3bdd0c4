package exporter

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/churn"
	"github.com/tcplens/tcplens/internal/doctor"
	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/internal/watch"
	"github.com/tcplens/tcplens/lab/harness"
)

// gather collects the exporter once and indexes the families by name.
func gather(t *testing.T, e *Exporter) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]*dto.MetricFamily)
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func value(m *dto.Metric) float64 {
	if m.GetCounter() != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// TestCardinalityCap dials 40 destinations from one namespace and leaks
// CLOSE_WAIT sockets in 5 child processes, with caps of 10 destinations
// and 3 processes: the series stop at the cap plus "other", and "other"
// holds exactly the rest.
func TestCardinalityCap(t *testing.T) {
	ns := harness.NewT(t)
	const dests = 40
	l, err := ns.Listen("tcp", "0.0.0.0:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var mu sync.Mutex
	var held []net.Conn
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	// Destination 127.0.0.i gets 1 + i%4 connections: a mix of counts so
	// the top is not simply the first addresses.
	want := make(map[string]int)
	total := 0
	ctx := context.Background()
	for i := 1; i <= dests; i++ {
		dst := fmt.Sprintf("127.0.0.%d", i)
		for range 1 + i%4 {
			c, err := ns.Dial(ctx, nil, "tcp", dst+":7000")
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			want[dst+":7000"]++
			total++
		}
	}

	// Five children hold 1..5 CLOSE_WAIT sockets each: the server side of
	// connections the client closed, handed over as inherited fds.
	cl, err := ns.Listen("tcp", "127.0.0.1:7001")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var children []*exec.Cmd
	defer func() {
		for _, c := range children {
			c.Process.Kill()
			c.Wait()
		}
	}()
	for k := 1; k <= 5; k++ {
		var files []*os.File
		for range k {
			c, err := ns.Dial(ctx, nil, "tcp", "127.0.0.1:7001")
			if err != nil {
				t.Fatal(err)
			}
			s, err := cl.Accept()
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			f, err := s.(*net.TCPConn).File()
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			files = append(files, f)
		}
		cmd := exec.Command("sleep", "60")
		cmd.ExtraFiles = files
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		children = append(children, cmd)
		want["127.0.0.1:7001"] += k // the clients' FIN_WAIT2 sockets hold ports too
		total += k
		for _, f := range files {
			f.Close() // the child's copy is the only one left
		}
	}

	w, err := watch.New(watch.Options{Netns: ns.Name, Interval: time.Second, Procs: true})
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(w, Options{MaxDestinations: 10, MaxProcesses: 3})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := w.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s.Snap.Count(sockdiag.CloseWait) == 15 && s.Snap.Count(sockdiag.Established) == 2*(total-15) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	mfs := gather(t, e)

	inUse := mfs["tcplens_ports_in_use"].GetMetric()
	if len(inUse) != 11 {
		t.Fatalf("%d tcplens_ports_in_use series, want 10 + other", len(inUse))
	}
	if n := len(mfs["tcplens_port_budget_used_ratio"].GetMetric()); n != 10 {
		t.Errorf("%d used_ratio series, want 10", n)
	}
	if v := value(mfs["tcplens_port_budget_destinations"].GetMetric()[0]); v != dests+1 {
		t.Errorf("port_budget_destinations %v, want %d", v, dests+1)
	}
	sum, other, minTop := 0.0, -1.0, 1e9
	for _, m := range inUse {
		dst, v := label(m, "dst"), value(m)
		sum += v
		if dst == Other {
			other = v
			continue
		}
		key := dst + ":" + label(m, "dst_port")
		if float64(want[key]) != v {
			t.Errorf("ports_in_use %s = %v, want %d", key, v, want[key])
		}
		minTop = min(minTop, v)
	}
	if sum != float64(total) || other < 0 {
		t.Errorf("ports_in_use sums to %v (other %v), want %d", sum, other, total)
	}
	// The top 10 are the largest: every kept destination has at least as
	// many ports as the largest one left out.
	counts := make([]int, 0, len(want))
	for _, n := range want {
		counts = append(counts, n)
	}
	slices.Sort(counts)
	if float64(counts[len(counts)-11]) > minTop {
		t.Errorf("a destination with %d ports was left out while one with %v was kept", counts[len(counts)-11], minTop)
	}

	cw := mfs["tcplens_close_wait_sockets"].GetMetric()
	got := make(map[string]float64)
	for _, m := range cw {
		got[label(m, "pid")] = value(m)
	}
	if len(cw) != 4 || got[Other] != 1+2 || got[strconv.Itoa(children[4].Process.Pid)] != 5 || got[strconv.Itoa(children[2].Process.Pid)] != 3 {
		t.Errorf("close_wait_sockets %v: want the children with 5, 4, 3 sockets and other=3", got)
	}
}

// slowSampler's Next blocks until its context ends, like a dump on a huge
// host; Latest returns a fixed sample.
type slowSampler struct {
	latest atomic.Pointer[watch.Sample]
	nexts  atomic.Int32
}

func (s *slowSampler) Next(ctx context.Context) (*watch.Sample, error) {
	s.nexts.Add(1)
	<-ctx.Done()
	return nil, ctx.Err()
}
func (s *slowSampler) Latest() *watch.Sample   { return s.latest.Load() }
func (s *slowSampler) Interval() time.Duration { return time.Second }

func sample(at time.Time) *watch.Sample {
	snap := &snapshot.Snapshot{Time: at, Took: 3 * time.Second}
	snap.States[sockdiag.TimeWait] = 7
	return &watch.Sample{Time: at, Snap: snap, Budgets: analyze.PortBudgets(snap), Report: &doctor.Report{Findings: []doctor.Finding{
		{ID: "close-wait-leak", Severity: doctor.Warning}, {ID: "port-exhaustion", Severity: doctor.Critical}, {ID: "port-exhaustion", Severity: doctor.Critical},
	}}}
}

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape status %d: %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// TestScrapeNeverWaitsForADump: while the one dump in flight hangs,
// scrapes return at once from the latest sample, start no dump of their
// own, and stop serving data once the sample is older than MaxAge.
func TestScrapeNeverWaitsForADump(t *testing.T) {
	src := &slowSampler{}
	start := time.Now()
	var now atomic.Int64
	now.Store(start.UnixNano())
	e, err := New(src, Options{MaxAge: 10 * time.Second, Now: func() time.Time { return time.Unix(0, now.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	h := e.Handler()

	if body := scrape(t, h); !strings.Contains(body, "tcplens_scrape_success 0") || strings.Contains(body, "tcplens_sockets{") {
		t.Errorf("no sample yet, but the scrape did not say so:\n%s", body)
	}

	src.latest.Store(sample(start.Add(-2 * time.Second)))
	var wg sync.WaitGroup
	bodies := make([]string, 20)
	for i := range bodies {
		wg.Go(func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			bodies[i] = fmt.Sprint(rec.Code) + "\n" + rec.Body.String()
		})
	}
	wg.Wait()
	served := 0
	for _, b := range bodies {
		// Scrapes beyond the in-flight limit are refused with 503, never queued.
		if strings.HasPrefix(b, "503") {
			continue
		}
		served++
		for _, want := range []string{
			"tcplens_scrape_success 1", `tcplens_sockets{state="TIME_WAIT"} 7`, "tcplens_last_sample_age_seconds 2",
			"tcplens_last_sample_duration_seconds 3", `tcplens_finding{id="port-exhaustion",severity="critical"} 2`,
			`tcplens_finding{id="close-wait-leak",severity="warning"} 1`,
		} {
			if !strings.Contains(b, want) {
				t.Errorf("fresh sample: %q missing from\n%s", want, b)
				break
			}
		}
	}
	if served == 0 {
		t.Error("every concurrent scrape was refused")
	}

	now.Store(start.Add(9 * time.Second).UnixNano()) // sample 11 s old, MaxAge 10 s
	body := scrape(t, h)
	for _, want := range []string{"tcplens_scrape_success 0", "tcplens_last_sample_age_seconds 11", "tcplens_max_sample_age_seconds 10"} {
		if !strings.Contains(body, want) {
			t.Errorf("stale sample: %q missing", want)
		}
	}
	if strings.Contains(body, "tcplens_sockets{") || strings.Contains(body, "tcplens_finding{") {
		t.Errorf("stale sample served as data:\n%s", body)
	}
	if n := src.nexts.Load(); n != 1 {
		t.Errorf("%d dumps started, want only the background one", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// failingSampler fails every Next at once.
type failingSampler struct{ nexts atomic.Int32 }

func (f *failingSampler) Next(context.Context) (*watch.Sample, error) {
	f.nexts.Add(1)
	return nil, io.ErrUnexpectedEOF
}
func (f *failingSampler) Latest() *watch.Sample   { return nil }
func (f *failingSampler) Interval() time.Duration { return 100 * time.Millisecond }

// TestRunKeepsGoingAfterErrors: a failed sample is counted and retried at
// the next tick, and the exporter keeps serving.
func TestRunKeepsGoingAfterErrors(t *testing.T) {
	src := &failingSampler{}
	e, err := New(src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 350*time.Millisecond)
	defer cancel()
	if err := e.Run(ctx); err != nil {
		t.Fatal(err)
	}
	n := src.nexts.Load()
	if n < 2 || n > 5 {
		t.Errorf("%d attempts in 350 ms at a 100 ms interval", n)
	}
	body := scrape(t, e.Handler())
	if !strings.Contains(body, "tcplens_sample_errors_total "+strconv.Itoa(int(n))) || !strings.Contains(body, "tcplens_scrape_success 0") {
		t.Errorf("errors not reported:\n%s", body)
	}
}

func TestNewRejects(t *testing.T) {
	src := &slowSampler{}
	for _, o := range []Options{{MaxAge: -time.Second}, {MaxAge: 500 * time.Millisecond}, {MaxDestinations: -1}, {MaxProcesses: -1}} {
		if _, err := New(src, o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
	e, err := New(src, Options{})
	if err != nil || e.MaxAge() != 4*time.Second || e.opt.MaxDestinations != DefaultMaxDestinations {
		t.Errorf("defaults: %v, %+v", err, e.opt)
	}
}

func TestClosedTotals(t *testing.T) {
	dst := func(s string) churn.Dest { return churn.Dest{Side: snapshot.Client, Addr: netip.MustParseAddrPort(s)} }
	win := func(d map[string]int, other int, dropped uint64) *churn.Window {
		w := &churn.Window{OtherDestinations: churn.Stats{Closed: other}, Dropped: dropped}
		for a, n := range d {
			w.Destinations = append(w.Destinations, churn.DestStats{Dest: dst(a), Stats: churn.Stats{Closed: n}})
		}
		return w
	}
	var c closedTotals
	c.add(nil)
	if c.enabled {
		t.Fatal("a nil window enabled churn series")
	}
	c.add(win(map[string]int{"10.0.0.1:5432": 50, "10.0.0.2:6379": 5}, 3, 0))
	c.add(win(map[string]int{"10.0.0.2:6379": 100, "10.0.0.3:80": 1}, 0, 7))
	top, rest := c.top(2)
	if len(top) != 2 || top[0].dest != dst("10.0.0.2:6379") || top[0].closed != 105 || top[1].closed != 50 {
		t.Fatalf("top %+v", top)
	}
	if rest != 1+3 || c.dropped != 7 {
		t.Fatalf("rest %d (want the 1 of 10.0.0.3 plus 3 other), dropped %d", rest, c.dropped)
	}
}

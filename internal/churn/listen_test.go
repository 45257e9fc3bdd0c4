package churn

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/lab/harness"
)

// serve accepts connections on addr inside ns: it reads in bytes, writes out
// bytes, then waits for the client's FIN and closes, so the client closes
// first and enters TIME_WAIT as a per-request client does.
func serve(t *testing.T, ns *harness.Namespace, addr string, in, out int) {
	t.Helper()
	var l net.Listener
	err := ns.Run(func() (err error) {
		lc := net.ListenConfig{}
		lc.SetMultipathTCP(false)
		l, err = lc.Listen(context.Background(), "tcp", addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(c, make([]byte, in)); err != nil {
					return
				}
				if _, err := c.Write(make([]byte, out)); err != nil {
					return
				}
				io.Copy(io.Discard, c) // until the client's FIN
			}()
		}
	}()
}

// request dials addr from ns, sends in bytes, reads out bytes and closes.
func request(t *testing.T, ns *harness.Namespace, addr string, in, out int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := ns.Dial(ctx, nil, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(make([]byte, in)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, out)); err != nil {
		t.Fatal(err)
	}
}

// waitEvents waits until the listener has processed (or the kernel dropped)
// want events.
func waitEvents(t *testing.T, l *Listener, want uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		d, _ := l.readDrops()
		if l.Events()+d-l.dropsBaseAtStart() >= want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%d destroy events after 5s, want %d", l.Events(), want)
}

func (l *Listener) dropsBaseAtStart() uint64 { return l.startDrops }

func listen(t *testing.T, cfg Config) *Listener {
	t.Helper()
	l, err := Listen(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func dest(w *Window, side snapshot.Side, addr string) *DestStats {
	ap := netip.MustParseAddrPort(addr)
	for i := range w.Destinations {
		if d := &w.Destinations[i]; d.Side == side && d.Addr == ap {
			return d
		}
	}
	return nil
}

func TestDestroyEventsPerDestination(t *testing.T) {
	ns := harness.NewT(t)
	serve(t, ns, "127.0.0.1:7000", 1000, 300)
	serve(t, ns, "127.0.0.1:7001", 10, 10)
	serve(t, ns, "[::1]:7002", 2000, 100)
	l := listen(t, Config{Netns: ns.Name})
	const n4, m4, n6 = 20, 5, 7
	for range n4 {
		request(t, ns, "127.0.0.1:7000", 1000, 300)
	}
	for range m4 {
		request(t, ns, "127.0.0.1:7001", 10, 10)
	}
	for range n6 {
		request(t, ns, "[::1]:7002", 2000, 100)
	}
	// Both ends of every connection live in the namespace: two events each.
	waitEvents(t, l, 2*(n4+m4+n6))
	w := l.Swap()
	if w.Dropped != 0 || !w.DroppedExact || w.Overruns != 0 || w.Unparsed != 0 {
		t.Errorf("dropped %d (exact %v), overruns %d, unparsed %d; want none", w.Dropped, w.DroppedExact, w.Overruns, w.Unparsed)
	}
	if w.Total.Closed != 2*(n4+m4+n6) {
		t.Errorf("total closed %d, want %d", w.Total.Closed, 2*(n4+m4+n6))
	}
	check := func(side snapshot.Side, addr string, closed int, acked, recv uint64) {
		t.Helper()
		d := dest(w, side, addr)
		if d == nil {
			t.Errorf("%s %s missing from %+v", side, addr, w.Destinations)
			return
		}
		if d.Closed != closed {
			t.Errorf("%s %s: closed %d, want %d", side, addr, d.Closed, closed)
		}
		// bytes_acked counts the SYN and the FIN as one byte each.
		if lo, hi := uint64(closed)*acked, uint64(closed)*(acked+2); d.BytesAcked < lo || d.BytesAcked > hi {
			t.Errorf("%s %s: bytes_acked %d, want %d..%d", side, addr, d.BytesAcked, lo, hi)
		}
		if lo, hi := uint64(closed)*recv, uint64(closed)*(recv+1); d.BytesReceived < lo || d.BytesReceived > hi {
			t.Errorf("%s %s: bytes_received %d, want %d..%d", side, addr, d.BytesReceived, lo, hi)
		}
		if want := float64(d.Closed) / w.Duration().Seconds(); d.PerSecond < want*0.999 || d.PerSecond > want*1.001 {
			t.Errorf("%s %s: %.2f closes/s, want %.2f", side, addr, d.PerSecond, want)
		}
		if d.Retransmits != 0 {
			t.Errorf("%s %s: %d retransmits on loopback", side, addr, d.Retransmits)
		}
	}
	check(snapshot.Client, "127.0.0.1:7000", n4, 1000, 300)
	check(snapshot.Server, "127.0.0.1:7000", n4, 300, 1000)
	check(snapshot.Client, "127.0.0.1:7001", m4, 10, 10)
	check(snapshot.Client, "[::1]:7002", n6, 2000, 100)
	check(snapshot.Server, "[::1]:7002", n6, 100, 2000)
	if rate, closed, ok := w.ClientRate(netip.MustParseAddrPort("127.0.0.1:7000")); !ok || closed != n4 || rate <= 0 {
		t.Errorf("ClientRate = %v, %d, %v", rate, closed, ok)
	}
	if _, closed, ok := w.ServerRate(netip.MustParseAddrPort("0.0.0.0:7000")); !ok || closed != n4 {
		t.Errorf("ServerRate(wildcard) = %d, %v", closed, ok)
	}
	if _, closed, ok := w.ClientRate(netip.MustParseAddrPort("127.0.0.1:9")); !ok || closed != 0 {
		t.Errorf("ClientRate of an unused destination = %d, %v; want 0, true", closed, ok)
	}
	// No snapshot was observed: lifetimes and owners are unknown, not made up.
	if w.Observed || w.Total.LifetimeKnown != 0 || w.Total.ShortLived != 0 || len(w.Processes) != 1 || w.Processes[0].PID != 0 {
		t.Errorf("without snapshots: observed %v, known %d, short %d, processes %+v", w.Observed, w.Total.LifetimeKnown, w.Total.ShortLived, w.Processes)
	}
	// The next window starts empty.
	if w2 := l.Swap(); w2.Total.Closed != 0 || !w2.Start.Equal(w.End) {
		t.Errorf("second window: %d closes, start %v, want 0 from %v", w2.Total.Closed, w2.Start, w.End)
	}
}

func TestLifetimeAndOwnerFromSnapshots(t *testing.T) {
	ns := harness.NewT(t)
	serve(t, ns, "127.0.0.1:7000", 1, 1)
	l := listen(t, Config{Netns: ns.Name})
	ctx := context.Background()
	long, err := ns.Dial(ctx, nil, "tcp", "127.0.0.1:7000")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Take(ctx, snapshot.Options{Netns: ns.Name, Procs: true})
	if err != nil {
		t.Fatal(err)
	}
	l.Observe(snap)
	const short = 10
	for range short {
		request(t, ns, "127.0.0.1:7000", 1, 1)
	}
	time.Sleep(300 * time.Millisecond)
	long.Write([]byte{1})
	io.ReadFull(long, make([]byte, 1))
	long.Close()
	waitEvents(t, l, 2*(short+1))
	w := l.Swap()
	if !w.Observed || w.Total.Closed != 2*(short+1) {
		t.Fatalf("observed %v, closed %d, want true, %d", w.Observed, w.Total.Closed, 2*(short+1))
	}
	// The short connections were born after the snapshot: counted, with a
	// lifetime below one interval. The long one was seen: both its ends
	// lived at least the 300 ms since the snapshot.
	if w.Total.ShortLived != 2*short || w.Total.LifetimeKnown != 2 {
		t.Errorf("short-lived %d, known %d; want %d, 2", w.Total.ShortLived, w.Total.LifetimeKnown, 2*short)
	}
	if w.Total.LifetimeP99 < 250*time.Millisecond || w.Total.LifetimeP99 > 5*time.Second || w.Total.LifetimeP50 != 0 {
		t.Errorf("lifetime p50 %s p99 %s; want 0 and about 300ms", w.Total.LifetimeP50, w.Total.LifetimeP99)
	}
	var mine *ProcStats
	for i := range w.Processes {
		if w.Processes[i].PID == os.Getpid() {
			mine = &w.Processes[i]
		}
	}
	if mine == nil || mine.Closed != 2 || mine.LifetimeKnown != 2 {
		t.Errorf("this process's closes: %+v; want the 2 ends of the long connection (processes %+v)", mine, w.Processes)
	}
}

// TestDroppedEventsAreReported stalls the reader (by holding its lock) while
// a burst of closes overflows a small receive buffer: the window must say
// how many events were lost, and processed + dropped must add up.
func TestDroppedEventsAreReported(t *testing.T) {
	ns := harness.NewT(t)
	serve(t, ns, "127.0.0.1:7000", 1, 1)
	l := listen(t, Config{Netns: ns.Name, RcvBuf: 16 << 10})
	const n = 300
	l.mu.Lock()
	for range n {
		request(t, ns, "127.0.0.1:7000", 1, 1)
	}
	time.Sleep(100 * time.Millisecond) // let the kernel's workqueue deliver
	l.mu.Unlock()
	waitEvents(t, l, 2*n)
	w := l.Swap()
	if w.Dropped == 0 || !w.DroppedExact || w.Overruns == 0 {
		t.Fatalf("dropped %d (exact %v), overruns %d; want drops reported", w.Dropped, w.DroppedExact, w.Overruns)
	}
	if got := uint64(w.Total.Closed) + w.Dropped; got != 2*n {
		t.Errorf("closed %d + dropped %d = %d, want %d", w.Total.Closed, w.Dropped, got, 2*n)
	}
	// The running totals (what record's ticks read) agree with the window.
	if d, exact := l.Dropped(); d != w.Dropped || !exact || l.Events()+d != 2*n {
		t.Errorf("Dropped() = %d (exact %v), Events() = %d: want %d dropped and %d in all", d, exact, l.Events(), w.Dropped, 2*n)
	}
	t.Logf("rcvbuf %d: %d events processed, %d dropped, %d ENOBUFS", l.RcvBuf(), w.Total.Closed, w.Dropped, w.Overruns)
}

func TestCloseAndContext(t *testing.T) {
	ns := harness.NewT(t)
	ctx, cancel := context.WithCancel(context.Background())
	l, err := Listen(ctx, Config{Netns: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-l.done:
	case <-time.After(2 * time.Second):
		t.Fatal("reader still running after the context ended")
	}
	if err := l.Close(); err != nil || l.Err() != nil {
		t.Errorf("Close after cancel: %v, Err %v", err, l.Err())
	}
	if _, err := Listen(context.Background(), Config{Netns: "tl-does-not-exist"}); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("Listen in a missing namespace: %v", err)
	}
}

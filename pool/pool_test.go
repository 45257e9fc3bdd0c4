package pool

import (
	"context"
	"errors"
	"math"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const addrA, addrB = "a:1", "b:1"

func TestDefaults(t *testing.T) {
	checkLeaks(t)
	c, err := Config{}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxTotal != 64 || c.MaxPerRoute != 64 || c.MinIdlePerRoute != 0 || c.FIFO {
		t.Errorf("limits: total %d route %d minIdle %d fifo %v", c.MaxTotal, c.MaxPerRoute, c.MinIdlePerRoute, c.FIFO)
	}
	if c.WaitTimeout != 5*time.Second || c.DialTimeout != 3*time.Second {
		t.Errorf("wait %v dial %v", c.WaitTimeout, c.DialTimeout)
	}
	if det := c.KeepAliveIdle + c.KeepAliveInterval*time.Duration(c.KeepAliveCount); det > 30*time.Second {
		t.Errorf("keepalive finds a dead peer after %v, want well inside 60s", det)
	}
	if c.UserTimeout != 30*time.Second {
		t.Errorf("UserTimeout %v", c.UserTimeout)
	}
	if c.IdleTimeout >= 60*time.Second || c.IdleTimeout <= 0 {
		t.Errorf("IdleTimeout %v, want below 60s", c.IdleTimeout)
	}
	if c.MaxLifetime != 30*time.Minute || c.LifetimeJitter != 3*time.Minute {
		t.Errorf("lifetime %v jitter %v", c.MaxLifetime, c.LifetimeJitter)
	}
	if c.Network != "tcp" || c.FailFastAfter != 3 || c.IdleCheckAfter != 500*time.Millisecond {
		t.Errorf("network %q failfast %d check %v", c.Network, c.FailFastAfter, c.IdleCheckAfter)
	}
	// MaxPerRoute alone raises the default total rather than failing.
	c, err = Config{MaxPerRoute: 100}.WithDefaults()
	if err != nil || c.MaxTotal != 100 {
		t.Errorf("MaxPerRoute 100: total %d err %v", c.MaxTotal, err)
	}
	// Keepalive off: UserTimeout still bounded.
	c, _ = Config{KeepAliveIdle: -1}.WithDefaults()
	if c.UserTimeout != 10*time.Second {
		t.Errorf("UserTimeout without keepalive %v", c.UserTimeout)
	}
}

func TestConfigRejectsNonsense(t *testing.T) {
	checkLeaks(t)
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{MaxTotal: 4, MaxPerRoute: 8}, "MaxPerRoute (8) is larger than MaxTotal (4)"},
		{Config{MaxPerRoute: 2, MinIdlePerRoute: 3}, "MinIdlePerRoute (3) is larger than MaxPerRoute (2)"},
		{Config{MaxTotal: -1}, "negative"},
		{Config{WaitTimeout: -1}, "WaitTimeout"},
		{Config{DialTimeout: -1}, "DialTimeout"},
		{Config{Network: "udp"}, "udp"},
		{Config{UserTimeout: time.Microsecond}, "resolution"},
		{Config{ReadTimeout: -1}, "ReadTimeout"},
		{Config{MaxLifetime: time.Minute, LifetimeJitter: time.Minute}, "LifetimeJitter"},
		{Config{ProbeInterval: time.Second, ProbeMaxInterval: time.Millisecond}, "ProbeMaxInterval"},
		{Config{PingTimeout: -1}, "PingTimeout"},
		{Config{KeepAliveCount: -2}, "KeepAliveCount"},
		{Config{LeakThreshold: -1}, "LeakThreshold"},
		{Config{MaintenanceInterval: -1}, "MaintenanceInterval"},
	} {
		_, err := New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "pool: invalid config: ") {
			t.Errorf("New(%+v) = %v, want error containing %q", tc.cfg, err, tc.want)
		}
	}
}

func TestReuseOrder(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		t.Run(map[bool]string{false: "LIFO", true: "FIFO"}[fifo], func(t *testing.T) {
			checkLeaks(t)
			s := &pipeServer{}
			p := newTestPool(t, s, Config{MaxPerRoute: 3, FIFO: fifo})
			ctx := context.Background()
			var cs []*Conn
			for range 3 {
				c, err := p.Get(ctx, addrA)
				if err != nil {
					t.Fatal(err)
				}
				cs = append(cs, c)
			}
			first, last := cs[0].NetConn(), cs[2].NetConn()
			for _, c := range cs {
				c.Release()
			}
			c, err := p.Get(ctx, addrA)
			if err != nil {
				t.Fatal(err)
			}
			want := last
			if fifo {
				want = first
			}
			if c.NetConn() != want {
				t.Errorf("got a different connection than the %s one", map[bool]string{false: "last released", true: "first released"}[fifo])
			}
			c.Release()
			if s.dials.Load() != 3 {
				t.Errorf("dials = %d, want 3", s.dials.Load())
			}
		})
	}
}

func TestWaitTimeoutSaysWhy(t *testing.T) {
	checkLeaks(t)
	s := &pipeServer{}
	p := newTestPool(t, s, Config{MaxPerRoute: 1, WaitTimeout: 50 * time.Millisecond})
	ctx := context.Background()
	held, err := p.Get(ctx, addrA)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	start := time.Now()
	_, err = p.Get(ctx, addrA)
	if !errors.Is(err, ErrPoolTimeout) {
		t.Fatalf("err = %v, want ErrPoolTimeout", err)
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Errorf("returned after %v, before WaitTimeout", time.Since(start))
	}
	var te *TimeoutError
	if !errors.As(err, &te) || te.Waiting != 1 || te.InUse != 1 || te.Max != 1 || te.Addr != addrA {
		t.Fatalf("TimeoutError = %+v", te)
	}
	if !strings.Contains(err.Error(), "1 callers waiting, 1/1 connections in use") {
		t.Errorf("message %q does not say who waits and what is in use", err)
	}
	rs := routeStats(p, addrA)
	if rs.Timeouts != 1 || rs.Waits != 2 || rs.WaitTime < 50*time.Millisecond { // the first Get waited for its dial
		t.Errorf("stats %+v", rs)
	}
}

func TestGetHonoursContext(t *testing.T) {
	checkLeaks(t)
	s := &pipeServer{}
	p := newTestPool(t, s, Config{MaxPerRoute: 1})
	held, err := p.Get(context.Background(), addrA)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = p.Get(ctx, addrA)
	if !errors.Is(err, ErrPoolTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: err = %v, want ErrPoolTimeout and DeadlineExceeded", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	go func() { time.Sleep(10 * time.Millisecond); cancel() }()
	_, err = p.Get(ctx, addrA)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrPoolTimeout) {
		t.Errorf("cancel: err = %v, want Canceled and not ErrPoolTimeout", err)
	}
	if _, err = p.Get(ctx, addrA); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled ctx: err = %v", err)
	}
	if rs := routeStats(p, addrA); rs.Waiting != 0 || rs.Timeouts != 1 {
		t.Errorf("stats %+v", rs)
	}
}

func TestWaitQueueIsFIFO(t *testing.T) {
	checkLeaks(t)
	s := &pipeServer{}
	p := newTestPool(t, s, Config{MaxPerRoute: 1})
	held, err := p.Get(context.Background(), addrA)
	if err != nil {
		t.Fatal(err)
	}
	const n = 6
	order := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := p.Get(context.Background(), addrA)
			if err != nil {
				t.Error(err)
				return
			}
			order <- i
			c.Release()
		}()
		eventually(t, time.Second, "waiter queued", func() bool { return routeStats(p, addrA).Waiting == i+1 })
	}
	held.Release()
	wg.Wait()
	close(order)
	want := 0
	for got := range order {
		if got != want {
			t.Fatalf("waiter %d served in place %d", got, want)
		}
		want++
	}
	if s.dials.Load() != 1 {
		t.Errorf("dials = %d, want 1", s.dials.Load())
	}
}

func TestCancelledGetHandsItsDialOn(t *testing.T) {
	t.Run("to the next waiter", func(t *testing.T) {
		checkLeaks(t)
		s := &pipeServer{gate: make(chan struct{})}
		p := newTestPool(t, s, Config{MaxPerRoute: 1})
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := p.Get(ctx, addrA)
			errc <- err
		}()
		eventually(t, time.Second, "dial started", func() bool { return s.inDial.Load() == 1 })
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Get: %v", err)
		}
		got := make(chan *Conn, 1)
		go func() {
			c, err := p.Get(context.Background(), addrA)
			if err != nil {
				t.Error(err)
			}
			got <- c
		}()
		eventually(t, time.Second, "second waiter", func() bool { return routeStats(p, addrA).Waiting == 1 })
		s.gate <- struct{}{}
		c := <-got
		if c == nil {
			t.FailNow()
		}
		if err := echoRoundTrip(c); err != nil {
			t.Error(err)
		}
		c.Release()
		if s.dials.Load() != 1 {
			t.Errorf("dials = %d, want 1: the finished dial must serve the next waiter", s.dials.Load())
		}
	})
	t.Run("to the idle list", func(t *testing.T) {
		checkLeaks(t)
		s := &pipeServer{gate: make(chan struct{})}
		p := newTestPool(t, s, Config{MaxPerRoute: 1})
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := p.Get(ctx, addrA)
			errc <- err
		}()
		eventually(t, time.Second, "dial started", func() bool { return s.inDial.Load() == 1 })
		cancel()
		<-errc
		s.gate <- struct{}{}
		eventually(t, time.Second, "conn parked idle", func() bool {
			rs := routeStats(p, addrA)
			return rs.Idle == 1 && rs.Dialing == 0 && rs.InUse == 0
		})
	})
}

func TestDoubleReleaseIsHarmless(t *testing.T) {
	checkLeaks(t)
	s := &pipeServer{}
	p := newTestPool(t, s, Config{MaxPerRoute: 1})
	ctx := context.Background()
	c, err := p.Get(ctx, addrA)
	if err != nil {
		t.Fatal(err)
	}
	c.Release()
	c.Release()
	c.Discard()
	c2, err := p.Get(ctx, addrA)
	if err != nil {
		t.Fatal(err)
	}
	if c2.NetConn() != c.NetConn() {
		t.Fatal("connection not reused")
	}
	c.Release() // stale handle: must not give back c2's connection
	if _, err := c.Write([]byte("x")); !errors.Is(err, ErrConnReleased) {
		t.Errorf("write on released conn: %v", err)
	}
	rs := routeStats(p, addrA)
	if rs.InUse != 1 || rs.DoubleReleases != 3 || rs.Discards != 0 {
		t.Errorf("stats %+v", rs)
	}
	if err := echoRoundTrip(c2); err != nil {
		t.Error(err)
	}
	c2.Release()
}

func TestDiscardFreesSlot(t *testing.T) {
	checkLeaks(t)
	s := &pipeServer{}
	p := newTestPool(t, s, Config{MaxPerRoute: 1, WaitTimeout: time.Second})
	ctx := context.Background()
	c, err := p.Get(ctx, addrA)
	if err != nil {
		t.Fatal(err)
	}
	c.Discard()
	eventually(t, time.Second, "server end closed", func() bool { return s.closed.Load() == 1 })
	c, err = p.Get(ctx, addrA)
	if err != nil {
		t.Fatal(err)
	}
	c.Close() // Close discards too
	rs := routeStats(p, addrA)
	if rs.Discards != 2 || rs.Dials != 2 || rs.Open != 0 {
		t.Errorf("stats %+v", rs)
	}
}

// TestFormatStackWithoutGet: a stack with no (*Pool).Get frame is kept
// whole, each frame as "func\n\tfile:line\n".
func TestFormatStackWithoutGet(t *testing.T) {
	pcs := make([]uintptr, 32)
	pcs = pcs[:runtime.Callers(1, pcs)]
	st := formatStack(pcs)
	if !strings.HasPrefix(st, "github.com/tcplens/tcplens/pool.TestFormatStackWithoutGet\n\t") ||
		!strings.Contains(st, "pool_test.go:") || !strings.Contains(st, "testing.tRunner\n\t") ||
		strings.Count(st, "\n")%2 != 0 {
		t.Errorf("stack:\n%s", st)
	}
}

func TestLeakDetection(t *testing.T) {
	checkLeaks(t)
	s := &pipeServer{}
	leaks := make(chan Leak, 4)
	p := newTestPool(t, s, Config{LeakThreshold: 20 * time.Millisecond, OnLeak: func(l Leak) { leaks <- l }})
	c, err := p.Get(context.Background(), addrA)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-leaks:
		if l.Addr != addrA || l.Held != 20*time.Millisecond || !strings.Contains(l.Stack, "TestLeakDetection") ||
			strings.Contains(l.Stack, "(*route).get") {
			t.Errorf("leak report %+v", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no leak reported")
	}
	c.Release()
	c2, _ := p.Get(context.Background(), addrA)
	c2.Release() // released in time: no report
	time.Sleep(40 * time.Millisecond)
	if n := routeStats(p, addrA).Leaks; n != 1 || len(leaks) != 0 {
		t.Errorf("leaks = %d, queued reports %d", n, len(leaks))
	}
}

func TestCloseDrains(t *testing.T) {
	checkLeaks(t)
	s := &pipeServer{}
	p := newTestPool(t, s, Config{MaxTotal: 2, MaxPerRoute: 1})
	ctx := context.Background()
	idle, err := p.Get(ctx, addrA)
	if err != nil {
		t.Fatal(err)
	}
	idle.Release()
	held, err := p.Get(ctx, addrB)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := p.Get(ctx, addrB)
		errc <- err
	}()
	eventually(t, time.Second, "waiter", func() bool { return routeStats(p, addrB).Waiting == 1 })
	p.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("pending Get: %v, want ErrClosed", err)
	}
	eventually(t, time.Second, "idle conn closed", func() bool { return s.closed.Load() == 1 })
	if err := echoRoundTrip(held); err != nil {
		t.Errorf("in-use conn broken by Close: %v", err)
	}
	held.Release()
	eventually(t, time.Second, "released conn closed", func() bool { return s.closed.Load() == 2 })
	if _, err := p.Get(ctx, addrA); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestSetLimits(t *testing.T) {
	checkLeaks(t)
	s := &pipeServer{}
	p := newTestPool(t, s, Config{MaxTotal: 4, MaxPerRoute: 1})
	ctx := context.Background()
	a, err := p.Get(ctx, addrA)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Conn, 1)
	go func() {
		c, err := p.Get(ctx, addrA)
		if err != nil {
			t.Error(err)
		}
		got <- c
	}()
	eventually(t, time.Second, "waiter", func() bool { return routeStats(p, addrA).Waiting == 1 })
	if err := p.SetLimits(Limits{MaxTotal: 4, MaxPerRoute: 3}); err != nil {
		t.Fatal(err)
	}
	b := <-got
	if b == nil {
		t.FailNow()
	}
	if err := p.SetLimits(Limits{MaxTotal: 4, MaxPerRoute: 1}); err != nil {
		t.Fatal(err)
	}
	a.Release()
	b.Release()
	rs := routeStats(p, addrA)
	if rs.Open != 1 || rs.SurplusCloses != 1 {
		t.Errorf("after shrinking: %+v", rs)
	}
	if err := p.SetLimits(Limits{MaxTotal: 2, MaxPerRoute: 3}); err == nil || !strings.Contains(err.Error(), "MaxPerRoute (3) is larger than MaxTotal (2)") {
		t.Errorf("bad limits accepted: %v", err)
	}
	if c := p.Config(); c.MaxPerRoute != 1 || c.MaxTotal != 4 {
		t.Errorf("Config() = %d/%d after rejected SetLimits", c.MaxPerRoute, c.MaxTotal)
	}
}

func TestMinIdlePrefill(t *testing.T) {
	checkLeaks(t)
	s := &pipeServer{}
	p := newTestPool(t, s, Config{MaxPerRoute: 4, MinIdlePerRoute: 3, MaintenanceInterval: 10 * time.Millisecond})
	p.Prewarm(addrA)
	eventually(t, 2*time.Second, "prewarmed", func() bool { return routeStats(p, addrA).Idle == 3 })
	if s.dials.Load() != 3 {
		t.Errorf("prewarm dialled %d", s.dials.Load())
	}
	c, err := p.Get(context.Background(), addrA)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "3 idle beside the one in use", func() bool { return routeStats(p, addrA).Idle == 3 })
	c.Release()
	time.Sleep(30 * time.Millisecond)
	if rs := routeStats(p, addrA); rs.Open != 4 || rs.Dials != 4 {
		t.Errorf("stats %+v", rs)
	}
}

func TestExpiry(t *testing.T) {
	t.Run("lifetime", func(t *testing.T) {
		checkLeaks(t)
		s := &pipeServer{}
		p := newTestPool(t, s, Config{MaxLifetime: 20 * time.Millisecond, LifetimeJitter: -1})
		c, err := p.Get(context.Background(), addrA)
		if err != nil {
			t.Fatal(err)
		}
		first := c.NetConn()
		time.Sleep(30 * time.Millisecond)
		c.Release()
		c, err = p.Get(context.Background(), addrA)
		if err != nil {
			t.Fatal(err)
		}
		if c.NetConn() == first {
			t.Error("connection past its lifetime handed out")
		}
		c.Release()
		if rs := routeStats(p, addrA); rs.LifetimeCloses != 1 || rs.Open != 1 {
			t.Errorf("stats %+v", rs)
		}
	})
	t.Run("idle timeout in background", func(t *testing.T) {
		checkLeaks(t)
		s := &pipeServer{}
		p := newTestPool(t, s, Config{IdleTimeout: 20 * time.Millisecond, MaintenanceInterval: 5 * time.Millisecond})
		c, err := p.Get(context.Background(), addrA)
		if err != nil {
			t.Fatal(err)
		}
		c.Release()
		eventually(t, 2*time.Second, "idle close", func() bool {
			rs := routeStats(p, addrA)
			return rs.IdleCloses == 1 && rs.Open == 0
		})
	})
	t.Run("idle timeout on get", func(t *testing.T) {
		checkLeaks(t)
		s := &pipeServer{}
		p := newTestPool(t, s, Config{IdleTimeout: 20 * time.Millisecond, MaintenanceInterval: time.Hour})
		c, err := p.Get(context.Background(), addrA)
		if err != nil {
			t.Fatal(err)
		}
		first := c.NetConn()
		c.Release()
		time.Sleep(30 * time.Millisecond)
		c, err = p.Get(context.Background(), addrA)
		if err != nil {
			t.Fatal(err)
		}
		if c.NetConn() == first {
			t.Error("expired connection handed out")
		}
		c.Release()
	})
	t.Run("jitter spreads lifetimes", func(t *testing.T) {
		checkLeaks(t)
		s := &pipeServer{}
		p := newTestPool(t, s, Config{MaxPerRoute: 8, MaxLifetime: time.Hour})
		// Each connection is dialled for its Get, so its lifetime
		// (expires - dial time) lies in [expires-after, expires-before].
		minHi, maxLo := int64(math.MaxInt64), int64(math.MinInt64)
		var cs []*Conn
		for range 8 {
			before := p.now()
			c, err := p.Get(context.Background(), addrA)
			if err != nil {
				t.Fatal(err)
			}
			lo, hi := c.pc.expires-p.now(), c.pc.expires-before
			if lo > int64(time.Hour) || hi <= int64(time.Hour-time.Hour/10) {
				t.Errorf("lifetime in [%v, %v], not inside (54m, 60m]", time.Duration(lo), time.Duration(hi))
			}
			minHi, maxLo = min(minHi, hi), max(maxLo, lo)
			cs = append(cs, c)
		}
		for _, c := range cs {
			c.Release()
		}
		if minHi >= maxLo { // no two lifetimes known to differ
			t.Error("all lifetimes may be equal: no jitter")
		}
	})
}

func TestMaxTotalAcrossRoutes(t *testing.T) {
	checkLeaks(t)
	s := &pipeServer{}
	p := newTestPool(t, s, Config{MaxTotal: 2, MaxPerRoute: 2})
	ctx := context.Background()
	a1, _ := p.Get(ctx, addrA)
	a2, err := p.Get(ctx, addrA)
	if err != nil {
		t.Fatal(err)
	}
	a1.Release()
	a2.Release()
	// Route B must not wait 45s for A's idle connections to expire.
	b, err := p.Get(ctx, addrB)
	if err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	if st.Total.Open != 2 || st.Routes[addrA].SurplusCloses != 1 || st.Routes[addrB].InUse != 1 {
		t.Errorf("stats %+v", st)
	}
	// With everything in use, B waits and is served by a release on A.
	a, _ := p.Get(ctx, addrA)
	got := make(chan *Conn, 1)
	go func() {
		c, err := p.Get(ctx, addrB)
		if err != nil {
			t.Error(err)
		}
		got <- c
	}()
	eventually(t, time.Second, "B waits", func() bool { return routeStats(p, addrB).Waiting == 1 })
	a.Release() // idle on A, then stolen... or closed; either way B is served
	b2 := <-got
	if b2 == nil {
		t.FailNow()
	}
	if n := p.Stats().Total.Open; n > 2 {
		t.Errorf("%d connections open, MaxTotal 2", n)
	}
	b.Release()
	b2.Release()
}

func TestMaxConcurrentDials(t *testing.T) {
	checkLeaks(t)
	s := &pipeServer{delay: 10 * time.Millisecond}
	// No maintenance ticks: each finished dial must start the next one.
	p := newTestPool(t, s, Config{MaxPerRoute: 8, MaxConcurrentDials: 2, WaitTimeout: 2 * time.Second, MaintenanceInterval: time.Hour})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var cs []*Conn
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := p.Get(context.Background(), addrA)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			cs = append(cs, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, c := range cs {
		c.Release()
	}
	if m := s.maxDial.Load(); m > 2 {
		t.Errorf("%d dials at once, MaxConcurrentDials 2", m)
	}
	if s.dials.Load() != 8 {
		t.Errorf("dials = %d", s.dials.Load())
	}
}

func TestFailFastAndRecovery(t *testing.T) {
	checkLeaks(t)
	s := &pipeServer{}
	s.setFail(syscall.ECONNREFUSED)
	p := newTestPool(t, s, Config{FailFastAfter: 3, ProbeInterval: 10 * time.Millisecond, ProbeMaxInterval: 20 * time.Millisecond})
	ctx := context.Background()
	_, err := p.Get(ctx, addrA)
	var rd *RouteDownError
	if !errors.As(err, &rd) || rd.Failures != 3 || !errors.Is(err, syscall.ECONNREFUSED) || !errors.Is(err, ErrRouteDown) {
		t.Fatalf("first Get: %v", err)
	}
	start := time.Now()
	for range 100 {
		if _, err := p.Get(ctx, addrA); !errors.Is(err, ErrRouteDown) {
			t.Fatalf("Get on down route: %v", err)
		}
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("100 fail-fast Gets took %v", d)
	}
	rs := routeStats(p, addrA)
	if !rs.Down || rs.FailFast != 101 || p.Stats().DownRoutes != 1 {
		t.Errorf("stats %+v", rs)
	}
	s.setFail(nil)
	eventually(t, 2*time.Second, "route up", func() bool { return !routeStats(p, addrA).Down })
	c, err := p.Get(ctx, addrA)
	if err != nil {
		t.Fatal(err)
	}
	c.Release()
}

func TestFailFastOff(t *testing.T) {
	checkLeaks(t)
	s := &pipeServer{}
	s.setFail(syscall.ECONNREFUSED)
	p := newTestPool(t, s, Config{FailFastAfter: -1, WaitTimeout: 50 * time.Millisecond})
	_, err := p.Get(context.Background(), addrA)
	var te *TimeoutError
	if !errors.As(err, &te) || !errors.Is(err, syscall.ECONNREFUSED) || te.LastDialErr == nil {
		t.Fatalf("err = %v", err)
	}
	if n := s.dials.Load(); n > 2 {
		t.Errorf("%d dials: a refused dial must not be retried in a loop", n)
	}
}

func TestPingDiscardsBadConn(t *testing.T) {
	checkLeaks(t)
	s := &pipeServer{}
	var pings int
	p := newTestPool(t, s, Config{IdleCheckAfter: time.Nanosecond, Ping: func(ctx context.Context, c net.Conn) error {
		pings++
		if pings == 1 {
			return errors.New("bad")
		}
		if _, ok := ctx.Deadline(); !ok {
			return errors.New("ping without deadline")
		}
		return echoRoundTrip(c)
	}})
	ctx := context.Background()
	c, _ := p.Get(ctx, addrA)
	c.Release()
	time.Sleep(time.Millisecond)
	c, err := p.Get(ctx, addrA) // ping fails, dials fresh
	if err != nil {
		t.Fatal(err)
	}
	c.Release()
	time.Sleep(time.Millisecond)
	c, err = p.Get(ctx, addrA) // ping passes
	if err != nil {
		t.Fatal(err)
	}
	c.Release()
	if rs := routeStats(p, addrA); rs.StaleEvictions != 1 || rs.Dials != 2 || pings != 2 {
		t.Errorf("stats %+v pings %d", rs, pings)
	}
}

func TestPerOperationDeadlines(t *testing.T) {
	checkLeaks(t)
	s := &pipeServer{silent: true}
	p := newTestPool(t, s, Config{ReadTimeout: 20 * time.Millisecond, WriteTimeout: time.Second})
	c, err := p.Get(context.Background(), addrA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	_, err = c.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read: %v, want deadline exceeded", err)
	}
	c.Discard()
}

func TestRouteForgottenWhenUnused(t *testing.T) {
	checkLeaks(t)
	s := &pipeServer{}
	p := newTestPool(t, s, Config{MaintenanceInterval: time.Hour})
	c, _ := p.Get(context.Background(), addrA)
	c.Discard()
	r := p.route(addrA)
	r.mu.Lock()
	r.lastGet -= int64(2 * routeTTL)
	r.mu.Unlock()
	r.maintain(p.now(), true)
	st := p.Stats()
	if _, ok := st.Routes[addrA]; ok || st.Total.Gets != 1 || st.Total.Discards != 1 {
		t.Errorf("stats after removal %+v", st)
	}
	c, err := p.Get(context.Background(), addrA)
	if err != nil {
		t.Fatal(err)
	}
	c.Release()
	if st := p.Stats(); st.Total.Gets != 2 || st.Routes[addrA].Gets != 1 {
		t.Errorf("stats %+v", st)
	}
}

package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tcplens/tcplens/lab/harness"
	"golang.org/x/sys/unix"
)

func rawOf(t testing.TB, c net.Conn) syscall.RawConn {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

func TestPeek(t *testing.T) {
	checkLeaks(t)
	ns := harness.NewT(t)
	ln, err := ns.Listen("tcp", srvAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pair := func() (client, server net.Conn) {
		c, err := ns.Dial(context.Background(), nil, "tcp", srvAddr)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c, s
	}
	waitPeek := func(rc syscall.RawConn, want error) {
		t.Helper()
		var err error
		eventually(t, 2*time.Second, "peek result", func() bool {
			err = peek(rc)
			return errors.Is(err, want)
		})
	}

	c, s := pair()
	rc := rawOf(t, c)
	if err := peek(rc); err != nil {
		t.Fatalf("healthy idle conn: %v", err)
	}
	s.Write([]byte("x"))
	waitPeek(rc, errDataPending)
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil || buf[0] != 'x' {
		t.Fatalf("peek consumed data: %q %v", buf, err)
	}
	if err := peek(rc); err != nil {
		t.Fatalf("after reading: %v", err)
	}
	s.Close()
	waitPeek(rc, io.EOF)
	c.Close()

	c, s = pair()
	s.(*net.TCPConn).SetLinger(0)
	s.Close()
	waitPeek(rawOf(t, c), syscall.ECONNRESET)
	c.Close()
}

func getsockopt(t testing.TB, c net.Conn, level, opt int) int {
	t.Helper()
	var v int
	var gerr error
	if err := rawOf(t, c).Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

func TestSocketOptions(t *testing.T) {
	checkLeaks(t)
	ns := harness.NewT(t)
	startServer(t, ns, modeEcho, 0)
	want := func(t *testing.T, c net.Conn, userMs, idle, intvl, cnt int) {
		t.Helper()
		for _, o := range []struct {
			name       string
			level, opt int
			want       int
		}{
			{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, idle},
			{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, intvl},
			{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, cnt},
			{"TCP_USER_TIMEOUT", unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, userMs},
			{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
		} {
			if got := getsockopt(t, c, o.level, o.opt); got != o.want {
				t.Errorf("%s = %d, want %d", o.name, got, o.want)
			}
		}
	}
	t.Run("defaults through the pool", func(t *testing.T) {
		p := newNSPool(t, ns, Config{})
		c, err := p.Get(context.Background(), srvAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Release()
		want(t, c.NetConn(), 30000, 15, 5, 3)
	})
	t.Run("dialer Control alone", func(t *testing.T) {
		cfg, _ := Config{UserTimeout: 1234 * time.Millisecond, KeepAliveIdle: 7 * time.Second}.WithDefaults()
		d := cfg.dialer()
		c, err := ns.Dial(context.Background(), &d, "tcp", srvAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		want(t, c, 1234, 7, 5, 3)
	})
	t.Run("Dial hook that ignores the dialer", func(t *testing.T) {
		p := newPool(t, Config{UserTimeout: 2 * time.Second, Dial: func(ctx context.Context, _ *net.Dialer, n, a string) (net.Conn, error) {
			return ns.Dial(ctx, &net.Dialer{KeepAlive: -1}, n, a)
		}})
		c, err := p.Get(context.Background(), srvAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Release()
		want(t, c.NetConn(), 2000, 15, 5, 3)
	})
}

// TestDisableNoDelay reads TCP_NODELAY on connections from the pool and
// from NewHTTPTransport, with and without a Dial hook. Go sets TCP_NODELAY
// after connect, so DisableNoDelay must clear it afterwards.
func TestDisableNoDelay(t *testing.T) {
	checkLeaks(t)
	ns := harness.NewT(t)
	// Without a Dial hook the dial runs in the test's own namespace, so that
	// case gets a loopback server here; the hook dials inside ns.
	hostLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer serveHTTP(t, hostLn, &http.Server{Handler: http.NotFoundHandler()})()
	defer serveHTTP(t, nsListen(t, ns, srvAddr), &http.Server{Handler: http.NotFoundHandler()})()
	for _, tc := range []struct {
		name string
		addr string
		dial func(context.Context, *net.Dialer, string, string) (net.Conn, error)
	}{
		{"no Dial hook", hostLn.Addr().String(), nil},
		{"Dial hook", srvAddr, nsDial(ns)},
	} {
		for _, disable := range []bool{false, true} {
			want := 1
			if disable {
				want = 0
			}
			cfg := Config{Dial: tc.dial, DisableNoDelay: disable}
			t.Run(fmt.Sprintf("%s/DisableNoDelay=%v", tc.name, disable), func(t *testing.T) {
				p := newPool(t, cfg)
				c, err := p.Get(context.Background(), tc.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Release()
				if got := getsockopt(t, c.NetConn(), unix.IPPROTO_TCP, unix.TCP_NODELAY); got != want {
					t.Errorf("pool connection: TCP_NODELAY = %d, want %d", got, want)
				}

				tr, err := NewHTTPTransport(cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer tr.CloseIdleConnections()
				got := -1
				trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
					got = getsockopt(t, i.Conn, unix.IPPROTO_TCP, unix.TCP_NODELAY)
				}}
				req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "http://"+tc.addr+"/", nil)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if got != want {
					t.Errorf("HTTP transport connection: TCP_NODELAY = %d, want %d", got, want)
				}
			})
		}
	}
}

// TestDialHookReturnsNothing: a Dial hook that returns neither a connection
// nor an error fails the dial, in the pool and in the HTTP transport.
func TestDialHookReturnsNothing(t *testing.T) {
	checkLeaks(t)
	cfg := Config{FailFastAfter: 1, Dial: func(context.Context, *net.Dialer, string, string) (net.Conn, error) {
		return nil, nil
	}}
	p := newPool(t, cfg)
	if c, err := p.Get(context.Background(), "nothing:1"); err == nil || !strings.Contains(err.Error(), "neither") {
		t.Errorf("pool Get = %v, %v; want the hook's (nil, nil) reported", c, err)
	}
	tr, err := NewHTTPTransport(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := tr.DialContext(context.Background(), "tcp", "nothing:1"); nc != nil || err == nil || !strings.Contains(err.Error(), "neither") {
		t.Errorf("transport dial = %v, %v; want the hook's (nil, nil) reported", nc, err)
	}
}

func TestServerRestartWhileIdle(t *testing.T) {
	for _, bg := range []bool{false, true} {
		t.Run(map[bool]string{false: "found on Get", true: "found in background"}[bg], func(t *testing.T) {
			checkLeaks(t)
			ns := harness.NewT(t)
			srv := startServer(t, ns, modeEcho, 0)
			maint := time.Hour
			if bg {
				maint = 10 * time.Millisecond
			}
			p := newNSPool(t, ns, Config{MaxPerRoute: 4, IdleCheckAfter: 20 * time.Millisecond, MaintenanceInterval: maint})
			ctx := context.Background()
			var cs []*Conn
			for range 4 {
				c, err := p.Get(ctx, srvAddr)
				if err != nil {
					t.Fatal(err)
				}
				if err := echoRoundTrip(c); err != nil {
					t.Fatal(err)
				}
				cs = append(cs, c)
			}
			for _, c := range cs {
				c.Release()
			}
			srv.stop()
			srv = startServer(t, ns, modeEcho, 0)
			if bg {
				eventually(t, 2*time.Second, "dead idle conns evicted", func() bool {
					rs := routeStats(p, srvAddr)
					return rs.Idle == 0 && rs.StaleEvictions == 4
				})
			} else {
				time.Sleep(40 * time.Millisecond) // past IdleCheckAfter
			}
			cs = cs[:0]
			for i := range 4 {
				c, err := p.Get(ctx, srvAddr)
				if err != nil {
					t.Fatal(err)
				}
				if err := echoRoundTrip(c); err != nil {
					t.Fatalf("request %d saw a dead connection: %v", i, err)
				}
				cs = append(cs, c)
			}
			for _, c := range cs {
				c.Release()
			}
			rs := routeStats(p, srvAddr)
			if rs.StaleEvictions != 4 || rs.Dials != 8 || srv.accepted.Load() != 4 {
				t.Errorf("stats %+v, accepted after restart %d", rs, srv.accepted.Load())
			}
		})
	}
}

// isClear tells whether a request error plainly says the peer went away.
func isClear(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}

func TestServerResetsConnections(t *testing.T) {
	checkLeaks(t)
	ns := harness.NewT(t)
	startServer(t, ns, modeReset, 0)
	p := newNSPool(t, ns, Config{MaxPerRoute: 4, IdleCheckAfter: time.Nanosecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				c, err := p.Get(ctx, srvAddr)
				if err != nil {
					t.Errorf("Get: %v", err)
					return
				}
				if err := echoRoundTrip(c); err != nil {
					if !isClear(err) {
						t.Errorf("unclear error: %v", err)
					}
					failed.Add(1)
					c.Discard()
					continue
				}
				ok.Add(1)
				c.Release()
			}
		}()
	}
	wg.Wait()
	rs := routeStats(p, srvAddr)
	t.Logf("%d ok, %d failed with a clear error; %+v", ok.Load(), failed.Load(), rs)
	if ok.Load()+failed.Load() != 200 || ok.Load() == 0 || rs.StaleEvictions == 0 {
		t.Errorf("ok %d failed %d stale %d", ok.Load(), failed.Load(), rs.StaleEvictions)
	}
}

const blackhole = "table inet tl {\n chain in {\n  type filter hook input priority 0;\n  tcp dport 9000 drop\n }\n}\n"

func TestBlackholedServer(t *testing.T) {
	checkLeaks(t)
	ns := harness.NewT(t)
	startServer(t, ns, modeEcho, 0)
	const userTimeout = time.Second
	p := newNSPool(t, ns, Config{
		MaxPerRoute: 2, UserTimeout: userTimeout, DialTimeout: 300 * time.Millisecond,
		KeepAliveIdle: time.Second, KeepAliveInterval: time.Second, KeepAliveCount: 2,
		IdleCheckAfter: time.Millisecond, MaintenanceInterval: 50 * time.Millisecond,
	})
	ctx := context.Background()
	busy, err := p.Get(ctx, srvAddr)
	if err != nil {
		t.Fatal(err)
	}
	idle, err := p.Get(ctx, srvAddr)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Conn{busy, idle} {
		if err := echoRoundTrip(c); err != nil {
			t.Fatal(err)
		}
	}
	idle.Release()
	if err := ns.Nft(ctx, blackhole); err != nil {
		t.Fatal(err)
	}
	dropped := time.Now()

	// Unacked data: TCP_USER_TIMEOUT fails the connection.
	if _, err := busy.Write([]byte("01234567")); err != nil {
		t.Fatalf("first write (buffered) failed: %v", err)
	}
	_, err = busy.Read(make([]byte, 8))
	took := time.Since(dropped)
	if !errors.Is(err, syscall.ETIMEDOUT) || took > userTimeout+time.Second {
		t.Fatalf("read after blackhole: %v after %v, want ETIMEDOUT within %v", err, took, userTimeout+time.Second)
	}
	if _, err := busy.Write([]byte("x")); err == nil {
		t.Error("write on timed-out connection succeeded")
	}
	t.Logf("write failed after %v (TCP_USER_TIMEOUT %v)", took.Round(time.Millisecond), userTimeout)
	busy.Discard()

	// Idle: keepalive probes go unanswered; the background peek evicts it.
	eventually(t, 5*time.Second, "dead idle connection evicted", func() bool {
		rs := routeStats(p, srvAddr)
		return rs.StaleEvictions == 1 && rs.Idle == 0
	})
	t.Logf("idle connection evicted %v after the blackhole", time.Since(dropped).Round(time.Millisecond))

	// New dials time out; after FailFastAfter of them the route fails fast.
	start := time.Now()
	_, err = p.Get(ctx, srvAddr)
	var ne net.Error
	if !errors.Is(err, ErrRouteDown) || !errors.As(err, &ne) || !ne.Timeout() || time.Since(start) > 2*time.Second {
		t.Fatalf("Get to blackholed server: %v after %v", err, time.Since(start))
	}
	start = time.Now()
	if _, err := p.Get(ctx, srvAddr); !errors.Is(err, ErrRouteDown) || time.Since(start) > 10*time.Millisecond {
		t.Fatalf("fail-fast Get: %v after %v", err, time.Since(start))
	}
}

func TestSlowServerReadDeadline(t *testing.T) {
	checkLeaks(t)
	ns := harness.NewT(t)
	srv := startServer(t, ns, modeSlow, 3*time.Second)
	p := newNSPool(t, ns, Config{ReadTimeout: 200 * time.Millisecond, WriteTimeout: time.Second})
	c, err := p.Get(context.Background(), srvAddr)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = echoRoundTrip(c)
	if !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("slow server: %v after %v, want deadline exceeded after ~200ms", err, time.Since(start))
	}
	c.Discard()
	srv.mode.Store(int32(modeEcho))
	c, err = p.Get(context.Background(), srvAddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := echoRoundTrip(c); err != nil {
		t.Errorf("fresh connection after the discard: %v", err)
	}
	c.Release()
}

func TestServerDownFailsFastThenRecovers(t *testing.T) {
	checkLeaks(t)
	ns := harness.NewT(t)
	const probeMax = 100 * time.Millisecond
	p := newNSPool(t, ns, Config{MinIdlePerRoute: 2, FailFastAfter: 3, ProbeInterval: 50 * time.Millisecond, ProbeMaxInterval: probeMax})
	ctx := context.Background()
	if _, err := p.Get(ctx, srvAddr); !errors.Is(err, ErrRouteDown) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("first Get: %v", err)
	}
	var slowest time.Duration
	for range 50 {
		start := time.Now()
		_, err := p.Get(ctx, srvAddr)
		slowest = max(slowest, time.Since(start))
		if !errors.Is(err, ErrRouteDown) {
			t.Fatalf("Get on down route: %v", err)
		}
	}
	if slowest >= 10*time.Millisecond {
		t.Errorf("slowest fail-fast Get took %v, want under 10ms", slowest)
	}
	t.Logf("slowest of 50 fail-fast Gets: %v", slowest)

	time.Sleep(3 * probeMax) // let the backoff reach its cap
	srv := startServer(t, ns, modeEcho, 0)
	back := time.Now()
	eventually(t, 2*time.Second, "route reopened", func() bool { return !routeStats(p, srvAddr).Down })
	took := time.Since(back)
	t.Logf("route reopened %v after the server came back (probe interval %v)", took.Round(time.Millisecond), probeMax)
	if took > probeMax+50*time.Millisecond {
		t.Errorf("recovery took %v, want within one probe interval (%v)", took, probeMax)
	}
	eventually(t, 2*time.Second, "MinIdle refilled", func() bool { return routeStats(p, srvAddr).Idle == 2 })
	c, err := p.Get(ctx, srvAddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := echoRoundTrip(c); err != nil {
		t.Error(err)
	}
	c.Release()
	if srv.accepted.Load() != 2 {
		t.Errorf("accepted %d connections, want 2 (MinIdle)", srv.accepted.Load())
	}
}

func TestHammerStaysWithinMaxPerRoute(t *testing.T) {
	checkLeaks(t)
	ns := harness.NewT(t)
	srv := startServer(t, ns, modeSlow, time.Millisecond)
	const limit = 8
	p := newNSPool(t, ns, Config{MaxPerRoute: limit, WaitTimeout: 20 * time.Second})
	ctx := context.Background()
	var inUse, peak atomic.Int64
	done := make(chan struct{})
	var ssPeak, samples int
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() { // ss as the oracle while the load runs
		defer sampler.Done()
		for range 200 {
			select {
			case <-done:
				return
			default:
			}
			n := countSockets(t, ns, "state", "established", "( dport = :9000 )")
			ssPeak = max(ssPeak, n)
			samples++
		}
	}()
	var wg sync.WaitGroup
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2 {
				c, err := p.Get(ctx, srvAddr)
				if err != nil {
					t.Error(err)
					return
				}
				storeMax(&peak, inUse.Add(1))
				if err := echoRoundTrip(c); err != nil {
					t.Error(err)
				}
				inUse.Add(-1)
				c.Release()
			}
		}()
	}
	wg.Wait()
	close(done)
	sampler.Wait()
	after := countSockets(t, ns, "state", "established", "( dport = :9000 )")
	rs := routeStats(p, srvAddr)
	t.Logf("peak in use %d, ss peak %d over %d samples, ss after %d, accepted %d, stats %+v",
		peak.Load(), ssPeak, samples, after, srv.accepted.Load(), rs)
	if peak.Load() > limit || ssPeak > limit || after > limit || srv.accepted.Load() > limit || rs.Dials > limit {
		t.Errorf("more than %d connections", limit)
	}
	if samples == 0 || ssPeak == 0 || after == 0 {
		t.Error("ss saw nothing")
	}
	if rs.Timeouts != 0 || rs.Gets != 2000 {
		t.Errorf("stats %+v", rs)
	}
}

package pool

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// checkLeaks fails the test if it leaves goroutines behind. Call it first,
// so its cleanup runs last.
func checkLeaks(t testing.TB) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// pipeServer is an in-memory peer: Dial returns one end of a net.Pipe and
// an echo goroutine serves the other. No sockets, no traffic.
type pipeServer struct {
	wg      sync.WaitGroup
	dials   atomic.Int64
	closed  atomic.Int64 // server ends that saw EOF
	fail    atomic.Pointer[error]
	gate    chan struct{} // if set, each dial waits for a receive or ctx
	silent  bool          // read but never answer
	inDial  atomic.Int64
	maxDial atomic.Int64
	delay   time.Duration
}

func (s *pipeServer) Dial(ctx context.Context, _ *net.Dialer, _, _ string) (net.Conn, error) {
	storeMax(&s.maxDial, s.inDial.Add(1))
	defer s.inDial.Add(-1)
	s.dials.Add(1)
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if s.delay > 0 {
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if e := s.fail.Load(); e != nil {
		return nil, *e
	}
	c1, c2 := net.Pipe()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.closed.Add(1)
		defer c2.Close()
		if s.silent {
			io.Copy(io.Discard, c2)
			return
		}
		io.Copy(c2, c2)
	}()
	return c1, nil
}

func (s *pipeServer) setFail(err error) {
	if err == nil {
		s.fail.Store(nil)
		return
	}
	s.fail.Store(&err)
}

// storeMax raises v to n if n is larger: a peak kept by concurrent writers.
func storeMax(v *atomic.Int64, n int64) {
	for {
		m := v.Load()
		if n <= m || v.CompareAndSwap(m, n) {
			return
		}
	}
}

// newPool makes a pool from cfg, closed at test end.
func newPool(t testing.TB, cfg Config) *Pool {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// newTestPool makes a pool dialling s (unless cfg.Dial is set), closed at
// test end, and then checks that every server end saw its connection close.
func newTestPool(t testing.TB, s *pipeServer, cfg Config) *Pool {
	t.Helper()
	if cfg.Dial == nil {
		cfg.Dial = s.Dial
	}
	// Registered before newPool's cleanup, so it runs after the pool closed.
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("pipe server goroutines still running: a connection was never released")
		}
	})
	return newPool(t, cfg)
}

// eventually polls cond every 2ms for at most d.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func routeStats(p *Pool, addr string) RouteStats { return p.Stats().Routes[addr] }

// echoRoundTrip writes 8 bytes and reads them back.
func echoRoundTrip(c net.Conn) error {
	msg := []byte("01234567")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != string(msg) {
		return errors.New("echo mismatch")
	}
	return nil
}

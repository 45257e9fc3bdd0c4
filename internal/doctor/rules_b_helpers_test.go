package doctor

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcplens/tcplens/internal/kernel"
	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/lab/harness"
)

// selfName is how subjects name this test process: "comm/pid".
func selfName(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b)) + "/" + strconv.Itoa(os.Getpid())
}

// dialB connects from ns and closes the connection when the test ends.
func dialB(t *testing.T, ns *harness.Namespace, d *net.Dialer, addr string) *net.TCPConn {
	t.Helper()
	if d == nil {
		d = &net.Dialer{}
	}
	if d.Timeout == 0 {
		d.Timeout = 2 * time.Second
	}
	c, err := ns.Dial(context.Background(), d, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// holdListener accepts connections in ns with lc and keeps them open,
// never reading or closing, until the test ends. accepted receives each.
func holdListener(t *testing.T, ns *harness.Namespace, lc *net.ListenConfig, addr string) (accepted <-chan net.Conn) {
	t.Helper()
	var l net.Listener
	err := ns.Run(func() (err error) {
		l, err = lc.Listen(context.Background(), "tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	ch := make(chan net.Conn, 256)
	acceptLoop(t, l, func(c net.Conn) {
		select {
		case ch <- c:
		default:
		}
	})
	return ch
}

// waitFor is harness.WaitFor for a test: it fails the test when cond does
// not hold within limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := harness.WaitFor(context.Background(), limit, func() (bool, error) { return cond(), nil }); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// onlyFinding returns the single finding of id, failing otherwise.
func onlyFinding(t *testing.T, r *Report, id string) Finding {
	t.Helper()
	f := findings(r, id)
	if len(f) != 1 {
		t.Fatalf("%s: %d findings, want 1: %+v", id, len(f), f)
	}
	return f[0]
}

// remotesOf returns a subject's per-remote numbers keyed by
// "remote direction".
func remotesOf(t *testing.T, s Subject) map[string]map[string]any {
	t.Helper()
	rs, ok := s.Numbers["remotes"].([]map[string]any)
	if !ok {
		t.Fatalf("subject %s has no remotes: %v", s.Name, s.Numbers)
	}
	out := make(map[string]map[string]any)
	for _, r := range rs {
		out[r["remote"].(string)+" "+r["direction"].(string)] = r
	}
	return out
}

// lightTraffic runs healthy request/response traffic to a server in ns
// that closes on EOF: short connections plus one busy long-lived one. It
// stops when the returned function is called.
func lightTraffic(t *testing.T, ns *harness.Namespace, addr string) (stop func()) {
	t.Helper()
	server(t, ns, addr, true)
	busy := dialB(t, ns, nil, addr)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < 1000 && ctx.Err() == nil; i++ {
			if _, err := busy.Write([]byte("ping\n")); err != nil {
				errc <- err
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 1000 && ctx.Err() == nil; i++ {
			c, err := ns.Dial(ctx, &net.Dialer{Timeout: 2 * time.Second}, "tcp", addr)
			if err != nil {
				if !errors.Is(err, context.Canceled) {
					errc <- err
				}
				return
			}
			c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
			c.Close()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return func() {
		cancel()
		wg.Wait()
		select {
		case err := <-errc:
			t.Errorf("traffic: %v", err)
		default:
		}
	}
}

// fakeInput builds an input from hand-made sockets, for thresholds that a
// real kernel would take minutes to reach.
func fakeInput(sockets ...sockdiag.Socket) *Input {
	return &Input{
		Now: &snapshot.Snapshot{
			Time: time.Now(), Sockets: sockets,
			Sysctls: kernel.Sysctls{
				LocalPortRange: kernel.PortRange{Lo: 32768, Hi: 60999},
				FinTimeout:     60, Retries2: 15, SynRetries: 6,
				KeepaliveTime: 7200, KeepaliveIntvl: 75, KeepaliveProbes: 9,
			},
		},
		IdleTimeout: DefaultIdleTimeout,
	}
}

// fakeConn is an outbound connection from 10.0.0.1 to dst.
func fakeConn(st sockdiag.State, dst string, cookie uint64) sockdiag.Socket {
	return sockdiag.Socket{
		Family: 2, State: st, HasInfo: true, Cookie: cookie, Inode: uint32(1000 + cookie),
		Local:  netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(40000+cookie)),
		Remote: netip.MustParseAddrPort(dst),
	}
}

// Healthy traffic must not trigger any group B rule: short request/response
// connections, a busy long-lived one, and a legitimate half-close where the
// server streams its reply after the client's FIN (CLOSE_WAIT while still
// writing).
func TestGroupBQuietOnHealthyTraffic(t *testing.T) {
	t.Parallel()
	ns := harness.NewT(t)
	stop := lightTraffic(t, ns, "127.0.0.1:7030")

	l, err := ns.Listen("tcp", "127.0.0.1:7031")
	if err != nil {
		t.Fatal(err)
	}
	streamed := make(chan struct{})
	go func() {
		defer close(streamed)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(io.Discard, c) // until the client's FIN
		for range 200 {        // then reply for about 4 s
			if _, err := c.Write([]byte("chunk\n")); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { l.Close(); <-streamed })
	half := dialB(t, ns, nil, "127.0.0.1:7031")
	if err := half.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, half)

	ids := []string{"close-wait-leak", "orphan-fin-wait2", "retransmit-stall", "idle-no-keepalive"}
	r := diagnose(t, ns, 2500*time.Millisecond, 0, ids...)
	stop()
	if len(r.Findings) != 0 {
		t.Fatalf("healthy traffic: %+v, want no findings", r.Findings)
	}
	if r.Total < 3 {
		t.Errorf("only %d sockets: the traffic did not run", r.Total)
	}
}

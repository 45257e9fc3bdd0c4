package pool

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcplens/tcplens/lab/harness"
	"golang.org/x/sys/unix"
)

func TestNewHTTPTransport(t *testing.T) {
	checkLeaks(t)
	tr, err := NewHTTPTransport(Config{MaxPerRoute: 32})
	if err != nil {
		t.Fatal(err)
	}
	if tr.MaxIdleConnsPerHost != 32 || tr.MaxConnsPerHost != 32 || tr.MaxIdleConns != 64 {
		t.Errorf("idle/host %d conns/host %d idle %d", tr.MaxIdleConnsPerHost, tr.MaxConnsPerHost, tr.MaxIdleConns)
	}
	if tr.IdleConnTimeout != DefaultIdleTimeout || tr.IdleConnTimeout >= 60*time.Second {
		t.Errorf("IdleConnTimeout %v", tr.IdleConnTimeout)
	}
	if _, err := NewHTTPTransport(Config{MaxTotal: 1, MaxPerRoute: 2}); err == nil {
		t.Error("invalid config accepted")
	}
}

// TestHTTPTransportTimeWait runs the same load (concurrency 64) through
// net/http's default transport and through NewHTTPTransport, each in its own
// namespace against a real HTTP server, and counts TIME_WAIT with ss.
func TestHTTPTransportTimeWait(t *testing.T) {
	checkLeaks(t)
	const conc, perWorker = 64, 30
	load := func(t *testing.T, ns *harness.Namespace, tr *http.Transport) (tw int, conns int64) {
		var accepted atomic.Int64
		stop := serveHTTP(t, nsListen(t, ns, srvAddr), &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }),
			ConnState: func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					accepted.Add(1)
				}
			},
		})
		defer func() {
			tr.CloseIdleConnections()
			stop()
		}()
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		var wg sync.WaitGroup
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range perWorker {
					resp, err := client.Get("http://" + srvAddr + "/")
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}()
		}
		wg.Wait()
		return countSockets(t, ns, "state", "time-wait", "( dport = :9000 or sport = :9000 )"), accepted.Load()
	}

	nsDef := harness.NewT(t)
	def := http.DefaultTransport.(*http.Transport).Clone()
	def.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return nsDef.Dial(ctx, &net.Dialer{}, network, addr)
	}
	defTW, defConns := load(t, nsDef, def)

	nsPool := harness.NewT(t)
	tr, err := NewHTTPTransport(Config{MaxPerRoute: conc, Dial: nsDial(nsPool)})
	if err != nil {
		t.Fatal(err)
	}
	// The transport's connections carry TCP_USER_TIMEOUT from Control.
	var userTimeout int
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		userTimeout = getsockopt(t, i.Conn, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	}}
	poolTW, poolConns := func() (int, int64) {
		stop := serveHTTP(t, nsListen(t, nsPool, "127.0.0.1:9001"), &http.Server{Handler: http.NotFoundHandler()})
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "http://127.0.0.1:9001/", nil)
		if resp, err := tr.RoundTrip(req); err == nil {
			resp.Body.Close()
		} else {
			t.Error(err)
		}
		tr.CloseIdleConnections()
		stop()
		return load(t, nsPool, tr)
	}()
	if userTimeout != 30000 {
		t.Errorf("TCP_USER_TIMEOUT on transport connection = %dms, want 30000", userTimeout)
	}
	t.Logf("%d requests at concurrency %d: default transport %d connections, %d TIME_WAIT; pool transport %d connections, %d TIME_WAIT",
		conc*perWorker, conc, defConns, defTW, poolConns, poolTW)
	if poolTW > conc || poolConns > conc {
		t.Errorf("pool transport: %d TIME_WAIT, %d connections; want at most %d", poolTW, poolConns, conc)
	}
	if defTW <= poolTW {
		t.Errorf("default transport left %d TIME_WAIT, no more than the pool transport's %d", defTW, poolTW)
	}
}

// nsListen listens on addr inside ns.
func nsListen(t testing.TB, ns *harness.Namespace, addr string) net.Listener {
	t.Helper()
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// serveHTTP serves srv on ln (with a ReadHeaderTimeout of 5s if it has
// none) until stop, which shuts the server down and waits for it.
func serveHTTP(t testing.TB, ln net.Listener, srv *http.Server) (stop func()) {
	t.Helper()
	if srv.ReadHeaderTimeout == 0 {
		srv.ReadHeaderTimeout = 5 * time.Second
	}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ln) }()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("http server shutdown: %v", err)
		}
		<-served
	}
}

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
		ln, err := ns.Listen("tcp", srvAddr)
		if err != nil {
			t.Fatal(err)
		}
		var accepted atomic.Int64
		srv := &http.Server{
			Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }),
			ReadHeaderTimeout: 5 * time.Second,
			ConnState: func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					accepted.Add(1)
				}
			},
		}
		served := make(chan struct{})
		go func() { defer close(served); srv.Serve(ln) }()
		defer func() {
			tr.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
			<-served
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
		ln, err := nsPool.Listen("tcp", "127.0.0.1:9001")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: time.Second}
		served := make(chan struct{})
		go func() { defer close(served); srv.Serve(ln) }()
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "http://127.0.0.1:9001/", nil)
		if resp, err := tr.RoundTrip(req); err == nil {
			resp.Body.Close()
		} else {
			t.Error(err)
		}
		tr.CloseIdleConnections()
		srv.Close()
		<-served
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

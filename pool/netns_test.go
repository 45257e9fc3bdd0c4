package pool

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcplens/tcplens/lab/harness"
)

const srvAddr = "127.0.0.1:9000"

// nsDial makes the pool dial inside ns, through the dialer it is given.
func nsDial(ns *harness.Namespace) func(context.Context, *net.Dialer, string, string) (net.Conn, error) {
	return func(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
		return ns.Dial(ctx, d, network, addr)
	}
}

type serverMode int32

const (
	modeEcho  serverMode = iota
	modeSlow             // answer after delay
	modeReset            // answer, then reset the connection (SO_LINGER 0)
)

// tcpServer answers each 8-byte request with the same 8 bytes.
type tcpServer struct {
	t        testing.TB
	ln       net.Listener
	mode     atomic.Int32
	delay    time.Duration
	accepted atomic.Int64
	stopc    chan struct{}
	mu       sync.Mutex
	conns    map[net.Conn]bool
	wg       sync.WaitGroup
}

func startServer(t testing.TB, ns *harness.Namespace, mode serverMode, delay time.Duration) *tcpServer {
	t.Helper()
	ln, err := ns.Listen("tcp", srvAddr)
	if err != nil {
		t.Fatal(err)
	}
	s := &tcpServer{t: t, ln: ln, delay: delay, stopc: make(chan struct{}), conns: map[net.Conn]bool{}}
	s.mode.Store(int32(mode))
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.stop)
	return s
}

func (s *tcpServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.accepted.Add(1)
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(c)
	}
}

func (s *tcpServer) serve(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	buf := make([]byte, 8)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		if serverMode(s.mode.Load()) == modeSlow {
			select {
			case <-time.After(s.delay):
			case <-s.stopc:
				return
			}
		}
		if _, err := c.Write(buf); err != nil {
			return
		}
		if serverMode(s.mode.Load()) == modeReset {
			c.(*net.TCPConn).SetLinger(0)
			return
		}
	}
}

// stop closes the listener and every connection, as a crashing server
// would, and waits for the handlers. Idempotent.
func (s *tcpServer) stop() {
	select {
	case <-s.stopc:
		return
	default:
	}
	close(s.stopc)
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// newNSPool makes a pool dialling inside ns, closed at test end.
func newNSPool(t testing.TB, ns *harness.Namespace, cfg Config) *Pool {
	t.Helper()
	cfg.Dial = nsDial(ns)
	return newPool(t, cfg)
}

// countSockets counts sockets in ns matching an ss state filter and
// expression, with ss as the oracle.
func countSockets(t testing.TB, ns *harness.Namespace, args ...string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := ns.Exec(ctx, "ss", append([]string{"-Htn"}, args...)...)
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	return bytes.Count(out, []byte("\n"))
}

package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcplens/tcplens/internal/netns"
	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/lab/harness"
)

// server is a TCP server inside a namespace, stopped by Close.
type server struct {
	l    net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	held []net.Conn
}

// serverMode says what the server does with a connection.
type serverMode int

const (
	// closeOnEOF reads until the client hangs up, then closes: correct.
	closeOnEOF serverMode = iota
	// leak answers requests but never calls close() after the client hangs
	// up: the CLOSE_WAIT bug.
	leak
	// echo writes back whatever it reads, closing on EOF.
	echo
)

func startServer(ns *harness.Namespace, addr string, mode serverMode) (*server, error) {
	l, err := ns.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return serve(l, mode), nil
}

func serve(l net.Listener, mode serverMode) *server {
	s := &server{l: l}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.held = append(s.held, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				switch mode {
				case closeOnEOF:
					io.Copy(io.Discard, c)
					c.Close()
				case leak:
					io.Copy(io.Discard, c) // sees EOF, and forgets to close
				case echo:
					io.Copy(c, c)
					c.Close()
				}
			}()
		}
	}()
	return s
}

// Close stops accepting and closes every connection the server holds.
func (s *server) Close() {
	s.l.Close()
	s.mu.Lock()
	for _, c := range s.held {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// dialResult counts the outcome of a series of connections.
type dialResult struct {
	OK, AddrNotAvail, Other int
	FirstAddrNotAvail       time.Duration // since the start; 0 if none
	LastErr                 error
}

// dialClose opens n connections to addr from ns, one after another, and
// closes each from the client side first, as a client that does not reuse
// connections does. It stops early when ctx ends.
func dialClose(ctx context.Context, ns *harness.Namespace, addr string, n int) dialResult {
	var res dialResult
	start := time.Now()
	d := &net.Dialer{Timeout: 2 * time.Second}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		c, err := ns.Dial(ctx, d, "tcp", addr)
		if err != nil {
			if errors.Is(err, syscall.EADDRNOTAVAIL) {
				res.AddrNotAvail++
				if res.FirstAddrNotAvail == 0 {
					res.FirstAddrNotAvail = time.Since(start)
				}
			} else {
				res.Other++
			}
			res.LastErr = err
			continue
		}
		res.OK++
		c.Close()
	}
	return res
}

// listenBacklog opens a listener with an explicit backlog, which net.Listen
// does not allow (it always asks for somaxconn).
func listenBacklog(ns *harness.Namespace, port int, backlog int) (net.Listener, error) {
	var l net.Listener
	err := ns.Run(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		f := os.NewFile(uintptr(fd), "listener")
		defer f.Close()
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return fmt.Errorf("SO_REUSEADDR: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return fmt.Errorf("bind 127.0.0.1:%d: %w", port, err)
		}
		if err := unix.Listen(fd, backlog); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		l, err = net.FileListener(f)
		return err
	})
	return l, err
}

// echoRoundTrip writes a request to an echo server and waits up to timeout
// for the whole echo.
func echoRoundTrip(c net.Conn, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	msg := []byte("ping\n")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	_, err := io.ReadFull(c, make([]byte, len(msg)))
	return err
}

// openDumper opens a sock_diag socket inside the named namespace.
func openDumper(ns string) (*sockdiag.Dumper, error) {
	var d *sockdiag.Dumper
	err := netns.Run(ns, func() (err error) {
		d, err = sockdiag.Open()
		return err
	})
	return d, err
}

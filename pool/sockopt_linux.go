//go:build linux

package pool

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// sockOpts are the TCP options set on every pooled connection.
type sockOpts struct {
	userTimeout time.Duration // TCP_USER_TIMEOUT; <= 0 leaves the kernel default
	noDelay     bool
	keepAlive   net.KeepAliveConfig
}

// control is a net.Dialer.Control: it runs before connect, so the options
// also bound the SYN retransmissions.
func (o sockOpts) control(_, _ string, c syscall.RawConn) error {
	if o.userTimeout <= 0 {
		return nil
	}
	var serr error
	if err := c.Control(func(fd uintptr) {
		ms := int(o.userTimeout.Milliseconds())
		if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ms); err != nil {
			serr = fmt.Errorf("set TCP_USER_TIMEOUT %dms: %w", ms, err)
		}
	}); err != nil {
		return fmt.Errorf("set TCP_USER_TIMEOUT: %w", err)
	}
	return serr
}

// apply sets every option on an established connection, for connections
// that did not come from the pool's own dialer.
func (o sockOpts) apply(nc net.Conn) error {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil // not TCP (a test pipe, TLS made by Dial): nothing to set
	}
	if err := tc.SetNoDelay(o.noDelay); err != nil {
		return fmt.Errorf("set TCP_NODELAY: %w", err)
	}
	if o.keepAlive.Enable {
		if err := tc.SetKeepAliveConfig(o.keepAlive); err != nil {
			return fmt.Errorf("set keepalive: %w", err)
		}
	} else if err := tc.SetKeepAlive(false); err != nil {
		return fmt.Errorf("clear keepalive: %w", err)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return fmt.Errorf("raw conn: %w", err)
	}
	return o.control("", "", rc)
}

// errDataPending: an idle connection has unread bytes, so the protocol
// stream is out of step and the connection cannot be reused.
var errDataPending = errors.New("unsolicited data pending on idle connection")

// peek tells whether an idle connection is still usable, without a round
// trip and without consuming anything: a non-blocking MSG_PEEK recv of one
// byte. EAGAIN means nothing arrived, the healthy case; EOF means the peer
// closed; ECONNRESET and the like mean it is gone; data means the stream is
// out of step.
func peek(rc syscall.RawConn) error {
	var (
		buf [1]byte
		n   int
		err error
	)
	cerr := rc.Read(func(fd uintptr) bool {
		for range 3 { // retry EINTR, boundedly
			n, _, err = unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			if err != unix.EINTR {
				break
			}
		}
		return true // never wait for readiness
	})
	switch {
	case cerr != nil:
		return fmt.Errorf("peek: %w", cerr)
	case err == unix.EAGAIN || err == unix.EINTR:
		return nil
	case err != nil:
		return fmt.Errorf("peek: %w", err)
	case n == 0:
		return fmt.Errorf("peek: peer closed: %w", io.EOF)
	default:
		return fmt.Errorf("peek: %w", errDataPending)
	}
}

//go:build !linux

package pool

import (
	"fmt"
	"net"
	"syscall"
	"time"
)

// sockOpts are the TCP options set on every pooled connection. Outside
// Linux only keepalive and TCP_NODELAY are set; TCP_USER_TIMEOUT is
// Linux-only.
type sockOpts struct {
	userTimeout time.Duration
	noDelay     bool
	keepAlive   net.KeepAliveConfig
}

func (o sockOpts) control(_, _ string, _ syscall.RawConn) error { return nil }

func (o sockOpts) apply(nc net.Conn) error {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	if err := tc.SetNoDelay(o.noDelay); err != nil {
		return fmt.Errorf("set TCP_NODELAY: %w", err)
	}
	if o.keepAlive.Enable {
		return tc.SetKeepAliveConfig(o.keepAlive)
	}
	return tc.SetKeepAlive(false)
}

// peek cannot be done portably; idle connections are trusted.
func peek(syscall.RawConn) error { return nil }

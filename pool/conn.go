package pool

import (
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// pconn is a pooled connection; it outlives the Conn handles given out for it.
type pconn struct {
	r         *route
	nc        net.Conn
	raw       syscall.RawConn // for the peek; nil when nc has no fd
	expires   int64           // pool clock, ns; 0: no MaxLifetime
	idleSince int64
	leak      *time.Timer // of the current checkout, if leak detection is on
}

const (
	connInUse uint32 = iota
	connDone
)

// Conn is one checkout of a pooled connection. It implements net.Conn;
// Read and Write apply Config.ReadTimeout and WriteTimeout. Give it back
// with Release when the protocol stream is in a clean state, or Discard when
// it is not. After that the Conn is dead: I/O returns ErrConnReleased, and a
// second Release or Discard does nothing but count in Stats. A new Conn is
// made for every Get, so a stale handle can never touch a connection that
// someone else now holds.
//
// A Conn is allocated per Get (24 bytes): the one allocation of a
// Get+Release, kept small because it is the price of that safety.
type Conn struct {
	pc    *pconn
	taken int64 // pool clock at Get
	state atomic.Uint32
	dirty atomic.Bool // a deadline was set; clear it before reuse
}

func (r *route) newConn(pc *pconn, now int64) *Conn {
	c := &Conn{pc: pc, taken: now}
	if th := r.p.cfg.LeakThreshold; th > 0 {
		pcs := make([]uintptr, 32)
		pcs = pcs[:runtime.Callers(2, pcs)]
		pc.leak = time.AfterFunc(th, func() { c.reportLeak(th, pcs) })
	}
	return c
}

// Read reads from the connection, with ReadTimeout as deadline if set.
func (c *Conn) Read(b []byte) (int, error) {
	if c.state.Load() != connInUse {
		return 0, ErrConnReleased
	}
	if d := c.pc.r.p.cfg.ReadTimeout; d > 0 {
		if err := c.pc.nc.SetReadDeadline(time.Now().Add(d)); err != nil {
			return 0, err
		}
		c.markDirty()
	}
	return c.pc.nc.Read(b)
}

// Write writes to the connection, with WriteTimeout as deadline if set.
func (c *Conn) Write(b []byte) (int, error) {
	if c.state.Load() != connInUse {
		return 0, ErrConnReleased
	}
	if d := c.pc.r.p.cfg.WriteTimeout; d > 0 {
		if err := c.pc.nc.SetWriteDeadline(time.Now().Add(d)); err != nil {
			return 0, err
		}
		c.markDirty()
	}
	return c.pc.nc.Write(b)
}

func (c *Conn) markDirty() {
	if !c.dirty.Load() {
		c.dirty.Store(true)
	}
}

// Release returns a healthy connection to the pool.
func (c *Conn) Release() { c.done(false) }

// Discard closes a broken connection and frees its slot.
func (c *Conn) Discard() { c.done(true) }

// Close discards the connection, so code that only knows net.Conn cannot
// return a connection in an unknown state to the pool. It returns nil.
func (c *Conn) Close() error {
	c.done(true)
	return nil
}

func (c *Conn) done(discard bool) {
	r := c.pc.r
	if !c.state.CompareAndSwap(connInUse, connDone) {
		r.doubleReleases.Add(1)
		return
	}
	if c.pc.leak != nil {
		c.pc.leak.Stop()
		c.pc.leak = nil
	}
	if !discard && c.dirty.Load() {
		if err := c.pc.nc.SetDeadline(time.Time{}); err != nil {
			discard = true
		}
	}
	if discard {
		r.drop(c.pc, reasonDiscard)
		return
	}
	// No clock read: the later of the Get time and the pool's coarse clock
	// is a lower bound of now, close to it under load.
	r.release(c.pc, max(c.taken, r.p.coarse.Load()))
}

// Addr is the route (the address given to Get).
func (c *Conn) Addr() string { return c.pc.r.addr }

// NetConn is the underlying connection, for socket-level access while the
// Conn is held. Do not close it; use Discard.
func (c *Conn) NetConn() net.Conn { return c.pc.nc }

func (c *Conn) LocalAddr() net.Addr  { return c.pc.nc.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr { return c.pc.nc.RemoteAddr() }

// SetDeadline and friends work as on net.Conn; deadlines are cleared when
// the connection is released.
func (c *Conn) SetDeadline(t time.Time) error {
	return c.setDeadline(t, net.Conn.SetDeadline)
}

func (c *Conn) SetReadDeadline(t time.Time) error {
	return c.setDeadline(t, net.Conn.SetReadDeadline)
}

func (c *Conn) SetWriteDeadline(t time.Time) error {
	return c.setDeadline(t, net.Conn.SetWriteDeadline)
}

func (c *Conn) setDeadline(t time.Time, set func(net.Conn, time.Time) error) error {
	if c.state.Load() != connInUse {
		return ErrConnReleased // the connection may be someone else's now
	}
	c.markDirty()
	return set(c.pc.nc, t)
}

// Leak describes a Conn held longer than Config.LeakThreshold.
type Leak struct {
	Addr  string
	Held  time.Duration // at least this long, when reported
	Local net.Addr
	Stack string // where Get was called
}

func (c *Conn) reportLeak(held time.Duration, pcs []uintptr) {
	r := c.pc.r
	if c.state.Load() != connInUse || r.p.closed.Load() {
		return
	}
	r.leaks.Add(1)
	if r.p.cfg.OnLeak != nil {
		r.p.cfg.OnLeak(Leak{Addr: r.addr, Held: held, Local: c.pc.nc.LocalAddr(), Stack: formatStack(pcs)})
	}
}

// formatStack renders the frames above (*Pool).Get, one "func\n\tfile:line"
// pair per frame, like a panic trace. If Get is not found (inlined away?),
// every frame is kept.
func formatStack(pcs []uintptr) string {
	var b strings.Builder
	frames := runtime.CallersFrames(pcs)
	foundGet := false
	for {
		f, more := frames.Next()
		b.WriteString(f.Function)
		b.WriteString("\n\t")
		b.WriteString(f.File)
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(f.Line))
		b.WriteByte('\n')
		if !foundGet && strings.HasSuffix(f.Function, ".(*Pool).Get") {
			foundGet = true
			b.Reset() // drop the pool's own frames, Get included
		}
		if !more {
			break
		}
	}
	return b.String()
}

package pool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Routes idle with no connection this long are forgotten, so a pool that
// talks to many short-lived addresses does not grow without bound.
const routeTTL = time.Minute

// A down route whose prober has seen no Get for this long stops probing
// and lets the next Get dial again, so dead addresses cost nothing for ever.
const probeGiveUp = time.Minute

// route is the state for one address. Everything below mu is guarded by it.
type route struct {
	p    *Pool
	addr string

	mu      sync.Mutex
	idle    connDeque
	waiters waitList
	open    int  // idle + in use
	inUse   int  // handed out, or being checked on Get
	dialing int  // dials in flight (each holds a MaxTotal slot)
	down    bool // fail fast
	probing bool // the one prober of this route is running
	fails   int  // consecutive dial failures
	lastErr error
	lastGet int64
	removed bool
	c       RouteStats // counters only; statsLocked adds the gauges

	starved atomic.Bool // in p.starved; written under p.mu

	waitNanos      atomic.Int64
	leaks          atomic.Int64
	doubleReleases atomic.Int64
}

func newRoute(p *Pool, addr string) *route {
	return &route{p: p, addr: addr, lastGet: p.now()}
}

type closeReason int

const (
	keep closeReason = iota
	reasonLifetime
	reasonIdle
	reasonStale
	reasonSurplus
	reasonDiscard
	reasonClosed
)

func (r *route) countClose(reason closeReason) {
	switch reason {
	case reasonLifetime:
		r.c.LifetimeCloses++
	case reasonIdle:
		r.c.IdleCloses++
	case reasonStale:
		r.c.StaleEvictions++
	case reasonSurplus:
		r.c.SurplusCloses++
	case reasonDiscard:
		r.c.Discards++
	}
}

func (r *route) get(ctx context.Context, start int64) (*Conn, error) {
	p := r.p
	first, swept := true, false
	now := start
	for {
		r.mu.Lock()
		if p.closed.Load() {
			r.mu.Unlock()
			return nil, fmt.Errorf("pool: get %s: %w", r.addr, ErrClosed)
		}
		if r.removed {
			r.mu.Unlock()
			return nil, errRouteRemoved
		}
		if first {
			r.c.Gets++
			r.lastGet = start
			first = false
		}
		pc := r.idle.pop(p.cfg.FIFO)
		if pc == nil {
			break // still locked
		}
		r.inUse++
		r.mu.Unlock()
		reason := p.check(ctx, pc, now)
		if reason == keep {
			return r.newConn(pc, now), nil
		}
		r.drop(pc, reason)
		now = p.now()
		if reason == reasonStale && !swept {
			// One dead connection usually means the peer restarted and
			// all of them are dead: check the rest in one pass.
			swept = true
			r.maintain(now, false)
		}
	}
	if r.down {
		err := r.downErrLocked()
		r.c.FailFast++
		r.mu.Unlock()
		return nil, err
	}
	w := &waiter{ch: make(chan waitResult, 1)}
	r.waiters.pushBack(w)
	r.c.Waits++
	_, room := r.fillLocked()
	r.mu.Unlock()
	if room {
		p.makeRoom(r)
	}
	return r.wait(ctx, w, start)
}

// wait blocks until the waiter is served, the caller's context ends or
// WaitTimeout passes.
func (r *route) wait(ctx context.Context, w *waiter, start int64) (*Conn, error) {
	p := r.p
	timer := time.NewTimer(p.cfg.WaitTimeout)
	defer timer.Stop()
	var cause error
	select {
	case res := <-w.ch:
		return r.received(ctx, res, start)
	case <-ctx.Done():
		cause = ctx.Err()
	case <-timer.C:
	}
	now := p.now()
	r.mu.Lock()
	if !w.queued { // served while giving up: take what was handed over
		r.mu.Unlock()
		return r.received(ctx, <-w.ch, start)
	}
	r.waiters.remove(w)
	r.unstarveLocked()
	e := &TimeoutError{
		Addr: r.addr, Waited: time.Duration(now - start), Waiting: r.waiters.len() + 1,
		InUse: r.inUse, Open: r.open, Dialing: r.dialing, Max: p.limits.Load().MaxPerRoute,
		LastDialErr: r.lastErr, Cause: cause,
	}
	cancelled := cause != nil && !errors.Is(cause, context.DeadlineExceeded)
	if !cancelled {
		r.c.Timeouts++
	}
	r.mu.Unlock()
	r.waitNanos.Add(now - start)
	if cancelled {
		return nil, fmt.Errorf("pool: get %s: gave up after %v with %d callers waiting and %d/%d connections in use: %w",
			r.addr, e.Waited.Round(time.Millisecond), e.Waiting, e.InUse, e.Max, cause)
	}
	return nil, e
}

func (r *route) received(ctx context.Context, res waitResult, start int64) (*Conn, error) {
	now := r.p.now()
	r.waitNanos.Add(now - start)
	if res.err != nil {
		return nil, res.err
	}
	if err := ctx.Err(); err != nil {
		r.release(res.pc, now) // to the next waiter or idle
		return nil, fmt.Errorf("pool: get %s: %w", r.addr, err)
	}
	return r.newConn(res.pc, now), nil
}

// fillLocked starts the dials the route needs: one per waiter not already
// covered by a dial in flight, plus the MinIdlePerRoute deficit, within
// MaxPerRoute, MaxConcurrentDials and MaxTotal. Dials run in their own
// goroutines; their result goes to the head waiter, not to the Get that
// caused them, so a Get that gives up never wastes a connection. needRoom
// reports that waiters are blocked on MaxTotal alone.
func (r *route) fillLocked() (started int, needRoom bool) {
	p := r.p
	if r.down || r.removed || p.closed.Load() {
		return 0, false
	}
	lim := p.limits.Load()
	need := r.waiters.len() + max(0, lim.MinIdlePerRoute-r.idle.len()) - r.dialing
	for ; need > 0; need-- {
		if r.open+r.dialing >= lim.MaxPerRoute || r.dialing >= lim.MaxConcurrentDials {
			break
		}
		forWaiter := r.waiters.len() > r.dialing
		if !p.reserve(r, forWaiter) {
			needRoom = forWaiter
			break
		}
		r.dialing++
		started++
		p.wg.Add(1)
		go r.dial()
	}
	r.unstarveLocked()
	return started, needRoom
}

// unstarveLocked takes r off the pool's starved queue once its dials in
// flight cover its waiters, so that a stale entry does not make other
// routes close connections for it.
func (r *route) unstarveLocked() {
	if !r.starved.Load() || r.waiters.len() > r.dialing {
		return
	}
	p := r.p
	p.mu.Lock()
	if r.starved.Load() {
		for i, s := range p.starved {
			if s == r {
				p.starved = append(p.starved[:i], p.starved[i+1:]...)
				break
			}
		}
		r.starved.Store(false)
		p.nStarved.Add(-1)
	}
	p.mu.Unlock()
}

// kick runs fillLocked; for callers that hold no lock.
func (r *route) kick() int {
	r.mu.Lock()
	n, _ := r.fillLocked()
	r.mu.Unlock()
	return n
}

func (r *route) dial() {
	defer r.p.wg.Done()
	nc, err := r.p.dialConn(r.addr)
	r.dialDone(nc, err)
}

func (r *route) dialDone(nc net.Conn, err error) {
	p := r.p
	now := p.now()
	r.mu.Lock()
	r.dialing--
	r.countDialLocked(err)
	if err != nil {
		ff := p.cfg.FailFastAfter
		if ff > 0 && r.fails >= ff && !r.down && !p.closed.Load() {
			r.markDownLocked()
		}
		// Below the threshold, retry at once for the waiters; with fail-fast
		// off, leave retries to the next Get or maintenance tick so a refused
		// dial cannot spin.
		retry := ff > 0 && !r.down
		r.mu.Unlock()
		p.freeSlot()
		if retry {
			r.kick()
		}
		return
	}
	r.adoptLocked(nc, now)
}

// countDialLocked records a dial's outcome. A success resets the failure
// count and reopens the route, even one that went down while it was in
// flight.
func (r *route) countDialLocked(err error) {
	r.c.Dials++
	if err != nil {
		r.c.DialErrors++
		r.fails++
		r.lastErr = err
		return
	}
	r.fails = 0
	r.down = false
}

// adoptLocked takes a freshly dialled connection into the route (or closes
// it if the pool closed meanwhile) and unlocks r.mu.
func (r *route) adoptLocked(nc net.Conn, now int64) {
	p := r.p
	if p.closed.Load() {
		r.mu.Unlock()
		nc.Close()
		p.freeSlot()
		return
	}
	r.open++
	r.placeLocked(p.newPconn(r, nc, now), now)
	r.fillLocked() // waiters beyond MaxConcurrentDials need the next dial
	r.mu.Unlock()
}

// placeLocked gives a connection to the head waiter or parks it idle.
func (r *route) placeLocked(pc *pconn, now int64) {
	if w := r.waiters.popFront(); w != nil {
		r.inUse++
		w.deliver(pc, nil)
		r.unstarveLocked()
		return
	}
	pc.idleSince = now
	r.idle.push(pc)
}

func (r *route) downErrLocked() error {
	return &RouteDownError{Addr: r.addr, Failures: r.fails, Err: r.lastErr}
}

// markDownLocked fails every waiter at once and starts the one prober.
func (r *route) markDownLocked() {
	r.down = true
	err := r.downErrLocked()
	for w := r.waiters.popFront(); w != nil; w = r.waiters.popFront() {
		r.c.FailFast++
		w.deliver(nil, err)
	}
	r.unstarveLocked()
	if !r.probing {
		r.probing = true
		r.p.wg.Add(1)
		go r.probe()
	}
}

// probe re-dials a down route with doubling backoff. The first success
// reopens the route; the connection serves a waiter or goes idle, and
// MinIdlePerRoute is refilled. It stops when the route is up again (a dial
// that was in flight may reopen it first), when the pool closes, or when no
// Get has wanted the route for probeGiveUp.
func (r *route) probe() {
	p := r.p
	defer p.wg.Done()
	backoff := p.cfg.ProbeInterval
	t := time.NewTimer(jitter(backoff, backoff/10))
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
		case <-t.C:
		}
		r.mu.Lock()
		if !r.down || p.closed.Load() {
			r.probing = false
			r.mu.Unlock()
			return
		}
		if p.now()-r.lastGet > int64(probeGiveUp) {
			// Nobody asks any more: stop probing; the next Get dials.
			r.down, r.fails, r.probing = false, 0, false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		if p.tryReserve() {
			nc, err := p.dialConn(r.addr)
			if err == nil {
				r.reopen(nc)
				return
			}
			p.freeSlot()
			r.mu.Lock()
			r.countDialLocked(err)
			r.mu.Unlock()
		}
		backoff = min(2*backoff, p.cfg.ProbeMaxInterval)
		t.Reset(jitter(backoff, backoff/10))
	}
}

func (r *route) reopen(nc net.Conn) {
	p := r.p
	now := p.now()
	r.mu.Lock()
	r.countDialLocked(nil)
	r.probing = false
	r.adoptLocked(nc, now)
}

// release takes back a healthy connection: to the head waiter, else idle.
// now may lag the real time (see Conn.done); it is only compared with
// lifetimes and recorded as the start of the idle period, so a lag makes
// idle periods look longer (an earlier peek, an idle close up to the lag
// early), never shorter.
func (r *route) release(pc *pconn, now int64) {
	p := r.p
	r.mu.Lock()
	lim := p.limits.Load()
	reason := keep
	switch {
	case p.closed.Load():
		reason = reasonClosed
	case pc.expires > 0 && now >= pc.expires:
		reason = reasonLifetime
	case r.open > lim.MaxPerRoute || p.total.Load() > int64(lim.MaxTotal):
		reason = reasonSurplus
	case r.waiters.len() == 0 && p.nStarved.Load() > 0:
		// Another route waits for a slot under MaxTotal: closing this
		// connection serves it now, parking it would make it wait.
		reason = reasonSurplus
	}
	if reason == keep {
		r.inUse-- // placeLocked counts it again if a waiter takes it
		r.placeLocked(pc, now)
		r.mu.Unlock()
		return
	}
	r.closeLocked(pc, reason)
}

// drop closes a connection that was popped or handed out and frees its slot.
func (r *route) drop(pc *pconn, reason closeReason) {
	r.mu.Lock()
	r.closeLocked(pc, reason)
}

// closeLocked closes a connection that was popped or handed out, frees its
// slot and lets the route dial for its waiters. It unlocks r.mu.
func (r *route) closeLocked(pc *pconn, reason closeReason) {
	r.inUse--
	r.open--
	r.countClose(reason)
	r.mu.Unlock()
	pc.nc.Close()
	r.p.freeSlot()
	r.kick()
}

// closeAll fails the waiters and hands back the idle connections to close.
func (r *route) closeAll(doomed []*pconn) []*pconn {
	r.mu.Lock()
	defer r.mu.Unlock()
	err := fmt.Errorf("pool: get %s: %w", r.addr, ErrClosed)
	for w := r.waiters.popFront(); w != nil; w = r.waiters.popFront() {
		w.deliver(nil, err)
	}
	for pc := r.idle.popFront(); pc != nil; pc = r.idle.popFront() {
		r.open--
		doomed = append(doomed, pc)
	}
	return doomed
}

// dialConn makes one connection with the socket options set, bounded by
// DialTimeout and by Close.
func (p *Pool) dialConn(addr string) (net.Conn, error) {
	nc, err := p.cfg.dialContext(p.ctx, p.cfg.Network, addr)
	if err != nil {
		return nil, fmt.Errorf("pool: dial %s: %w", addr, err)
	}
	return nc, nil
}

func (p *Pool) newPconn(r *route, nc net.Conn, now int64) *pconn {
	pc := &pconn{r: r, nc: nc, idleSince: now}
	if p.cfg.MaxLifetime > 0 {
		pc.expires = now + int64(jitter(p.cfg.MaxLifetime, p.cfg.LifetimeJitter))
	}
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			pc.raw = rc
		}
	}
	return pc
}

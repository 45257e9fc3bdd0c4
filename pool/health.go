package pool

import (
	"context"
	"fmt"
	"time"
)

// quickCheck is the part of the staleness check that needs no round
// trip: lifetime and idle timeout, then, for a connection idle at least
// IdleCheckAfter, the peek (one non-blocking syscall). due reports that the
// connection was idle long enough to be checked and is not yet condemned.
func (p *Pool) quickCheck(pc *pconn, now int64) (reason closeReason, due bool) {
	if pc.expires > 0 && now >= pc.expires {
		return reasonLifetime, false
	}
	idle := now - pc.idleSince
	if p.cfg.IdleTimeout > 0 && idle >= int64(p.cfg.IdleTimeout) {
		return reasonIdle, false
	}
	if p.cfg.IdleCheckAfter < 0 || idle < int64(p.cfg.IdleCheckAfter) {
		return keep, false
	}
	if pc.raw != nil && peek(pc.raw) != nil {
		return reasonStale, false
	}
	return keep, true
}

// check decides whether an idle connection taken by Get can be handed out.
// A connection idle for less than IdleCheckAfter is trusted: it was just in
// use, and a syscall per Get would double the pool's cost. Older ones get
// the peek and then Ping.
func (p *Pool) check(ctx context.Context, pc *pconn, now int64) closeReason {
	reason, due := p.quickCheck(pc, now)
	if due && p.cfg.Ping != nil && p.ping(ctx, pc) != nil {
		return reasonStale
	}
	return reason
}

// ping runs the user's Ping with PingTimeout as context deadline and as
// connection deadline, so a Ping that ignores its context is still bounded.
func (p *Pool) ping(ctx context.Context, pc *pconn) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.PingTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	if err := pc.nc.SetDeadline(deadline); err != nil {
		return fmt.Errorf("ping: set deadline: %w", err)
	}
	err := p.cfg.Ping(ctx, pc.nc)
	if derr := pc.nc.SetDeadline(time.Time{}); err == nil && derr != nil {
		err = fmt.Errorf("ping: clear deadline: %w", derr)
	}
	return err
}

// maintainLoop is the pool's one background goroutine (besides dials and
// probers): evict expired and dead idle connections, trim surplus after
// SetLimits, refill MinIdlePerRoute, retry dials for waiters, forget unused
// routes.
func (p *Pool) maintainLoop() {
	defer p.wg.Done()
	t := time.NewTicker(p.cfg.MaintenanceInterval)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
			now := p.tick()
			for _, r := range *p.routes.Load() {
				r.maintain(now, true)
			}
		}
	}
}

// maintain closes the route's idle connections that fail quickCheck
// (expired or, idle for IdleCheckAfter, failing the peek: non-blocking, so
// done under the lock). With tick it also trims connections above the
// limits, forgets the route when it has been unused for routeTTL, and
// refills.
func (r *route) maintain(now int64, tick bool) {
	p := r.p
	lim := p.limits.Load()
	r.mu.Lock()
	if r.removed || p.closed.Load() {
		r.mu.Unlock()
		return
	}
	doomed := r.idle.removeIf(nil, func(pc *pconn) bool {
		reason, _ := p.quickCheck(pc, now)
		r.countClose(reason)
		return reason != keep
	})
	if tick {
		// Oldest idle first, while the route or the pool is over its cap.
		for r.idle.len() > 0 && (r.open-len(doomed) > lim.MaxPerRoute || p.total.Load()-int64(len(doomed)) > int64(lim.MaxTotal)) {
			doomed = append(doomed, r.idle.popFront())
			r.c.SurplusCloses++
		}
	}
	r.open -= len(doomed)
	if tick && r.open == 0 && r.dialing == 0 && r.waiters.len() == 0 && !r.down && !r.probing &&
		lim.MinIdlePerRoute == 0 && now-r.lastGet > int64(routeTTL) {
		r.removed = true
		p.forget(r)
		p.retire(r.statsLocked())
	}
	r.mu.Unlock()
	for _, pc := range doomed {
		pc.nc.Close()
		p.freeSlot()
	}
	if tick || len(doomed) > 0 {
		r.kick()
	}
}

package pool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Pool keeps TCP connections to any number of addresses (routes). It is safe
// for concurrent use. Each route has its own lock; no lock is held while
// dialling, closing or health-checking over the network.
type Pool struct {
	cfg   Config    // resolved, never changed after New
	epoch time.Time // monotonic base for now()

	// coarse is a recent clock reading (see tick). Release uses it instead
	// of reading the clock: a clock read is ~30ns on a VM, a quarter of a
	// whole Get+Release.
	coarse atomic.Int64

	limits atomic.Pointer[Limits]
	// routes is copied on write: Get reads it with one atomic load and a
	// plain map lookup; routes are added rarely (first Get to an address)
	// and removed after routeTTL unused. routesMu serializes writers and
	// may be taken under a route lock, never the other way round.
	routes   atomic.Pointer[map[string]*route]
	routesMu sync.Mutex
	total    atomic.Int64 // connections open or being dialled, all routes

	// mu guards starved: routes whose waiters need a dial but MaxTotal is
	// reached. It is never held while taking a route lock.
	mu       sync.Mutex
	starved  []*route
	nStarved atomic.Int64
	retired  RouteStats // counters of routes removed for inactivity

	closed atomic.Bool
	ctx    context.Context // cancelled by Close; stops dials and loops
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New validates cfg, fills in defaults and starts the background loop.
func New(cfg Config) (*Pool, error) {
	c, err := cfg.WithDefaults()
	if err != nil {
		return nil, err
	}
	p := &Pool{cfg: c, epoch: time.Now()}
	l := c.limits()
	p.limits.Store(&l)
	p.routes.Store(&map[string]*route{})
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.wg.Add(1)
	go p.maintainLoop()
	return p, nil
}

// Config returns the configuration in force, defaults filled in.
func (p *Pool) Config() Config {
	c := p.cfg
	c.setLimits(*p.limits.Load())
	return c
}

// SetLimits changes the caps at run time. Raising them serves waiters at
// once; lowering them closes surplus connections as they are released or
// go idle, never one in use.
func (p *Pool) SetLimits(l Limits) error {
	l, err := l.withDefaults()
	if err != nil {
		return fmt.Errorf("pool: set limits: %w", err)
	}
	p.limits.Store(&l)
	for _, r := range *p.routes.Load() {
		r.kick()
	}
	p.wakeStarved()
	return nil
}

// now is monotonic nanoseconds since New; time.Since reads only the
// monotonic clock, half the cost of time.Now.
func (p *Pool) now() int64 { return int64(time.Since(p.epoch)) }

// tick reads the clock and refreshes coarse once it lags by 1ms, so that
// parallel Gets rarely write the shared word. Gets and the maintenance loop
// tick, so coarse lags real time by at most MaintenanceInterval when idle
// and by ~1ms under load.
func (p *Pool) tick() int64 {
	now := p.now()
	if old := p.coarse.Load(); now-old > int64(time.Millisecond) {
		p.coarse.CompareAndSwap(old, now)
	}
	return now
}

// Get returns a connection to addr ("host:port"), reusing an idle one when
// it passes the staleness checks, dialling one when the route has room, and
// otherwise waiting in FIFO order for one to be released, bounded by ctx and
// WaitTimeout. The caller must Release or Discard it.
func (p *Pool) Get(ctx context.Context, addr string) (*Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pool: get %s: %w", addr, err)
	}
	start := p.tick()
	for range 3 { // a route removed under us is recreated once; 3 is ample
		r := p.route(addr)
		c, err := r.get(ctx, start)
		if err != errRouteRemoved {
			return c, err
		}
	}
	return nil, fmt.Errorf("pool: get %s: route kept being removed", addr)
}

var errRouteRemoved = errors.New("route removed")

// Prewarm registers addr so that MinIdlePerRoute connections are dialled in
// the background before the first Get. It does not wait for them.
func (p *Pool) Prewarm(addr string) {
	if !p.closed.Load() {
		p.route(addr).kick()
	}
}

func (p *Pool) route(addr string) *route {
	if r := (*p.routes.Load())[addr]; r != nil {
		return r
	}
	p.routesMu.Lock()
	defer p.routesMu.Unlock()
	old := *p.routes.Load()
	if r := old[addr]; r != nil {
		return r
	}
	m := make(map[string]*route, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	r := newRoute(p, addr)
	m[addr] = r
	p.routes.Store(&m)
	return r
}

// forget removes r from the route map (called with r.mu held).
func (p *Pool) forget(r *route) {
	p.routesMu.Lock()
	defer p.routesMu.Unlock()
	old := *p.routes.Load()
	if old[r.addr] != r {
		return
	}
	m := make(map[string]*route, len(old))
	for k, v := range old {
		if v != r {
			m[k] = v
		}
	}
	p.routes.Store(&m)
}

// Close fails pending Gets with ErrClosed, closes idle connections now and
// in-use ones when they are released, stops background work and waits for
// it. Close is idempotent.
func (p *Pool) Close() error {
	if !p.closed.CompareAndSwap(false, true) {
		return nil
	}
	p.cancel()
	var doomed []*pconn
	for _, r := range *p.routes.Load() {
		doomed = r.closeAll(doomed)
	}
	for _, pc := range doomed {
		pc.nc.Close()
		p.total.Add(-1)
	}
	p.wg.Wait()
	return nil
}

// tryReserve takes one slot under MaxTotal.
func (p *Pool) tryReserve() bool {
	limit := int64(p.limits.Load().MaxTotal)
	for range 64 { // CAS retries only under contention; bounded anyway
		n := p.total.Load()
		if n >= limit {
			return false
		}
		if p.total.CompareAndSwap(n, n+1) {
			return true
		}
	}
	return false
}

// reserve takes a slot, or queues r to be kicked when one is freed. The
// queueing comes before the retry, mirroring freeSlot's decrement-then-look,
// so a slot freed in between is never missed. Called with r.mu held; p.mu is
// taken after a route lock, never before one.
func (p *Pool) reserve(r *route, queue bool) bool {
	if p.tryReserve() {
		return true
	}
	if !queue {
		return false
	}
	p.mu.Lock()
	if !r.starved.Load() {
		r.starved.Store(true)
		p.starved = append(p.starved, r)
		p.nStarved.Add(1)
	}
	ok := p.tryReserve()
	p.mu.Unlock()
	return ok
}

// freeSlot returns a slot under MaxTotal and offers it to starved routes.
func (p *Pool) freeSlot() {
	p.total.Add(-1)
	p.wakeStarved()
}

// wakeStarved kicks starved routes in order until one starts a dial. A
// route that still finds no slot queues itself again at the back.
func (p *Pool) wakeStarved() {
	if p.nStarved.Load() == 0 {
		return
	}
	p.mu.Lock()
	n := len(p.starved)
	p.mu.Unlock()
	for range n {
		p.mu.Lock()
		if len(p.starved) == 0 {
			p.mu.Unlock()
			return
		}
		r := p.starved[0]
		p.starved[0] = nil
		p.starved = p.starved[1:]
		r.starved.Store(false)
		p.nStarved.Add(-1)
		p.mu.Unlock()
		if r.kick() > 0 {
			return
		}
	}
}

// makeRoom closes one idle connection of another route so that r, whose
// waiters hit MaxTotal, can dial. Without it a route could starve behind
// another route's idle connections until they time out.
func (p *Pool) makeRoom(r *route) {
	var pc *pconn
	for _, o := range *p.routes.Load() {
		if o == r {
			continue
		}
		o.mu.Lock()
		if pc = o.idle.popFront(); pc != nil {
			o.open--
			o.countClose(reasonSurplus)
		}
		o.mu.Unlock()
		if pc != nil {
			break
		}
	}
	if pc != nil {
		pc.nc.Close()
		p.freeSlot()
	}
}

// jitter returns d shortened by a random amount below j.
func jitter(d, j time.Duration) time.Duration {
	if j <= 0 {
		return d
	}
	return d - rand.N(j)
}

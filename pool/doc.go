// Package pool keeps TCP connections for programs that speak a protocol of
// their own over TCP. It depends only on the standard library and
// golang.org/x/sys/unix; package poolprom exports its Stats to Prometheus.
//
//	p, err := pool.New(pool.Config{MaxPerRoute: 16})
//	c, err := p.Get(ctx, "10.0.0.7:6379") // bounded by ctx and WaitTimeout
//	... c.Write / c.Read ...
//	c.Release() // or c.Discard() if the stream is in an unknown state
//
// Connections are keyed by address (a route). Get reuses an idle connection
// (LIFO by default), dials one if the route and the pool have room, or waits
// in a FIFO queue. Waiting is always bounded: by the caller's context and by
// WaitTimeout; the error, a *TimeoutError matching ErrPoolTimeout, says how
// many callers were waiting and how many connections were in use.
//
// The defaults, and why:
//
//   - MaxTotal 64, MaxPerRoute = MaxTotal. Idle connections are kept up to
//     the active cap; there is no smaller idle cap, because closing a
//     connection that the next burst would reuse only moves it to TIME_WAIT
//     (60s) and dials another. Surplus connections are shed by IdleTimeout
//     instead; LIFO reuse lets exactly the surplus go idle.
//   - MinIdlePerRoute 0: lazy, nothing is dialled before it is needed.
//   - WaitTimeout 5s: a Get never waits for ever, even with a
//     context.Background().
//   - DialTimeout 3s, MaxConcurrentDials 4 per route: enough to fill a route
//     quickly, few enough not to hit a recovering backend with a SYN storm.
//     Dials run in their own goroutine, never under a lock, and a finished
//     dial serves the head of the queue, so a Get that gave up wastes
//     nothing.
//   - Keepalive 15s idle, 5s interval, 3 probes: a dead peer behind an idle
//     connection is found in 30s, before the 60s idle timeout of the
//     strictest common load balancers (AWS ALB/ELB).
//   - TCP_USER_TIMEOUT = 15s + 3×5s = 30s: unacknowledged writes fail after
//     30s instead of after ~15 minutes of retransmissions, and the
//     keepalive probes are never cut short. TCP_NODELAY is on.
//   - IdleTimeout 45s: below the 60s LB idle timeout, so the pool closes an
//     idle connection before a middlebox silently drops it.
//   - MaxLifetime 30m, shortened by up to 10% at random per connection, so
//     connections dialled together (a deploy, a failover) do not all expire
//     together, and load spreads to new backends behind a DNS name or LB.
//   - IdleCheckAfter 500ms: a connection idle that long is checked on Get
//     with a non-blocking MSG_PEEK recv (no round trip, nothing consumed):
//     EOF, a reset or unsolicited bytes mean it is discarded and Get moves
//     on. Connections used more recently are trusted, so the hot path pays
//     no syscall. The background loop (every second) peeks the idle
//     connections too, so a peer that restarts is noticed without a Get,
//     and no socket lingers in CLOSE_WAIT.
//   - FailFastAfter 3: after 3 consecutive failed dials a route is down and
//     Get fails at once (*RouteDownError, wrapping the last dial error)
//     instead of every caller waiting out a dial timeout. One prober per
//     route re-dials after 200ms, doubling to 2s; its first success reopens
//     the route.
//   - ReadTimeout, WriteTimeout 0: per-operation deadlines are off unless
//     the protocol sets them; LeakThreshold 0: leak detection is off (it
//     costs a stack capture per Get).
//
// A zero Config field means its default; negative values switch a feature
// off where the field's comment says so. Config.WithDefaults shows the
// values in force, and New rejects contradictions such as MaxPerRoute above
// MaxTotal.
//
// NewHTTPTransport applies the same ideas to net/http, whose default of 2
// idle connections per host turns any concurrency above 2 into TIME_WAIT
// churn.
package pool

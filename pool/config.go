package pool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// Defaults used for zero Config fields. See the package documentation for
// why each value was chosen.
const (
	DefaultMaxTotal           = 64
	DefaultMaxConcurrentDials = 4
	DefaultWaitTimeout        = 5 * time.Second
	DefaultDialTimeout        = 3 * time.Second
	DefaultKeepAliveIdle      = 15 * time.Second
	DefaultKeepAliveInterval  = 5 * time.Second
	DefaultKeepAliveCount     = 3
	DefaultIdleTimeout        = 45 * time.Second
	DefaultMaxLifetime        = 30 * time.Minute
	DefaultIdleCheckAfter     = 500 * time.Millisecond
	DefaultPingTimeout        = time.Second
	DefaultFailFastAfter      = 3
	DefaultProbeInterval      = 200 * time.Millisecond
	DefaultProbeMaxInterval   = 2 * time.Second
	DefaultMaintenance        = time.Second
)

// Config configures a Pool. A zero field means the documented default; where
// noted, a negative value switches the feature off. Durations that bound a
// wait can never be switched off.
type Config struct {
	// Network is "tcp" (default), "tcp4" or "tcp6".
	Network string
	// Dial, if set, makes every connection. d carries the pool's dial
	// timeout, keepalive and TCP_USER_TIMEOUT (in d.Control); dial through
	// it (for example to dial inside a network namespace). The pool applies
	// the socket options again to what Dial returns, so a Dial that ignores
	// d still gets them on any *net.TCPConn.
	Dial func(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error)

	// MaxTotal caps connections (idle, in use and being dialled) over all
	// routes. Default 64.
	MaxTotal int
	// MaxPerRoute caps connections to one address. Default MaxTotal. Idle
	// connections are kept up to this cap too: there is no smaller idle cap,
	// so a burst never churns connections into TIME_WAIT.
	MaxPerRoute int
	// MinIdlePerRoute idle connections are kept ready on every route that
	// has been used, filled in the background. Default 0: lazy.
	MinIdlePerRoute int
	// MaxConcurrentDials bounds dials in flight per route. Default 4.
	MaxConcurrentDials int
	// FIFO reuses the connection idle longest. The default, LIFO, reuses the
	// most recent one, so surplus connections stay idle and expire.
	FIFO bool

	// WaitTimeout bounds how long Get waits for a connection, on top of the
	// caller's context. Default 5s; it cannot be switched off.
	WaitTimeout time.Duration
	// DialTimeout bounds one dial. Default 3s.
	DialTimeout time.Duration

	// KeepAliveIdle, KeepAliveInterval and KeepAliveCount set TCP keepalive.
	// Defaults 15s, 5s, 3: a dead idle peer is found after 30s, inside the
	// 60s idle timeout of the strictest load balancers. KeepAliveIdle < 0
	// switches keepalive off.
	KeepAliveIdle     time.Duration
	KeepAliveInterval time.Duration
	KeepAliveCount    int
	// UserTimeout sets TCP_USER_TIMEOUT: unacknowledged data fails the
	// connection after this long instead of after about 15 minutes of
	// retransmissions. Default KeepAliveIdle + KeepAliveInterval ×
	// KeepAliveCount (30s), so it never cuts the keepalive probes short;
	// 10s when keepalive is off. Negative: not set.
	UserTimeout time.Duration
	// DisableNoDelay turns Nagle's algorithm back on. By default
	// TCP_NODELAY is set, as request/response protocols need.
	DisableNoDelay bool
	// ReadTimeout and WriteTimeout, if positive, set a deadline before every
	// Read or Write on a Conn. Default 0: none.
	ReadTimeout  time.Duration
	WriteTimeout time.Duration

	// IdleTimeout closes connections idle this long. Default 45s, below the
	// 60s idle timeout of AWS ALB and ELB. Negative: never.
	IdleTimeout time.Duration
	// MaxLifetime closes a connection this long after it was dialled, once
	// it is idle (on release, on Get or in the background); one in use is
	// never closed. Default 30m. Negative: unlimited.
	MaxLifetime time.Duration
	// LifetimeJitter shortens each connection's lifetime by a random amount
	// up to this, so connections dialled together do not expire together.
	// Default MaxLifetime/10. Negative: none.
	LifetimeJitter time.Duration
	// IdleCheckAfter: a connection idle at least this long is checked on Get
	// with a non-blocking MSG_PEEK (no round trip) and with Ping if set.
	// Default 500ms. Negative: never checked.
	IdleCheckAfter time.Duration
	// Ping, if set, runs after the peek check, with PingTimeout as both the
	// context deadline and the connection deadline.
	Ping func(ctx context.Context, c net.Conn) error
	// PingTimeout bounds Ping. Default 1s.
	PingTimeout time.Duration

	// FailFastAfter consecutive dial failures mark a route down: Get then
	// fails at once with the last dial error until a background probe
	// reconnects. Default 3. Negative: never.
	FailFastAfter int
	// ProbeInterval is the first delay of the down-route prober; it doubles
	// up to ProbeMaxInterval. Defaults 200ms and 2s.
	ProbeInterval    time.Duration
	ProbeMaxInterval time.Duration

	// MaintenanceInterval is the period of the background loop that evicts
	// expired and dead idle connections and refills MinIdlePerRoute.
	// Default 1s.
	MaintenanceInterval time.Duration

	// LeakThreshold, if positive, reports a Conn held longer than this to
	// OnLeak (and counts it in Stats), with the stack of the Get that took
	// it. Capturing the stack costs about a microsecond per Get.
	LeakThreshold time.Duration
	OnLeak        func(Leak)
}

// Limits are the connection caps that SetLimits can change at run time.
// Zero fields take the same defaults as in Config.
type Limits struct {
	MaxTotal           int
	MaxPerRoute        int
	MinIdlePerRoute    int
	MaxConcurrentDials int
}

func (l Limits) withDefaults() (Limits, error) {
	if l.MaxTotal < 0 || l.MaxPerRoute < 0 || l.MinIdlePerRoute < 0 || l.MaxConcurrentDials < 0 {
		return l, errors.New("limits must not be negative")
	}
	if l.MaxTotal == 0 {
		l.MaxTotal = max(DefaultMaxTotal, l.MaxPerRoute)
	}
	if l.MaxPerRoute == 0 {
		l.MaxPerRoute = l.MaxTotal
	}
	if l.MaxConcurrentDials == 0 {
		l.MaxConcurrentDials = DefaultMaxConcurrentDials
	}
	if l.MaxPerRoute > l.MaxTotal {
		return l, fmt.Errorf("MaxPerRoute (%d) is larger than MaxTotal (%d)", l.MaxPerRoute, l.MaxTotal)
	}
	if l.MinIdlePerRoute > l.MaxPerRoute {
		return l, fmt.Errorf("MinIdlePerRoute (%d) is larger than MaxPerRoute (%d)", l.MinIdlePerRoute, l.MaxPerRoute)
	}
	return l, nil
}

// WithDefaults returns c with every zero field set to its default, or an
// error naming the first setting that makes no sense.
func (c Config) WithDefaults() (Config, error) {
	wrap := func(err error) (Config, error) { return c, fmt.Errorf("pool: invalid config: %w", err) }
	switch c.Network {
	case "":
		c.Network = "tcp"
	case "tcp", "tcp4", "tcp6":
	default:
		return wrap(fmt.Errorf("network %q is not tcp, tcp4 or tcp6", c.Network))
	}
	l, err := c.limits().withDefaults()
	if err != nil {
		return wrap(err)
	}
	c.setLimits(l)

	if c.WaitTimeout < 0 {
		return wrap(errors.New("WaitTimeout is negative; waits are always bounded, use a long timeout instead"))
	}
	c.WaitTimeout = orDefault(c.WaitTimeout, DefaultWaitTimeout)
	if c.DialTimeout < 0 {
		return wrap(errors.New("DialTimeout is negative; dials are always bounded"))
	}
	c.DialTimeout = orDefault(c.DialTimeout, DefaultDialTimeout)

	if c.KeepAliveInterval < 0 || c.KeepAliveCount < 0 {
		return wrap(errors.New("KeepAliveInterval and KeepAliveCount must not be negative; set KeepAliveIdle < 0 to switch keepalive off"))
	}
	c.KeepAliveIdle = orDefault(c.KeepAliveIdle, DefaultKeepAliveIdle)
	c.KeepAliveInterval = orDefault(c.KeepAliveInterval, DefaultKeepAliveInterval)
	if c.KeepAliveCount == 0 {
		c.KeepAliveCount = DefaultKeepAliveCount
	}
	if c.UserTimeout == 0 {
		c.UserTimeout = 10 * time.Second
		if c.KeepAliveIdle > 0 {
			c.UserTimeout = c.KeepAliveIdle + c.KeepAliveInterval*time.Duration(c.KeepAliveCount)
		}
	}
	if c.UserTimeout > 0 && c.UserTimeout < time.Millisecond {
		return wrap(fmt.Errorf("UserTimeout %v is below the 1ms resolution of TCP_USER_TIMEOUT", c.UserTimeout))
	}
	if c.ReadTimeout < 0 || c.WriteTimeout < 0 {
		return wrap(errors.New("ReadTimeout and WriteTimeout must not be negative; 0 means none"))
	}

	c.IdleTimeout = orDefault(c.IdleTimeout, DefaultIdleTimeout)
	c.MaxLifetime = orDefault(c.MaxLifetime, DefaultMaxLifetime)
	if c.LifetimeJitter == 0 && c.MaxLifetime > 0 {
		c.LifetimeJitter = c.MaxLifetime / 10
	}
	if c.MaxLifetime > 0 && c.LifetimeJitter >= c.MaxLifetime {
		return wrap(fmt.Errorf("LifetimeJitter (%v) must be below MaxLifetime (%v)", c.LifetimeJitter, c.MaxLifetime))
	}
	c.IdleCheckAfter = orDefault(c.IdleCheckAfter, DefaultIdleCheckAfter)
	if c.PingTimeout < 0 {
		return wrap(errors.New("PingTimeout is negative; pings are always bounded"))
	}
	c.PingTimeout = orDefault(c.PingTimeout, DefaultPingTimeout)

	if c.FailFastAfter == 0 {
		c.FailFastAfter = DefaultFailFastAfter
	}
	if c.ProbeInterval < 0 || c.ProbeMaxInterval < 0 {
		return wrap(errors.New("ProbeInterval and ProbeMaxInterval must not be negative"))
	}
	c.ProbeInterval = orDefault(c.ProbeInterval, DefaultProbeInterval)
	if c.ProbeMaxInterval == 0 {
		c.ProbeMaxInterval = max(DefaultProbeMaxInterval, c.ProbeInterval)
	}
	if c.ProbeMaxInterval < c.ProbeInterval {
		return wrap(fmt.Errorf("ProbeMaxInterval (%v) is below ProbeInterval (%v)", c.ProbeMaxInterval, c.ProbeInterval))
	}
	if c.MaintenanceInterval < 0 {
		return wrap(errors.New("MaintenanceInterval is negative; the background loop cannot be switched off"))
	}
	c.MaintenanceInterval = orDefault(c.MaintenanceInterval, DefaultMaintenance)
	if c.LeakThreshold < 0 {
		return wrap(errors.New("LeakThreshold is negative; 0 switches leak detection off"))
	}
	return c, nil
}

func (c Config) limits() Limits {
	return Limits{MaxTotal: c.MaxTotal, MaxPerRoute: c.MaxPerRoute, MinIdlePerRoute: c.MinIdlePerRoute, MaxConcurrentDials: c.MaxConcurrentDials}
}

func (c *Config) setLimits(l Limits) {
	c.MaxTotal, c.MaxPerRoute, c.MinIdlePerRoute, c.MaxConcurrentDials = l.MaxTotal, l.MaxPerRoute, l.MinIdlePerRoute, l.MaxConcurrentDials
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// dialer is the net.Dialer every connection goes through: dial timeout,
// keepalive and, in Control, TCP_USER_TIMEOUT set before connect.
func (c Config) dialer() net.Dialer {
	o := c.sockOpts()
	d := net.Dialer{Timeout: c.DialTimeout, Control: o.control}
	if o.keepAlive.Enable {
		d.KeepAliveConfig = o.keepAlive
	} else {
		d.KeepAlive = -1
	}
	return d
}

func (c Config) sockOpts() sockOpts {
	o := sockOpts{userTimeout: c.UserTimeout, noDelay: !c.DisableNoDelay}
	if c.KeepAliveIdle > 0 {
		o.keepAlive = net.KeepAliveConfig{Enable: true, Idle: c.KeepAliveIdle, Interval: c.KeepAliveInterval, Count: c.KeepAliveCount}
	}
	return o
}

// dialContext makes one connection with every socket option set, bounded
// by DialTimeout and ctx; the pool and NewHTTPTransport both dial through
// it. Without a Dial hook it dials through c.dialer() and then clears
// TCP_NODELAY if DisableNoDelay is set (Go sets it after connect, so
// Control cannot). With a hook, the hook gets its own copy of the dialer,
// must return a connection or an error, and the options are set again on
// what it returns.
func (c Config) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.DialTimeout)
	defer cancel()
	d, o := c.dialer(), c.sockOpts()
	if c.Dial == nil {
		nc, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if tc, ok := nc.(*net.TCPConn); ok && !o.noDelay {
			if err := tc.SetNoDelay(false); err != nil {
				nc.Close()
				return nil, fmt.Errorf("clear TCP_NODELAY: %w", err)
			}
		}
		return nc, nil
	}
	nc, err := c.Dial(ctx, &d, network, addr)
	if err != nil {
		return nil, err
	}
	if nc == nil {
		return nil, errors.New("the Dial hook returned neither a connection nor an error")
	}
	if err := o.apply(nc); err != nil {
		nc.Close()
		return nil, err
	}
	return nc, nil
}

package pool

import (
	"net/http"
	"time"
)

// NewHTTPTransport returns an *http.Transport that does not churn
// connections. net/http's default keeps only MaxIdleConnsPerHost = 2 idle
// connections per host: under concurrency above 2, every surplus connection
// is closed by the client after its request and sits in TIME_WAIT for 60s,
// and enough of them exhaust the ephemeral ports to that host.
//
// From cfg (defaults filled in as for New):
//   - MaxConnsPerHost = MaxIdleConnsPerHost = MaxPerRoute, so every
//     connection the transport may open may also stay idle;
//   - MaxIdleConns = MaxTotal;
//   - IdleConnTimeout = IdleTimeout (45s: below the 60s LB idle timeout);
//   - connections are dialled exactly as the pool dials them: bounded by
//     DialTimeout, with TCP keepalive, TCP_USER_TIMEOUT and TCP_NODELAY
//     (or not, with DisableNoDelay) set, through cfg.Dial if set.
//
// Like net/http, the transport bounds waits for a connection only by the
// request's context: give requests a deadline.
func NewHTTPTransport(cfg Config) (*http.Transport, error) {
	c, err := cfg.WithDefaults()
	if err != nil {
		return nil, err
	}
	idle := c.IdleTimeout
	if idle < 0 {
		idle = 0 // net/http: no limit
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           c.dialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          c.MaxTotal,
		MaxIdleConnsPerHost:   c.MaxPerRoute,
		MaxConnsPerHost:       c.MaxPerRoute,
		IdleConnTimeout:       idle,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}, nil
}

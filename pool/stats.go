package pool

import "time"

// RouteStats describes one route, or the sum over all of them. The first
// group are gauges (now); the rest are counters since New.
type RouteStats struct {
	Open    int  `json:"open"`    // idle + in use
	InUse   int  `json:"in_use"`  // handed out
	Idle    int  `json:"idle"`    // parked, ready
	Waiting int  `json:"waiting"` // Gets blocked
	Dialing int  `json:"dialing"` // dials in flight
	Down    bool `json:"down"`    // failing fast (Total: any route down)

	Gets           int64         `json:"gets"`
	Dials          int64         `json:"dials"`       // attempts, probes included
	DialErrors     int64         `json:"dial_errors"` //
	FailFast       int64         `json:"fail_fast"`   // Gets failed at once on a down route
	Waits          int64         `json:"waits"`       // Gets that had to wait
	WaitTime       time.Duration `json:"wait_time_ns"`
	Timeouts       int64         `json:"timeouts"`        // Gets that hit WaitTimeout or their deadline
	StaleEvictions int64         `json:"stale_evictions"` // failed the peek or Ping
	LifetimeCloses int64         `json:"lifetime_closes"`
	IdleCloses     int64         `json:"idle_closes"`
	SurplusCloses  int64         `json:"surplus_closes"` // over lowered limits, or to make room for another route
	Discards       int64         `json:"discards"`
	Leaks          int64         `json:"leaks"`
	DoubleReleases int64         `json:"double_releases"`
}

// Stats is a snapshot of the pool.
type Stats struct {
	Limits     Limits                `json:"limits"`
	DownRoutes int                   `json:"down_routes"`
	Total      RouteStats            `json:"total"`
	Routes     map[string]RouteStats `json:"routes"`
}

// Stats takes each route's lock in turn, briefly; the snapshot is
// consistent per route, not across routes.
func (p *Pool) Stats() Stats {
	s := Stats{Limits: *p.limits.Load(), Routes: map[string]RouteStats{}}
	p.mu.Lock()
	s.Total = p.retired
	p.mu.Unlock()
	for _, r := range *p.routes.Load() {
		r.mu.Lock()
		rs := r.statsLocked()
		removed := r.removed
		r.mu.Unlock()
		if removed { // already folded into retired
			continue
		}
		s.Routes[r.addr] = rs
		s.Total.add(rs)
		if rs.Down {
			s.DownRoutes++
		}
	}
	return s
}

func (r *route) statsLocked() RouteStats {
	s := r.c
	s.Open, s.InUse, s.Idle, s.Waiting, s.Dialing, s.Down = r.open, r.inUse, r.idle.len(), r.waiters.len(), r.dialing, r.down
	s.WaitTime = time.Duration(r.waitNanos.Load())
	s.Leaks = r.leaks.Load()
	s.DoubleReleases = r.doubleReleases.Load()
	return s
}

// retire keeps the counters of a forgotten route in the totals. A route is
// forgotten only with nothing open, dialling or waiting and not down, so
// its gauges are all zero.
func (p *Pool) retire(s RouteStats) {
	p.mu.Lock()
	p.retired.add(s)
	p.mu.Unlock()
}

func (s *RouteStats) add(o RouteStats) {
	s.Open += o.Open
	s.InUse += o.InUse
	s.Idle += o.Idle
	s.Waiting += o.Waiting
	s.Dialing += o.Dialing
	s.Down = s.Down || o.Down
	s.Gets += o.Gets
	s.Dials += o.Dials
	s.DialErrors += o.DialErrors
	s.FailFast += o.FailFast
	s.Waits += o.Waits
	s.WaitTime += o.WaitTime
	s.Timeouts += o.Timeouts
	s.StaleEvictions += o.StaleEvictions
	s.LifetimeCloses += o.LifetimeCloses
	s.IdleCloses += o.IdleCloses
	s.SurplusCloses += o.SurplusCloses
	s.Discards += o.Discards
	s.Leaks += o.Leaks
	s.DoubleReleases += o.DoubleReleases
}

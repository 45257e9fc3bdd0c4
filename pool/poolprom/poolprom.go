// Package poolprom exports pool.Stats as Prometheus metrics. It lives apart
// from package pool so that pool itself depends on nothing outside the
// standard library and golang.org/x/sys.
//
//	reg.MustRegister(poolprom.NewCollector(p, poolprom.Opts{Namespace: "myapp"}))
//
// Every metric but the limits carries a "route" label (the address given
// to Get); connection closes carry a "reason" label.
package poolprom

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tcplens/tcplens/pool"
)

// Source is what the collector reads; *pool.Pool satisfies it.
type Source interface{ Stats() pool.Stats }

// Opts names the metrics: Namespace_Subsystem_name. Subsystem defaults to
// "pool".
type Opts struct {
	Namespace   string
	Subsystem   string
	ConstLabels prometheus.Labels
}

// Collector is a prometheus.Collector over a pool's Stats, read on every
// scrape.
type Collector struct {
	src Source

	maxTotal, maxPerRoute                     *prometheus.Desc
	open, inUse, idle, waiting, dialing, down *prometheus.Desc
	gets, dials, dialErrors, failFast         *prometheus.Desc
	waits, waitSeconds, timeouts              *prometheus.Desc
	stale, closes, leaks, doubleReleases      *prometheus.Desc
}

// NewCollector returns a collector for src.
func NewCollector(src Source, o Opts) *Collector {
	if o.Subsystem == "" {
		o.Subsystem = "pool"
	}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(o.Namespace, o.Subsystem, name), help, labels, o.ConstLabels)
	}
	r := "route"
	return &Collector{
		src:            src,
		maxTotal:       d("max_connections", "Cap on connections over all routes (MaxTotal)."),
		maxPerRoute:    d("max_connections_per_route", "Cap on connections per route (MaxPerRoute)."),
		open:           d("open", "Connections open, idle or in use.", r),
		inUse:          d("in_use", "Connections handed out.", r),
		idle:           d("idle", "Idle connections ready for reuse.", r),
		waiting:        d("waiting", "Gets blocked waiting for a connection.", r),
		dialing:        d("dialing", "Dials in flight.", r),
		down:           d("down", "1 while the route fails fast after repeated dial failures.", r),
		gets:           d("gets_total", "Get calls.", r),
		dials:          d("dials_total", "Dial attempts, probes included.", r),
		dialErrors:     d("dial_errors_total", "Failed dials.", r),
		failFast:       d("fail_fast_total", "Gets failed at once because the route was down.", r),
		waits:          d("waits_total", "Gets that found no idle connection and waited.", r),
		waitSeconds:    d("wait_seconds_total", "Time Gets spent waiting.", r),
		timeouts:       d("timeouts_total", "Gets that gave up at WaitTimeout or their deadline.", r),
		stale:          d("stale_evictions_total", "Idle connections found dead by the peek or Ping.", r),
		closes:         d("closes_total", "Connections closed by the pool, by reason.", r, "reason"),
		leaks:          d("leaks_total", "Connections held longer than the leak threshold.", r),
		doubleReleases: d("double_releases_total", "Release or Discard called on an already returned connection.", r),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.maxTotal, c.maxPerRoute, c.open, c.inUse, c.idle, c.waiting, c.dialing, c.down,
		c.gets, c.dials, c.dialErrors, c.failFast, c.waits, c.waitSeconds, c.timeouts,
		c.stale, c.closes, c.leaks, c.doubleReleases,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(c.maxTotal, float64(s.Limits.MaxTotal))
	gauge(c.maxPerRoute, float64(s.Limits.MaxPerRoute))
	for route, r := range s.Routes {
		gauge(c.open, float64(r.Open), route)
		gauge(c.inUse, float64(r.InUse), route)
		gauge(c.idle, float64(r.Idle), route)
		gauge(c.waiting, float64(r.Waiting), route)
		gauge(c.dialing, float64(r.Dialing), route)
		down := 0.0
		if r.Down {
			down = 1
		}
		gauge(c.down, down, route)
		counter(c.gets, float64(r.Gets), route)
		counter(c.dials, float64(r.Dials), route)
		counter(c.dialErrors, float64(r.DialErrors), route)
		counter(c.failFast, float64(r.FailFast), route)
		counter(c.waits, float64(r.Waits), route)
		counter(c.waitSeconds, r.WaitTime.Seconds(), route)
		counter(c.timeouts, float64(r.Timeouts), route)
		counter(c.stale, float64(r.StaleEvictions), route)
		counter(c.closes, float64(r.LifetimeCloses), route, "lifetime")
		counter(c.closes, float64(r.IdleCloses), route, "idle")
		counter(c.closes, float64(r.SurplusCloses), route, "surplus")
		counter(c.closes, float64(r.Discards), route, "discard")
		counter(c.leaks, float64(r.Leaks), route)
		counter(c.doubleReleases, float64(r.DoubleReleases), route)
	}
}

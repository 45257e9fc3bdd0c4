package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tcplens/tcplens/internal/watch"
)

// Sampler takes and keeps samples; *watch.Watcher satisfies it. Next is
// called only by Run; a scrape calls only Latest.
type Sampler interface {
	Next(ctx context.Context) (*watch.Sample, error)
	Latest() *watch.Sample
	Interval() time.Duration
}

// Defaults.
const (
	// DefaultMaxDestinations caps the per-destination series: 50 covers the
	// backends of a typical service and keeps a fleet of thousands of hosts
	// within what one Prometheus holds.
	DefaultMaxDestinations = 50
	// DefaultMaxProcesses caps the per-process CLOSE_WAIT series.
	DefaultMaxProcesses = 50
	// maxAgeIntervals: by default a sample may be this many intervals old,
	// which rides out one failed sample and one slow dump on a huge host.
	maxAgeIntervals = 4
	// maxScrapesInFlight: further concurrent scrapes get 503 at once
	// instead of queueing.
	maxScrapesInFlight = 8
)

// Options configure an Exporter.
type Options struct {
	// MaxAge is the oldest sample a scrape serves; default 4 × the
	// sampler's interval.
	MaxAge time.Duration
	// MaxDestinations and MaxProcesses cap the per-destination and
	// per-process series; the rest is summed into one "other" series.
	MaxDestinations int
	MaxProcesses    int
	// Logger receives sampling errors; default discards them.
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Exporter samples in the background and serves the latest sample.
type Exporter struct {
	src Sampler
	opt Options
	d   *descs

	samples, failures atomic.Uint64

	// cache holds the series derived from one sample, so that concurrent
	// and repeated scrapes of the same sample share one computation.
	cmu     sync.Mutex
	cache   *derived
	closed  closedTotals  // guarded by cmu
	counted *watch.Sample // the newest sample whose churn is in closed
}

type derived struct {
	sample  *watch.Sample
	metrics []prometheus.Metric
}

// New checks the options against the sampler.
func New(src Sampler, opt Options) (*Exporter, error) {
	if opt.MaxAge == 0 {
		opt.MaxAge = maxAgeIntervals * src.Interval()
	}
	if opt.MaxAge < 0 {
		return nil, fmt.Errorf("max age %s: must be positive", opt.MaxAge)
	}
	if opt.MaxAge < src.Interval() {
		return nil, fmt.Errorf("max age %s is shorter than the sampling interval %s: every scrape between two samples would fail", opt.MaxAge, src.Interval())
	}
	if opt.MaxDestinations == 0 {
		opt.MaxDestinations = DefaultMaxDestinations
	}
	if opt.MaxProcesses == 0 {
		opt.MaxProcesses = DefaultMaxProcesses
	}
	if opt.MaxDestinations < 0 || opt.MaxProcesses < 0 {
		return nil, errors.New("series caps must be positive")
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Exporter{src: src, opt: opt, d: newDescs()}, nil
}

// MaxAge returns the oldest sample a scrape serves.
func (e *Exporter) MaxAge() time.Duration { return e.opt.MaxAge }

// Run samples every interval until ctx ends. A failed sample is counted,
// logged and retried at the next tick: the exporter keeps serving, and the
// age of the last good sample tells Prometheus how stale it is. A sample
// slower than the interval delays the next one; two never overlap.
func (e *Exporter) Run(ctx context.Context) error {
	t := time.NewTicker(e.src.Interval())
	defer t.Stop()
	for {
		s, err := e.src.Next(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			e.failures.Add(1)
			e.opt.Logger.Warn("sample failed", "err", err)
		default:
			e.samples.Add(1)
			e.derive(s) // ready before the next scrape asks
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Handler serves the exporter's metrics, with the Go runtime and process
// metrics node_exporter also exposes.
func (e *Exporter) Handler() http.Handler {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: maxScrapesInFlight,
		Timeout:             10 * time.Second,
	})
}

// Describe implements prometheus.Collector.
func (e *Exporter) Describe(ch chan<- *prometheus.Desc) { e.d.describe(ch) }

// Collect implements prometheus.Collector. It reads the latest sample and
// never takes one.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	d := e.d
	ch <- prometheus.MustNewConstMetric(d.samples, prometheus.CounterValue, float64(e.samples.Load()))
	ch <- prometheus.MustNewConstMetric(d.failures, prometheus.CounterValue, float64(e.failures.Load()))
	ch <- prometheus.MustNewConstMetric(d.maxAge, prometheus.GaugeValue, e.opt.MaxAge.Seconds())
	s := e.src.Latest()
	if s == nil {
		ch <- prometheus.MustNewConstMetric(d.success, prometheus.GaugeValue, 0)
		return
	}
	age := e.opt.Now().Sub(s.Time)
	ch <- prometheus.MustNewConstMetric(d.age, prometheus.GaugeValue, age.Seconds())
	ch <- prometheus.MustNewConstMetric(d.timestamp, prometheus.GaugeValue, float64(s.Time.UnixNano())/1e9)
	ch <- prometheus.MustNewConstMetric(d.took, prometheus.GaugeValue, s.Snap.Took.Seconds())
	if age > e.opt.MaxAge {
		ch <- prometheus.MustNewConstMetric(d.success, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(d.success, prometheus.GaugeValue, 1)
	for _, m := range e.derive(s) {
		ch <- m
	}
}

// derive returns the data series of s, computing them once per sample.
func (e *Exporter) derive(s *watch.Sample) []prometheus.Metric {
	e.cmu.Lock()
	defer e.cmu.Unlock()
	if e.cache != nil && e.cache.sample == s {
		return e.cache.metrics
	}
	// Each window is counted once, in order: Run derives every sample as it
	// arrives, and a scrape may still hold an older one.
	if e.counted == nil || s.Time.After(e.counted.Time) {
		e.closed.add(s.Churn)
		e.counted = s
	}
	ms := e.d.sampleMetrics(s, &e.closed, e.opt.MaxDestinations, e.opt.MaxProcesses)
	e.cache = &derived{sample: s, metrics: ms}
	return ms
}

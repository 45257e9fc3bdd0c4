package watch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/churn"
	"github.com/tcplens/tcplens/internal/doctor"
	"github.com/tcplens/tcplens/internal/snapshot"
)

// Options configure a Watcher.
type Options struct {
	Netns       string
	Interval    time.Duration // default 1 s
	IdleTimeout time.Duration // default doctor.DefaultIdleTimeout (AWS NLB)
	// Procs attributes sockets to processes on every sample.
	Procs bool
	// Only and Skip choose doctor rules, as in `tcplens doctor`.
	Only, Skip []string
	// Churn listens to the kernel's destroy events between samples, so every
	// sample carries the connections closed since the one before, however
	// short they lived, and doctor's close rates are measured. Call Close
	// to release the listener.
	Churn bool
}

// Sample is one point of a watch.
type Sample struct {
	Time time.Time
	Snap *snapshot.Snapshot
	// Prev is the sample before; nil for the first one.
	Prev *snapshot.Snapshot
	// Report holds doctor's findings over (Prev, Snap).
	Report *doctor.Report
	// Churn holds the connections closed between Prev and Snap (destroy
	// events); nil unless Options.Churn, and for the first sample.
	Churn *churn.Window
	// Budgets is analyze.PortBudgets(Snap), most ports in use first,
	// computed once for doctor and every consumer.
	Budgets []analyze.PortBudget
}

// Watcher takes samples. Next and Run may be called from one goroutine at
// a time; Latest may be called from any.
type Watcher struct {
	opt   Options
	rules []doctor.Rule

	mu   sync.Mutex // serialises dumps: never two at once
	prev *snapshot.Snapshot
	// prevBudgets are the budgets of prev, handed to doctor.
	prevBudgets []analyze.PortBudget
	events      *churn.Listener // opened by the first Next with Options.Churn
	latest      *Sample
	// noProcs turns Options.Procs off for the next samples (SetProcs).
	noProcs atomic.Bool
	lmu     sync.RWMutex
}

// New validates the options.
func New(opt Options) (*Watcher, error) {
	if opt.Interval == 0 {
		opt.Interval = time.Second
	}
	if opt.Interval < 0 {
		return nil, fmt.Errorf("interval %s: must be positive", opt.Interval)
	}
	if opt.IdleTimeout == 0 {
		opt.IdleTimeout = doctor.DefaultIdleTimeout
	}
	rules, err := doctor.Select(opt.Only, opt.Skip)
	if err != nil {
		return nil, err
	}
	return &Watcher{opt: opt, rules: rules}, nil
}

// Interval returns the sampling interval.
func (w *Watcher) Interval() time.Duration { return w.opt.Interval }

// Next takes a snapshot now and diagnoses it against the previous one.
func (w *Watcher) Next(ctx context.Context) (*Sample, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.opt.Churn && w.events == nil {
		// The listener outlives this call's ctx; Close ends it.
		l, err := churn.Listen(context.WithoutCancel(ctx), churn.Config{Netns: w.opt.Netns})
		if err != nil {
			return nil, err
		}
		w.events = l
	}
	snap, err := snapshot.Take(ctx, snapshot.Options{Netns: w.opt.Netns, Procs: w.opt.Procs && !w.noProcs.Load()})
	if err != nil {
		return nil, err
	}
	s := &Sample{Time: snap.Time, Snap: snap, Prev: w.prev}
	if w.events != nil {
		if err := w.events.Err(); err != nil {
			return nil, err
		}
		// The window ends with this snapshot; the first one spans only the
		// listener's start-up, so it is not reported.
		if win := w.events.Swap(); w.prev != nil {
			s.Churn = win
		}
		w.events.Observe(snap)
	}
	in := &doctor.Input{Now: snap, Prev: w.prev, IdleTimeout: w.opt.IdleTimeout, Churn: s.Churn, PrevBudgets: w.prevBudgets}
	s.Report = doctor.Diagnose(in, w.rules)
	s.Budgets = in.PortBudgets()
	w.prev, w.prevBudgets = snap, s.Budgets
	w.lmu.Lock()
	w.latest = s
	w.lmu.Unlock()
	return s, nil
}

// Close releases the destroy-event listener, if any. The Watcher may not be
// used afterwards.
func (w *Watcher) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.events == nil {
		return nil
	}
	err := w.events.Close()
	w.events = nil
	w.opt.Churn = false
	return err
}

// ChurnEvents returns the number of destroy events processed and lost
// since the listener started (see churn.Listener.Dropped); ok is false
// while there is no listener (Churn off, or before the first sample).
func (w *Watcher) ChurnEvents() (processed, dropped uint64, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.events == nil {
		return 0, 0, false
	}
	dropped, _ = w.events.Dropped()
	return w.events.Events(), dropped, true
}

// SetProcs turns process attribution on or off for the following samples
// (it is never on when Options.Procs is off). Walking /proc costs more than
// the socket dump on a host with many processes, so a recorder may attribute
// only while something is wrong.
func (w *Watcher) SetProcs(on bool) { w.noProcs.Store(!on) }

// Latest returns the newest sample, or nil before the first.
func (w *Watcher) Latest() *Sample {
	w.lmu.RLock()
	defer w.lmu.RUnlock()
	return w.latest
}

// Run calls fn with a sample every interval until ctx ends or fn fails. A
// sample that takes longer than the interval delays the next tick instead
// of overlapping it. Run returns nil when ctx ends.
func (w *Watcher) Run(ctx context.Context, fn func(*Sample) error) error {
	t := time.NewTicker(w.opt.Interval)
	defer t.Stop()
	for {
		s, err := w.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := fn(s); err != nil {
			if errors.Is(err, context.Canceled) && ctx.Err() != nil {
				return nil
			}
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

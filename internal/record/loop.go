package record

import (
	"context"
	"fmt"
	"math"
	"syscall"
	"time"

	"github.com/tcplens/tcplens/internal/doctor"
	"github.com/tcplens/tcplens/internal/kernel"
	"github.com/tcplens/tcplens/internal/netns"
	"github.com/tcplens/tcplens/internal/watch"
)

// LoopOptions configure Loop.
type LoopOptions struct {
	Netns    string
	Interval time.Duration
	// CPUBudget is the share of one core (0.025 = 2.5%) that the recorder
	// may use on average (full samples, probes, ticks, the destroy-event
	// reader). When a full sample costs more than the budget allows every
	// Interval, the next ones wait until the budget has earned their cost
	// back (see cpuBudget); a probe
	// of the kernel's socket totals still runs, and is stored as a tick,
	// every Interval, and forces a full sample at once when they jump. 0
	// takes a full sample every interval whatever it costs.
	CPUBudget float64
	// Procs: attribute sockets to processes only while something is wrong
	// (ProcsAuto), always, or never.
	Procs ProcsMode
	// OnSample, when set, is called after each stored sample.
	OnSample func(*watch.Sample)
}

// ProcsMode says when samples walk /proc to find socket owners.
type ProcsMode int

// Procs modes.
const (
	// ProcsAuto attributes while the last sample had a finding at or above
	// the trigger severity or a capture is open, for procsHold after any
	// trigger, and on the sample a probe jump forces: the moments that get
	// captured or reported. (A finding that starts a little after a jump,
	// like a CLOSE_WAIT pile-up aging past doctor's 2 s, is covered by the
	// hold and names its process from its first sample.)
	ProcsAuto ProcsMode = iota
	ProcsAlways
	ProcsNever
)

// procsHold is how long ProcsAuto keeps attributing after a trigger, at
// least procsHoldSamples intervals.
const (
	procsHold        = 10 * time.Second
	procsHoldSamples = 10
)

// maxStretch bounds how far the budget can push full samples apart.
const maxStretch = 30 * time.Second

// LoopStats add what the loop did to the recorder's Stats.
type LoopStats struct {
	// Probes counts the probes of the kernel's totals, one per stored tick.
	Probes      int `json:"probes"`
	ProbeForced int `json:"full_samples_forced_by_probe"`
}

// cpuBudget paces full samples so that the recorder as a whole (full
// samples, probes, ticks, the destroy-event reader) uses share of a core on
// average: it earns share x wall time, is charged the process's CPU time,
// and a full sample is due when the credit covers the last one's cost. The
// budget is used in full (a 44 ms sample under 2.5% runs about every 1.8 s,
// not every 2 s), and samples forced by a jump are paid back by the ones
// after.
type cpuBudget struct {
	share  float64
	credit time.Duration
	cost   time.Duration // CPU time of the last full sample
	last   time.Time     // when credit was last earned
	used   time.Duration // process CPU time at the last charge
}

// account earns credit for the wall time since the last call and charges
// the CPU time used since then (used is the process total).
func (b *cpuBudget) account(now time.Time, used time.Duration) {
	if !b.last.IsZero() && now.After(b.last) {
		b.credit += time.Duration(math.Round(b.share * float64(now.Sub(b.last))))
	}
	if b.used > 0 && used > b.used {
		b.credit -= used - b.used
	}
	b.last, b.used = now, used
	// A long run of forced samples owes at most maxStretch's earnings, so
	// the regular ones resume within about maxStretch once it ends.
	if floor := -time.Duration(math.Round(b.share * float64(maxStretch))); b.credit < floor {
		b.credit = floor
	}
}

func (b *cpuBudget) due() bool { return b.share <= 0 || b.credit >= b.cost }

// Loop records until ctx ends: a full sample every Interval as long as the
// CPU budget allows, and a cheap probe in between. It returns nil when ctx
// ends.
func Loop(ctx context.Context, w *watch.Watcher, r *Recorder, opt LoopOptions) (LoopStats, error) {
	var st LoopStats
	if opt.Interval <= 0 {
		return st, fmt.Errorf("interval %s: must be positive", opt.Interval)
	}
	tick := time.NewTicker(opt.Interval)
	defer tick.Stop()
	var (
		lastFull time.Time
		lastTrig time.Time
		hold     = max(procsHold, procsHoldSamples*opt.Interval)
		budget   = cpuBudget{share: opt.CPUBudget}
		base     probe // the probe taken with the last full sample
		prev     probe // the probe of the tick before
		havePrev bool
		procs    = opt.Procs == ProcsAlways
		events   uint64 // destroy events at the tick before
		dropped  uint64 // and those lost
		haveEv   bool
	)
	for {
		now := time.Now()
		p, err := readProbe(opt.Netns)
		if err != nil {
			if ctx.Err() != nil {
				return st, nil
			}
			return st, err
		}
		budget.account(now, cpuTime())
		due := lastFull.IsZero() || budget.due() || now.Sub(lastFull) >= maxStretch-opt.Interval/10
		// Against the last full sample, so a rise spread over several
		// probes counts too.
		if !due && r.opt.Triggers.probeJump(base, p) {
			due = true
			st.ProbeForced++
			if opt.Procs == ProcsAuto {
				procs = true
			}
		}
		if due {
			w.SetProcs(procs)
			cpu0 := cpuTime()
			s, err := w.Next(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return st, nil
				}
				return st, err
			}
			if err := r.Record(ctx, s); err != nil {
				if ctx.Err() != nil {
					return st, nil
				}
				return st, err
			}
			budget.cost = cpuTime() - cpu0
			lastFull = now
			if r.triggered {
				lastTrig = now
			}
			if opt.Procs == ProcsAuto {
				procs = r.open != nil || worst(s.Report) >= r.opt.Triggers.Severity || (!lastTrig.IsZero() && now.Sub(lastTrig) < hold)
			}
			base = p
			if opt.OnSample != nil {
				opt.OnSample(s)
			}
		}
		tk := Tick{Time: now, TimeWait: p.TW, InUse: p.InUse, Orphan: p.Orphan, CurrEstab: p.CurrEstab}
		if due {
			tk.SampleID = r.LastSample()
		}
		if havePrev {
			tk.Counters = counterDeltas(prev.Counters, p.Counters)
		}
		if n, d, ok := w.ChurnEvents(); ok {
			if haveEv && n >= events && d >= dropped {
				c := int64(n - events)
				tk.Closed = &c
				tk.ClosedDropped = int64(d - dropped)
			}
			events, dropped, haveEv = n, d, true
		}
		prev, havePrev = p, true
		// The probe is taken: store it even when ctx ended meanwhile (a
		// --duration run keeps its last interval).
		if err := r.Tick(context.WithoutCancel(ctx), tk); err != nil {
			return st, err
		}
		st.Probes++
		select {
		case <-ctx.Done():
			return st, nil
		case <-tick.C:
		}
	}
}

func worst(r *doctor.Report) doctor.Severity {
	w := doctor.Severity(-1)
	if r == nil {
		return w
	}
	for _, f := range r.Findings {
		w = max(w, f.Severity)
	}
	return w
}

// cpuTime is the user plus system time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// probe is what the kernel counts without a dump: TIME_WAIT, sockets in
// the hash, orphans (sockstat) and ESTABLISHED + CLOSE_WAIT (Tcp CurrEstab).
type probe struct {
	kernel.Sockstat
	CurrEstab int
	Counters  kernel.Counters
}

func readProbe(ns string) (probe, error) {
	var p probe
	err := netns.Run(ns, func() error {
		var err error
		if p.Sockstat, err = kernel.ReadSockstat(); err != nil {
			return err
		}
		c, err := kernel.ReadCounters()
		if err != nil {
			return err
		}
		p.CurrEstab = int(c["Tcp.CurrEstab"])
		p.Counters = c
		return nil
	})
	if err != nil {
		return p, fmt.Errorf("probe socket totals: %w", err)
	}
	return p, nil
}

// counterDeltas returns the non-zero deltas of Counters from a to b. A
// negative delta means the counters were reset (a new namespace under the
// same name): no delta for that interval.
func counterDeltas(a, b kernel.Counters) map[string]int64 {
	var out map[string]int64
	for _, name := range Counters {
		x, ok1 := a[name]
		y, ok2 := b[name]
		if d := y - x; ok1 && ok2 && d > 0 {
			if out == nil {
				out = make(map[string]int64)
			}
			out[name] = d
		}
	}
	return out
}

// probeJump applies the jump trigger's thresholds to the probe's totals
// (rises, and falls of CurrEstab).
func (t *Triggers) probeJump(a, b probe) bool {
	return t.jumped(a.TW, b.TW, false) || t.jumped(a.InUse, b.InUse, false) || t.jumped(a.Orphan, b.Orphan, false) || t.jumped(a.CurrEstab, b.CurrEstab, true)
}

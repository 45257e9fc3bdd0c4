package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcplens/tcplens/internal/doctor"
	"github.com/tcplens/tcplens/internal/record"
	"github.com/tcplens/tcplens/internal/render"
	"github.com/tcplens/tcplens/internal/watch"
)

// minRecordInterval is the shortest --interval: below it the dump itself
// becomes most of the work on a busy host.
const minRecordInterval = 100 * time.Millisecond

// defaultDB is /var/lib/tcplens/tcplens.db for root, else
// $XDG_STATE_HOME/tcplens/tcplens.db (default ~/.local/state).
func defaultDB() string {
	if os.Geteuid() == 0 {
		return "/var/lib/tcplens/tcplens.db"
	}
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "tcplens", "tcplens.db")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "tcplens", "tcplens.db")
	}
	return "tcplens.db"
}

func newRecordCmd(g *globals) *cobra.Command {
	var (
		db          string
		interval    time.Duration
		duration    time.Duration
		retention   time.Duration
		maxSize     string
		top         int
		idle        idleFlags
		procs       string
		cpuBudget   float64
		sev         string
		jumpPercent float64
		opt         = record.Options{Triggers: record.DefaultTriggers()}
	)
	cmd := &cobra.Command{
		Use:   "record",
		Short: "Flight recorder: sample every --interval into an SQLite file, capture full snapshots when something happens",
		Long: `record samples the namespace every --interval (like doctor, with every rule
on every pair of samples) and stores per-state counts, the ephemeral port
budget of the top destinations, kernel counter deltas and doctor's findings
in one SQLite file. A finding at --trigger-severity or above, or a state count
jumping by --trigger-jump sockets and --trigger-jump-percent, captures full
per-socket snapshots from --capture-before samples before to --capture-after
samples after the moment, so a two-second spike can be examined later with
'tcplens history' and 'tcplens report'.

The file stays under --max-size and --retention: the oldest data goes first.
Each sample is one transaction in WAL mode, so kill -9 loses at most the
sample being taken. Stop with Ctrl-C or SIGTERM.`,
		Example: `  sudo tcplens record
  sudo tcplens record --netns tl-demo --db /tmp/demo.db --interval 250ms --duration 5m
  tcplens history --db /tmp/demo.db --since 10m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if interval < minRecordInterval {
				return usageError(fmt.Errorf("--interval %s: must be at least %s", interval, minRecordInterval))
			}
			if duration < 0 {
				return usageError(fmt.Errorf("--duration %s: must be 0 (until stopped) or positive", duration))
			}
			idleTimeout, err := idle.resolve(cmd.Flags())
			if err != nil {
				return usageError(err)
			}
			size, err := record.ParseSize(maxSize)
			if err != nil {
				return usageError(fmt.Errorf("--max-size: %w", err))
			}
			opt.MaxSize, opt.Retention, opt.Top = size, retention, top
			if opt.Triggers.Severity, err = parseSeverity(sev); err != nil {
				return usageError(fmt.Errorf("--trigger-severity: %w", err))
			}
			if jumpPercent < 0 {
				return usageError(fmt.Errorf("--trigger-jump-percent %g: must be 0 or more", jumpPercent))
			}
			opt.Triggers.JumpRel = jumpPercent / 100
			loop := record.LoopOptions{Netns: g.netns, Interval: interval, CPUBudget: cpuBudget / 100}
			switch procs {
			case "auto":
				loop.Procs = record.ProcsAuto
			case "always":
				loop.Procs = record.ProcsAlways
			case "never":
				loop.Procs = record.ProcsNever
			default:
				return usageError(fmt.Errorf("--procs %q: want auto, always or never", procs))
			}
			if cpuBudget < 0 || cpuBudget > 100 {
				return usageError(fmt.Errorf("--cpu-budget %g: want a percentage of one core, 0 (no limit) to 100", cpuBudget))
			}
			w, err := watch.New(watch.Options{Netns: g.netns, Interval: interval, IdleTimeout: idleTimeout, Procs: loop.Procs != record.ProcsNever, Churn: true})
			if err != nil {
				return usageError(err)
			}
			defer w.Close()
			if db == "" {
				db = defaultDB()
			}
			ctx := cmd.Context()
			rec, err := record.Open(ctx, db, opt)
			if err != nil {
				var oe *record.OptionError
				if errors.As(err, &oe) {
					return usageError(err)
				}
				return err
			}
			for k, v := range map[string]string{"netns": g.netns, "interval": interval.String(), "version": versionString()} {
				if err := rec.SetMeta(ctx, k, v); err != nil {
					rec.Close()
					return err
				}
			}
			if h, err := os.Hostname(); err == nil {
				if err := rec.SetMeta(ctx, "host", h); err != nil {
					rec.Close()
					return err
				}
			}
			return runRecord(cmd, g, w, rec, loop, duration)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&db, "db", "", "recording file (default /var/lib/tcplens/tcplens.db as root, else $XDG_STATE_HOME/tcplens/tcplens.db)")
	fl.DurationVar(&interval, "interval", time.Second, "time between samples (at least 100ms)")
	fl.DurationVar(&duration, "duration", 0, "stop after this long (0 = until Ctrl-C or SIGTERM)")
	fl.DurationVar(&retention, "retention", 24*time.Hour, "delete data older than this (0 = keep what fits in --max-size)")
	fl.StringVar(&maxSize, "max-size", "256MiB", "upper bound of the file and its WAL (at least 1MiB)")
	fl.IntVar(&top, "top", 10, "destinations whose port budget is stored per sample")
	idle.add(fl)
	fl.StringVar(&procs, "procs", "auto", "find socket owners (walks /proc): auto = while a finding or capture is on, always, never")
	fl.Float64Var(&cpuBudget, "cpu-budget", 2.5, "average CPU share of one core, in percent, for the whole recorder: full samples are spaced out to fit, while the kernel's totals are still stored every interval (0 = a full sample every interval, no limit)")
	fl.StringVar(&sev, "trigger-severity", "warning", "capture when a finding at this severity or above starts: info, warning, critical")
	fl.IntVar(&opt.Triggers.JumpAbs, "trigger-jump", opt.Triggers.JumpAbs, "capture when a state count rises (ESTABLISHED: or falls) by this many sockets between samples (0 = off)...")
	fl.Float64Var(&jumpPercent, "trigger-jump-percent", opt.Triggers.JumpRel*100, "...and by at least this percentage of its previous value")
	fl.IntVar(&opt.Triggers.Before, "capture-before", opt.Triggers.Before, "samples captured before the trigger (0-10)")
	fl.IntVar(&opt.Triggers.After, "capture-after", opt.Triggers.After, "samples captured after the trigger (0-60)")
	fl.IntVar(&opt.Triggers.MaxSockets, "capture-max-sockets", opt.Triggers.MaxSockets, "sockets kept per captured snapshot")
	fl.IntVar(&opt.Triggers.Burst, "capture-burst", opt.Triggers.Burst, "captures allowed back to back...")
	fl.DurationVar(&opt.Triggers.Every, "capture-every", opt.Triggers.Every, "...then one more per this period")
	return cmd
}

func parseSeverity(s string) (doctor.Severity, error) {
	switch strings.ToLower(s) {
	case "info":
		return doctor.Info, nil
	case "warning":
		return doctor.Warning, nil
	case "critical":
		return doctor.Critical, nil
	}
	return 0, fmt.Errorf("%q: want info, warning or critical", s)
}

func runRecord(cmd *cobra.Command, g *globals, w *watch.Watcher, rec *record.Recorder, loop record.LoopOptions, duration time.Duration) error {
	ctx := cmd.Context()
	if duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}
	errw := cmd.ErrOrStderr()
	where := "this network namespace"
	if g.netns != "" {
		where = "network namespace " + g.netns
	}
	fmt.Fprintf(errw, "tcplens record: %s every %s into %s\n", where, render.Duration(w.Interval()), rec.Path())
	captures := 0
	loop.OnSample = func(s *watch.Sample) {
		if st := rec.Stats(); st.Captures > captures {
			captures = st.Captures
			fmt.Fprintf(errw, "tcplens record: %s capture %d\n", s.Time.Format("15:04:05.000"), captures)
		}
	}
	ls, err := record.Loop(ctx, w, rec, loop)
	st := rec.Stats()
	if cerr := rec.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if g.json {
		return render.JSON(cmd.OutOrStdout(), map[string]any{"db": rec.Path(), "stats": st, "loop": ls})
	}
	fmt.Fprintf(errw, "tcplens record: %d intervals, %d full samples (%d forced by a jump in the kernel's totals), %d captures (%d snapshots), %d triggers over the rate limit, in %s\n",
		st.Ticks, st.Samples, ls.ProbeForced, st.Captures, st.Snapshots, st.Suppressed, rec.Path())
	if st.Samples > 0 && st.Samples < st.Ticks {
		fmt.Fprintf(errw, "tcplens record: a full sample every %s on average, to stay within --cpu-budget\n",
			render.Duration(w.Interval()*time.Duration(st.Ticks)/time.Duration(st.Samples)))
	}
	return nil
}

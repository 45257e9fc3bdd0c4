package doctor

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/churn"
	"github.com/tcplens/tcplens/internal/snapshot"
)

// Options configure a doctor run.
type Options struct {
	Netns string
	// Interval between the two snapshots; 0 takes one snapshot.
	Interval    time.Duration
	IdleTimeout time.Duration
	Only, Skip  []string
}

// Report is the outcome of a run.
type Report struct {
	Time        time.Time           `json:"time"`
	Netns       string              `json:"netns,omitempty"`
	Interval    float64             `json:"interval_seconds"`
	IdleTimeout float64             `json:"idle_timeout_seconds"`
	Rules       []string            `json:"rules"`
	Findings    []Finding           `json:"findings"`
	Total       int                 `json:"total"`
	States      analyze.StateCounts `json:"states"`
	// Churn holds the connections closed between the two snapshots, from
	// the kernel's destroy events (absent with one snapshot or when they
	// could not be captured).
	Churn *churn.Window `json:"churn,omitempty"`
	// Notes say what the run may have missed.
	Notes []string `json:"notes,omitempty"`
}

// ExitCode is 0 with nothing at warning or above, 1 with a warning, 2 with
// a critical finding.
func (r *Report) ExitCode() int {
	worst := Info
	for _, f := range r.Findings {
		worst = max(worst, f.Severity)
	}
	switch worst {
	case Critical:
		return 2
	case Warning:
		return 1
	}
	return 0
}

// Select returns the rules to run, checking that every id named exists.
func Select(only, skip []string) ([]Rule, error) {
	all := Rules()
	known := make(map[string]bool, len(all))
	for _, r := range all {
		known[r.ID()] = true
	}
	for _, id := range append(slices.Clone(only), skip...) {
		if !known[id] {
			ids := make([]string, 0, len(all))
			for _, r := range all {
				ids = append(ids, r.ID())
			}
			return nil, fmt.Errorf("unknown rule %q (rules: %s)", id, strings.Join(ids, ", "))
		}
	}
	var out []Rule
	for _, r := range all {
		if (len(only) == 0 || slices.Contains(only, r.ID())) && !slices.Contains(skip, r.ID()) {
			out = append(out, r)
		}
	}
	return out, nil
}

// Run takes the snapshots and applies the rules. With an interval it also
// listens to the kernel's destroy events between the snapshots, so close
// rates are measured, including connections that lived less than the
// interval; if it cannot, the rates are estimated and a note says so.
func Run(ctx context.Context, opt Options) (*Report, error) {
	rules, err := Select(opt.Only, opt.Skip)
	if err != nil {
		return nil, err
	}
	in := &Input{IdleTimeout: opt.IdleTimeout}
	take := func() (*snapshot.Snapshot, error) {
		return snapshot.Take(ctx, snapshot.Options{Netns: opt.Netns, Procs: true})
	}
	var (
		events    *churn.Listener
		eventsErr error
	)
	if opt.Interval > 0 {
		if events, eventsErr = churn.Listen(ctx, churn.Config{Netns: opt.Netns}); eventsErr == nil {
			defer events.Close()
		}
		if in.Prev, err = take(); err != nil {
			return nil, err
		}
		if events != nil {
			events.Swap() // the window runs from Prev to Now
			events.Observe(in.Prev)
		}
		select {
		case <-time.After(opt.Interval):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if in.Now, err = take(); err != nil {
		return nil, err
	}
	if events != nil {
		in.Churn = events.Swap()
		if err := events.Err(); err != nil {
			in.Churn, eventsErr = nil, err
		}
	}
	r := Diagnose(in, rules)
	if eventsErr != nil {
		r.Notes = append(r.Notes, fmt.Sprintf("Destroy events could not be read (%v); close rates are estimated from TIME_WAIT counts.", eventsErr))
	}
	return r, nil
}

// Diagnose applies rules to an input that is already captured.
func Diagnose(in *Input, rules []Rule) *Report {
	r := &Report{
		Time: in.Now.Time, Netns: in.Now.Netns, Interval: in.Interval().Seconds(),
		IdleTimeout: in.IdleTimeout.Seconds(), Total: in.Now.Total(),
		States: analyze.StateCounts(in.Now.States), Findings: []Finding{},
		Notes: analyze.Notes(in.Now), Churn: in.Churn,
	}
	if w := in.Churn; w != nil && w.Dropped > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("The kernel dropped %d destroy events (receive buffer overrun): the %d closes counted and the close rates from them are lower bounds.", w.Dropped, w.Total.Closed))
	}
	for _, rule := range rules {
		r.Rules = append(r.Rules, rule.ID())
		r.Findings = append(r.Findings, rule.Check(in)...)
	}
	slices.SortStableFunc(r.Findings, func(a, b Finding) int { return cmp.Compare(b.Severity, a.Severity) })
	return r
}

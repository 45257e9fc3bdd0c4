package doctor

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tcplens/tcplens/internal/analyze"
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

// Run takes the snapshots and applies the rules.
func Run(ctx context.Context, opt Options) (*Report, error) {
	rules, err := Select(opt.Only, opt.Skip)
	if err != nil {
		return nil, err
	}
	in := &Input{IdleTimeout: opt.IdleTimeout}
	take := func() (*snapshot.Snapshot, error) {
		return snapshot.Take(ctx, snapshot.Options{Netns: opt.Netns, Procs: true})
	}
	if opt.Interval > 0 {
		if in.Prev, err = take(); err != nil {
			return nil, err
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
	return Diagnose(in, rules), nil
}

// Diagnose applies rules to an input that is already captured.
func Diagnose(in *Input, rules []Rule) *Report {
	r := &Report{
		Time: in.Now.Time, Netns: in.Now.Netns, Interval: in.Interval().Seconds(),
		IdleTimeout: in.IdleTimeout.Seconds(), Total: in.Now.Total(),
		States: analyze.StateCounts(in.Now.States), Findings: []Finding{},
		Notes: analyze.Notes(in.Now),
	}
	for _, rule := range rules {
		r.Rules = append(r.Rules, rule.ID())
		r.Findings = append(r.Findings, rule.Check(in)...)
	}
	slices.SortStableFunc(r.Findings, func(a, b Finding) int { return cmp.Compare(b.Severity, a.Severity) })
	return r
}

package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tcplens/tcplens/internal/doctor"
	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/lab/harness"
)

// Scenario reproduces one problem, detects it and fixes it.
type Scenario struct {
	Name    string
	Summary string
	run     func(ctx context.Context, r *Run) error
}

// Scenarios lists every scenario, in the order `tcplens lab list` shows.
func Scenarios() []Scenario {
	return []Scenario{
		portExhaustion,
		timewaitOverflow,
		closeWaitLeak,
		retransmitTimeout,
		listenOverflow,
		lbIdleTimeout,
		stalePool,
		unixVsTCP,
	}
}

// Find returns the scenario called name.
func Find(name string) (Scenario, error) {
	var names []string
	for _, s := range Scenarios() {
		if s.Name == name {
			return s, nil
		}
		names = append(names, s.Name)
	}
	return Scenario{}, fmt.Errorf("no scenario %q (scenarios: %s)", name, strings.Join(names, ", "))
}

// Options control a run.
type Options struct {
	// Out receives the narrated timeline; nil discards it.
	Out io.Writer
	// Keep leaves the namespaces in place for exploring.
	Keep bool
}

// Metric is one row of the before/after table.
type Metric struct {
	Name   string  `json:"name"`
	Unit   string  `json:"unit,omitempty"`
	Before float64 `json:"before"`
	After  float64 `json:"after"`
}

// Step is one line of the timeline.
type Step struct {
	At   float64 `json:"at_seconds"`
	Text string  `json:"text"`
}

// Result is what a run measured.
type Result struct {
	Scenario string             `json:"scenario"`
	Steps    []Step             `json:"steps"`
	Metrics  []Metric           `json:"metrics"`
	Before   []string           `json:"findings_before"` // "id severity subject"
	After    []string           `json:"findings_after"`
	Values   map[string]float64 `json:"values"`
	Kept     []string           `json:"kept_namespaces,omitempty"`
	// Columns name the two measured columns (default: before and after
	// the fix).
	Columns [2]string `json:"columns"`
	Seconds float64   `json:"seconds"`
}

// Run is a scenario in progress.
type Run struct {
	out    io.Writer
	start  time.Time
	keep   bool
	spaces []*harness.Namespace
	res    *Result
}

// Execute runs sc. Its namespaces are removed when it ends, whether it
// succeeds, fails or ctx is cancelled (Ctrl-C), unless opt.Keep.
func Execute(ctx context.Context, sc Scenario, opt Options) (res *Result, err error) {
	out := opt.Out
	if out == nil {
		out = io.Discard
	}
	harness.CleanStale(ctx)
	r := &Run{out: out, start: time.Now(), keep: opt.Keep, res: &Result{Scenario: sc.Name, Values: map[string]float64{}, Before: []string{}, After: []string{}, Columns: [2]string{"BEFORE FIX", "AFTER FIX"}}}
	fmt.Fprintf(out, "lab %s: %s\n\n", sc.Name, sc.Summary)
	defer func() {
		if cerr := r.cleanup(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := sc.run(ctx, r); err != nil {
		if ctx.Err() != nil {
			return r.res, fmt.Errorf("lab %s: interrupted: %w", sc.Name, ctx.Err())
		}
		return r.res, fmt.Errorf("lab %s: %w", sc.Name, err)
	}
	r.res.Seconds = time.Since(r.start).Seconds()
	r.report()
	return r.res, nil
}

func (r *Run) cleanup() error {
	if r.keep {
		if len(r.spaces) > 0 {
			fmt.Fprintln(r.out, "\nThe namespaces are kept. Explore them with:")
			for _, ns := range r.spaces {
				r.res.Kept = append(r.res.Kept, ns.Name)
				fmt.Fprintf(r.out, "  tcplens sockets --netns %s -o -p\n  tcplens doctor --netns %s\n  ip netns exec %s ss -tanoi\n", ns.Name, ns.Name, ns.Name)
			}
			fmt.Fprintf(r.out, "Remove them with: ip netns del NAME\n")
		}
		return nil
	}
	var errs []error
	for _, ns := range r.spaces {
		if err := ns.Remove(context.Background()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Namespace creates a namespace that lives as long as the run.
func (r *Run) Namespace(ctx context.Context) (*harness.Namespace, error) {
	create := harness.New
	if r.keep {
		create = harness.NewKept
	}
	ns, err := create(ctx)
	if err != nil {
		return nil, err
	}
	r.spaces = append(r.spaces, ns)
	return ns, nil
}

// Step narrates one step of the timeline.
func (r *Run) Step(format string, args ...any) {
	at := time.Since(r.start).Seconds()
	text := fmt.Sprintf(format, args...)
	r.res.Steps = append(r.res.Steps, Step{At: at, Text: text})
	fmt.Fprintf(r.out, "%6.1fs  %s\n", at, text)
}

// Wait sleeps for d, printing progress every second when d is longer than
// a second, and returns early when ctx ends.
func (r *Run) Wait(ctx context.Context, d time.Duration, what string, progress func() string) error {
	end := time.Now().Add(d)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		left := time.Until(end)
		if left <= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(left, time.Second)):
		}
		if d > time.Second && time.Until(end) >= 500*time.Millisecond {
			line := fmt.Sprintf("        … %s, %.0fs left", what, time.Until(end).Seconds())
			if progress != nil {
				line += ": " + progress()
			}
			fmt.Fprintln(r.out, line)
		}
	}
}

// Columns renames the two columns of the table.
func (r *Run) Columns(before, after string) { r.res.Columns = [2]string{before, after} }

// Set records a measured number for tests and JSON.
func (r *Run) Set(key string, v float64) { r.res.Values[key] = v }

// Metric adds a before/after row.
func (r *Run) Metric(name, unit string, before, after float64) {
	r.res.Metrics = append(r.res.Metrics, Metric{Name: name, Unit: unit, Before: before, After: after})
}

// Snapshot captures ns.
func (r *Run) Snapshot(ctx context.Context, ns *harness.Namespace) (*snapshot.Snapshot, error) {
	return snapshot.Take(ctx, snapshot.Options{Netns: ns.Name, Procs: true})
}

// Diagnose runs doctor over two snapshots and narrates the findings. after
// selects which list of the result they go to.
func (r *Run) Diagnose(prev, now *snapshot.Snapshot, idle time.Duration, after bool) *doctor.Report {
	if idle == 0 {
		idle = doctor.DefaultIdleTimeout
	}
	rules, _ := doctor.Select(nil, nil)
	rep := doctor.Diagnose(&doctor.Input{Prev: prev, Now: now, IdleTimeout: idle}, rules)
	var lines []string
	for _, f := range rep.Findings {
		subj := ""
		if len(f.Subjects) > 0 {
			subj = f.Subjects[0].Name
		}
		lines = append(lines, strings.TrimSpace(fmt.Sprintf("%s %s %s", f.ID, f.Severity, subj)))
	}
	if after {
		r.res.After = lines
	} else {
		r.res.Before = lines
	}
	if len(lines) == 0 {
		r.Step("doctor: no findings")
	}
	for _, f := range rep.Findings {
		r.Step("doctor: %s [%s] %s", strings.ToUpper(f.Severity.String()), f.ID, f.Title)
	}
	return rep
}

// Has reports whether a findings list holds rule id at severity sev
// ("" for any).
func Has(findings []string, id, sev string) bool {
	return slices.ContainsFunc(findings, func(f string) bool {
		parts := strings.Fields(f)
		return len(parts) >= 2 && parts[0] == id && (sev == "" || parts[1] == sev)
	})
}

func (r *Run) report() {
	fmt.Fprintln(r.out)
	tw := tabwriter.NewWriter(r.out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "MEASURED\t%s\t%s\n", r.res.Columns[0], r.res.Columns[1])
	for _, m := range r.res.Metrics {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", m.Name, num(m.Before, m.Unit), num(m.After, m.Unit))
	}
	if len(r.res.Before)+len(r.res.After) > 0 || r.res.Columns[0] == "BEFORE FIX" {
		fmt.Fprintf(tw, "doctor findings\t%s\t%s\n", list(r.res.Before), list(r.res.After))
	}
	tw.Flush()
	fmt.Fprintf(r.out, "\nfinished in %.1fs\n", r.res.Seconds)
}

func num(v float64, unit string) string {
	s := fmt.Sprintf("%.4g", v)
	if v == float64(int64(v)) && v < 1e9 {
		s = fmt.Sprintf("%d", int64(v))
	}
	if unit != "" {
		s += " " + unit
	}
	return s
}

func list(fs []string) string {
	if len(fs) == 0 {
		return "none"
	}
	ids := make([]string, 0, len(fs))
	for _, f := range fs {
		p := strings.Fields(f)
		ids = append(ids, p[0]+" ("+p[1]+")")
	}
	return strings.Join(ids, ", ")
}

// WriteJSON writes a result as JSON.
func WriteJSON(w io.Writer, res *Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

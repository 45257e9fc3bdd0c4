package render

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/doctor"
)

const width = 80

// Findings writes a doctor report for a person: worst first, wrapped to
// 80 columns.
func Findings(w io.Writer, r *doctor.Report) error {
	ew := &errWriter{w: w}
	var n [3]int
	for _, f := range r.Findings {
		n[f.Severity]++
	}
	where := "this host"
	if r.Netns != "" {
		where = "network namespace " + r.Netns
	}
	sample := "one snapshot"
	if r.Interval > 0 {
		sample = fmt.Sprintf("two snapshots %.1fs apart", r.Interval)
	}
	fmt.Fprintf(ew, "tcplens doctor: %d sockets in %s, %s\n", r.Total, where, sample)
	if c := r.Churn; c != nil {
		// Drops are printed even when zero: a reader can trust the count.
		fmt.Fprintf(ew, "destroy events: %d connections closed in %.1fs (%.1f/s), %d dropped\n",
			c.Total.Closed, c.Duration().Seconds(), c.Total.PerSecond, c.Dropped)
	}
	fmt.Fprintf(ew, "%d critical, %d warning, %d info\n", n[doctor.Critical], n[doctor.Warning], n[doctor.Info])
	if len(r.Findings) == 0 {
		fmt.Fprintf(ew, "\nNo problems found. Rules run: %s.\n", strings.Join(r.Rules, ", "))
	}
	for _, f := range r.Findings {
		fmt.Fprintln(ew)
		head := fmt.Sprintf("%s [%s] ", strings.ToUpper(f.Severity.String()), f.ID)
		wrap(ew, head, strings.Repeat(" ", 2), f.Title)
		if len(f.Subjects) > 0 {
			fmt.Fprintln(ew, "  Affected:")
			for _, s := range f.Subjects {
				line := s.Kind + " " + s.Name
				if p := procNames(s.Processes); p != "" {
					line += " (" + p + ")"
				}
				if nums := kv(s.Numbers); nums != "" {
					line += ": " + nums
				}
				wrap(ew, "    ", "      ", line)
			}
		}
		if ev := kv(f.Evidence); ev != "" {
			wrap(ew, "  Evidence: ", "    ", ev)
		}
		wrap(ew, "  Why: ", "    ", f.Explanation)
		fmt.Fprintln(ew, "  Fix:")
		for i, fix := range f.Fix {
			wrap(ew, fmt.Sprintf("    %d. ", i+1), "       ", fix)
		}
	}
	for _, note := range r.Notes {
		fmt.Fprintln(ew)
		wrap(ew, "note: ", "  ", note)
	}
	return ew.err
}

func procNames(ps []analyze.ProcRef) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Label())
	}
	return strings.Join(out, ", ")
}

// kv formats a number map as "a=1 b=2", keys sorted.
func kv(m map[string]any) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%v", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// wrap writes text after first, continuing lines after indent, breaking at
// spaces so that lines stay within 80 columns where words allow.
func wrap(w io.Writer, first, indent, text string) {
	line := first
	empty := true
	for _, word := range strings.Fields(text) {
		if !empty && len(line)+1+len(word) > width {
			fmt.Fprintln(w, line)
			line, empty = indent, true
		}
		if !empty {
			line += " "
		}
		line += word
		empty = false
	}
	fmt.Fprintln(w, line)
}

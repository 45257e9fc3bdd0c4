package report

import (
	"cmp"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tcplens/tcplens/internal/doctor"
	"github.com/tcplens/tcplens/internal/record"
	"github.com/tcplens/tcplens/internal/render"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// Options shape a report.
type Options struct {
	Window record.Window
	// MaxPoints bounds the points per series; longer windows keep the
	// largest value per bucket.
	MaxPoints int
	// MaxRows bounds the sockets listed per captured snapshot (all of them
	// are counted in the grouped table).
	MaxRows int
	// TopDestinations is how many destinations get a line in the port chart.
	TopDestinations int
	// Now is the generation time printed in the footer.
	Now time.Time
}

// Report is everything the page shows.
type Report struct {
	DB        string
	Meta      map[string]string
	From, To  time.Time
	Samples   int
	Ticks     int // intervals recorded, when more than Samples
	Generated time.Time

	Charts    []*Chart
	NoChurn   bool
	Findings  []Finding
	Captures  []Capture
	Worst     map[string]int
	Truncated int // captures not shown
}

// Finding is a finding episode ready to print.
type Finding struct {
	record.Finding
	Evidence string // indented JSON
	Subjects []string
}

// Capture is a capture ready to print.
type Capture struct {
	record.Capture
	Reasons string
	Snaps   []Snap
}

// Snap is one captured snapshot ready to print.
type Snap struct {
	*record.Captured
	StateLine string
	Groups    []Group
	Rows      []record.CapturedSocket
	More      int
}

// Group counts captured sockets of one state between one local and one
// remote end (the ephemeral side collapsed to "*").
type Group struct {
	State, Local, Remote, Process string
	Count                         int
}

var stateColors = map[sockdiag.State]string{
	sockdiag.Established: "#1f77b4", sockdiag.SynSent: "#ff7f0e", sockdiag.SynRecv: "#bcbd22",
	sockdiag.FinWait1: "#9467bd", sockdiag.FinWait2: "#8c564b", sockdiag.TimeWait: "#7f7f7f",
	sockdiag.Close: "#17becf", sockdiag.CloseWait: "#d62728", sockdiag.LastAck: "#e377c2",
	sockdiag.Listen: "#2ca02c", sockdiag.Closing: "#aec7e8", sockdiag.NewSynRecv: "#ffbb78",
}

var palette = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"}

var severityColors = map[doctor.Severity]string{doctor.Critical: "#d62728", doctor.Warning: "#ff9900", doctor.Info: "#1f77b4"}

// Build reads the recording and prepares the report.
func Build(ctx context.Context, rd *record.Reader, opt Options) (*Report, error) {
	opt.MaxPoints = cmp.Or(opt.MaxPoints, 1200)
	opt.MaxRows = cmp.Or(opt.MaxRows, 50)
	opt.TopDestinations = cmp.Or(opt.TopDestinations, 5)
	r := &Report{DB: filepath.Base(rd.Path()), Generated: opt.Now, Worst: map[string]int{}}
	var err error
	if r.Meta, err = rd.Meta(ctx); err != nil {
		return nil, err
	}
	samples, err := rd.Samples(ctx, opt.Window)
	if err != nil {
		return nil, err
	}
	r.Samples = len(samples)
	ticks, err := rd.Ticks(ctx, opt.Window)
	if err != nil {
		return nil, err
	}
	switch {
	case len(samples) > 0:
		r.From, r.To = samples[0].Time, samples[len(samples)-1].Time
		if len(ticks) > 0 { // ticks may run past the last full sample
			r.From = minTime(r.From, ticks[0].Time)
			r.To = maxTime(r.To, ticks[len(ticks)-1].Time)
		}
	case len(ticks) > 0:
		r.From, r.To = ticks[0].Time, ticks[len(ticks)-1].Time
	default:
		r.From, r.To = opt.Window.Since, opt.Window.Until
	}
	findings, err := rd.Findings(ctx, opt.Window)
	if err != nil {
		return nil, err
	}
	captures, err := rd.Captures(ctx, opt.Window)
	if err != nil {
		return nil, err
	}
	// Findings and captures are marked on every chart's time axis.
	var markers []Marker
	for _, f := range findings {
		markers = append(markers, Marker{From: f.First, To: f.Last, Color: severityColors[f.Severity],
			Label: fmt.Sprintf("%s %s: %s", f.Severity, f.Rule, f.Title)})
	}
	for _, c := range captures {
		markers = append(markers, Marker{From: c.Time, To: c.Time, Color: "#000", Label: fmt.Sprintf("capture %d", c.ID)})
	}
	chart := func(title, unit string, series []Series) *Chart {
		return &Chart{Title: title, Unit: unit, Series: series, Markers: markers, From: r.From, To: r.To}
	}

	// States over time.
	var states []Series
	for _, st := range sockdiag.AllStates() {
		s := Series{Name: st.String(), Color: stateColors[st]}
		seen := false
		for _, smp := range samples {
			s.Points = append(s.Points, Point{smp.Time, float64(smp.States[st])})
			seen = seen || smp.States[st] > 0
		}
		if seen {
			states = append(states, s)
		}
	}
	r.Charts = append(r.Charts, chart("Sockets per state", "sockets", states))

	// Every interval, when full samples were spaced out: the kernel's own
	// totals and the destroy events, so a spike between full samples shows.
	// Only when some interval had no full sample: otherwise the charts
	// above already show every interval.
	spaced := 0
	for _, tk := range ticks {
		if tk.SampleID == 0 {
			spaced++
		}
	}
	if spaced > 0 {
		series := []Series{
			{Name: "TIME_WAIT", Color: stateColors[sockdiag.TimeWait]},
			{Name: "ESTAB+CLOSE_WAIT", Color: stateColors[sockdiag.Established]},
			{Name: "in use (no TIME_WAIT)", Color: "#17becf"},
			{Name: "orphans", Color: stateColors[sockdiag.FinWait1]},
		}
		closed := Series{Name: "destroy events per second", Color: "#000"}
		lost := Series{Name: "destroy events lost per second (the line above is then a lower bound)", Color: "#d62728"}
		anyLost := false
		for i, tk := range ticks {
			for j, v := range []int{tk.TimeWait, tk.CurrEstab, tk.InUse, tk.Orphan} {
				series[j].Points = append(series[j].Points, Point{tk.Time, float64(v)})
			}
			if i > 0 && tk.Closed != nil {
				if d := tk.Time.Sub(ticks[i-1].Time).Seconds(); d > 0 {
					closed.Points = append(closed.Points, Point{tk.Time, float64(*tk.Closed) / d})
					lost.Points = append(lost.Points, Point{tk.Time, float64(tk.ClosedDropped) / d})
					anyLost = anyLost || tk.ClosedDropped > 0
				}
			}
		}
		r.Ticks = len(ticks)
		r.Charts = append(r.Charts, chart("Every interval: kernel socket totals (full samples were spaced out)", "sockets", series))
		if len(closed.Points) > 0 {
			series := []Series{closed}
			if anyLost {
				series = append(series, lost)
			}
			r.Charts = append(r.Charts, chart("Every interval: connections closed (destroy events, both ends)", "events/s", series))
		}
	}

	// Ports in use per top destination.
	budgets, err := rd.Budgets(ctx, opt.Window)
	if err != nil {
		return nil, err
	}
	r.Charts = append(r.Charts, chart("Ephemeral ports in use per destination (top "+strconv.Itoa(opt.TopDestinations)+")", "ports",
		topSeries(budgets, opt.TopDestinations, samples, func(b record.Budget) int64 { return b.SampleID },
			func(b record.Budget) string {
				return fmt.Sprintf("%s → %s", b.Src, netip.AddrPortFrom(netip.MustParseAddr(b.Dst), uint16(b.DstPort)))
			},
			func(b record.Budget) float64 { return float64(b.InUse) })))

	// Churn, when destroy events were recorded.
	churn, err := rd.Churn(ctx, opt.Window)
	if err != nil {
		return nil, err
	}
	if len(churn) > 0 {
		r.Charts = append(r.Charts, chart("Connections closed per second per destination (destroy events)", "closes/s",
			topSeries(churn, opt.TopDestinations, samples, func(c record.Churn) int64 { return c.SampleID },
				func(c record.Churn) string { return c.Side + " " + c.Dst },
				func(c record.Churn) float64 { return c.PerS })))
	} else {
		r.NoChurn = true
	}

	// Counter rates.
	deltas, err := rd.CounterDeltas(ctx, opt.Window)
	if err != nil {
		return nil, err
	}
	interval := map[int64]float64{}
	for i := 1; i < len(samples); i++ {
		interval[samples[i].ID] = samples[i].Time.Sub(samples[i-1].Time).Seconds()
	}
	r.Charts = append(r.Charts, chart("Kernel counters (per second)", "per second",
		topSeries(deltas, 10, samples, func(c record.CounterDelta) int64 { return c.SampleID },
			func(c record.CounterDelta) string { return c.Name },
			func(c record.CounterDelta) float64 {
				if s := interval[c.SampleID]; s > 0 {
					return float64(c.Delta) / s
				}
				return 0
			})))
	for i := range r.Charts {
		for j := range r.Charts[i].Series {
			r.Charts[i].Series[j].Points = downsample(r.Charts[i].Series[j].Points, opt.MaxPoints)
		}
	}

	for _, f := range findings {
		ev, _ := json.MarshalIndent(f.Evidence, "", "  ")
		pf := Finding{Finding: f, Evidence: string(ev)}
		for _, s := range f.Subjects {
			line := s.Kind + " " + s.Name
			if len(s.Numbers) > 0 {
				keys := make([]string, 0, len(s.Numbers))
				for k := range s.Numbers {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				var kv []string
				for _, k := range keys {
					v := s.Numbers[k]
					switch v.(type) {
					case string, float64, int, int64, bool:
						kv = append(kv, fmt.Sprintf("%s=%v", k, v))
					default:
						b, _ := json.Marshal(v)
						kv = append(kv, k+"="+string(b))
					}
				}
				line += ": " + strings.Join(kv, " ")
			}
			pf.Subjects = append(pf.Subjects, line)
		}
		r.Findings = append(r.Findings, pf)
		r.Worst[f.Severity.String()]++
	}
	// The worst first, then by time.
	slices.SortStableFunc(r.Findings, func(a, b Finding) int { return cmp.Compare(b.Severity, a.Severity) })

	for _, c := range captures {
		snaps, err := rd.CaptureSnaps(ctx, c.ID)
		if err != nil {
			return nil, err
		}
		pc := Capture{Capture: c}
		var rs []string
		for _, x := range c.Reasons {
			rs = append(rs, x.String())
		}
		pc.Reasons = strings.Join(rs, "; ")
		for _, s := range snaps {
			ps := Snap{Captured: s, StateLine: render.States(s.States), Groups: groups(s)}
			ps.Rows = s.Sockets[:min(len(s.Sockets), opt.MaxRows)]
			ps.More = len(s.Sockets) - len(ps.Rows) + s.Omitted
			pc.Snaps = append(pc.Snaps, ps)
		}
		r.Captures = append(r.Captures, pc)
	}
	return r, nil
}

// topSeries makes one series per key for the keys with the largest peak,
// with a zero wherever a sample has no row for the key.
func topSeries[T any](rows []T, top int, samples []record.Sample, id func(T) int64, key func(T) string, val func(T) float64) []Series {
	peak := map[string]float64{}
	byKey := map[string]map[int64]float64{}
	for _, row := range rows {
		k := key(row)
		v := val(row)
		peak[k] = max(peak[k], v)
		if byKey[k] == nil {
			byKey[k] = map[int64]float64{}
		}
		byKey[k][id(row)] += v
	}
	keys := make([]string, 0, len(peak))
	for k := range peak {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(peak[b], peak[a]), cmp.Compare(a, b)) })
	keys = keys[:min(len(keys), top)]
	out := make([]Series, 0, len(keys))
	for i, k := range keys {
		s := Series{Name: k, Color: palette[i%len(palette)]}
		for _, smp := range samples {
			s.Points = append(s.Points, Point{smp.Time, byKey[k][smp.ID]})
		}
		out = append(out, s)
	}
	return out
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// downsample keeps at most n points, the largest value of each run, so
// spikes survive.
func downsample(ps []Point, n int) []Point {
	if len(ps) <= n || n < 1 {
		return ps
	}
	per := (len(ps) + n - 1) / n
	out := make([]Point, 0, n)
	for i := 0; i < len(ps); i += per {
		best := ps[i]
		for _, p := range ps[i:min(i+per, len(ps))] {
			if p.V > best.V {
				best.V = p.V
			}
		}
		out = append(out, best)
	}
	return out
}

// groups tallies a snapshot's sockets per state and end points, with the
// ephemeral side (the one not listening) collapsed to addr:*.
func groups(s *record.Captured) []Group {
	listening := map[string]bool{}
	for _, sk := range s.Sockets {
		if sk.State == "LISTEN" {
			if ap, err := netip.ParseAddrPort(sk.Local); err == nil {
				listening[strconv.Itoa(int(ap.Port()))] = true
			}
		}
	}
	star := func(ep string) string {
		if ap, err := netip.ParseAddrPort(ep); err == nil {
			return netip.AddrPortFrom(ap.Addr(), 0).Addr().String() + ":*"
		}
		return ep
	}
	port := func(ep string) string {
		if ap, err := netip.ParseAddrPort(ep); err == nil {
			return strconv.Itoa(int(ap.Port()))
		}
		return ""
	}
	m := map[Group]int{}
	for _, sk := range s.Sockets {
		g := Group{State: sk.State, Local: sk.Local, Remote: sk.Remote, Process: sk.Process}
		if sk.State != "LISTEN" {
			if listening[port(sk.Local)] {
				g.Remote = star(sk.Remote)
			} else {
				g.Local = star(sk.Local)
			}
		}
		if i := strings.LastIndexByte(g.Process, '/'); i > 0 {
			g.Process = g.Process[:i] // the pid would split the groups of a forking server
		}
		m[g]++
	}
	out := make([]Group, 0, len(m))
	for g, n := range m {
		g.Count = n
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b Group) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.State, b.State), cmp.Compare(a.Local, b.Local), cmp.Compare(a.Remote, b.Remote))
	})
	return out
}

//go:embed report.html.tmpl
var pageTemplate string

var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"clock": func(t time.Time) string { return t.Local().Format("15:04:05.000") },
	"date":  func(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05 MST") },
	"upper": strings.ToUpper,
	"int64": func(v uint32) int64 { return int64(v) },
	"sev":   func(s doctor.Severity) string { return s.String() },
	"ms": func(ms int64) string {
		if ms == 0 {
			return ""
		}
		return render.Duration(time.Duration(ms) * time.Millisecond)
	},
	"us": func(us uint32) string {
		if us == 0 {
			return ""
		}
		return render.Duration(time.Duration(us) * time.Microsecond)
	},
}).Parse(pageTemplate))

// Write renders the report as one self-contained HTML page: inline CSS and
// SVG, no script, no external resource of any kind.
func (r *Report) Write(w io.Writer) error {
	if err := page.Execute(w, r); err != nil {
		return fmt.Errorf("render report: %w", err)
	}
	return nil
}

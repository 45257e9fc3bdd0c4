package report

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"strconv"
	"strings"
	"time"
)

// Point is one value at one time.
type Point struct {
	T time.Time
	V float64
}

// Series is one line of a chart.
type Series struct {
	Name   string
	Color  string
	Points []Point
}

// Marker shades a time range of a chart (a finding) or marks a moment (a
// capture, when From == To).
type Marker struct {
	From, To time.Time
	Color    string
	Label    string
}

// Chart is a time-series line chart rendered to inline SVG.
type Chart struct {
	Title   string
	Unit    string
	Series  []Series
	Markers []Marker
	// From and To fix the time axis, so every chart of a report lines up.
	From, To time.Time
}

const (
	chartW, chartH           = 960, 260
	padL, padR, padT, padB   = 64, 16, 12, 40
	plotW, plotH             = chartW - padL - padR, chartH - padT - padB
	legendRowH, legendSwatch = 18, 12
	legendCols               = 3
)

// SVG renders the chart. Labels are escaped; everything else is numbers.
func (c *Chart) SVG() template.HTML {
	var b strings.Builder
	legendRows := (len(c.Series) + legendCols - 1) / legendCols
	h := chartH + legendRows*legendRowH
	fmt.Fprintf(&b, `<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s">`,
		chartW, h, chartW, h, html.EscapeString(c.Title))
	from, to := c.From, c.To
	if !to.After(from) {
		to = from.Add(time.Second)
	}
	span := to.Sub(from).Seconds()
	x := func(t time.Time) float64 { return padL + t.Sub(from).Seconds()/span*plotW }
	top := 0.0
	for _, s := range c.Series {
		for _, p := range s.Points {
			top = max(top, p.V)
		}
	}
	top = niceCeil(top)
	y := func(v float64) float64 { return padT + plotH - v/top*plotH }

	// Markers under the lines.
	for _, m := range c.Markers {
		x0, x1 := x(m.From), x(m.To)
		if x1-x0 < 2 {
			x0, x1 = x0-1, x0+1
		}
		x0, x1 = max(x0, padL), min(x1, padL+plotW)
		if x1 <= x0 {
			continue
		}
		fmt.Fprintf(&b, `<rect class="marker" x="%.1f" y="%d" width="%.1f" height="%d" fill="%s" fill-opacity="0.22"><title>%s</title></rect>`,
			x0, padT, x1-x0, plotH, m.Color, html.EscapeString(m.Label))
	}
	// Grid and y labels.
	for i := 0; i <= 4; i++ {
		v := top * float64(i) / 4
		yy := y(v)
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, padL, padL+plotW, yy, yy)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" font-size="11" fill="#555">%s</text>`, padL-6, yy+4, formatValue(v))
	}
	// Time ticks.
	step := tickStep(to.Sub(from))
	for t := from.Truncate(step).Add(step); !t.After(to); t = t.Add(step) {
		xx := x(t)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#eee"/>`, xx, xx, padT, padT+plotH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" font-size="11" fill="#555">%s</text>`, xx, padT+plotH+16, tickLabel(t, step))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`, padL, padT, plotW, plotH)
	if c.Unit != "" {
		fmt.Fprintf(&b, `<text x="12" y="%d" font-size="11" fill="#555" transform="rotate(-90 12 %d)" text-anchor="middle">%s</text>`,
			padT+plotH/2, padT+plotH/2, html.EscapeString(c.Unit))
	}
	// Lines: a step line (each sample holds until the next), so a one-sample
	// spike shows as a plateau of its real width.
	for _, s := range c.Series {
		if len(s.Points) == 0 {
			continue
		}
		var d strings.Builder
		for i, p := range s.Points {
			xx, yy := x(p.T), y(p.V)
			if i == 0 {
				fmt.Fprintf(&d, "M%.1f %.1f", xx, yy)
			} else {
				fmt.Fprintf(&d, "H%.1fV%.1f", xx, yy)
			}
		}
		if len(s.Points) == 1 {
			d.WriteString("h2")
		}
		fmt.Fprintf(&b, `<path class="series" d="%s" fill="none" stroke="%s" stroke-width="1.6"><title>%s</title></path>`,
			d.String(), s.Color, html.EscapeString(s.Name))
	}
	// Legend.
	for i, s := range c.Series {
		lx := padL + (i%legendCols)*(plotW/legendCols)
		ly := chartH + (i/legendCols)*legendRowH - 6
		peak := 0.0
		for _, p := range s.Points {
			peak = max(peak, p.V)
		}
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`, lx, ly-legendSwatch+2, legendSwatch, legendSwatch, s.Color)
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12" fill="#222">%s (max %s)</text>`, lx+legendSwatch+4, ly, html.EscapeString(s.Name), formatValue(peak))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // #nosec: built above, labels escaped
}

// niceCeil rounds up to 1, 2 or 5 times a power of ten (at least 1).
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func formatValue(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
	case v == math.Trunc(v):
		return strconv.FormatFloat(v, 'f', 0, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

var tickSteps = []time.Duration{
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
}

// tickStep picks a step giving at most 10 ticks.
func tickStep(span time.Duration) time.Duration {
	for _, s := range tickSteps {
		if span/s <= 10 {
			return s
		}
	}
	return span / 10
}

func tickLabel(t time.Time, step time.Duration) string {
	t = t.Local()
	switch {
	case step >= 24*time.Hour:
		return t.Format("Jan 2")
	case step >= time.Minute:
		return t.Format("15:04")
	default:
		return t.Format("15:04:05")
	}
}

package report

import (
	"strings"
	"testing"
	"time"
)

func TestChartSVG(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	c := &Chart{
		Title: `<b>"states"</b>`, Unit: "sockets", From: t0, To: t0.Add(10 * time.Second),
		Series:  []Series{{Name: "CLOSE_WAIT <x>", Color: "#d62728", Points: []Point{{t0, 0}, {t0.Add(2 * time.Second), 300}, {t0.Add(5 * time.Second), 0}}}},
		Markers: []Marker{{From: t0.Add(3 * time.Second), To: t0.Add(4 * time.Second), Color: "#ff9900", Label: "warning <close-wait-leak>"}},
	}
	svg := string(c.SVG())
	for _, want := range []string{`<path class="series" d="M64.0 220.0H240.0V95.2H504.0V220.0"`, `class="marker"`, "CLOSE_WAIT &lt;x&gt; (max 300)", "warning &lt;close-wait-leak&gt;", "&lt;b&gt;", ">500<"} {
		if !strings.Contains(svg, want) {
			t.Errorf("SVG lacks %q:\n%s", want, svg)
		}
	}
	if strings.Contains(svg, "<x>") || strings.Contains(svg, "<b>") {
		t.Error("label not escaped")
	}
}

func TestNiceCeilAndDownsample(t *testing.T) {
	for in, want := range map[float64]float64{0: 1, 1: 1, 3: 5, 300: 500, 1200: 2000, 100000: 100000, 100001: 200000} {
		if got := niceCeil(in); got != want {
			t.Errorf("niceCeil(%g) = %g, want %g", in, got, want)
		}
	}
	var ps []Point
	t0 := time.Unix(0, 0)
	for i := range 1000 {
		v := 0.0
		if i == 517 {
			v = 42 // a one-sample spike must survive
		}
		ps = append(ps, Point{t0.Add(time.Duration(i) * time.Second), v})
	}
	d := downsample(ps, 100)
	peak := 0.0
	for _, p := range d {
		peak = max(peak, p.V)
	}
	if len(d) != 100 || peak != 42 {
		t.Errorf("%d points, peak %g", len(d), peak)
	}
}

package exporter

import (
	"cmp"
	"slices"

	"github.com/tcplens/tcplens/internal/churn"
)

// maxTrackedDestinations bounds the running totals; closes towards further
// destinations are summed under "other".
const maxTrackedDestinations = 10000

// closedTotals turns per-sample churn windows into counters. Prometheus
// counters must only grow, so closes are summed per destination since the
// exporter started, and the exported top N is chosen by those totals: a
// busy destination keeps its series instead of flickering with each window.
type closedTotals struct {
	byDest  map[churn.Dest]uint64
	other   uint64 // closes of destinations not tracked or outside a window's top list
	dropped uint64 // destroy events the kernel dropped
	enabled bool
}

type destTotal struct {
	dest   churn.Dest
	closed uint64
}

// add counts a window once; nil (churn off, or the first sample) adds nothing.
func (c *closedTotals) add(w *churn.Window) {
	if w == nil {
		return
	}
	c.enabled = true
	if c.byDest == nil {
		c.byDest = make(map[churn.Dest]uint64)
	}
	for _, d := range w.Destinations {
		if _, ok := c.byDest[d.Dest]; !ok && len(c.byDest) >= maxTrackedDestinations {
			c.other += uint64(d.Closed)
			continue
		}
		c.byDest[d.Dest] += uint64(d.Closed)
	}
	c.other += uint64(w.OtherDestinations.Closed)
	c.dropped += w.Dropped
}

// top returns the n destinations with the most closes and the sum of the
// rest (other included).
func (c *closedTotals) top(n int) ([]destTotal, uint64) {
	all := make([]destTotal, 0, len(c.byDest))
	for d, v := range c.byDest {
		all = append(all, destTotal{d, v})
	}
	slices.SortFunc(all, func(a, b destTotal) int {
		return cmp.Or(cmp.Compare(b.closed, a.closed), a.dest.Addr.Compare(b.dest.Addr), cmp.Compare(a.dest.Side, b.dest.Side))
	})
	rest := c.other
	if len(all) > n {
		for _, d := range all[n:] {
			rest += d.closed
		}
		all = all[:n]
	}
	return all, rest
}

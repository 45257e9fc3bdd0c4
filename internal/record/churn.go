package record

import (
	"time"

	"github.com/tcplens/tcplens/internal/watch"
)

// ChurnRow is one destination's connection churn over one sample interval,
// as stored in the churn table.
type ChurnRow struct {
	Side string // client (this host dialled) or server (a local listener)
	Dst  string // addr:port
	// Closed connections in the interval and their rate.
	Closed int
	PerS   float64
	// Lifetime percentiles of the closed connections, milliseconds.
	LifetimeP50Ms, LifetimeP99Ms float64
	// Bytes acked plus received, and retransmits, at close.
	Bytes, Retrans int64
}

// churnRows returns the busiest top destinations of the sample's
// destroy-event window (nil when the sample has none: churn off, or the
// first sample). The window's dropped events go to the counters table as
// ChurnDroppedCounter, so they are recorded, never hidden.
func churnRows(s *watch.Sample, top int) []ChurnRow {
	if s.Churn == nil {
		return nil
	}
	ds := s.Churn.Destinations // busiest first
	rows := make([]ChurnRow, 0, min(top, len(ds)))
	for _, d := range ds[:min(top, len(ds))] {
		rows = append(rows, ChurnRow{
			Side: d.Side.String(), Dst: d.Addr.String(), Closed: d.Closed, PerS: d.PerSecond,
			LifetimeP50Ms: ms(d.LifetimeP50), LifetimeP99Ms: ms(d.LifetimeP99),
			Bytes: int64(d.BytesAcked + d.BytesReceived), Retrans: int64(d.Retransmits),
		})
	}
	return rows
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ChurnDroppedCounter is the counters-table name for destroy events the
// kernel dropped (ENOBUFS) in an interval.
const ChurnDroppedCounter = "tcplens.ChurnDroppedEvents"

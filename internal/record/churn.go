package record

import "github.com/tcplens/tcplens/internal/watch"

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

// churnRows is the hook for sock_diag destroy-event churn (internal/churn).
// It returns nothing until watch.Sample carries a churn window; then it
// becomes, for the busiest top destinations of s.Churn (a *churn.Window):
//
//	for _, d := range s.Churn.Destinations[:min(top, len(...))] {
//		rows = append(rows, ChurnRow{Side: d.Side.String(), Dst: d.Addr.String(),
//			Closed: d.Closed, PerS: d.PerSecond,
//			LifetimeP50Ms: ms(d.LifetimeP50), LifetimeP99Ms: ms(d.LifetimeP99),
//			Bytes: int64(d.BytesAcked + d.BytesReceived), Retrans: int64(d.Retransmits)})
//	}
//
// and the window's Dropped count goes into the counters table as
// ChurnDroppedCounter, so dropped events are recorded, never hidden. The
// table, the reader (Reader.Churn) and the report's churn chart already
// handle the rows.
func churnRows(s *watch.Sample, top int) []ChurnRow {
	_, _ = s, top
	return nil
}

// ChurnDroppedCounter is the counters-table name for destroy events the
// kernel dropped (ENOBUFS) in an interval.
const ChurnDroppedCounter = "tcplens.ChurnDroppedEvents"

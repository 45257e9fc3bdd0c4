package record

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// Tick is what record keeps for every interval, whether or not it took a
// full sample then: totals the kernel keeps without a socket dump, counter
// deltas and connections closed. On a large table, where the CPU budget
// spaces full samples out, ticks are what shows every interval.
type Tick struct {
	Time time.Time `json:"time"`
	// SampleID is the full sample taken at this tick, 0 if none.
	SampleID int64 `json:"sample_id,omitempty"`
	// From /proc/net/sockstat{,6}: TIME_WAIT, sockets in the hash tables
	// (TIME_WAIT excluded) and orphans; CurrEstab is Tcp CurrEstab
	// (ESTABLISHED + CLOSE_WAIT).
	TimeWait  int `json:"time_wait"`
	InUse     int `json:"in_use"`
	Orphan    int `json:"orphan"`
	CurrEstab int `json:"curr_estab"`
	// Closed is the number of destroy events since the tick before (both
	// ends of a connection inside the namespace count); nil without churn.
	// ClosedDropped counts the events the kernel could not deliver in that
	// interval (receive buffer full): Closed is then a lower bound.
	Closed        *int64 `json:"closed,omitempty"`
	ClosedDropped int64  `json:"closed_dropped,omitempty"`
	// Counters are the non-zero deltas of Counters since the tick before.
	Counters map[string]int64 `json:"counters,omitempty"`
}

// Tick stores one interval's tick in its own transaction. Call it after
// Record for a tick that took a full sample, so SampleID can point at it
// (LastSample).
func (r *Recorder) Tick(ctx context.Context, t Tick) error {
	counters := []byte("{}")
	if len(t.Counters) > 0 {
		var err error
		if counters, err = json.Marshal(t.Counters); err != nil {
			return fmt.Errorf("record tick to %s: %w", r.path, err)
		}
	}
	var sample, closed sql.NullInt64
	if t.SampleID > 0 {
		sample = sql.NullInt64{Int64: t.SampleID, Valid: true}
	}
	if t.Closed != nil {
		closed = sql.NullInt64{Int64: *t.Closed, Valid: true}
	}
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("record tick to %s: %w", r.path, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "INSERT INTO ticks(t, sample_id, time_wait, in_use, orphan, curr_estab, closed, closed_dropped, counters) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
		t.Time.UnixMilli(), sample, t.TimeWait, t.InUse, t.Orphan, t.CurrEstab, closed, t.ClosedDropped, string(counters)); err != nil {
		return fmt.Errorf("record tick to %s: %w", r.path, err)
	}
	if err := r.retain(ctx, tx, t.Time); err != nil {
		return fmt.Errorf("record tick to %s: %w", r.path, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("record tick to %s: commit: %w", r.path, err)
	}
	r.stats.Ticks++
	if err := r.enforceSize(ctx); err != nil {
		return fmt.Errorf("keep %s under %d bytes: %w", r.path, r.opt.MaxSize, err)
	}
	return nil
}

// LastSample returns the id of the last full sample stored, 0 before the
// first.
func (r *Recorder) LastSample() int64 { return r.lastSample }

// Ticks returns the ticks in w, oldest first. A recording made before
// ticks existed (schema version 1) has none.
func (r *Reader) Ticks(ctx context.Context, w Window) ([]Tick, error) {
	if r.version < 2 {
		return nil, nil
	}
	return query(ctx, r, w, `SELECT t, sample_id, time_wait, in_use, orphan, curr_estab, closed, closed_dropped, counters
		FROM ticks WHERE t >= ? AND t <= ? ORDER BY t, id`, func(rows *sql.Rows) (Tick, error) {
		var (
			t              Tick
			ms             int64
			sample, closed sql.NullInt64
			counters       string
		)
		if err := rows.Scan(&ms, &sample, &t.TimeWait, &t.InUse, &t.Orphan, &t.CurrEstab, &closed, &t.ClosedDropped, &counters); err != nil {
			return t, err
		}
		t.Time = time.UnixMilli(ms)
		t.SampleID = sample.Int64
		if closed.Valid {
			c := closed.Int64
			t.Closed = &c
		}
		if counters != "{}" {
			if err := json.Unmarshal([]byte(counters), &t.Counters); err != nil {
				return t, fmt.Errorf("tick at %s: counters: %w", t.Time.UTC().Format(time.RFC3339), err)
			}
		}
		return t, nil
	})
}

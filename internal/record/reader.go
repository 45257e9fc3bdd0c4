package record

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/doctor"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// Reader reads a recording. It never writes, so it can run while a
// Recorder writes the same file (WAL readers see the last commit).
type Reader struct {
	db      *sql.DB
	path    string
	version int // schema version of the file
}

// Window selects a time range; a zero bound is open.
type Window struct {
	Since, Until time.Time
}

func (w Window) bounds() (int64, int64) {
	lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
	if !w.Since.IsZero() {
		lo = w.Since.UnixMilli()
	}
	if !w.Until.IsZero() {
		hi = w.Until.UnixMilli()
	}
	return lo, hi
}

// OpenReader opens an existing recording.
func OpenReader(ctx context.Context, path string) (*Reader, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open recording: %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("open recording %s: is a directory", path)
	}
	db, err := sql.Open("sqlite", dsn(path, "query_only(1)"))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	var version int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, notADatabase(err))
	}
	switch {
	case version == 0:
		db.Close()
		return nil, fmt.Errorf("open %s: not a tcplens recording", path)
	case version > SchemaVersion:
		db.Close()
		return nil, fmt.Errorf("open %s: schema version %d is newer than this tcplens reads (%d)", path, version, SchemaVersion)
	}
	return &Reader{db: db, path: path, version: version}, nil
}

// Close closes the file.
func (r *Reader) Close() error { return r.db.Close() }

// Path returns the file name.
func (r *Reader) Path() string { return r.path }

func (r *Reader) wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("read %s: %w", r.path, err)
}

// Meta returns the recording's descriptive keys.
func (r *Reader) Meta(ctx context.Context) (map[string]string, error) {
	rows, err := r.db.QueryContext(ctx, "SELECT key, value FROM meta")
	if err != nil {
		return nil, r.wrap(err)
	}
	defer rows.Close()
	m := make(map[string]string)
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, r.wrap(err)
		}
		m[k] = v
	}
	return m, r.wrap(rows.Err())
}

// Span returns the times of the first and last sample (zero if none).
func (r *Reader) Span(ctx context.Context) (first, last time.Time, n int, err error) {
	var lo, hi sql.NullInt64
	if err = r.db.QueryRowContext(ctx, "SELECT min(t), max(t), count(*) FROM samples").Scan(&lo, &hi, &n); err != nil {
		return first, last, 0, r.wrap(err)
	}
	if lo.Valid {
		first, last = time.UnixMilli(lo.Int64), time.UnixMilli(hi.Int64)
	}
	return first, last, n, nil
}

// Sample is one recorded sample's aggregates.
type Sample struct {
	ID        int64               `json:"id"`
	Time      time.Time           `json:"time"`
	Took      time.Duration       `json:"-"`
	Total     int                 `json:"total"`
	States    analyze.StateCounts `json:"states"`
	PortRange int                 `json:"port_range"`
}

// Samples returns the samples in w, oldest first.
func (r *Reader) Samples(ctx context.Context, w Window) ([]Sample, error) {
	return query(ctx, r, w, `SELECT id, t, took_us, total, `+strings.Join(stateColumns, ", ")+`, port_range
		FROM samples WHERE t >= ? AND t <= ? ORDER BY id`, func(rows *sql.Rows) (Sample, error) {
		var s Sample
		var t, took int64
		dst := []any{&s.ID, &t, &took, &s.Total}
		for _, st := range sockdiag.AllStates() {
			dst = append(dst, &s.States[st])
		}
		dst = append(dst, &s.PortRange)
		err := rows.Scan(dst...)
		s.Time, s.Took = time.UnixMilli(t), time.Duration(took)*time.Microsecond
		return s, err
	})
}

// Budget is one destination's port budget in one sample.
type Budget struct {
	SampleID int64     `json:"sample_id"`
	Time     time.Time `json:"time"`
	Rank     int       `json:"rank"`
	Src      string    `json:"src"`
	Dst      string    `json:"dst"`
	DstPort  int       `json:"dst_port"`
	InUse    int       `json:"in_use"`
	TimeWait int       `json:"time_wait"`
}

// Budgets returns the recorded port budgets in w.
func (r *Reader) Budgets(ctx context.Context, w Window) ([]Budget, error) {
	return query(ctx, r, w, `SELECT b.sample_id, s.t, b.rank, b.src, b.dst, b.dport, b.in_use, b.time_wait
		FROM budgets b JOIN samples s ON s.id = b.sample_id WHERE s.t >= ? AND s.t <= ? ORDER BY b.sample_id, b.rank`, func(rows *sql.Rows) (Budget, error) {
		var b Budget
		var t int64
		err := rows.Scan(&b.SampleID, &t, &b.Rank, &b.Src, &b.Dst, &b.DstPort, &b.InUse, &b.TimeWait)
		b.Time = time.UnixMilli(t)
		return b, err
	})
}

// CounterDelta is one counter's increase since the sample before.
type CounterDelta struct {
	SampleID int64     `json:"sample_id"`
	Time     time.Time `json:"time"`
	Name     string    `json:"name"`
	Delta    int64     `json:"delta"`
}

// CounterDeltas returns the non-zero counter deltas in w.
func (r *Reader) CounterDeltas(ctx context.Context, w Window) ([]CounterDelta, error) {
	return query(ctx, r, w, `SELECT c.sample_id, s.t, c.name, c.delta
		FROM counters c JOIN samples s ON s.id = c.sample_id WHERE s.t >= ? AND s.t <= ? ORDER BY c.sample_id, c.name`, func(rows *sql.Rows) (CounterDelta, error) {
		var c CounterDelta
		var t int64
		err := rows.Scan(&c.SampleID, &t, &c.Name, &c.Delta)
		c.Time = time.UnixMilli(t)
		return c, err
	})
}

// Churn is one destination's churn in one sample interval.
type Churn struct {
	SampleID int64     `json:"sample_id"`
	Time     time.Time `json:"time"`
	ChurnRow
}

// Churn returns the recorded churn rows in w (destroy events per top
// destination and sample).
func (r *Reader) Churn(ctx context.Context, w Window) ([]Churn, error) {
	return query(ctx, r, w, `SELECT c.sample_id, s.t, c.side, c.dst, c.closed, c.per_s, c.lifetime_p50_ms, c.lifetime_p99_ms, c.bytes, c.retrans
		FROM churn c JOIN samples s ON s.id = c.sample_id WHERE s.t >= ? AND s.t <= ? ORDER BY c.sample_id, c.rank`, func(rows *sql.Rows) (Churn, error) {
		var c Churn
		var t int64
		err := rows.Scan(&c.SampleID, &t, &c.Side, &c.Dst, &c.Closed, &c.PerS, &c.LifetimeP50Ms, &c.LifetimeP99Ms, &c.Bytes, &c.Retrans)
		c.Time = time.UnixMilli(t)
		return c, err
	})
}

// Finding is one episode of a finding: the same rule about the same
// subjects in consecutive samples. Its fields are those of the worst
// sample (the first one at the highest severity).
type Finding struct {
	ID          int64            `json:"episode"`
	Rule        string           `json:"id"`
	Severity    doctor.Severity  `json:"severity"`
	Title       string           `json:"title"`
	Subjects    []doctor.Subject `json:"subjects"`
	Evidence    map[string]any   `json:"evidence"`
	Explanation string           `json:"explanation"`
	Fix         []string         `json:"fix"`
	First       time.Time        `json:"first"`
	Last        time.Time        `json:"last"`
	Samples     int              `json:"samples"`
}

// Findings returns the episodes that overlap w, in order of start.
func (r *Reader) Findings(ctx context.Context, w Window) ([]Finding, error) {
	return query(ctx, r, w, `SELECT id, rule, severity, title, subjects, evidence, explanation, fix, first_t, last_t, samples
		FROM findings WHERE last_t >= ? AND first_t <= ? ORDER BY first_t, id`, func(rows *sql.Rows) (Finding, error) {
		var f Finding
		var sev int
		var subj, ev, fix string
		var first, last int64
		if err := rows.Scan(&f.ID, &f.Rule, &sev, &f.Title, &subj, &ev, &f.Explanation, &fix, &first, &last, &f.Samples); err != nil {
			return f, err
		}
		f.Severity = doctor.Severity(sev)
		f.First, f.Last = time.UnixMilli(first), time.UnixMilli(last)
		if err := errors.Join(json.Unmarshal([]byte(subj), &f.Subjects), json.Unmarshal([]byte(ev), &f.Evidence),
			json.Unmarshal([]byte(fix), &f.Fix)); err != nil {
			return f, fmt.Errorf("finding %d: %w", f.ID, err)
		}
		return f, nil
	})
}

// Capture describes one trigger capture.
type Capture struct {
	ID        int64     `json:"id"`
	Time      time.Time `json:"time"` // the first trigger
	First     time.Time `json:"first"`
	Last      time.Time `json:"last"`
	Reasons   []Reason  `json:"reasons"`
	Snapshots int       `json:"snapshots"`
	// SuppressedBefore counts triggers the rate limit refused between the
	// previous capture and this one.
	SuppressedBefore int `json:"suppressed_before"`
}

const captureCols = "id, t, first_t, last_t, reasons, snapshots, suppressed_before"

func scanCapture(sc interface{ Scan(...any) error }) (Capture, error) {
	var c Capture
	var t, first, last int64
	var reasons string
	if err := sc.Scan(&c.ID, &t, &first, &last, &reasons, &c.Snapshots, &c.SuppressedBefore); err != nil {
		return c, err
	}
	c.Time, c.First, c.Last = time.UnixMilli(t), time.UnixMilli(first), time.UnixMilli(last)
	if err := json.Unmarshal([]byte(reasons), &c.Reasons); err != nil {
		return c, fmt.Errorf("capture %d: %w", c.ID, err)
	}
	return c, nil
}

// Captures lists the captures that overlap w.
func (r *Reader) Captures(ctx context.Context, w Window) ([]Capture, error) {
	return query(ctx, r, w, "SELECT "+captureCols+" FROM captures WHERE last_t >= ? AND first_t <= ? ORDER BY id",
		func(rows *sql.Rows) (Capture, error) { return scanCapture(rows) })
}

// query runs q, whose two parameters are w's bounds in Unix ms, and turns
// every row into a T with scan.
func query[T any](ctx context.Context, r *Reader, w Window, q string, scan func(*sql.Rows) (T, error)) ([]T, error) {
	lo, hi := w.bounds()
	rows, err := r.db.QueryContext(ctx, q, lo, hi)
	if err != nil {
		return nil, r.wrap(err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, r.wrap(err)
		}
		out = append(out, v)
	}
	return out, r.wrap(rows.Err())
}

// CaptureDetail is a capture with its snapshots, oldest first.
type CaptureDetail struct {
	Capture
	Snaps []*Captured `json:"snapshots_detail"`
}

// ErrNoCapture is returned for an unknown capture id.
var ErrNoCapture = errors.New("no such capture")

// Capture reads one capture with all its snapshots.
func (r *Reader) Capture(ctx context.Context, id int64) (*CaptureDetail, error) {
	c, err := scanCapture(r.db.QueryRowContext(ctx, "SELECT "+captureCols+" FROM captures WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("capture %d: %w", id, ErrNoCapture)
	}
	if err != nil {
		return nil, r.wrap(err)
	}
	snaps, err := r.CaptureSnaps(ctx, id)
	if err != nil {
		return nil, err
	}
	return &CaptureDetail{Capture: c, Snaps: snaps}, nil
}

// CaptureSnaps returns the snapshots of capture id, oldest first.
func (r *Reader) CaptureSnaps(ctx context.Context, id int64) ([]*Captured, error) {
	rows, err := r.db.QueryContext(ctx, "SELECT data FROM capture_snaps WHERE capture_id = ? ORDER BY t, id", id)
	if err != nil {
		return nil, r.wrap(err)
	}
	defer rows.Close()
	var out []*Captured
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return nil, r.wrap(err)
		}
		snap, err := decodeCaptured(data)
		if err != nil {
			return nil, r.wrap(fmt.Errorf("capture %d: %w", id, err))
		}
		out = append(out, snap)
	}
	return out, r.wrap(rows.Err())
}

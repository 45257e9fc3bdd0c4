package record

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/tcplens/tcplens/internal/doctor"
	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/internal/watch"
)

// Counters are the kernel counters whose deltas are recorded: the ones the
// doctor rules read, plus the usual suspects of connection trouble.
var Counters = []string{
	"Tcp.ActiveOpens", "Tcp.PassiveOpens", "Tcp.AttemptFails", "Tcp.EstabResets",
	"Tcp.RetransSegs", "Tcp.OutRsts", "Tcp.InErrs",
	"TcpExt.ListenOverflows", "TcpExt.ListenDrops", "TcpExt.TCPTimeWaitOverflow",
	"TcpExt.TW", "TcpExt.TCPAbortOnTimeout", "TcpExt.TCPAbortOnData",
	"TcpExt.TCPAbortOnClose", "TcpExt.TCPAbortOnMemory", "TcpExt.SyncookiesSent",
	"TcpExt.TCPReqQFullDrop", "TcpExt.TCPSynRetrans",
}

// Options configure a Recorder.
type Options struct {
	// Retention: data older than this (relative to the newest sample) is
	// deleted. 0 keeps everything that fits in MaxSize.
	Retention time.Duration
	// MaxSize bounds the database plus its WAL, in bytes (at least MinSize).
	MaxSize int64
	// Top is how many destinations' port budgets (and churn) are kept per
	// sample.
	Top      int
	Triggers Triggers
}

// MinSize is the smallest MaxSize accepted.
const MinSize = 1 << 20

// Recorder writes samples to a recording. It is not safe for concurrent use.
type Recorder struct {
	db   *sql.DB
	lock *os.File
	opt  Options
	path string

	pageSize int64
	dbBudget int64 // bytes of database pages allowed; the rest is for the WAL

	// ring holds the last Before samples, for the "before" snapshots.
	ring     []ringEntry
	open     *openCapture
	tokens   bucket
	dropped  int // triggers refused by the rate limit since the last capture
	episodes map[string]episode
	// triggered: the last sample had a trigger reason.
	triggered bool
	// lastSample is the id of the last sample stored.
	lastSample int64

	stats Stats
}

type ringEntry struct {
	id   int64
	snap *snapshot.Snapshot
}

type openCapture struct {
	id        int64
	remaining int // "after" snapshots still to take
	snaps     int
	reasons   []Reason
}

type episode struct {
	row        int64
	lastSample int64
	severity   doctor.Severity
}

// Stats count what a Recorder did.
type Stats struct {
	Samples   int `json:"samples"`
	Ticks     int `json:"ticks"`
	Captures  int `json:"captures"`
	Snapshots int `json:"captured_snapshots"`
	// Suppressed counts triggers the rate limit refused.
	Suppressed int `json:"suppressed_triggers"`
	// Pruned counts the times old data was deleted to stay under MaxSize.
	Pruned int `json:"size_prunes"`
}

// OptionError is what Open returns for options out of range.
type OptionError struct{ Err error }

func (e *OptionError) Error() string { return e.Err.Error() }
func (e *OptionError) Unwrap() error { return e.Err }

func (opt *Options) validate() error {
	switch {
	case opt.MaxSize < MinSize:
		return fmt.Errorf("max size %d bytes: must be at least %d (1MiB)", opt.MaxSize, MinSize)
	case opt.Retention < 0:
		return fmt.Errorf("retention %s: must be 0 (size only) or positive", opt.Retention)
	case opt.Top < 1:
		return fmt.Errorf("top %d: must be at least 1", opt.Top)
	}
	return opt.Triggers.validate()
}

// Open opens or creates the recording at path for writing. Only one
// Recorder may write a file at a time.
func Open(ctx context.Context, path string, opt Options) (*Recorder, error) {
	if err := opt.validate(); err != nil {
		return nil, &OptionError{err}
	}
	lock, err := lockFile(path)
	if err != nil {
		return nil, err
	}
	db, err := openWriter(ctx, path)
	if err != nil {
		lock.Close()
		return nil, err
	}
	r := &Recorder{db: db, lock: lock, opt: opt, path: path, episodes: make(map[string]episode)}
	if err := r.sizeSetup(ctx); err != nil {
		r.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return r, nil
}

// sizeSetup splits MaxSize between the database pages (3/4) and the WAL
// (1/4): the WAL is checkpointed at half its share and truncated back to
// its share after each checkpoint.
func (r *Recorder) sizeSetup(ctx context.Context) error {
	if err := r.db.QueryRowContext(ctx, "PRAGMA page_size").Scan(&r.pageSize); err != nil {
		return err
	}
	wal := r.opt.MaxSize / 4
	r.dbBudget = r.opt.MaxSize - wal
	pages := max(8, wal/r.pageSize/2)
	for _, p := range []string{
		fmt.Sprintf("PRAGMA journal_size_limit=%d", wal),
		fmt.Sprintf("PRAGMA wal_autocheckpoint=%d", pages),
	} {
		if _, err := r.db.ExecContext(ctx, p); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	// Apply the bound at once: the file may come from a run with a larger
	// --max-size.
	return r.enforceSize(ctx)
}

// Path returns the file name.
func (r *Recorder) Path() string { return r.path }

// Stats returns what the recorder did so far.
func (r *Recorder) Stats() Stats { return r.stats }

// Close closes the file. A capture still collecting "after" snapshots
// keeps the ones it has.
func (r *Recorder) Close() error {
	err := r.db.Close()
	if r.lock != nil {
		if e := r.lock.Close(); err == nil {
			err = e
		}
	}
	return err
}

// SetMeta stores a key (netns, interval, host, ...) describing the
// recording.
func (r *Recorder) SetMeta(ctx context.Context, key, value string) error {
	_, err := r.db.ExecContext(ctx, "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", key, value)
	if err != nil {
		return fmt.Errorf("write %s: %w", r.path, err)
	}
	return nil
}

// Record stores one sample in one transaction: when it returns nil the
// sample is durable against a crash of this process.
func (r *Recorder) Record(ctx context.Context, s *watch.Sample) error {
	if err := r.record(ctx, s); err != nil {
		return fmt.Errorf("record to %s: %w", r.path, err)
	}
	if err := r.enforceSize(ctx); err != nil {
		return fmt.Errorf("keep %s under %d bytes: %w", r.path, r.opt.MaxSize, err)
	}
	return nil
}

func (r *Recorder) record(ctx context.Context, s *watch.Sample) error {
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	now := s.Time.UnixMilli()
	snap := s.Snap

	args := []any{now, snap.Took.Microseconds(), snap.Total()}
	for _, st := range sockdiag.AllStates() {
		args = append(args, snap.States[st])
	}
	args = append(args, snap.Sysctls.EphemeralPorts())
	res, err := tx.ExecContext(ctx, `INSERT INTO samples(t, took_us, total, `+strings.Join(stateColumns, ", ")+`, port_range)
		VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...)
	if err != nil {
		return fmt.Errorf("insert sample: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return err
	}

	for i, b := range clip(s.Budgets, r.opt.Top) {
		if _, err := tx.ExecContext(ctx, "INSERT INTO budgets VALUES(?, ?, ?, ?, ?, ?, ?)",
			id, i, b.Src.String(), b.Dst.String(), b.DstPort, b.InUse, b.TimeWait()); err != nil {
			return fmt.Errorf("insert budget: %w", err)
		}
	}
	if s.Prev != nil {
		deltas := counterDeltas(s.Prev.Counters, snap.Counters)
		for _, name := range Counters { // in a stable order
			if d, ok := deltas[name]; ok {
				if _, err := tx.ExecContext(ctx, "INSERT INTO counters VALUES(?, ?, ?)", id, name, d); err != nil {
					return fmt.Errorf("insert counter: %w", err)
				}
			}
		}
	}
	for i, c := range churnRows(s, r.opt.Top) {
		if _, err := tx.ExecContext(ctx, "INSERT INTO churn VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
			id, i, c.Side, c.Dst, c.Closed, c.PerS, c.LifetimeP50Ms, c.LifetimeP99Ms, c.Bytes, c.Retrans); err != nil {
			return fmt.Errorf("insert churn: %w", err)
		}
	}
	if s.Churn != nil && s.Churn.Dropped > 0 {
		if _, err := tx.ExecContext(ctx, "INSERT INTO counters VALUES(?, ?, ?)", id, ChurnDroppedCounter, int64(s.Churn.Dropped)); err != nil {
			return fmt.Errorf("insert dropped destroy events: %w", err)
		}
	}

	episodes, reasons, err := r.findings(ctx, tx, s, id)
	if err != nil {
		return err
	}
	if s.Prev != nil {
		reasons = append(reasons, r.opt.Triggers.jumps(s.Time, &s.Prev.States, &snap.States)...)
	}
	ring, open, tokens, dropped := r.ring, r.open, r.tokens, r.dropped
	stats := r.stats
	if open, err = r.capture(ctx, tx, s, id, reasons, open, &tokens, &dropped, &stats); err != nil {
		return err
	}
	if err := r.retain(ctx, tx, s.Time); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	// Memory follows the file only once the file has the sample.
	if r.opt.Triggers.Before > 0 {
		ring = append(ring, ringEntry{id, snap})
		if len(ring) > r.opt.Triggers.Before {
			ring = slices.Delete(ring, 0, len(ring)-r.opt.Triggers.Before)
		}
	}
	r.ring, r.open, r.tokens, r.dropped, r.episodes = ring, open, tokens, dropped, episodes
	r.triggered = len(reasons) > 0
	r.lastSample = id
	r.stats = stats
	r.stats.Samples++
	return nil
}

func clip[T any](s []T, n int) []T { return s[:min(len(s), n)] }

// findingKey identifies "the same finding" across samples: the rule and the
// names of its subjects (numbers and titles change from sample to sample).
func findingKey(f *doctor.Finding) string {
	names := make([]string, 0, len(f.Subjects))
	for _, s := range f.Subjects {
		names = append(names, s.Kind+" "+s.Name)
	}
	slices.Sort(names)
	return f.ID + "\x00" + strings.Join(names, "\x00")
}

// findings extends the episodes that continue from the previous sample and
// starts the others. A new episode at or above the trigger severity, or one
// that escalates to a higher severity at or above it, is a trigger.
func (r *Recorder) findings(ctx context.Context, tx *sql.Tx, s *watch.Sample, id int64) (map[string]episode, []Reason, error) {
	next := make(map[string]episode)
	var reasons []Reason
	if s.Report == nil {
		return next, nil, nil
	}
	t := s.Time.UnixMilli()
	for i := range s.Report.Findings {
		f := &s.Report.Findings[i]
		key := findingKey(f)
		if _, dup := next[key]; dup {
			continue // the same subjects twice in one report: keep the first (worst)
		}
		ep, ok := r.episodes[key]
		if ok && ep.lastSample == id-1 {
			var n int64
			if f.Severity > ep.severity {
				res, err := tx.ExecContext(ctx, `UPDATE findings SET last_t=?, last_sample=?, samples=samples+1,
					severity=?, title=?, subjects=?, evidence=?, explanation=?, fix=? WHERE id=?`,
					append([]any{t, id, int(f.Severity), f.Title}, append(findingJSON(f), ep.row)...)...)
				if err != nil {
					return nil, nil, fmt.Errorf("update finding: %w", err)
				}
				n, _ = res.RowsAffected()
				if f.Severity >= r.opt.Triggers.Severity {
					reasons = append(reasons, findingReason(s.Time, f))
				}
				ep.severity = f.Severity
			} else {
				res, err := tx.ExecContext(ctx, "UPDATE findings SET last_t=?, last_sample=?, samples=samples+1 WHERE id=?", t, id, ep.row)
				if err != nil {
					return nil, nil, fmt.Errorf("update finding: %w", err)
				}
				n, _ = res.RowsAffected()
			}
			if n == 1 {
				ep.lastSample = id
				next[key] = ep
				continue
			}
			// The row was pruned under the episode: start a new one.
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO findings(rule, key, severity, title, subjects, evidence, explanation, fix,
			first_t, last_t, first_sample, last_sample, samples) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)`,
			append([]any{f.ID, key, int(f.Severity), f.Title}, append(findingJSON(f), t, t, id, id)...)...)
		if err != nil {
			return nil, nil, fmt.Errorf("insert finding: %w", err)
		}
		row, err := res.LastInsertId()
		if err != nil {
			return nil, nil, err
		}
		next[key] = episode{row: row, lastSample: id, severity: f.Severity}
		if f.Severity >= r.opt.Triggers.Severity {
			reasons = append(reasons, findingReason(s.Time, f))
		}
	}
	return next, reasons, nil
}

func findingReason(t time.Time, f *doctor.Finding) Reason {
	return Reason{Time: t, Kind: "finding", Finding: f.ID, Severity: f.Severity, Title: f.Title}
}

// findingJSON returns subjects, evidence, explanation and fix as stored.
func findingJSON(f *doctor.Finding) []any {
	j := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			// Evidence holds numbers and strings; say so rather than fail
			// the sample if a rule ever puts something else there.
			return fmt.Sprintf("%q", "unencodable: "+err.Error())
		}
		return string(b)
	}
	subjects := f.Subjects
	if subjects == nil {
		subjects = []doctor.Subject{}
	}
	fix := f.Fix
	if fix == nil {
		fix = []string{}
	}
	return []any{j(subjects), j(f.Evidence), f.Explanation, j(fix)}
}

// capture adds this sample's snapshot to an open capture, or opens one when
// there are reasons and the rate limit has a token. It returns the capture
// still open after this sample.
func (r *Recorder) capture(ctx context.Context, tx *sql.Tx, s *watch.Sample, id int64, reasons []Reason,
	open *openCapture, tokens *bucket, dropped *int, stats *Stats) (*openCapture, error) {
	tr := &r.opt.Triggers
	t := s.Time.UnixMilli()
	if open != nil {
		role := "after"
		if len(reasons) > 0 {
			role = "trigger"
			open.reasons = append(slices.Clone(open.reasons), reasons...)
			open.remaining = max(open.remaining, tr.After+1)
		}
		if err := r.addSnap(ctx, tx, open.id, id, s.Snap, role); err != nil {
			return nil, err
		}
		stats.Snapshots++
		o := *open
		o.snaps++
		o.remaining--
		rj, _ := json.Marshal(o.reasons)
		res, err := tx.ExecContext(ctx, "UPDATE captures SET last_t=?, snapshots=?, reasons=? WHERE id=?", t, o.snaps, string(rj), o.id)
		if err != nil {
			return nil, fmt.Errorf("update capture: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 || o.remaining <= 0 || o.snaps >= tr.MaxSnapshots {
			return nil, nil
		}
		return &o, nil
	}
	if len(reasons) == 0 {
		return nil, nil
	}
	if !tokens.take(tr, s.Time) {
		*dropped += len(reasons)
		stats.Suppressed += len(reasons)
		return nil, nil
	}
	first := t
	if len(r.ring) > 0 {
		first = r.ring[0].snap.Time.UnixMilli()
	}
	rj, _ := json.Marshal(reasons)
	res, err := tx.ExecContext(ctx, "INSERT INTO captures(t, first_t, last_t, reasons, snapshots, suppressed_before) VALUES(?, ?, ?, ?, ?, ?)",
		t, first, t, string(rj), len(r.ring)+1, *dropped)
	if err != nil {
		return nil, fmt.Errorf("insert capture: %w", err)
	}
	cid, err := res.LastInsertId()
	if err != nil {
		return nil, err
	}
	for _, e := range r.ring {
		if err := r.addSnap(ctx, tx, cid, e.id, e.snap, "before"); err != nil {
			return nil, err
		}
	}
	if err := r.addSnap(ctx, tx, cid, id, s.Snap, "trigger"); err != nil {
		return nil, err
	}
	*dropped = 0
	stats.Captures++
	stats.Snapshots += len(r.ring) + 1
	if tr.After == 0 {
		return nil, nil
	}
	return &openCapture{id: cid, remaining: tr.After, snaps: len(r.ring) + 1, reasons: reasons}, nil
}

// addSnap stores one captured snapshot. A snapshot whose compressed form
// would take more than 1/16 of MaxSize keeps fewer sockets, so one capture
// can never crowd out the rest of the recording.
func (r *Recorder) addSnap(ctx context.Context, tx *sql.Tx, cid, sid int64, snap *snapshot.Snapshot, role string) error {
	limit := r.opt.MaxSize / 16
	n := r.opt.Triggers.MaxSockets
	for {
		c := capture(snap, role, n)
		data, err := c.encode()
		if err != nil {
			return fmt.Errorf("encode snapshot: %w", err)
		}
		if int64(len(data)) > limit && n > 1 {
			n = max(1, n*int(limit)/len(data)*9/10)
			continue
		}
		_, err = tx.ExecContext(ctx, "INSERT INTO capture_snaps(capture_id, sample_id, t, role, sockets, omitted, data) VALUES(?, ?, ?, ?, ?, ?, ?)",
			cid, sid, snap.Time.UnixMilli(), role, len(c.Sockets), c.Omitted, data)
		if err != nil {
			return fmt.Errorf("insert captured snapshot: %w", err)
		}
		return nil
	}
}

// retain deletes what is older than the retention, measured from the
// sample being written.
func (r *Recorder) retain(ctx context.Context, tx *sql.Tx, now time.Time) error {
	if r.opt.Retention <= 0 {
		return nil
	}
	return deleteBefore(ctx, tx, now.Add(-r.opt.Retention).UnixMilli())
}

// deleteBefore deletes every sample, finding episode and capture that
// ended before t (Unix ms).
func deleteBefore(ctx context.Context, tx *sql.Tx, t int64) error {
	var last sql.NullInt64
	if err := tx.QueryRowContext(ctx, "SELECT max(id) FROM samples WHERE t < ?", t).Scan(&last); err != nil {
		return err
	}
	var stmts []string
	var args [][]any
	if last.Valid {
		for _, table := range []string{"budgets", "counters", "churn"} {
			stmts = append(stmts, "DELETE FROM "+table+" WHERE sample_id <= ?")
			args = append(args, []any{last.Int64})
		}
		stmts = append(stmts, "DELETE FROM samples WHERE id <= ?")
		args = append(args, []any{last.Int64})
	}
	stmts = append(stmts,
		"DELETE FROM ticks WHERE t < ?",
		"DELETE FROM findings WHERE last_t < ?",
		"DELETE FROM capture_snaps WHERE capture_id IN (SELECT id FROM captures WHERE last_t < ?)",
		"DELETE FROM captures WHERE last_t < ?")
	args = append(args, []any{t}, []any{t}, []any{t}, []any{t})
	for i, q := range stmts {
		if _, err := tx.ExecContext(ctx, q, args[i]...); err != nil {
			return fmt.Errorf("delete old data: %w", err)
		}
	}
	return nil
}

// enforceSize deletes the oldest data, an eighth of the recorded time span
// at a time, until the live pages take at most 70% of the database's share
// of MaxSize, then returns the freed pages to the file system and
// truncates the WAL. It does nothing while the pages are under 90%.
func (r *Recorder) enforceSize(ctx context.Context) error {
	pages, free, err := r.pages(ctx)
	if err != nil {
		return err
	}
	if pages*r.pageSize <= r.dbBudget*9/10 {
		return nil
	}
	for i := 0; i < 32 && (pages-free)*r.pageSize > r.dbBudget*7/10; i++ {
		var oldest, newest sql.NullInt64
		err := r.db.QueryRowContext(ctx, `SELECT min(t), max(t) FROM (
			SELECT t FROM samples UNION ALL SELECT t FROM ticks UNION ALL SELECT first_t FROM captures UNION ALL SELECT first_t FROM findings)`).Scan(&oldest, &newest)
		if err != nil {
			return err
		}
		if !oldest.Valid {
			break
		}
		cut := oldest.Int64 + (newest.Int64-oldest.Int64)/8 + 1
		tx, err := r.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := deleteBefore(ctx, tx, cut); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		if pages, free, err = r.pages(ctx); err != nil {
			return err
		}
	}
	// Checkpoint before and after the vacuum so that neither the deletes
	// nor the page moves pile up in the WAL. A reader can hold a checkpoint
	// back; the next one catches up.
	for _, q := range []string{"PRAGMA wal_checkpoint(TRUNCATE)", "PRAGMA incremental_vacuum", "PRAGMA wal_checkpoint(TRUNCATE)"} {
		rows, err := r.db.QueryContext(ctx, q)
		if err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
		for rows.Next() {
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	r.stats.Pruned++
	return nil
}

func (r *Recorder) pages(ctx context.Context) (pages, free int64, err error) {
	if err = r.db.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		return
	}
	err = r.db.QueryRowContext(ctx, "PRAGMA freelist_count").Scan(&free)
	return
}

// Check runs PRAGMA integrity_check on a recording and returns an error
// unless SQLite answers "ok".
func Check(ctx context.Context, path string) error {
	rd, err := OpenReader(ctx, path)
	if err != nil {
		return err
	}
	defer rd.Close()
	rows, err := rd.db.QueryContext(ctx, "PRAGMA integrity_check")
	if err != nil {
		return fmt.Errorf("integrity check of %s: %w", path, err)
	}
	defer rows.Close()
	var msgs []string
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return err
		}
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(msgs) != 1 || msgs[0] != "ok" {
		return errors.New("integrity check of " + path + ": " + strings.Join(msgs, "; "))
	}
	return nil
}

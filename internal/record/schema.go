package record

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// SchemaVersion is stored in PRAGMA user_version. Bump it, and add a
// migration in migrate, whenever a table changes.
const SchemaVersion = 2

// schema creates version 1; migrations bring it to SchemaVersion. Times are Unix milliseconds. Every table but
// meta is keyed or indexed by time or sample id, so that deleting the oldest
// data is a range delete.
const schema = `
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;

CREATE TABLE samples(
	id INTEGER PRIMARY KEY,
	t INTEGER NOT NULL,
	took_us INTEGER NOT NULL,
	total INTEGER NOT NULL,
	established INTEGER NOT NULL, syn_sent INTEGER NOT NULL, syn_recv INTEGER NOT NULL,
	fin_wait1 INTEGER NOT NULL, fin_wait2 INTEGER NOT NULL, time_wait INTEGER NOT NULL,
	close INTEGER NOT NULL, close_wait INTEGER NOT NULL, last_ack INTEGER NOT NULL,
	listen INTEGER NOT NULL, closing INTEGER NOT NULL, new_syn_recv INTEGER NOT NULL,
	port_range INTEGER NOT NULL
);
CREATE INDEX samples_t ON samples(t);

-- The ephemeral port budget of the top destinations (analyze.PortBudgets).
CREATE TABLE budgets(
	sample_id INTEGER NOT NULL, rank INTEGER NOT NULL,
	src TEXT NOT NULL, dst TEXT NOT NULL, dport INTEGER NOT NULL,
	in_use INTEGER NOT NULL, time_wait INTEGER NOT NULL,
	PRIMARY KEY(sample_id, rank)
) WITHOUT ROWID;

-- Non-zero deltas of the counters in Counters, since the sample before.
CREATE TABLE counters(
	sample_id INTEGER NOT NULL, name TEXT NOT NULL, delta INTEGER NOT NULL,
	PRIMARY KEY(sample_id, name)
) WITHOUT ROWID;

-- Connection churn of the top destinations, from sock_diag destroy events.
-- Filled by churnRows (see churn.go) from destroy events.
CREATE TABLE churn(
	sample_id INTEGER NOT NULL, rank INTEGER NOT NULL, side TEXT NOT NULL, dst TEXT NOT NULL,
	closed INTEGER NOT NULL, per_s REAL NOT NULL,
	lifetime_p50_ms REAL NOT NULL, lifetime_p99_ms REAL NOT NULL,
	bytes INTEGER NOT NULL, retrans INTEGER NOT NULL,
	PRIMARY KEY(sample_id, rank)
) WITHOUT ROWID;

-- One row per finding episode: the same rule about the same subjects in
-- consecutive samples extends the row instead of adding one.
CREATE TABLE findings(
	id INTEGER PRIMARY KEY,
	rule TEXT NOT NULL, key TEXT NOT NULL,
	severity INTEGER NOT NULL, title TEXT NOT NULL,
	subjects TEXT NOT NULL, evidence TEXT NOT NULL, explanation TEXT NOT NULL, fix TEXT NOT NULL,
	first_t INTEGER NOT NULL, last_t INTEGER NOT NULL,
	first_sample INTEGER NOT NULL, last_sample INTEGER NOT NULL, samples INTEGER NOT NULL
);
CREATE INDEX findings_last_t ON findings(last_t);

-- A capture: the full snapshots around a trigger.
CREATE TABLE captures(
	id INTEGER PRIMARY KEY,
	t INTEGER NOT NULL, first_t INTEGER NOT NULL, last_t INTEGER NOT NULL,
	reasons TEXT NOT NULL, snapshots INTEGER NOT NULL,
	suppressed_before INTEGER NOT NULL
);
CREATE INDEX captures_last_t ON captures(last_t);

-- One captured snapshot: gzip'd JSON of a Captured value.
CREATE TABLE capture_snaps(
	id INTEGER PRIMARY KEY,
	capture_id INTEGER NOT NULL, sample_id INTEGER NOT NULL, t INTEGER NOT NULL,
	role TEXT NOT NULL, sockets INTEGER NOT NULL, omitted INTEGER NOT NULL,
	data BLOB NOT NULL
);
CREATE INDEX capture_snaps_capture ON capture_snaps(capture_id);
`

// migrations[v] brings a recording from version v+1 to v+2.
var migrations = []string{
	// 2: one row per interval, whether or not a full sample was taken. On a
	// large table record spaces full samples out to stay in its CPU budget;
	// these rows keep every interval: the totals the kernel keeps without a
	// socket dump (/proc/net/sockstat{,6}, Tcp CurrEstab), the counter
	// deltas since the tick before (JSON object of the non-zero ones) and
	// the connections closed in the interval (destroy events; NULL when
	// churn is off) with the events lost in it.
	`CREATE TABLE ticks(
	id INTEGER PRIMARY KEY,
	t INTEGER NOT NULL,
	sample_id INTEGER,
	time_wait INTEGER NOT NULL, in_use INTEGER NOT NULL, orphan INTEGER NOT NULL, curr_estab INTEGER NOT NULL,
	closed INTEGER, closed_dropped INTEGER NOT NULL,
	counters TEXT NOT NULL
);
CREATE INDEX ticks_t ON ticks(t);`,
}

// stateColumns are the samples columns in kernel state order (1..12).
var stateColumns = []string{
	"established", "syn_sent", "syn_recv", "fin_wait1", "fin_wait2", "time_wait",
	"close", "close_wait", "last_ack", "listen", "closing", "new_syn_recv",
}

// dsn builds a modernc.org/sqlite data source name. busy_timeout lets a
// reader wait out a checkpoint instead of failing.
func dsn(path string, pragmas ...string) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// openWriter opens (creating if needed) the database, sets it up for
// recording and brings the schema to SchemaVersion.
func openWriter(ctx context.Context, path string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", dsn(path, "foreign_keys(0)"))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// One connection: the pragmas below hold per connection, and a single
	// writer never needs more.
	db.SetMaxOpenConns(1)
	if err := setup(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return db, nil
}

func setup(ctx context.Context, db *sql.DB) error {
	var version int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return notADatabase(err)
	}
	if version > SchemaVersion {
		return fmt.Errorf("recording has schema version %d; this tcplens reads up to %d (upgrade tcplens)", version, SchemaVersion)
	}
	if version == 0 {
		var n int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&n); err != nil {
			return notADatabase(err)
		}
		if n > 0 {
			return errors.New("not a tcplens recording (an SQLite database with other tables)")
		}
		// auto_vacuum must be chosen before the first table exists.
		if _, err := db.ExecContext(ctx, "PRAGMA auto_vacuum=INCREMENTAL"); err != nil {
			return err
		}
	}
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode); err != nil {
		return notADatabase(err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("could not switch to WAL mode (journal_mode is %s)", mode)
	}
	if _, err := db.ExecContext(ctx, "PRAGMA synchronous=NORMAL"); err != nil {
		return err
	}
	if version == SchemaVersion {
		return nil
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if version == 0 {
		if _, err := tx.ExecContext(ctx, schema); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
		version = 1
	}
	for ; version < SchemaVersion; version++ {
		if _, err := tx.ExecContext(ctx, migrations[version-1]); err != nil {
			return fmt.Errorf("upgrade recording to schema version %d: %w", version+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version=%d", SchemaVersion)); err != nil {
		return err
	}
	return tx.Commit()
}

// notADatabase turns SQLite's "file is not a database" into one clear line.
func notADatabase(err error) error {
	if strings.Contains(err.Error(), "not a database") {
		return errors.New("not a tcplens recording (not an SQLite database)")
	}
	return err
}

// lockFile takes an exclusive flock on the database file so that two
// recorders never interleave samples in one file. SQLite itself uses fcntl
// locks, which are independent of flock on Linux; the fd stays open for the
// recorder's life (closing any fd of the file would drop SQLite's fcntl
// locks). The kernel drops the flock when the process dies, kill -9 too.
func lockFile(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create directory for %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err // a *PathError: "open PATH: reason"
	}
	if err := flock(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: another tcplens record is writing to it (%w)", path, err)
	}
	return f, nil
}

// Package record is tcplens's flight recorder: one SQLite file (pure Go,
// modernc.org/sqlite) that stores, for every watch sample, the per-state
// counts, the ephemeral port budget of the top destinations, the deltas of
// the kernel counters doctor reads, doctor's findings (one row per episode,
// not per sample) and, when a trigger fires, full per-socket snapshots from
// just before to just after the moment.
//
// Durability. The file is in WAL mode with synchronous=NORMAL and each
// sample is one transaction. With WAL, a commit is complete once its frames
// are written to the -wal file; NORMAL skips only the fsync at commit, so a
// process crash or kill -9 loses nothing that was committed (the data is in
// the page cache, which the kernel writes out regardless of the process).
// Only power loss or a kernel crash can lose the last commits, and even
// then the file stays consistent (WAL checksums discard torn frames).
// FULL would add one fsync per sample, i.e. up to 10 per second at 100 ms,
// for protection against power loss the issue does not ask for. A kill -9
// therefore loses at most the sample being taken when it lands.
//
// Size. The file is bounded by Options.Retention and Options.MaxSize:
// auto_vacuum=INCREMENTAL lets deleted pages go back to the file system,
// the WAL is checkpointed and truncated well below MaxSize, and the oldest
// data (samples, findings, captures, in time order) is deleted first
// whenever the database pages pass their share of MaxSize.
//
// Cost. Loop takes a full sample (watch.Next: dump, doctor) every interval
// while that fits a CPU budget for the whole recorder, and spaces full
// samples out when it does not (a dump of 100,000 sockets alone costs
// ~30 ms of kernel time); a probe of the kernel's socket totals
// (/proc/net/sockstat, Tcp CurrEstab) still runs every interval, is stored
// as that interval's tick with the counter deltas and the destroy-event
// count, and forces a full sample when the totals jump.
//
// Reader opens a recording for `tcplens history` and `tcplens report`; it
// never writes and never touches the kernel.
package record

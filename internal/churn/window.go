package churn

import (
	"cmp"
	"encoding/json"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// Dest is where closed connections went. For Side Client (this host
// dialled) Addr is the remote address and port; for Side Server (the local
// port was listening) Addr is the local address and port, because the
// remote port is the client's ephemeral port and would make every close a
// destination of its own.
type Dest struct {
	Side snapshot.Side
	Addr netip.AddrPort
}

// Owner is the process that held a socket when a snapshot last saw it. PID
// 0 means unknown: the connection was never seen in a snapshot with owners,
// or nobody could be inspected.
type Owner struct {
	PID  int    `json:"pid"`
	Comm string `json:"comm"`
}

// Stats describe the connections closed in a window towards one destination,
// by one process, or in total.
type Stats struct {
	Closed    int
	PerSecond float64
	// Lifetime percentiles are lower bounds (see the package doc): a
	// connection first seen by a snapshot at t0 counts as destroy - t0; one
	// no snapshot saw counts as 0. Histogram buckets are 19% wide; the lower
	// edge is reported.
	LifetimeP50, LifetimeP90, LifetimeP99 time.Duration
	// LifetimeKnown counts closes whose connection a snapshot had seen.
	LifetimeKnown int
	// ShortLived counts closes of connections that no snapshot saw although
	// one was taken before: they lived less than the time since that
	// snapshot, i.e. at most about one interval. Sampling alone misses them.
	ShortLived int
	// BytesAcked and BytesReceived sum tcpi_bytes_acked and
	// tcpi_bytes_received at close (bytes_acked includes 1 for the SYN and 1
	// for an acked FIN).
	BytesAcked, BytesReceived uint64
	// Retransmits sums tcpi_total_retrans at close; RetransmittedConns counts
	// the connections with at least one.
	Retransmits        uint64
	RetransmittedConns int
}

// MarshalJSON writes snake_case names and durations in seconds.
func (s Stats) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Closed             int     `json:"closed"`
		PerSecond          float64 `json:"closed_per_s"`
		LifetimeP50        float64 `json:"lifetime_p50_s"`
		LifetimeP90        float64 `json:"lifetime_p90_s"`
		LifetimeP99        float64 `json:"lifetime_p99_s"`
		LifetimeKnown      int     `json:"lifetime_known"`
		ShortLived         int     `json:"short_lived"`
		BytesAcked         uint64  `json:"bytes_acked"`
		BytesReceived      uint64  `json:"bytes_received"`
		Retransmits        uint64  `json:"retransmits"`
		RetransmittedConns int     `json:"retransmitted_connections"`
	}{s.Closed, round3(s.PerSecond), s.LifetimeP50.Seconds(), s.LifetimeP90.Seconds(), s.LifetimeP99.Seconds(),
		s.LifetimeKnown, s.ShortLived, s.BytesAcked, s.BytesReceived, s.Retransmits, s.RetransmittedConns})
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// DestStats are the closes towards one destination.
type DestStats struct {
	Dest
	Stats
}

// MarshalJSON flattens the destination into the stats.
func (d DestStats) MarshalJSON() ([]byte, error) {
	return flatten(map[string]any{"side": d.Side.String(), "addr": d.Addr.String()}, d.Stats)
}

// ProcStats are the closes of one process's connections.
type ProcStats struct {
	Owner
	Stats
}

// MarshalJSON flattens the owner into the stats.
func (p ProcStats) MarshalJSON() ([]byte, error) {
	return flatten(map[string]any{"pid": p.PID, "comm": p.Comm}, p.Stats)
}

func flatten(head map[string]any, s Stats) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, v := range head {
		m[k] = v
	}
	return json.Marshal(m)
}

// Window is what a Listener saw between two Swaps.
type Window struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Total Stats     `json:"total"`
	// Destinations and Processes hold the busiest (most closes first), at
	// most Config.Top each; the rest is folded into the Other fields, so a
	// window's size is bounded whatever the host does.
	Destinations      []DestStats `json:"destinations"`
	OtherDestinations Stats       `json:"other_destinations"`
	Processes         []ProcStats `json:"processes"`
	OtherProcesses    Stats       `json:"other_processes"`
	// Dropped counts destroy events the kernel could not deliver because the
	// receive buffer was full: every number above is then a lower bound.
	// DroppedExact says it was read from the socket's drop counter; when
	// false it is the number of ENOBUFS errors, each of which stands for at
	// least one lost event.
	Dropped      uint64 `json:"dropped_events"`
	DroppedExact bool   `json:"dropped_exact"`
	// Overruns counts recvmsg calls that failed with ENOBUFS.
	Overruns int `json:"overruns"`
	// Unparsed counts messages that could not be parsed.
	Unparsed int `json:"unparsed"`
	// Observed says a snapshot had been passed to Observe before the window
	// ended, so lifetimes and owners could be known at all.
	Observed bool `json:"observed"`
}

// Duration is End - Start.
func (w *Window) Duration() time.Duration { return w.End.Sub(w.Start) }

// ClientRate returns the closes/s of connections this host dialled to dst.
// ok is false when the destination may be hidden in OtherDestinations, so
// the rate is not known; a destination with no close and nothing folded has
// rate 0 and ok true.
func (w *Window) ClientRate(dst netip.AddrPort) (rate float64, closed int, ok bool) {
	for i := range w.Destinations {
		d := &w.Destinations[i]
		if d.Side != snapshot.Server && d.Addr == dst {
			return d.PerSecond, d.Closed, true
		}
	}
	return 0, 0, w.OtherDestinations.Closed == 0
}

// ServerRate returns the closes/s of connections accepted on the listener
// at l; a wildcard listener address matches every local address on its
// port. ok is as for ClientRate.
func (w *Window) ServerRate(l netip.AddrPort) (rate float64, closed int, ok bool) {
	for i := range w.Destinations {
		d := &w.Destinations[i]
		if d.Side != snapshot.Server || d.Addr.Port() != l.Port() {
			continue
		}
		if a := l.Addr(); a.IsUnspecified() || a.Unmap() == d.Addr.Addr().Unmap() {
			closed += d.Closed
		}
	}
	if closed == 0 && w.OtherDestinations.Closed > 0 {
		return 0, 0, false
	}
	secs := w.Duration().Seconds()
	if secs <= 0 {
		return 0, closed, true
	}
	return float64(closed) / secs, closed, true
}

// Lifetime histogram: bucket 0 holds lifetimes under 1 ms (and unknown ones,
// whose lower bound is 0); bucket i >= 1 starts at 2^((i-1)/4) ms, so each is
// 19% wide, up to 2^25 ms (9.3 h).
const nBuckets = 1 + 4*25

type hist [nBuckets]uint32

func bucketOf(d time.Duration) int {
	ms := float64(d) / float64(time.Millisecond)
	if ms < 1 {
		return 0
	}
	return min(1+int(4*math.Log2(ms)), nBuckets-1)
}

func bucketLow(i int) time.Duration {
	if i == 0 {
		return 0
	}
	return time.Duration(math.Exp2(float64(i-1)/4) * float64(time.Millisecond))
}

// percentile returns the lower edge of the bucket holding the p-th value.
func (h *hist) percentile(p float64, n int) time.Duration {
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(p * float64(n)))
	var c uint64
	for i, v := range h {
		c += uint64(v)
		if c >= rank {
			return bucketLow(i)
		}
	}
	return bucketLow(nBuckets - 1)
}

// lifeKind says what is known about a connection's lifetime.
type lifeKind uint8

const (
	lifeUnknown lifeKind = iota // no snapshot observed yet
	lifeShort                   // not in the snapshots observed before the close
	lifeKnown                   // first seen by a snapshot
)

// agg accumulates closes.
type agg struct {
	closed, known, short int
	acked, recv, retrans uint64
	retransConns         int
	hist                 hist
}

func (a *agg) add(sk *sockdiag.Socket, life time.Duration, kind lifeKind) {
	a.closed++
	switch kind {
	case lifeKnown:
		a.known++
	case lifeShort:
		a.short++
	}
	a.hist[bucketOf(life)]++
	a.acked += sk.Info.BytesAcked
	a.recv += sk.Info.BytesRecv
	a.retrans += uint64(sk.Info.TotalRetrans)
	if sk.Info.TotalRetrans > 0 {
		a.retransConns++
	}
}

func (a *agg) merge(b *agg) {
	a.closed += b.closed
	a.known += b.known
	a.short += b.short
	a.acked += b.acked
	a.recv += b.recv
	a.retrans += b.retrans
	a.retransConns += b.retransConns
	for i := range a.hist {
		a.hist[i] += b.hist[i]
	}
}

func (a *agg) stats(secs float64) Stats {
	s := Stats{
		Closed: a.closed, LifetimeKnown: a.known, ShortLived: a.short,
		LifetimeP50: a.hist.percentile(0.5, a.closed), LifetimeP90: a.hist.percentile(0.9, a.closed),
		LifetimeP99: a.hist.percentile(0.99, a.closed),
		BytesAcked:  a.acked, BytesReceived: a.recv, Retransmits: a.retrans, RetransmittedConns: a.retransConns,
	}
	if secs > 0 {
		s.PerSecond = float64(a.closed) / secs
	}
	return s
}

// acc is the window being filled. Keys beyond maxKeys go straight to the
// other buckets, so memory stays bounded under any churn.
type acc struct {
	start      time.Time
	maxKeys    int
	total      agg
	dests      map[Dest]*agg
	otherDests agg
	procs      map[Owner]*agg
	otherProcs agg
	overruns   int
	unparsed   int
}

func newAcc(start time.Time, maxKeys int) *acc {
	return &acc{start: start, maxKeys: maxKeys, dests: make(map[Dest]*agg), procs: make(map[Owner]*agg)}
}

func (c *acc) add(d Dest, o Owner, sk *sockdiag.Socket, life time.Duration, kind lifeKind) {
	c.total.add(sk, life, kind)
	a := c.dests[d]
	if a == nil {
		if len(c.dests) < c.maxKeys {
			a = new(agg)
			c.dests[d] = a
		} else {
			a = &c.otherDests
		}
	}
	a.add(sk, life, kind)
	p := c.procs[o]
	if p == nil {
		if len(c.procs) < c.maxKeys {
			p = new(agg)
			c.procs[o] = p
		} else {
			p = &c.otherProcs
		}
	}
	p.add(sk, life, kind)
}

// window turns the accumulator into a Window with the top n of each kind.
func (c *acc) window(end time.Time, n int) *Window {
	secs := end.Sub(c.start).Seconds()
	w := &Window{Start: c.start, End: end, Total: c.total.stats(secs), Overruns: c.overruns, Unparsed: c.unparsed,
		Destinations: []DestStats{}, Processes: []ProcStats{}}
	dk := make([]Dest, 0, len(c.dests))
	for d := range c.dests {
		dk = append(dk, d)
	}
	slices.SortFunc(dk, func(a, b Dest) int {
		return cmp.Or(cmp.Compare(c.dests[b].closed, c.dests[a].closed), cmp.Compare(a.Side, b.Side), a.Addr.Compare(b.Addr))
	})
	other := c.otherDests
	for i, d := range dk {
		if i < n {
			w.Destinations = append(w.Destinations, DestStats{d, c.dests[d].stats(secs)})
		} else {
			other.merge(c.dests[d])
		}
	}
	w.OtherDestinations = other.stats(secs)

	pk := make([]Owner, 0, len(c.procs))
	for o := range c.procs {
		pk = append(pk, o)
	}
	slices.SortFunc(pk, func(a, b Owner) int {
		return cmp.Or(cmp.Compare(c.procs[b].closed, c.procs[a].closed), cmp.Compare(a.PID, b.PID), strings.Compare(a.Comm, b.Comm))
	})
	other = c.otherProcs
	for i, o := range pk {
		if i < n {
			w.Processes = append(w.Processes, ProcStats{o, c.procs[o].stats(secs)})
		} else {
			other.merge(c.procs[o])
		}
	}
	w.OtherProcesses = other.stats(secs)
	return w
}

package doctor

import (
	"fmt"

	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// twBucketOverflow watches net.ipv4.tcp_max_tw_buckets. Once the namespace
// holds that many TIME_WAIT sockets, the kernel destroys every further
// closing socket at once instead of keeping it in TIME_WAIT. It logs nothing:
// TcpExt.TCPTimeWaitOverflow is the only trace.
type twBucketOverflow struct{}

func (twBucketOverflow) ID() string { return "tw-bucket-overflow" }

// twBucketWarn warns before the limit, while raising it is still a
// precaution rather than a repair.
const twBucketWarn = 0.8

func (r twBucketOverflow) Check(in *Input) []Finding {
	sys := &in.Now.Sysctls
	limit := sys.MaxTWBuckets
	tw := in.Now.Count(sockdiag.TimeWait)
	total := in.Now.Counters.Get("TcpExt.TCPTimeWaitOverflow")
	delta, haveDelta := in.Delta("TcpExt.TCPTimeWaitOverflow")
	fill := 0.0
	if limit > 0 {
		fill = float64(tw) / float64(limit)
	}

	var sev Severity
	switch {
	case haveDelta && delta > 0:
		// Observed while we watched: connections are skipping TIME_WAIT now.
		sev = Critical
	case limit > 0 && fill >= twBucketWarn, limit <= 0 && total > 0:
		sev = Warning
	case !haveDelta && total > 0:
		// One snapshot: the counter only says it happened at some point
		// since the namespace was created, maybe days ago, and TIME_WAIT
		// is now well below the limit. Worth knowing, not worth paging;
		// a second snapshot (--interval) tells whether it is ongoing.
		sev = Info
	default:
		return nil
	}

	ev := map[string]any{
		"time_wait": tw, "tcp_max_tw_buckets": limit, "fill_percent": round1(fill * 100),
		"overflow_total": total, "client_time_wait": clientTimeWait(in.Now),
		"server_time_wait": tw - clientTimeWait(in.Now),
	}
	if haveDelta {
		ev["overflow_delta"] = delta
		ev["overflow_rate_per_s"] = round1(in.Rate("TcpExt.TCPTimeWaitOverflow"))
		ev["interval_s"] = round1(in.Interval().Seconds())
	}

	var title, what string
	switch {
	case sev == Critical:
		title = fmt.Sprintf("%d closing connections skipped TIME_WAIT in %.1f s: tcp_max_tw_buckets=%d is full", delta, in.Interval().Seconds(), limit)
		what = fmt.Sprintf("TcpExt TCPTimeWaitOverflow rose by %d in %.1f s (%.0f/s) while this namespace held %d TIME_WAIT sockets against net.ipv4.tcp_max_tw_buckets=%d: "+
			"every connection this host closes first now skips TIME_WAIT and is destroyed at once.",
			delta, in.Interval().Seconds(), in.Rate("TcpExt.TCPTimeWaitOverflow"), tw, limit)
	case sev == Warning && limit <= 0:
		title = "tcp_max_tw_buckets=0: no connection gets TIME_WAIT"
		what = fmt.Sprintf("net.ipv4.tcp_max_tw_buckets is %d, so every connection this host closes first skips TIME_WAIT; TCPTimeWaitOverflow is %d.", limit, total)
	case sev == Warning:
		title = fmt.Sprintf("TIME_WAIT is at %.0f%% of tcp_max_tw_buckets (%d of %d)", fill*100, tw, limit)
		what = fmt.Sprintf("This namespace holds %d TIME_WAIT sockets and net.ipv4.tcp_max_tw_buckets is %d (%.0f%%); at the limit, further closing connections skip TIME_WAIT. "+
			"TCPTimeWaitOverflow is %d since the namespace was created.", tw, limit, fill*100, total)
	default:
		title = fmt.Sprintf("TIME_WAIT overflowed %d times since boot (or namespace creation)", total)
		what = fmt.Sprintf("TcpExt TCPTimeWaitOverflow is %d: at some point since the namespace was created (since boot for the host) TIME_WAIT reached net.ipv4.tcp_max_tw_buckets=%d "+
			"and closing connections skipped it. Now it holds %d (%.0f%%); take two snapshots (--interval) to see whether it still happens.", total, limit, tw, fill*100)
	}
	expl := what + " Current kernels log nothing when this happens (older ones printed \"TCP: time wait bucket table overflow\"); this counter is the only signal. " +
		"Without TIME_WAIT, a delayed duplicate segment of the old connection can be accepted by a new connection on the same 4-tuple and corrupt or reset it, " +
		"and a lost final ACK can no longer be resent, so the peer may be left in LAST_ACK until it gives up."

	suggest := max(2*limit, 2*tw, 262144)
	fix := []string{
		fmt.Sprintf("Raise the limit: `sysctl -w net.ipv4.tcp_max_tw_buckets=%d` and persist it in /etc/sysctl.d/. "+
			"A TIME_WAIT socket costs about 256 bytes (slab tw_sock_TCP), so %d of them take about %d MiB.", suggest, suggest, suggest*256>>20),
		"Never lower tcp_max_tw_buckets to get rid of TIME_WAIT: that is exactly what produces this overflow and its risk; reduce the churn instead.",
		"Reduce the churn that fills it: reuse connections (pooling, HTTP keep-alive); see the timewait-churn findings for who closes how fast.",
	}

	subjects := []Subject{{
		Kind: "sysctl", Name: "net.ipv4.tcp_max_tw_buckets",
		Numbers: map[string]any{"value": limit, "time_wait": tw, "overflow_total": total},
	}}
	// Name who fills the table, so the fix has an address.
	groups := groupTimeWait(in.Now, in.Listeners(), in.Destinations())
	for _, g := range groups[:min(3, len(groups))] {
		kind := "destination"
		if g.side == snapshot.Server {
			kind = "listener"
		}
		subjects = append(subjects, Subject{Kind: kind, Name: g.name, Processes: g.procs, Numbers: map[string]any{"time_wait": g.count}})
	}
	return []Finding{{
		ID: r.ID(), Severity: sev, Title: title, Evidence: ev, Explanation: expl, Fix: fix, Subjects: subjects,
	}}
}

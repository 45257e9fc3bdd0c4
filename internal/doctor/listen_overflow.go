package doctor

import (
	"fmt"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// listenOverflow finds listeners whose accept queue is full, and handshakes
// the kernel dropped because of it (TcpExt.ListenOverflows/ListenDrops).
// A full queue drops SYNs and final ACKs silently: clients see connect()
// stall for a SYN retransmit (1 s, then more) rather than an error.
type listenOverflow struct{}

func (listenOverflow) ID() string { return "listen-overflow" }

const (
	// acceptWarn: a queue this full overflows on the next small burst.
	acceptWarn = 0.8
	// dropCritical is the drop rate that makes overflow an outage: each
	// drop costs a client at least one 1 s SYN retransmit, so 10 drops/s
	// are at least 10 visibly stalled connects every second. The rate is
	// taken over at least one second, so that two drops in a 20 ms interval
	// do not read as 100/s.
	dropCritical = 10.0
)

func (r listenOverflow) Check(in *Input) []Finding {
	c := r.counters(in)
	var full []analyze.Listener
	for _, l := range in.Listeners() {
		if l.Fill() >= acceptWarn && len(full) < maxSubjects {
			full = append(full, l)
		}
	}
	rose := c.haveDelta && (c.overflowsDelta > 0 || c.dropsDelta > 0)
	sev := Warning
	if rose && c.rate >= dropCritical {
		sev = Critical
	}

	var out []Finding
	for _, l := range full {
		out = append(out, r.listenerFinding(in, l, sev, c))
	}
	switch {
	case len(full) > 0:
	case rose:
		out = append(out, r.counterFinding(in, sev, c))
	case !c.haveDelta && (c.overflows > 0 || c.drops > 0):
		// One snapshot and no queue full now: the counters only say it
		// happened at some point since boot.
		out = append(out, r.counterFinding(in, Info, c))
	}
	return out
}

type listenCounters struct {
	overflows, drops           int64 // since boot or namespace creation
	overflowsDelta, dropsDelta int64
	haveDelta                  bool
	rate                       float64 // drops per second over at least 1 s; ListenDrops includes overflows
	synCookies, reqQFullDrop   int64   // deltas, or totals with one snapshot
}

func (listenOverflow) counters(in *Input) listenCounters {
	now := in.Now.Counters
	c := listenCounters{
		overflows: now.Get("TcpExt.ListenOverflows"), drops: now.Get("TcpExt.ListenDrops"),
		synCookies: now.Get("TcpExt.SyncookiesSent"), reqQFullDrop: now.Get("TcpExt.TCPReqQFullDrop"),
	}
	c.overflowsDelta, c.haveDelta = in.Delta("TcpExt.ListenOverflows")
	if c.haveDelta {
		c.dropsDelta, _ = in.Delta("TcpExt.ListenDrops")
		c.synCookies, _ = in.Delta("TcpExt.SyncookiesSent")
		c.reqQFullDrop, _ = in.Delta("TcpExt.TCPReqQFullDrop")
		c.rate = float64(max(c.dropsDelta, c.overflowsDelta)) / max(in.Interval().Seconds(), 1)
	}
	return c
}

func (c listenCounters) evidence(in *Input, ev map[string]any) {
	ev["listen_overflows_total"] = c.overflows
	ev["listen_drops_total"] = c.drops
	ev["somaxconn"] = in.Now.Sysctls.Somaxconn
	ev["tcp_max_syn_backlog"] = in.Now.Sysctls.MaxSynBacklog
	if c.haveDelta {
		ev["listen_overflows_delta"] = c.overflowsDelta
		ev["listen_drops_delta"] = c.dropsDelta
		ev["drop_rate_per_s"] = round1(c.rate)
		ev["syncookies_sent_delta"] = c.synCookies
		ev["req_q_full_drop_delta"] = c.reqQFullDrop
		ev["interval_s"] = round1(in.Interval().Seconds())
	}
}

// sentence describes what the counters did, for the explanation.
func (c listenCounters) sentence(in *Input) string {
	switch {
	case c.haveDelta && (c.overflowsDelta > 0 || c.dropsDelta > 0):
		return fmt.Sprintf(" During the %.1f s between the snapshots TcpExt ListenOverflows rose by %d and ListenDrops by %d (%.1f/s).",
			in.Interval().Seconds(), c.overflowsDelta, c.dropsDelta, c.rate)
	case c.haveDelta:
		return " No handshake was dropped between the two snapshots yet."
	case c.overflows > 0 || c.drops > 0:
		return fmt.Sprintf(" Since boot (or namespace creation) ListenOverflows is %d and ListenDrops %d.", c.overflows, c.drops)
	}
	return ""
}

// limitedBy says which of the two limits set the effective backlog,
// min(listen() argument, somaxconn at listen() time). A backlog at or above
// the current somaxconn means the application asked for at least that much.
func limitedBy(l analyze.Listener, somaxconn int) string {
	if int(l.Backlog) >= somaxconn {
		return "somaxconn"
	}
	return "listen_backlog"
}

func (r listenOverflow) listenerFinding(in *Input, l analyze.Listener, sev Severity, c listenCounters) Finding {
	sys := &in.Now.Sysctls
	name := l.Local.String()
	by := limitedBy(l, sys.Somaxconn)
	synRecv := l.States[sockdiag.SynRecv] + l.States[sockdiag.NewSynRecv]
	ev := map[string]any{
		"listener": name, "accept_queue": l.AcceptQueue, "backlog": l.Backlog,
		"fill_percent": round1(l.Fill() * 100), "limited_by": by, "syn_recv": synRecv,
	}
	c.evidence(in, ev)

	owner := "its owner could not be identified"
	if len(l.Processes) > 0 {
		owner = procList(l.Processes) + " owns it"
	}
	limit := fmt.Sprintf("the listen() argument, since net.core.somaxconn=%d allows more", sys.Somaxconn)
	if by == "somaxconn" {
		limit = fmt.Sprintf("net.core.somaxconn=%d, which caps whatever the application passed to listen()", sys.Somaxconn)
	}
	expl := fmt.Sprintf("Listener %s has %d connections waiting for accept() and a backlog of %d, set by %s; %s. "+
		"When the queue is full the kernel silently drops new SYNs and final handshake ACKs, so clients see connect() stall for a SYN retransmit (1 s, then longer) or time out, not an error.%s "+
		"A queue that stays full means the process is not calling accept() fast enough: it is busy, blocked, or out of file descriptors.",
		name, l.AcceptQueue, l.Backlog, limit, owner, c.sentence(in))

	return Finding{
		ID: r.ID(), Severity: sev,
		Title:       fmt.Sprintf("Accept queue of %s is full: %d waiting, backlog %d", name, l.AcceptQueue, l.Backlog),
		Evidence:    ev,
		Explanation: expl,
		Fix:         listenFixes(in, &l, by),
		Subjects: []Subject{{
			Kind: "listener", Name: name, Processes: l.Processes,
			Numbers: map[string]any{"accept_queue": l.AcceptQueue, "backlog": l.Backlog, "syn_recv": synRecv},
		}},
	}
}

// counterFinding reports drops when no listener's queue is full right now:
// the burst came and went between or before the snapshots.
func (r listenOverflow) counterFinding(in *Input, sev Severity, c listenCounters) Finding {
	ev := map[string]any{}
	c.evidence(in, ev)
	ls := in.Listeners() // fullest first
	var subjects []Subject
	for _, l := range ls[:min(3, len(ls))] {
		subjects = append(subjects, Subject{
			Kind: "listener", Name: l.Local.String(), Processes: l.Processes,
			Numbers: map[string]any{"accept_queue": l.AcceptQueue, "backlog": l.Backlog},
		})
	}
	dropped, when := max(c.dropsDelta, c.overflowsDelta), fmt.Sprintf("in %.1f s", in.Interval().Seconds())
	overflowed := c.overflowsDelta
	if !c.haveDelta {
		dropped, overflowed, when = max(c.drops, c.overflows), c.overflows, "since boot (or namespace creation)"
	}
	expl := fmt.Sprintf("Listeners silently dropped %d incoming handshakes %s, so those clients saw connect() stall for a SYN retransmit (1 s, then longer) or time out. "+
		"%d of the drops were because an accept queue was full (ListenOverflows)",
		dropped, when, overflowed)
	if dropped > overflowed {
		expl += "; the others had another cause: a full SYN queue with SYN cookies off (TCPReqQFullDrop), no memory, a failed route or an LSM/BPF verdict"
	}
	expl += ". No accept queue is at 80% now, so the drops came in bursts; the counters are per namespace and do not say which listener dropped, so the fullest are listed."
	title := fmt.Sprintf("Listeners dropped %d incoming handshakes %s", dropped, when)
	var l *analyze.Listener
	if len(ls) > 0 {
		l = &ls[0]
	}
	by := "somaxconn"
	if l != nil {
		by = limitedBy(*l, in.Now.Sysctls.Somaxconn)
	}
	return Finding{ID: r.ID(), Severity: sev, Title: title, Evidence: ev, Explanation: expl, Fix: listenFixes(in, l, by), Subjects: subjects}
}

// listenFixes tailors the remedies to the listener (may be nil) and to
// which limit set its backlog.
func listenFixes(in *Input, l *analyze.Listener, by string) []string {
	sys := &in.Now.Sysctls
	who, port := "the server", "80"
	if l != nil {
		port = fmt.Sprint(l.Local.Port())
		if len(l.Processes) > 0 {
			who = procList(l.Processes)
		}
	}
	fix := []string{
		fmt.Sprintf("Accept faster in %s: more accept threads or worker processes (nginx `worker_processes auto;`, several SO_REUSEPORT listeners), "+
			"and no slow work (TLS handshakes, DNS, disk) on the accept loop; check it is not stalled on CPU, GC or a lock, and not out of fds (see fd-limit).", who),
	}
	backlog := max(4096, sys.Somaxconn)
	if by == "somaxconn" {
		fix = append(fix, fmt.Sprintf("Raise both limits, because the kernel uses min(listen() backlog, somaxconn): `sysctl -w net.core.somaxconn=%d` (now %d) AND the backlog the application passes to listen() "+
			"(nginx `listen %s backlog=%d;`, Java ServerSocket backlog (default 50), Go reads somaxconn itself); then restart the listener, since the backlog is fixed at listen() time.",
			max(4096, 2*sys.Somaxconn), sys.Somaxconn, port, max(4096, 2*sys.Somaxconn)))
	} else {
		fix = append(fix, fmt.Sprintf("Raise the backlog the application passes to listen() (somaxconn=%d already allows up to that): nginx `listen %s backlog=%d;`, "+
			"Java ServerSocket/Netty SO_BACKLOG, gunicorn --backlog; then restart the listener. If you need more than %d, raise net.core.somaxconn too.",
			sys.Somaxconn, port, backlog, sys.Somaxconn))
	}
	fix = append(fix,
		fmt.Sprintf("If SYN_RECV entries pile up or TcpExt.TCPReqQFullDrop rises, the SYN queue is full as well: raise net.ipv4.tcp_max_syn_backlog (now %d) and keep net.ipv4.tcp_syncookies=1.", sys.MaxSynBacklog),
		"To make clients fail fast instead of stalling, net.ipv4.tcp_abort_on_overflow=1 resets instead of dropping; use it only if clients retry, since it turns a short burst into errors.")
	return fix
}

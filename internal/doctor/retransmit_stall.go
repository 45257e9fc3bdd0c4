package doctor

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/kernel"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// retransmitStall finds connections whose peer stopped answering: data (or
// a SYN) retransmitted with exponential backoff and no ACK. Linux keeps
// retrying for minutes (924.6 s with tcp_retries2=15), so a program without
// its own timeout hangs that long before it sees ETIMEDOUT.
type retransmitStall struct{}

func (retransmitStall) ID() string { return "retransmit-stall" }

const (
	// stallMinBackoff: one RTO expiry happens with a single lost segment;
	// two in a row with no ACK in between (RTO + 2 RTO, at least 0.6 s) is
	// a peer or path that answers nothing.
	stallMinBackoff = 2
	// stallAckFactor: unacked data with no ACK for 3 RTOs is a stall even
	// when the timer column shows something else (e.g. a loss probe).
	stallAckFactor = 3
	// stallCritical: transient loss recovers within a few seconds; 30 s is
	// past most callers' request timeouts, so the stall is an outage.
	stallCritical = 30 * time.Second
	// synLinearTimeouts is the default of net.ipv4.tcp_syn_linear_timeouts:
	// that many SYN retries are sent 1 s apart before the RTO doubles.
	// kernel.Sysctls does not read it yet.
	synLinearTimeouts = 4
	// orphanRetries is what tcp_orphan_retries=0 (the default) means for a
	// closed socket still retransmitting: 8 tries (tcp_orphan_retries()).
	orphanRetries = 8
)

type stallGroup struct {
	peer    peer
	syn     bool
	count   int
	oldest  time.Duration // longest stall
	diesIn  time.Duration // kernel gives up on the oldest after this
	budget  time.Duration
	backoff int
	rto     time.Duration
	unacked uint32
	sendQ   uint64
	orphans int
	procs   []analyze.ProcRef
}

func (r retransmitStall) Check(in *Input) []Finding {
	sys := &in.Now.Sysctls
	type key struct {
		p   peer
		syn bool
	}
	groups := make(map[key]*stallGroup)
	for i := range in.Now.Sockets {
		sk := &in.Now.Sockets[i]
		elapsed, diesIn, budget, syn, ok := stallOf(sk, sys)
		if !ok {
			continue
		}
		k := key{peerOf(in.Now, sk), syn}
		g := groups[k]
		if g == nil {
			g = &stallGroup{peer: k.p, syn: syn}
			groups[k] = g
		}
		g.count++
		if elapsed >= g.oldest {
			g.oldest, g.diesIn, g.budget = elapsed, diesIn, budget
			g.rto = sk.Info.RTODuration()
		}
		if syn {
			g.backoff = max(g.backoff, int(sk.Retrans)) // SYN retries
		} else {
			g.backoff = max(g.backoff, int(sk.Info.Backoff))
		}
		g.unacked += sk.Info.Unacked
		g.sendQ += uint64(sk.SendQ)
		if sk.Inode == 0 {
			g.orphans++
		}
		g.procs = analyze.AddRefs(g.procs, in.Now.Owners(sk))
	}
	if len(groups) == 0 {
		return nil
	}
	// All connections to each stalled peer, for "3 of 5 connections".
	total := make(map[peer]int)
	for _, g := range groups {
		total[g.peer] = 0
	}
	for i := range in.Now.Sockets {
		sk := &in.Now.Sockets[i]
		if sk.State == sockdiag.Listen {
			continue
		}
		p := peerOf(in.Now, sk)
		if n, ok := total[p]; ok {
			total[p] = n + 1
		}
	}
	list := make([]*stallGroup, 0, len(groups))
	for _, g := range groups {
		list = append(list, g)
	}
	slices.SortFunc(list, func(a, b *stallGroup) int {
		return cmp.Or(cmp.Compare(b.oldest, a.oldest), cmp.Compare(b.count, a.count), comparePeers(a.peer, b.peer))
	})
	var out []Finding
	for _, g := range list[:min(len(list), maxSubjects)] {
		out = append(out, r.finding(in, g, total[g.peer], len(list)))
	}
	return out
}

// stallOf decides whether sk is stalled and, if so, how long it has been
// retrying and how long the kernel will go on.
func stallOf(sk *sockdiag.Socket, sys *kernel.Sysctls) (elapsed, diesIn, budget time.Duration, syn, ok bool) {
	if !sk.HasInfo {
		return 0, 0, 0, false, false
	}
	rto := sk.Info.RTODuration()
	switch sk.State {
	case sockdiag.SynSent:
		if sk.Timer != sockdiag.TimerRetransmit || sk.Retrans < 1 {
			return 0, 0, 0, false, false
		}
		k := int(sk.Retrans)
		elapsed = synExpiry(k) + max(rto-sk.TimerExpires, 0)
		budget = kernel.ModelTimeout(sys.SynRetries, kernel.TimeoutInit)
		death := time.Duration(0)
		for j := 1; j < 256 && death < budget; j++ {
			death = synExpiry(j)
		}
		return elapsed, max(death-elapsed, 0), budget, true, true
	case sockdiag.Established, sockdiag.FinWait1, sockdiag.CloseWait, sockdiag.LastAck, sockdiag.Closing:
	default:
		return 0, 0, 0, false, false
	}
	backedOff := sk.Timer == sockdiag.TimerRetransmit && sk.Info.Backoff >= stallMinBackoff
	silent := min(ms(sk.Info.LastAckRecv), ms(sk.Info.LastDataSent)) // LastDataSent: not an idle connection that just wrote
	noAck := sk.Info.Unacked > 0 && silent > stallAckFactor*rto
	if !backedOff && !noAck {
		return 0, 0, 0, false, false
	}
	// Each RTO expiry doubled the RTO (capped at 120 s). The kernel measures
	// its budget from the first RTO retransmission (tp->retrans_stamp): the
	// time since then is the sum of the RTOs after the first plus the part
	// of the current one that has run.
	b := int(sk.Info.Backoff)
	base := max(rto>>b, kernel.RTOMin)
	var sinceFirst time.Duration
	if sk.Timer == sockdiag.TimerRetransmit && b > 0 {
		for i := 1; i < b; i++ {
			sinceFirst += rtoStep(base, i)
		}
		sinceFirst += max(rto-sk.TimerExpires, 0)
		// Plus the first RTO; a tail loss probe before it (a few hundred ms)
		// leaves no trace in the timer state, so this is a lower bound.
		elapsed = base + sinceFirst
	} else {
		elapsed = silent
		sinceFirst = max(elapsed-base, 0)
	}
	retries := sys.Retries2
	if sk.Inode == 0 {
		retries = orphanRetries
	}
	budget = kernel.RetransmitBudget(retries)
	// It gives up at the first expiry past the budget. This matches the
	// measured 6.85 s for tcp_retries2=3 and 13.4 s for 5 on loopback
	// (base RTO 204 ms).
	death := time.Duration(0)
	for i := 1; i < 256 && death < budget; i++ {
		death += rtoStep(base, i)
	}
	return elapsed, max(death-sinceFirst, 0), budget, false, true
}

// rtoStep is the RTO after i doublings of base, capped at TCP_RTO_MAX
// (without overflowing for large i).
func rtoStep(base time.Duration, i int) time.Duration {
	for ; i > 0 && base < kernel.RTOMax; i-- {
		base *= 2
	}
	return min(base, kernel.RTOMax)
}

// synExpiry is when (after the first SYN) the k-th SYN retransmission
// timer fires: 1 s apart for the first tcp_syn_linear_timeouts+1 waits,
// then doubling up to 120 s. Measured here: 1,2,3,4,5,7,11,19,35,67 s.
func synExpiry(k int) time.Duration {
	var t time.Duration
	for i := 1; i <= k; i++ {
		if i <= synLinearTimeouts+1 {
			t += kernel.TimeoutInit
		} else {
			t += rtoStep(kernel.TimeoutInit, i-synLinearTimeouts-1)
		}
	}
	return t
}

func (r retransmitStall) finding(in *Input, g *stallGroup, total, groups int) Finding {
	sys := &in.Now.Sysctls
	sev := Warning
	if g.oldest >= stallCritical {
		sev = Critical
	}
	nums := g.peer.numbers()
	nums["stalled"] = g.count
	nums["connections"] = total
	nums["oldest_stall_s"] = secs(g.oldest)
	ev := map[string]any{
		"peer": g.peer.Name(), "direction": nums["direction"], "stalled": g.count, "connections": total,
		"oldest_stall_s": secs(g.oldest), "max_backoff": g.backoff, "rto_ms": g.rto.Milliseconds(),
		"give_up_after_s": secs(g.budget), "gives_up_in_s": secs(g.diesIn),
	}
	if groups > maxSubjects {
		ev["groups_total"] = groups
	}
	subj := Subject{Kind: g.peer.Kind(), Name: g.peer.Name(), Processes: g.procs, Numbers: nums}
	find := fmt.Sprintf("Find out why %s stopped answering: is the host up (`ping`, `mtr`), did a firewall, security group or route change, is its listener alive? `ss -tio dst %s` shows backoff and rto rising while it lasts.", g.peer.Name(), g.peer.Name())
	if g.syn {
		ev["tcp_syn_retries"] = sys.SynRetries
		ev["tcp_syn_linear_timeouts"] = synLinearTimeouts
		ev["syn_retransmits"] = g.backoff
		verb := "have"
		if g.count == 1 {
			verb = "has"
		}
		expl := fmt.Sprintf("%s to %s %s been retrying the SYN for up to %s with no answer at all (%d retransmissions). "+
			"A closed port would refuse at once with an RST, so the SYNs are dropped (firewall, security group, routing) or the host is down. "+
			"With tcp_syn_retries = %d the kernel gives up after about %s (the first %d retries 1 s apart, then doubling), so connect() without its own timeout blocks about %s more and then fails with ETIMEDOUT.",
			plural(g.count, "connect() call", "connect() calls"), g.peer.Name(), verb, human(g.oldest), g.backoff,
			sys.SynRetries, human(g.budget), synLinearTimeouts, human(g.diesIn))
		fixes := []string{find,
			"Give every connect its own timeout, a few seconds: Go net.Dialer.Timeout or a context deadline; Java socket.connect(addr, timeoutMs), HttpClient connectTimeout, HikariCP connectionTimeout; Python socket.create_connection(timeout=...) or requests timeout=(connect, read); libpq connect_timeout.",
			"Make the pool or client fail fast and try another backend instead of queueing callers behind a dead address.",
			"Per socket, TCP_SYNCNT caps the SYN retries (Go: set it in net.Dialer.Control).",
		}
		if sys.SynRetries > 3 {
			fixes = append(fixes, fmt.Sprintf("Host-wide, `sysctl -w net.ipv4.tcp_syn_retries=3` shortens every connect to a dead address from %s to %s.", human(g.budget), human(kernel.ModelTimeout(3, kernel.TimeoutInit))))
		}
		return Finding{
			ID: r.ID(), Severity: sev,
			Title:    fmt.Sprintf("Connects to %s get no answer for %s", g.peer.Name(), human(g.oldest)),
			Evidence: ev, Explanation: expl, Fix: fixes, Subjects: []Subject{subj},
		}
	}

	ev["tcp_retries2"] = sys.Retries2
	ev["unacked_segments"] = g.unacked
	ev["send_queue_bytes"] = g.sendQ
	retries := fmt.Sprintf("tcp_retries2 = %d", sys.Retries2)
	if g.orphans > 0 {
		ev["orphans"] = g.orphans
		if g.orphans == g.count {
			retries = "tcp_orphan_retries (0, meaning 8, for closed sockets)"
		}
	}
	who := fmt.Sprintf("%d of the %d connections to %s have", g.count, total, g.peer.Name())
	switch {
	case total == 1:
		who = fmt.Sprintf("The only connection to %s has", g.peer.Name())
	case g.count == total:
		who = fmt.Sprintf("All %d connections to %s have", total, g.peer.Name())
	}
	expl := fmt.Sprintf("%s had data unacknowledged for up to %s: the kernel has retransmitted with backoff %d and now waits %s between tries (the RTO doubles per try, up to 120 s). "+
		"Nothing comes back from %s, not even a duplicate ACK, so the peer is down or unreachable or a firewall drops the packets; a merely slow peer would still acknowledge. "+
		"Linux gives up only when the %s budget of %s from the first transmission is used up, so a program without its own timeout hangs about %s more and then gets ETIMEDOUT. "+
		"A socket with TCP_USER_TIMEOUT set gives up after that time instead.",
		who, human(g.oldest), g.backoff, human(g.rto), g.peer.Name(), retries, human(g.budget), human(g.diesIn))
	fixes := []string{find,
		"Bound every request with an application timeout: Go http.Client.Timeout or a context deadline; JDBC socketTimeout/queryTimeout; Java HttpClient request timeout; Python requests timeout=(connect, read); a timeout closes the connection and frees the caller.",
		"Bound the kernel's retrying per socket with TCP_USER_TIMEOUT (ms; covers unacknowledged data): Go unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 30000) in net.Dialer.Control; libpq tcp_user_timeout=30000; Netty EpollChannelOption.TCP_USER_TIMEOUT.",
		"Make pools fail fast: bound checkout waits (HikariCP connectionTimeout, database/sql with a context), drop connections that timed out instead of returning them, and route around a backend that stops answering.",
	}
	if sys.Retries2 > 8 {
		fixes = append(fixes, fmt.Sprintf("Host-wide, `sysctl -w net.ipv4.tcp_retries2=8` cuts the budget from %s to %s for every socket without TCP_USER_TIMEOUT (RFC 1122 asks for at least 100 s).", human(kernel.RetransmitBudget(sys.Retries2)), human(kernel.RetransmitBudget(8))))
	}
	return Finding{
		ID: r.ID(), Severity: sev,
		Title:    fmt.Sprintf("%s to %s retransmitting for %s with no ACK", plural(g.count, "connection", "connections"), g.peer.Name(), human(g.oldest)),
		Evidence: ev, Explanation: expl, Fix: fixes, Subjects: []Subject{subj},
	}
}

package doctor

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/kernel"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// sysctlRule flags TCP settings that contradict each other or are risky for
// what this host is doing. It must not lecture a healthy host: each check
// needs a reason in the current sockets to fire at all (except a plain
// contradiction), and a finding is only info unless the sockets show the
// setting's effect, then warning.
type sysctlRule struct{}

func (sysctlRule) ID() string { return "sysctl" }

const (
	// narrowRange: below 10,000 ports one destination sustains fewer than
	// ~170 new connections/s when this host closes first.
	narrowRange = 10000
	// portEffect is the budget share at which a port setting visibly
	// matters: half of port-exhaustion's warning level, so the setting is
	// named before the budget becomes its own finding.
	portEffect = 0.25
	// longRetransmit: a retransmit budget above 5 minutes (tcp_retries2 >=
	// 10; the default 15 gives 924.6 s) keeps a request to a dead peer
	// hanging far longer than any caller waits.
	longRetransmit = 5 * time.Minute
)

func (r sysctlRule) Check(in *Input) []Finding {
	var out []Finding
	for _, check := range []func(*Input) *Finding{r.reuseWithoutTimestamps, r.narrowPortRange, r.keepaliveTooLong, r.retriesTooLong} {
		if f := check(in); f != nil {
			out = append(out, *f)
		}
	}
	return out
}

// busiest returns the destination using the most ephemeral ports, if any.
func busiest(in *Input) (analyze.PortBudget, bool) {
	bs := in.PortBudgets()
	if len(bs) == 0 {
		return analyze.PortBudget{}, false
	}
	return bs[0], true // sorted by ports in use
}

func (r sysctlRule) finding(sev Severity, key string, value any, title, expl string, ev map[string]any, fix []string) *Finding {
	ev[key[strings.LastIndexByte(key, '.')+1:]] = value // snake_case: "tcp_tw_reuse"
	return &Finding{
		ID: r.ID(), Severity: sev, Title: title, Evidence: ev, Explanation: expl, Fix: fix,
		Subjects: []Subject{{Kind: "sysctl", Name: key, Numbers: map[string]any{"value": value}}},
	}
}

// reuseWithoutTimestamps: tcp_tw_reuse=1 needs TCP timestamps to tell a new
// connection's segments from the old one's, so with timestamps off it does
// nothing. A contradiction on its own (info); warning once client TIME_WAIT
// takes a visible share of a destination's ports.
func (r sysctlRule) reuseWithoutTimestamps(in *Input) *Finding {
	sys := &in.Now.Sysctls
	if sys.TWReuse != 1 || sys.Timestamps != 0 {
		return nil
	}
	ev := map[string]any{"tcp_timestamps": sys.Timestamps, "client_time_wait": clientTimeWait(in.Now)}
	sev := Info
	effect := " No destination has a notable share of its ports in TIME_WAIT right now, so it costs nothing yet."
	if b, ok := busiest(in); ok && b.TimeWait() > 0 {
		dst := netip.AddrPortFrom(b.Dst, b.DstPort).String()
		ev["busiest_destination"] = dst
		ev["busiest_used_percent"] = round1(b.Used * 100)
		ev["busiest_time_wait"] = b.TimeWait()
		if b.Used >= portEffect {
			sev = Warning
			effect = fmt.Sprintf(" It matters here: %s already holds %d of %d ports (%.0f%%), %d of them in TIME_WAIT that reuse would hand back to connect().",
				dst, b.InUse, b.Range, b.Used*100, b.TimeWait())
		}
	}
	expl := "net.ipv4.tcp_tw_reuse=1 lets connect() take over a port still in TIME_WAIT, but only when TCP timestamps prove the new connection's segments are newer than the old one's; " +
		"net.ipv4.tcp_timestamps=0 turns timestamps off, so reuse never happens on this host and TIME_WAIT ports stay blocked for the full 60 s." + effect
	fix := []string{
		"Turn timestamps back on: `sysctl -w net.ipv4.tcp_timestamps=1` (the default) and persist it in /etc/sysctl.d/; they also protect against wrapped sequence numbers (PAWS) and give the RTT estimate. The peer must support them too, as all current stacks do.",
		"If timestamps were turned off on purpose, tcp_tw_reuse=1 is dead weight: rely on connection pooling instead (see timewait-churn and port-exhaustion).",
	}
	return r.finding(sev, "net.ipv4.tcp_tw_reuse", sys.TWReuse, "tcp_tw_reuse=1 has no effect because tcp_timestamps=0", expl, ev, fix)
}

// narrowPortRange: a small ephemeral range only matters on a host that
// dials and closes first, so it needs client TIME_WAIT to fire at all.
func (r sysctlRule) narrowPortRange(in *Input) *Finding {
	sys := &in.Now.Sysctls
	usable := sys.EphemeralPorts()
	ctw := clientTimeWait(in.Now)
	if usable >= narrowRange || ctw == 0 {
		return nil
	}
	rng := fmt.Sprintf("%d %d", sys.LocalPortRange.Lo, sys.LocalPortRange.Hi)
	ev := map[string]any{
		"usable_ports": usable, "range_size": sys.LocalPortRange.Size(),
		"ip_local_reserved_ports": kernel.FormatPortRanges(sys.ReservedPorts),
		"client_time_wait":        ctw, "sustainable_rate_per_s": round1(float64(usable) / 60),
	}
	reserved := ""
	if usable < sys.LocalPortRange.Size() {
		reserved = fmt.Sprintf(", of which ip_local_reserved_ports takes %d", sys.LocalPortRange.Size()-usable)
	}
	sev := Info
	effect := ""
	if b, ok := busiest(in); ok {
		dst := netip.AddrPortFrom(b.Dst, b.DstPort).String()
		ev["busiest_destination"] = dst
		ev["busiest_used_percent"] = round1(b.Used * 100)
		effect = fmt.Sprintf(" The busiest destination, %s, holds %d of them (%.0f%%).", dst, b.InUse, b.Used*100)
		if b.Used >= portEffect {
			sev = Warning
		}
	}
	expl := fmt.Sprintf("Only %d ephemeral ports are usable (ip_local_port_range %s%s), and this host closes outgoing connections first: %d client-side TIME_WAIT sockets each block a port for 60 s. "+
		"So one destination can take at most %d/60 = %.0f new connections/s, against about 470/s with the default 32768-60999.%s",
		usable, rng, reserved, ctw, usable, float64(usable)/60, effect)

	fix := []string{"Widen the range: `sysctl -w net.ipv4.ip_local_port_range=\"32768 60999\"` (the default; \"1024 65535\" gives the most) and persist it in /etc/sysctl.d/."}
	if ports := listenPortsAbove(in, 1024); len(ports) > 0 {
		fix = append(fix, fmt.Sprintf("Listening ports of this host that a wider range would cover: %s; list them in net.ipv4.ip_local_reserved_ports so connect() never takes them.", strings.Join(ports, ",")))
	}
	fix = append(fix, "Reduce the churn itself by reusing connections (see timewait-churn).")
	return r.finding(sev, "net.ipv4.ip_local_port_range", rng, fmt.Sprintf("Only %d ephemeral ports while connections are churned", usable), expl, ev, fix)
}

// listenPortsAbove lists the distinct listening ports >= lo.
func listenPortsAbove(in *Input, lo uint16) []string {
	var ports []uint16
	for i := range in.Now.Sockets {
		sk := &in.Now.Sockets[i]
		if sk.State == sockdiag.Listen && sk.Local.Port() >= lo && !slices.Contains(ports, sk.Local.Port()) {
			ports = append(ports, sk.Local.Port())
		}
	}
	slices.Sort(ports)
	out := make([]string, 0, len(ports))
	for _, p := range ports {
		out = append(out, fmt.Sprint(p))
	}
	return out
}

// keepaliveTooLong: with tcp_keepalive_time above the path's idle timeout,
// a connection that relies on the default sends its first probe after the
// load balancer or NAT already forgot it. It needs connections that really
// sit idle (half the idle timeout or more) to fire at all; it is a warning
// when some of them visibly run on the default.
func (r sysctlRule) keepaliveTooLong(in *Input) *Finding {
	sys := &in.Now.Sysctls
	kat := time.Duration(sys.KeepaliveTime) * time.Second
	if in.IdleTimeout <= 0 || kat <= in.IdleTimeout {
		return nil
	}
	minIdle := in.IdleTimeout / 2
	var idle, onDefault, own, off int
	var longest time.Duration
	for i := range in.Now.Sockets {
		sk := &in.Now.Sockets[i]
		// Unacknowledged data (retransmit or zero-window timer) is traffic
		// a middlebox sees, not idleness.
		busy := sk.Timer == sockdiag.TimerRetransmit || sk.Timer == sockdiag.TimerZeroWindow
		if sk.State != sockdiag.Established || !sk.HasInfo || busy || sk.Info.Idle() < minIdle {
			continue
		}
		idle++
		longest = max(longest, sk.Info.Idle())
		switch {
		case usesDefaultKeepalive(sk, kat):
			onDefault++
		case sk.Timer == sockdiag.TimerKeepalive:
			own++
		default: // no timer pending on an idle socket: SO_KEEPALIVE is off
			off++
		}
	}
	if idle == 0 {
		return nil
	}
	sev := Info
	if onDefault > 0 {
		sev = Warning
	}
	ev := map[string]any{
		"idle_timeout_s": in.IdleTimeout.Seconds(), "idle_connections": idle, "min_idle_s": round1(minIdle.Seconds()),
		"longest_idle_s": round1(longest.Seconds()), "keepalive_default": onDefault, "keepalive_own_setting": own,
		"keepalive_off": off, "tcp_keepalive_intvl": sys.KeepaliveIntvl, "tcp_keepalive_probes": sys.KeepaliveProbes,
	}
	expl := fmt.Sprintf("net.ipv4.tcp_keepalive_time is %d s but the idle timeout on the path is %s, so a connection that relies on the default sends its first keepalive probe "+
		"long after the load balancer or NAT has forgotten it, and the next request on it gets a RST or hangs. "+
		"%d ESTABLISHED connections have been idle for at least %s (longest %s): %d use the default keepalive time, %d set their own, and %d have keepalive off.",
		sys.KeepaliveTime, in.IdleTimeout, idle, minIdle, longest.Round(time.Second), onDefault, own, off)
	if onDefault == 0 {
		expl += " None of them visibly runs on this default now, but any socket that enables SO_KEEPALIVE without TCP_KEEPIDLE will."
	}
	want := max(in.IdleTimeout/2, time.Second).Round(time.Second)
	fix := []string{
		fmt.Sprintf("Send the first probe well inside the idle timeout: `sysctl -w net.ipv4.tcp_keepalive_time=%d` and persist it in /etc/sysctl.d/. "+
			"It applies to sockets with SO_KEEPALIVE that do not set TCP_KEEPIDLE, and to existing ones once their pending keepalive timer fires.", int(want.Seconds())),
		fmt.Sprintf("Better, set it per connection in the application: TCP_KEEPIDLE=%d s (Go net.KeepAliveConfig{Enable: true, Idle: %s}, Java ExtendedSocketOptions.TCP_KEEPIDLE, libpq keepalives_idle).", int(want.Seconds()), want),
	}
	if off > 0 {
		fix = append(fix, "Connections with keepalive off are not helped by this sysctl: enable SO_KEEPALIVE on them or evict idle pooled connections before the idle timeout (see idle-no-keepalive).")
	}
	return r.finding(sev, "net.ipv4.tcp_keepalive_time", sys.KeepaliveTime,
		fmt.Sprintf("tcp_keepalive_time=%d s is longer than the %s idle timeout", sys.KeepaliveTime, in.IdleTimeout), expl, ev, fix)
}

// usesDefaultKeepalive reports whether a socket's keepalive timer runs on
// the sysctl default: its keepalive period, as idle-no-keepalive estimates
// it (keepaliveOf), within 10% of tcp_keepalive_time means no TCP_KEEPIDLE
// override. A socket already probing (Retrans > 0) runs on the interval
// and tells nothing.
func usesDefaultKeepalive(sk *sockdiag.Socket, kat time.Duration) bool {
	period, _, ok := keepaliveOf(sk, kat)
	return ok && period > 0 && period >= kat*9/10 && period <= kat*11/10+time.Second
}

// retriesTooLong: a long tcp_retries2 is only felt when a peer stops
// answering, so it needs connections stalled in retransmission, as
// retransmit-stall decides it (stallOf), to fire at all.
func (r sysctlRule) retriesTooLong(in *Input) *Finding {
	sys := &in.Now.Sysctls
	budget := kernel.RetransmitBudget(sys.Retries2)
	if budget < longRetransmit {
		return nil
	}
	type stall struct {
		peer    string
		elapsed time.Duration
	}
	var (
		stalls     []stall
		maxBackoff uint8
		maxRTO     time.Duration
	)
	for i := range in.Now.Sockets {
		sk := &in.Now.Sockets[i]
		// Only connections with data in flight run on tcp_retries2;
		// handshakes use tcp_syn_retries and orphans tcp_orphan_retries.
		elapsed, _, _, syn, ok := stallOf(sk, sys)
		if !ok || syn || sk.Inode == 0 {
			continue
		}
		stalls = append(stalls, stall{peerOf(in.Now, sk).Name(), elapsed})
		maxBackoff = max(maxBackoff, sk.Info.Backoff)
		maxRTO = max(maxRTO, sk.Info.RTODuration())
	}
	if len(stalls) == 0 {
		return nil
	}
	slices.SortFunc(stalls, func(a, b stall) int {
		return cmp.Or(cmp.Compare(b.elapsed, a.elapsed), strings.Compare(a.peer, b.peer))
	})
	var peers []string
	for _, s := range stalls {
		if !slices.Contains(peers, s.peer) && len(peers) < 3 {
			peers = append(peers, s.peer)
		}
	}
	ev := map[string]any{
		"retransmit_budget_s": round1(budget.Seconds()), "stalled_sockets": len(stalls),
		"max_backoff": maxBackoff, "max_rto_ms": maxRTO.Milliseconds(), "peers": peers,
		"longest_stall_s": secs(stalls[0].elapsed),
	}
	expl := fmt.Sprintf("net.ipv4.tcp_retries2=%d lets a connection with unacknowledged data retransmit for about %.0f s (%s) before the kernel gives up with ETIMEDOUT. "+
		"%d connections are stalled right now, retransmitting with no ACK for up to %s (backoff up to %d, RTO up to %s), towards %s. "+
		"If those peers are gone, the requests on them hang for up to %s instead of failing fast, unless the application sets its own timeout or TCP_USER_TIMEOUT.",
		sys.Retries2, budget.Seconds(), budget.Round(time.Second), len(stalls), human(stalls[0].elapsed), maxBackoff, maxRTO, strings.Join(peers, ", "), budget.Round(time.Second))
	fix := []string{
		fmt.Sprintf("Give up sooner host-wide: `sysctl -w net.ipv4.tcp_retries2=8` (about %.0f s, still above RFC 1122's 100 s minimum) and persist it in /etc/sysctl.d/.", kernel.RetransmitBudget(8).Seconds()),
		"Or per connection, which also covers a peer that vanished mid-request: TCP_USER_TIMEOUT in milliseconds (PostgreSQL and libpq tcp_user_timeout, Go via syscall.SetsockoptInt on the raw conn), plus request timeouts in the application.",
		"See the retransmit-stall findings for the affected connections and what their peers are doing.",
	}
	return r.finding(Warning, "net.ipv4.tcp_retries2", sys.Retries2,
		fmt.Sprintf("tcp_retries2=%d keeps %d stalled connections hanging for up to %s", sys.Retries2, len(stalls), budget.Round(time.Second)), expl, ev, fix)
}

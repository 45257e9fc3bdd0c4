package doctor

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/kernel"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// idleNoKeepalive finds established connections that have sat idle longer
// than the idle timeout of the load balancer, NAT or firewall on the path,
// with no keepalive probe often enough to keep the device's flow entry. The
// device forgets such a flow without telling either end, so the next
// request on it gets an RST or hangs until the retransmission budget ends.
type idleNoKeepalive struct{}

func (idleNoKeepalive) ID() string { return "idle-no-keepalive" }

// DefaultIdleTimeout is AWS NLB's, the most common strict one (DESIGN.md
// section 5): the idle timeout assumed when the caller does not give one.
const DefaultIdleTimeout = 350 * time.Second

type idleRemote struct {
	peer      peer
	count     int
	noKA      int
	slowKA    int
	oldest    time.Duration
	kaMaxStep time.Duration // slowest keepalive period seen
}

type idleProc struct {
	ref     analyze.ProcRef
	owners  []analyze.ProcRef
	remotes map[peer]*idleRemote
	count   int
	noKA    int
	slowKA  int
	oldest  time.Duration
	slowest time.Duration
}

func (r idleNoKeepalive) Check(in *Input) []Finding {
	limit := in.IdleTimeout
	if limit <= 0 {
		limit = DefaultIdleTimeout
	}
	byPID := make(map[int]*idleProc)
	for i := range in.Now.Sockets {
		sk := &in.Now.Sockets[i]
		if sk.State != sockdiag.Established || !sk.HasInfo {
			continue
		}
		idle := sk.Info.Idle()
		if idle < limit {
			continue
		}
		period, protected, ok := keepaliveOf(sk, limit)
		if !ok || protected {
			continue
		}
		ref, owners := firstOwner(in, sk)
		p := byPID[ref.PID]
		if p == nil {
			p = &idleProc{ref: ref, owners: owners, remotes: make(map[peer]*idleRemote)}
			byPID[ref.PID] = p
		}
		pr := peerOf(in.Now, sk)
		g := p.remotes[pr]
		if g == nil {
			g = &idleRemote{peer: pr}
			p.remotes[pr] = g
		}
		p.count++
		g.count++
		if period == 0 {
			p.noKA++
			g.noKA++
		} else {
			p.slowKA++
			g.slowKA++
			p.slowest = max(p.slowest, period)
			g.kaMaxStep = max(g.kaMaxStep, period)
		}
		p.oldest = max(p.oldest, idle)
		g.oldest = max(g.oldest, idle)
	}
	list := make([]*idleProc, 0, len(byPID))
	for _, p := range byPID {
		list = append(list, p)
	}
	slices.SortFunc(list, func(a, b *idleProc) int {
		return cmp.Or(cmp.Compare(b.count, a.count), cmp.Compare(a.ref.PID, b.ref.PID))
	})
	var out []Finding
	for _, p := range list[:min(len(list), maxSubjects)] {
		out = append(out, r.finding(in, p, limit, len(list)))
	}
	return out
}

// keepaliveOf says whether keepalive protects an idle socket. period is the
// estimated time between keepalive probes, 0 without keepalive.
//
// The keepalive timer (Timer == keepalive, Retrans == 0) fires and probes
// once nothing was received for TCP_KEEPIDLE; otherwise it re-arms for the
// rest. So the silence since the last received segment (data, or the ACK
// of a probe) plus the timer's remaining time is when the next probe goes
// out, about TCP_KEEPIDLE; sock_diag does not report the option itself.
// Probes already unanswered (Retrans > 0) and sockets with data in flight
// (other timers) are not idle-timeout cases: ok is false.
func keepaliveOf(sk *sockdiag.Socket, limit time.Duration) (period time.Duration, protected, ok bool) {
	switch sk.Timer {
	case sockdiag.TimerOff, sockdiag.TimerDelayedAck:
		return 0, false, true
	case sockdiag.TimerKeepalive:
		if sk.Retrans > 0 {
			return 0, false, false
		}
		silence := min(ms(sk.Info.LastDataRecv), ms(sk.Info.LastAckRecv))
		period = silence + sk.TimerExpires
		return period, period <= limit, true
	}
	return 0, false, false
}

func (r idleNoKeepalive) finding(in *Input, p *idleProc, limit time.Duration, groups int) Finding {
	sys := &in.Now.Sysctls
	name := procName(p.ref)
	remotes := byCount(p.remotes, func(g *idleRemote) int { return g.count })
	var nums []map[string]any
	var text []string
	for _, g := range remotes[:min(len(remotes), maxRemotes)] {
		m := g.peer.numbers()
		m["count"] = g.count
		m["oldest_idle_s"] = secs(g.oldest)
		m["no_keepalive"] = g.noKA
		m["keepalive_too_slow"] = g.slowKA
		if g.slowKA > 0 {
			m["keepalive_every_s"] = secs(g.kaMaxStep)
		}
		nums = append(nums, m)
		text = append(text, fmt.Sprintf("%d to %s", g.count, g.peer))
	}
	ev := map[string]any{
		"process": name, "idle_timeout_s": secs(limit), "connections": p.count,
		"no_keepalive": p.noKA, "keepalive_too_slow": p.slowKA, "oldest_idle_s": secs(p.oldest),
		"remotes": nums, "tcp_keepalive_time": sys.KeepaliveTime,
		"tcp_keepalive_intvl": sys.KeepaliveIntvl, "tcp_keepalive_probes": sys.KeepaliveProbes,
	}
	if p.slowKA > 0 {
		ev["slowest_keepalive_s"] = secs(p.slowest)
	}
	if groups > maxSubjects {
		ev["processes_total"] = groups
	}

	var b strings.Builder
	fmt.Fprintf(&b, "%s holds %s (%s) idle for longer than the %s idle timeout assumed for this path, the longest for %s. ",
		name, plural(p.count, "connection", "connections"), strings.Join(text, ", "), human(limit), human(p.oldest))
	switch {
	case p.slowKA == 0:
		b.WriteString("None of them has keepalive on. ")
	case p.noKA == 0:
		fmt.Fprintf(&b, "They have keepalive on, but it first probes only after about %s of silence. ", human(p.slowest))
	default:
		fmt.Fprintf(&b, "%d have no keepalive and %d probe only after about %s of silence. ", p.noKA, p.slowKA, human(p.slowest))
	}
	fmt.Fprintf(&b, "A load balancer, NAT gateway or stateful firewall drops a flow after its idle timeout without telling either end, so the next request on such a connection is answered with an RST or hangs until the retransmission budget (%s with tcp_retries2 = %d) runs out. ",
		human(kernel.RetransmitBudget(sys.Retries2)), sys.Retries2)
	fmt.Fprintf(&b, "Keepalive packets keep the flow alive on most devices, but SO_KEEPALIVE alone waits tcp_keepalive_time = %d s here before the first probe.", sys.KeepaliveTime)

	return Finding{
		ID: r.ID(), Severity: Warning,
		Title:       fmt.Sprintf("%s keeps %s idle past the %s idle timeout", name, plural(p.count, "connection", "connections"), human(limit)),
		Evidence:    ev,
		Explanation: b.String(),
		Fix:         idleFixes(sys, limit),
		Subjects: []Subject{{
			Kind: "process", Name: name, Processes: p.owners,
			Numbers: map[string]any{"count": p.count, "oldest_idle_s": secs(p.oldest), "remotes": nums},
		}},
	}
}

// idleFixes suggests keepalive settings that probe well inside the limit.
func idleFixes(sys *kernel.Sysctls, limit time.Duration) []string {
	idle := max(min(60*time.Second, limit/2).Truncate(time.Second), time.Second)
	intvl := max((idle / 4).Truncate(time.Second), time.Second)
	is, vs, ls := int(idle.Seconds()), int(intvl.Seconds()), int(limit.Seconds())
	fixes := []string{
		fmt.Sprintf("Turn keepalive on with a first probe well inside the %d s timeout on every connection that may sit idle: SO_KEEPALIVE=1, TCP_KEEPIDLE=%d, TCP_KEEPINTVL=%d, TCP_KEEPCNT=3 (AWS NLB and conntrack count keepalive packets as activity; the Classic ELB does not, so there only pool eviction helps).", ls, is, vs),
		fmt.Sprintf("Go: do not set net.Dialer{KeepAlive: -1}; the default probes after 15 s, or set net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: %d * time.Second, Interval: %d * time.Second, Count: 3}} (net.ListenConfig has the same field for accepted connections).", is, vs),
		fmt.Sprintf("Java: socket.setKeepAlive(true) plus socket.setOption(ExtendedSocketOptions.TCP_KEEPIDLE, %d) (JDK 11+); PostgreSQL JDBC tcpKeepAlive=true uses only the system default; HikariCP keepaliveTime below %d s pings idle connections. Python: setsockopt SO_KEEPALIVE and TCP_KEEPIDLE=%d; libpq keepalives_idle=%d; Node.js socket.setKeepAlive(true, %d).", is, ls, is, is, is*1000),
		fmt.Sprintf("Evict idle pooled connections before the device does: an idle timeout below %d s (Go http.Transport.IdleConnTimeout, database/sql SetConnMaxIdleTime, HikariCP idleTimeout) and a maxLifetime a little below the shortest timeout on the path, with validation on borrow.", ls),
	}
	if sys.KeepaliveTime > ls {
		fixes = append(fixes, fmt.Sprintf("Host-wide fallback for programs that set SO_KEEPALIVE without TCP_KEEPIDLE: `sysctl -w net.ipv4.tcp_keepalive_time=%d` (now %d s); it does nothing for sockets without SO_KEEPALIVE.", is, sys.KeepaliveTime))
	}
	return append(fixes, "Or raise the device's idle timeout (AWS NLB: 60-6000 s; Azure Load Balancer: 4-100 min, and turn on \"TCP reset on idle\" so clients fail fast).")
}

package doctor

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/churn"
	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// timewaitChurn measures how fast connections are closed from the TIME_WAIT
// sockets they leave behind, split by who closed first. TIME_WAIT lasts
// exactly 60 s, so N sockets are N/60 closes/s averaged over the last
// minute. Port budgets are port-exhaustion's job; this rule is about the
// rate, which shows the dial-per-request pattern long before ports run out.
type timewaitChurn struct{}

func (timewaitChurn) ID() string { return "timewait-churn" }

// churnMinRate is where churn stops being noise: 10 closes/s (600 TIME_WAIT
// sockets for one destination or listener) is far more than a pooled client
// or a keep-alive server produces, yet only 2% of the ~470/s one destination
// can sustain with the default port range, so it names the pattern well
// before port-exhaustion fires.
const churnMinRate = 10.0

// churnGroup is the TIME_WAIT of one destination (client side: this host
// dialled and closed first) or one listener (server side: this host
// accepted and closed first).
type churnGroup struct {
	side  snapshot.Side // Client (bind()-before-connect() folded in) or Server
	name  string        // "10.0.0.5:5432" or the listener, "0.0.0.0:80"
	count int
	bound int // client side: sockets from a fixed, non-ephemeral local port
	// peers counts sockets per source IP (client side) or client IP
	// (server side).
	peers map[netip.Addr]int
	// maxRemaining is the longest TIME_WAIT timer left: 60 s minus it is
	// how long ago the last connection of the group closed.
	maxRemaining time.Duration
	procs        []analyze.ProcRef
	// established counts the open connections to the destination (client
	// side only).
	established int
}

func (g *churnGroup) key() string { return g.side.String() + " " + g.name }

// sinceLastClose is how long ago the youngest socket entered TIME_WAIT.
func (g *churnGroup) sinceLastClose() time.Duration {
	return max(snapshot.TimeWaitLen-g.maxRemaining, 0)
}

// groupTimeWait folds the TIME_WAIT tallies of s into destinations and
// listeners, most sockets first, naming them from the listeners and
// destinations of s (Input caches both). Without destinations the client groups name no process
// and no established count, which only the counts of an earlier snapshot
// can do without.
func groupTimeWait(s *snapshot.Snapshot, listeners []analyze.Listener, destinations []analyze.Destination) []*churnGroup {
	m := make(map[string]*churnGroup)
	get := func(side snapshot.Side, name string) *churnGroup {
		k := side.String() + " " + name
		g := m[k]
		if g == nil {
			g = &churnGroup{side: side, name: name, peers: make(map[netip.Addr]int)}
			m[k] = g
		}
		return g
	}
	for _, tw := range s.TimeWait {
		var g *churnGroup
		if tw.Side == snapshot.Server {
			l := listenerOf(listeners, netip.AddrPortFrom(tw.Local, tw.LocalPort))
			name := netip.AddrPortFrom(tw.Local, tw.LocalPort).String()
			if l != nil {
				name = l.Local.String()
			}
			g = get(snapshot.Server, name)
			if l != nil {
				g.procs = l.Processes
			}
			g.peers[tw.Remote] += tw.Count
		} else {
			g = get(snapshot.Client, netip.AddrPortFrom(tw.Remote, tw.RemotePort).String())
			if tw.Side == snapshot.Bound {
				g.bound += tw.Count
			}
			g.peers[tw.Local] += tw.Count
		}
		g.count += tw.Count
		g.maxRemaining = max(g.maxRemaining, tw.MaxRemaining)
	}
	// The client's process is whoever still holds connections to the
	// destination; the TIME_WAIT sockets themselves have no owner.
	dests := make(map[string]*analyze.Destination, len(destinations))
	for i := range destinations {
		dests[destinations[i].Remote.String()] = &destinations[i]
	}
	out := make([]*churnGroup, 0, len(m))
	for _, g := range m {
		if d := dests[g.name]; d != nil && g.side == snapshot.Client {
			g.procs, g.established = d.Processes, d.States[sockdiag.Established]
		}
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b *churnGroup) int {
		return cmp.Or(cmp.Compare(b.count, a.count), cmp.Compare(a.side, b.side), strings.Compare(a.name, b.name))
	})
	return out
}

// listenerOf finds the listener a server-side TIME_WAIT socket came from:
// the exact address, else a wildcard listener on the port.
func listenerOf(ls []analyze.Listener, local netip.AddrPort) *analyze.Listener {
	var wild *analyze.Listener
	for i := range ls {
		l := &ls[i]
		if l.Local.Port() != local.Port() {
			continue
		}
		if l.Local.Addr() == local.Addr() || l.Local.Addr().Unmap() == local.Addr().Unmap() {
			return l
		}
		if wild == nil && l.Local.Addr().IsUnspecified() {
			wild = l
		}
	}
	return wild
}

// churnRate is the close rate of g: the 60-second average, or the growth
// between two snapshots when that is higher (a burst that started less than
// a minute ago has not filled the window yet). Both are lower bounds of the
// true rate, so the higher one is the better estimate. Growth is taken over
// at least one second, so a few closes in a very short interval do not read
// as a flood.
func churnRate(in *Input, g *churnGroup, prev map[string]int) (rate, avg, growth float64, haveGrowth bool) {
	avg = float64(g.count) / snapshot.TimeWaitLen.Seconds()
	rate = avg
	if iv := in.Interval(); prev != nil && iv > 0 {
		growth = float64(g.count-prev[g.key()]) / max(iv.Seconds(), 1)
		haveGrowth = true
		rate = max(rate, growth)
	}
	return rate, avg, growth, haveGrowth
}

// measured returns the close rate of g from destroy events: all closes of
// connections to the destination (client side) or accepted on the listener
// (server side). On the client side that includes connections the server
// closed first, which leave no TIME_WAIT here; for the dial-per-request
// pattern this rule names, they are few. ok is false without events or when
// the destination was folded into the window's "other".
func (g *churnGroup) measured(w *churn.Window) (rate float64, closed int, ok bool) {
	if w == nil || w.Duration() <= 0 {
		return 0, 0, false
	}
	ap, err := netip.ParseAddrPort(g.name)
	if err != nil {
		return 0, 0, false
	}
	if g.side == snapshot.Server {
		return w.ServerRate(ap)
	}
	return w.ClientRate(ap)
}

func (r timewaitChurn) Check(in *Input) []Finding {
	var prev map[string]int
	if in.Prev != nil {
		prev = make(map[string]int)
		// Only the counts of Prev are needed, not who holds what.
		for _, g := range groupTimeWait(in.Prev, analyze.Listeners(in.Prev), nil) {
			prev[g.key()] = g.count
		}
	}
	var out []Finding
	perSide := map[snapshot.Side]int{}
	for _, g := range groupTimeWait(in.Now, in.Listeners(), in.Destinations()) {
		rate, avg, growth, haveGrowth := churnRate(in, g, prev)
		source := "time_wait_count"
		measured, closed, haveMeasured := g.measured(in.Churn)
		if haveMeasured {
			// The measured rate replaces the growth estimate; the minute's
			// average still counts, so a burst that just stopped is named.
			rate, haveGrowth = max(measured, avg), false
			if measured >= avg {
				source = "destroy_events"
			}
		}
		if rate < churnMinRate || perSide[g.side] == maxSubjects {
			continue
		}
		perSide[g.side]++
		ev := map[string]any{
			"side": g.side.String(), "time_wait": g.count,
			"close_rate_per_s": round1(rate), "avg_close_rate_per_s": round1(avg),
			"close_rate_source":        source,
			"seconds_since_last_close": round1(g.sinceLastClose().Seconds()),
			"min_rate_per_s":           churnMinRate,
		}
		if haveGrowth {
			ev["growth_per_s"] = round1(growth)
			ev["interval_s"] = round1(in.Interval().Seconds())
		}
		if haveMeasured {
			ev["measured_close_rate_per_s"] = round1(measured)
			ev["measured_closes"] = closed
			ev["measured_window_s"] = round1(in.Churn.Duration().Seconds())
			ev["dropped_events"] = in.Churn.Dropped
		}
		if g.side == snapshot.Server {
			out = append(out, r.server(in, g, rate, ev))
		} else {
			out = append(out, r.client(in, g, rate, ev))
		}
	}
	return out
}

func (r timewaitChurn) client(in *Input, g *churnGroup, rate float64, ev map[string]any) Finding {
	sys := &in.Now.Sysctls
	ev["destination"] = g.name
	ev["sources"] = len(g.peers)
	ev["established"] = g.established
	ev["tcp_tw_reuse"] = sys.TWReuse
	ev["tcp_timestamps"] = sys.Timestamps
	if g.bound > 0 {
		ev["bound_port_time_wait"] = g.bound
	}
	who := "The process is not known (it holds no open connection to " + g.name + " right now, or it could not be inspected)."
	if len(g.procs) > 0 {
		who = fmt.Sprintf("%s holds the open connections to %s, so it is the likely source.", procList(g.procs), g.name)
	}
	expl := fmt.Sprintf("%d connections from this host to %s are in TIME_WAIT: %s. "+
		"This host closed first, so it is dialling a new connection per request or per short batch instead of reusing one; "+
		"each costs a handshake (and a TLS handshake if any) and parks an ephemeral port for 60 s. %s%s",
		g.count, g.name, rateText(g, ev), who, stopped(g))
	fix := []string{
		fmt.Sprintf("Reuse connections to %s instead of dialling per request: keep a pool whose idle size equals its active size "+
			"(Go http.Transport MaxIdleConnsPerHost = MaxConnsPerHost; HikariCP minimumIdle = maximumPoolSize; "+
			"nginx `upstream { keepalive N; }` with `proxy_http_version 1.1;` and `proxy_set_header Connection \"\";`; or github.com/tcplens/tcplens/pool).", g.name),
		"Check that neither side disables keep-alive: a `Connection: close` header, HTTP/1.0, or a client library that closes the response body without reading it to the end all force a new connection.",
	}
	switch {
	case sys.Timestamps == 0:
		fix = append(fix, "tcp_tw_reuse cannot help while net.ipv4.tcp_timestamps=0; pooling is the only remedy here.")
	case sys.TWReuse == 1:
		fix = append(fix, "tcp_tw_reuse=1 is already on: it lets connect() recycle these ports but does not reduce the churn itself.")
	case sys.TWReuse == 2 && isLoopbackName(g.name):
		fix = append(fix, "tcp_tw_reuse=2 already recycles TIME_WAIT ports towards loopback destinations like this one; the churn itself remains.")
	default:
		fix = append(fix, fmt.Sprintf("As a stop-gap, `sysctl -w net.ipv4.tcp_tw_reuse=1` (now %d) lets connect() recycle TIME_WAIT ports; it treats the port cost, not the churn.", sys.TWReuse))
	}
	fix = append(fix, "Do not try to shorten TIME_WAIT with net.ipv4.tcp_fin_timeout: it governs orphaned FIN_WAIT2 only; TIME_WAIT is fixed at 60 s in the kernel.")
	if g.bound > 0 {
		fix = append(fix, fmt.Sprintf("%d of these sockets came from a fixed local port (bind() before connect()): set IP_BIND_ADDRESS_NO_PORT so each bound port is not reserved towards every destination.", g.bound))
	}
	return Finding{
		ID: r.ID(), Severity: Warning,
		Title:       fmt.Sprintf("This host opens and closes %.0f connections/s to %s", rate, g.name),
		Evidence:    ev,
		Explanation: expl,
		Fix:         fix,
		Subjects: []Subject{{
			Kind: "destination", Name: g.name, Processes: g.procs,
			Numbers: map[string]any{"time_wait": g.count, "close_rate_per_s": round1(rate), "sources": len(g.peers)},
		}},
	}
}

func (r timewaitChurn) server(in *Input, g *churnGroup, rate float64, ev map[string]any) Finding {
	ev["listener"] = g.name
	ev["clients"] = len(g.peers)
	top := topPeers(g.peers, 3)
	ev["top_clients"] = top
	who := ""
	if len(g.procs) > 0 {
		who = fmt.Sprintf(" The listener belongs to %s.", procList(g.procs))
	}
	expl := fmt.Sprintf("%d connections accepted on %s from %s are in TIME_WAIT because this host closed them first: %s.%s "+
		"On the server side this is usually harmless: the sockets sit on the listening port, use no ephemeral port and about 256 bytes of kernel memory each. "+
		"It does show that clients make a new connection per request, or that the server ends keep-alive connections after each response.%s",
		g.count, g.name, plural(len(g.peers), "client address", "client addresses"), rateText(g, ev), who, stopped(g))
	fix := []string{
		fmt.Sprintf("Turn on HTTP keep-alive (connection reuse) in the clients; the busiest are %s. HTTP/1.1 with a pooled client reuses connections unless a side sends `Connection: close`.", strings.Join(top, ", ")),
		"If the server ends keep-alive connections early, raise its limits: nginx `keepalive_timeout` and `keepalive_requests`, Go http.Server IdleTimeout, Apache KeepAliveTimeout/MaxKeepAliveRequests.",
		"Load balancer health checks open a fresh connection every time; if the busiest client is the balancer, this TIME_WAIT is expected and can be left alone.",
		"No sysctl is needed: server-side TIME_WAIT costs no ephemeral port, and tcp_tw_reuse only affects outgoing connect().",
	}
	return Finding{
		ID: r.ID(), Severity: Info,
		Title:       fmt.Sprintf("Listener %s closes %.0f client connections/s", g.name, rate),
		Evidence:    ev,
		Explanation: expl,
		Fix:         fix,
		Subjects: []Subject{{
			Kind: "listener", Name: g.name, Processes: g.procs,
			Numbers: map[string]any{"time_wait": g.count, "close_rate_per_s": round1(rate), "clients": len(g.peers)},
		}},
	}
}

// rateText explains where the close rate comes from.
func rateText(g *churnGroup, ev map[string]any) string {
	t := fmt.Sprintf("TIME_WAIT lasts exactly 60 s, so %d/60 = %.1f closes/s on average over the last minute", g.count, ev["avg_close_rate_per_s"])
	if m, ok := ev["measured_close_rate_per_s"].(float64); ok {
		t = fmt.Sprintf("the kernel reported %d closes in the last %.1f s through its destroy events (%.1f/s, every connection counted, however short); ",
			ev["measured_closes"], ev["measured_window_s"], m) + t
		if d, _ := ev["dropped_events"].(uint64); d > 0 {
			t += fmt.Sprintf(" (%d destroy events were dropped, so the measured rate is a lower bound)", d)
		}
	}
	if growth, ok := ev["growth_per_s"].(float64); ok && growth > ev["avg_close_rate_per_s"].(float64) {
		t += fmt.Sprintf(", and the count grew by %.1f/s between the snapshots, so the current rate is at least that", growth)
	}
	return t
}

// stopped says when the churn ended, if the youngest socket is old enough
// that closes have visibly stopped.
func stopped(g *churnGroup) string {
	if since := g.sinceLastClose(); since >= 5*time.Second {
		return fmt.Sprintf(" The youngest of them closed %.0f s ago, so this was a burst that has stopped for now.", since.Seconds())
	}
	return ""
}

// topPeers lists the n addresses with the most sockets as "ip (count)".
func topPeers(peers map[netip.Addr]int, n int) []string {
	addrs := make([]netip.Addr, 0, len(peers))
	for a := range peers {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return cmp.Or(cmp.Compare(peers[b], peers[a]), a.Compare(b)) })
	var out []string
	for _, a := range addrs[:min(n, len(addrs))] {
		out = append(out, fmt.Sprintf("%s (%d)", a, peers[a]))
	}
	return out
}

// procList names processes as "comm/pid, comm/pid".
func procList(ps []analyze.ProcRef) string {
	names := make([]string, 0, len(ps))
	for _, p := range ps {
		names = append(names, procName(p))
	}
	return strings.Join(names, ", ")
}

func isLoopbackName(addrPort string) bool {
	ap, err := netip.ParseAddrPort(addrPort)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// clientTimeWait counts TIME_WAIT sockets this host holds as the dialler.
func clientTimeWait(s *snapshot.Snapshot) int {
	n := 0
	for _, g := range s.TimeWait {
		if g.Side != snapshot.Server {
			n += g.Count
		}
	}
	return n
}

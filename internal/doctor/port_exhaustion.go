package doctor

import (
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/snapshot"
)

// portExhaustion compares ports in use per (src IP, dst IP, dst port) with
// the usable ephemeral range. It warns at half the range, because past that
// connect() scans the other parity of the range and slows sharply.
type portExhaustion struct{}

func (portExhaustion) ID() string { return "port-exhaustion" }

const (
	portWarn     = 0.5
	portCritical = 0.8
	maxSubjects  = 5
)

func (r portExhaustion) Check(in *Input) []Finding {
	fails, haveFails := in.Delta("Tcp.AttemptFails")
	var prev map[analyze.BudgetKey]int
	if in.Prev != nil {
		prev = make(map[analyze.BudgetKey]int)
		for _, b := range in.prevBudgets() {
			prev[b.BudgetKey] = b.InUse
		}
	}
	var out []Finding
	for _, b := range in.PortBudgets() {
		if b.Range == 0 || b.Used < portWarn {
			continue
		}
		sev := Warning
		if b.Used >= portCritical || (haveFails && fails > 0) {
			sev = Critical
		}
		if len(out) == maxSubjects {
			break
		}
		out = append(out, r.finding(in, b, sev, prev, fails, haveFails))
	}
	return out
}

func (r portExhaustion) finding(in *Input, b analyze.PortBudget, sev Severity, prev map[analyze.BudgetKey]int, fails int64, haveFails bool) Finding {
	sys := &in.Now.Sysctls
	dst := netip.AddrPortFrom(b.Dst, b.DstPort).String()
	tw := b.TimeWait()
	closeRate := float64(tw) / snapshot.TimeWaitLen.Seconds() // steady state: TIME_WAIT = rate x 60 s
	source := "time_wait_count"
	closedText := fmt.Sprintf("%d connections to it were closed in the last minute (%.1f/s on average)", tw, closeRate)
	var measured map[string]any
	if w := in.Churn; w != nil && w.Duration() > 0 {
		// Destroy events count every close to the destination, from any
		// source address, during the interval: the current rate.
		if rate, closed, ok := w.ClientRate(netip.AddrPortFrom(b.Dst, b.DstPort)); ok {
			source, closeRate = "destroy_events", rate
			measured = map[string]any{"measured_closes": closed, "measured_window_s": round1(w.Duration().Seconds()), "dropped_events": w.Dropped}
			closedText = fmt.Sprintf("The kernel reported %d closes of connections to it in the last %.1f s through its destroy events (%.1f/s); %d TIME_WAIT sockets are the last minute's closes",
				closed, w.Duration().Seconds(), rate, tw)
			if w.Dropped > 0 {
				closedText += fmt.Sprintf(" (%d events were dropped, so the measured rate is a lower bound)", w.Dropped)
			}
		}
	}
	sustainable := float64(b.Range) / snapshot.TimeWaitLen.Seconds()
	ev := map[string]any{
		"src": b.Src.String(), "dst": dst, "ports_in_use": b.InUse, "range": b.Range,
		"used_percent": round1(b.Used * 100), "time_wait": tw,
		"time_wait_share_percent": round1(100 * float64(tw) / float64(max(b.InUse, 1))),
		"close_rate_per_s":        round1(closeRate), "sustainable_rate_per_s": round1(sustainable),
		"close_rate_source": source,
		"tcp_tw_reuse":      sys.TWReuse, "tcp_timestamps": sys.Timestamps,
		"ip_local_port_range": fmt.Sprintf("%d %d", sys.LocalPortRange.Lo, sys.LocalPortRange.Hi),
	}
	if haveFails {
		ev["attempt_fails_delta"] = fails
	}
	for k, v := range measured {
		ev[k] = v
	}
	left := ""
	if p, ok := prev[b.BudgetKey]; ok && in.Interval() > 0 {
		growth := float64(b.InUse-p) / in.Interval().Seconds()
		ev["growth_per_s"] = round1(growth)
		if growth > 0 {
			secs := float64(b.Range-b.InUse) / growth
			ev["seconds_to_exhaustion"] = round1(secs)
			left = fmt.Sprintf(" At the current growth of %.0f ports/s the range runs out in about %s.", growth, time.Duration(secs*float64(time.Second)).Round(time.Second))
		}
	}

	expl := fmt.Sprintf("%d of the %d usable ephemeral ports from %s to %s are in use (%.0f%%), %d of them in TIME_WAIT. "+
		"This host closes these connections first, so each one keeps its port for 60 s after close; TIME_WAIT's length is fixed in the kernel. "+
		"%s; the most it can sustain is %d/60 s = %.1f/s before connect() fails with EADDRNOTAVAIL (\"cannot assign requested address\"). "+
		"Past half the range connect() already slows sharply, because the kernel searches one parity of the range before the other.%s",
		b.InUse, b.Range, b.Src, dst, b.Used*100, tw, closedText, b.Range, sustainable, left)
	if haveFails && fails > 0 {
		expl += fmt.Sprintf(" Tcp AttemptFails rose by %d during the interval.", fails)
	}

	return Finding{
		ID: r.ID(), Severity: sev,
		Title:       fmt.Sprintf("Ephemeral ports from %s to %s are %.0f%% used", b.Src, dst, b.Used*100),
		Evidence:    ev,
		Explanation: expl,
		Fix:         portFixes(in, b),
		Subjects: []Subject{{
			Kind: "destination", Name: dst, Processes: b.Processes,
			Numbers: map[string]any{"src": b.Src.String(), "ports_in_use": b.InUse, "time_wait": tw, "range": b.Range},
		}},
	}
}

// portFixes tailors the remedies to what this host has set.
func portFixes(in *Input, b analyze.PortBudget) []string {
	sys := &in.Now.Sysctls
	fixes := []string{
		"Keep connections open and reuse them instead of dialling per request: size the pool so idle connections equal active ones " +
			"(HikariCP minimumIdle = maximumPoolSize; Apache HttpClient 5 setMaxConnPerRoute; Go http.Transport MaxIdleConnsPerHost = MaxConnsPerHost; " +
			"nginx `upstream { keepalive N; }` with `proxy_http_version 1.1;` and `proxy_set_header Connection \"\";`; or github.com/tcplens/tcplens/pool).",
	}
	delay := 1000
	if sys.HasTWReuseDelay {
		delay = sys.TWReuseDelayMs
	}
	switch {
	case sys.Timestamps == 0:
		fixes = append(fixes, "TCP timestamps are off (net.ipv4.tcp_timestamps=0), so tcp_tw_reuse cannot work: enable them with `sysctl -w net.ipv4.tcp_timestamps=1` before relying on reuse.")
	case sys.TWReuse != 1:
		fixes = append(fixes, fmt.Sprintf("Let connect() reuse TIME_WAIT ports towards busy destinations: `sysctl -w net.ipv4.tcp_tw_reuse=1` (now %d; 2 means loopback only). "+
			"Timestamps are on, so it will work; a port becomes reusable %d ms after it entered TIME_WAIT, about %.0f connects/s for this destination.",
			sys.TWReuse, delay, float64(b.Range)*1000/float64(max(delay, 1))))
	default:
		fixes = append(fixes, fmt.Sprintf("tcp_tw_reuse=1 is already on; it caps reuse at about %d ports / %d ms, so pooling is the lasting fix.", b.Range, delay))
	}
	if b.Range < 60000 {
		fixes = append(fixes, fmt.Sprintf("Widen the range (now %d-%d, %d usable ports): `sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\"`, "+
			"and list any listening ports inside it in net.ipv4.ip_local_reserved_ports.", sys.LocalPortRange.Lo, sys.LocalPortRange.Hi, b.Range))
	}
	fixes = append(fixes,
		fmt.Sprintf("Spread the load: the budget is per (source IP, destination IP, destination port), so each extra backend address, port or source IP adds %d ports.", b.Range),
		"If the client calls bind() before connect() (to choose a source IP), set IP_BIND_ADDRESS_NO_PORT on the socket; otherwise each bound port is reserved towards every destination.")
	return fixes
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

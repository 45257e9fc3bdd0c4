package exporter

import (
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/internal/watch"
)

// Other is the label value of the series that sums everything past a cap.
const Other = "other"

// Unknown labels CLOSE_WAIT sockets whose process could not be found (not
// root, or the owner exited between the dump and the /proc walk).
const Unknown = "unknown"

// Counters lists the kernel counters exported, as "Section.Field" keys of
// kernel.Counters: every one a doctor rule reads, the ones the runbooks
// name, and the opens and resets that put them in proportion. Each becomes
// tcplens_netstat_<Section>_<Field>_total, node_exporter's
// node_netstat_<Section>_<Field> with the counter suffix.
var Counters = []string{
	// read by doctor rules
	"Tcp.AttemptFails",           // port-exhaustion: connect() failures
	"TcpExt.ListenOverflows",     // listen-overflow
	"TcpExt.ListenDrops",         // listen-overflow
	"TcpExt.SyncookiesSent",      // listen-overflow
	"TcpExt.TCPReqQFullDrop",     // listen-overflow
	"TcpExt.TCPTimeWaitOverflow", // tw-bucket-overflow
	// named in runbooks and alerts
	"TcpExt.TCPAbortOnTimeout", // connections killed by the retransmit/keepalive timers
	"Tcp.EstabResets",
	"Tcp.RetransSegs",
	"Tcp.OutSegs",
	"Tcp.ActiveOpens",
	"Tcp.PassiveOpens",
	"Tcp.OutRsts",
	"TcpExt.TW", // sockets that finished TIME_WAIT normally
	"TcpExt.TCPAbortOnData",
	"TcpExt.TCPAbortOnClose",
	"TcpExt.TCPSynRetrans",
	"TcpExt.TCPTimeouts",
}

// CounterName is the metric name of a Counters key.
func CounterName(key string) string {
	return "tcplens_netstat_" + strings.ReplaceAll(key, ".", "_") + "_total"
}

type descs struct {
	// scrape health
	success, age, timestamp, took, samples, failures, maxAge *prometheus.Desc
	// data
	sockets, ephemeral, inUse, used, budgets, closeWait, finding *prometheus.Desc
	closed, churnDropped                                         *prometheus.Desc
	counters                                                     map[string]*prometheus.Desc
}

func newDescs() *descs {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tcplens_"+name, help, labels, nil)
	}
	budget := []string{"src", "dst", "dst_port"}
	ds := &descs{
		success:      d("scrape_success", "1 if the served sample is at most tcplens_max_sample_age_seconds old; 0 means no data series are served."),
		age:          d("last_sample_age_seconds", "Age of the newest sample at scrape time."),
		timestamp:    d("last_sample_timestamp_seconds", "Unix time the newest sample was taken."),
		took:         d("last_sample_duration_seconds", "Time the newest sample's socket dump and process scan took."),
		samples:      d("samples_total", "Samples taken since start."),
		failures:     d("sample_errors_total", "Samples that failed since start."),
		maxAge:       d("max_sample_age_seconds", "Oldest sample a scrape serves (--max-age)."),
		sockets:      d("sockets", "TCP sockets per state.", "state"),
		ephemeral:    d("ephemeral_ports", "Usable ephemeral ports: net.ipv4.ip_local_port_range minus ip_local_reserved_ports. Each (src, dst, dst_port) has this many."),
		inUse:        d("ports_in_use", `Ephemeral ports in use per (src, dst, dst_port), every state including TIME_WAIT; the top --max-destinations, the rest summed under "other".`, budget...),
		used:         d("port_budget_used_ratio", "ports_in_use / ephemeral_ports for the top --max-destinations; connect() slows past 0.5 and fails at 1.", budget...),
		budgets:      d("port_budget_destinations", "Distinct (src, dst, dst_port) using ephemeral ports, before the cap."),
		closeWait:    d("close_wait_sockets", `CLOSE_WAIT sockets per owning process: the top --max-processes, the rest under pid="other", sockets without a known owner under pid="unknown".`, "pid", "comm"),
		finding:      d("finding", "Doctor findings on the newest sample, per rule id and severity.", "id", "severity"),
		closed:       d("connections_closed_total", `Connections closed since start, from the kernel's sock_diag destroy events, per destination: for side="client" the remote address this host dialled, for side="server" the local listener. The top --max-destinations by total; the rest under dst="other".`, "dst", "side"),
		churnDropped: d("destroy_events_dropped_total", "Destroy events the kernel dropped because tcplens's receive buffer was full: connections_closed_total misses this many."),
		counters:     make(map[string]*prometheus.Desc, len(Counters)),
	}
	for _, k := range Counters {
		ds.counters[k] = prometheus.NewDesc(CounterName(k), "Kernel counter "+k+" of /proc/net/netstat or /proc/net/snmp.", nil, nil)
	}
	return ds
}

func (d *descs) describe(ch chan<- *prometheus.Desc) {
	for _, x := range []*prometheus.Desc{d.success, d.age, d.timestamp, d.took, d.samples, d.failures, d.maxAge,
		d.sockets, d.ephemeral, d.inUse, d.used, d.budgets, d.closeWait, d.finding, d.closed, d.churnDropped} {
		ch <- x
	}
	for _, k := range Counters {
		ch <- d.counters[k]
	}
}

// sampleMetrics derives every data series of one sample; closed holds the
// churn totals up to and including it.
func (d *descs) sampleMetrics(s *watch.Sample, closed *closedTotals, maxDst, maxProc int) []prometheus.Metric {
	snap := s.Snap
	var out []prometheus.Metric
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		out = append(out, prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...))
	}

	for _, st := range sockdiag.AllStates() {
		gauge(d.sockets, float64(snap.Count(st)), st.String())
	}
	for _, k := range Counters {
		if v, ok := snap.Counters[k]; ok {
			// Kernel counters are unsigned; kernel.Counters wraps them into int64.
			out = append(out, prometheus.MustNewConstMetric(d.counters[k], prometheus.CounterValue, float64(uint64(v))))
		}
	}
	gauge(d.ephemeral, float64(snap.Sysctls.EphemeralPorts()))

	budgets := s.Budgets // most ports in use first
	gauge(d.budgets, float64(len(budgets)))
	capped(budgets, maxDst, func(b analyze.PortBudget) {
		labels := []string{b.Src.String(), b.Dst.String(), strconv.Itoa(int(b.DstPort))}
		gauge(d.inUse, float64(b.InUse), labels...)
		gauge(d.used, b.Used, labels...)
	}, func(rest []analyze.PortBudget) {
		n := 0
		for _, b := range rest {
			n += b.InUse
		}
		gauge(d.inUse, float64(n), Other, Other, Other)
	})

	// Sockets no visible process holds (PID 0) go to their own series.
	var cw []analyze.CloseWait
	for _, p := range analyze.CloseWaitByProcess(snap, 0) {
		if p.PID == 0 {
			gauge(d.closeWait, float64(p.Count), Unknown, Unknown)
		} else {
			cw = append(cw, p)
		}
	}
	capped(cw, maxProc, func(p analyze.CloseWait) {
		gauge(d.closeWait, float64(p.Count), strconv.Itoa(p.PID), p.Comm)
	}, func(rest []analyze.CloseWait) {
		n := 0
		for _, p := range rest {
			n += p.Count
		}
		gauge(d.closeWait, float64(n), Other, Other)
	})

	if closed.enabled {
		top, rest := closed.top(maxDst)
		for _, t := range top {
			out = append(out, prometheus.MustNewConstMetric(d.closed, prometheus.CounterValue, float64(t.closed), t.dest.Addr.String(), t.dest.Side.String()))
		}
		out = append(out, prometheus.MustNewConstMetric(d.closed, prometheus.CounterValue, float64(rest), Other, Other))
		out = append(out, prometheus.MustNewConstMetric(d.churnDropped, prometheus.CounterValue, float64(closed.dropped)))
	}

	if s.Report != nil {
		type key struct{ id, sev string }
		n := make(map[key]int)
		for _, f := range s.Report.Findings {
			n[key{f.ID, f.Severity.String()}]++
		}
		for k, v := range n {
			gauge(d.finding, float64(v), k.id, k.sev)
		}
	}
	return out
}

// capped emits the first max items one by one and hands the rest to other
// (also when empty, so the "other" series exists from the first scrape):
// max+1 series at most, whatever the host does.
func capped[T any](items []T, max int, each func(T), other func(rest []T)) {
	n := min(len(items), max)
	for _, it := range items[:n] {
		each(it)
	}
	other(items[n:])
}

package top

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/doctor"
	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/internal/watch"
)

// MaxRows bounds every panel's rows in a Frame. Sorting and filtering in
// the view work on these rows only, which keeps each keypress O(MaxRows):
// a filter that matches nothing among the top MaxRows by the panel's main
// measure shows nothing, even if a smaller row elsewhere would match.
const MaxRows = 500

// Frame is what the view shows of one sample. It is built off the UI
// goroutine and never changed afterwards.
type Frame struct {
	Time  time.Time
	Took  time.Duration // how long the snapshot took
	Netns string
	Total int
	// States counts every socket of the namespace (not filtered).
	States [16]int

	Ports      []PortRow
	PortsTotal int // rows before the MaxRows cut

	// Churn holds connections closed per destination from destroy events;
	// ChurnAvailable is false until watch samples carry them (see churnRows).
	Churn          []ChurnRow
	ChurnAvailable bool
	// TWRates estimates closes/s from TIME_WAIT (count / 60 s).
	TWRates      []TWRateRow
	TWRatesTotal int
	TimeWait     int

	CloseWait      []CloseWaitRow
	CloseWaitTotal int // processes

	Retrans      []RetransRow
	RetransTotal int // connections

	Findings []FindingRow
}

// PortRow is the ephemeral port budget of one (src, dst, dport).
type PortRow struct {
	Src, Dst netip.Addr
	DstPort  uint16
	InUse    int
	TimeWait int
	Estab    int
	Used     float64
	Procs    []analyze.ProcRef
}

// ChurnRow is one destination's connection churn from destroy events.
type ChurnRow struct {
	Dest         string // "10.0.0.5:5432", or "10.0.0.1:80 (listener)"
	ClosedPerSec float64
	LifetimeP50  time.Duration
	LifetimeP99  time.Duration
	RetransClose uint64 // retransmitted segments of the closed connections
}

// TWRateRow is TIME_WAIT towards one destination (Client side: this host
// dialled and closed first) or on one listening port (Server side). TIME_WAIT
// lasts 60 s, so Count/60 is the average close rate of the last minute.
type TWRateRow struct {
	Side   snapshot.Side
	Local  netip.Addr
	Remote netip.AddrPort // port 0 for Server rows
	Port   uint16         // the listening port for Server rows
	Count  int
}

// PerSec is the estimated close rate.
func (r *TWRateRow) PerSec() float64 { return float64(r.Count) / snapshot.TimeWaitLen.Seconds() }

// Name is the destination or listener the row is about.
func (r *TWRateRow) Name() string {
	if r.Side == snapshot.Server {
		return "listen :" + strconv.Itoa(int(r.Port))
	}
	return r.Remote.String()
}

// CloseWaitRow is one process's CLOSE_WAIT sockets; PID 0 collects
// sockets whose owner is not visible.
type CloseWaitRow = analyze.CloseWait

const maxPeers = 5

// RetransRow is one connection that is retransmitting.
type RetransRow struct {
	Local, Remote netip.AddrPort
	State         sockdiag.State
	Retrans       uint8 // consecutive retransmissions (idiag_retrans)
	Backoff       uint8
	RTO           time.Duration
	Procs         []analyze.ProcRef
}

// FindingRow is one doctor finding.
type FindingRow struct {
	Severity doctor.Severity
	ID       string
	Title    string
	Subjects []string
}

// Build turns a sample into a Frame. It walks the snapshot once per
// aggregate, so it belongs in the sampling goroutine, never in Update.
func Build(s *watch.Sample) *Frame {
	snap := s.Snap
	f := &Frame{Time: s.Time, Took: snap.Took, Netns: snap.Netns, Total: snap.Total(), States: snap.States, TimeWait: snap.Count(sockdiag.TimeWait)}

	budgets := s.Budgets
	f.PortsTotal = len(budgets)
	for _, b := range clip(budgets, MaxRows) {
		f.Ports = append(f.Ports, PortRow{Src: b.Src, Dst: b.Dst, DstPort: b.DstPort, InUse: b.InUse, TimeWait: b.TimeWait(),
			Estab: b.States[sockdiag.Established], Used: b.Used, Procs: b.Processes})
	}

	f.Churn, f.ChurnAvailable = churnRows(s)
	f.TWRates, f.TWRatesTotal = twRates(snap)
	f.CloseWait, f.CloseWaitTotal = closeWait(snap)
	f.Retrans, f.RetransTotal = retransmitting(snap)

	if s.Report != nil {
		for _, fd := range s.Report.Findings {
			r := FindingRow{Severity: fd.Severity, ID: fd.ID, Title: fd.Title}
			for _, sub := range fd.Subjects {
				r.Subjects = append(r.Subjects, sub.Name)
				for _, p := range sub.Processes {
					r.Subjects = append(r.Subjects, p.Label())
				}
			}
			f.Findings = append(f.Findings, r)
		}
	}
	return f
}

// churnRows lists the destinations of the sample's destroy-event window,
// most closes/s first. It reports false when the sample has no window (churn
// off, or the first sample), so the panel falls back to the TIME_WAIT
// estimate.
func churnRows(s *watch.Sample) ([]ChurnRow, bool) {
	w := s.Churn
	if w == nil {
		return nil, false
	}
	rows := make([]ChurnRow, 0, min(len(w.Destinations), MaxRows))
	for _, d := range w.Destinations {
		name := d.Addr.String()
		if d.Side == snapshot.Server {
			name += " (listener)"
		}
		rows = append(rows, ChurnRow{
			Dest: name, ClosedPerSec: d.PerSecond, LifetimeP50: d.LifetimeP50, LifetimeP99: d.LifetimeP99,
			RetransClose: d.Retransmits,
		})
	}
	// The window lists destinations by closes, which is closes/s too.
	return rows[:min(len(rows), MaxRows)], true
}

func twRates(snap *snapshot.Snapshot) ([]TWRateRow, int) {
	rows := make([]TWRateRow, 0, len(snap.TimeWait))
	idx := make(map[TWRateRow]int) // key with Count 0
	for _, g := range snap.TimeWait {
		k := TWRateRow{Side: g.Side, Local: g.Local}
		switch g.Side {
		case snapshot.Server:
			k.Port = g.LocalPort // one row per listener port, whoever the peers
			k.Local = netip.Addr{}
		default:
			k.Remote = netip.AddrPortFrom(g.Remote, g.RemotePort)
		}
		i, ok := idx[k]
		if !ok {
			i = len(rows)
			idx[k] = i
			rows = append(rows, k)
		}
		rows[i].Count += g.Count
	}
	slices.SortFunc(rows, func(a, b TWRateRow) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Name(), b.Name()))
	})
	return clip(rows, MaxRows), len(rows)
}

func owners(snap *snapshot.Snapshot, sk *sockdiag.Socket) []analyze.ProcRef {
	ps := snap.Owners(sk)
	if len(ps) == 0 {
		return nil
	}
	out := make([]analyze.ProcRef, len(ps))
	for i, p := range ps {
		out[i] = analyze.ProcRef{PID: p.PID, Comm: p.Comm}
	}
	return out
}

func closeWait(snap *snapshot.Snapshot) ([]CloseWaitRow, int) {
	rows := analyze.CloseWaitByProcess(snap, maxPeers)
	return clip(rows, MaxRows), len(rows)
}

// retransmitting lists connections whose head segment was retransmitted at
// least once and not yet acknowledged (idiag_retrans > 0, or an RTO backoff):
// a pending retransmit timer alone is normal for any connection with data
// in flight.
func retransmitting(snap *snapshot.Snapshot) ([]RetransRow, int) {
	var rows []RetransRow
	for i := range snap.Sockets {
		sk := &snap.Sockets[i]
		if sk.Timer != sockdiag.TimerRetransmit || (sk.Retrans == 0 && sk.Info.Backoff == 0) {
			continue
		}
		rows = append(rows, RetransRow{Local: sk.Local, Remote: sk.Remote, State: sk.State, Retrans: sk.Retrans,
			Backoff: sk.Info.Backoff, RTO: sk.Info.RTODuration(), Procs: owners(snap, sk)})
	}
	slices.SortFunc(rows, func(a, b RetransRow) int {
		return cmp.Or(cmp.Compare(b.Backoff, a.Backoff), cmp.Compare(b.RTO, a.RTO), cmp.Compare(b.Retrans, a.Retrans), a.Remote.Compare(b.Remote), a.Local.Compare(b.Local))
	})
	n := len(rows)
	return clip(rows, MaxRows), n
}

func clip[T any](s []T, n int) []T {
	if len(s) > n {
		return s[:n:n]
	}
	return s
}

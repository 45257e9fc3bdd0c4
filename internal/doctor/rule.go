package doctor

import (
	"time"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/churn"
	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// Rule inspects the input and returns zero or more findings.
type Rule interface {
	// ID is the stable rule id, e.g. "port-exhaustion".
	ID() string
	Check(in *Input) []Finding
}

// Rules returns every rule, in the order their findings are reported.
func Rules() []Rule {
	return []Rule{
		portExhaustion{},
		// rules of group A (churn, buckets, listen, fd, sysctl)
		timewaitChurn{},
		twBucketOverflow{},
		listenOverflow{},
		fdLimit{},
		sysctlRule{},
		// rules of group B (close-wait, fin-wait2, retransmit, idle)
		closeWaitLeak{},
		orphanFinWait2{},
		retransmitStall{},
		idleNoKeepalive{},
	}
}

// Input is what rules see: the newest snapshot, optionally an earlier one
// (so counters become rates and sockets can be followed), and the user's
// settings.
type Input struct {
	Now  *snapshot.Snapshot
	Prev *snapshot.Snapshot // nil for a single snapshot
	// IdleTimeout is the strictest load balancer or NAT idle timeout on the
	// path.
	IdleTimeout time.Duration
	// Churn holds the connections closed between Prev and Now, measured
	// from the kernel's destroy events; nil when they were not captured.
	// timewait-churn and port-exhaustion use its close rates instead of
	// estimating them from TIME_WAIT counts.
	Churn *churn.Window
	// PrevBudgets, when set, is analyze.PortBudgets(Prev), kept from the
	// sample before by a caller that samples continuously.
	PrevBudgets []analyze.PortBudget

	// Analyses of Now that several rules use, each computed once.
	budgets      []analyze.PortBudget
	listeners    []analyze.Listener
	destinations []analyze.Destination
	computed     struct{ budgets, listeners, destinations bool }
	prevByID     map[uint64]*sockdiag.Socket
}

// Interval is the time between the two snapshots, 0 with one.
func (in *Input) Interval() time.Duration {
	if in.Prev == nil {
		return 0
	}
	return in.Now.Time.Sub(in.Prev.Time)
}

// Delta returns how much a kernel counter ("TcpExt.ListenOverflows") rose
// between the snapshots; ok is false with a single snapshot.
func (in *Input) Delta(key string) (d int64, ok bool) {
	if in.Prev == nil {
		return 0, false
	}
	return in.Now.Counters.Get(key) - in.Prev.Counters.Get(key), true
}

// Rate returns Delta per second, 0 with a single snapshot.
func (in *Input) Rate(key string) float64 {
	d, ok := in.Delta(key)
	iv := in.Interval()
	if !ok || iv <= 0 {
		return 0
	}
	return float64(d) / iv.Seconds()
}

// PortBudgets returns the port budget of Now, computed once.
func (in *Input) PortBudgets() []analyze.PortBudget {
	if !in.computed.budgets {
		in.budgets, in.computed.budgets = analyze.PortBudgets(in.Now), true
	}
	return in.budgets
}

// prevBudgets returns the port budget of Prev (nil without Prev).
func (in *Input) prevBudgets() []analyze.PortBudget {
	if in.Prev != nil && in.PrevBudgets == nil {
		in.PrevBudgets = analyze.PortBudgets(in.Prev)
	}
	return in.PrevBudgets
}

// Listeners returns the listeners of Now, fullest accept queue first,
// computed once.
func (in *Input) Listeners() []analyze.Listener {
	if !in.computed.listeners {
		in.listeners, in.computed.listeners = analyze.Listeners(in.Now), true
	}
	return in.listeners
}

// Destinations returns the outbound destinations of Now, most sockets
// first, computed once.
func (in *Input) Destinations() []analyze.Destination {
	if !in.computed.destinations {
		in.destinations, in.computed.destinations = analyze.Destinations(in.Now), true
	}
	return in.destinations
}

// Owners names the processes holding a socket of Now.
func (in *Input) Owners(sk *sockdiag.Socket) []analyze.ProcRef {
	var out []analyze.ProcRef
	for _, p := range in.Now.Owners(sk) {
		out = append(out, analyze.ProcRef{PID: p.PID, Comm: p.Comm})
	}
	return out
}

// PrevSocket finds the socket with the same cookie in Prev.
func (in *Input) PrevSocket(cookie uint64) (*sockdiag.Socket, bool) {
	if in.Prev == nil {
		return nil, false
	}
	if in.prevByID == nil {
		in.prevByID = make(map[uint64]*sockdiag.Socket, len(in.Prev.Sockets))
		for i := range in.Prev.Sockets {
			in.prevByID[in.Prev.Sockets[i].Cookie] = &in.Prev.Sockets[i]
		}
	}
	s, ok := in.prevByID[cookie]
	return s, ok
}

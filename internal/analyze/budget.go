package analyze

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// BudgetKey is what the kernel keeps unique when connect() picks an
// ephemeral port without bind(): a port may be reused towards another
// destination, so each (source IP, destination IP, destination port) has
// the whole range to itself.
type BudgetKey struct {
	Src     netip.Addr `json:"src"`
	Dst     netip.Addr `json:"dst"`
	DstPort uint16     `json:"dst_port"`
}

// PortBudget is the ephemeral port usage of one BudgetKey.
type PortBudget struct {
	BudgetKey
	// InUse counts sockets of every state whose local port is ephemeral.
	InUse  int         `json:"in_use"`
	States StateCounts `json:"states"`
	// Range is the number of usable ephemeral ports.
	Range int `json:"range"`
	// Used is InUse/Range, from 0 to 1.
	Used      float64   `json:"used"`
	Processes []ProcRef `json:"processes,omitempty"`
}

// TimeWait returns the TIME_WAIT share of InUse.
func (b *PortBudget) TimeWait() int { return b.States[sockdiag.TimeWait] }

// PortBudgets computes the budget of every destination this host dials out
// to from an ephemeral port, most used first.
func PortBudgets(s *snapshot.Snapshot) []PortBudget {
	rng := s.Sysctls.EphemeralPorts()
	m := make(map[BudgetKey]*PortBudget)
	get := func(k BudgetKey) *PortBudget {
		b := m[k]
		if b == nil {
			b = &PortBudget{BudgetKey: k, Range: rng}
			m[k] = b
		}
		return b
	}
	for i := range s.Sockets {
		sk := &s.Sockets[i]
		lp := sk.Local.Port()
		if sk.State == sockdiag.Listen || sk.Remote.Port() == 0 || !s.Sysctls.IsEphemeral(lp) || s.Listening(lp) {
			continue
		}
		b := get(BudgetKey{Src: sk.Local.Addr(), Dst: sk.Remote.Addr(), DstPort: sk.Remote.Port()})
		b.States[sk.State]++
		b.InUse++
		b.Processes = AddRefs(b.Processes, s.Owners(sk))
	}
	for _, g := range s.TimeWait {
		if g.Side != snapshot.Client {
			continue
		}
		b := get(BudgetKey{Src: g.Local, Dst: g.Remote, DstPort: g.RemotePort})
		b.States[sockdiag.TimeWait] += g.Count
		b.InUse += g.Count
	}
	out := make([]PortBudget, 0, len(m))
	for _, b := range m {
		if b.Range > 0 {
			b.Used = float64(b.InUse) / float64(b.Range)
		}
		out = append(out, *b)
	}
	slices.SortFunc(out, func(a, b PortBudget) int {
		return cmp.Or(cmp.Compare(b.InUse, a.InUse), a.Dst.Compare(b.Dst), cmp.Compare(a.DstPort, b.DstPort), a.Src.Compare(b.Src))
	})
	return out
}

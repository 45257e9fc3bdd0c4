package filter

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/tcplens/tcplens/internal/kernel"
	"github.com/tcplens/tcplens/internal/procs"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// Spec is the raw text of the filter flags.
type Spec struct {
	States  []string
	Src     []string
	Dst     []string
	Sport   []string
	Dport   []string
	Process string
}

// Filter matches sockets. The zero Filter matches every socket.
type Filter struct {
	States sockdiag.StateMask
	Src    []netip.Prefix
	Dst    []netip.Prefix
	Sport  []kernel.PortRange
	Dport  []kernel.PortRange
	// PID or Comm select the owning process; at most one is set.
	PID  int
	Comm string
}

// Groups of states, named as ss names them.
var groups = map[string]sockdiag.StateMask{
	"all":          sockdiag.AllMask,
	"connected":    sockdiag.AllMask &^ sockdiag.MaskOf(sockdiag.Listen, sockdiag.Close),
	"synchronized": sockdiag.AllMask &^ sockdiag.MaskOf(sockdiag.Listen, sockdiag.Close, sockdiag.SynSent),
	"bucket":       sockdiag.MaskOf(sockdiag.SynRecv, sockdiag.TimeWait, sockdiag.NewSynRecv),
	"big":          sockdiag.AllMask &^ sockdiag.MaskOf(sockdiag.SynRecv, sockdiag.TimeWait, sockdiag.NewSynRecv),
}

// Parse validates a Spec. Each error names the flag and the bad value.
func Parse(s Spec) (*Filter, error) {
	f := &Filter{}
	for _, v := range splitAll(s.States) {
		if m, ok := groups[strings.ToLower(v)]; ok {
			f.States |= m
			continue
		}
		st, ok := sockdiag.ParseState(v)
		if !ok {
			return nil, fmt.Errorf("--state %q: not a TCP state or group (all, connected, synchronized, bucket, big)", v)
		}
		f.States |= sockdiag.MaskOf(st)
	}
	var err error
	if f.Src, err = prefixes("--src", s.Src); err != nil {
		return nil, err
	}
	if f.Dst, err = prefixes("--dst", s.Dst); err != nil {
		return nil, err
	}
	if f.Sport, err = ports("--sport", s.Sport); err != nil {
		return nil, err
	}
	if f.Dport, err = ports("--dport", s.Dport); err != nil {
		return nil, err
	}
	if p := strings.TrimSpace(s.Process); p != "" {
		if pid, err := strconv.Atoi(p); err == nil {
			if pid <= 0 {
				return nil, fmt.Errorf("--process %q: a pid must be positive", p)
			}
			f.PID = pid
		} else {
			if strings.ContainsAny(p, "/\x00") || len(p) > 64 {
				return nil, fmt.Errorf("--process %q: want a pid or a command name", p)
			}
			f.Comm = p
		}
	}
	return f, nil
}

func splitAll(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

func prefixes(flag string, vals []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range splitAll(vals) {
		if strings.Contains(v, "/") {
			p, err := netip.ParsePrefix(v)
			if err != nil {
				return nil, fmt.Errorf("%s %q: not an address or CIDR", flag, v)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(v, "["), "]"))
		if err != nil {
			return nil, fmt.Errorf("%s %q: not an address or CIDR", flag, v)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

func ports(flag string, vals []string) ([]kernel.PortRange, error) {
	var out []kernel.PortRange
	for _, v := range splitAll(vals) {
		lo, hi, isRange := strings.Cut(v, "-")
		l, err1 := strconv.ParseUint(lo, 10, 16)
		h := l
		var err2 error
		if isRange {
			h, err2 = strconv.ParseUint(hi, 10, 16)
		}
		if err1 != nil || err2 != nil || h < l {
			return nil, fmt.Errorf("%s %q: want a port (0-65535) or a range like 32768-60999", flag, v)
		}
		out = append(out, kernel.PortRange{Lo: uint16(l), Hi: uint16(h)})
	}
	return out, nil
}

// Mask returns the states to ask the kernel for (every state if none given).
func (f *Filter) Mask() sockdiag.StateMask {
	if f.States == 0 {
		return sockdiag.AllMask
	}
	return f.States
}

// NeedsProcs reports whether matching needs socket owners.
func (f *Filter) NeedsProcs() bool { return f.PID != 0 || f.Comm != "" }

// Match reports whether sk (owned by owners) passes every filter.
func (f *Filter) Match(sk *sockdiag.Socket, owners []*procs.Process) bool {
	if f.States != 0 && !f.States.Has(sk.State) {
		return false
	}
	if !matchAddr(f.Src, sk.Local.Addr()) || !matchAddr(f.Dst, sk.Remote.Addr()) ||
		!matchPort(f.Sport, sk.Local.Port()) || !matchPort(f.Dport, sk.Remote.Port()) {
		return false
	}
	if f.NeedsProcs() {
		for _, p := range owners {
			if p.PID == f.PID || (f.Comm != "" && p.Comm == f.Comm) {
				return true
			}
		}
		return false
	}
	return true
}

func matchAddr(ps []netip.Prefix, a netip.Addr) bool {
	if len(ps) == 0 {
		return true
	}
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func matchPort(rs []kernel.PortRange, port uint16) bool {
	return len(rs) == 0 || slices.ContainsFunc(rs, func(r kernel.PortRange) bool { return r.Contains(port) })
}

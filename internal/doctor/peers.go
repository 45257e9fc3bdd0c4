package doctor

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// Helpers shared by the connection-level rules (close-wait-leak,
// orphan-fin-wait2, retransmit-stall, idle-no-keepalive).

// peer is the other end of a group of connections. Outbound connections
// are grouped by remote ip:port. Inbound ones (the local port listens) are
// grouped by remote IP and local address, because the client's ephemeral
// port would make every group a single socket.
type peer struct {
	Inbound bool
	Remote  netip.AddrPort // port 0 when Inbound
	Local   netip.AddrPort // zero unless Inbound
}

// peerOf groups sk of snapshot s; s knows its listening ports.
func peerOf(s *snapshot.Snapshot, sk *sockdiag.Socket) peer {
	if s.Listening(sk.Local.Port()) {
		return peer{Inbound: true, Remote: netip.AddrPortFrom(sk.Remote.Addr(), 0), Local: sk.Local}
	}
	return peer{Remote: sk.Remote}
}

// Name is "10.0.0.5:5432" for a destination and "10.0.0.7" for clients.
func (p peer) Name() string {
	if p.Inbound {
		return p.Remote.Addr().String()
	}
	return p.Remote.String()
}

// Kind is the Subject kind: "destination" or "peer" (a client of a local
// listener).
func (p peer) Kind() string {
	if p.Inbound {
		return "peer"
	}
	return "destination"
}

// String names the peer in prose: "10.0.0.5:5432" or "clients at 10.0.0.7
// of 0.0.0.0:8080".
func (p peer) String() string {
	if p.Inbound {
		return fmt.Sprintf("clients at %s of %s", p.Remote.Addr(), p.Local)
	}
	return p.Remote.String()
}

// numbers describes the peer in a Subject's or evidence's numbers.
func (p peer) numbers() map[string]any {
	m := map[string]any{"remote": p.Name(), "direction": "outbound"}
	if p.Inbound {
		m["direction"] = "inbound"
		m["local"] = p.Local.String()
	}
	return m
}

func comparePeers(a, b peer) int {
	return cmp.Or(a.Remote.Compare(b.Remote), a.Local.Compare(b.Local))
}

// procName names a process "comm/pid", the form subjects use.
func procName(p analyze.ProcRef) string {
	if p.PID == 0 {
		return "unknown"
	}
	return p.Label()
}

// firstOwner is the process a socket is attributed to: the lowest PID that
// holds it (a forked child shares its parent's fds), or PID 0 when unknown.
func firstOwner(in *Input, sk *sockdiag.Socket) (analyze.ProcRef, []analyze.ProcRef) {
	owners := in.Owners(sk)
	if len(owners) == 0 {
		return analyze.ProcRef{}, nil
	}
	return owners[0], owners
}

func ms(v uint32) time.Duration { return time.Duration(v) * time.Millisecond }

// secs is a duration in seconds with one decimal, for evidence.
func secs(d time.Duration) float64 { return round1(d.Seconds()) }

// human prints a duration for prose: "850ms", "4.2s", "6m40s".
func human(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

// seenBoth reports whether the socket with this cookie was already in state
// st in the earlier snapshot; if so it has been in st for at least the
// interval.
func seenBoth(in *Input, sk *sockdiag.Socket, st sockdiag.State) bool {
	p, ok := in.PrevSocket(sk.Cookie)
	return ok && p.State == st
}

// plural returns "1 connection" or "3 connections".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// byCount returns the groups of m with the largest count first; ties go in
// peer order, so findings are stable from run to run.
func byCount[T any](m map[peer]*T, count func(*T) int) []*T {
	keys := make([]peer, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b peer) int {
		return cmp.Or(cmp.Compare(count(m[b]), count(m[a])), comparePeers(a, b))
	})
	out := make([]*T, len(keys))
	for i, k := range keys {
		out[i] = m[k]
	}
	return out
}

package analyze

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/tcplens/tcplens/internal/procs"
	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// StateCounts counts sockets per state. It marshals to a JSON object keyed
// by kernel state names, zero counts left out.
type StateCounts [16]int

// MarshalJSON writes {"ESTABLISHED": n, ...}.
func (c StateCounts) MarshalJSON() ([]byte, error) {
	m := make(map[string]int)
	for st, n := range c {
		if n > 0 {
			m[sockdiag.State(st).String()] = n
		}
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads what MarshalJSON writes; unknown state names are an
// error.
func (c *StateCounts) UnmarshalJSON(b []byte) error {
	var m map[string]int
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*c = StateCounts{}
	for name, n := range m {
		st, ok := sockdiag.ParseState(name)
		if !ok {
			return fmt.Errorf("unknown state %q", name)
		}
		c[st] = n
	}
	return nil
}

// Total sums every state.
func (c *StateCounts) Total() int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// ProcRef names a process.
type ProcRef struct {
	PID  int    `json:"pid"`
	Comm string `json:"comm"`
}

// Label is how tcplens names a process everywhere: "comm/pid". (Not
// String: the types that embed ProcRef would print as it with %v.)
func (p ProcRef) Label() string { return p.Comm + "/" + strconv.Itoa(p.PID) }

func refs(ps []*procs.Process) []ProcRef {
	out := make([]ProcRef, 0, len(ps))
	for _, p := range ps {
		out = append(out, ProcRef{PID: p.PID, Comm: p.Comm})
	}
	return out
}

// AddRefs appends the processes of ps that dst does not name yet (by PID),
// keeping dst's order: the owners of several sockets, each named once.
func AddRefs(dst []ProcRef, ps []*procs.Process) []ProcRef {
	for _, p := range ps {
		if !slices.ContainsFunc(dst, func(r ProcRef) bool { return r.PID == p.PID }) {
			dst = append(dst, ProcRef{PID: p.PID, Comm: p.Comm})
		}
	}
	return dst
}

// Destination is a remote address this host connects out to.
type Destination struct {
	Remote    netip.AddrPort `json:"remote"`
	Total     int            `json:"total"`
	States    StateCounts    `json:"states"`
	Processes []ProcRef      `json:"processes,omitempty"`
}

// Destinations groups outbound sockets (the local side is not a listener)
// by remote address, most sockets first.
func Destinations(s *snapshot.Snapshot) []Destination {
	m := make(map[netip.AddrPort]*Destination)
	get := func(r netip.AddrPort) *Destination {
		d := m[r]
		if d == nil {
			d = &Destination{Remote: r}
			m[r] = d
		}
		return d
	}
	for i := range s.Sockets {
		sk := &s.Sockets[i]
		if sk.State == sockdiag.Listen || !sk.Remote.Addr().IsValid() || sk.Remote.Port() == 0 || s.Listening(sk.Local.Port()) {
			continue
		}
		d := get(sk.Remote)
		d.States[sk.State]++
		d.Total++
		d.Processes = AddRefs(d.Processes, s.Owners(sk))
	}
	for _, g := range s.TimeWait {
		if g.Side == snapshot.Server {
			continue
		}
		d := get(netip.AddrPortFrom(g.Remote, g.RemotePort))
		d.States[sockdiag.TimeWait] += g.Count
		d.Total += g.Count
	}
	out := make([]Destination, 0, len(m))
	for _, d := range m {
		out = append(out, *d)
	}
	slices.SortFunc(out, func(a, b Destination) int {
		return cmp.Or(cmp.Compare(b.Total, a.Total), a.Remote.Compare(b.Remote))
	})
	return out
}

// Listener is a listening socket and its queues.
type Listener struct {
	Local netip.AddrPort `json:"local"`
	// AcceptQueue is the number of connections waiting for accept();
	// Backlog is the queue's limit (min(listen() backlog, somaxconn)).
	AcceptQueue uint32 `json:"accept_queue"`
	Backlog     uint32 `json:"backlog"`
	// Connections counts sockets on the listener's port, TIME_WAIT included.
	Connections int         `json:"connections"`
	States      StateCounts `json:"states"`
	Processes   []ProcRef   `json:"processes,omitempty"`
	Inode       uint32      `json:"inode"`
}

// Listeners lists listening sockets with the connections on their ports,
// fullest accept queue first.
func Listeners(s *snapshot.Snapshot) []Listener {
	var out []Listener
	first := make(map[uint16]int) // port -> its first listener in out
	for i := range s.Sockets {
		sk := &s.Sockets[i]
		if sk.State != sockdiag.Listen {
			continue
		}
		if _, ok := first[sk.Local.Port()]; !ok {
			first[sk.Local.Port()] = len(out)
		}
		out = append(out, Listener{Local: sk.Local, AcceptQueue: sk.RecvQ, Backlog: sk.SendQ, Processes: refs(s.Owners(sk)), Inode: sk.Inode})
	}
	// A connection is counted once, on the first listener of its port.
	for i := range s.Sockets {
		sk := &s.Sockets[i]
		if sk.State == sockdiag.Listen {
			continue
		}
		if i, ok := first[sk.Local.Port()]; ok {
			out[i].States[sk.State]++
			out[i].Connections++
		}
	}
	for _, g := range s.TimeWait {
		if i, ok := first[g.LocalPort]; ok && g.Side == snapshot.Server {
			out[i].States[sockdiag.TimeWait] += g.Count
			out[i].Connections += g.Count
		}
	}
	slices.SortFunc(out, func(a, b Listener) int {
		return cmp.Or(cmp.Compare(b.Fill(), a.Fill()), cmp.Compare(b.Connections, a.Connections), a.Local.Compare(b.Local))
	})
	return out
}

// Fill is how full the accept queue is: AcceptQueue/Backlog (the kernel
// queues backlog+1 connections, so a full queue reads slightly above 1). A
// listener with backlog 0 (listen(fd, 0)) is full with one connection
// waiting; any wait there reads as 2, so it ranks with the fullest instead
// of last.
func (l Listener) Fill() float64 {
	if l.Backlog == 0 {
		if l.AcceptQueue > 0 {
			return 2
		}
		return 0
	}
	return float64(l.AcceptQueue) / float64(l.Backlog)
}

// Process is a process and the sockets it holds.
type Process struct {
	ProcRef
	Cmdline string      `json:"cmdline,omitempty"`
	Sockets int         `json:"sockets"`
	States  StateCounts `json:"states"`
	FDs     int         `json:"fds"`
	FDLimit uint64      `json:"fd_limit"`
}

// Processes counts the sockets of this namespace per owning process, most
// first. It is empty when the snapshot has no process table.
func Processes(s *snapshot.Snapshot) []Process {
	m := make(map[int]*Process)
	for i := range s.Sockets {
		sk := &s.Sockets[i]
		for _, p := range s.Owners(sk) {
			e := m[p.PID]
			if e == nil {
				e = &Process{ProcRef: ProcRef{PID: p.PID, Comm: p.Comm}, Cmdline: p.Cmdline, FDs: p.FDs, FDLimit: p.FDLimit}
				m[p.PID] = e
			}
			e.States[sk.State]++
			e.Sockets++
		}
	}
	out := make([]Process, 0, len(m))
	for _, p := range m {
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b Process) int { return cmp.Or(cmp.Compare(b.Sockets, a.Sockets), cmp.Compare(a.PID, b.PID)) })
	return out
}

// CloseWait is one process's CLOSE_WAIT sockets. PID 0 (Comm "?") collects
// the sockets whose owner is not visible.
type CloseWait struct {
	ProcRef
	Count int `json:"count"`
	// Oldest is the longest time since the peer last sent data, the best
	// age estimate sock_diag offers (its FIN came at or after that).
	Oldest time.Duration    `json:"oldest"`
	Peers  []netip.AddrPort `json:"peers"` // up to maxPeers distinct remotes
}

// CloseWaitByProcess groups the CLOSE_WAIT sockets by owning process, most
// first, with up to maxPeers distinct peers each. A socket shared by several
// processes (a fork) counts for each: every holder must close it.
func CloseWaitByProcess(s *snapshot.Snapshot, maxPeers int) []CloseWait {
	if s.Count(sockdiag.CloseWait) == 0 {
		return nil
	}
	byPID := make(map[int]*CloseWait)
	unknown := []*procs.Process{{Comm: "?"}}
	for i := range s.Sockets {
		sk := &s.Sockets[i]
		if sk.State != sockdiag.CloseWait {
			continue
		}
		owners := s.Owners(sk)
		if len(owners) == 0 {
			owners = unknown
		}
		for _, p := range owners {
			r := byPID[p.PID]
			if r == nil {
				r = &CloseWait{ProcRef: ProcRef{PID: p.PID, Comm: p.Comm}}
				byPID[p.PID] = r
			}
			r.Count++
			if sk.HasInfo {
				r.Oldest = max(r.Oldest, time.Duration(sk.Info.LastDataRecv)*time.Millisecond)
			}
			if len(r.Peers) < maxPeers && !slices.Contains(r.Peers, sk.Remote) {
				r.Peers = append(r.Peers, sk.Remote)
			}
		}
	}
	out := make([]CloseWait, 0, len(byPID))
	for _, r := range byPID {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b CloseWait) int { return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.PID, b.PID)) })
	return out
}

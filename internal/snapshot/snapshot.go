package snapshot

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/tcplens/tcplens/internal/kernel"
	"github.com/tcplens/tcplens/internal/netns"
	"github.com/tcplens/tcplens/internal/procs"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// Side says which end of a TIME_WAIT connection this host was.
type Side uint8

const (
	// Client: the local port is ephemeral, so this host dialled and closed
	// first; the socket holds an ephemeral port for 60 s.
	Client Side = iota
	// Server: the local port is a listening port; the peer dialled and this
	// host closed first. It costs no ephemeral port.
	Server
	// Bound: a fixed local port that is neither ephemeral nor listening
	// (bind() before connect()).
	Bound
)

func (s Side) String() string {
	switch s {
	case Client:
		return "client"
	case Server:
		return "server"
	default:
		return "bound"
	}
}

// TWKey groups TIME_WAIT sockets. For Client the remote port is kept and the
// local port dropped; for Server the reverse (the remote port is the peer's
// ephemeral port and would make every key unique).
type TWKey struct {
	Side       Side
	Local      netip.Addr
	LocalPort  uint16 // 0 for Client
	Remote     netip.Addr
	RemotePort uint16 // 0 for Server
}

// TWGroup is a tally of TIME_WAIT sockets with one key.
type TWGroup struct {
	TWKey
	Count int
	// MaxRemaining is the longest remaining TIME_WAIT timer in the group:
	// 60 s minus it is the age of the youngest socket.
	MaxRemaining time.Duration
}

// Snapshot is one capture of a namespace.
type Snapshot struct {
	Time  time.Time
	Netns string // as given by the user; "" for the caller's namespace
	// Took is how long the capture took.
	Took time.Duration

	// Sockets holds every socket except TIME_WAIT, listeners first.
	Sockets []sockdiag.Socket
	// TimeWait tallies TIME_WAIT sockets; their sum is States[TimeWait].
	TimeWait []TWGroup
	// States counts sockets per state, TIME_WAIT included.
	States [16]int

	Counters kernel.Counters
	Sysctls  kernel.Sysctls
	// Procs maps socket inodes to processes; nil unless Options.Procs.
	Procs *procs.Table
	// Dump reports what the netlink dump saw (interrupted, skipped).
	Dump sockdiag.Stats

	listening portSet
}

// Options select what Take captures.
type Options struct {
	Netns string // name in /run/netns or a path; "" for the caller's
	// Procs walks /proc to find the owner of every socket.
	Procs bool
	// ProcRoot is the proc mount to walk; default "/proc".
	ProcRoot string
}

// Take captures a snapshot. The netlink dump, counters and sysctls are read
// inside the target namespace; processes are read from ProcRoot, which is
// shared by all network namespaces.
func Take(ctx context.Context, opt Options) (*Snapshot, error) {
	start := time.Now()
	s := &Snapshot{Time: start, Netns: opt.Netns}
	err := netns.Run(opt.Netns, func() error {
		var err error
		if s.Sysctls, err = kernel.ReadSysctls(); err != nil {
			return err
		}
		if s.Counters, err = kernel.ReadCounters(); err != nil {
			return err
		}
		d, err := sockdiag.Open()
		if err != nil {
			return err
		}
		defer d.Close()
		return s.collect(ctx, d)
	})
	if err != nil {
		return nil, err
	}
	if opt.Procs {
		root := opt.ProcRoot
		if root == "" {
			root = "/proc"
		}
		t, err := procs.Scan(ctx, root)
		if err != nil {
			return nil, fmt.Errorf("find socket owners: %w", err)
		}
		s.Procs = t
	}
	s.Took = time.Since(start)
	return s, nil
}

// collect dumps listeners first, so that TIME_WAIT sockets can be told apart
// by whether their local port listens, then everything else.
func (s *Snapshot) collect(ctx context.Context, d *sockdiag.Dumper) error {
	listening := &s.listening
	keep := func(sk *sockdiag.Socket) error {
		s.States[sk.State&15]++
		s.Sockets = append(s.Sockets, *sk)
		return nil
	}
	st, err := d.Dump(ctx, sockdiag.Request{States: sockdiag.MaskOf(sockdiag.Listen), Info: true}, func(sk *sockdiag.Socket) error {
		listening.add(sk.Local.Port())
		return keep(sk)
	})
	if err != nil {
		return fmt.Errorf("dump listening sockets: %w", err)
	}
	s.Dump = st

	tally := newTWTally(&s.Sysctls, listening)
	st, err = d.Dump(ctx, sockdiag.Request{States: sockdiag.AllMask &^ sockdiag.MaskOf(sockdiag.Listen), Info: true}, func(sk *sockdiag.Socket) error {
		if sk.State == sockdiag.TimeWait {
			s.States[sockdiag.TimeWait]++
			tally.add(sk)
			return nil
		}
		return keep(sk)
	})
	if err != nil {
		return fmt.Errorf("dump sockets: %w", err)
	}
	s.Dump.Add(st)
	s.TimeWait = tally.groups()
	return nil
}

// Count returns the number of sockets in state st.
func (s *Snapshot) Count(st sockdiag.State) int { return s.States[st&15] }

// Total returns the number of sockets of every state.
func (s *Snapshot) Total() int {
	n := 0
	for _, c := range s.States {
		n += c
	}
	return n
}

// Listening reports whether some socket listens on port.
func (s *Snapshot) Listening(port uint16) bool { return s.listening.has(port) }

// Owners returns the processes holding the socket, or nil when unknown.
func (s *Snapshot) Owners(sk *sockdiag.Socket) []*procs.Process {
	return s.Procs.Owners(sk.Inode) // nil without a process table
}

// SideOf classifies a connected socket the same way TIME_WAIT sockets are
// grouped.
func (s *Snapshot) SideOf(local uint16) Side { return sideOf(&s.listening, &s.Sysctls, local) }

func sideOf(listening *portSet, sys *kernel.Sysctls, local uint16) Side {
	switch {
	case listening.has(local):
		return Server
	case sys.IsEphemeral(local):
		return Client
	default:
		return Bound
	}
}

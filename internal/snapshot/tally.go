package snapshot

import (
	"time"

	"github.com/tcplens/tcplens/internal/kernel"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// portSet is a bitmap of the 65536 ports: a map lookup per TIME_WAIT socket
// would cost more than parsing it.
type portSet [1024]uint64

func (p *portSet) add(port uint16)      { p[port>>6] |= 1 << (port & 63) }
func (p *portSet) has(port uint16) bool { return p[port>>6]&(1<<(port&63)) != 0 }

type twTally struct {
	sys       *kernel.Sysctls
	listening *portSet
	m         map[TWKey]*TWGroup
	last      *TWGroup // consecutive sockets often share a key
}

func newTWTally(sys *kernel.Sysctls, listening *portSet) *twTally {
	return &twTally{sys: sys, listening: listening, m: make(map[TWKey]*TWGroup)}
}

func (t *twTally) add(sk *sockdiag.Socket) {
	k := TWKey{Local: sk.Local.Addr(), Remote: sk.Remote.Addr()}
	lp := sk.Local.Port()
	switch k.Side = sideOf(t.listening, t.sys, lp); k.Side {
	case Server:
		k.LocalPort = lp
	case Client:
		k.RemotePort = sk.Remote.Port()
	default:
		k.LocalPort, k.RemotePort = lp, sk.Remote.Port()
	}
	g := t.last
	if g == nil || g.TWKey != k {
		g = t.m[k]
		if g == nil {
			g = &TWGroup{TWKey: k}
			t.m[k] = g
		}
		t.last = g
	}
	g.Count++
	g.MaxRemaining = max(g.MaxRemaining, sk.TimerExpires)
}

func (t *twTally) groups() []TWGroup {
	out := make([]TWGroup, 0, len(t.m))
	for _, g := range t.m {
		out = append(out, *g)
	}
	return out
}

// TimeWaitLen is TCP_TIMEWAIT_LEN: a compile-time constant of the kernel.
const TimeWaitLen = 60 * time.Second

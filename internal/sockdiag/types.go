package sockdiag

import (
	"net/netip"
	"strings"
	"time"
)

// State is a TCP state as the kernel numbers it (include/net/tcp_states.h).
type State uint8

// TCP states.
const (
	Established State = 1 + iota
	SynSent
	SynRecv
	FinWait1
	FinWait2
	TimeWait
	Close
	CloseWait
	LastAck
	Listen
	Closing
	NewSynRecv
	maxState
)

var stateNames = [...]string{
	Established: "ESTABLISHED",
	SynSent:     "SYN_SENT",
	SynRecv:     "SYN_RECV",
	FinWait1:    "FIN_WAIT1",
	FinWait2:    "FIN_WAIT2",
	TimeWait:    "TIME_WAIT",
	Close:       "CLOSE",
	CloseWait:   "CLOSE_WAIT",
	LastAck:     "LAST_ACK",
	Listen:      "LISTEN",
	Closing:     "CLOSING",
	NewSynRecv:  "NEW_SYN_RECV",
}

// String returns the kernel name, e.g. "TIME_WAIT".
func (s State) String() string {
	if s > 0 && s < maxState {
		return stateNames[s]
	}
	return "UNKNOWN"
}

// AllStates lists every state in kernel order.
func AllStates() []State {
	out := make([]State, 0, maxState-1)
	for s := Established; s < maxState; s++ {
		out = append(out, s)
	}
	return out
}

// ParseState accepts kernel names and the spellings ss uses
// ("time-wait", "established", "syn-recv", ...), case-insensitively.
func ParseState(name string) (State, bool) {
	n := strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	switch n {
	case "FIN_WAIT_1":
		n = "FIN_WAIT1"
	case "FIN_WAIT_2":
		n = "FIN_WAIT2"
	case "LISTENING":
		n = "LISTEN"
	case "CLOSED":
		n = "CLOSE"
	}
	for s := Established; s < maxState; s++ {
		if stateNames[s] == n {
			return s, true
		}
	}
	return 0, false
}

// StateMask is a set of states, bit i for State i, as idiag_states wants it.
type StateMask uint32

// AllMask selects every state.
const AllMask StateMask = 1<<maxState - 2

// MaskOf builds a mask from states.
func MaskOf(states ...State) StateMask {
	var m StateMask
	for _, s := range states {
		m |= 1 << s
	}
	return m
}

// Has reports whether s is in the mask.
func (m StateMask) Has(s State) bool { return m&(1<<s) != 0 }

// Timer is the kind of timer pending on a socket (idiag_timer).
type Timer uint8

// Timer kinds, as inet_diag reports them.
const (
	TimerOff        Timer = 0
	TimerRetransmit Timer = 1 // also the loss-probe and reorder timers
	TimerKeepalive  Timer = 2
	TimerTimeWait   Timer = 3
	TimerZeroWindow Timer = 4
	TimerDelayedAck Timer = 5
)

var timerNames = [...]string{"off", "retransmit", "keepalive", "timewait", "persist", "delack"}

// String returns a short name: off, retransmit, keepalive, timewait, persist
// (zero-window probe), delack.
func (t Timer) String() string {
	if int(t) < len(timerNames) {
		return timerNames[t]
	}
	return "unknown"
}

// Socket is one socket of a dump. Fields that the kernel did not send are
// zero; HasInfo says whether Info was filled.
type Socket struct {
	Family uint8 // unix.AF_INET or unix.AF_INET6
	State  State
	Local  netip.AddrPort
	Remote netip.AddrPort
	// Interface index the socket is bound to (0 if none).
	Interface uint32

	RecvQ uint32 // bytes not yet read; accept queue length for LISTEN
	SendQ uint32 // bytes not yet acked; backlog for LISTEN

	Timer        Timer
	TimerExpires time.Duration // remaining time of Timer
	// Retrans is the retransmit count for TimerRetransmit and the number of
	// probes sent for TimerKeepalive and TimerZeroWindow.
	Retrans uint8

	UID    uint32
	Inode  uint32 // 0 for TIME_WAIT and NEW_SYN_RECV (no file)
	Cookie uint64

	HasInfo bool
	Info    TCPInfo
	// Congestion control algorithm, e.g. "cubic"; interned, never allocated
	// per socket.
	Cong string
	// Shutdown holds the RCV_SHUTDOWN (1) and SEND_SHUTDOWN (2) bits.
	Shutdown    uint8
	HasShutdown bool
}

// TCPInfo holds the struct tcp_info fields tcplens uses. Times are in
// microseconds (rtt, rttvar, rto) or milliseconds (last_*), as the kernel
// reports them.
type TCPInfo struct {
	State        uint8
	CAState      uint8
	Retransmits  uint8 // consecutive retransmissions of the head segment
	Probes       uint8
	Backoff      uint8 // exponential backoff shift of the RTO
	Options      uint8
	RTO          uint32 // us
	ATO          uint32 // us
	SndMSS       uint32
	RcvMSS       uint32
	Unacked      uint32
	Sacked       uint32
	Lost         uint32
	Retrans      uint32
	LastDataSent uint32 // ms ago
	LastDataRecv uint32 // ms ago
	LastAckRecv  uint32 // ms ago
	PMTU         uint32
	RTT          uint32 // us
	RTTVar       uint32 // us
	SndSsthresh  uint32
	SndCwnd      uint32
	TotalRetrans uint32
	BytesAcked   uint64
	BytesRecv    uint64
	SegsOut      uint32
	SegsIn       uint32
	NotsentBytes uint32
	MinRTT       uint32
	BytesSent    uint64
	BytesRetrans uint64
}

// Duration helpers keep unit conversions in one place.

// RTTDuration returns the smoothed RTT.
func (i *TCPInfo) RTTDuration() time.Duration { return time.Duration(i.RTT) * time.Microsecond }

// RTODuration returns the current retransmission timeout.
func (i *TCPInfo) RTODuration() time.Duration { return time.Duration(i.RTO) * time.Microsecond }

// Idle returns how long ago data was last sent or received, whichever is
// more recent.
func (i *TCPInfo) Idle() time.Duration {
	return time.Duration(min(i.LastDataSent, i.LastDataRecv)) * time.Millisecond
}

package doctor

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// orphanFinWait2 finds connections this host closed whose peer never sends
// its FIN. Once the program has closed the socket (an orphan) the kernel
// waits tcp_fin_timeout for that FIN and then drops it; a FIN_WAIT2 socket
// still held by a process (shutdown(SHUT_WR), half-closed) waits for ever.
type orphanFinWait2 struct{}

func (orphanFinWait2) ID() string { return "orphan-fin-wait2" }

const (
	// finWait2MinAge: a peer that reads its connection sees EOF and answers
	// with its own FIN within a round trip plus one read; after 2 s it is
	// not slow but not closing, which is the bug this rule reports.
	finWait2MinAge = 2 * time.Second
	// finWait2Critical: this many unanswered FINs to one peer within
	// tcp_fin_timeout means the peer leaks CLOSE_WAIT sockets at a rate that
	// will exhaust its fds, and each orphan still holds its 4-tuple (an
	// ephemeral port, for outbound connections) here.
	finWait2Critical = 1000
)

type fw2Group struct {
	peer     peer
	orphan   bool
	count    int
	seenBoth int
	oldest   time.Duration
	left     time.Duration // longest remaining kernel timer (orphans)
	procs    []analyze.ProcRef
}

func (r orphanFinWait2) Check(in *Input) []Finding {
	fin := time.Duration(in.Now.Sysctls.FinTimeout) * time.Second
	type key struct {
		p      peer
		orphan bool
	}
	groups := make(map[key]*fw2Group)
	for i := range in.Now.Sockets {
		sk := &in.Now.Sockets[i]
		if sk.State != sockdiag.FinWait2 {
			continue
		}
		orphan := sk.Inode == 0
		age, left := finWait2Age(sk, fin, orphan)
		both := seenBoth(in, sk, sockdiag.FinWait2)
		if both {
			age = max(age, in.Interval())
		}
		// An orphan is reported once its peer is late; a socket a process
		// still holds only once it is older than an orphan could ever get.
		if age < finWait2MinAge || (!orphan && age < fin) {
			continue
		}
		k := key{peerOf(in.Now, sk), orphan}
		g := groups[k]
		if g == nil {
			g = &fw2Group{peer: k.p, orphan: orphan}
			groups[k] = g
		}
		g.count++
		if both {
			g.seenBoth++
		}
		g.oldest = max(g.oldest, age)
		g.left = max(g.left, left)
		g.procs = analyze.AddRefs(g.procs, in.Now.Owners(sk))
	}
	list := make([]*fw2Group, 0, len(groups))
	for _, g := range groups {
		list = append(list, g)
	}
	// Orphans first (they are the warnings), then by size.
	slices.SortFunc(list, func(a, b *fw2Group) int {
		if a.orphan != b.orphan {
			if a.orphan {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(b.count, a.count), comparePeers(a.peer, b.peer))
	})
	var out []Finding
	for _, g := range list[:min(len(list), maxSubjects)] {
		out = append(out, r.finding(in, g, fin, len(list)))
	}
	return out
}

// finWait2Age estimates how long sk has waited in FIN_WAIT2 and, for an
// orphan, how long the kernel will still wait. With tcp_fin_timeout <= 60 s
// an orphan becomes a timewait-like record whose timer (reported as the
// TIME_WAIT timer) starts at tcp_fin_timeout, so the age is exact. Above
// 60 s the full socket first waits fin-60 s on the keepalive timer, then the
// record another fin-60 s (tcp_close and tcp_keepalive_timer in
// net/ipv4/tcp.c and tcp_timer.c). Otherwise the ACK of our FIN is the last
// thing the peer sent, so tcpi_last_ack_recv is the age.
func finWait2Age(sk *sockdiag.Socket, fin time.Duration, orphan bool) (age, left time.Duration) {
	if sk.HasInfo {
		age = ms(sk.Info.LastAckRecv)
	}
	if !orphan {
		return age, 0
	}
	phase := fin
	if fin > snapshot.TimeWaitLen {
		phase = fin - snapshot.TimeWaitLen
	}
	switch sk.Timer {
	case sockdiag.TimerTimeWait:
		age, left = phase-sk.TimerExpires, sk.TimerExpires
		if fin > snapshot.TimeWaitLen {
			age += phase
		}
	case sockdiag.TimerKeepalive:
		if fin > snapshot.TimeWaitLen {
			left = sk.TimerExpires + phase
		} else {
			left = sk.TimerExpires
		}
		if !sk.HasInfo {
			age = phase - sk.TimerExpires
		}
	}
	return max(age, 0), left
}

func (r orphanFinWait2) finding(in *Input, g *fw2Group, fin time.Duration, groups int) Finding {
	sys := &in.Now.Sysctls
	nums := g.peer.numbers()
	nums["count"] = g.count
	nums["oldest_age_s"] = secs(g.oldest)
	ev := map[string]any{
		"peer": g.peer.Name(), "direction": nums["direction"], "fin_wait2": g.count,
		"orphaned": g.orphan, "oldest_age_s": secs(g.oldest), "tcp_fin_timeout": sys.FinTimeout,
		"min_age_s": finWait2MinAge.Seconds(),
	}
	if in.Prev != nil {
		ev["seen_in_both_samples"] = g.seenBoth
	}
	if groups > maxSubjects {
		ev["groups_total"] = groups
	}
	subj := Subject{Kind: g.peer.Kind(), Name: g.peer.Name(), Processes: g.procs, Numbers: nums}
	if !g.orphan {
		return r.owned(in, g, ev, subj)
	}
	ev["longest_remaining_s"] = secs(g.left)
	sev := Warning
	if g.count >= finWait2Critical {
		sev = Critical
	}
	life := fin
	if fin > snapshot.TimeWaitLen {
		life = 2 * (fin - snapshot.TimeWaitLen)
	}
	were := "were closed by this host and are"
	if g.count == 1 {
		were = "was closed by this host and is"
	}
	expl := fmt.Sprintf("%s to %s %s orphaned in FIN_WAIT2: the kernel sent our FIN, %s acknowledged it, but has not sent its own FIN for up to %s. "+
		"For orphans (no process holds them any more) the kernel waits tcp_fin_timeout = %d s for that FIN, %s in all here, then drops them; tcp_fin_timeout governs nothing else, neither TIME_WAIT (fixed 60 s) nor sockets a process still holds. "+
		"Here an orphan costs little (no fd, a small record) but keeps its 4-tuple until then. "+
		"The real problem is on the peer: a FIN unanswered for seconds means the program at %s does not close after reading EOF, so it is piling up CLOSE_WAIT sockets (run tcplens doctor there).",
		plural(g.count, "connection", "connections"), g.peer, were, g.peer.Name(), human(g.oldest), sys.FinTimeout, human(life), g.peer.Name())
	fixes := []string{
		fmt.Sprintf("Fix the peer: the program at %s must call close() when a read returns EOF (or 0 bytes); `ss -tnp state close-wait` on that host shows the leaking process, and its close-wait-leak finding says how to fix it per language.", g.peer.Name()),
		"If this host must read the peer's last reply, do not close(): call shutdown(SHUT_WR), read to EOF with a deadline, then close; an orphan's late data is answered with an RST.",
	}
	switch {
	case sys.FinTimeout > 60:
		fixes = append(fixes, fmt.Sprintf("tcp_fin_timeout is %d s, above 60 s, so each orphan is kept as a full socket for %d s and then as a record for another %d s: `sysctl -w net.ipv4.tcp_fin_timeout=30` brings that down to one 30 s wait.", sys.FinTimeout, sys.FinTimeout-60, sys.FinTimeout-60))
	case sys.FinTimeout > 15:
		fixes = append(fixes, fmt.Sprintf("To free them sooner, lower tcp_fin_timeout carefully (now %d s): `sysctl -w net.ipv4.tcp_fin_timeout=15`; it only shortens the wait for orphans, and a healthy but slow peer whose FIN arrives later gets an RST.", sys.FinTimeout))
	default:
		fixes = append(fixes, fmt.Sprintf("tcp_fin_timeout is already %d s; lowering it further only hides the peer's bug.", sys.FinTimeout))
	}
	return Finding{
		ID: r.ID(), Severity: sev,
		Title:       fmt.Sprintf("%s wait for a FIN from %s", plural(g.count, "orphaned connection", "orphaned connections"), g.peer.Name()),
		Evidence:    ev,
		Explanation: expl,
		Fix:         fixes,
		Subjects:    []Subject{subj},
	}
}

// owned reports FIN_WAIT2 sockets a process still holds: they are
// half-closed on purpose or by accident, and no timer ends them.
func (r orphanFinWait2) owned(in *Input, g *fw2Group, ev map[string]any, subj Subject) Finding {
	who := "a process"
	if len(g.procs) > 0 {
		who = procName(g.procs[0])
	}
	expl := fmt.Sprintf("%s holds %s to %s in FIN_WAIT2 for up to %s: it called shutdown(SHUT_WR) (or closed only its writing side), %s acknowledged our FIN but never sent its own. "+
		"tcp_fin_timeout (%d s) applies only to orphans, so these wait for the peer's FIN for ever, unless keepalive or the program ends them. "+
		"That is fine while the program is still reading the peer's reply; if nothing is reading, both ends leak.",
		who, plural(g.count, "connection", "connections"), g.peer, human(g.oldest), g.peer.Name(), in.Now.Sysctls.FinTimeout)
	return Finding{
		ID: r.ID(), Severity: Info,
		Title:       fmt.Sprintf("%s to %s half-closed for over %s", plural(g.count, "connection", "connections"), g.peer.Name(), human(g.oldest)),
		Evidence:    ev,
		Explanation: expl,
		Fix: []string{
			"After shutdown(SHUT_WR) read until EOF with a deadline and then close() the socket; close it at once if the reply no longer matters.",
			fmt.Sprintf("Check why the peer %s does not close after reading EOF: its program must close() the connection (see close-wait-leak there).", g.peer.Name()),
			"Enable keepalive on the socket (SO_KEEPALIVE with TCP_KEEPIDLE) so a dead peer is detected.",
		},
		Subjects: []Subject{subj},
	}
}

package doctor

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/netns"
	"github.com/tcplens/tcplens/internal/procs"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// closeWaitLeak finds connections the peer closed and the local program
// never did. CLOSE_WAIT has no kernel timer: only close() ends it, so each
// such socket keeps its fd and buffers for the life of the process. With two
// snapshots it also finds TCP socket fds the process kept after the kernel
// dropped the connection (reset or timed out while leaked): no dump lists
// them any more, only /proc/PID/fd does.
type closeWaitLeak struct{}

func (closeWaitLeak) ID() string { return "close-wait-leak" }

const (
	// closeWaitMinAge: a program that reads its connection sees EOF at the
	// next read and closes within milliseconds. Two seconds leave room for GC
	// pauses and a busy event loop, so only forgotten sockets count.
	closeWaitMinAge = 2 * time.Second
	// closeWaitCriticalCount: a close missing on one error path leaks one
	// socket per failing request; 100 in one process means the path runs
	// routinely, and 100 is a tenth of the common 1024 fd soft limit.
	closeWaitCriticalCount = 100
	// closeWaitCriticalAge: nothing legitimate keeps a peer-closed socket
	// for 5 minutes; the program is not going to close it any more.
	closeWaitCriticalAge = 5 * time.Minute
	// maxRemotes bounds the per-remote list of a subject.
	maxRemotes = 10
)

// procRoot is where /proc is mounted; the fd look-ups read it.
var procRoot = "/proc"

// cwRemote is one remote of a leaking process.
type cwRemote struct {
	peer   peer
	count  int
	oldest time.Duration
}

// cwProc is what one process leaks.
type cwProc struct {
	ref      analyze.ProcRef
	owners   []analyze.ProcRef
	remotes  map[peer]*cwRemote
	count    int
	seenBoth int
	// oldest is the age estimate (since the peer last sent data; its FIN
	// came at or after that); certain is a lower bound (since the ACK on the
	// peer's FIN, or the interval for sockets seen in both snapshots).
	oldest, certain time.Duration
	unread          uint64
	// unreadEOF counts sockets whose FIN the program has not even read.
	unreadEOF int
	// unlisted are TCP socket inodes the process held in both snapshots
	// that neither dump lists; protos counts them per protocol.
	unlisted []uint32
	protos   map[string]int
}

func (r closeWaitLeak) Check(in *Input) []Finding {
	byPID := make(map[int]*cwProc)
	get := func(ref analyze.ProcRef, owners []analyze.ProcRef) *cwProc {
		p := byPID[ref.PID]
		if p == nil {
			p = &cwProc{ref: ref, owners: owners, remotes: make(map[peer]*cwRemote), protos: make(map[string]int)}
			byPID[ref.PID] = p
		}
		return p
	}
	for i := range in.Now.Sockets {
		sk := &in.Now.Sockets[i]
		if sk.State != sockdiag.CloseWait {
			continue
		}
		age, certain, both := closeWaitAge(in, sk)
		if certain < closeWaitMinAge || sk.SendQ > 0 || (sk.HasInfo && ms(sk.Info.LastDataSent) < closeWaitMinAge) {
			continue // young, or the program still writes to it (a legitimate half-close)
		}
		ref, owners := firstOwner(in, sk)
		p := get(ref, owners)
		p.count++
		if both {
			p.seenBoth++
		}
		p.oldest = max(p.oldest, age)
		p.certain = max(p.certain, certain)
		// The FIN takes one sequence number: rqueue counts it until a read
		// returns EOF, so RecvQ > 0 means the program is not reading at all.
		if sk.RecvQ > 0 {
			p.unreadEOF++
			p.unread += uint64(sk.RecvQ - 1)
		}
		pr := peerOf(in.Now, sk)
		g := p.remotes[pr]
		if g == nil {
			g = &cwRemote{peer: pr}
			p.remotes[pr] = g
		}
		g.count++
		g.oldest = max(g.oldest, age)
	}
	unlisted, nsErr := unlistedTCP(in)
	for _, u := range unlisted {
		p := get(u.ref, []analyze.ProcRef{u.ref})
		p.unlisted = append(p.unlisted, u.inode)
		p.protos[u.proto]++
	}

	list := make([]*cwProc, 0, len(byPID))
	for _, p := range byPID {
		list = append(list, p)
	}
	slices.SortFunc(list, func(a, b *cwProc) int {
		return cmp.Or(cmp.Compare(b.count+len(b.unlisted), a.count+len(a.unlisted)), cmp.Compare(a.ref.PID, b.ref.PID))
	})
	var out []Finding
	for _, p := range list[:min(len(list), maxSubjects)] {
		out = append(out, r.finding(in, p, len(list), nsErr))
	}
	return out
}

// closeWaitAge estimates how long sk has been in CLOSE_WAIT. sock_diag has no
// time-in-state, so: age is the time since the peer last sent data (its FIN
// came at or after that); certain is a lower bound, from the ACK carried by
// the FIN (later ACKs, e.g. to keepalive probes, only make it smaller) or
// from having seen the socket in CLOSE_WAIT in the earlier snapshot.
func closeWaitAge(in *Input, sk *sockdiag.Socket) (age, certain time.Duration, both bool) {
	if sk.HasInfo {
		certain = ms(sk.Info.LastAckRecv)
		age = ms(sk.Info.LastDataRecv)
	}
	if seenBoth(in, sk, sockdiag.CloseWait) {
		both = true
		certain = max(certain, in.Interval())
	}
	return max(age, certain), certain, both
}

func (r closeWaitLeak) finding(in *Input, p *cwProc, groups int, nsErr error) Finding {
	total := p.count + len(p.unlisted)
	sev := Warning
	if total >= closeWaitCriticalCount || p.certain >= closeWaitCriticalAge {
		sev = Critical
	}
	name := procName(p.ref)
	remotes := byCount(p.remotes, func(g *cwRemote) int { return g.count })
	var remoteNums []map[string]any
	var remoteText []string
	for _, g := range remotes[:min(len(remotes), maxRemotes)] {
		m := g.peer.numbers()
		m["count"] = g.count
		m["oldest_age_s"] = secs(g.oldest)
		remoteNums = append(remoteNums, m)
		remoteText = append(remoteText, fmt.Sprintf("%d to %s", g.count, g.peer))
	}

	ev := map[string]any{
		"process": name, "close_wait": p.count, "oldest_age_s": secs(p.oldest),
		"oldest_age_lower_bound_s": secs(p.certain), "unread_bytes": p.unread, "eof_not_read": p.unreadEOF,
		"remotes": remoteNums, "min_age_s": closeWaitMinAge.Seconds(),
	}
	if in.Prev != nil {
		ev["seen_in_both_samples"] = p.seenBoth
		ev["interval_s"] = secs(in.Interval())
	}
	if len(p.unlisted) > 0 {
		ev["unlisted_tcp_fds"] = len(p.unlisted)
		ev["unlisted_inodes"] = p.unlisted[:min(len(p.unlisted), maxRemotes)]
		ev["unlisted_protocols"] = p.protos
	}
	if nsErr != nil {
		ev["unlisted_check_error"] = nsErr.Error()
	}
	if groups > maxSubjects {
		ev["processes_total"] = groups
	}
	var proc *procs.Process
	if in.Now.Procs != nil {
		proc = in.Now.Procs.Procs[p.ref.PID]
	}
	if proc != nil {
		ev["fds"] = proc.FDs
		if proc.FDLimit > 0 && proc.FDLimit != math.MaxUint64 { // 0 unknown, max unlimited
			ev["fd_limit"] = proc.FDLimit
		}
	}

	var b strings.Builder
	if p.count > 0 {
		fmt.Fprintf(&b, "%s holds %s in CLOSE_WAIT (%s); the oldest has waited at least %s for close(), and its peer last sent data %s ago. ",
			name, plural(p.count, "connection", "connections"), strings.Join(remoteText, ", "), human(p.certain), human(p.oldest))
		b.WriteString("CLOSE_WAIT means the peer closed its side and this kernel acknowledged it; only the program can finish the connection by calling close(), and it has not. ")
	}
	if len(p.unlisted) > 0 {
		fmt.Fprintf(&b, "%s also keeps %s that the kernel no longer lists in any state: those connections were reset or timed out and the program never closed the fd. ",
			name, plural(len(p.unlisted), "TCP socket fd", "TCP socket fds"))
	}
	b.WriteString("The kernel has no timer for this, so every such socket keeps its file descriptor")
	if proc != nil && proc.FDLimit > 0 && proc.FDLimit != math.MaxUint64 {
		fmt.Fprintf(&b, " (the process has %d of %d open)", proc.FDs, proc.FDLimit)
	}
	b.WriteString(" and its buffers until the program closes it or exits. ")
	switch {
	case p.count == 0:
	case p.unreadEOF == p.count:
		fmt.Fprintf(&b, "The program has not even read the end of stream (%d bytes of data still unread), so it no longer reads these sockets at all. ", p.unread)
	case p.unreadEOF == 0:
		b.WriteString("The program did read the end of stream (a read returned 0 / EOF) and then forgot to close. ")
	default:
		fmt.Fprintf(&b, "On %d of them the program has not even read the end of stream (%d bytes unread); on the others it read EOF and forgot to close. ", p.unreadEOF, p.unread)
	}
	b.WriteString("This is a bug in the program or its connection pool, not a kernel or network setting.")
	if in.Prev == nil {
		b.WriteString(" (Run with an interval to also find leaked fds of connections that were reset.)")
	}

	subj := Subject{
		Kind: "process", Name: name, Processes: p.owners,
		Numbers: map[string]any{"count": total, "close_wait": p.count, "oldest_age_s": secs(p.oldest), "remotes": remoteNums},
	}
	if len(p.unlisted) > 0 {
		subj.Numbers["unlisted_tcp_fds"] = len(p.unlisted)
	}
	title := fmt.Sprintf("%s leaks %s in CLOSE_WAIT", name, plural(p.count, "connection", "connections"))
	if p.count == 0 {
		title = fmt.Sprintf("%s leaks %s of reset connections", name, plural(len(p.unlisted), "socket fd", "socket fds"))
	} else if len(p.unlisted) > 0 {
		title += fmt.Sprintf(" and %s of reset ones", plural(len(p.unlisted), "fd", "fds"))
	}
	return Finding{
		ID: r.ID(), Severity: sev, Title: title, Evidence: ev,
		Explanation: b.String(), Fix: closeWaitFixes(p, proc), Subjects: []Subject{subj},
	}
}

// closeWaitFixes puts the advice for the process's runtime first when its
// name or command line gives it away.
func closeWaitFixes(p *cwProc, proc *procs.Process) []string {
	pid := p.ref.PID
	find := fmt.Sprintf("List the leaked sockets with their fds: `ss -tnp state close-wait` and `lsof -nP -a -p %d -iTCP`; count again a minute later to get the leak rate, and match the remote to the client, pool or handler that opened it.", pid)
	if pid == 0 {
		find = "Find the owning process with `ss -tnp state close-wait` (run as root to see every owner), then match the remote to the client, pool or handler that opened it."
	}
	langs := []struct{ key, fix string }{
		{"java", fmt.Sprintf("Java: close every Socket, stream, JDBC Connection/Statement/ResultSet and HTTP response in try-with-resources, also on exceptions; with Apache HttpClient consume or close every response (EntityUtils.consume(response.getEntity()) or response.close()), even for error statuses. `jstack %d` shows the threads holding connections; `lsof -p %d` the fds.", pid, pid)},
		{"go", "Go: `defer resp.Body.Close()` right after every successful http.Client call (and drain the body so the connection is reused); in your own protocols close the net.Conn when Read returns io.EOF or any error. A goroutine dump (net/http/pprof /debug/pprof/goroutine?debug=2, or SIGQUIT) shows goroutines parked on the leaked connections."},
		{"python", "Python: use `with` for sockets, `requests.Session()` and responses (`with session.get(url, stream=True) as r:`), or call response.close() when the body is not read to the end; `py-spy dump --pid PID` shows where the code waits."},
		{"node", "Node.js: call socket.end() or socket.destroy() on 'end'; with `allowHalfOpen: true` the socket stays in CLOSE_WAIT until you do; handle 'error' and 'timeout' on every socket and destroy it there."},
	}
	hint := strings.ToLower(p.ref.Comm)
	if proc != nil {
		hint += " " + strings.ToLower(proc.Cmdline)
	}
	slices.SortStableFunc(langs, func(a, b struct{ key, fix string }) int {
		ra, rb := strings.Contains(hint, a.key), strings.Contains(hint, b.key)
		switch {
		case ra && !rb:
			return -1
		case rb && !ra:
			return 1
		}
		return 0
	})
	fixes := []string{find}
	for _, l := range langs {
		fixes = append(fixes, l.fix)
	}
	return append(fixes,
		"If these are idle pooled connections that the server closed (database wait_timeout, HTTP keep-alive timeout), evict idle connections before the server does (HikariCP idleTimeout and maxLifetime, Go http.Transport IdleConnTimeout, database/sql SetConnMaxIdleTime) and validate them on borrow.",
		"Restarting the process frees the sockets, but they come back until the missing close() is fixed.")
}

// unlistedSocket is a TCP socket fd that no dump lists.
type unlistedSocket struct {
	ref   analyze.ProcRef
	inode uint32
	proto string
}

// unlistedTCP finds TCP socket fds that processes of the inspected namespace
// held in both snapshots while neither dump listed them: the connection was
// reset or timed out and the program kept the fd. Needing both snapshots
// skips sockets between socket() and connect()/listen(), which no dump
// lists either. Each candidate is then checked through a duplicate of its
// fd (procs.InspectTCP): it must live in the inspected namespace (a thread
// may have created it in another one) and be CLOSE after having sent
// segments (a socket only bound has sent none). Without the rights to
// duplicate the fd, the protocol check alone decides.
func unlistedTCP(in *Input) ([]unlistedSocket, error) {
	if in.Prev == nil || in.Prev.Procs == nil || in.Now.Procs == nil {
		return nil, nil
	}
	listed := make(map[uint32]bool, len(in.Now.Sockets)+len(in.Prev.Sockets))
	for _, s := range [][]sockdiag.Socket{in.Prev.Sockets, in.Now.Sockets} {
		for i := range s {
			if s[i].Inode != 0 {
				listed[s[i].Inode] = true
			}
		}
	}
	var target uint64 // the inspected namespace, looked up at the first candidate
	pids := make([]int, 0, len(in.Now.Procs.Procs))
	for pid := range in.Now.Procs.Procs {
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	var out []unlistedSocket
	for _, pid := range pids {
		now, prev := in.Now.Procs.Procs[pid], in.Prev.Procs.Procs[pid]
		if prev == nil || prev.Comm != now.Comm {
			continue // new, or the PID was reused
		}
		var cand []uint32
		for _, ino := range now.SocketInodes {
			if !listed[ino] {
				if _, ok := slices.BinarySearch(prev.SocketInodes, ino); ok {
					cand = append(cand, ino)
				}
			}
		}
		if len(cand) == 0 {
			continue
		}
		if target == 0 {
			var err error
			if target, err = netns.Inode(in.Now.Netns); err != nil {
				return nil, fmt.Errorf("find leaked socket fds: %w", err)
			}
		}
		if ino, err := procs.NetnsInode(procRoot, pid); err != nil || ino != target {
			continue // gone, or its sockets belong to another namespace's dump
		}
		protos, err := procs.SocketProtos(procRoot, pid, cand)
		if err != nil && len(protos) == 0 {
			continue // exited meanwhile
		}
		var tcp []uint32
		for _, ino := range cand {
			if pr, ok := protos[ino]; ok && procs.IsTCPProto(pr) {
				tcp = append(tcp, ino)
			}
		}
		if len(tcp) == 0 {
			continue
		}
		fds, _ := procs.SocketFDs(procRoot, pid, tcp)
		for _, ino := range tcp {
			if fd, ok := fds[ino]; ok {
				if sk, err := procs.InspectTCP(pid, fd); err == nil && (sk.Netns != target || sockdiag.State(sk.State) != sockdiag.Close || sk.SegsOut == 0) {
					continue // another namespace's socket, or never connected
				}
			}
			out = append(out, unlistedSocket{ref: analyze.ProcRef{PID: pid, Comm: now.Comm}, inode: ino, proto: protos[ino]})
		}
	}
	return out, nil
}

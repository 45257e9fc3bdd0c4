package doctor

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"slices"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// fdLimit finds processes close to their soft RLIMIT_NOFILE. At the limit
// accept(), socket() and open() fail with EMFILE, which to TCP clients
// looks like a listener that stopped accepting.
//
// Only processes holding a socket of the inspected namespace are checked:
// /proc lists every process of the host, and one with no TCP socket here
// cannot explain this namespace's connections.
type fdLimit struct{}

func (fdLimit) ID() string { return "fd-limit" }

const (
	fdWarn = 0.8
	// fdCritical: with 5% left a burst of connections (or a leak) reaches
	// the limit within moments.
	fdCritical = 0.95
)

func (r fdLimit) Check(in *Input) []Finding {
	type cand struct {
		p    analyze.Process
		used float64
	}
	var cs []cand
	for _, p := range analyze.Processes(in.Now) {
		if p.FDLimit == 0 || p.FDLimit == math.MaxUint64 {
			continue // unknown or unlimited
		}
		if used := float64(p.FDs) / float64(p.FDLimit); used >= fdWarn {
			cs = append(cs, cand{p, used})
		}
	}
	// Fullest first, and no more than the other rules report.
	slices.SortFunc(cs, func(a, b cand) int { return cmp.Or(cmp.Compare(b.used, a.used), cmp.Compare(a.p.PID, b.p.PID)) })
	var out []Finding
	for _, c := range cs[:min(len(cs), maxSubjects)] {
		sev := Warning
		if c.used >= fdCritical {
			sev = Critical
		}
		out = append(out, r.finding(in, c.p, c.used, sev))
	}
	return out
}

func (r fdLimit) finding(in *Input, p analyze.Process, used float64, sev Severity) Finding {
	name := procName(p.ProcRef)
	closeWait := p.States[sockdiag.CloseWait]
	ev := map[string]any{
		"pid": p.PID, "comm": p.Comm, "fds": p.FDs, "fd_limit": p.FDLimit,
		"used_percent": round1(used * 100), "fds_left": int64(p.FDLimit) - int64(p.FDs),
		"tcp_sockets": p.Sockets, "established": p.States[sockdiag.Established],
		"listen": p.States[sockdiag.Listen], "close_wait": closeWait,
	}
	if p.Cmdline != "" {
		ev["cmdline"] = p.Cmdline
	}
	growth := ""
	if in.Prev != nil && in.Prev.Procs != nil && in.Interval() > 0 {
		if old, ok := in.Prev.Procs.Procs[p.PID]; ok {
			g := float64(p.FDs-old.FDs) / in.Interval().Seconds()
			ev["growth_per_s"] = round1(g)
			if g > 0 {
				secs := float64(int64(p.FDLimit)-int64(p.FDs)) / g
				ev["seconds_to_limit"] = round1(max(secs, 0))
				growth = fmt.Sprintf(" Its fd count grew by %.1f/s between the snapshots, which reaches the limit in about %.0f s.", g, max(secs, 0))
			}
		}
	}

	expl := fmt.Sprintf("%s has %d open file descriptors and a soft RLIMIT_NOFILE of %d (%.0f%%). "+
		"At the limit every accept(), socket() and open() in it fails with EMFILE (\"too many open files\"): a server stops accepting, so its listen queue fills and overflows, and a client cannot dial. "+
		"Of its fds, %s in this namespace.%s",
		name, p.FDs, p.FDLimit, used*100, plural(p.Sockets, "is a TCP socket", "are TCP sockets"), growth)
	if closeWait > 0 {
		expl += fmt.Sprintf(" %d of them are in CLOSE_WAIT: the peer closed and this process never called close(), a leak that no limit will outgrow.", closeWait)
	}

	// Suggest room for twice today's usage, and never less than the usual
	// server default.
	suggest := max(uint64(65536), 1<<bits.Len64(2*uint64(p.FDs)))
	fix := []string{
		fmt.Sprintf("Raise the soft limit where %s is started: `LimitNOFILE=%d` in the [Service] section of its systemd unit (then `systemctl daemon-reload` and a restart), "+
			"`ulimit -n %d` in its start script, or `--ulimit nofile=%d:%d` for a container. For the running process: `prlimit --pid %d --nofile=%d:%d`.",
			p.Comm, suggest, suggest, suggest, suggest, p.PID, suggest, suggest),
		fmt.Sprintf("Check for an fd leak before raising it: if `ls /proc/%d/fd | wc -l` keeps growing under steady load, the limit only delays the failure. "+
			"Sockets in CLOSE_WAIT point at a missing close() (see the close-wait-leak rule); `ls -l /proc/%d/fd` shows what the other fds are.", p.PID, p.PID),
	}
	if closeWait > 0 {
		fix[0], fix[1] = fix[1], fix[0] // the leak is the cause; fix it first
	}
	return Finding{
		ID: r.ID(), Severity: sev,
		Title:       fmt.Sprintf("%s uses %d of %d file descriptors (%.0f%%)", name, p.FDs, p.FDLimit, used*100),
		Evidence:    ev,
		Explanation: expl,
		Fix:         fix,
		Subjects: []Subject{{
			Kind: "process", Name: name, Processes: []analyze.ProcRef{p.ProcRef},
			Numbers: map[string]any{"fds": p.FDs, "fd_limit": p.FDLimit, "tcp_sockets": p.Sockets, "close_wait": closeWait},
		}},
	}
}

package doctor

import (
	"fmt"
	"net"
	"os"
	"testing"

	"github.com/tcplens/tcplens/lab/harness"
)

func TestFDLimit(t *testing.T) {
	t.Parallel()
	ns := harness.NewT(t)
	const addr = "127.0.0.1:7000"
	server(t, ns, addr, false)
	// Each child inherits a dup of one TCP socket of the namespace, which
	// puts it in scope, plus /dev/null fds so it holds a known number.
	sock, err := dialHeld(t, ns, nil, addr).(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	withSock := func() []*os.File { return append([]*os.File{sock}, devNulls(t, 5)...) }

	// With n >= 9 fds, n/(n+1) is between 90% and 95%.
	warn, n := holder(t, withSock(), func(n int) uint64 { return uint64(n + 1) })
	crit, _ := holder(t, withSock(), func(n int) uint64 { return uint64(n) })
	calm, _ := holder(t, withSock(), func(n int) uint64 { return uint64(2 * n) })
	// Near its limit too, but it holds no socket of this namespace.
	other, _ := holder(t, devNulls(t, 6), func(n int) uint64 { return uint64(n + 1) })
	if n < 9 || n >= 19 {
		t.Fatalf("child has %d fds, want 9..18 for the thresholds below", n)
	}

	r := diagnose(t, ns, 0, 0, "fd-limit")
	f := findings(r, "fd-limit")
	if len(f) != 2 {
		var got [][]string
		for _, x := range f {
			got = append(got, subjectNames(x))
		}
		t.Fatalf("got %d findings %v, want 2", len(f), got)
	}
	w := mustSubject(t, f, fmt.Sprintf("sleep/%d", warn))
	if w.Severity != Warning || w.Subjects[0].Kind != "process" || w.Evidence["fds"] != n || w.Evidence["fd_limit"] != uint64(n+1) {
		t.Errorf("%d of %d: got %v %s %v, want a warning about the process", n, n+1, w.Severity, w.Subjects[0].Kind, w.Evidence)
	}
	if w.Evidence["tcp_sockets"] != 1 || !ownedBy(w, warn) {
		t.Errorf("evidence %v processes %v, want its one socket and pid %d", w.Evidence, w.Subjects[0].Processes, warn)
	}
	c := mustSubject(t, f, fmt.Sprintf("sleep/%d", crit))
	if c.Severity != Critical || r.ExitCode() != 2 {
		t.Errorf("at the limit: got %v, want critical", c.Severity)
	}
	for _, pid := range []int{calm, other} {
		if bySubject(f, fmt.Sprintf("sleep/%d", pid)) != nil {
			t.Errorf("sleep/%d reported", pid)
		}
	}
}

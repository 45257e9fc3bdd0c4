package doctor

import (
	"slices"
	"testing"
	"time"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/lab/harness"
)

// The client closes (or half-closes) and the server never does: the closed
// client socket is an orphan in FIN_WAIT2 until tcp_fin_timeout, the
// half-closed one waits for ever.
func TestOrphanFinWait2(t *testing.T) {
	t.Parallel()
	ns := harness.NewT(t)
	if err := ns.Sysctl("net.ipv4.tcp_fin_timeout", "3"); err != nil {
		t.Fatal(err)
	}
	server(t, ns, "127.0.0.1:7010", false)
	half := dialB(t, ns, nil, "127.0.0.1:7010")
	if err := half.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	dialB(t, ns, nil, "127.0.0.1:7010").Close()

	// About 2.2 s after the close: the orphan is past finWait2MinAge and
	// still inside its 3 s; the half-closed one is younger than 3 s.
	r := diagnose(t, ns, 2100*time.Millisecond, time.Minute, "orphan-fin-wait2")
	f := onlyFinding(t, r, "orphan-fin-wait2")
	if f.Severity != Warning || f.Subjects[0].Kind != "destination" || f.Subjects[0].Name != "127.0.0.1:7010" {
		t.Fatalf("%+v, want a warning for destination 127.0.0.1:7010", f)
	}
	if f.Evidence["fin_wait2"] != 1 || f.Evidence["orphaned"] != true || f.Evidence["tcp_fin_timeout"] != 3 {
		t.Errorf("evidence %v", f.Evidence)
	}
	if age := f.Evidence["oldest_age_s"].(float64); age < 2 || age > 3 {
		t.Errorf("oldest_age_s %v, want between 2 and 3", age)
	}

	// Past 3 s the kernel has dropped the orphan; the half-closed socket is
	// now older than tcp_fin_timeout and is reported as info.
	time.Sleep(time.Until(start.Add(3300 * time.Millisecond)))
	r = diagnose(t, ns, 0, time.Minute, "orphan-fin-wait2")
	f = onlyFinding(t, r, "orphan-fin-wait2")
	if f.Severity != Info || f.Evidence["orphaned"] != false || f.Subjects[0].Name != "127.0.0.1:7010" {
		t.Fatalf("%+v, want info for the half-closed connection", f)
	}
	if !slices.ContainsFunc(f.Subjects[0].Processes, func(p analyze.ProcRef) bool { return procName(p) == selfName(t) }) {
		t.Errorf("processes %v, want %s", f.Subjects[0].Processes, selfName(t))
	}
	if r.ExitCode() != 0 {
		t.Errorf("exit code %d, want 0", r.ExitCode())
	}
}

func TestOrphanFinWait2Thresholds(t *testing.T) {
	var socks []sockdiag.Socket
	for i := range finWait2Critical {
		sk := fakeConn(sockdiag.FinWait2, "10.0.0.9:80", uint64(i+1))
		sk.Inode, sk.HasInfo = 0, false
		sk.Timer, sk.TimerExpires = sockdiag.TimerTimeWait, 30*time.Second // 30 s of 60 gone
		socks = append(socks, sk)
	}
	f := orphanFinWait2{}.Check(fakeInput(socks...))
	if len(f) != 1 || f[0].Severity != Critical || f[0].Evidence["oldest_age_s"] != 30.0 {
		t.Fatalf("%+v, want one critical finding, oldest 30 s", f)
	}
	socks[0].TimerExpires = 59 * time.Second // 1 s old: not late yet
	if f := (orphanFinWait2{}).Check(fakeInput(socks[0])); len(f) != 0 {
		t.Fatalf("young orphan: %+v, want none", f)
	}
}

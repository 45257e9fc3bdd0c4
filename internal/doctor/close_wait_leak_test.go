package doctor

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/lab/harness"
)

// The server never closes what its clients close: this test process leaks
// CLOSE_WAIT sockets, and the rule must name it.
func TestCloseWaitLeak(t *testing.T) {
	t.Parallel()
	ns := harness.NewT(t)
	server(t, ns, "127.0.0.1:7000", false)
	leak := func(n int) {
		for range n {
			c := dialB(t, ns, nil, "127.0.0.1:7000")
			if _, err := c.Write([]byte("request")); err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
	}
	leak(3)
	// The interval makes every socket "seen in both samples", so it counts
	// as at least 2 s old.
	r := diagnose(t, ns, closeWaitMinAge, time.Minute, "close-wait-leak")
	f := onlyFinding(t, r, "close-wait-leak")
	if f.Severity != Warning || len(f.Subjects) != 1 {
		t.Fatalf("3 leaked: %+v, want one warning with one subject", f)
	}
	s := f.Subjects[0]
	if s.Kind != "process" || s.Name != selfName(t) {
		t.Fatalf("subject %s %q, want process %q", s.Kind, s.Name, selfName(t))
	}
	if s.Numbers["count"] != 3 || f.Evidence["close_wait"] != 3 || f.Evidence["seen_in_both_samples"] != 3 {
		t.Errorf("numbers %v evidence %v, want 3 CLOSE_WAIT seen twice", s.Numbers, f.Evidence)
	}
	if age := s.Numbers["oldest_age_s"].(float64); age < 2 || age > 10 {
		t.Errorf("oldest_age_s %v, want about 2", age)
	}
	rem := remotesOf(t, s)["127.0.0.1 inbound"]
	if rem == nil || rem["count"] != 3 || rem["local"] != "127.0.0.1:7000" {
		t.Errorf("remotes %v, want 3 from clients at 127.0.0.1 of 127.0.0.1:7000", s.Numbers["remotes"])
	}
	if f.Evidence["unread_bytes"] != uint64(3*len("request")) || f.Evidence["eof_not_read"] != 3 {
		t.Errorf("unread_bytes %v eof_not_read %v, want %d and 3", f.Evidence["unread_bytes"], f.Evidence["eof_not_read"], 3*len("request"))
	}
	if r.ExitCode() != 1 {
		t.Errorf("exit code %d, want 1", r.ExitCode())
	}

	leak(closeWaitCriticalCount - 3)
	f = onlyFinding(t, diagnose(t, ns, closeWaitMinAge, time.Minute, "close-wait-leak"), "close-wait-leak")
	if f.Severity != Critical || f.Subjects[0].Numbers["count"] != closeWaitCriticalCount {
		t.Fatalf("%d leaked: severity %v numbers %v, want critical", closeWaitCriticalCount, f.Severity, f.Subjects[0].Numbers)
	}
}

// A connection reset while its process still holds the fd vanishes from
// sock_diag; only /proc/PID/fd still shows the socket.
func TestCloseWaitLeakResetFD(t *testing.T) {
	t.Parallel()
	ns := harness.NewT(t)
	l, err := ns.Listen("tcp", "127.0.0.1:7001")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// bash opens fd 3 to the server and execs sleep, which inherits it and
	// never closes it. The child runs inside the namespace, so it is a
	// process of the inspected namespace (this test process is not).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name, "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/7001 && exec sleep 20")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	l.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	c.(*net.TCPConn).SetLinger(0) // close sends an RST
	c.Close()

	pid := cmd.Process.Pid
	waitFor(t, 5*time.Second, "the child to become sleep with its socket reset", func() bool {
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		if strings.TrimSpace(string(comm)) != "sleep" {
			return false
		}
		for _, sk := range take(t, ns, false).Sockets {
			if sk.State != sockdiag.Listen {
				return false
			}
		}
		return true
	})

	r := diagnose(t, ns, 300*time.Millisecond, time.Minute, "close-wait-leak")
	f := onlyFinding(t, r, "close-wait-leak")
	want := "sleep/" + strconv.Itoa(pid)
	if f.Severity != Warning || f.Subjects[0].Kind != "process" || f.Subjects[0].Name != want {
		t.Fatalf("%+v, want a warning for %s", f, want)
	}
	if f.Evidence["unlisted_tcp_fds"] != 1 || f.Evidence["close_wait"] != 0 {
		t.Errorf("evidence %v, want one unlisted TCP fd", f.Evidence)
	}

	// One snapshot cannot tell a leaked fd from a socket being set up.
	if f := findings(diagnose(t, ns, 0, time.Minute, "close-wait-leak"), "close-wait-leak"); len(f) != 0 {
		t.Errorf("single snapshot: %+v, want none", f)
	}
}

// Thresholds that take minutes to reach for real.
func TestCloseWaitLeakThresholds(t *testing.T) {
	old := fakeConn(sockdiag.CloseWait, "10.0.0.9:443", 1)
	old.Info.LastAckRecv = uint32((closeWaitCriticalAge + time.Second).Milliseconds())
	old.Info.LastDataRecv, old.Info.LastDataSent = old.Info.LastAckRecv, old.Info.LastAckRecv
	busy := fakeConn(sockdiag.CloseWait, "10.0.0.9:443", 2) // half-closed, still sending
	busy.Info.LastAckRecv, busy.Info.LastDataSent = 10_000, 5
	fresh := fakeConn(sockdiag.CloseWait, "10.0.0.9:443", 3)
	fresh.Info.LastAckRecv, fresh.Info.LastDataSent = 100, 100_000

	f := closeWaitLeak{}.Check(fakeInput(old, busy, fresh))
	if len(f) != 1 || f[0].Severity != Critical || f[0].Subjects[0].Name != "unknown" || f[0].Evidence["close_wait"] != 1 {
		t.Fatalf("%+v, want one critical finding for 1 old socket of an unknown process", f)
	}
	if f := (closeWaitLeak{}).Check(fakeInput(busy, fresh)); len(f) != 0 {
		t.Fatalf("busy and fresh CLOSE_WAIT: %+v, want none", f)
	}
}

// holdInNamespace starts `sleep` inside ns holding f (as fd 3) and waits
// until it runs sleep; it returns the child's pid.
func holdInNamespace(t *testing.T, ns *harness.Namespace, f *os.File) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name, "sleep", "20")
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	f.Close()
	pid := cmd.Process.Pid
	waitFor(t, 5*time.Second, "the child to become sleep", func() bool {
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		return strings.TrimSpace(string(comm)) == "sleep"
	})
	return pid
}

// TestCloseWaitLeakResetFDNoFalsePositives holds two TCP sockets that no
// dump of the namespace lists and that are not leaks of it: one only bound,
// and one reset connection that lives in another namespace. A third, a
// reset connection of the namespace itself, is a real leak: the rule must
// report it and only it, which also proves it looked.
func TestCloseWaitLeakResetFDNoFalsePositives(t *testing.T) {
	t.Parallel()
	ns := harness.NewT(t)
	other := harness.NewT(t)

	var bound int
	if err := ns.Run(func() (err error) {
		if bound, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0); err != nil {
			return err
		}
		return unix.Bind(bound, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	}); err != nil {
		t.Fatal(err)
	}
	boundPid := holdInNamespace(t, ns, os.NewFile(uintptr(bound), "bound"))

	foreignPid := holdInNamespace(t, ns, resetConn(t, other, "127.0.0.1:7002"))
	leakPid := holdInNamespace(t, ns, resetConn(t, ns, "127.0.0.1:7003"))
	for _, n := range []*harness.Namespace{ns, other} {
		waitFor(t, 5*time.Second, "the resets to leave no connection in "+n.Name, func() bool {
			for _, sk := range take(t, n, false).Sockets {
				if sk.State != sockdiag.Listen {
					return false
				}
			}
			return true
		})
	}

	r := diagnose(t, ns, 300*time.Millisecond, time.Minute, "close-wait-leak")
	for _, f := range findings(r, "close-wait-leak") {
		for _, sub := range f.Subjects {
			for _, pid := range []int{boundPid, foreignPid} {
				if sub.Name == "sleep/"+strconv.Itoa(pid) {
					t.Errorf("false positive for %s: %s (%v)", sub.Name, f.Title, f.Evidence)
				}
			}
		}
	}
	f := onlyFinding(t, r, "close-wait-leak")
	if want := "sleep/" + strconv.Itoa(leakPid); len(f.Subjects) != 1 || f.Subjects[0].Name != want || f.Evidence["unlisted_tcp_fds"] != 1 {
		t.Errorf("%s %v (%v), want only the leak of %s, one unlisted fd", f.Title, subjectNames(f), f.Evidence, want)
	}
}

// resetConn connects to a listener on addr in ns, resets the connection
// from the server side and returns the client's fd: a TCP socket that no
// dump lists any more. The listener stays until the test ends.
func resetConn(t *testing.T, ns *harness.Namespace, addr string) *os.File {
	t.Helper()
	l, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	c, err := ns.Dial(context.Background(), nil, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s.(*net.TCPConn).SetLinger(0)
	s.Close() // an RST: the client socket is reset, and unlisted everywhere
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	return f
}

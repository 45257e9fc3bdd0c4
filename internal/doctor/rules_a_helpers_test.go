package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/lab/harness"
)

// Helpers for the group A rule tests. Every loop is bounded in count and
// time, and all traffic stays on loopback inside the test's namespace.

var groupA = []string{"timewait-churn", "tw-bucket-overflow", "listen-overflow", "fd-limit", "sysctl"}

func setSysctl(t *testing.T, ns *harness.Namespace, key, value string) {
	t.Helper()
	if err := ns.Sysctl(key, value); err != nil {
		t.Fatal(err)
	}
}

// churnFast makes n connections to addr and closes each one first, all on
// one thread inside ns, so every one ends in TIME_WAIT on the client. It is
// much faster than churn, which enters the namespace per dial.
func churnFast(t *testing.T, ns *harness.Namespace, addr string, n int) {
	t.Helper()
	err := ns.Run(func() error {
		d := net.Dialer{Timeout: 2 * time.Second}
		for i := range n {
			c, err := d.Dial("tcp", addr)
			if err != nil {
				return fmt.Errorf("dial %d: %w", i, err)
			}
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// serverClosesFirst accepts connections and closes each one at once, so
// TIME_WAIT lands on the server side. It stops with the test.
func serverClosesFirst(t *testing.T, ns *harness.Namespace, addr string) {
	t.Helper()
	l, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	acceptLoop(t, l, func(c net.Conn) { c.Close() })
}

// churnPeerCloses dials addr n times and closes each connection only after
// the server closed it (EOF), so the server is the active closer.
func churnPeerCloses(t *testing.T, ns *harness.Namespace, addr string, n int) {
	t.Helper()
	err := ns.Run(func() error {
		d := net.Dialer{Timeout: 2 * time.Second}
		for i := range n {
			c, err := d.Dial("tcp", addr)
			if err != nil {
				return fmt.Errorf("dial %d: %w", i, err)
			}
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, err = io.Copy(io.Discard, c)
			c.Close()
			if err != nil {
				return fmt.Errorf("wait for the server to close %d: %w", i, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// dialHeld opens a connection from ns that stays open until the test ends.
func dialHeld(t *testing.T, ns *harness.Namespace, d *net.Dialer, addr string) net.Conn {
	t.Helper()
	if d == nil {
		d = &net.Dialer{Timeout: 2 * time.Second}
	}
	c, err := ns.Dial(context.Background(), d, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// take snapshots ns; procs adds the process scan.
func take(t *testing.T, ns *harness.Namespace, procs bool) *snapshot.Snapshot {
	t.Helper()
	s, err := snapshot.Take(context.Background(), snapshot.Options{Netns: ns.Name, Procs: procs})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// diagnoseAround snapshots ns, runs fn, snapshots again and applies the
// rules: counters then rise by exactly what fn caused.
func diagnoseAround(t *testing.T, ns *harness.Namespace, idle time.Duration, fn func(), only ...string) *Report {
	t.Helper()
	rules, err := Select(only, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := &Input{IdleTimeout: idle, Prev: take(t, ns, true)}
	fn()
	in.Now = take(t, ns, true)
	return Diagnose(in, rules)
}

// waitTW waits until ns holds about n TIME_WAIT sockets. Under parallel
// load the kernel occasionally loses one as it enters TIME_WAIT (an RST is
// sent instead; Tcp.OutRsts rises by the number lost), about 1 in 500 at
// worst here, so a count within twSlack(n) that has stopped changing is
// accepted. It returns the count.
func waitTW(t *testing.T, ns *harness.Namespace, n int) int {
	t.Helper()
	var s *snapshot.Snapshot
	last, since := -1, time.Now()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s = take(t, ns, false)
		got := s.Count(sockdiag.TimeWait)
		if got != last {
			last, since = got, time.Now()
		}
		if got >= n || (got >= n-twSlack(n) && time.Since(since) > 300*time.Millisecond) {
			return got
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%d TIME_WAIT sockets after 5s, want %d; states %v; TcpExt.TW %d, Tcp.OutRsts %d, TcpExt.TCPTimeWaitOverflow %d",
		s.Count(sockdiag.TimeWait), n, analyze.StateCounts(s.States), s.Counters.Get("TcpExt.TW"), s.Counters.Get("Tcp.OutRsts"),
		s.Counters.Get("TcpExt.TCPTimeWaitOverflow"))
	return 0
}

// twSlack is how many TIME_WAIT sockets of n a test tolerates losing.
func twSlack(n int) int { return 2 + n/100 }

// counterAtLeast waits until a kernel counter of ns reaches n.
func counterAtLeast(t *testing.T, ns *harness.Namespace, key string, n int64) {
	t.Helper()
	waitFor(t, 5*time.Second, fmt.Sprintf("%s >= %d", key, n), func() bool { return take(t, ns, false).Counters.Get(key) >= n })
}

// rawListen listens on a raw socket with an exact backlog, which net.Listen
// cannot do (it always asks for somaxconn), and accepts nothing by itself.
func rawListen(t *testing.T, ns *harness.Namespace, addr string, backlog int) int {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	var fd int
	err := ns.Run(func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind %s: %w", addr, err)
		}
		if err := unix.Listen(fd, backlog); err != nil {
			unix.Close(fd)
			return fmt.Errorf("listen %s: %w", addr, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// acceptN accepts n connections that are already queued on a rawListen
// socket; they are closed when the test ends.
func acceptN(t *testing.T, fd, n int) {
	t.Helper()
	for range n {
		nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
		if err != nil {
			t.Fatalf("accept: %v", err)
		}
		t.Cleanup(func() { unix.Close(nfd) })
	}
}

// nbConnect starts n non-blocking connects to addr and leaves them pending;
// they are closed when the test ends.
func nbConnect(t *testing.T, ns *harness.Namespace, addr string, n int) {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	var fds []int
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	err := ns.Run(func() error {
		for range n {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("socket: %w", err)
			}
			fds = append(fds, fd)
			err = unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
			if err != nil && !errors.Is(err, unix.EINPROGRESS) {
				return fmt.Errorf("connect %s: %w", addr, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// acceptQueue returns the accept queue length of the listener on addr.
func acceptQueue(t *testing.T, ns *harness.Namespace, addr string) uint32 {
	t.Helper()
	s := take(t, ns, false)
	for _, sk := range s.Sockets {
		if sk.State == sockdiag.Listen && sk.Local.String() == addr {
			return sk.RecvQ
		}
	}
	t.Fatalf("no listener on %s", addr)
	return 0
}

// holder starts `sleep 30` holding extra as fds 3.., then lowers its soft
// RLIMIT_NOFILE to limit(n), n being the fds it really has: a child also
// inherits any fd the test process got without close-on-exec, so n is
// read back rather than assumed. The child is killed when the test ends.
func holder(t *testing.T, extra []*os.File, limit func(n int) uint64) (pid, n int) {
	t.Helper()
	cmd := exec.Command("sleep", "30")
	cmd.ExtraFiles = extra
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sleep: %v", err)
	}
	pid = cmd.Process.Pid
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Start returns at execve; the dynamic loader then opens and closes
	// libraries for a moment, so wait until sleep sleeps with a steady count.
	n = -1
	waitFor(t, 5*time.Second, "sleep to settle", func() bool {
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		stat, serr := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || serr != nil {
			t.Fatalf("inspect child %d: %v %v", pid, err, serr)
		}
		_, rest, _ := strings.Cut(string(stat), ") ")
		steady := len(fds) == n && strings.HasPrefix(rest, "S")
		n = len(fds)
		return steady
	})
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatalf("prlimit get %d: %v", pid, err)
	}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: limit(n), Max: old.Max}, nil); err != nil {
		t.Fatalf("prlimit set %d: %v", pid, err)
	}
	return pid, n
}

// devNulls opens n files on /dev/null, closed when the test ends.
func devNulls(t *testing.T, n int) []*os.File {
	t.Helper()
	var fs []*os.File
	for range n {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		fs = append(fs, f)
	}
	return fs
}

// bySubject returns the finding whose first subject is name.
func bySubject(fs []Finding, name string) *Finding {
	for i := range fs {
		if len(fs[i].Subjects) > 0 && fs[i].Subjects[0].Name == name {
			return &fs[i]
		}
	}
	return nil
}

// mustSubject is bySubject that fails the test, printing what was found.
func mustSubject(t *testing.T, fs []Finding, name string) *Finding {
	t.Helper()
	f := bySubject(fs, name)
	if f == nil {
		var got [][]string
		for _, f := range fs {
			got = append(got, subjectNames(f))
		}
		t.Fatalf("no finding about %s; subjects: %v", name, got)
	}
	return f
}

// ownedBy reports whether the finding's first subject names pid.
func ownedBy(f *Finding, pid int) bool {
	return len(f.Subjects) > 0 && slices.ContainsFunc(f.Subjects[0].Processes, func(p analyze.ProcRef) bool { return p.PID == pid })
}

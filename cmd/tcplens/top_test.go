package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcplens/tcplens/lab/harness"
)

// needTool returns the path of a program the test drives. Outside CI a
// missing one skips the test; in CI (CI set) it fails it, so a missing
// install step in scripts/test.sh cannot hide.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found (apt-get install %s; scripts/test.sh installs it)", name, pkg)
	}
	t.Skipf("%s not found: apt-get install %s", name, pkg)
	return ""
}

func TestTopRejectsJSONAndNonTerminal(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"top", "--json"}, "top is interactive and has no --json"},
		{[]string{"top"}, "top needs a terminal on stdout; for a one-shot text view use `tcplens summary`"},
		{[]string{"top", "--interval", "10ms"}, "--interval 10ms: must be at least 100ms"},
		{[]string{"top", "--interval", "soon"}, "invalid argument"},
	} {
		out, errOut, code := tcplens(t, tc.args...)
		if code != 2 || out != "" || !strings.Contains(errOut, tc.want) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and one line with %q", tc.args, code, out, errOut, tc.want)
		}
	}
}

// topWorld fills a namespace with what top should show:
//   - 127.0.0.1:7001: 150 connections dialled and closed by the client, so
//     150 client-side TIME_WAIT holding ephemeral ports;
//   - 127.0.0.2:7002: 30 more TIME_WAIT and 50 open connections, so it has
//     fewer ports in use but more ESTABLISHED;
//   - 127.0.0.1:7003: 5 connections the client closed and the server never
//     did, held by a separate `sleep` process: a CLOSE_WAIT leak.
//
// It returns the pid of the leaking process.
func topWorld(t *testing.T, ns *harness.Namespace) int {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	var ls []net.Listener
	t.Cleanup(func() {
		for _, l := range ls {
			l.Close()
		}
		wg.Wait()
	})
	listen := func(addr string, serve func(net.Conn)) net.Listener {
		l, err := ns.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				serve(c)
			}
		}()
		return l
	}
	drain := func(c net.Conn) {
		wg.Add(1)
		go func() { defer wg.Done(); io.Copy(io.Discard, c); c.Close() }()
	}
	listen("127.0.0.1:7001", drain)
	var open []net.Conn // closed before the listeners' cleanup waits for drain
	t.Cleanup(func() {
		for _, c := range open {
			c.Close()
		}
	})
	listen("127.0.0.2:7002", drain) // the open ones end when the client closes them
	leaked := make(chan net.Conn, 5)
	listen("127.0.0.1:7003", func(c net.Conn) { leaked <- c })

	dial := func(addr string) net.Conn {
		c, err := ns.Dial(ctx, &net.Dialer{KeepAlive: -1}, "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for range 150 {
		dial("127.0.0.1:7001").Close()
	}
	for range 30 {
		dial("127.0.0.2:7002").Close()
	}
	for range 50 {
		open = append(open, dial("127.0.0.2:7002"))
	}
	// The CLOSE_WAIT sockets go to a child process; this one closes its
	// copies, so the child is their only owner.
	var files []*os.File
	for range 5 {
		c := dial("127.0.0.1:7003")
		s := <-leaked
		f, err := s.(*net.TCPConn).File()
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		files = append(files, f)
		c.Close()
	}
	sleep := exec.Command("sleep", "300")
	sleep.ExtraFiles = files
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleep.Process.Kill(); sleep.Wait() })
	for _, f := range files {
		f.Close()
	}
	return sleep.Process.Pid
}

// ssCount counts sockets in a state with ss, the oracle.
func ssCount(t *testing.T, ns *harness.Namespace, state string) int {
	t.Helper()
	out, err := ns.Exec(context.Background(), "ss", "-Htan", "state", state)
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	return strings.Count(string(out), "\n")
}

// tmux drives one private tmux server (its own socket, no config).
type tmux struct {
	t      *testing.T
	bin    string
	socket string
}

func (x *tmux) run(args ...string) string {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, x.bin, append([]string{"-L", x.socket, "-f", "/dev/null"}, args...)...).CombinedOutput()
	if err != nil {
		x.t.Fatalf("tmux %v: %v: %s", args, err, out)
	}
	return string(out)
}

func (x *tmux) screen() string { return x.run("capture-pane", "-p", "-t", "top") }

// waitScreen polls the pane until ok accepts it, at most 15 s.
func (x *tmux) waitScreen(what string, ok func(string) bool) (string, time.Duration) {
	x.t.Helper()
	start := time.Now()
	var s string
	for time.Since(start) < 15*time.Second {
		if s = x.screen(); ok(s) {
			return s, time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	x.t.Fatalf("after 15 s the screen still lacks %s:\n%s", what, s)
	return "", 0
}

func has(subs ...string) func(string) bool {
	return func(s string) bool {
		for _, sub := range subs {
			if !strings.Contains(s, sub) {
				return false
			}
		}
		return true
	}
}

// leftLine returns the first line whose left panel (the first 60 columns)
// contains sub, or -1.
func leftLine(screen, sub string) int {
	for i, l := range strings.Split(screen, "\n") {
		if r := []rune(l); len(r) > 60 {
			l = string(r[:60])
		}
		if strings.Contains(l, sub) {
			return i
		}
	}
	return -1
}

// TestTopUnderTmux runs the real binary in a 120x40 tmux pane against a
// namespace with TIME_WAIT churn and a CLOSE_WAIT leak, reads the screen,
// presses keys and checks that q restores the terminal.
func TestTopUnderTmux(t *testing.T) {
	tmuxBin := needTool(t, "tmux", "tmux")
	ns := harness.NewT(t)
	bin := filepath.Join(t.TempDir(), "tcplens")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	leaker := topWorld(t, ns)

	// The oracle: what ss sees once the churn has settled (a rare
	// connection may be reset instead of entering TIME_WAIT).
	tw := -1
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		n := ssCount(t, ns, "time-wait")
		if n == tw {
			break
		}
		tw = n
	}
	if tw < 170 || ssCount(t, ns, "close-wait") != 5 {
		t.Fatalf("setup: %d TIME_WAIT (want ~180), %d CLOSE_WAIT (want 5)", tw, ssCount(t, ns, "close-wait"))
	}

	x := &tmux{t: t, bin: tmuxBin, socket: "tl-top-" + strconv.Itoa(os.Getpid())}
	t.Cleanup(func() { exec.Command(tmuxBin, "-L", x.socket, "kill-server").Run() })
	x.run("new-session", "-d", "-x", "120", "-y", "40", "-s", "top",
		fmt.Sprintf("%s top --netns %s --interval 500ms; echo TOP-EXIT=$?; sleep 60", bin, ns.Name))

	leak := fmt.Sprintf("sleep/%d", leaker)
	screen, _ := x.waitScreen("the counts, the leaking process and its finding", has(
		"netns "+ns.Name,
		fmt.Sprintf("TIME_WAIT%12d", tw), fmt.Sprintf("CLOSE_WAIT%11d", 5),
		"127.0.0.1:7001", "127.0.0.2:7002",
		leak, "close-wait-leak",
	))
	t.Logf("screen:\n%s", screen)
	if f := strings.Fields(strings.Split(screen, "\n")[leftLine(screen, leak)]); len(f) < 2 || f[0] != leak || f[1] != "5" {
		t.Errorf("CLOSE_WAIT row of the leaking process: %q, want %s with 5", f, leak)
	}
	// Connections that open and close between two samples reach the churn
	// panel through destroy events, measured rather than estimated.
	churned, err := ns.Listen("tcp", "127.0.0.3:7009")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := churned.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	defer churned.Close()
	for range 20 {
		c, err := ns.Dial(context.Background(), nil, "tcp", "127.0.0.3:7009")
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	churnScreen, _ := x.waitScreen("measured churn towards 127.0.0.3:7009", has("CLOSED/S", "127.0.0.3:7009"))
	if strings.Contains(churnScreen, "not available") {
		t.Errorf("churn panel still shows the estimate:\n%s", churnScreen)
	}
	if !(leftLine(screen, "127.0.0.1:7001") < leftLine(screen, "127.0.0.2:7002")) {
		t.Errorf("ports not sorted by ports in use (7001 has ~150, 7002 ~80):\n%s", screen)
	}

	// s cycles the sort of the focused panel (ports): in use, time_wait, estab.
	x.run("send-keys", "-t", "top", "s")
	_, lat := x.waitScreen("sort: time_wait", has("sort: time_wait"))
	t.Logf("keypress to screen: %s", lat)
	x.run("send-keys", "-t", "top", "s")
	screen, _ = x.waitScreen("sort: estab", has("sort: estab"))
	if !(leftLine(screen, "127.0.0.2:7002") < leftLine(screen, "127.0.0.1:7001")) {
		t.Errorf("sort by estab did not put 127.0.0.2:7002 (50 open) first:\n%s", screen)
	}

	// / opens the filter; the typed text filters every panel.
	x.run("send-keys", "-t", "top", "/")
	x.waitScreen("the filter input", has("enter applies"))
	x.run("send-keys", "-t", "top", "-l", "sleep")
	x.run("send-keys", "-t", "top", "Enter")
	screen, _ = x.waitScreen("the applied filter", has("filter: sleep", "none match the filter"))
	if !strings.Contains(screen, leak) || strings.Contains(screen, "127.0.0.1:7001") {
		t.Errorf("filter 'sleep' should keep the leaking process and hide the destinations:\n%s", screen)
	}

	// q quits: the shell after it prints the exit code, the alternate
	// screen is off and the cursor is visible again.
	x.run("send-keys", "-t", "top", "q")
	screen, _ = x.waitScreen("the exit code", has("TOP-EXIT="))
	if !strings.Contains(screen, "TOP-EXIT=0") || strings.Contains(screen, "PORTS IN USE") {
		t.Errorf("after q:\n%s", screen)
	}
	if got := strings.TrimSpace(x.run("display-message", "-p", "-t", "top", "#{alternate_on} #{cursor_flag}")); got != "0 1" {
		t.Errorf("terminal not restored: alternate_on, cursor_flag = %q, want \"0 1\"", got)
	}
	var ps bytes.Buffer
	cmd := exec.Command("pgrep", "-f", "^"+bin+" top") // not the shell that ran it
	cmd.Stdout = &ps
	if cmd.Run() == nil {
		t.Errorf("tcplens top still running: pids %s", ps.String())
	}
}

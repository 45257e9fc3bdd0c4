package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcplens/tcplens/lab/harness"
)

func tcplens(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e)
	return o.String(), e.String(), code
}

// world builds, inside a fresh namespace with a 100-port ephemeral range:
// a listener on 127.0.0.1:5432 with 3 ESTABLISHED clients, 10 client-side
// TIME_WAIT sockets and 2 CLOSE_WAIT sockets (the server never closes).
func world(t *testing.T) *harness.Namespace {
	t.Helper()
	ns := harness.NewT(t)
	if err := ns.Sysctl("net.ipv4.ip_local_port_range", "40000 40099"); err != nil {
		t.Fatal(err)
	}
	l, err := ns.Listen("tcp", "127.0.0.1:5432")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var keep []net.Conn
	t.Cleanup(func() {
		for _, c := range keep {
			c.Close()
		}
	})
	dial := func() (net.Conn, net.Conn) {
		c, err := ns.Dial(context.Background(), &net.Dialer{KeepAlive: -1}, "tcp", "127.0.0.1:5432")
		if err != nil {
			t.Fatal(err)
		}
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		keep = append(keep, c, s)
		return c, s
	}
	for range 3 {
		dial()
	}
	for range 10 {
		c, s := dial()
		c.Close()
		io.ReadAll(s)
		s.Close()
	}
	for range 2 {
		c, _ := dial()
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _ := ns.Exec(context.Background(), "ss", "-Htan", "state", "time-wait")
		if strings.Count(string(out), "\n") == 10 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ns
}

func TestSummaryJSON(t *testing.T) {
	ns := world(t)
	out, errOut, code := tcplens(t, "summary", "--json", "--netns", ns.Name)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var s struct {
		Total          int            `json:"total"`
		States         map[string]int `json:"states"`
		EphemeralRange int            `json:"ephemeral_range"`
		PortBudget     []struct {
			Src, Dst string
			DstPort  int            `json:"dst_port"`
			InUse    int            `json:"in_use"`
			Range    int            `json:"range"`
			Used     float64        `json:"used"`
			States   map[string]int `json:"states"`
		} `json:"port_budget"`
		Listeners []struct {
			Local       string         `json:"local"`
			AcceptQueue int            `json:"accept_queue"`
			Backlog     int            `json:"backlog"`
			Connections int            `json:"connections"`
			States      map[string]int `json:"states"`
			Processes   []struct {
				PID int `json:"pid"`
			} `json:"processes"`
		} `json:"listeners"`
		Destinations []struct {
			Remote string `json:"remote"`
			Total  int    `json:"total"`
		} `json:"destinations"`
		Processes []struct {
			PID     int `json:"pid"`
			Sockets int `json:"sockets"`
		} `json:"processes"`
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := map[string]int{"LISTEN": 1, "ESTABLISHED": 6, "TIME_WAIT": 10, "CLOSE_WAIT": 2, "FIN_WAIT2": 2}
	for k, v := range want {
		if s.States[k] != v {
			t.Errorf("states[%s] = %d, want %d (%v)", k, s.States[k], v, s.States)
		}
	}
	if s.Total != 21 || s.EphemeralRange != 100 {
		t.Errorf("total %d range %d, want 21 and 100", s.Total, s.EphemeralRange)
	}
	if len(s.PortBudget) != 1 {
		t.Fatalf("port budget rows: %+v", s.PortBudget)
	}
	b := s.PortBudget[0]
	if b.Src != "127.0.0.1" || b.Dst != "127.0.0.1" || b.DstPort != 5432 || b.InUse != 15 || b.Range != 100 || b.Used != 0.15 ||
		b.States["TIME_WAIT"] != 10 || b.States["ESTABLISHED"] != 3 || b.States["FIN_WAIT2"] != 2 {
		t.Errorf("port budget %+v, want 127.0.0.1 -> 127.0.0.1:5432 in use 15 of 100", b)
	}
	if len(s.Listeners) != 1 {
		t.Fatalf("listeners %+v", s.Listeners)
	}
	l := s.Listeners[0]
	if l.Local != "127.0.0.1:5432" || l.AcceptQueue != 0 || l.Connections != 5 || l.States["CLOSE_WAIT"] != 2 || l.States["ESTABLISHED"] != 3 {
		t.Errorf("listener %+v", l)
	}
	if len(l.Processes) != 1 || l.Processes[0].PID != os.Getpid() {
		t.Errorf("listener owner %+v, want pid %d", l.Processes, os.Getpid())
	}
	if len(s.Destinations) != 1 || s.Destinations[0].Remote != "127.0.0.1:5432" || s.Destinations[0].Total != 15 {
		t.Errorf("destinations %+v", s.Destinations)
	}
	// 3+3 ESTABLISHED, 2 CLOSE_WAIT, 1 listener; the closed clients'
	// FIN_WAIT2 sockets are orphans without a file.
	if len(s.Processes) != 1 || s.Processes[0].PID != os.Getpid() || s.Processes[0].Sockets != 9 {
		t.Errorf("processes %+v, want pid %d with 9 sockets", s.Processes, os.Getpid())
	}

	table, _, code := tcplens(t, "summary", "--netns", ns.Name)
	if code != 0 || !strings.Contains(table, "TIME_WAIT") || !strings.Contains(table, "15.0%") {
		t.Errorf("summary table (exit %d):\n%s", code, table)
	}
}

func TestSocketsJSONMatchesSS(t *testing.T) {
	ns := world(t)
	out, errOut, code := tcplens(t, "sockets", "--json", "--netns", ns.Name)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	got := map[string]int{}
	var gotRows, wantRows []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var s struct {
			State      string `json:"state"`
			LocalAddr  string `json:"local_addr"`
			LocalPort  int    `json:"local_port"`
			RemoteAddr string `json:"remote_addr"`
			RemotePort int    `json:"remote_port"`
		}
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		got[s.State]++
		gotRows = append(gotRows, fmt.Sprintf("%s %s %s", s.State,
			netip.AddrPortFrom(netip.MustParseAddr(s.LocalAddr).Unmap(), uint16(s.LocalPort)),
			netip.AddrPortFrom(netip.MustParseAddr(s.RemoteAddr).Unmap(), uint16(s.RemotePort))))
	}
	ssOut, err := ns.Exec(context.Background(), "ss", "-Htan")
	if err != nil {
		t.Fatal(err)
	}
	ssNames := map[string]string{"ESTAB": "ESTABLISHED", "TIME-WAIT": "TIME_WAIT", "CLOSE-WAIT": "CLOSE_WAIT", "FIN-WAIT-2": "FIN_WAIT2", "LISTEN": "LISTEN"}
	want := map[string]int{}
	addr := func(a string) netip.AddrPort { // ss prints an unset port as *
		ap := netip.MustParseAddrPort(strings.Replace(a, ":*", ":0", 1))
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	for _, line := range strings.Split(strings.TrimSpace(string(ssOut)), "\n") {
		f := strings.Fields(line)
		want[ssNames[f[0]]]++
		wantRows = append(wantRows, fmt.Sprintf("%s %s %s", ssNames[f[0]], addr(f[3]), addr(f[4])))
	}
	// The same sockets, address by address, not only the same counts.
	slices.Sort(gotRows)
	slices.Sort(wantRows)
	if !slices.Equal(gotRows, wantRows) {
		t.Errorf("sockets --json and ss list different sockets:\n tcplens %v\n ss      %v", gotRows, wantRows)
	}
	if len(got) != len(want) {
		t.Errorf("tcplens %v, ss %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: tcplens %d, ss %d", k, got[k], v)
		}
	}
}

func TestSocketsFiltersAndColumns(t *testing.T) {
	ns := world(t)
	out, _, code := tcplens(t, "sockets", "--netns", "/run/netns/"+ns.Name, "--state", "time-wait", "--dport", "5432", "-o")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 11 {
		t.Fatalf("exit %d, %d lines, want header + 10:\n%s", code, len(lines), out)
	}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if f[0] != "TIME_WAIT" || f[4] != "127.0.0.1:5432" || f[5] != "timewait" {
			t.Errorf("row %q", l)
		}
		secs, err := strconv.Atoi(strings.TrimSuffix(f[6], "s"))
		if err != nil || secs < 50 || secs > 60 {
			t.Errorf("timewait remaining %q, want 50s..60s", f[6])
		}
	}
	out, _, code = tcplens(t, "sockets", "--netns", ns.Name, "--state", "close-wait", "-p", "-i")
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 {
		t.Fatalf("close-wait: exit %d\n%s", code, out)
	}
	if !strings.HasSuffix(lines[1], "/"+strconv.Itoa(os.Getpid())) || !strings.Contains(lines[0], "RTT") {
		t.Errorf("close-wait rows lack tcp_info or owner:\n%s", out)
	}
	out, _, code = tcplens(t, "sockets", "--netns", ns.Name, "--process", strconv.Itoa(os.Getpid()), "--state", "listen")
	if n := strings.Count(out, "\n"); n != 2 || code != 0 {
		t.Errorf("--process: exit %d, %d lines\n%s", code, n, out)
	}
	// PID 1 holds no socket of this namespace: only the header is left.
	out, _, code = tcplens(t, "sockets", "--netns", ns.Name, "--process", "1", "--state", "listen")
	if n := strings.Count(out, "\n"); n != 1 || code != 0 {
		t.Errorf("--process 1: exit %d, %d lines, want the header only\n%s", code, n, out)
	}
}

func TestBadInput(t *testing.T) {
	cases := [][]string{
		{"sockets", "--state", "bogus"},
		{"sockets", "--dst", "10.0.0.999"},
		{"sockets", "--dport", "99999"},
		{"sockets", "--netns", "tl-does-not-exist"},
		{"sockets", "--nope"},
		{"summary", "--top", "-1"},
		{"summary", "--top", "x"},
		{"frobnicate"},
	}
	for _, args := range cases {
		out, errOut, code := tcplens(t, args...)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		if out != "" {
			t.Errorf("%v: wrote to stdout: %q", args, out)
		}
		if strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "tcplens: ") {
			t.Errorf("%v: stderr %q is not one line", args, errOut)
		}
	}
}

func TestVersion(t *testing.T) {
	out, _, code := tcplens(t, "version", "--json")
	var v struct{ Version, Go string }
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.Version == "" || !strings.HasPrefix(v.Go, "go") {
		t.Fatalf("version: exit %d %q", code, out)
	}
}

package sockdiag_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/lab/harness"
)

func dump(t *testing.T, ns *harness.Namespace, r sockdiag.Request) ([]sockdiag.Socket, sockdiag.Stats) {
	t.Helper()
	var out []sockdiag.Socket
	var st sockdiag.Stats
	err := ns.Run(func() error {
		d, err := sockdiag.Open()
		if err != nil {
			return err
		}
		defer d.Close()
		st, err = d.Dump(context.Background(), r, func(s *sockdiag.Socket) error {
			out = append(out, *s)
			return nil
		})
		return err
	})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	return out, st
}

// ssRows is the oracle: "STATE local remote" lines from `ss -Htan`.
func ssRows(t *testing.T, ns *harness.Namespace) []string {
	t.Helper()
	out, err := ns.Exec(context.Background(), "ss", "-Htan")
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	names := map[string]string{
		"ESTAB": "ESTABLISHED", "TIME-WAIT": "TIME_WAIT", "CLOSE-WAIT": "CLOSE_WAIT",
		"LISTEN": "LISTEN", "FIN-WAIT-1": "FIN_WAIT1", "FIN-WAIT-2": "FIN_WAIT2",
		"SYN-SENT": "SYN_SENT", "SYN-RECV": "SYN_RECV", "LAST-ACK": "LAST_ACK",
		"CLOSING": "CLOSING", "UNCONN": "CLOSE",
	}
	var rows []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		rows = append(rows, fmt.Sprintf("%s %s %s", names[f[0]], ssAddr(t, f[3]), ssAddr(t, f[4])))
	}
	sort.Strings(rows)
	return rows
}

func ssAddr(t *testing.T, s string) string {
	s = strings.Replace(s, ":*", ":0", 1) // ss prints an unset port as *
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatalf("ss address %q: %v", s, err)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
}

func rows(socks []sockdiag.Socket) []string {
	var r []string
	for _, s := range socks {
		r = append(r, fmt.Sprintf("%s %s %s", s.State, s.Local, s.Remote))
	}
	sort.Strings(r)
	return r
}

func countStates(socks []sockdiag.Socket) map[sockdiag.State]int {
	m := map[sockdiag.State]int{}
	for _, s := range socks {
		m[s.State]++
	}
	return m
}

func mustListen(t *testing.T, ns *harness.Namespace, addr string) net.Listener {
	t.Helper()
	l, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func mustDial(t *testing.T, ns *harness.Namespace, addr string, keepalive time.Duration) net.Conn {
	t.Helper()
	c, err := ns.Dial(context.Background(), &net.Dialer{KeepAlive: keepalive}, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mustAccept(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDumpStates builds ESTABLISHED, TIME_WAIT, CLOSE_WAIT/FIN_WAIT2 and
// LISTEN sockets and checks the dump against exact expectations and ss.
func TestDumpStates(t *testing.T) {
	ns := harness.NewT(t)
	l := mustListen(t, ns, "127.0.0.1:8080")
	const nEst, nTW, nCW = 3, 4, 2

	for range nEst {
		mustDial(t, ns, "127.0.0.1:8080", -1)
		mustAccept(t, l)
	}
	// TIME_WAIT on the client: client closes first, server answers with FIN.
	var twPorts []uint16
	for range nTW {
		c := mustDial(t, ns, "127.0.0.1:8080", -1)
		twPorts = append(twPorts, uint16(c.LocalAddr().(*net.TCPAddr).Port))
		srv := mustAccept(t, l)
		c.Close()
		if _, err := io.ReadAll(srv); err != nil {
			t.Fatal(err)
		}
		srv.Close()
	}
	// CLOSE_WAIT on the server: the client closes, the server never does.
	for range nCW {
		c := mustDial(t, ns, "127.0.0.1:8080", -1)
		mustAccept(t, l)
		c.Close()
	}

	var socks []sockdiag.Socket
	waitFor(t, "states to settle", func() bool {
		socks, _ = dump(t, ns, sockdiag.Request{Info: true})
		m := countStates(socks)
		return m[sockdiag.TimeWait] == nTW && m[sockdiag.CloseWait] == nCW && m[sockdiag.FinWait2] == nCW
	})
	got := countStates(socks)
	want := map[sockdiag.State]int{
		sockdiag.Listen: 1, sockdiag.Established: 2 * nEst, sockdiag.TimeWait: nTW,
		sockdiag.CloseWait: nCW, sockdiag.FinWait2: nCW,
	}
	for st, n := range want {
		if got[st] != n {
			t.Errorf("%s: got %d, want %d (all: %v)", st, got[st], n, got)
		}
	}
	if len(socks) != 1+2*nEst+nTW+2*nCW {
		t.Errorf("got %d sockets, want %d", len(socks), 1+2*nEst+nTW+2*nCW)
	}

	listen := netip.MustParseAddrPort("127.0.0.1:8080")
	for _, s := range socks {
		switch s.State {
		case sockdiag.TimeWait:
			if s.Remote != listen || s.Timer != sockdiag.TimerTimeWait {
				t.Errorf("TIME_WAIT socket %s -> %s timer %s, want -> %s timer timewait", s.Local, s.Remote, s.Timer, listen)
			}
			if s.TimerExpires <= 50*time.Second || s.TimerExpires > 60*time.Second {
				t.Errorf("TIME_WAIT expires in %s, want (50s, 60s]", s.TimerExpires)
			}
			if s.Inode != 0 || s.HasInfo {
				t.Errorf("TIME_WAIT socket has inode %d / info %v; the kernel sends neither", s.Inode, s.HasInfo)
			}
			found := false
			for _, p := range twPorts {
				found = found || p == s.Local.Port()
			}
			if !found {
				t.Errorf("TIME_WAIT local port %d is not one of the closed clients %v", s.Local.Port(), twPorts)
			}
		case sockdiag.CloseWait:
			if s.Local != listen || s.Inode == 0 || !s.HasInfo || s.Shutdown&1 == 0 {
				t.Errorf("CLOSE_WAIT %s inode %d info %v shutdown %d: want local %s, an inode, info and RCV_SHUTDOWN", s.Local, s.Inode, s.HasInfo, s.Shutdown, listen)
			}
		case sockdiag.Established:
			if !s.HasInfo || s.Info.RTT == 0 || s.Cong == "" || s.Cookie == 0 || s.Inode == 0 {
				t.Errorf("ESTABLISHED %s->%s: info=%v rtt=%d cong=%q cookie=%d inode=%d", s.Local, s.Remote, s.HasInfo, s.Info.RTT, s.Cong, s.Cookie, s.Inode)
			}
			if s.Family != unix.AF_INET {
				t.Errorf("family %d, want AF_INET", s.Family)
			}
		}
	}

	// The kernel-side state filter returns only what was asked for.
	tw, _ := dump(t, ns, sockdiag.Request{States: sockdiag.MaskOf(sockdiag.TimeWait)})
	if len(tw) != nTW {
		t.Errorf("state filter TIME_WAIT: got %d sockets, want %d", len(tw), nTW)
	}

	if g, w := rows(socks), ssRows(t, ns); strings.Join(g, "\n") != strings.Join(w, "\n") {
		t.Errorf("dump differs from ss:\n tcplens: %v\n ss:      %v", g, w)
	}
}

// TestListenerQueue checks that a LISTEN socket reports its accept queue in
// RecvQ and its backlog in SendQ.
func TestListenerQueue(t *testing.T) {
	ns := harness.NewT(t)
	var fd int
	err := ns.Run(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: 9000, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return err
		}
		return unix.Listen(fd, 5)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	const queued = 3
	for range queued {
		mustDial(t, ns, "127.0.0.1:9000", -1)
	}
	socks, _ := dump(t, ns, sockdiag.Request{States: sockdiag.MaskOf(sockdiag.Listen)})
	if len(socks) != 1 {
		t.Fatalf("got %d listeners, want 1", len(socks))
	}
	if l := socks[0]; l.RecvQ != queued || l.SendQ != 5 || l.Local.String() != "127.0.0.1:9000" {
		t.Errorf("listener %s accept queue %d backlog %d, want 127.0.0.1:9000 %d 5", l.Local, l.RecvQ, l.SendQ, queued)
	}
}

// TestTimers checks the keepalive timer and a running retransmit timer whose
// count grows while the peer is blackholed with nftables.
func TestTimers(t *testing.T) {
	ns := harness.NewT(t)
	l := mustListen(t, ns, "127.0.0.1:7000")
	ka := mustDial(t, ns, "127.0.0.1:7000", 30*time.Second)
	mustAccept(t, l)
	rt := mustDial(t, ns, "127.0.0.1:7000", -1)
	mustAccept(t, l)
	kaPort := uint16(ka.LocalAddr().(*net.TCPAddr).Port)
	rtPort := uint16(rt.LocalAddr().(*net.TCPAddr).Port)

	find := func(port uint16) sockdiag.Socket {
		socks, _ := dump(t, ns, sockdiag.Request{Info: true, States: sockdiag.MaskOf(sockdiag.Established)})
		for _, s := range socks {
			if s.Local.Port() == port {
				return s
			}
		}
		t.Fatalf("no socket with local port %d", port)
		return sockdiag.Socket{}
	}
	if s := find(kaPort); s.Timer != sockdiag.TimerKeepalive || s.TimerExpires <= 25*time.Second || s.TimerExpires > 30*time.Second {
		t.Errorf("keepalive socket: timer %s in %s, want keepalive in (25s, 30s]", s.Timer, s.TimerExpires)
	}
	if s := find(rtPort); s.Timer != sockdiag.TimerOff {
		t.Errorf("idle socket without keepalive has timer %s", s.Timer)
	}

	// Drop on input: a drop on output looks to TCP like a local send failure
	// (zero-window probe timer), not a lost segment.
	if err := ns.Nft(context.Background(), fmt.Sprintf("table inet tl {\n chain in {\n type filter hook input priority 0;\n tcp sport %d drop\n }\n}\n", rtPort)); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	var first sockdiag.Socket
	waitFor(t, "first retransmission", func() bool {
		first = find(rtPort)
		return first.Timer == sockdiag.TimerRetransmit && first.Retrans >= 1
	})
	var later sockdiag.Socket
	waitFor(t, "retransmit count to grow", func() bool {
		later = find(rtPort)
		return later.Retrans > first.Retrans
	})
	if later.Info.Backoff == 0 || later.Info.RTO <= first.Info.RTO || later.Info.Unacked == 0 || later.Info.TotalRetrans < uint32(later.Retrans) {
		t.Errorf("retransmitting socket: backoff %d rto %d (first %d) unacked %d total_retrans %d",
			later.Info.Backoff, later.Info.RTO, first.Info.RTO, later.Info.Unacked, later.Info.TotalRetrans)
	}
}

func TestIPv6(t *testing.T) {
	ns := harness.NewT(t)
	l := mustListen(t, ns, "[::1]:8443")
	mustDial(t, ns, "[::1]:8443", -1)
	mustAccept(t, l)
	socks, _ := dump(t, ns, sockdiag.Request{Families: []uint8{unix.AF_INET6}})
	m := countStates(socks)
	if m[sockdiag.Listen] != 1 || m[sockdiag.Established] != 2 || len(socks) != 3 {
		t.Fatalf("IPv6 dump: %v", m)
	}
	for _, s := range socks {
		if s.Family != unix.AF_INET6 || !s.Local.Addr().Is6() || s.Local.Addr() != netip.IPv6Loopback() {
			t.Errorf("IPv6 socket %s family %d", s.Local, s.Family)
		}
	}
	v4, _ := dump(t, ns, sockdiag.Request{Families: []uint8{unix.AF_INET}})
	if len(v4) != 0 {
		t.Errorf("IPv4-only dump returned %d IPv6 sockets", len(v4))
	}
	if g, w := rows(socks), ssRows(t, ns); strings.Join(g, "\n") != strings.Join(w, "\n") {
		t.Errorf("dump differs from ss:\n tcplens: %v\n ss:      %v", g, w)
	}
}

func TestCallbackErrorStopsDump(t *testing.T) {
	ns := harness.NewT(t)
	l := mustListen(t, ns, "127.0.0.1:8081")
	for range 3 {
		mustDial(t, ns, "127.0.0.1:8081", -1)
		mustAccept(t, l)
	}
	stop := fmt.Errorf("stop")
	err := ns.Run(func() error {
		d, err := sockdiag.Open()
		if err != nil {
			return err
		}
		defer d.Close()
		n := 0
		_, err = d.Dump(context.Background(), sockdiag.Request{}, func(*sockdiag.Socket) error {
			n++
			return stop
		})
		if err != stop || n != 1 {
			return fmt.Errorf("callback error: got %v after %d sockets, want stop after 1", err, n)
		}
		// The abandoned dump's leftovers must not leak into the next one.
		st, err := d.Dump(context.Background(), sockdiag.Request{}, func(*sockdiag.Socket) error { return nil })
		if err != nil {
			return err
		}
		if st.Sockets != 7 {
			return fmt.Errorf("dump after abandoned dump saw %d sockets, want 7", st.Sockets)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestOneWalkMatchesPerFamily checks that the default one-walk dump of both
// families returns exactly what one inet_diag_req_v2 request per family
// returns, including tcp_info and the kernel-side state filter.
func TestOneWalkMatchesPerFamily(t *testing.T) {
	ns := harness.NewT(t)
	l4 := mustListen(t, ns, "127.0.0.1:8082")
	l6 := mustListen(t, ns, "[::1]:8083")
	for range 3 {
		mustDial(t, ns, "127.0.0.1:8082", -1)
		mustAccept(t, l4)
		mustDial(t, ns, "[::1]:8083", -1)
		mustAccept(t, l6)
	}
	both := []uint8{unix.AF_INET, unix.AF_INET6}
	for _, r := range []sockdiag.Request{
		{Info: true},
		{States: sockdiag.MaskOf(sockdiag.Listen)},
	} {
		one, st := dump(t, ns, r)
		if !st.OneWalk {
			t.Fatalf("request %+v: dump did not use one walk on this kernel", r)
		}
		r.Families = both
		per, pst := dump(t, ns, r)
		if pst.OneWalk {
			t.Fatalf("explicit families used one walk")
		}
		if g, w := rows(one), rows(per); strings.Join(g, "\n") != strings.Join(w, "\n") {
			t.Errorf("request %+v: one walk differs from per-family:\n one: %v\n per: %v", r, g, w)
		}
		fams := map[uint8]int{}
		for _, s := range one {
			fams[s.Family]++
			if r.Info && s.State == sockdiag.Established && (!s.HasInfo || s.Cong == "") {
				t.Errorf("one-walk socket %s has no tcp_info", s.Local)
			}
		}
		if r.Info && (fams[unix.AF_INET] != 7 || fams[unix.AF_INET6] != 7) {
			t.Errorf("families in one walk: %v, want 7 of each", fams)
		}
		if !r.Info && len(one) != 2 {
			t.Errorf("LISTEN-only one walk returned %d sockets, want 2", len(one))
		}
	}
}

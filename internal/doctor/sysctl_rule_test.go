package doctor

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/lab/harness"
)

func TestSysctlReuseAndRange(t *testing.T) {
	t.Parallel()
	ns := harness.NewT(t)
	setSysctl(t, ns, "net.ipv4.tcp_tw_reuse", "1")
	setSysctl(t, ns, "net.ipv4.tcp_timestamps", "0")
	setSysctl(t, ns, "net.ipv4.ip_local_port_range", "40000 40999")
	const dst = "127.0.0.1:5432"
	server(t, ns, dst, true)

	// No churn: the contradiction alone is info, the narrow range is not
	// worth a word.
	r := diagnose(t, ns, 0, 0, "sysctl")
	f := findings(r, "sysctl")
	if len(f) != 1 || mustSubject(t, f, "net.ipv4.tcp_tw_reuse").Severity != Info || r.ExitCode() != 0 {
		t.Fatalf("no churn: got %+v, want only an info about tcp_tw_reuse", f)
	}

	churnFast(t, ns, dst, 100)
	waitTW(t, ns, 100)
	f = findings(diagnose(t, ns, 0, 0, "sysctl"), "sysctl")
	if g := mustSubject(t, f, "net.ipv4.ip_local_port_range"); g.Severity != Info || g.Subjects[0].Kind != "sysctl" || g.Evidence["usable_ports"] != 1000 {
		t.Errorf("10%% of a 1000-port range: got %v %v, want info", g.Severity, g.Evidence)
	}
	if g := mustSubject(t, f, "net.ipv4.tcp_tw_reuse"); g.Severity != Info {
		t.Errorf("10%% used: reuse finding is %v, want info", g.Severity)
	}

	// A quarter of the range blocked by TIME_WAIT: both now show effect.
	churnFast(t, ns, dst, 200)
	waitTW(t, ns, 300)
	r = diagnose(t, ns, 0, 0, "sysctl")
	f = findings(r, "sysctl")
	for _, key := range []string{"net.ipv4.tcp_tw_reuse", "net.ipv4.ip_local_port_range"} {
		if g := mustSubject(t, f, key); g.Severity != Warning {
			t.Errorf("30%% used: %s is %v, want warning", key, g.Severity)
		}
	}
	if len(f) != 2 || r.ExitCode() != 1 {
		t.Errorf("got %d findings, exit %d; want 2 and 1", len(f), r.ExitCode())
	}
}

func TestSysctlKeepalive(t *testing.T) {
	t.Parallel()
	const addr = "127.0.0.1:6379"
	// onDefault: a client with SO_KEEPALIVE but no TCP_KEEPIDLE, so it
	// runs on tcp_keepalive_time.
	onDefault := harness.NewT(t)
	setSysctl(t, onDefault, "net.ipv4.tcp_keepalive_time", "7200")
	server(t, onDefault, addr, false)
	dialHeld(t, onDefault, &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: -1, Interval: -1, Count: -1}}, addr)
	// noDefault: keepalive off on the client; the accepting side uses
	// Go's own 15 s. Nothing runs on the sysctl.
	noDefault := harness.NewT(t)
	server(t, noDefault, addr, false)
	dialHeld(t, noDefault, &net.Dialer{KeepAlive: -1}, addr)

	// Idle timeout 2 s: connections idle for 1 s count as long idle.
	time.Sleep(1200 * time.Millisecond)
	const idle = 2 * time.Second
	r := diagnose(t, onDefault, 0, idle, "sysctl")
	g := mustSubject(t, findings(r, "sysctl"), "net.ipv4.tcp_keepalive_time")
	if g.Severity != Warning || g.Evidence["keepalive_default"] != 1 || g.Evidence["idle_connections"] != 2 {
		t.Errorf("default keepalive on an idle connection: got %v %v, want a warning with 1 on the default", g.Severity, g.Evidence)
	}
	g = mustSubject(t, findings(diagnose(t, noDefault, 0, idle, "sysctl"), "sysctl"), "net.ipv4.tcp_keepalive_time")
	if g.Severity != Info || g.Evidence["keepalive_default"] != 0 || g.Evidence["keepalive_off"] != 1 || g.Evidence["keepalive_own_setting"] != 1 {
		t.Errorf("nothing on the default: got %v %v, want info", g.Severity, g.Evidence)
	}
	// A longer idle timeout than tcp_keepalive_time, or none: quiet.
	for _, it := range []time.Duration{3 * time.Hour, 0} {
		if f := findings(diagnose(t, onDefault, 0, it, "sysctl"), "sysctl"); len(f) != 0 {
			t.Errorf("idle timeout %v: got %+v, want quiet", it, f)
		}
	}
}

func TestSysctlRetries2(t *testing.T) {
	t.Parallel()
	ns := harness.NewT(t)
	setSysctl(t, ns, "net.ipv4.tcp_retries2", "15")
	const addr = "127.0.0.1:9100"
	server(t, ns, addr, false)
	c := dialHeld(t, ns, nil, addr)
	if f := findings(diagnose(t, ns, 0, 0, "sysctl"), "sysctl"); len(f) != 0 {
		t.Fatalf("retries2=15 on a healthy namespace: got %+v, want quiet", f)
	}

	// Blackhole the server: drop on input, so the client's sends vanish
	// rather than fail locally.
	err := ns.Nft(context.Background(), `table inet tl_blackhole {
	chain input { type filter hook input priority 0; policy accept; tcp dport 9100 drop; }
}`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a socket backed off twice", func() bool {
		s := take(t, ns, false)
		return slices.ContainsFunc(s.Sockets, func(sk sockdiag.Socket) bool {
			return sk.Timer == sockdiag.TimerRetransmit && sk.Info.Backoff >= 2
		})
	})

	g := mustSubject(t, findings(diagnose(t, ns, 0, 0, "sysctl"), "sysctl"), "net.ipv4.tcp_retries2")
	if g.Severity != Warning || g.Evidence["stalled_sockets"] != 1 || g.Evidence["retransmit_budget_s"] != 924.6 {
		t.Errorf("got %v %v, want a warning with 1 stalled socket and a 924.6 s budget", g.Severity, g.Evidence)
	}
	if peers := g.Evidence["peers"].([]string); !slices.Equal(peers, []string{addr}) {
		t.Errorf("peers %v, want [%s]", peers, addr)
	}

	// A short budget is not this rule's business, stall or not.
	setSysctl(t, ns, "net.ipv4.tcp_retries2", "8")
	if f := findings(diagnose(t, ns, 0, 0, "sysctl"), "sysctl"); len(f) != 0 {
		t.Errorf("retries2=8: got %+v, want quiet", f)
	}
}

// TestSysctlRetries2AgreesWithRetransmitStall: the sysctl rule counts the
// connections retransmit-stall reports as stalled, minus those that do not
// run on tcp_retries2 (handshakes, orphans).
func TestSysctlRetries2AgreesWithRetransmitStall(t *testing.T) {
	// Unacknowledged data and no ACK for 5 s, 25 RTOs, though the timer
	// shows no backoff (a loss probe, say).
	noAck := fakeConn(sockdiag.Established, "10.0.0.8:443", 1)
	noAck.Info.RTO, noAck.Info.Unacked, noAck.Info.LastAckRecv, noAck.Info.LastDataSent = 204_000, 1, 5000, 5000
	// Backed off three times: 0.2+0.4+0.8 s and 0.6 s into the fourth RTO.
	backedOff := fakeConn(sockdiag.Established, "10.0.0.9:5432", 2)
	backedOff.Timer, backedOff.TimerExpires, backedOff.Retrans = sockdiag.TimerRetransmit, time.Second, 3
	backedOff.Info.Backoff, backedOff.Info.RTO, backedOff.Info.Unacked = 3, 1_600_000, 1
	backedOff.Info.LastAckRecv, backedOff.Info.LastDataSent = 3000, 3000
	// Runs on tcp_orphan_retries.
	orphan := backedOff
	orphan.State, orphan.Inode, orphan.Cookie = sockdiag.FinWait1, 0, 3
	orphan.Remote = netip.MustParseAddrPort("10.0.0.10:80")
	// Runs on tcp_syn_retries.
	syn := fakeConn(sockdiag.SynSent, "10.0.0.11:22", 4)
	syn.Timer, syn.TimerExpires, syn.Retrans, syn.Info.RTO = sockdiag.TimerRetransmit, 500*time.Millisecond, 2, 1_000_000

	in := fakeInput(noAck, backedOff, orphan, syn)
	stalled := map[string]bool{}
	for _, f := range (retransmitStall{}).Check(in) {
		stalled[f.Subjects[0].Name] = true
	}
	if len(stalled) != 4 {
		t.Fatalf("retransmit-stall reports %v, want all 4 peers", stalled)
	}
	g := mustSubject(t, sysctlRule{}.Check(in), "net.ipv4.tcp_retries2")
	peers := g.Evidence["peers"].([]string)
	if g.Evidence["stalled_sockets"] != 2 || !slices.Equal(peers, []string{"10.0.0.8:443", "10.0.0.9:5432"}) {
		t.Errorf("got %v, want the 2 connections on tcp_retries2, longest stall first", g.Evidence)
	}
	for _, p := range peers {
		if !stalled[p] {
			t.Errorf("sysctl names %s, which retransmit-stall does not report", p)
		}
	}
	if g.Evidence["max_backoff"] != uint8(3) || g.Evidence["longest_stall_s"] != 5.0 {
		t.Errorf("evidence %v, want backoff 3 and a 5 s stall", g.Evidence)
	}

	// With tcp_retries2=8 the same stalls are not this rule's business.
	in = fakeInput(noAck, backedOff)
	in.Now.Sysctls.Retries2 = 8
	if f := (sysctlRule{}).Check(in); len(f) != 0 {
		t.Errorf("retries2=8: %+v, want quiet", f)
	}
}

// TestUsesDefaultKeepalive: the period estimate is keepaliveOf's, so both
// rules agree on what runs on tcp_keepalive_time.
func TestUsesDefaultKeepalive(t *testing.T) {
	const kat = 7200 * time.Second
	sk := fakeConn(sockdiag.Established, "10.0.0.9:5432", 1)
	sk.Timer, sk.TimerExpires = sockdiag.TimerKeepalive, 7000*time.Second
	sk.Info.LastDataRecv, sk.Info.LastAckRecv = 200_000, 200_000
	if !usesDefaultKeepalive(&sk, kat) {
		t.Error("200 s silent + 7000 s left: want the 7200 s default")
	}
	sk.TimerExpires = 100 * time.Second // TCP_KEEPIDLE 300 s
	if usesDefaultKeepalive(&sk, kat) {
		t.Error("300 s period: want an own setting")
	}
	sk.TimerExpires, sk.Retrans = 7000*time.Second, 1 // probing: the interval runs
	if usesDefaultKeepalive(&sk, kat) {
		t.Error("probing: want no verdict")
	}
	sk.Timer, sk.Retrans = sockdiag.TimerOff, 0
	if usesDefaultKeepalive(&sk, kat) {
		t.Error("no timer: want keepalive off, not the default")
	}
}

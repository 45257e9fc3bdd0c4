package doctor

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/tcplens/tcplens/internal/kernel"
	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/lab/harness"
)

// Packets to ports 7000 and 7001 are dropped on the input hook, as a dead
// peer or a firewall would: the established connection's data and the new
// connection's SYNs go unanswered. (Dropping on output instead looks like a
// local send failure to TCP, not a lost segment.)
func TestRetransmitStall(t *testing.T) {
	t.Parallel()
	ns := harness.NewT(t)
	if err := ns.Sysctl("net.ipv4.tcp_retries2", "5"); err != nil {
		t.Fatal(err)
	}
	server(t, ns, "127.0.0.1:7000", false)
	c := dialB(t, ns, nil, "127.0.0.1:7000")
	ruleset := "table inet tl {\n chain in {\n type filter hook input priority 0;\n tcp dport { 7000, 7001 } drop\n }\n}\n"
	if err := ns.Nft(context.Background(), ruleset); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("request that is never acknowledged")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	dialed := make(chan error, 1)
	go func() {
		_, err := ns.Dial(ctx, &net.Dialer{}, "tcp", "127.0.0.1:7001")
		dialed <- err
	}()
	t.Cleanup(func() { cancel(); <-dialed })

	// Backoff 2 needs two RTO expiries (0.2 + 0.4 s); the SYN is resent 1 s
	// after the first one.
	waitFor(t, 5*time.Second, "backoff >= 2 and a SYN retransmission", func() bool {
		var data, syn bool
		for _, sk := range take(t, ns, false).Sockets {
			data = data || (sk.State == sockdiag.Established && sk.Remote.Port() == 7000 && sk.Info.Backoff >= 2)
			syn = syn || (sk.State == sockdiag.SynSent && sk.Retrans >= 1)
		}
		return data && syn
	})

	r := diagnose(t, ns, 0, time.Minute, "retransmit-stall")
	f := findings(r, "retransmit-stall")
	if len(f) != 2 {
		t.Fatalf("%d findings, want 2: %+v", len(f), f)
	}
	byName := map[string]Finding{}
	for _, x := range f {
		if x.Severity != Warning || len(x.Subjects) != 1 || x.Subjects[0].Kind != "destination" {
			t.Errorf("%+v, want a warning about one destination", x)
		}
		byName[x.Subjects[0].Name] = x
	}
	data, ok := byName["127.0.0.1:7000"]
	if !ok {
		t.Fatalf("no finding for 127.0.0.1:7000: %v", byName)
	}
	ev := data.Evidence
	if ev["stalled"] != 1 || ev["tcp_retries2"] != 5 || ev["give_up_after_s"] != 12.6 || ev["max_backoff"].(int) < 2 {
		t.Errorf("data evidence %v", ev)
	}
	if stall, left := ev["oldest_stall_s"].(float64), ev["gives_up_in_s"].(float64); stall < 0.5 || stall > 6 || left <= 0 || stall+left < 12.6 || stall+left > 30 {
		t.Errorf("stalled %v s, gives up in %v s: want a stall of about 1 s and the rest of the 12.6 s budget", stall, left)
	}
	syn, ok := byName["127.0.0.1:7001"]
	if !ok {
		t.Fatalf("no finding for 127.0.0.1:7001: %v", byName)
	}
	if syn.Evidence["give_up_after_s"] != 127.0 || syn.Evidence["syn_retransmits"].(int) < 1 || syn.Subjects[0].Processes[0].PID == 0 {
		t.Errorf("syn evidence %v subject %+v", syn.Evidence, syn.Subjects[0])
	}
	if r.ExitCode() != 1 {
		t.Errorf("exit code %d, want 1", r.ExitCode())
	}
}

func TestRetransmitStallThresholds(t *testing.T) {
	// RTO 200 ms backed off 8 times: 0.2+0.4+...+25.6 = 51 s of retrying.
	sk := fakeConn(sockdiag.Established, "10.0.0.9:5432", 1)
	sk.Timer, sk.TimerExpires, sk.Retrans = sockdiag.TimerRetransmit, 51200*time.Millisecond, 8
	sk.Info.Backoff, sk.Info.RTO, sk.Info.Unacked = 8, 51_200_000, 1
	sk.Info.LastAckRecv, sk.Info.LastDataSent = 60_000, 51_000
	f := retransmitStall{}.Check(fakeInput(sk))
	if len(f) != 1 || f[0].Severity != Critical || f[0].Evidence["oldest_stall_s"] != 51.0 {
		t.Fatalf("%+v, want critical after 51 s", f)
	}
	// 924.6 s budget, dies at the first expiry after it (1044.6 s).
	if left := f[0].Evidence["gives_up_in_s"]; left != 993.6 {
		t.Errorf("gives_up_in_s %v, want 1044.6 - 51", left)
	}
	if kernel.ModelTimeout(15, kernel.RTOMin) != kernel.RetransmitBudget(15) || kernel.ModelTimeout(6, kernel.TimeoutInit) != 127*time.Second {
		t.Errorf("ModelTimeout: %v, %v", kernel.ModelTimeout(15, kernel.RTOMin), kernel.ModelTimeout(6, kernel.TimeoutInit))
	}
	// Measured: SYN timers fire at 1,2,3,4,5,7,11,19,35 s.
	for k, want := range map[int]time.Duration{1: time.Second, 5: 5 * time.Second, 6: 7 * time.Second, 9: 35 * time.Second} {
		if got := synExpiry(k); got != want {
			t.Errorf("synExpiry(%d) = %v, want %v", k, got, want)
		}
	}
	// Huge RTOs and retry counts neither overflow nor loop.
	in := fakeInput(sk)
	in.Now.Sysctls.Retries2 = 255
	in.Now.Sockets[0].Info.RTO, in.Now.Sockets[0].Info.Backoff = 120_000_000, 0
	in.Now.Sockets[0].Info.LastAckRecv, in.Now.Sockets[0].Info.LastDataSent = 3_600_000, 3_600_000
	if f := (retransmitStall{}).Check(in); len(f) != 1 || f[0].Evidence["gives_up_in_s"].(float64) <= 0 {
		t.Fatalf("retries2=255: %+v", f)
	}
	// An idle connection that just wrote is not stalled, even though its
	// last ACK is old.
	idle := fakeConn(sockdiag.Established, "10.0.0.9:5432", 2)
	idle.Info.RTO, idle.Info.Unacked, idle.Info.LastAckRecv, idle.Info.LastDataSent = 204_000, 1, 600_000, 0
	if f := (retransmitStall{}).Check(fakeInput(idle)); len(f) != 0 {
		t.Fatalf("idle then write: %+v, want none", f)
	}
}

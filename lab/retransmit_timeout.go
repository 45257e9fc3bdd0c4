package lab

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/tcplens/tcplens/internal/kernel"
	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/pool"
)

var retransmitTimeout = Scenario{
	Name:    "retransmit-timeout",
	Summary: "the peer is blackholed mid-request: RTO doubling until tcp_retries2 gives up, versus TCP_USER_TIMEOUT",
	run:     runRetransmitTimeout,
}

const (
	rtRetries2    = 5
	rtUserTimeout = 2 * time.Second
	rtAddr        = "127.0.0.1:7000"
)

type rtOutcome struct {
	err  error
	took time.Duration
}

func runRetransmitTimeout(ctx context.Context, r *Run) error {
	ns, err := r.Namespace(ctx)
	if err != nil {
		return err
	}
	if err := ns.Sysctl("net.ipv4.tcp_retries2", fmt.Sprint(rtRetries2)); err != nil {
		return err
	}
	budget := kernel.RetransmitBudget(rtRetries2)
	r.Step("namespace %s: tcp_retries2 = %d, so the kernel retransmits for %.1f s before giving up (924.6 s at the default 15)", ns.Name, rtRetries2, budget.Seconds())
	srv, err := startServer(ns, rtAddr, echo)
	if err != nil {
		return err
	}
	defer srv.Close()

	plain, err := ns.Dial(ctx, &net.Dialer{KeepAlive: -1}, "tcp", rtAddr)
	if err != nil {
		return err
	}
	defer plain.Close()
	p, err := pool.New(pool.Config{
		UserTimeout: rtUserTimeout,
		Dial: func(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
			return ns.Dial(ctx, d, network, addr)
		},
	})
	if err != nil {
		return err
	}
	defer p.Close()
	pc, err := p.Get(ctx, rtAddr)
	if err != nil {
		return err
	}
	defer pc.Discard()
	for _, c := range []net.Conn{plain, pc} {
		if err := echoRoundTrip(c, 2*time.Second); err != nil {
			return fmt.Errorf("request before the blackhole: %w", err)
		}
	}
	port := uint16(plain.LocalAddr().(*net.TCPAddr).Port)

	// Drop on input: the packets leave, nothing comes back, as with a
	// dead host or a firewall that drops.
	if err := ns.Nft(ctx, "table inet blackhole {\n chain in {\n type filter hook input priority 0;\n tcp dport 7000 drop\n }\n}\n"); err != nil {
		return err
	}
	r.Step("nftables now drops every packet to %s; both connections send a request", rtAddr)
	start := time.Now()
	wait := func(c net.Conn, out chan<- rtOutcome) {
		err := echoRoundTrip(c, budget+10*time.Second)
		out <- rtOutcome{err, time.Since(start)}
	}
	plainDone := make(chan rtOutcome, 1)
	poolDone := make(chan rtOutcome, 1)
	go wait(plain, plainDone)
	go wait(pc, poolDone)

	// Follow the plain connection in tcplens's own socket view.
	d, err := openDumper(ns.Name)
	if err != nil {
		return err
	}
	defer d.Close()
	var (
		lastRetrans uint8
		rtos        []time.Duration
		plainRes    *rtOutcome
		poolRes     *rtOutcome
		prev        *snapshot.Snapshot
		diagnosed   bool
	)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for plainRes == nil || poolRes == nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case o := <-plainDone:
			plainRes = &o
			continue
		case o := <-poolDone:
			poolRes = &o
			r.Step("pooled connection (TCP_USER_TIMEOUT %s) failed after %s: %v", rtUserTimeout, o.took.Round(time.Millisecond), o.err)
			continue
		case <-tick.C:
		}
		if plainRes != nil {
			continue
		}
		if s, ok := findSocket(ctx, d, port); ok && s.Retrans > lastRetrans {
			lastRetrans = s.Retrans
			rto := s.Info.RTODuration()
			rtos = append(rtos, rto)
			r.Step("retransmission #%d of the plain connection; RTO now %s, backoff %d", s.Retrans, rto.Round(time.Millisecond), s.Info.Backoff)
		}
		el := time.Since(start)
		if prev == nil && el > 1500*time.Millisecond {
			if prev, err = r.Snapshot(ctx, ns); err != nil {
				return err
			}
		}
		if !diagnosed && el > 3*time.Second {
			now, err := r.Snapshot(ctx, ns)
			if err != nil {
				return err
			}
			r.Step("doctor while the request hangs:")
			r.Diagnose(prev, now, 0, false)
			diagnosed = true
		}
	}
	r.Step("plain connection died after %s (predicted: the first timer expiry after %.1f s): %v", plainRes.took.Round(time.Millisecond), budget.Seconds(), plainRes.err)

	doubled := 0
	for i := 1; i < len(rtos); i++ {
		if rtos[i] >= 2*rtos[i-1]-5*time.Millisecond {
			doubled++
		}
	}
	r.Columns("plain socket", "pool, TCP_USER_TIMEOUT 2s")
	r.Set("plain_died_s", plainRes.took.Seconds())
	r.Set("pool_failed_s", poolRes.took.Seconds())
	r.Set("budget_s", budget.Seconds())
	r.Set("retransmissions_seen", float64(len(rtos)))
	r.Set("rto_doublings", float64(doubled))
	r.Set("plain_error", b2f(plainRes.err != nil))
	r.Set("pool_error", b2f(poolRes.err != nil))
	r.Metric("request failed after", "s", round(plainRes.took.Seconds()), round(poolRes.took.Seconds()))
	return nil
}

func round(f float64) float64 { return float64(int(f*10+0.5)) / 10 }

func findSocket(ctx context.Context, d *sockdiag.Dumper, localPort uint16) (sockdiag.Socket, bool) {
	var found sockdiag.Socket
	ok := false
	_, _ = d.Dump(ctx, sockdiag.Request{Info: true, States: sockdiag.MaskOf(sockdiag.Established)}, func(s *sockdiag.Socket) error {
		if s.Local.Port() == localPort {
			found, ok = *s, true
		}
		return nil
	})
	return found, ok
}

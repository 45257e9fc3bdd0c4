package lab

import (
	"context"

	"github.com/tcplens/tcplens/internal/sockdiag"
)

var timewaitOverflow = Scenario{
	Name:    "timewait-overflow",
	Summary: "tcp_max_tw_buckets=50 and 200 connections: the kernel silently skips TIME_WAIT for the rest",
	run:     runTimewaitOverflow,
}

func runTimewaitOverflow(ctx context.Context, r *Run) error {
	ns, err := r.Namespace(ctx)
	if err != nil {
		return err
	}
	if err := ns.Sysctl("net.ipv4.tcp_max_tw_buckets", "50"); err != nil {
		return err
	}
	r.Step("namespace %s: net.ipv4.tcp_max_tw_buckets = 50", ns.Name)
	srv, err := startServer(ns, "127.0.0.1:8080", closeOnEOF)
	if err != nil {
		return err
	}
	defer srv.Close()

	phase := func(after bool) (tw int, overflow int64, err error) {
		prev, err := r.Snapshot(ctx, ns)
		if err != nil {
			return 0, 0, err
		}
		r.Step("200 connections to 127.0.0.1:8080, each closed by the client first")
		res := dialClose(ctx, ns, "127.0.0.1:8080", 200)
		if res.OK != 200 {
			r.Step("%d connections failed: %v", 200-res.OK, res.LastErr)
		}
		// The server closes its side as soon as it reads EOF; wait until
		// the client sockets have left FIN_WAIT2.
		want := prev.Count(sockdiag.TimeWait)
		now := prev
		err = waitFor(ctx, 5e9, func() (bool, error) {
			var err error
			now, err = r.Snapshot(ctx, ns)
			return err == nil && now.Count(sockdiag.FinWait2) == 0 && now.Count(sockdiag.TimeWait) >= want, err
		})
		if err != nil {
			return 0, 0, err
		}
		overflow = now.Counters.Get("TcpExt.TCPTimeWaitOverflow") - prev.Counters.Get("TcpExt.TCPTimeWaitOverflow")
		tw = now.Count(sockdiag.TimeWait)
		r.Step("TIME_WAIT sockets: %d; TcpExt.TCPTimeWaitOverflow rose by %d (nothing in the kernel log)", tw, overflow)
		r.Diagnose(prev, now, 0, after)
		return tw, overflow, nil
	}

	twBefore, ovBefore, err := phase(false)
	if err != nil {
		return err
	}
	r.Step("fix: raise net.ipv4.tcp_max_tw_buckets to 10000 (on a real client, pooling removes the TIME_WAIT altogether)")
	if err := ns.Sysctl("net.ipv4.tcp_max_tw_buckets", "10000"); err != nil {
		return err
	}
	twAfter, ovAfter, err := phase(true)
	if err != nil {
		return err
	}
	r.Set("overflow_before", float64(ovBefore))
	r.Set("overflow_after", float64(ovAfter))
	r.Set("time_wait_before", float64(twBefore))
	r.Set("time_wait_after", float64(twAfter))
	r.Metric("TIME_WAIT sockets after 200 connections", "", float64(twBefore), float64(twAfter-twBefore))
	r.Metric("TCPTimeWaitOverflow increase", "", float64(ovBefore), float64(ovAfter))
	return nil
}

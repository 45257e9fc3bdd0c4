package lab

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/lab/harness"
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
		// The server closes its side as soon as it reads EOF. Every client
		// socket then either parks in TIME_WAIT or, with the table full,
		// is dropped and counted as an overflow: wait until all res.OK
		// closes are accounted for.
		const counter = "TcpExt.TCPTimeWaitOverflow"
		accounted := func(now *snapshot.Snapshot) int {
			return now.Count(sockdiag.TimeWait) - prev.Count(sockdiag.TimeWait) + int(now.Counters.Get(counter)-prev.Counters.Get(counter))
		}
		now := prev
		err = harness.WaitFor(ctx, 5*time.Second, func() (bool, error) {
			s, err := r.Snapshot(ctx, ns)
			if err != nil {
				return false, err
			}
			now = s
			return accounted(now) >= res.OK, nil
		})
		// A connection the kernel reset instead of closing (rare, under
		// load) leaves neither; once no client socket is still closing
		// there is nothing more to wait for.
		settled := now != prev && now.Count(sockdiag.FinWait1)+now.Count(sockdiag.FinWait2)+now.Count(sockdiag.Closing) == 0
		switch {
		case errors.Is(err, harness.ErrTimeout) && settled:
			r.Step("%d of %d closed connections left neither TIME_WAIT nor an overflow (reset)", res.OK-accounted(now), res.OK)
		case errors.Is(err, harness.ErrTimeout):
			return 0, 0, fmt.Errorf("%d of %d closed connections in TIME_WAIT or counted as overflow: %w", accounted(now), res.OK, err)
		case err != nil:
			return 0, 0, err
		}
		overflow = now.Counters.Get(counter) - prev.Counters.Get(counter)
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

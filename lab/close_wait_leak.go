package lab

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/lab/harness"
)

var closeWaitLeak = Scenario{
	Name:    "close-wait-leak",
	Summary: "a server that never calls close() after the client hangs up: CLOSE_WAIT sockets stay for ever",
	run:     runCloseWaitLeak,
}

const closeWaitClients = 20

func runCloseWaitLeak(ctx context.Context, r *Run) error {
	ns, err := r.Namespace(ctx)
	if err != nil {
		return err
	}
	r.Step("namespace %s: a server on 127.0.0.1:9000 that reads until EOF and then forgets to close the connection", ns.Name)
	leaky, err := startServer(ns, "127.0.0.1:9000", leak)
	if err != nil {
		return err
	}
	defer leaky.Close()

	prev, err := r.Snapshot(ctx, ns)
	if err != nil {
		return err
	}
	if err := requests(ctx, ns, "127.0.0.1:9000", closeWaitClients); err != nil {
		return err
	}
	r.Step("%d clients connected, sent a request and closed their side", closeWaitClients)
	count := func(s *snapshot.Snapshot, port uint16) int {
		n := 0
		for _, sk := range s.Sockets {
			if sk.State == sockdiag.CloseWait && sk.Local.Port() == port {
				n++
			}
		}
		return n
	}
	var cw int
	if err := harness.WaitFor(ctx, 5*time.Second, func() (bool, error) {
		s, err := r.Snapshot(ctx, ns)
		if err != nil {
			return false, err
		}
		cw = count(s, 9000)
		return cw == closeWaitClients, nil
	}); err != nil {
		return fmt.Errorf("CLOSE_WAIT sockets: %d of %d: %w", cw, closeWaitClients, err)
	}
	r.Step("CLOSE_WAIT sockets on the server: %d", cw)
	if err := r.Wait(ctx, 3*time.Second, "watching whether the kernel cleans them up", nil); err != nil {
		return err
	}
	// One snapshot both counts what is left and goes to the doctor.
	now, err := r.Snapshot(ctx, ns)
	if err != nil {
		return err
	}
	later := count(now, 9000)
	r.Step("3 s later: still %d. The kernel never times out CLOSE_WAIT; only close() ends it", later)
	r.Diagnose(prev, now, 0, false)

	r.Step("fix: stop the leaky server (closing what it held) and start one that closes on EOF, on 127.0.0.1:9001")
	leaky.Close()
	fixed, err := startServer(ns, "127.0.0.1:9001", closeOnEOF)
	if err != nil {
		return err
	}
	defer fixed.Close()
	prev, err = r.Snapshot(ctx, ns)
	if err != nil {
		return err
	}
	if err := requests(ctx, ns, "127.0.0.1:9001", closeWaitClients); err != nil {
		return err
	}
	var fixedCW int
	if err := harness.WaitFor(ctx, 5*time.Second, func() (bool, error) {
		s, err := r.Snapshot(ctx, ns)
		if err != nil {
			return false, err
		}
		now, fixedCW = s, s.Count(sockdiag.CloseWait)
		return fixedCW == 0 && s.Count(sockdiag.FinWait2) == 0, nil
	}); err != nil {
		return fmt.Errorf("fixed server still has %d CLOSE_WAIT sockets: %w", fixedCW, err)
	}
	// The last snapshot of the wait is the one the doctor sees.
	r.Step("%d clients against the fixed server: %d CLOSE_WAIT sockets", closeWaitClients, fixedCW)
	r.Diagnose(prev, now, 0, true)
	r.Set("close_wait_before", float64(cw))
	r.Set("close_wait_later", float64(later))
	r.Set("close_wait_after", float64(fixedCW))
	r.Metric("CLOSE_WAIT sockets", "", float64(later), float64(fixedCW))
	return nil
}

// requests opens n connections, writes a request on each and closes.
func requests(ctx context.Context, ns *harness.Namespace, addr string, n int) error {
	for i := range n {
		c, err := ns.Dial(ctx, &net.Dialer{Timeout: 2 * time.Second}, "tcp", addr)
		if err != nil {
			return fmt.Errorf("client %d: %w", i, err)
		}
		_, err = c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		c.Close()
		if err != nil {
			return fmt.Errorf("client %d: %w", i, err)
		}
	}
	return nil
}

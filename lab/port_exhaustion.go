package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/lab/harness"
	"github.com/tcplens/tcplens/pool"
)

var portExhaustion = Scenario{
	Name:    "port-exhaustion",
	Summary: "100 ephemeral ports and a client that dials per request: EADDRNOTAVAIL, then tcp_tw_reuse, then a pool",
	run:     runPortExhaustion,
}

const (
	peRange    = "40000 40099"
	peAddr     = "127.0.0.1:5432"
	peRequests = 300
)

// peNamespace makes a namespace with a 100-port range and a server that
// closes after each request.
func peNamespace(ctx context.Context, r *Run, sysctls map[string]string) (*harness.Namespace, *server, error) {
	ns, err := r.Namespace(ctx)
	if err != nil {
		return nil, nil, err
	}
	settings := map[string]string{"net.ipv4.ip_local_port_range": peRange, "net.ipv4.tcp_tw_reuse": "0"}
	for k, v := range sysctls {
		settings[k] = v
	}
	for k, v := range settings {
		if err := ns.Sysctl(k, v); err != nil {
			return nil, nil, err
		}
	}
	srv, err := startServer(ns, peAddr, echo)
	if err != nil {
		return nil, nil, err
	}
	return ns, srv, nil
}

// dialFor dials per request for d (at most 100,000 attempts) and counts
// successes and EADDRNOTAVAIL failures.
func dialFor(ctx context.Context, ns *harness.Namespace, d time.Duration) dialResult {
	var res dialResult
	end := time.Now().Add(d)
	for i := 0; i < 100000 && time.Now().Before(end) && ctx.Err() == nil; i++ {
		one := dialClose(ctx, ns, peAddr, 1)
		res.OK += one.OK
		res.AddrNotAvail += one.AddrNotAvail
		res.Other += one.Other
		if one.AddrNotAvail > 0 {
			time.Sleep(time.Millisecond) // no busy loop while ports are gone
		}
	}
	return res
}

func runPortExhaustion(ctx context.Context, r *Run) error {
	// 1. The problem.
	ns, srv, err := peNamespace(ctx, r, nil)
	if err != nil {
		return err
	}
	defer srv.Close()
	r.Step("namespace %s: ip_local_port_range %q (100 ports), tcp_tw_reuse 0", ns.Name, peRange)
	prev, err := r.Snapshot(ctx, ns)
	if err != nil {
		return err
	}
	r.Step("%d requests to %s, each on a new connection that the client closes first", peRequests, peAddr)
	res := dialClose(ctx, ns, peAddr, peRequests)
	r.Step("%d succeeded, %d failed with EADDRNOTAVAIL (\"cannot assign requested address\"), first failure after %s",
		res.OK, res.AddrNotAvail, res.FirstAddrNotAvail.Round(time.Millisecond))
	now, err := r.Snapshot(ctx, ns)
	if err != nil {
		return err
	}
	if b := analyze.PortBudgets(now); len(b) > 0 {
		r.Step("port budget 127.0.0.1 -> %s: %d of %d in use, %d in TIME_WAIT for the next 60 s", peAddr, b[0].InUse, b[0].Range, b[0].TimeWait())
	}
	r.Diagnose(prev, now, 0, false)
	r.Set("errors_dial_per_request", float64(res.AddrNotAvail))
	r.Set("ok_dial_per_request", float64(res.OK))
	r.Set("first_failure_ms", float64(res.FirstAddrNotAvail.Milliseconds()))

	// 2. tcp_tw_reuse=1: ports come back tcp_tw_reuse_delay after TIME_WAIT.
	nsReuse, srvReuse, err := peNamespace(ctx, r, map[string]string{"net.ipv4.tcp_tw_reuse": "1"})
	if err != nil {
		return err
	}
	defer srvReuse.Close()
	dialClose(ctx, nsReuse, peAddr, 100)
	r.Step("tcp_tw_reuse=1 (timestamps on), all 100 ports in TIME_WAIT: dialling per request for 3 s")
	reuse := dialFor(ctx, nsReuse, 3*time.Second)
	reuseRate := float64(reuse.OK) / 3
	r.Step("%.0f connections/s succeed: a TIME_WAIT port is reused only 1 s (tcp_tw_reuse_delay) after it entered TIME_WAIT, so the rate is capped near range/delay = 100/s", reuseRate)
	r.Set("reuse_per_sec", reuseRate)

	// 3. Reuse needs timestamps.
	nsNoTS, srvNoTS, err := peNamespace(ctx, r, map[string]string{"net.ipv4.tcp_tw_reuse": "1", "net.ipv4.tcp_timestamps": "0"})
	if err != nil {
		return err
	}
	defer srvNoTS.Close()
	dialClose(ctx, nsNoTS, peAddr, 100)
	r.Step("tcp_tw_reuse=1 with tcp_timestamps=0: dialling per request for 2 s")
	noTS := dialFor(ctx, nsNoTS, 2*time.Second)
	r.Step("%d connections succeed, %d attempts fail: without timestamps the kernel cannot tell old segments apart, so it never reuses", noTS.OK, noTS.AddrNotAvail)
	r.Set("no_timestamps_ok", float64(noTS.OK))

	// 4. The fix: a pool.
	nsPool, srvPool, err := peNamespace(ctx, r, nil)
	if err != nil {
		return err
	}
	defer srvPool.Close()
	const perRoute = 8
	p, err := pool.New(pool.Config{
		MaxPerRoute: perRoute,
		Dial: func(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
			return nsPool.Dial(ctx, d, network, addr)
		},
	})
	if err != nil {
		return err
	}
	defer p.Close()
	prev, err = r.Snapshot(ctx, nsPool)
	if err != nil {
		return err
	}
	r.Step("ten times as many requests, %d, through tcplens/pool (MaxPerRoute %d, 16 concurrent callers) in namespace %s", peRequests*10, perRoute, nsPool.Name)
	failed, err := poolRequests(ctx, p, peAddr, peRequests*10, 16)
	if err != nil {
		return err
	}
	now, err = r.Snapshot(ctx, nsPool)
	if err != nil {
		return err
	}
	inUse := 0
	for _, b := range analyze.PortBudgets(now) {
		inUse += b.InUse
	}
	r.Step("%d requests failed; %d ephemeral ports in use", failed, inUse)
	r.Diagnose(prev, now, 0, true)
	r.Set("errors_pool", float64(failed))
	r.Set("ports_pool", float64(inUse))
	r.Metric("requests failed with EADDRNOTAVAIL", "", float64(res.AddrNotAvail), float64(failed))
	r.Metric("ephemeral ports in use", "", float64(res.OK), float64(inUse))
	return nil
}

// poolRequests sends n request/response exchanges through p from workers
// goroutines and returns how many failed.
func poolRequests(ctx context.Context, p *pool.Pool, addr string, n, workers int) (int, error) {
	var mu sync.Mutex
	failed, next := 0, 0
	var firstErr error
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4)
			for {
				mu.Lock()
				if next == n || ctx.Err() != nil {
					mu.Unlock()
					return
				}
				next++
				mu.Unlock()
				err := func() error {
					c, err := p.Get(ctx, addr)
					if err != nil {
						return err
					}
					c.SetDeadline(time.Now().Add(2 * time.Second))
					if _, err = c.Write([]byte("ping")); err == nil {
						_, err = io.ReadFull(c, buf)
					}
					if err != nil {
						c.Discard()
						return err
					}
					c.SetDeadline(time.Time{})
					c.Release()
					return nil
				}()
				if err != nil {
					mu.Lock()
					failed++
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil && !errors.Is(firstErr, syscall.EADDRNOTAVAIL) && failed == n {
		return failed, fmt.Errorf("every request failed: %w", firstErr)
	}
	return failed, nil
}

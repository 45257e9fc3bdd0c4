package lab

import (
	"context"
	"net"
	"slices"
	"sync"
	"time"
)

var listenOverflow = Scenario{
	Name:    "listen-overflow",
	Summary: "a listener with backlog 4 that accepts slowly, hit by a burst of 40 connections",
	run:     runListenOverflow,
}

const burst = 40

func runListenOverflow(ctx context.Context, r *Run) error {
	ns, err := r.Namespace(ctx)
	if err != nil {
		return err
	}
	type outcome struct {
		overflows, synRetrans int64
		slowest               time.Duration
		failed                int
	}
	phase := func(port, backlog int, acceptEvery time.Duration, after bool) (outcome, error) {
		var o outcome
		l, err := listenBacklog(ns, port, backlog)
		if err != nil {
			return o, err
		}
		defer l.Close()
		stop := make(chan struct{})
		var acc sync.WaitGroup
		acc.Add(1)
		go func() {
			defer acc.Done()
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				held = append(held, c)
				select {
				case <-stop:
					return
				case <-time.After(acceptEvery):
				}
			}
		}()
		defer func() { close(stop); l.Close(); acc.Wait() }()

		prev, err := r.Snapshot(ctx, ns)
		if err != nil {
			return o, err
		}
		r.Step("burst of %d connections to 127.0.0.1:%d (backlog %d, one accept() every %s)", burst, port, backlog, acceptEvery)
		lat := make([]time.Duration, burst)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var conns []net.Conn
		for i := range burst {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				c, err := ns.Dial(ctx, &net.Dialer{Timeout: 15 * time.Second}, "tcp", net.JoinHostPort("127.0.0.1", itoa(port)))
				lat[i] = time.Since(start)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					o.failed++
					return
				}
				conns = append(conns, c)
			}()
		}
		// Look while the burst is still queued.
		time.Sleep(300 * time.Millisecond)
		during, err := r.Snapshot(ctx, ns)
		if err != nil {
			return o, err
		}
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
		now, err := r.Snapshot(ctx, ns)
		if err != nil {
			return o, err
		}
		o.overflows = now.Counters.Get("TcpExt.ListenOverflows") - prev.Counters.Get("TcpExt.ListenOverflows")
		o.synRetrans = now.Counters.Get("TcpExt.TCPSynRetrans") - prev.Counters.Get("TcpExt.TCPSynRetrans")
		o.slowest = slices.Max(lat)
		r.Step("ListenOverflows +%d, SYN retransmissions +%d, slowest connect %s, %d failed", o.overflows, o.synRetrans, o.slowest.Round(time.Millisecond), o.failed)
		r.Diagnose(prev, during, 0, after)
		return o, nil
	}

	r.Step("namespace %s", ns.Name)
	before, err := phase(7001, 4, 100*time.Millisecond, false)
	if err != nil {
		return err
	}
	r.Step("fix: listen() with backlog 1024 and accept without delay")
	after, err := phase(7002, 1024, 0, true)
	if err != nil {
		return err
	}
	r.Set("overflows_before", float64(before.overflows))
	r.Set("overflows_after", float64(after.overflows))
	r.Set("syn_retrans_before", float64(before.synRetrans))
	r.Set("syn_retrans_after", float64(after.synRetrans))
	r.Set("slowest_ms_before", float64(before.slowest.Milliseconds()))
	r.Set("slowest_ms_after", float64(after.slowest.Milliseconds()))
	r.Set("failed_before", float64(before.failed))
	r.Metric("ListenOverflows increase", "", float64(before.overflows), float64(after.overflows))
	r.Metric("client SYN retransmissions", "", float64(before.synRetrans), float64(after.synRetrans))
	r.Metric("slowest connect", "ms", float64(before.slowest.Milliseconds()), float64(after.slowest.Milliseconds()))
	return nil
}

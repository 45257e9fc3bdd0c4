package lab

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/tcplens/tcplens/pool"
)

var stalePool = Scenario{
	Name:    "stale-pool",
	Summary: "the server restarts while pools hold idle connections: a naive pool hands out dead ones, tcplens/pool does not",
	run:     runStalePool,
}

const staleConns = 8

// naivePool is the buffered-channel pool many programs write: it returns
// idle connections without looking at them.
type naivePool struct {
	idle chan net.Conn
	dial func() (net.Conn, error)
}

func (n *naivePool) get() (net.Conn, error) {
	select {
	case c := <-n.idle:
		return c, nil
	default:
		return n.dial()
	}
}

func (n *naivePool) put(c net.Conn) {
	select {
	case n.idle <- c:
	default:
		c.Close()
	}
}

func (n *naivePool) close() {
	for {
		select {
		case c := <-n.idle:
			c.Close()
		default:
			return
		}
	}
}

func runStalePool(ctx context.Context, r *Run) error {
	ns, err := r.Namespace(ctx)
	if err != nil {
		return err
	}
	const addr = "127.0.0.1:6379"
	srv, err := startServer(ns, addr, echo)
	if err != nil {
		return err
	}
	naive := &naivePool{idle: make(chan net.Conn, staleConns), dial: func() (net.Conn, error) {
		return ns.Dial(ctx, &net.Dialer{Timeout: 2 * time.Second}, "tcp", addr)
	}}
	defer naive.close()
	p, err := pool.New(pool.Config{
		MaxPerRoute: staleConns,
		Dial: func(ctx context.Context, d *net.Dialer, network, a string) (net.Conn, error) {
			return ns.Dial(ctx, d, network, a)
		},
	})
	if err != nil {
		return err
	}
	defer p.Close()

	// Fill both pools with staleConns idle connections.
	var naiveConns []net.Conn
	var poolConns []*pool.Conn
	for range staleConns {
		c, err := naive.get()
		if err != nil {
			return err
		}
		naiveConns = append(naiveConns, c)
		pc, err := p.Get(ctx, addr)
		if err != nil {
			return err
		}
		poolConns = append(poolConns, pc)
	}
	for i := range staleConns {
		naive.put(naiveConns[i])
		poolConns[i].Release()
	}
	r.Step("namespace %s: a naive pool and tcplens/pool each hold %d idle connections to %s", ns.Name, staleConns, addr)

	r.Step("the server restarts: every connection it had is closed")
	srv.Close()
	srv, err = startServer(ns, addr, echo)
	if err != nil {
		return err
	}
	defer srv.Close()
	// Long enough for the FINs to arrive and for the pool's idle check
	// (IdleCheckAfter, 500 ms) to apply.
	if err := r.Wait(ctx, time.Second, "", nil); err != nil {
		return err
	}

	naiveFailed, poolFailed := 0, 0
	var naiveErr error
	for range staleConns {
		c, err := naive.get()
		if err == nil {
			err = echoRoundTrip(c, 2*time.Second)
			if err == nil {
				naive.put(c)
			} else {
				c.Close()
			}
		}
		if err != nil {
			naiveFailed++
			naiveErr = err
		}
	}
	if naiveErr != nil {
		r.Step("naive pool: %d of %d requests failed (%v)", naiveFailed, staleConns, naiveErr)
	} else {
		r.Step("naive pool: %d of %d requests failed", naiveFailed, staleConns)
	}
	for range staleConns {
		c, err := p.Get(ctx, addr)
		if err == nil {
			if err = echoRoundTrip(c, 2*time.Second); err == nil {
				c.Release()
			} else {
				c.Discard()
			}
		}
		if err != nil {
			poolFailed++
		}
	}
	st := p.Stats()
	r.Step("tcplens/pool: %d of %d requests failed; the MSG_PEEK check on Get found %d dead connections and dialled fresh ones", poolFailed, staleConns, st.Total.StaleEvictions)
	r.Columns("naive pool", "tcplens/pool")
	r.Set("naive_failed", float64(naiveFailed))
	r.Set("pool_failed", float64(poolFailed))
	r.Set("pool_stale_evictions", float64(st.Total.StaleEvictions))
	r.Metric(fmt.Sprintf("failed requests of %d after a server restart", staleConns), "", float64(naiveFailed), float64(poolFailed))
	return nil
}

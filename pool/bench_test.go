package pool

import (
	"context"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/puddle/v2"
	"github.com/tcplens/tcplens/lab/harness"
)

// nopConn is a connection that does nothing, so the Get+Release
// benchmarks measure the pools and not the network.
type nopConn struct{ net.Conn }

func (nopConn) Close() error { return nil }

const benchSize = 8

// chanPool is the minimal buffered-channel pool many Go programs start with:
// no limits beyond the channel, no health checks, no stats.
type chanPool struct{ ch chan net.Conn }

func (p *chanPool) get(ctx context.Context) (net.Conn, error) {
	select {
	case c := <-p.ch:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *chanPool) put(c net.Conn) { p.ch <- c }

// BenchmarkGetRelease compares one Get+Release on a warm pool of 8 with
// jackc/puddle/v2 and a buffered channel, with one goroutine and with
// RunParallel (GOMAXPROCS goroutines).
func BenchmarkGetRelease(b *testing.B) {
	ctx := context.Background()
	type impl struct {
		name string
		run  func(b *testing.B, parallel bool)
	}
	loop := func(b *testing.B, parallel bool, op func()) {
		b.ReportAllocs()
		b.ResetTimer()
		if !parallel {
			for b.Loop() {
				op()
			}
			return
		}
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				op()
			}
		})
	}
	impls := []impl{
		{"tcplens", func(b *testing.B, parallel bool) {
			p := newPool(b, Config{MaxPerRoute: benchSize, Dial: func(context.Context, *net.Dialer, string, string) (net.Conn, error) {
				return nopConn{}, nil
			}})
			var warm []*Conn
			for range benchSize {
				c, _ := p.Get(ctx, "bench:1")
				warm = append(warm, c)
			}
			for _, c := range warm {
				c.Release()
			}
			loop(b, parallel, func() {
				c, err := p.Get(ctx, "bench:1")
				if err != nil {
					b.Fatal(err)
				}
				c.Release()
			})
		}},
		{"puddle", func(b *testing.B, parallel bool) {
			p, err := puddle.NewPool(&puddle.Config[net.Conn]{
				Constructor: func(context.Context) (net.Conn, error) { return nopConn{}, nil },
				Destructor:  func(net.Conn) {},
				MaxSize:     benchSize,
			})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			var warm []*puddle.Resource[net.Conn]
			for range benchSize {
				r, _ := p.Acquire(ctx)
				warm = append(warm, r)
			}
			for _, r := range warm {
				r.Release()
			}
			loop(b, parallel, func() {
				r, err := p.Acquire(ctx)
				if err != nil {
					b.Fatal(err)
				}
				r.Release()
			})
		}},
		{"chan", func(b *testing.B, parallel bool) {
			p := &chanPool{ch: make(chan net.Conn, benchSize)}
			for range benchSize {
				p.put(nopConn{})
			}
			loop(b, parallel, func() {
				c, err := p.get(ctx)
				if err != nil {
					b.Fatal(err)
				}
				p.put(c)
			})
		}},
	}
	for _, mode := range []string{"serial", "parallel"} {
		for _, im := range impls {
			b.Run(mode+"/"+im.name, func(b *testing.B) { im.run(b, mode == "parallel") })
		}
	}
}

// BenchmarkEndToEnd sends b.N request/response round trips (8 bytes each
// way) from 64 workers to a real server in a fresh network namespace:
// dialling and closing a connection per request, or through the pool
// (MaxPerRoute 64). It reports throughput, p99 latency and the TIME_WAIT
// sockets ss finds afterwards (for the pool, after Close). Run it with
// -benchtime=20000x for the 20,000-request comparison.
func BenchmarkEndToEnd(b *testing.B) {
	const conc = 64
	for _, mode := range []string{"dial-per-request", "pool"} {
		b.Run(mode, func(b *testing.B) {
			ns := harness.NewT(b)
			startServer(b, ns, modeEcho, 0)
			var p *Pool
			if mode == "pool" {
				p = newNSPool(b, ns, Config{MaxPerRoute: conc})
			}
			ctx := context.Background()
			d := &net.Dialer{}
			lat := make([]time.Duration, b.N)
			var next atomic.Int64
			var failed atomic.Int64
			// Workers run on threads inside the namespace in both modes, so
			// the only difference is dial-per-request versus the pool.
			one := func() error {
				if p != nil {
					c, err := p.Get(ctx, srvAddr)
					if err != nil {
						return err
					}
					if err := echoRoundTrip(c); err != nil {
						c.Discard()
						return err
					}
					c.Release()
					return nil
				}
				c, err := d.DialContext(ctx, "tcp", srvAddr)
				if err != nil {
					return err
				}
				defer c.Close()
				return echoRoundTrip(c)
			}
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for range conc {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ns.Run(func() error {
						for {
							i := next.Add(1) - 1
							if i >= int64(b.N) {
								return nil
							}
							t0 := time.Now()
							if err := one(); err != nil {
								failed.Add(1)
							}
							lat[i] = time.Since(t0)
						}
					})
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if p != nil {
				p.Close()
			}
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d of %d requests failed", n, b.N)
			}
			slices.Sort(lat)
			tw := countSockets(b, ns, "state", "time-wait")
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(tw), "timewait")
			if p != nil && tw > conc {
				b.Errorf("pool left %d TIME_WAIT sockets, more than its size %d", tw, conc)
			}
		})
	}
}

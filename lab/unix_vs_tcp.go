package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"
)

var unixVsTCP = Scenario{
	Name:    "unix-vs-tcp",
	Summary: "the same request/response load over loopback TCP and over a Unix domain socket, measured",
	run:     runUnixVsTCP,
}

const (
	rttClients  = 8
	rttRequests = 2500 // per client: 20,000 round trips in all
	rttSize     = 64
)

type rttStats struct {
	perSec   float64
	p50, p99 time.Duration
	done     int
	elapsed  time.Duration // from the first dial to the last answer
}

func runUnixVsTCP(ctx context.Context, r *Run) error {
	ns, err := r.Namespace(ctx)
	if err != nil {
		return err
	}
	r.Columns("TCP loopback", "Unix socket")
	tcpL, err := ns.Listen("tcp", "127.0.0.1:9100")
	if err != nil {
		return err
	}
	tcpSrv := serve(tcpL, echo)
	defer tcpSrv.Close()
	dir, err := os.MkdirTemp("", "tcplens-lab-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "echo.sock")
	unixL, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen %s: %w", path, err)
	}
	unixSrv := serve(unixL, echo)
	defer unixSrv.Close()

	r.Step("%d clients x %d round trips of %d bytes over TCP 127.0.0.1:9100 in namespace %s", rttClients, rttRequests, rttSize, ns.Name)
	tcp, err := roundTrips(ctx, func() (net.Conn, error) {
		return ns.Dial(ctx, &net.Dialer{}, "tcp", "127.0.0.1:9100")
	})
	if err != nil {
		return fmt.Errorf("tcp: %w", err)
	}
	r.Step("TCP: %.0f round trips/s, p50 %s, p99 %s", tcp.perSec, tcp.p50, tcp.p99)
	r.Step("the same over the Unix socket %s", path)
	uds, err := roundTrips(ctx, func() (net.Conn, error) { return net.Dial("unix", path) })
	if err != nil {
		return fmt.Errorf("unix: %w", err)
	}
	r.Step("Unix: %.0f round trips/s, p50 %s, p99 %s", uds.perSec, uds.p50, uds.p99)
	r.Set("tcp_per_sec", tcp.perSec)
	r.Set("unix_per_sec", uds.perSec)
	r.Set("tcp_done", float64(tcp.done))
	r.Set("unix_done", float64(uds.done))
	r.Set("tcp_seconds", tcp.elapsed.Seconds())
	r.Set("unix_seconds", uds.elapsed.Seconds())
	r.Set("tcp_p50_us", float64(tcp.p50.Microseconds()))
	r.Set("tcp_p99_us", float64(tcp.p99.Microseconds()))
	r.Set("unix_p50_us", float64(uds.p50.Microseconds()))
	r.Set("unix_p99_us", float64(uds.p99.Microseconds()))
	r.Metric("round trips per second", "", tcp.perSec, uds.perSec)
	r.Metric("p50 latency", "us", float64(tcp.p50.Microseconds()), float64(uds.p50.Microseconds()))
	r.Metric("p99 latency", "us", float64(tcp.p99.Microseconds()), float64(uds.p99.Microseconds()))
	return nil
}

func roundTrips(ctx context.Context, dial func() (net.Conn, error)) (rttStats, error) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		lats = make([]time.Duration, 0, rttClients*rttRequests)
		errs []error
	)
	start := time.Now()
	for range rttClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dial()
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			req := make([]byte, rttSize)
			resp := make([]byte, rttSize)
			local := make([]time.Duration, 0, rttRequests)
			for i := 0; i < rttRequests && ctx.Err() == nil; i++ {
				t := time.Now()
				if _, err := c.Write(req); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				if _, err := io.ReadFull(c, resp); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				local = append(local, time.Since(t))
			}
			mu.Lock()
			lats = append(lats, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(errs) > 0 {
		return rttStats{}, errs[0]
	}
	if len(lats) == 0 {
		return rttStats{}, ctx.Err()
	}
	slices.Sort(lats)
	return rttStats{
		perSec:  float64(len(lats)) / elapsed.Seconds(),
		p50:     lats[len(lats)/2],
		p99:     lats[len(lats)*99/100],
		done:    len(lats),
		elapsed: elapsed,
	}, nil
}

func itoa(n int) string { return strconv.Itoa(n) }

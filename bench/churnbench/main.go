// Command churnbench drives the destroy-event benchmark (bench/churn.sh).
//
//	churnbench -mode listen -netns NS -duration D
//	    runs a churn.Listener in NS, swaps a window every second, and prints
//	    one line per window and a summary with its own CPU time (getrusage).
//	churnbench -mode load -netns NS -rate R -duration D
//	    opens and closes R connections/s on loopback inside NS for D and
//	    prints how many it made.
//
// The two modes run as separate processes so the listener's CPU time is its
// own. It is a benchmark driver, not part of tcplens.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcplens/tcplens/internal/churn"
	"github.com/tcplens/tcplens/internal/netns"
)

func main() {
	mode := flag.String("mode", "", "listen or load")
	ns := flag.String("netns", "", "network namespace")
	rate := flag.Int("rate", 20000, "connections per second (load)")
	dur := flag.Duration("duration", 10*time.Second, "how long to run")
	ports := flag.Int("ports", 8, "server ports 7000.. (load)")
	workers := flag.Int("workers", 128, "dialling goroutines (load)")
	flag.Parse()
	var err error
	switch *mode {
	case "listen":
		err = listen(*ns, *dur)
	case "load":
		err = load(*ns, *rate, *dur, *ports, *workers)
	default:
		err = fmt.Errorf("-mode: want listen or load, got %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "churnbench:", err)
		os.Exit(1)
	}
}

func cpu() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func listen(ns string, dur time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	l, err := churn.Listen(ctx, churn.Config{Netns: ns})
	if err != nil {
		return err
	}
	defer l.Close()
	start, cpu0 := time.Now(), cpu()
	var closed int
	var dropped uint64
	var overruns, maxPerSec int
	t := time.NewTicker(time.Second)
	defer t.Stop()
	deadline := time.After(dur)
	// take ends a window and adds it to the totals.
	take := func() *churn.Window {
		w := l.Swap()
		closed += w.Total.Closed
		dropped += w.Dropped
		overruns += w.Overruns
		maxPerSec = max(maxPerSec, int(w.Total.PerSecond))
		return w
	}
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-deadline:
			break loop
		case <-t.C:
		}
		w := take()
		fmt.Printf("window %.2fs: %d closed (%.0f/s), %d dropped (exact %v), %d ENOBUFS\n",
			w.Duration().Seconds(), w.Total.Closed, w.Total.PerSecond, w.Dropped, w.DroppedExact, w.Overruns)
	}
	take() // the events that arrived since the last tick
	wall, used := time.Since(start), cpu()-cpu0
	if err := l.Err(); err != nil {
		return err
	}
	fmt.Printf("listener: %d events in %.1fs, peak window %d/s, %d dropped, %d ENOBUFS, rcvbuf %d, cpu %.2fs = %.1f%% of one core\n",
		closed, wall.Seconds(), maxPerSec, dropped, overruns, l.RcvBuf(), used.Seconds(), 100*used.Seconds()/wall.Seconds())
	return nil
}

func load(ns string, rate int, dur time.Duration, ports, workers int) error {
	// Raw blocking syscalls on locked threads: the Go netpoller would cost
	// more CPU per connection than the kernel work being measured.
	var lfds []int
	err := netns.Run(ns, func() error {
		for p := range ports {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			if err := unix.Bind(fd, &unix.SockaddrInet4{Port: 7000 + p, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
				return err
			}
			if err := unix.Listen(fd, 65535); err != nil {
				return err
			}
			lfds = append(lfds, fd)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, lfd := range lfds {
		go func() {
			for {
				fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
				if err != nil {
					if err == unix.EINTR || err == unix.ECONNABORTED {
						continue
					}
					return
				}
				unix.Close(fd)
			}
		}()
	}
	// Tokens are issued every millisecond; workers dial and close as fast
	// as tokens come. Tokens the workers cannot take are dropped, not made
	// up later, so the achieved rate is honest.
	tokens := make(chan struct{}, max(workers, rate/50)) // 20 ms of slack
	var made, failed atomic.Int64
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			netns.Run(ns, func() error { // one locked thread inside the namespace
				n := 0
				for range tokens {
					sa := &unix.SockaddrInet4{Port: 7000 + (i+n)%ports, Addr: [4]byte{127, 0, 0, 1}}
					n++
					fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
					if err != nil {
						failed.Add(1)
						continue
					}
					if err := unix.Connect(fd, sa); err != nil {
						failed.Add(1)
					} else {
						made.Add(1)
					}
					unix.Close(fd)
				}
				return nil
			})
		}()
	}
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	issued, missed := 0, 0
	for now := range tick.C {
		el := now.Sub(start)
		if el >= dur {
			break
		}
		due := int(el.Seconds() * float64(rate))
		for ; issued < due; issued++ {
			select {
			case tokens <- struct{}{}:
			default:
				missed++
			}
		}
	}
	tick.Stop()
	close(tokens)
	wg.Wait()
	wall := time.Since(start)
	for _, fd := range lfds {
		unix.Shutdown(fd, unix.SHUT_RDWR) // wakes the accept loops
		unix.Close(fd)
	}
	fmt.Printf("load: %d connections in %.1fs = %.0f/s (target %d/s, %d not sent: workers busy), %d failed\n",
		made.Load(), wall.Seconds(), float64(made.Load())/wall.Seconds(), rate, missed, failed.Load())
	return nil
}

// Command twgen fills a network namespace with TCP sockets in TIME_WAIT.
//
// The benchmarks in bench/ need a namespace that holds about a million
// sockets, the size at which socket-dump tools stop being instant and their
// memory use shows. TIME_WAIT sockets are the cheapest way to get there: they
// hold no file descriptor and no buffers, the kernel keeps them for exactly
// 60 s, and they are what a busy client host really accumulates.
//
// twgen writes the namespace's sysctls (tcp_max_tw_buckets,
// ip_local_port_range, tcp_tw_reuse) from a thread inside the namespace, so
// the host is never touched, opens all listening sockets (on ports above the
// ephemeral range, so no client can take one first), then runs several
// workers, each on an OS thread switched into the namespace with netns.Run.
// Every worker owns a few listening ports and loops: connect a batch of
// clients to 127.0.0.1-16 (raw syscalls, no Go net package), close them, then
// accept and close the server ends. The client closes first, so the
// TIME_WAIT socket sits on the client side and holds an ephemeral port; the
// (destination address, port) spread keeps every 4-tuple unique well within
// the kernel's per-destination port budget.
//
// Usage:
//
//	twgen -netns NAME -n 1000000
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcplens/tcplens/internal/netns"
	"golang.org/x/sys/unix"
)

// config holds the command-line settings.
type config struct {
	ns       string
	n        int
	workers  int
	ports    int // listening ports per worker
	dsts     int // destination addresses 127.0.0.1..dsts
	basePort int
	batch    int
	timeout  time.Duration
	progress time.Duration
	twBucket int
	portLo   int
	portHi   int
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stdout)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "twgen: %v\n", err)
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "twgen: %v\n", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, out io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("twgen", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported as one line by main
	fs.StringVar(&c.ns, "netns", "", "network namespace name or path (required; never the host's)")
	fs.IntVar(&c.n, "n", 1000000, "number of TIME_WAIT sockets to create")
	fs.IntVar(&c.workers, "workers", min(2*runtime.NumCPU(), 16), "concurrent workers, each on its own OS thread in the namespace")
	fs.IntVar(&c.ports, "ports", 4, "listening ports per worker")
	fs.IntVar(&c.dsts, "dsts", 16, "destination addresses 127.0.0.1..127.0.0.N")
	fs.IntVar(&c.basePort, "base-port", 65100, "first listening port, outside the ephemeral range; each worker uses -ports ports from here")
	fs.IntVar(&c.batch, "batch", 256, "connections per port per round before the server ends are accepted")
	fs.DurationVar(&c.timeout, "timeout", 120*time.Second, "give up after this long")
	fs.DurationVar(&c.progress, "progress", 5*time.Second, "progress report interval")
	fs.IntVar(&c.twBucket, "tw-buckets", 2000000, "net.ipv4.tcp_max_tw_buckets to set inside the namespace")
	fs.IntVar(&c.portLo, "port-lo", 1024, "low end of net.ipv4.ip_local_port_range inside the namespace")
	fs.IntVar(&c.portHi, "port-hi", 65000, "high end of net.ipv4.ip_local_port_range inside the namespace")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: twgen -netns NAME [-n COUNT] [flags]\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(out)
			fs.Usage()
			return c, err
		}
		return c, fmt.Errorf("%w (see -h)", err)
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case c.ns == "":
		return c, fmt.Errorf("-netns is required: twgen refuses to fill the host's own namespace")
	case c.n < 0:
		return c, fmt.Errorf("-n must be >= 0, got %d", c.n)
	case c.workers < 1 || c.workers > 256:
		return c, fmt.Errorf("-workers must be in 1..256, got %d", c.workers)
	case c.ports < 1 || c.dsts < 1 || c.dsts > 254:
		return c, fmt.Errorf("-ports must be >= 1 and -dsts in 1..254")
	case c.batch < 1 || c.batch > 4096:
		return c, fmt.Errorf("-batch must be in 1..4096 (the listen backlog), got %d", c.batch)
	case c.portLo < 1 || c.portHi > 65535 || c.portLo >= c.portHi:
		return c, fmt.Errorf("bad ephemeral port range %d-%d", c.portLo, c.portHi)
	case c.basePort < 1 || c.basePort+c.workers*c.ports > 65536:
		return c, fmt.Errorf("listening ports %d+%d do not fit below 65536", c.basePort, c.workers*c.ports)
	case c.basePort <= c.portHi && c.basePort+c.workers*c.ports > c.portLo:
		return c, fmt.Errorf("listening ports %d-%d overlap the ephemeral range %d-%d; move -base-port",
			c.basePort, c.basePort+c.workers*c.ports-1, c.portLo, c.portHi)
	}
	if c.timeout <= 0 || c.progress <= 0 {
		return c, fmt.Errorf("-timeout and -progress must be positive")
	}
	// Each (destination, port) pair gets its own ephemeral port range; keep
	// well below it so connect finds a free port at the first tries.
	tuples := c.workers * c.ports * c.dsts
	if per := (c.n + tuples - 1) / tuples; per > (c.portHi-c.portLo)/2 {
		return c, fmt.Errorf("%d sockets over %d (destination, port) pairs is %d per pair, above half the %d-port ephemeral range; raise -ports or -dsts",
			c.n, tuples, per, c.portHi-c.portLo+1)
	}
	return c, nil
}

func run(c config) error {
	start := time.Now()
	if err := netns.Run(c.ns, func() error { return tuneSysctls(c) }); err != nil {
		return err
	}

	var done atomic.Int64
	stop := make(chan struct{})
	var progWG sync.WaitGroup
	progWG.Add(1)
	go func() {
		defer progWG.Done()
		t := time.NewTicker(c.progress)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				d := done.Load()
				el := time.Since(start).Seconds()
				fmt.Fprintf(os.Stderr, "twgen: %d/%d sockets after %.1fs (%.0f/s)\n", d, c.n, el, float64(d)/el)
			}
		}
	}()

	// All listeners exist before the first connect, so no client can take
	// one of their ports; they are outside the ephemeral range anyway.
	var lns []int
	closeListeners := func() {
		for _, fd := range lns {
			unix.Close(fd)
		}
		lns = nil
	}
	defer closeListeners()
	if err := netns.Run(c.ns, func() error {
		var err error
		lns, err = listenAll(c)
		return err
	}); err != nil {
		return err
	}

	deadline := start.Add(c.timeout)
	errs := make([]error, c.workers)
	var wg sync.WaitGroup
	for w := 0; w < c.workers; w++ {
		// Spread the remainder over the first workers.
		quota := c.n / c.workers
		if w < c.n%c.workers {
			quota++
		}
		wg.Add(1)
		go func(w, quota int) {
			defer wg.Done()
			errs[w] = netns.Run(c.ns, func() error {
				return worker(c, w, quota, lns[w*c.ports:(w+1)*c.ports], deadline, &done)
			})
		}(w, quota)
	}
	wg.Wait()
	close(stop)
	progWG.Wait()
	closeListeners()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("after %d sockets: %w", done.Load(), err)
	}
	el := time.Since(start)

	var tw string
	if err := netns.Run(c.ns, func() error {
		var err error
		tw, err = sockstatTCP()
		return err
	}); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "twgen: created %d connections in %.2fs (%.0f/s); sockstat: %s\n",
		done.Load(), el.Seconds(), float64(done.Load())/el.Seconds(), tw)
	fmt.Printf("{\"netns\":%q,\"created\":%d,\"seconds\":%.3f}\n", c.ns, done.Load(), el.Seconds())
	return nil
}

// listenAll opens the listening sockets of all workers (worker w owns
// entries w*c.ports to (w+1)*c.ports-1) in the calling thread's namespace.
// File descriptors are shared by all threads, and a socket stays in the
// namespace it was created in, so the workers can use them from their own
// threads.
func listenAll(c config) ([]int, error) {
	var lns []int
	for i := 0; i < c.workers*c.ports; i++ {
		port := c.basePort + i
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return lns, fmt.Errorf("listening socket: %w", err)
		}
		lns = append(lns, fd)
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return lns, fmt.Errorf("SO_REUSEADDR: %w", err)
		}
		// accept honours SO_RCVTIMEO: a connection that never arrives
		// ends the run with EAGAIN instead of hanging it.
		tv := unix.Timeval{Sec: 10}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return lns, fmt.Errorf("SO_RCVTIMEO: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port}); err != nil {
			return lns, fmt.Errorf("bind 0.0.0.0:%d: %w", port, err)
		}
		if err := unix.Listen(fd, 4096); err != nil {
			return lns, fmt.Errorf("listen on port %d: %w", port, err)
		}
	}
	return lns, nil
}

// tuneSysctls must run on a thread inside the namespace: /proc/sys/net
// resolves against the calling thread's network namespace.
func tuneSysctls(c config) error {
	set := []struct{ name, val string }{
		// The default is ehash/2 (131072 here); beyond it the kernel
		// destroys new TIME_WAIT sockets at once ("TCP: time wait bucket
		// table overflow").
		{"net/ipv4/tcp_max_tw_buckets", fmt.Sprint(c.twBucket)},
		{"net/ipv4/ip_local_port_range", fmt.Sprintf("%d %d", c.portLo, c.portHi)},
		// The default 2 lets loopback connects recycle old TIME_WAIT
		// sockets, which would silently cap the count.
		{"net/ipv4/tcp_tw_reuse", "0"},
	}
	for _, s := range set {
		p := "/proc/sys/" + s.name
		if err := os.WriteFile(p, []byte(s.val+"\n"), 0o644); err != nil {
			return fmt.Errorf("set %s=%q inside namespace %s: %w", strings.ReplaceAll(s.name, "/", "."), s.val, c.ns, err)
		}
	}
	return nil
}

// sockstatTCP returns the TCP line of /proc/net/sockstat of the calling
// thread's namespace ("inuse … orphan … tw …").
func sockstatTCP() (string, error) {
	f, err := os.Open("/proc/thread-self/net/sockstat")
	if err != nil {
		return "", fmt.Errorf("read sockstat: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "TCP: "); ok {
			return line, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read sockstat: %w", err)
	}
	return "", fmt.Errorf("no TCP line in sockstat")
}

// worker creates quota TIME_WAIT sockets. It runs on a locked OS thread
// inside the namespace, so every socket it opens belongs there.
// lns are its listening sockets, one per port.
func worker(c config, w, quota int, lns []int, deadline time.Time, done *atomic.Int64) error {
	dst := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	pending := make([]int, c.ports) // connections queued per listener
	made, seq := 0, 0
	for made < quota {
		if time.Now().After(deadline) {
			return fmt.Errorf("worker %d: timeout after %d of %d sockets", w, made, quota)
		}
		// One round: up to batch connections to each port, then drain.
		round := min(quota-made, c.batch*c.ports)
		for i := 0; i < round; i++ {
			// Every (port, destination) pair in turn: the port changes
			// every connection, the destination every c.ports.
			p := seq % c.ports
			dst.Port = c.basePort + w*c.ports + p
			dst.Addr[3] = byte(1 + (seq/c.ports)%c.dsts)
			seq++
			if err := connectClose(dst); err != nil {
				return fmt.Errorf("worker %d: connect to 127.0.0.%d:%d after %d sockets: %w", w, dst.Addr[3], dst.Port, made+i, err)
			}
			pending[p]++
		}
		for p, k := range pending {
			for ; k > 0; k-- {
				fd, _, err := unix.Accept4(lns[p], unix.SOCK_CLOEXEC)
				if err != nil {
					// With a receive timeout set, accept is not
					// restarted after Go's preemption signal.
					if err == unix.EINTR {
						k++
						continue
					}
					if err == unix.EAGAIN {
						err = fmt.Errorf("no connection within 10s: %w", err)
					}
					return fmt.Errorf("worker %d: accept on port %d: %w", w, c.basePort+w*c.ports+p, err)
				}
				// The client has already sent its FIN; this close sends
				// ours, moving the client to TIME_WAIT and the server end
				// through LAST_ACK to CLOSED.
				unix.Close(fd)
			}
			pending[p] = 0
		}
		made += round
		done.Add(int64(round))
	}
	return nil
}

// connectClose opens a client socket, connects it (a blocking connect over
// loopback completes within the call) and closes it, which sends the FIN.
func connectClose(dst *unix.SockaddrInet4) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	// Go installs its signal handlers with SA_RESTART, so EINTR is not
	// expected; if it comes, a second blocking connect waits for the
	// handshake already in flight and EISCONN means it had completed.
	for i := 0; i < 3; i++ {
		err = unix.Connect(fd, dst)
		if err != unix.EINTR {
			break
		}
	}
	if err == unix.EISCONN {
		err = nil
	}
	unix.Close(fd)
	return err
}

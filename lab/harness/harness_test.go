package harness

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestNamespaceIsolatesSysctl(t *testing.T) {
	ns := NewT(t)
	host, err := os.ReadFile("/proc/sys/net/ipv4/tcp_fin_timeout")
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Sysctl("net.ipv4.tcp_fin_timeout", "7"); err != nil {
		t.Fatal(err)
	}
	var inside []byte
	if err := ns.Run(func() (err error) {
		inside, err = os.ReadFile("/proc/sys/net/ipv4/tcp_fin_timeout")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(inside)) != "7" {
		t.Fatalf("inside namespace tcp_fin_timeout = %q, want 7", inside)
	}
	after, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_fin_timeout")
	if string(after) != string(host) {
		t.Fatalf("host tcp_fin_timeout changed from %q to %q", host, after)
	}
	if err := ns.Sysctl("kernel.pid_max", "1"); err == nil {
		t.Fatal("non-net sysctl accepted")
	}
}

func TestCleanStaleKeepsLiveRuns(t *testing.T) {
	ns := NewT(t)
	CleanStale(context.Background())
	if _, err := os.Stat(ns.Path()); err != nil {
		t.Fatalf("own namespace removed by CleanStale: %v", err)
	}
	// A namespace named after a pid that cannot exist is stale.
	stale := &Namespace{Name: Prefix + "2147483647-dead"}
	if _, err := run(context.Background(), "ip", "netns", "add", stale.Name); err != nil {
		t.Fatal(err)
	}
	CleanStale(context.Background())
	if _, err := os.Stat(stale.Path()); err == nil {
		stale.Remove(context.Background())
		t.Fatal("stale namespace not removed")
	}
}

func TestKeptNamespaceSurvivesCleanStale(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ns, err := NewKept(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Remove(context.Background())
	if !strings.HasPrefix(ns.Name, Prefix+"keep-") {
		t.Fatalf("kept namespace named %s", ns.Name)
	}
	CleanStale(context.Background())
	if _, err := os.Stat(ns.Path()); err != nil {
		t.Fatalf("kept namespace removed by CleanStale: %v", err)
	}
}

func TestWaitFor(t *testing.T) {
	ctx := context.Background()
	n := 0
	if err := WaitFor(ctx, time.Second, func() (bool, error) { n++; return n == 3, nil }); err != nil || n != 3 {
		t.Errorf("met on the 3rd poll: err %v after %d polls", err, n)
	}
	start := time.Now()
	err := WaitFor(ctx, 100*time.Millisecond, func() (bool, error) { return false, nil })
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "100ms") || time.Since(start) < 100*time.Millisecond {
		t.Errorf("never met: err %v after %v, want a timeout after 100ms", err, time.Since(start))
	}
	boom := errors.New("boom")
	n = 0
	if err := WaitFor(ctx, time.Second, func() (bool, error) { n++; return false, boom }); err != boom || n != 1 {
		t.Errorf("cond error: got %v after %d polls, want it at once", err, n)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := WaitFor(cctx, time.Minute, func() (bool, error) { return false, nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

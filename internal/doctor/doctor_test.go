package doctor

import (
	"context"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/tcplens/tcplens/lab/harness"
)

// diagnose takes one or two snapshots of ns and runs the named rules.
func diagnose(t *testing.T, ns *harness.Namespace, interval time.Duration, idle time.Duration, only ...string) *Report {
	t.Helper()
	r, err := Run(context.Background(), Options{Netns: ns.Name, Interval: interval, IdleTimeout: idle, Only: only})
	if err != nil {
		t.Fatalf("doctor: %v", err)
	}
	return r
}

func findings(r *Report, id string) []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.ID == id {
			out = append(out, f)
		}
	}
	return out
}

func subjectNames(f Finding) []string {
	var n []string
	for _, s := range f.Subjects {
		n = append(n, s.Name)
	}
	return n
}

// acceptLoop accepts on l until the test ends and hands each connection to
// handle; at the end it closes l and every connection it accepted.
func acceptLoop(t *testing.T, l net.Listener, handle func(net.Conn)) {
	t.Helper()
	var held []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
			handle(c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range held {
			c.Close()
		}
	})
}

// server accepts connections in ns and, when closeOnEOF, closes each one as
// soon as the client does; otherwise it holds them. It stops with the test.
func server(t *testing.T, ns *harness.Namespace, addr string, closeOnEOF bool) net.Listener {
	t.Helper()
	l, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	acceptLoop(t, l, func(c net.Conn) {
		if closeOnEOF {
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	})
	return l
}

func TestSelect(t *testing.T) {
	if _, err := Select([]string{"nope"}, nil); err == nil {
		t.Fatal("unknown rule accepted")
	}
	rs, err := Select(nil, []string{"port-exhaustion"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.ID() == "port-exhaustion" {
			t.Fatal("skipped rule selected")
		}
	}
	ids := map[string]bool{}
	for _, r := range Rules() {
		if ids[r.ID()] {
			t.Fatalf("duplicate rule id %s", r.ID())
		}
		ids[r.ID()] = true
	}
	if !slices.Equal([]string{"port-exhaustion"}, func() []string { rs, _ := Select([]string{"port-exhaustion"}, nil); return []string{rs[0].ID()} }()) {
		t.Fatal("only")
	}
}

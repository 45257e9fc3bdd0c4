package procs_test

import (
	"context"
	"net"
	"os"
	"testing"

	"github.com/tcplens/tcplens/internal/netns"
	"github.com/tcplens/tcplens/internal/procs"
	"github.com/tcplens/tcplens/lab/harness"
)

func TestInspectTCP(t *testing.T) {
	ns := harness.NewT(t)
	l, err := ns.Listen("tcp", "127.0.0.1:7300")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := ns.Dial(context.Background(), nil, "tcp", "127.0.0.1:7300")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	raw.Control(func(f uintptr) { fd = int(f) })

	want, err := netns.Inode(ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	got, err := procs.InspectTCP(os.Getpid(), fd)
	if err != nil {
		t.Fatal(err)
	}
	// The socket lives in the namespace, not in this process's own one.
	if got.Netns != want || got.State != 1 || got.SegsOut == 0 {
		t.Fatalf("got %+v, want namespace %d, ESTABLISHED (1), segments sent", got, want)
	}
	if _, err := procs.InspectTCP(os.Getpid(), 1<<20); err == nil {
		t.Fatal("a closed fd inspected without error")
	}
}

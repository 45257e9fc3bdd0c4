package procs_test

import (
	"context"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tcplens/tcplens/internal/procs"
	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/lab/harness"
)

func inode(t *testing.T, c syscall.Conn) uint32 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatalf("fstat: %v", serr)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		t.Fatalf("fd is not a socket: mode %o", st.Mode)
	}
	return uint32(st.Ino)
}

func TestScanProcOwnsNamespaceSockets(t *testing.T) {
	ns := harness.NewT(t)
	ln, err := ns.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := ns.Dial(context.Background(), nil, "tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	want := map[uint32]string{
		inode(t, ln.(*net.TCPListener)): "listener",
		inode(t, conn.(*net.TCPConn)):   "client",
		inode(t, srv.(*net.TCPConn)):    "server",
	}

	tab, err := procs.Scan(context.Background(), "/proc")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d processes, %d unreadable", len(tab.Procs), tab.Unreadable)

	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	for ino, what := range want {
		owners := tab.Owners(ino)
		if len(owners) != 1 || owners[0].PID != os.Getpid() {
			t.Errorf("%s socket %d: owners %v, want only pid %d", what, ino, owners, os.Getpid())
		}
	}
	me := tab.Procs[os.Getpid()]
	if me == nil {
		t.Fatalf("pid %d not in the table", os.Getpid())
	}
	if me.Comm != strings.TrimSpace(string(comm)) {
		t.Errorf("Comm = %q, want %q", me.Comm, comm)
	}
	if me.FDLimit != rl.Cur {
		t.Errorf("FDLimit = %d, want soft RLIMIT_NOFILE %d", me.FDLimit, rl.Cur)
	}
	if me.FDs < len(want) {
		t.Errorf("FDs = %d, want >= %d", me.FDs, len(want))
	}
	if !strings.HasPrefix(me.Cmdline, os.Args[0]) {
		t.Errorf("Cmdline = %q, want it to start with %q", me.Cmdline, os.Args[0])
	}
	for ino := range want {
		if !slices.Contains(me.SocketInodes, ino) {
			t.Errorf("SocketInodes %v lacks %d", me.SocketInodes, ino)
		}
	}

	// Every socket sock_diag reports with a file in the namespace is ours.
	err = ns.Run(func() error {
		d, err := sockdiag.Open()
		if err != nil {
			return err
		}
		defer d.Close()
		_, err = d.Dump(context.Background(), sockdiag.Request{}, func(s *sockdiag.Socket) error {
			if s.Inode == 0 {
				return nil
			}
			if o := tab.Owners(s.Inode); len(o) != 1 || o[0].PID != os.Getpid() {
				t.Errorf("dumped socket inode %d: owners %v", s.Inode, o)
			}
			return nil
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func BenchmarkScanProc(b *testing.B) {
	for b.Loop() {
		if _, err := procs.Scan(context.Background(), "/proc"); err != nil {
			b.Fatal(err)
		}
	}
}

package kernel_test

import (
	"errors"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tcplens/tcplens/internal/kernel"
	"github.com/tcplens/tcplens/lab/harness"
)

func readCounters(t *testing.T, ns *harness.Namespace) kernel.Counters {
	t.Helper()
	var c kernel.Counters
	run := func(fn func() error) error { return fn() }
	if ns != nil {
		run = ns.Run
	}
	if err := run(func() (err error) {
		c, err = kernel.ReadCounters()
		return err
	}); err != nil {
		t.Fatalf("ReadCounters: %v", err)
	}
	return c
}

// overflowListener fills the accept queue of a backlog-1 listener with
// non-blocking connects that nobody accepts; once it is full the kernel drops
// further SYNs and counts TcpExt.ListenOverflows. Raw sockets keep the Go
// runtime out of the way. It returns errors instead of failing the test
// because it runs inside ns.Run, where t.Fatal would strand the caller.
func overflowListener(t *testing.T, conns int) error {
	closeLater := func(fd int) { t.Cleanup(func() { unix.Close(fd) }) }
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	closeLater(ln)
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if err := unix.Listen(ln, 1); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	sa, err := unix.Getsockname(ln)
	if err != nil {
		return fmt.Errorf("getsockname: %w", err)
	}
	for range conns {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		closeLater(fd)
		if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
			return fmt.Errorf("connect: %w", err)
		}
	}
	return nil
}

func TestReadCountersNamespace(t *testing.T) {
	ns := harness.NewT(t)
	const conns = 20

	hostBefore := readCounters(t, nil)
	before := readCounters(t, ns)
	for _, k := range []string{"TcpExt.ListenOverflows", "Tcp.RetransSegs", "Tcp.AttemptFails", "IpExt.InOctets", "TcpExt.TCPTimeWaitOverflow", "Tcp.MaxConn"} {
		if _, ok := before[k]; !ok {
			t.Errorf("counter %s missing", k)
		}
	}
	if len(before) < 200 {
		t.Errorf("only %d counters, want every field of netstat and snmp", len(before))
	}
	if v := before.Get("Tcp.MaxConn"); v != -1 {
		t.Errorf("Tcp.MaxConn = %d, want -1", v)
	}
	if v := before.Get("Tcp.ActiveOpens"); v != 0 {
		t.Errorf("fresh namespace has Tcp.ActiveOpens = %d", v)
	}

	if err := ns.Run(func() error { return overflowListener(t, conns) }); err != nil {
		t.Fatal(err)
	}

	after := readCounters(t, ns)
	hostAfter := readCounters(t, nil)
	d := after.Delta(before)
	if got := d.Get("Tcp.ActiveOpens"); got != conns {
		t.Errorf("namespace Tcp.ActiveOpens delta = %d, want %d", got, conns)
	}
	if got := d.Get("TcpExt.ListenOverflows"); got < 1 {
		t.Errorf("namespace TcpExt.ListenOverflows delta = %d, want > 0", got)
	}
	if after.Get("TcpExt.ListenOverflows") != d.Get("TcpExt.ListenOverflows") {
		t.Errorf("fresh namespace did not start at 0 overflows: %d", before.Get("TcpExt.ListenOverflows"))
	}
	t.Logf("namespace: ListenOverflows +%d, ActiveOpens +%d", d.Get("TcpExt.ListenOverflows"), d.Get("Tcp.ActiveOpens"))
	// The sockets were all created in the namespace: the host's counters
	// read from the test's own thread must not see them.
	hd := hostAfter.Delta(hostBefore)
	if hd.Get("TcpExt.ListenOverflows") != 0 {
		t.Errorf("host TcpExt.ListenOverflows moved by %d", hd.Get("TcpExt.ListenOverflows"))
	}
}

func TestReadSysctlsNamespace(t *testing.T) {
	ns := harness.NewT(t)
	for k, v := range map[string]string{
		"net.ipv4.ip_local_port_range":     "40000 40099",
		"net.ipv4.tcp_tw_reuse":            "1",
		"net.ipv4.tcp_max_tw_buckets":      "50",
		"net.ipv4.ip_local_reserved_ports": "40010-40019,40050",
	} {
		if err := ns.Sysctl(k, v); err != nil {
			t.Fatal(err)
		}
	}
	var s kernel.Sysctls
	if err := ns.Run(func() (err error) {
		s, err = kernel.ReadSysctls()
		return err
	}); err != nil {
		t.Fatalf("ReadSysctls: %v", err)
	}
	if s.LocalPortRange != (kernel.PortRange{Lo: 40000, Hi: 40099}) {
		t.Errorf("LocalPortRange = %v", s.LocalPortRange)
	}
	want := []kernel.PortRange{{Lo: 40010, Hi: 40019}, {Lo: 40050, Hi: 40050}}
	if len(s.ReservedPorts) != 2 || s.ReservedPorts[0] != want[0] || s.ReservedPorts[1] != want[1] {
		t.Errorf("ReservedPorts = %v, want %v", s.ReservedPorts, want)
	}
	if s.TWReuse != 1 || s.MaxTWBuckets != 50 {
		t.Errorf("TWReuse = %d, MaxTWBuckets = %d", s.TWReuse, s.MaxTWBuckets)
	}
	if got := s.EphemeralPorts(); got != 89 {
		t.Errorf("EphemeralPorts = %d, want 89", got)
	}
	if s.IsEphemeral(40010) || !s.IsEphemeral(40020) || s.IsEphemeral(40100) {
		t.Error("IsEphemeral disagrees with the reserved ports")
	}
	if s.KeepaliveTime <= 0 || s.Retries2 <= 0 || s.Somaxconn <= 0 || s.MaxSynBacklog <= 0 || s.SynRetries <= 0 {
		t.Errorf("implausible defaults: %+v", s)
	}
	t.Logf("namespace sysctls: %+v", s)

	host, err := kernel.ReadSysctls()
	if err != nil {
		t.Fatalf("ReadSysctls on the host: %v", err)
	}
	if host.LocalPortRange == s.LocalPortRange || host.MaxTWBuckets == 50 {
		t.Errorf("host read returned the namespace's values: %+v", host)
	}
}

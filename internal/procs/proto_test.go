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

func TestSocketProtos(t *testing.T) {
	ns := harness.NewT(t)
	ln, err := ns.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := ns.Dial(context.Background(), &net.Dialer{}, "tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var udp net.PacketConn
	if err := ns.Run(func() (err error) { udp, err = net.ListenPacket("udp4", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer udp.Close()

	lino, cino, uino := inode(t, ln.(*net.TCPListener)), inode(t, conn.(*net.TCPConn)), inode(t, udp.(*net.UDPConn))
	got, err := procs.SocketProtos("/proc", os.Getpid(), []uint32{lino, cino, uino, 1})
	if err != nil {
		t.Fatal(err)
	}
	if got[cino] != "TCP" || got[uino] != "UDP" || !procs.IsTCPProto(got[lino]) || procs.IsTCPProto(got[uino]) {
		t.Errorf("protos %v: want TCP for the connection, UDP, and TCP or MPTCP for the listener", got)
	}
	if _, ok := got[1]; ok || len(got) != 3 {
		t.Errorf("protos %v: want exactly the three sockets held", got)
	}

	self, err := procs.NetnsInode("/proc", os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if want, err := netns.Inode(""); err != nil || self != want {
		t.Errorf("NetnsInode = %d, want %d (%v)", self, want, err)
	}
	if other, err := netns.Inode(ns.Name); err != nil || other == self {
		t.Errorf("namespace %s has inode %d, same as ours (%v)", ns.Name, other, err)
	}
}

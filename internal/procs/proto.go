package procs

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// This file holds optional, on-demand look-ups that Scan does not do: they
// cost a syscall per fd, so callers use them only for the few sockets they
// need to classify (for example, socket fds that no sock_diag dump lists).

// SocketProtos returns the protocol of each socket inode in want that pid
// holds, as the kernel names it in the "system.sockprotoname" xattr of the
// socket: "TCP", "TCPv6", "MPTCP", "UDP", "UNIX", "NETLINK", ... Inodes the
// process no longer holds are missing from the result. root is the proc
// mount, normally "/proc".
func SocketProtos(root string, pid int, want []uint32) (map[uint32]string, error) {
	if len(want) == 0 {
		return nil, nil
	}
	fds, err := SocketFDs(root, pid, want)
	if err != nil {
		return nil, err
	}
	out := make(map[uint32]string, len(fds))
	buf := make([]byte, 64)
	for ino, fd := range fds {
		link := filepath.Join(root, strconv.Itoa(pid), "fd", strconv.Itoa(fd))
		// getxattr follows the magic link to the socket inode in sockfs.
		n, err := unix.Getxattr(link, "system.sockprotoname", buf)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // closed meanwhile
			}
			return out, fmt.Errorf("protocol of %s: %w", link, err)
		}
		out[ino] = string(bytes.TrimRight(buf[:n], "\x00"))
	}
	return out, nil
}

// IsTCPProto reports whether a SocketProtos name is a TCP socket. MPTCP
// counts: Go listeners use it by default, and a connection that fell back
// to plain TCP still has an MPTCP socket behind the fd.
func IsTCPProto(name string) bool {
	return name == "TCP" || name == "TCPv6" || name == "MPTCP"
}

// NetnsInode returns the inode of the network namespace pid runs in, to
// compare with netns.Inode of the namespace being inspected.
func NetnsInode(root string, pid int) (uint64, error) {
	path := filepath.Join(root, strconv.Itoa(pid), "ns", "net")
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Ino, nil
}

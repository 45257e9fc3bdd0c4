package procs

import (
	"fmt"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// SocketFDs returns, for each socket inode in want that pid holds, one fd
// number that refers to it. root is the proc mount, normally "/proc".
func SocketFDs(root string, pid int, want []uint32) (map[uint32]int, error) {
	wanted := make(map[uint32]bool, len(want))
	for _, ino := range want {
		wanted[ino] = true
	}
	out := make(map[uint32]int)
	_, err := walkSocketFDs(filepath.Join(root, strconv.Itoa(pid), "fd"), func(fd int, ino uint32) {
		if _, seen := out[ino]; wanted[ino] && !seen {
			out[ino] = fd
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TCPSocket is what a socket fd says about itself.
type TCPSocket struct {
	// Netns is the inode of the network namespace the socket lives in,
	// which may differ from its process's (a thread that called setns).
	Netns uint64
	// State is tcpi_state (7 = CLOSE); SegsOut counts segments sent, so a
	// CLOSE socket with SegsOut > 0 was connected once (reset or timed
	// out), while one with none was only created or bound.
	State   uint8
	SegsOut uint32
}

// InspectTCP looks at fd of pid through a duplicate taken with
// pidfd_getfd(2); the owner's socket is not touched. It needs
// PTRACE_MODE_ATTACH rights over pid (root, or CAP_SYS_PTRACE).
func InspectTCP(pid, fd int) (TCPSocket, error) {
	var s TCPSocket
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return s, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	dup, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return s, fmt.Errorf("pidfd_getfd %d/%d: %w", pid, fd, err)
	}
	defer unix.Close(dup)
	nsfd, err := unix.IoctlRetInt(dup, unix.SIOCGSKNS)
	if err != nil {
		return s, fmt.Errorf("namespace of socket %d/%d: %w", pid, fd, err)
	}
	var st unix.Stat_t
	err = unix.Fstat(nsfd, &st)
	unix.Close(nsfd)
	if err != nil {
		return s, fmt.Errorf("namespace of socket %d/%d: %w", pid, fd, err)
	}
	s.Netns = st.Ino
	info, err := unix.GetsockoptTCPInfo(dup, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return s, fmt.Errorf("tcp_info of socket %d/%d: %w", pid, fd, err)
	}
	s.State, s.SegsOut = info.State, info.Segs_out
	return s, nil
}

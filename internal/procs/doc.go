// Package procs attributes sockets to processes: it walks /proc/PID/fd and
// maps each socket inode (the idiag_inode sock_diag reports) to the
// processes holding it.
//
// Why a separate, on-demand scan: the socket dump is cheap, the fd walk is
// not (one readlink per open fd on the host), so callers run Scan only when
// a finding needs owners. Why fds at all: a socket reset by the peer while
// its process still holds the fd vanishes from sock_diag but stays in
// /proc/PID/fd, so comparing a process's inodes with the dump finds those
// leaks, and FDs/FDLimit feed the fd-limit rule.
//
// Socket inodes are global (sockfs), so one scan of the host's /proc covers
// the sockets of every network namespace whose processes are visible in the
// caller's PID namespace.
package procs

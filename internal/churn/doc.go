// Package churn measures connection churn from the kernel's sock_diag
// destroy events: every full TCP socket of a network namespace, as it is
// destroyed, with its final tcp_info. Sampling (dumps every interval) misses
// connections that live less than the interval; these events do not.
//
// What the kernel sends (net/core/sock_diag.c, net/ipv4/inet_diag.c): a
// NETLINK_SOCK_DIAG socket that joined SKNLGRP_INET_TCP_DESTROY (1) or
// SKNLGRP_INET6_TCP_DESTROY (3) receives, for each socket destroyed in its
// namespace, one SOCK_DIAG_BY_FAMILY message built by
// inet_diag_handler_get_info: an inet_diag_msg with family, addresses,
// ports, interface and cookie, idiag_state, the queues, INET_DIAG_PROTOCOL
// and INET_DIAG_INFO (struct tcp_info). UID, inode, timer and the
// congestion algorithm are not filled in. The message is built from a
// workqueue after the last reference is dropped, so it arrives a moment
// after the close. A socket entering TIME_WAIT is reported in state CLOSE:
// the full socket is destroyed then and replaced by a timewait sock, which
// produces no event of its own. Joining needs no capability (the kernel
// socket has NL_CFG_F_NONROOT_RECV); entering another namespace does
// (CAP_SYS_ADMIN), and SO_RCVBUFFORCE needs CAP_NET_ADMIN.
//
// Lifetime: tcp_info has no start time and no age, and the socket's inode
// and owner are gone by the time the event is built. So both come from the
// snapshots a caller passes to Observe (the cookie is the join key): a
// connection first seen in a snapshot at t0 lived at least destroy − t0; one
// destroyed before any snapshot saw it lived less than the time since the
// previous snapshot (ShortLived) and contributes 0 to the lifetime lower
// bound. Lifetime percentiles are therefore lower bounds of the true
// percentiles, and owners are those of the most recent snapshots ("unknown"
// otherwise).
//
// Dropped events: when the receive buffer is full the kernel drops the event,
// counts it in the socket's drop counter and makes the next recvmsg fail with
// ENOBUFS. Listener counts both (the drop counter read from
// /proc/net/netlink gives the exact number) and every Window carries them, so
// a lossy window is never presented as complete.
package churn

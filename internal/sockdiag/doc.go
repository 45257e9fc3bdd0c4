// Package sockdiag dumps TCP sockets through NETLINK_SOCK_DIAG (INET_DIAG),
// the interface `ss` uses.
//
// The dump and the parser are written by hand rather than on top of a generic
// netlink library because they are the hot path: a host may hold a million
// TIME_WAIT sockets, and Dump hands each one to a callback as a reused
// *Socket without allocating per socket.
package sockdiag

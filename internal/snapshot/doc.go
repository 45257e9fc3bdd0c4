// Package snapshot captures one point in time of a network namespace: its
// TCP sockets, kernel counters and sysctls, and optionally the processes
// that own the sockets.
//
// TIME_WAIT sockets are tallied while they stream in rather than kept one
// by one: a busy host holds a million of them, they own no file and no
// process, and every analysis of them is a count per destination. Every
// other socket is kept in full.
package snapshot

// Package netns runs code inside another network namespace.
//
// Sockets, /proc/thread-self/net and /proc/sys/net all resolve against the
// namespace of the calling OS thread, so Run locks a thread, switches it with
// setns(2), runs the function and switches back. A thread that cannot be
// switched back is discarded instead of being returned to the Go scheduler.
package netns

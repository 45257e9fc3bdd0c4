// Package filter parses the socket filters of the command line (--state,
// --src, --dst, --sport, --dport, --process) and matches sockets against
// them. States become the kernel-side state mask, so unwanted states are
// never copied out of the kernel.
package filter

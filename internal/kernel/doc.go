// Package kernel reads the kernel state doctor reasons about besides the
// socket table: the SNMP/netstat counters and the TCP sysctls of one network
// namespace, plus a few pure helpers that turn those numbers into budgets.
//
// Why thread-self: /proc/net and /proc/self/net follow the thread-group
// leader's network namespace, so code running inside netns.Run on another
// (locked) thread would silently read the host's numbers. Everything here
// resolves through /proc/thread-self, and /proc/sys/net is looked up by the
// kernel in the calling thread's namespace too. To read another namespace,
// call ReadCounters and ReadSysctls inside netns.Run.
//
// Why counters are a map: the kernel adds fields to /proc/net/netstat in
// almost every release. Keeping every field keyed "Section.Field" means new
// rules never need a parser change, and an older kernel just lacks keys
// (Get returns 0).
package kernel

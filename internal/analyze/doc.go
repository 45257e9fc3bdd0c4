// Package analyze turns a snapshot into aggregates: per-destination and
// per-process counts, listener queues, and the ephemeral port budget per
// (source IP, destination IP, destination port). Summary and doctor both
// read these, so the numbers a user sees agree everywhere.
package analyze

// Package watch samples a network namespace continuously: a snapshot every
// interval, each one diagnosed against the one before. `tcplens top`,
// `record` and `serve` all read these samples, so they show the same
// numbers and findings as `tcplens doctor`.
package watch

// Package doctor turns snapshots into findings: what is wrong with this
// host's TCP connections, the numbers that prove it, why the kernel behaves
// that way and what to change.
//
// Each rule lives in its own file and implements Rule. Rules are listed
// explicitly in Rules (no init-time registration), so the set a binary runs
// is visible in one place. Rule ids are a contract with scripts and alerts:
// add new ones, never rename one.
package doctor

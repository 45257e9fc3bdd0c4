// Package lab reproduces TCP connection problems on the real kernel, inside
// throw-away network namespaces, shows what tcplens sees, applies the fix
// and measures that the problem is gone.
//
// Each scenario is also an end-to-end test of doctor and pool: its Go test
// asserts the numbers the scenario is about (error counts, counter deltas,
// finding ids), not merely that it ran.
package lab

// Package harness creates and removes throw-away network namespaces for the
// lab scenarios and for tests that need real kernel state.
//
// Every namespace is named "tl-<pid>-<random>" so that a later run can remove
// the namespaces of a run that was killed (its pid is gone) without touching
// those of a run still going. Sysctls and firewall rules are only ever
// changed inside a namespace created here, never on the host.
package harness

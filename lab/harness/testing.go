package harness

import (
	"context"
	"os"
	"testing"
)

// NewT creates a namespace for a test and removes it when the test ends.
// The test is skipped when not running as root.
func NewT(t testing.TB) *Namespace {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	ns, err := New(context.Background())
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := ns.Remove(context.Background()); err != nil {
			t.Errorf("remove namespace: %v", err)
		}
	})
	return ns
}

package netns_test

import (
	"strings"
	"testing"

	"github.com/tcplens/tcplens/internal/netns"
	"github.com/tcplens/tcplens/lab/harness"
)

func TestRunEntersAndLeaves(t *testing.T) {
	ns := harness.NewT(t)
	host, err := netns.Inode("")
	if err != nil {
		t.Fatal(err)
	}
	byName, err := netns.Inode(ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	byPath, err := netns.Inode(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	if byName == host || byName != byPath {
		t.Fatalf("host %d, by name %d, by path %d: want the namespace to differ from the host and both spellings to agree", host, byName, byPath)
	}
	again, _ := netns.Inode("")
	if again != host {
		t.Fatalf("caller's namespace changed from %d to %d", host, again)
	}
}

func TestRunErrors(t *testing.T) {
	if err := netns.Run("tl-no-such-namespace", func() error { return nil }); err == nil || !strings.Contains(err.Error(), "tl-no-such-namespace") {
		t.Fatalf("missing namespace: %v", err)
	}
	if err := netns.Run("/proc/self/status", func() error { return nil }); err == nil || !strings.Contains(err.Error(), "not a network namespace") {
		t.Fatalf("not a namespace: %v", err)
	}
	if _, err := netns.Resolve(".."); err == nil {
		t.Fatal("'..' accepted as a name")
	}
}

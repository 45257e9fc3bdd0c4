package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Dir is where `ip netns add` bind-mounts named namespaces.
const Dir = "/run/netns"

// Resolve turns a namespace name (from /run/netns) or a path such as
// /proc/PID/ns/net into a path. An empty string means the caller's namespace.
func Resolve(ns string) (string, error) {
	if ns == "" {
		return "", nil
	}
	if strings.ContainsRune(ns, '/') {
		return ns, nil
	}
	if ns == "." || ns == ".." {
		return "", fmt.Errorf("invalid network namespace name %q", ns)
	}
	return filepath.Join(Dir, ns), nil
}

// Run calls fn with the calling goroutine's OS thread inside the network
// namespace ns (a name or a path). With ns == "" fn runs as is.
func Run(ns string, fn func() error) error {
	path, err := Resolve(ns)
	if err != nil {
		return err
	}
	if path == "" {
		return fn()
	}
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", ns, err)
	}
	defer target.Close()

	errc := make(chan error, 1)
	// A fresh goroutine, so the caller's thread is never switched; if restoring
	// fails the goroutine exits still locked and the runtime kills its thread.
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			if errors.Is(err, unix.EINVAL) {
				errc <- fmt.Errorf("enter network namespace %s: not a network namespace", ns)
				return
			}
			errc <- fmt.Errorf("enter network namespace %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("restore network namespace: %w", err))
			return // thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Inode returns the namespace inode of ns ("" for the caller's), which
// identifies a namespace independently of how it was named.
func Inode(ns string) (uint64, error) {
	var ino uint64
	err := Run(ns, func() error {
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return fmt.Errorf("stat network namespace: %w", err)
		}
		ino = st.Ino
		return nil
	})
	return ino, err
}

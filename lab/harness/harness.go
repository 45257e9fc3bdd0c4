package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tcplens/tcplens/internal/netns"
)

// Prefix starts the name of every namespace the harness creates.
const Prefix = "tl-"

// Namespace is a network namespace created by New. Remove deletes it.
type Namespace struct {
	Name string
}

// New removes stale namespaces of dead runs, then creates a namespace with
// the loopback interface up.
func New(ctx context.Context) (*Namespace, error) {
	return create(ctx, strconv.Itoa(os.Getpid()))
}

// NewKept creates a namespace meant to outlive this process (lab --keep):
// it is named tl-keep-<random>, which CleanStale never removes.
func NewKept(ctx context.Context) (*Namespace, error) {
	return create(ctx, "keep")
}

func create(ctx context.Context, owner string) (*Namespace, error) {
	CleanStale(ctx)
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		return nil, fmt.Errorf("random namespace name: %w", err)
	}
	ns := &Namespace{Name: fmt.Sprintf("%s%s-%s", Prefix, owner, hex.EncodeToString(r[:]))}
	if _, err := run(ctx, "ip", "netns", "add", ns.Name); err != nil {
		return nil, err
	}
	if _, err := run(ctx, "ip", "-n", ns.Name, "link", "set", "lo", "up"); err != nil {
		ns.Remove(context.Background())
		return nil, err
	}
	return ns, nil
}

// Remove deletes the namespace. Sockets still open in it keep it alive in
// the kernel until they close, but its name is gone.
func (n *Namespace) Remove(ctx context.Context) error {
	_, err := run(ctx, "ip", "netns", "del", n.Name)
	return err
}

// Path is the bind mount of the namespace.
func (n *Namespace) Path() string { return filepath.Join(netns.Dir, n.Name) }

// Run calls fn on a thread inside the namespace. Sockets created by fn stay
// in the namespace for their whole life.
func (n *Namespace) Run(fn func() error) error { return netns.Run(n.Name, fn) }

// Sysctl writes a sysctl inside the namespace, key like
// "net.ipv4.tcp_tw_reuse". Only per-namespace (net.*) keys are accepted, so
// the host can never be changed by mistake.
func (n *Namespace) Sysctl(key, value string) error {
	if !strings.HasPrefix(key, "net.") {
		return fmt.Errorf("sysctl %s: only net.* keys are namespaced", key)
	}
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	return n.Run(func() error {
		if err := os.WriteFile(path, []byte(value), 0); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
		}
		return nil
	})
}

// Exec runs a command inside the namespace and returns its stdout.
func (n *Namespace) Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	return run(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Nft loads an nftables ruleset (nft -f syntax) inside the namespace.
func (n *Namespace) Nft(ctx context.Context, ruleset string) error {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", n.Name, err, bytes.TrimSpace(out))
	}
	return nil
}

// Listen opens a listener inside the namespace.
func (n *Namespace) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Run(func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// Dial connects from inside the namespace.
func (n *Namespace) Dial(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
	if d == nil {
		d = &net.Dialer{}
	}
	var c net.Conn
	err := n.Run(func() (err error) {
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// CleanStale deletes tl-<pid>-* namespaces whose pid no longer runs.
func CleanStale(ctx context.Context) {
	entries, err := os.ReadDir(netns.Dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), Prefix)
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() || alive(pid) {
			continue
		}
		_, _ = run(ctx, "ip", "netns", "del", e.Name())
	}
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// Link joins two namespaces with a veth pair: interface ifA with address
// addrA (CIDR) in a, ifB with addrB in b. Interface names are local to
// each namespace, so they never collide with the host's.
func Link(ctx context.Context, a *Namespace, ifA, addrA string, b *Namespace, ifB, addrB string) error {
	steps := [][]string{
		{"-n", a.Name, "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", b.Name},
		{"-n", a.Name, "addr", "add", addrA, "dev", ifA},
		{"-n", b.Name, "addr", "add", addrB, "dev", ifB},
		{"-n", a.Name, "link", "set", ifA, "up"},
		{"-n", b.Name, "link", "set", ifB, "up"},
	}
	for _, s := range steps {
		if _, err := run(ctx, "ip", s...); err != nil {
			return err
		}
	}
	return nil
}

// Route adds a route inside the namespace, e.g. Route(ctx, "default", "192.0.2.1").
func (n *Namespace) Route(ctx context.Context, dst, via string) error {
	_, err := run(ctx, "ip", "-n", n.Name, "route", "add", dst, "via", via)
	return err
}

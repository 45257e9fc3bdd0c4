package procs

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const limitsFmt = `Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max processes             96365                96365                processes 
Max open files            %s                %s                files     
Max locked memory         8388608              8388608              bytes     
`

func limits(soft string) string {
	return strings.Replace(strings.Replace(limitsFmt, "%s", soft, 1), "%s", "1048576", 1)
}

// fakeProc writes root/PID with comm, cmdline, limits and fd symlinks.
func fakeProc(t *testing.T, root string, pid int, comm, cmdline, lim string, fds map[string]string) {
	t.Helper()
	dir := filepath.Join(root, strconv.Itoa(pid))
	must(t, os.MkdirAll(filepath.Join(dir, "fd"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "comm"), []byte(comm+"\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "cmdline"), []byte(cmdline), 0o644))
	if lim != "" {
		must(t, os.WriteFile(filepath.Join(dir, "limits"), []byte(lim), 0o644))
	}
	for fd, target := range fds {
		must(t, os.Symlink(target, filepath.Join(dir, "fd", fd)))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestScanFakeRoot(t *testing.T) {
	root := t.TempDir()
	longArg := strings.Repeat("x", 300)
	fakeProc(t, root, 100, "server", "/usr/bin/server\x00-p\x008080\x00", limits("1024"), map[string]string{
		"0": "/dev/null",
		"3": "socket:[123]",
		"4": "socket:[123]", // dup of fd 3
		"5": "socket:[7]",
		"6": "pipe:[99]",
		"7": "anon_inode:[eventpoll]",
		"8": "socket:[4294967295]",
		"9": "socket:[4294967296]", // out of range: not a socket inode
	})
	fakeProc(t, root, 200, "worker", "worker\x00"+longArg+"\x00", limits("unlimited"), map[string]string{
		"1": "socket:[7]", // shared with 100 (inherited over fork)
	})
	fakeProc(t, root, 300, "nolimits", "", "", nil) // no limits file, no fds
	// 400 cannot be read: a regular file where the fd directory should be.
	must(t, os.MkdirAll(filepath.Join(root, "400"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "400", "comm"), []byte("hidden\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "400", "fd"), nil, 0o644))
	// 500 exited: its directory is empty, so it must be skipped silently.
	must(t, os.MkdirAll(filepath.Join(root, "500"), 0o755))
	// Non-PID entries are ignored.
	must(t, os.MkdirAll(filepath.Join(root, "net"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "uptime"), []byte("1 1\n"), 0o644))

	tab, err := Scan(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	if tab.Unreadable != 1 {
		t.Errorf("Unreadable = %d, want 1", tab.Unreadable)
	}
	// Tests run as root: the note must not tell root to run as root.
	if note := tab.UnreadableNote(); !tab.AsRoot || !strings.Contains(note, "even as root") {
		t.Errorf("as root (%v): note %q", tab.AsRoot, note)
	}
	tab.AsRoot = false
	if note := tab.UnreadableNote(); !strings.HasPrefix(note, "1 processes could not be inspected (run as root") {
		t.Errorf("not root: note %q", note)
	}
	if len(tab.Procs) != 3 {
		t.Fatalf("got %d processes, want 100, 200 and 300: %v", len(tab.Procs), tab.Procs)
	}

	p := tab.Procs[100]
	if p.Comm != "server" || p.Cmdline != "/usr/bin/server -p 8080" || p.FDs != 8 || p.FDLimit != 1024 {
		t.Errorf("process 100 = %+v", *p)
	}
	if want := []uint32{7, 123, 4294967295}; !slices.Equal(p.SocketInodes, want) {
		t.Errorf("process 100 sockets = %v, want %v", p.SocketInodes, want)
	}
	w := tab.Procs[200]
	if w.FDLimit != math.MaxUint64 || w.FDs != 1 || len(w.Cmdline) != MaxCmdline || !strings.HasPrefix(w.Cmdline, "worker xxx") {
		t.Errorf("process 200 = %+v", *w)
	}
	if n := tab.Procs[300]; n.FDLimit != 0 || n.FDs != 0 || n.SocketInodes != nil || n.Cmdline != "" || n.Comm != "nolimits" {
		t.Errorf("process 300 = %+v", *n)
	}

	pids := func(ps []*Process) []int {
		var out []int
		for _, p := range ps {
			out = append(out, p.PID)
		}
		return out
	}
	if got := pids(tab.Owners(7)); !slices.Equal(got, []int{100, 200}) {
		t.Errorf("Owners(7) = %v, want [100 200]", got)
	}
	if got := pids(tab.Owners(123)); !slices.Equal(got, []int{100}) {
		t.Errorf("Owners(123) = %v, want [100] once", got)
	}
	if got := tab.Owners(99); got != nil {
		t.Errorf("Owners(99) (a pipe) = %v, want nil", got)
	}
	var nilTab *Table
	if nilTab.Owners(7) != nil {
		t.Error("nil table has owners")
	}
}

func TestScanErrors(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	root := t.TempDir()
	fakeProc(t, root, 1, "init", "", "", nil)
	if _, err := Scan(ctx, root); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled scan: err = %v, want context.Canceled", err)
	}
	if _, err := Scan(context.Background(), filepath.Join(root, "missing")); err == nil {
		t.Error("scan of a missing root succeeded")
	}
}

func TestParseSocketLink(t *testing.T) {
	good := map[string]uint32{"socket:[0]": 0, "socket:[12345]": 12345, "socket:[4294967295]": math.MaxUint32}
	for in, want := range good {
		if got, ok := parseSocketLink(in); !ok || got != want {
			t.Errorf("parseSocketLink(%q) = %d, %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "socket:[]", "socket:[-1]", "socket:[+1]", "socket:[4294967296]", "socket:[12", "socket:12]",
		"pipe:[12]", "socket:[1 ]", "socket:[0x1]", "/tmp/socket:[1]", "anon_inode:[eventpoll]"} {
		if got, ok := parseSocketLink(in); ok {
			t.Errorf("parseSocketLink(%q) = %d, want no socket", in, got)
		}
	}
}

func TestParseNOFILE(t *testing.T) {
	cases := map[string]struct {
		v  uint64
		ok bool
	}{
		limits("1024"):                {1024, true},
		limits("unlimited"):           {math.MaxUint64, true},
		limits("-1"):                  {0, false},
		limits("lots"):                {0, false},
		"":                            {0, false},
		"Max open files\n":            {0, false},
		"Max open filesx 5 5 files\n": {0, false},
		"Max open files 18446744073709551615 x files": {math.MaxUint64, true},
		"Max open files 18446744073709551616 x files": {0, false},
	}
	for in, want := range cases {
		v, ok := parseNOFILE([]byte(in))
		if v != want.v || ok != want.ok {
			t.Errorf("parseNOFILE(%q) = %d, %v, want %d, %v", in, v, ok, want.v, want.ok)
		}
	}
	self, err := os.ReadFile("/proc/self/limits")
	if err != nil {
		t.Skip(err)
	}
	if _, ok := parseNOFILE(self); !ok {
		t.Errorf("cannot parse /proc/self/limits:\n%s", self)
	}
}

func TestJoinCmdline(t *testing.T) {
	if got := joinCmdline([]string{"a", "b c"}); got != "a b c" {
		t.Errorf("got %q", got)
	}
	// A 3-byte rune straddling the limit is dropped whole.
	args := []string{strings.Repeat("a", MaxCmdline-1) + "€"}
	if got := joinCmdline(args); got != strings.Repeat("a", MaxCmdline-1) {
		t.Errorf("got %d bytes %q...", len(got), got[len(got)-4:])
	}
}

func FuzzParseSocketLink(f *testing.F) {
	for _, s := range []string{"socket:[1]", "socket:[]", "socket:[4294967296]", "pipe:[1]", "socket:[-0]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		ino, ok := parseSocketLink(in)
		if !ok {
			return
		}
		if in != "socket:["+strconv.FormatUint(uint64(ino), 10)+"]" && !strings.HasPrefix(in, "socket:[0") {
			t.Fatalf("%q parsed as %d", in, ino)
		}
	})
}

func FuzzParseNOFILE(f *testing.F) {
	f.Add(limits("1024"))
	f.Add(limits("unlimited"))
	f.Add("Max open files")
	f.Add("Max open files\t\t1 2")
	f.Fuzz(func(t *testing.T, in string) {
		v, ok := parseNOFILE([]byte(in))
		if !ok && v != 0 {
			t.Fatalf("%q: failure with value %d", in, v)
		}
	})
}

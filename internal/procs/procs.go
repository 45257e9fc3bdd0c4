package procs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/prometheus/procfs"
)

// MaxCmdline bounds Process.Cmdline in bytes.
const MaxCmdline = 256

// Process is one process and the sockets it holds.
type Process struct {
	PID          int
	Comm         string   // /proc/PID/comm
	Cmdline      string   // args joined by spaces, truncated to MaxCmdline bytes
	FDs          int      // open fds
	FDLimit      uint64   // soft RLIMIT_NOFILE from /proc/PID/limits (0 = unknown, math.MaxUint64 = unlimited)
	SocketInodes []uint32 // inodes of every socket:[N] fd, sorted, deduplicated
}

// Table maps socket inodes to the processes holding them. Processes whose
// fd directory could not be read are not in Procs; they are only counted in
// Unreadable.
type Table struct {
	Procs   map[int]*Process
	byInode map[uint32][]*Process
	// Unreadable counts processes whose fd dir could not be read (not root,
	// or another error than the process exiting), so the caller can say
	// "N processes not visible, run as root".
	Unreadable int
	// AsRoot says the scan ran with effective uid 0, so Unreadable
	// processes are hidden by something root cannot pass (a security
	// module, a container runtime's protected init), not by permissions
	// root would have.
	AsRoot bool
}

// UnreadableNote explains Unreadable in one line, or returns "" when every
// process could be read.
func (t *Table) UnreadableNote() string {
	if t == nil || t.Unreadable == 0 {
		return ""
	}
	n := strconv.Itoa(t.Unreadable)
	if t.AsRoot {
		return n + " processes could not be inspected even as root (their /proc/PID/fd links are protected, e.g. by a security module or a container's init): their sockets have no owner"
	}
	return n + " processes could not be inspected (run as root to see every socket owner)"
}

// Owners returns the processes holding the socket inode, sorted by PID, or
// nil for an unknown inode or 0 (a socket no file refers to, such as
// TIME_WAIT or an orphan). The slice must not be modified.
func (t *Table) Owners(inode uint32) []*Process {
	if t == nil || inode == 0 {
		return nil
	}
	return slices.Clip(t.byInode[inode])
}

// Scan walks root ("/proc" in production) and maps socket inodes to
// processes. Processes that exit mid-scan are skipped silently; fd
// directories that cannot be read for any other reason count into
// Unreadable. Cancelling ctx stops the scan between two processes.
func Scan(ctx context.Context, root string) (*Table, error) {
	pfs, err := procfs.NewFS(root)
	if err != nil {
		return nil, fmt.Errorf("open proc fs %s: %w", root, err)
	}
	all, err := pfs.AllProcs()
	if err != nil {
		return nil, fmt.Errorf("list processes in %s: %w", root, err)
	}
	sort.Sort(all) // by PID, so Owners is ordered

	t := &Table{
		Procs:   make(map[int]*Process, len(all)),
		byInode: make(map[uint32][]*Process),
		AsRoot:  os.Geteuid() == 0,
	}
	for _, p := range all {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("scan %s: %w", root, err)
		}
		dir := filepath.Join(root, strconv.Itoa(p.PID))
		proc, err := scanProc(p, dir)
		if err != nil {
			if gone(err) {
				continue
			}
			t.Unreadable++
			continue
		}
		t.Procs[proc.PID] = proc
		for _, ino := range proc.SocketInodes {
			t.byInode[ino] = append(t.byInode[ino], proc)
		}
	}
	return t, nil
}

// scanProc reads one process; the error is from its fd directory, or from
// comm when the process vanished between the two.
func scanProc(p procfs.Proc, dir string) (*Process, error) {
	fdCount, inodes, err := readFDs(filepath.Join(dir, "fd"))
	if err != nil {
		return nil, err
	}
	proc := &Process{PID: p.PID, FDs: fdCount, SocketInodes: inodes}
	comm, err := p.Comm()
	if err != nil && gone(err) {
		return nil, err
	}
	proc.Comm = comm
	if args, err := p.CmdLine(); err == nil {
		proc.Cmdline = joinCmdline(args)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "limits")); err == nil {
		proc.FDLimit, _ = parseNOFILE(b)
	}
	return proc, nil
}

// readFDs counts the entries of an fd directory and collects the socket
// inodes among them.
func readFDs(fdDir string) (int, []uint32, error) {
	var inodes []uint32
	n, err := walkSocketFDs(fdDir, func(_ int, ino uint32) { inodes = append(inodes, ino) })
	if err != nil {
		return 0, nil, err
	}
	slices.Sort(inodes)
	return n, slices.Compact(inodes), nil
}

// walkSocketFDs calls fn for every fd of an fd directory that is a socket
// and returns the number of entries. Readdirnames avoids the sort and lstat
// of os.ReadDir; fds closed between the listing and the readlink are
// skipped.
func walkSocketFDs(fdDir string, fn func(fd int, ino uint32)) (int, error) {
	d, err := os.Open(fdDir)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", fdDir, err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", fdDir, err)
	}
	for _, name := range names {
		target, err := os.Readlink(fdDir + "/" + name)
		if err != nil {
			// Listing the directory may be allowed (CAP_DAC_READ_SEARCH)
			// while reading the links is not (no CAP_SYS_PTRACE): the
			// process is then not visible, and must be counted as such.
			if errors.Is(err, fs.ErrPermission) {
				return 0, fmt.Errorf("read %s: %w", fdDir, err)
			}
			continue // closed meanwhile
		}
		if ino, ok := parseSocketLink(target); ok {
			fd, _ := strconv.Atoi(name)
			fn(fd, ino)
		}
	}
	return len(names), nil
}

// gone reports whether err means the process exited while we looked.
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH)
}

// parseSocketLink parses an fd link target "socket:[12345]".
func parseSocketLink(target string) (uint32, bool) {
	s, ok := strings.CutPrefix(target, "socket:[")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, "]")
	if !ok || s == "" || s[0] < '0' || s[0] > '9' {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(v), true
}

// parseNOFILE returns the soft limit of the "Max open files" line of
// /proc/PID/limits; "unlimited" is math.MaxUint64.
func parseNOFILE(limits []byte) (uint64, bool) {
	const key = "Max open files"
	for line := range strings.Lines(string(limits)) {
		rest, ok := strings.CutPrefix(line, key)
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 || (rest[0] != ' ' && rest[0] != '\t') {
			return 0, false
		}
		if f[0] == "unlimited" {
			return math.MaxUint64, true
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, false
		}
		return v, true
	}
	return 0, false
}

// joinCmdline joins args with spaces and cuts the result to MaxCmdline
// bytes without splitting a UTF-8 sequence.
func joinCmdline(args []string) string {
	s := strings.Join(args, " ")
	if len(s) <= MaxCmdline {
		return s
	}
	cut := MaxCmdline
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// NewTable indexes processes by the socket inodes they hold, as Scan does;
// it lets tests and tools build a table without walking /proc.
func NewTable(ps []*Process) *Table {
	t := &Table{Procs: make(map[int]*Process, len(ps)), byInode: make(map[uint32][]*Process)}
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b *Process) int { return a.PID - b.PID })
	for _, p := range ps {
		t.Procs[p.PID] = p
		for _, ino := range p.SocketInodes {
			t.byInode[ino] = append(t.byInode[ino], p)
		}
	}
	return t
}

package churn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tcplens/tcplens/internal/netns"
	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// Multicast groups of NETLINK_SOCK_DIAG (include/uapi/linux/sock_diag.h).
const (
	groupInetTCPDestroy  = 1 // SKNLGRP_INET_TCP_DESTROY
	groupInet6TCPDestroy = 3 // SKNLGRP_INET6_TCP_DESTROY

	sockDiagByFamily = 20
	sizeofNlmsg      = 16
)

// Config configures a Listener. The zero value listens in the caller's
// namespace with the defaults.
type Config struct {
	Netns string // name in /run/netns or a path; "" for the caller's
	// RcvBuf is the receive buffer in bytes (default 32 MiB). It is forced
	// past net.core.rmem_max with SO_RCVBUFFORCE when the caller has
	// CAP_NET_ADMIN. Each event costs about 2 KiB of it, so 32 MiB absorbs a
	// burst of about 15,000 events while the reader is descheduled.
	RcvBuf int
	// Top is how many destinations and processes a Window lists before
	// folding the rest into "other" (default 100).
	Top int
	// MaxKeys caps the destinations and processes tracked within one window
	// (default 10,000); closes to further ones are counted as "other" at
	// once.
	MaxKeys int
}

// Listener receives destroy events of one network namespace and aggregates
// them into windows. Swap, Observe and Close may be called from any
// goroutine.
type Listener struct {
	cfg    Config
	f      *os.File
	rc     syscall.RawConn
	ino    uint64
	rcvbuf int
	procf  *os.File // /proc/net/netlink of the namespace, for the drop counter

	done    chan struct{}
	closing atomic.Bool
	stop    func() bool

	events   atomic.Uint64
	overruns atomic.Uint64

	mu         sync.Mutex // guards everything below; held per datagram
	acc        *acc
	cur, prev  *gen // cookies of the last two snapshots
	listening  *[1024]uint64
	observed   bool
	dropsBase  uint64
	startDrops uint64 // the drop counter at Listen
	err        error

	omu sync.Mutex // serialises Observe
	smu sync.Mutex // serialises Swap
}

// Listen joins the TCP destroy groups of the namespace cfg.Netns. The
// listener runs until Close is called or ctx ends.
func Listen(ctx context.Context, cfg Config) (*Listener, error) {
	if cfg.RcvBuf <= 0 {
		cfg.RcvBuf = 32 << 20
	}
	if cfg.Top <= 0 {
		cfg.Top = 100
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 10000
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l := &Listener{cfg: cfg, done: make(chan struct{}), listening: new([1024]uint64)}
	fd := -1
	err := netns.Run(cfg.Netns, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_SOCK_DIAG)
		if err != nil {
			return fmt.Errorf("open sock_diag socket: %w", err)
		}
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, cfg.RcvBuf) != nil {
			// Without CAP_NET_ADMIN the kernel caps this at rmem_max.
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, cfg.RcvBuf)
		}
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return fmt.Errorf("bind sock_diag socket: %w", err)
		}
		for _, g := range []int{groupInetTCPDestroy, groupInet6TCPDestroy} {
			if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, g); err != nil {
				return fmt.Errorf("join sock_diag destroy group %d: %w", g, err)
			}
		}
		// Opened inside the namespace, the file keeps listing its sockets.
		if f, err := os.Open("/proc/thread-self/net/netlink"); err == nil {
			l.procf = f
		}
		return l.dumpListeners(ctx)
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		if l.procf != nil {
			l.procf.Close()
		}
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err == nil {
		l.ino = st.Ino
	}
	l.rcvbuf, _ = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	// A non-blocking fd makes the File pollable: the reader waits in the
	// runtime's netpoller and Close wakes it.
	l.f = os.NewFile(uintptr(fd), "sock_diag-destroy")
	if l.rc, err = l.f.SyscallConn(); err != nil {
		l.f.Close()
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	now := time.Now()
	l.acc = newAcc(now, cfg.MaxKeys)
	l.dropsBase, _ = l.readDrops()
	l.startDrops = l.dropsBase
	go l.run()
	l.stop = context.AfterFunc(ctx, func() { l.Close() })
	return l, nil
}

// dumpListeners learns the listening ports, so that closes of accepted
// connections are grouped by listener from the first event on. Observe
// refreshes them.
func (l *Listener) dumpListeners(ctx context.Context) error {
	d, err := sockdiag.Open()
	if err != nil {
		return err
	}
	defer d.Close()
	_, err = d.Dump(ctx, sockdiag.Request{States: sockdiag.MaskOf(sockdiag.Listen)}, func(sk *sockdiag.Socket) error {
		p := sk.Local.Port()
		l.listening[p>>6] |= 1 << (p & 63)
		return nil
	})
	if err != nil {
		return fmt.Errorf("dump listening sockets: %w", err)
	}
	return nil
}

// RcvBuf returns the receive buffer the kernel granted, in bytes.
func (l *Listener) RcvBuf() int { return l.rcvbuf }

// Events returns the number of destroy events processed since Listen.
func (l *Listener) Events() uint64 { return l.events.Load() }

// Dropped returns the number of destroy events lost since Listen: from the
// socket's drop counter when /proc/net/netlink can be read (exact), else the
// number of ENOBUFS errors, each of which stands for at least one lost
// event.
func (l *Listener) Dropped() (n uint64, exact bool) {
	l.smu.Lock() // readDrops seeks the shared /proc file
	defer l.smu.Unlock()
	if d, err := l.readDrops(); err == nil {
		return d - l.startDrops, true // the windows count from startDrops too
	}
	return l.overruns.Load(), false
}

// Err returns the error that stopped the reader, if any.
func (l *Listener) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Close stops the reader and releases the socket.
func (l *Listener) Close() error {
	if !l.closing.CompareAndSwap(false, true) {
		<-l.done
		return nil
	}
	if l.stop != nil {
		l.stop()
	}
	err := l.f.Close() // wakes the reader
	<-l.done
	if l.procf != nil {
		l.procf.Close()
	}
	return err
}

// run reads datagrams until the socket is closed.
func (l *Listener) run() {
	defer close(l.done)
	buf := make([]byte, 64<<10)
	var sk sockdiag.Socket
	var in sockdiag.Interner
	var fatal error
	err := l.rc.Read(func(fd uintptr) bool {
		for {
			n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
				unix.MSG_DONTWAIT|unix.MSG_TRUNC, 0, 0)
			switch errno {
			case 0:
				l.handle(buf[:min(int(n), len(buf))], int(n) > len(buf), time.Now(), &sk, &in)
			case unix.EINTR:
			case unix.EAGAIN:
				return false // wait in the netpoller
			case unix.ENOBUFS:
				// The kernel dropped events; count it and keep reading.
				l.overruns.Add(1)
				l.mu.Lock()
				l.acc.overruns++
				l.mu.Unlock()
			default:
				fatal = fmt.Errorf("receive sock_diag destroy events: %w", errno)
				return true
			}
		}
	})
	if fatal == nil && err != nil && !l.closing.Load() {
		fatal = fmt.Errorf("receive sock_diag destroy events: %w", err)
	}
	if fatal != nil {
		l.mu.Lock()
		l.err = fatal
		l.mu.Unlock()
	}
}

// handle walks the netlink messages of one datagram (a multicast datagram
// holds one, but nothing promises it).
func (l *Listener) handle(b []byte, truncated bool, now time.Time, sk *sockdiag.Socket, in *sockdiag.Interner) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if truncated {
		l.acc.unparsed++
		return
	}
	for len(b) >= sizeofNlmsg {
		mlen := int(le32(b[0:4]))
		typ := uint16(b[4]) | uint16(b[5])<<8
		if mlen < sizeofNlmsg || mlen > len(b) {
			l.acc.unparsed++
			return
		}
		payload := b[sizeofNlmsg:mlen]
		if next := (mlen + 3) &^ 3; next < len(b) {
			b = b[next:]
		} else {
			b = nil
		}
		if typ != sockDiagByFamily {
			continue
		}
		if err := sockdiag.ParseMessage(payload, sk, in); err != nil {
			l.acc.unparsed++
			continue
		}
		l.record(sk, now)
	}
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// record adds one destroyed socket to the window. l.mu is held.
func (l *Listener) record(sk *sockdiag.Socket, now time.Time) {
	l.events.Add(1)
	var (
		life  time.Duration
		kind  = lifeUnknown
		owner Owner
	)
	if e, g, ok := l.lookup(sk.Cookie); ok {
		kind = lifeKnown
		life = max(now.Sub(time.Unix(0, e.first)), 0)
		if e.owner >= 0 {
			owner = g.owners[e.owner]
		}
	} else if l.observed {
		kind = lifeShort
	}
	d := Dest{Side: snapshot.Client, Addr: sk.Remote}
	if p := sk.Local.Port(); l.listening[p>>6]&(1<<(p&63)) != 0 {
		d = Dest{Side: snapshot.Server, Addr: sk.Local}
	}
	l.acc.add(d, owner, sk, life, kind)
}

func (l *Listener) lookup(cookie uint64) (seen, *gen, bool) {
	for _, g := range []*gen{l.cur, l.prev} {
		if g == nil {
			continue
		}
		if e, ok := g.m[cookie]; ok {
			return e, g, true
		}
	}
	return seen{}, nil, false
}

// gen holds what one snapshot said about the connections it saw. It is
// never written after it is published, so the reader may use it while
// Observe builds the next one.
type gen struct {
	m      map[uint64]seen
	owners []Owner
}

type seen struct {
	first int64 // unix ns when a snapshot first saw the cookie
	owner int32 // index into gen.owners, -1 unknown
}

// Observe tells the listener about a snapshot of the same namespace: the
// cookies it holds give connections a first-seen time (for lifetimes) and
// an owner (destroyed sockets have none), and its listeners tell accepted
// connections from dialled ones. Call it with every sample, right after the
// Swap that ends the sample's window. The last two snapshots are kept, so a
// connection that closes just before the snapshot is processed still finds
// its entry.
func (l *Listener) Observe(s *snapshot.Snapshot) {
	l.omu.Lock()
	defer l.omu.Unlock()
	l.mu.Lock()
	cur, prev := l.cur, l.prev
	l.mu.Unlock()

	// A socket listed by a dump that ended at seen existed then: destroy -
	// seen is a lower bound of its lifetime.
	at := s.Time.Add(s.Took).UnixNano()
	g := &gen{m: make(map[uint64]seen, len(s.Sockets))}
	idx := make(map[Owner]int32)
	ownerIndex := func(o Owner) int32 {
		i, ok := idx[o]
		if !ok {
			i = int32(len(g.owners))
			g.owners = append(g.owners, o)
			idx[o] = i
		}
		return i
	}
	listening := new([1024]uint64)
	for i := range s.Sockets {
		sk := &s.Sockets[i]
		if sk.State == sockdiag.Listen {
			p := sk.Local.Port()
			listening[p>>6] |= 1 << (p & 63)
			continue
		}
		if sk.Cookie == 0 {
			continue
		}
		e := seen{first: at, owner: -1}
		for _, o := range []*gen{cur, prev} {
			if o == nil {
				continue
			}
			if oe, ok := o.m[sk.Cookie]; ok {
				e.first = oe.first
				if oe.owner >= 0 {
					e.owner = ownerIndex(o.owners[oe.owner])
				}
				break
			}
		}
		if ps := s.Owners(sk); len(ps) > 0 {
			e.owner = ownerIndex(Owner{PID: ps[0].PID, Comm: ps[0].Comm})
		}
		g.m[sk.Cookie] = e
	}
	l.mu.Lock()
	l.prev, l.cur = cur, g
	l.listening = listening
	l.observed = true
	l.mu.Unlock()
}

// Swap ends the current window and starts the next one.
func (l *Listener) Swap() *Window {
	l.smu.Lock()
	defer l.smu.Unlock()
	drops, dropsErr := l.readDrops()
	now := time.Now()
	l.mu.Lock()
	old := l.acc
	l.acc = newAcc(now, l.cfg.MaxKeys)
	base := l.dropsBase
	if dropsErr == nil {
		l.dropsBase = drops
	}
	observed := l.observed
	l.mu.Unlock()
	w := old.window(now, l.cfg.Top)
	w.Observed = observed
	if dropsErr == nil {
		w.Dropped, w.DroppedExact = drops-base, true
	} else {
		w.Dropped = uint64(w.Overruns)
	}
	return w
}

// readDrops reads the socket's drop counter from /proc/net/netlink.
func (l *Listener) readDrops() (uint64, error) {
	if l.procf == nil || l.ino == 0 {
		return 0, errors.New("no /proc/net/netlink for the namespace")
	}
	if _, err := l.procf.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	b, err := io.ReadAll(l.procf)
	if err != nil {
		return 0, err
	}
	return netlinkDrops(b, l.ino)
}

package top

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/doctor"
	"github.com/tcplens/tcplens/internal/kernel"
	"github.com/tcplens/tcplens/internal/procs"
	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/internal/watch"
)

// large builds a sample with n full sockets spread over 2,000 destinations
// and 100 processes (1 in 50 in CLOSE_WAIT, 1 in 100 retransmitting) plus
// 1,000,000 TIME_WAIT in 256 tallies, like bench/twgen's namespace.
func large(n int) *watch.Sample {
	snap := &snapshot.Snapshot{
		Time: t0, Sockets: make([]sockdiag.Socket, n),
		Sysctls: kernel.Sysctls{LocalPortRange: kernel.PortRange{Lo: 1024, Hi: 65000}},
	}
	inodes := make([][]uint32, 100)
	for i := range n {
		st := sockdiag.Established
		switch {
		case i%50 == 0:
			st = sockdiag.CloseWait
		case i%20 == 1:
			st = sockdiag.FinWait2
		}
		dst := netip.AddrFrom4([4]byte{10, byte(i % 2000 / 250), byte(i % 250), 1})
		s := sockdiag.Socket{Family: 2, State: st, HasInfo: true, Inode: uint32(i + 1),
			Local:  netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(1024+i%60000)),
			Remote: netip.AddrPortFrom(dst, 5432)}
		s.Info.LastDataRecv = uint32(i % 10000)
		if i%100 == 7 {
			s.Timer, s.Retrans, s.Info.Backoff, s.Info.RTO = sockdiag.TimerRetransmit, uint8(i%5+1), uint8(i%4), uint32(200000<<(i%4))
		}
		snap.Sockets[i] = s
		snap.States[st]++
		inodes[i%100] = append(inodes[i%100], s.Inode)
	}
	var ps []*procs.Process
	for p := range 100 {
		ps = append(ps, &procs.Process{PID: 1000 + p, Comm: fmt.Sprintf("svc%d", p), SocketInodes: inodes[p]})
	}
	snap.Procs = procs.NewTable(ps)
	for g := range 256 {
		snap.TimeWait = append(snap.TimeWait, snapshot.TWGroup{TWKey: snapshot.TWKey{Side: snapshot.Client,
			Local: netip.MustParseAddr("127.0.0.1"), Remote: netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + g%16)}), RemotePort: uint16(65100 + g/16)},
			Count: 1000000 / 256})
	}
	snap.States[sockdiag.TimeWait] = 1000000 / 256 * 256
	rep := &doctor.Report{}
	for i := range 20 {
		rep.Findings = append(rep.Findings, doctor.Finding{ID: "close-wait-leak", Severity: doctor.Severity(i % 3), Title: fmt.Sprintf("finding %d", i)})
	}
	return &watch.Sample{Time: t0, Snap: snap, Report: rep, Budgets: analyze.PortBudgets(snap)}
}

// BenchmarkBuild is the sampling goroutine's share: O(sockets), off the UI.
func BenchmarkBuild(b *testing.B) {
	for _, n := range []int{2000, 200000} {
		s := large(n)
		b.Run(fmt.Sprintf("sockets=%d", n), func(b *testing.B) {
			for b.Loop() {
				Build(s)
			}
		})
	}
}

// BenchmarkKeypress is what the terminal waits for after a key: Update
// (re-sort of the focused panel) plus View. It must not grow with the
// socket count.
func BenchmarkKeypress(b *testing.B) {
	for _, n := range []int{2000, 200000} {
		f := Build(large(n))
		b.Run(fmt.Sprintf("sockets=%d", n), func(b *testing.B) {
			m := feed(NewModel(time.Second, t0, plain()), tea.WindowSizeMsg{Width: 120, Height: 40}, FrameMsg{f})
			key := tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{'s'}}
			for b.Loop() {
				m, _ = m.Update(key)
				_ = m.View()
			}
		})
	}
}

// BenchmarkNewFrame is the UI's share of a new sample: filter and sort
// every panel's rows (at most MaxRows each) and draw.
func BenchmarkNewFrame(b *testing.B) {
	for _, n := range []int{2000, 200000} {
		f := Build(large(n))
		b.Run(fmt.Sprintf("sockets=%d", n), func(b *testing.B) {
			m := feed(NewModel(time.Second, t0, plain()), tea.WindowSizeMsg{Width: 120, Height: 40})
			m = feed(m, keys("/svc")...)
			m = feed(m, enter)
			for b.Loop() {
				m, _ = m.Update(FrameMsg{f})
				_ = m.View()
			}
		})
	}
}

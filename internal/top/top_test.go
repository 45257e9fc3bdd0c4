package top

import (
	"errors"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/muesli/termenv"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/churn"
	"github.com/tcplens/tcplens/internal/doctor"
	"github.com/tcplens/tcplens/internal/kernel"
	"github.com/tcplens/tcplens/internal/procs"
	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
	"github.com/tcplens/tcplens/internal/watch"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func plain() *lipgloss.Renderer {
	r := lipgloss.NewRenderer(io.Discard)
	r.SetColorProfile(termenv.Ascii)
	return r
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func sock(st sockdiag.State, local, remote string, inode uint32) sockdiag.Socket {
	return sockdiag.Socket{Family: 2, State: st, Local: ap(local), Remote: ap(remote), Inode: inode, HasInfo: true}
}

// synthetic builds a sample of a host that dials a database (3 ESTABLISHED,
// 600 TIME_WAIT), leaks CLOSE_WAIT in "leaky", and has one connection in
// retransmission backoff.
func synthetic(at time.Time) *watch.Sample {
	var socks []sockdiag.Socket
	for i := range 3 {
		socks = append(socks, sock(sockdiag.Established, "10.0.0.1:"+itoa(40000+i), "10.0.0.5:5432", uint32(100+i)))
	}
	// Two more ESTABLISHED to a cache: more established, fewer in use.
	for i := range 4 {
		socks = append(socks, sock(sockdiag.Established, "10.0.0.1:"+itoa(41000+i), "10.0.0.7:6379", uint32(110+i)))
	}
	for i := range 2 {
		s := sock(sockdiag.CloseWait, "10.0.0.1:8080", "10.1.1.1:"+itoa(50000+i), uint32(200+i))
		s.Info.LastDataRecv = uint32(5000 + 1000*i)
		socks = append(socks, s)
	}
	socks = append(socks, sock(sockdiag.CloseWait, "10.0.0.1:8080", "10.1.1.2:50000", 0)) // owner unknown
	rt := sock(sockdiag.Established, "10.0.0.1:42000", "10.9.9.9:443", 300)
	rt.Timer, rt.Retrans, rt.TimerExpires = sockdiag.TimerRetransmit, 3, 1200*time.Millisecond
	rt.Info.Backoff, rt.Info.RTO, rt.Info.Unacked = 3, 1600000, 2
	socks = append(socks, rt)
	inflight := sock(sockdiag.Established, "10.0.0.1:42001", "10.9.9.8:443", 301)
	inflight.Timer, inflight.TimerExpires = sockdiag.TimerRetransmit, 200*time.Millisecond // data in flight, nothing lost
	socks = append(socks, inflight)

	snap := &snapshot.Snapshot{
		Time: at, Took: 40 * time.Millisecond, Netns: "tl-test", Sockets: socks,
		Sysctls: kernel.Sysctls{LocalPortRange: kernel.PortRange{Lo: 32768, Hi: 60999}},
		TimeWait: []snapshot.TWGroup{
			{TWKey: snapshot.TWKey{Side: snapshot.Client, Local: netip.MustParseAddr("10.0.0.1"), Remote: netip.MustParseAddr("10.0.0.5"), RemotePort: 5432}, Count: 600},
			{TWKey: snapshot.TWKey{Side: snapshot.Server, Local: netip.MustParseAddr("10.0.0.1"), LocalPort: 8080, Remote: netip.MustParseAddr("10.1.1.1")}, Count: 100},
			{TWKey: snapshot.TWKey{Side: snapshot.Server, Local: netip.MustParseAddr("10.0.0.1"), LocalPort: 8080, Remote: netip.MustParseAddr("10.1.1.2")}, Count: 20},
		},
		Procs: procs.NewTable([]*procs.Process{
			{PID: 100, Comm: "java", SocketInodes: []uint32{100, 101, 102, 110, 111, 112, 113, 300, 301}},
			{PID: 200, Comm: "leaky", SocketInodes: []uint32{200, 201}},
		}),
	}
	for i := range socks {
		snap.States[socks[i].State]++
	}
	snap.States[sockdiag.TimeWait] = 720
	rep := &doctor.Report{Findings: []doctor.Finding{
		{ID: "timewait-churn", Severity: doctor.Warning, Title: "600 TIME_WAIT to 10.0.0.5:5432", Subjects: []doctor.Subject{{Kind: "destination", Name: "10.0.0.5:5432"}}},
		{ID: "close-wait-leak", Severity: doctor.Critical, Title: "leaky/200 never closes 2 sockets", Subjects: []doctor.Subject{{Kind: "process", Name: "leaky/200"}}},
		{ID: "sysctl", Severity: doctor.Info, Title: "tcp_retries2=15 while connections stall"},
	}}
	return &watch.Sample{Time: at, Snap: snap, Report: rep, Budgets: analyze.PortBudgets(snap)}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestBuild(t *testing.T) {
	f := Build(synthetic(t0))
	if f.Total != 7+3+2+720 || f.TimeWait != 720 || f.States[sockdiag.CloseWait] != 3 {
		t.Errorf("total %d, time_wait %d, states %v", f.Total, f.TimeWait, f.States)
	}
	if len(f.Ports) != 4 || f.Ports[0].Dst.String() != "10.0.0.5" || f.Ports[0].InUse != 603 || f.Ports[0].TimeWait != 600 || f.Ports[0].Estab != 3 {
		t.Errorf("ports %+v", f.Ports)
	}
	if f.ChurnAvailable || f.Churn != nil {
		t.Error("churn claims to be available for a sample without a destroy-event window")
	}
	if len(f.TWRates) != 2 || f.TWRates[0].Count != 600 || f.TWRates[0].PerSec() != 10 || f.TWRates[1].Name() != "listen :8080" || f.TWRates[1].Count != 120 {
		t.Errorf("TIME_WAIT rates %+v", f.TWRates)
	}
	if len(f.CloseWait) != 2 || f.CloseWait[0].Comm != "leaky" || f.CloseWait[0].Count != 2 || f.CloseWait[0].Oldest != 6*time.Second || len(f.CloseWait[0].Peers) != 2 || f.CloseWait[1].PID != 0 {
		t.Errorf("close wait %+v", f.CloseWait)
	}
	if f.RetransTotal != 1 || f.Retrans[0].Remote != ap("10.9.9.9:443") || f.Retrans[0].RTO != 1600*time.Millisecond || f.Retrans[0].Procs[0].Comm != "java" {
		t.Errorf("retrans %+v (only the backed-off connection counts, not one with data merely in flight)", f.Retrans)
	}
	if len(f.Findings) != 3 {
		t.Errorf("findings %+v", f.Findings)
	}
}

func feed(m tea.Model, msgs ...tea.Msg) tea.Model {
	for _, msg := range msgs {
		m, _ = m.Update(msg)
	}
	return m
}

func keys(s string) []tea.Msg {
	var out []tea.Msg
	for _, r := range s {
		out = append(out, tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
	}
	return out
}

var (
	tab   = tea.KeyMsg{Type: tea.KeyTab}
	enter = tea.KeyMsg{Type: tea.KeyEnter}
	esc   = tea.KeyMsg{Type: tea.KeyEsc}
)

func started() tea.Model {
	return feed(NewModel(time.Second, t0, plain()), tea.WindowSizeMsg{Width: 120, Height: 40}, FrameMsg{Build(synthetic(t0))})
}

// lineWith returns the index of the first screen line containing s, or -1.
func lineWith(screen, s string) int {
	for i, l := range strings.Split(screen, "\n") {
		if strings.Contains(l, s) {
			return i
		}
	}
	return -1
}

func TestViewShowsEveryPanel(t *testing.T) {
	v := started().View()
	for _, want := range []string{
		"netns tl-test", "732 sockets", "TIME_WAIT         720", "CLOSE_WAIT          3",
		"10.0.0.5:5432", "603", // port budget
		"churn: not available (needs destroy events)", "estimate: TIME_WAIT/60s; total 720 ≈ 12 closes/s", "~10 ", "listen :8080",
		"leaky/200", "(owner not visible)", "~6.0s", "10.1.1.1:50000",
		"10.9.9.9:443", "3/3", "1.6s", "java/100",
		"CRITICAL", "close-wait-leak", "WARNING", "timewait-churn", "INFO",
		"▶ PORTS IN USE",
	} {
		if !strings.Contains(v, want) {
			t.Errorf("screen lacks %q:\n%s", want, v)
		}
	}
	if !strings.Contains(v, "RETRANSMITTING sort: backoff · 1") {
		t.Error("a connection with data in flight but no retransmission is listed as retransmitting")
	}
	if lineWith(v, "CRITICAL") > lineWith(v, "WARNING") || lineWith(v, "WARNING") > lineWith(v, "INFO") {
		t.Error("findings are not worst first")
	}
}

func TestViewFitsTheTerminal(t *testing.T) {
	for _, sz := range [][2]int{{120, 40}, {80, 24}, {60, 20}, {200, 60}, {59, 30}, {30, 5}} {
		m := feed(started(), tea.WindowSizeMsg{Width: sz[0], Height: sz[1]})
		lines := strings.Split(m.View(), "\n")
		if sz[0] >= minWidth && sz[1] >= minHeight && len(lines) != sz[1] {
			t.Errorf("%v: %d lines", sz, len(lines))
		}
		for i, l := range lines {
			if w := ansi.StringWidth(l); w > sz[0] {
				t.Errorf("%v: line %d is %d wide: %q", sz, i, w, l)
			}
		}
	}
	if v := feed(started(), tea.WindowSizeMsg{Width: 50, Height: 10}).View(); !strings.Contains(v, "too small") {
		t.Errorf("tiny terminal: %q", v)
	}
}

func TestSortCyclesFocusedPanel(t *testing.T) {
	m := started()
	v := m.View()
	if !(lineWith(v, "10.0.0.5:5432") < lineWith(v, "10.0.0.7:6379")) || !strings.Contains(v, "sort: in use") {
		t.Fatalf("default sort is not by ports in use:\n%s", v)
	}
	m = feed(m, keys("ss")...) // in use -> time_wait -> estab
	v = m.View()
	if !strings.Contains(v, "sort: estab") || !(lineWith(v, "10.0.0.7:6379") < lineWith(v, "10.0.0.5:5432")) {
		t.Errorf("sort by estab did not put the cache (4 ESTABLISHED) first:\n%s", v)
	}
	// tab moves focus; s now sorts the churn panel, not ports.
	m = feed(m, tab)
	m = feed(m, keys("s")...)
	v = m.View()
	if !strings.Contains(v, "▶ CHURN (estimate)") || !strings.Contains(v, "sort: destination") || !strings.Contains(v, "sort: estab") {
		t.Errorf("focus/sort after tab:\n%s", v)
	}
	for range numPanels - 1 {
		m = feed(m, tab)
	}
	if !strings.Contains(m.View(), "▶ PORTS IN USE") {
		t.Error("tab does not wrap around")
	}
	m = feed(m, tea.KeyMsg{Type: tea.KeyShiftTab})
	if !strings.Contains(m.View(), "▶ DOCTOR FINDINGS") {
		t.Error("shift+tab does not go back")
	}
	m = feed(m, keys("s")...)
	v = m.View()
	if !strings.Contains(v, "sort: id") || lineWith(v, "close-wait-leak") > lineWith(v, "sysctl") || lineWith(v, "sysctl") > lineWith(v, "timewait-churn") {
		t.Errorf("findings by id:\n%s", v)
	}
}

func TestFilter(t *testing.T) {
	m := feed(started(), keys("/leaky")...)
	v := m.View()
	if !strings.Contains(v, "/leaky") {
		t.Errorf("filter input not shown:\n%s", v)
	}
	m = feed(m, enter)
	v = m.View()
	if !strings.Contains(v, "filter: leaky") || !strings.Contains(v, "leaky/200") || strings.Contains(v, "10.0.0.5:5432") || strings.Contains(v, "(owner not visible)") {
		t.Errorf("after /leaky:\n%s", v)
	}
	if !strings.Contains(v, "close-wait-leak") || strings.Contains(v, "timewait-churn") {
		t.Errorf("findings not filtered by subject:\n%s", v)
	}
	if !strings.Contains(v, "none match the filter") {
		t.Errorf("empty panels do not say the filter hides rows:\n%s", v)
	}
	// q after the filter was applied quits; while typing it is text.
	if _, cmd := m.Update(keys("q")[0]); cmd == nil || cmd() != tea.Quit() {
		t.Error("q does not quit")
	}

	// A CIDR keeps the rows with an address inside it.
	m = feed(started(), keys("/10.9.0.0/16")...)
	m = feed(m, enter)
	v = m.View()
	if !strings.Contains(v, "10.9.9.9:443") || strings.Contains(v, "10.0.0.5:5432") || strings.Contains(v, "leaky/200") {
		t.Errorf("CIDR filter:\n%s", v)
	}
	// esc clears it.
	v = feed(m, esc).View()
	if strings.Contains(v, "filter:") || !strings.Contains(v, "10.0.0.5:5432") {
		t.Errorf("esc did not clear the filter:\n%s", v)
	}

	// pid: selects by owner; a bad term is reported and enter keeps editing.
	m = feed(started(), keys("/pid:1x")...)
	m = feed(m, enter)
	v = m.View()
	if !strings.Contains(v, `filter "pid:1x": pid must be a positive number`) || !strings.Contains(v, "/pid:1x") {
		t.Errorf("bad filter:\n%s", v)
	}
	m = feed(m, tea.KeyMsg{Type: tea.KeyBackspace}, tea.KeyMsg{Type: tea.KeyBackspace})
	m = feed(m, keys("200")...)
	m = feed(m, enter)
	v = m.View()
	if !strings.Contains(v, "filter: pid:200") || !strings.Contains(v, "leaky/200") || strings.Contains(v, "java/100") {
		t.Errorf("pid filter:\n%s", v)
	}
	// esc while editing restores the previous filter.
	m = feed(m, keys("/x")...)
	m = feed(m, esc)
	if v = m.View(); !strings.Contains(v, "filter: pid:200") {
		t.Errorf("esc while editing lost the previous filter:\n%s", v)
	}
}

func TestPause(t *testing.T) {
	m := feed(started(), keys("p")...)
	next := synthetic(t0.Add(time.Second))
	next.Snap.States[sockdiag.Listen] = 7
	m = feed(m, FrameMsg{Build(next)})
	v := m.View()
	if !strings.Contains(v, "PAUSED") || !strings.Contains(v, "LISTEN              0") {
		t.Errorf("paused view changed:\n%s", v)
	}
	v = feed(m, keys("p")...).View()
	if strings.Contains(v, "PAUSED") || !strings.Contains(v, "LISTEN              7") || !strings.Contains(v, "last 2 samples") {
		t.Errorf("resume did not show the newest sample and the history gathered meanwhile:\n%s", v)
	}
}

func TestSamplingAndErrors(t *testing.T) {
	m := feed(started(), SamplingMsg{Start: t0.Add(time.Second)}, tickMsg(t0.Add(1100*time.Millisecond)))
	if v := m.View(); strings.Contains(v, "sampling…") {
		t.Errorf("a fast dump should not flash 'sampling…':\n%s", v)
	}
	m = feed(m, tickMsg(t0.Add(3500*time.Millisecond)))
	v := m.View()
	if !strings.Contains(v, "sampling… 2.5s") || !strings.Contains(v, "updated 3.5s ago") {
		t.Errorf("slow dump not shown:\n%s", v)
	}
	// Keys still work while the dump runs: the model never waits for it.
	if v := feed(m, tab).View(); !strings.Contains(v, "▶ CHURN") {
		t.Error("tab ignored during a dump")
	}
	m = feed(m, ErrMsg{Err: errors.New("dump sockets: netlink: permission denied"), Time: t0.Add(4 * time.Second)})
	if v := m.View(); !strings.Contains(v, "sample failed (retrying): dump sockets: netlink: permission denied") || !strings.Contains(v, "leaky/200") {
		t.Errorf("error not shown, or the last frame dropped:\n%s", v)
	}
	if v := feed(NewModel(time.Second, t0, plain()), tea.WindowSizeMsg{Width: 100, Height: 30}).View(); !strings.Contains(v, "waiting for the first sample") {
		t.Errorf("before the first sample:\n%s", v)
	}
}

func TestChurnPanelWhenAvailable(t *testing.T) {
	// The rows come from the sample's destroy-event window (most closes
	// first), as watch delivers it.
	s := synthetic(t0)
	s.Churn = &churn.Window{Destinations: []churn.DestStats{
		{Dest: churn.Dest{Side: snapshot.Client, Addr: netip.MustParseAddrPort("10.0.0.5:5432")},
			Stats: churn.Stats{Closed: 480, PerSecond: 480, LifetimeP50: 20 * time.Millisecond, LifetimeP99: 300 * time.Millisecond, Retransmits: 3}},
		{Dest: churn.Dest{Side: snapshot.Server, Addr: netip.MustParseAddrPort("10.0.0.1:6379")},
			Stats: churn.Stats{Closed: 2, PerSecond: 2, LifetimeP50: time.Minute, LifetimeP99: 2 * time.Minute, Retransmits: 40}},
	}}
	f := Build(s)
	if !f.ChurnAvailable || len(f.Churn) != 2 || f.Churn[1].Dest != "10.0.0.1:6379 (listener)" || f.Churn[1].RetransClose != 40 {
		t.Fatalf("churn rows %+v (available %v)", f.Churn, f.ChurnAvailable)
	}
	m := feed(NewModel(time.Second, t0, plain()), tea.WindowSizeMsg{Width: 120, Height: 40}, FrameMsg{f}, tab)
	v := m.View()
	if strings.Contains(v, "not available") || !strings.Contains(v, "▶ CHURN") || !strings.Contains(v, "480") || !(lineWith(v, "480") < lineWith(v, "2m0s")) {
		t.Errorf("churn panel:\n%s", v)
	}
	v = feed(m, keys("s")...).View()
	if !strings.Contains(v, "sort: p99 life") || !(lineWith(v, "2m0s") < lineWith(v, "480")) {
		t.Errorf("churn by lifetime:\n%s", v)
	}
}

func TestHistoryAndSparkline(t *testing.T) {
	var h history
	for i := range histLen + 5 {
		var c [16]int
		c[1] = i
		h.push(c)
	}
	s := h.series(1, 3)
	if len(s) != 3 || s[0] != histLen+2 || s[2] != histLen+4 {
		t.Errorf("series %v", s)
	}
	if len(h.series(1, 1000)) != histLen {
		t.Error("history is not bounded")
	}
	if got := sparkline([]int{0, 1, 50, 100}); got != "▁▂▅█" {
		t.Errorf("sparkline %q", got)
	}
	if got := sparkline([]int{0, 0}); got != "▁▁" {
		t.Errorf("flat sparkline %q", got)
	}
}

func TestCount(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 1000000: "1,000,000", -12345: "-12,345"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q", n, got)
		}
	}
}

func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"", "java", "pid:12", "pid:", "pid:-1", "10.0.0.0/8", "::1", "fe80::/10 leaky", "10.0.0.5:5432", "a/b", strings.Repeat("x ", 20)} {
		f.Add(s)
	}
	row := subject{addrs: []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("::ffff:10.0.0.6")}, text: []string{"10.0.0.5:5432"}}
	f.Fuzz(func(t *testing.T, s string) {
		flt, err := ParseFilter(s)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			return
		}
		flt.match(&row)
		again, err := ParseFilter(flt.String())
		if err != nil || again.Empty() != flt.Empty() {
			t.Errorf("%q: reparse of %q: %v", s, flt.String(), err)
		}
		if flt.Empty() && !flt.match(&row) {
			t.Error("an empty filter hides a row")
		}
	})
}

// TestSortOrdersMatchNames keeps each panel's sort functions and the names
// the footer shows for them in step.
func TestSortOrdersMatchNames(t *testing.T) {
	for p, n := range map[panel]int{panelPorts: len(portOrders), panelChurn: len(churnOrders), panelCloseWait: len(closeWaitOrders), panelRetrans: len(retransOrders), panelFindings: len(findingOrders)} {
		if len(sortNames[p]) != n {
			t.Errorf("panel %d: %d sort names, %d orders", p, len(sortNames[p]), n)
		}
	}
	if len(twSortNames) != len(twOrders) {
		t.Errorf("estimate: %d sort names, %d orders", len(twSortNames), len(twOrders))
	}
}

package top

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/cursor"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/snapshot"
)

// Messages the sampling goroutine sends to the program.
type (
	// FrameMsg delivers a new sample.
	FrameMsg struct{ Frame *Frame }
	// SamplingMsg says a dump started at Start.
	SamplingMsg struct{ Start time.Time }
	// ErrMsg says a sample failed; sampling goes on.
	ErrMsg struct {
		Err  error
		Time time.Time
	}
	// tickMsg refreshes the ages in the header.
	tickMsg time.Time
)

// tickEvery is how often the header's ages are redrawn without a sample.
const tickEvery = 250 * time.Millisecond

// slowDump is how long a dump runs before the header says "sampling…".
const slowDump = 300 * time.Millisecond

type panel int

const (
	panelPorts panel = iota
	panelChurn
	panelCloseWait
	panelRetrans
	panelFindings
	numPanels
)

// sortNames are the sort columns of each panel, the default first. The
// churn panel has two sets: destroy-event churn and the TIME_WAIT estimate.
var sortNames = [numPanels][]string{
	panelPorts:     {"in use", "time_wait", "estab", "destination"},
	panelChurn:     {"closed/s", "p99 life", "retrans", "destination"},
	panelCloseWait: {"count", "oldest", "process"},
	panelRetrans:   {"backoff", "rto", "retrans", "remote"},
	panelFindings:  {"severity", "id"},
}

var twSortNames = []string{"time_wait", "destination"}

// Model is the bubbletea model of tcplens top. Update and View only touch
// the rows of the current Frame (at most MaxRows per panel).
type Model struct {
	interval      time.Duration
	sty           styles
	width, height int
	now           time.Time

	frame  *Frame // shown
	latest *Frame // newest received; differs from frame while paused
	hist   history
	shown  history // the history drawn: frozen while paused
	paused bool

	sampling      bool
	samplingSince time.Time
	err           error

	focus panel
	sort  [numPanels]int

	filter    Filter
	filterErr error
	editing   bool
	before    string // filter text when editing started, for esc
	input     textinput.Model

	// Rows after filter and sort.
	ports []PortRow
	churn []ChurnRow
	tw    []TWRateRow
	cw    []CloseWaitRow
	rt    []RetransRow
	finds []FindingRow
}

// NewModel returns a model for a watch at interval. The renderer decides
// the colours: make it for the real output (lipgloss.NewRenderer(out)).
func NewModel(interval time.Duration, now time.Time, r *lipgloss.Renderer) Model {
	in := textinput.New()
	in.Prompt = "/"
	in.CharLimit = 200
	in.Cursor.SetMode(cursor.CursorStatic)
	return Model{interval: interval, now: now, width: 120, height: 40, input: in, sty: newStyles(r)}
}

// Init starts the clock that ages the header.
func (m Model) Init() tea.Cmd { return tick() }

func tick() tea.Cmd { return tea.Tick(tickEvery, func(t time.Time) tea.Msg { return tickMsg(t) }) }

// Update handles one message.
func (m Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case tickMsg:
		m.now = time.Time(msg)
		return m, tick()
	case SamplingMsg:
		m.sampling, m.samplingSince = true, msg.Start
		m.now = later(m.now, msg.Start)
	case ErrMsg:
		m.sampling, m.err = false, msg.Err
		m.now = later(m.now, msg.Time)
	case FrameMsg:
		m.sampling, m.err = false, nil
		m.latest = msg.Frame
		m.hist.push(msg.Frame.States)
		m.now = later(m.now, msg.Frame.Time)
		if !m.paused {
			m.frame, m.shown = msg.Frame, m.hist
			m.refresh()
		}
	case tea.KeyMsg:
		return m.key(msg)
	}
	return m, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func (m Model) key(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	if m.editing {
		switch k.Type {
		case tea.KeyCtrlC:
			return m, tea.Quit
		case tea.KeyEnter:
			if m.filterErr == nil {
				m.editing = false
				m.input.Blur()
			}
			return m, nil
		case tea.KeyEsc:
			m.editing = false
			m.input.Blur()
			m.input.SetValue(m.before)
			m.setFilter(m.before)
			return m, nil
		}
		var cmd tea.Cmd
		m.input, cmd = m.input.Update(k)
		m.setFilter(m.input.Value()) // live: each key re-filters MaxRows rows at most
		return m, cmd
	}
	switch k.String() {
	case "q", "ctrl+c":
		return m, tea.Quit
	case "tab":
		m.focus = (m.focus + 1) % numPanels
	case "shift+tab":
		m.focus = (m.focus + numPanels - 1) % numPanels
	case "s":
		m.sort[m.focus] = (m.sort[m.focus] + 1) % len(m.sortNames(m.focus))
		m.refresh()
	case "/":
		m.editing = true
		m.before = m.filter.String()
		m.input.SetValue(m.before)
		m.input.CursorEnd()
		return m, m.input.Focus()
	case "esc":
		m.input.SetValue("")
		m.setFilter("")
	case "p":
		m.paused = !m.paused
		if !m.paused && m.latest != m.frame {
			m.frame, m.shown = m.latest, m.hist
			m.refresh()
		}
	}
	return m, nil
}

func (m *Model) setFilter(text string) {
	f, err := ParseFilter(text)
	m.filterErr = err
	if err != nil {
		return // keep the last valid filter while the user types
	}
	m.filter = f
	m.refresh()
}

func (m *Model) sortNames(p panel) []string {
	if p == panelChurn && (m.frame == nil || !m.frame.ChurnAvailable) {
		return twSortNames
	}
	return sortNames[p]
}

func (m *Model) sortKey(p panel) int {
	return m.sort[p] % len(m.sortNames(p))
}

// Sort orders of each panel, in the order of sortNames (and twSortNames).
var (
	portOrders = []func(a, b PortRow) int{
		func(a, b PortRow) int { return cmp.Compare(b.InUse, a.InUse) },
		func(a, b PortRow) int { return cmp.Compare(b.TimeWait, a.TimeWait) },
		func(a, b PortRow) int { return cmp.Compare(b.Estab, a.Estab) },
		func(a, b PortRow) int {
			return cmp.Or(a.Dst.Compare(b.Dst), cmp.Compare(a.DstPort, b.DstPort), a.Src.Compare(b.Src))
		},
	}
	churnOrders = []func(a, b ChurnRow) int{
		func(a, b ChurnRow) int { return cmp.Compare(b.ClosedPerSec, a.ClosedPerSec) },
		func(a, b ChurnRow) int { return cmp.Compare(b.LifetimeP99, a.LifetimeP99) },
		func(a, b ChurnRow) int { return cmp.Compare(b.RetransClose, a.RetransClose) },
		func(a, b ChurnRow) int { return strings.Compare(a.Dest, b.Dest) },
	}
	twOrders = []func(a, b TWRateRow) int{
		func(a, b TWRateRow) int { return cmp.Compare(b.Count, a.Count) },
		func(a, b TWRateRow) int { return strings.Compare(a.Name(), b.Name()) },
	}
	closeWaitOrders = []func(a, b CloseWaitRow) int{
		func(a, b CloseWaitRow) int { return cmp.Compare(b.Count, a.Count) },
		func(a, b CloseWaitRow) int { return cmp.Compare(b.Oldest, a.Oldest) },
		func(a, b CloseWaitRow) int { return cmp.Or(strings.Compare(a.Comm, b.Comm), cmp.Compare(a.PID, b.PID)) },
	}
	retransOrders = []func(a, b RetransRow) int{
		func(a, b RetransRow) int { return cmp.Compare(b.Backoff, a.Backoff) },
		func(a, b RetransRow) int { return cmp.Compare(b.RTO, a.RTO) },
		func(a, b RetransRow) int { return cmp.Compare(b.Retrans, a.Retrans) },
		func(a, b RetransRow) int { return a.Remote.Compare(b.Remote) },
	}
	findingOrders = []func(a, b FindingRow) int{
		func(a, b FindingRow) int { return cmp.Compare(b.Severity, a.Severity) },
		func(a, b FindingRow) int { return strings.Compare(a.ID, b.ID) },
	}
)

// pick keeps the rows whose subject passes flt, sorted stably by order.
func pick[T any](rows []T, flt *Filter, subj func(*T) subject, order func(a, b T) int) []T {
	var out []T
	for i := range rows {
		if s := subj(&rows[i]); flt.match(&s) {
			out = append(out, rows[i])
		}
	}
	slices.SortStableFunc(out, order)
	return out
}

// refresh filters and sorts the frame's rows: O(MaxRows log MaxRows).
func (m *Model) refresh() {
	f := m.frame
	if f == nil {
		return
	}
	flt := &m.filter
	m.ports = pick(f.Ports, flt, func(r *PortRow) subject {
		return subject{addrs: []netip.Addr{r.Src, r.Dst}, procs: r.Procs, text: []string{portDest(r), r.Src.String()}}
	}, portOrders[m.sortKey(panelPorts)])
	churnKey := m.sortKey(panelChurn)
	m.churn = pick(f.Churn, flt, func(r *ChurnRow) subject {
		sub := subject{text: []string{r.Dest}}
		if ap, err := netip.ParseAddrPort(r.Dest); err == nil {
			sub.addrs = []netip.Addr{ap.Addr()}
		}
		return sub
	}, churnOrders[churnKey%len(churnOrders)])
	twKey := 0 // the estimate sorts by its own names only while it is shown
	if !f.ChurnAvailable {
		twKey = churnKey
	}
	m.tw = pick(f.TWRates, flt, func(r *TWRateRow) subject {
		sub := subject{text: []string{r.Name(), r.Side.String()}}
		if r.Side != snapshot.Server {
			sub.addrs = []netip.Addr{r.Local, r.Remote.Addr()}
			sub.text = append(sub.text, r.Local.String())
		}
		return sub
	}, twOrders[twKey%len(twOrders)])
	m.cw = pick(f.CloseWait, flt, func(r *CloseWaitRow) subject {
		return subject{addrs: addrsOf(r.Peers), procs: procsOf(*r), text: peerText(r.Peers)}
	}, closeWaitOrders[m.sortKey(panelCloseWait)])
	m.rt = pick(f.Retrans, flt, func(r *RetransRow) subject {
		return subject{addrs: []netip.Addr{r.Local.Addr(), r.Remote.Addr()}, procs: r.Procs, text: []string{r.Local.String(), r.Remote.String(), r.State.String()}}
	}, retransOrders[m.sortKey(panelRetrans)])
	m.finds = pick(f.Findings, flt, func(r *FindingRow) subject {
		sub := subject{text: append([]string{r.ID, r.Title, r.Severity.String()}, r.Subjects...)}
		for _, s := range r.Subjects {
			if ap, err := netip.ParseAddrPort(s); err == nil {
				sub.addrs = append(sub.addrs, ap.Addr())
			} else if a, err := netip.ParseAddr(s); err == nil {
				sub.addrs = append(sub.addrs, a)
			}
		}
		return sub
	}, findingOrders[m.sortKey(panelFindings)])
}

func addrsOf(aps []netip.AddrPort) []netip.Addr {
	out := make([]netip.Addr, len(aps))
	for i, ap := range aps {
		out[i] = ap.Addr()
	}
	return out
}

func peerText(aps []netip.AddrPort) []string {
	out := make([]string, len(aps))
	for i, ap := range aps {
		out[i] = ap.String()
	}
	return out
}

func procsOf(r CloseWaitRow) []analyze.ProcRef {
	if r.PID == 0 {
		return nil
	}
	return []analyze.ProcRef{r.ProcRef}
}

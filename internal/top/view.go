package top

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/doctor"
	"github.com/tcplens/tcplens/internal/render"
	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// Smallest terminal the layout fits.
const minWidth, minHeight = 60, 20

// styles are made from the renderer of the real output, so colours match
// what that terminal supports (none when it is not one, as in unit tests).
type styles struct {
	title, focus, dim, bold, warn, crit, info, errs lipgloss.Style
}

func newStyles(r *lipgloss.Renderer) styles {
	return styles{
		title: r.NewStyle().Bold(true),
		focus: r.NewStyle().Bold(true).Reverse(true),
		dim:   r.NewStyle().Faint(true),
		bold:  r.NewStyle().Bold(true),
		warn:  r.NewStyle().Bold(true).Foreground(lipgloss.Color("11")),
		crit:  r.NewStyle().Bold(true).Foreground(lipgloss.Color("9")),
		info:  r.NewStyle().Foreground(lipgloss.Color("12")),
		errs:  r.NewStyle().Foreground(lipgloss.Color("9")),
	}
}

// shownStates are the rows of the states panel, in kernel order.
var shownStates = []sockdiag.State{
	sockdiag.Established, sockdiag.SynSent, sockdiag.SynRecv, sockdiag.FinWait1, sockdiag.FinWait2,
	sockdiag.TimeWait, sockdiag.CloseWait, sockdiag.LastAck, sockdiag.Closing, sockdiag.Listen,
}

// View draws the screen: exactly height lines of at most width cells.
func (m Model) View() string {
	w, h := m.width, m.height
	if w < minWidth || h < minHeight {
		return fit(fmt.Sprintf("terminal %dx%d is too small for tcplens top: need %dx%d (q quits)", w, h, minWidth, minHeight), max(w, 1))
	}
	lines := make([]string, 0, h)
	lines = append(lines, m.header(w))
	if m.frame == nil {
		lines = append(lines, fit("waiting for the first sample… (a dump of a million sockets takes about a second)", w))
	} else {
		lines = append(lines, m.statesPanel(w)...)
		avail := h - len(lines) - 1
		sec := avail / 3
		lw := (w - 1) / 2
		rw := w - 1 - lw
		lines = append(lines, join(m.portsPanel(lw, sec), m.churnPanel(rw, sec))...)
		lines = append(lines, join(m.closeWaitPanel(lw, sec), m.retransPanel(rw, sec))...)
		lines = append(lines, m.findingsPanel(w, avail-2*sec)...)
	}
	for len(lines) < h-1 {
		lines = append(lines, "")
	}
	lines = append(lines[:h-1], m.footer(w))
	return strings.Join(lines, "\n")
}

func (m Model) st() styles { return m.sty }

func (m Model) header(w int) string {
	st := m.st()
	var b strings.Builder
	b.WriteString(st.title.Render("tcplens top"))
	f := m.frame
	ns := "this network namespace"
	if f != nil && f.Netns != "" {
		ns = "netns " + f.Netns
	}
	b.WriteString(" · " + ns)
	if f != nil {
		fmt.Fprintf(&b, " · %s sockets · updated %s ago (dump %s)", count(f.Total), render.Duration(m.now.Sub(f.Time).Round(100*time.Millisecond)), render.Duration(f.Took))
	}
	fmt.Fprintf(&b, " · every %s", render.Duration(m.interval))
	switch {
	case m.paused:
		b.WriteString(" · " + st.warn.Render("PAUSED (p resumes)"))
	case m.sampling && m.now.Sub(m.samplingSince) >= slowDump:
		b.WriteString(" · " + st.warn.Render("sampling… "+render.Duration(m.now.Sub(m.samplingSince))))
	}
	if m.err != nil {
		b.WriteString(" · " + st.errs.Render("LAST SAMPLE FAILED"))
	}
	return fit(b.String(), w)
}

func (m Model) statesPanel(w int) []string {
	st := m.st()
	lw := (w - 1) / 2
	rw := w - 1 - lw
	out := []string{fit(st.title.Render("STATES")+st.dim.Render(fmt.Sprintf("  whole namespace, unfiltered · last %d samples", m.shown.n)), w)}
	half := (len(shownStates) + 1) / 2
	for i := range half {
		left := m.stateLine(shownStates[i], lw)
		right := ""
		if j := i + half; j < len(shownStates) {
			right = m.stateLine(shownStates[j], rw)
		}
		out = append(out, fit(left, lw)+" "+fit(right, rw))
	}
	return out
}

func (m Model) stateLine(s sockdiag.State, w int) string {
	n := m.frame.States[s]
	text := fmt.Sprintf("%-11s %9s ", s.String(), count(n))
	spark := sparkline(m.shown.series(int(s), max(0, w-len(text))))
	return text + spark
}

// column of a table; width 0 takes what the others leave.
type column struct {
	name  string
	width int
	right bool
}

// panel draws a titled table of exactly h lines of width w.
func (m Model) panel(p panel, title, note string, w, h int, cols []column, rows [][]string, total int, extra []string) []string {
	st := m.st()
	var out []string
	if p == m.focus {
		out = append(out, fit(st.focus.Render("▶ "+title)+" "+note, w))
	} else {
		out = append(out, fit(st.title.Render("  "+title)+" "+note, w))
	}
	for _, e := range extra {
		out = append(out, fit(e, w))
	}
	out = append(out, fit(st.dim.Render(tableLine(cols, headerCells(cols), w)), w))
	room := h - len(out)
	if total == 0 && room > 0 {
		msg := "none"
		if !m.filter.Empty() {
			msg = "none match the filter"
		}
		out = append(out, fit(st.dim.Render("  "+msg), w))
	}
	for i, r := range rows {
		if len(out) == h {
			break
		}
		if i == room-1 && total > room {
			out = append(out, fit(st.dim.Render(fmt.Sprintf("  … %d more", total-i)), w))
			break
		}
		out = append(out, fit(tableLine(cols, r, w), w))
	}
	for len(out) < h {
		out = append(out, strings.Repeat(" ", w))
	}
	return out[:h]
}

func headerCells(cols []column) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = c.name
	}
	return out
}

func tableLine(cols []column, cells []string, w int) string {
	var b strings.Builder
	used := 0
	for i, c := range cols {
		cw := c.width
		if cw == 0 {
			cw = max(1, w-used)
		}
		cell := ""
		if i < len(cells) {
			cell = cells[i]
		}
		if c.right {
			cell = padLeft(cell, cw-1) + " "
		} else {
			cell = fit(cell, cw-1) + " "
		}
		b.WriteString(cell)
		used += cw
	}
	return b.String()
}

// sortNote says how a panel is sorted and how many rows it has.
func (m Model) sortNote(p panel, shown, kept, total int) string {
	note := "sort: " + m.sortNames(p)[m.sortKey(p)]
	switch {
	case !m.filter.Empty():
		note += fmt.Sprintf(" · %d match", shown)
	default:
		note += fmt.Sprintf(" · %d", shown)
	}
	if total > kept {
		note += fmt.Sprintf(" (top %d of %d)", kept, total)
	}
	return m.st().dim.Render(note)
}

func (m Model) portsPanel(w, h int) []string {
	cols := []column{{"DESTINATION", 22, false}, {"IN USE", 7, true}, {"USED", 7, true}, {"TW", 7, true}, {"ESTAB", 6, true}, {"PROCESS", 0, false}}
	var rows [][]string
	for i := range m.ports {
		if i == h {
			break
		}
		r := &m.ports[i]
		rows = append(rows, []string{portDest(r), count(r.InUse), render.Percent(r.Used), count(r.TimeWait), count(r.Estab), procNames(r.Procs)})
	}
	return m.panel(panelPorts, "PORTS IN USE", m.sortNote(panelPorts, len(m.ports), len(m.frame.Ports), m.frame.PortsTotal), w, h, cols, rows, len(m.ports), nil)
}

func portDest(r *PortRow) string { return netip.AddrPortFrom(r.Dst, r.DstPort).String() }

func (m Model) churnPanel(w, h int) []string {
	st := m.st()
	if m.frame.ChurnAvailable {
		cols := []column{{"DESTINATION", 22, false}, {"CLOSED/S", 9, true}, {"P50 LIFE", 9, true}, {"P99 LIFE", 9, true}, {"RETRANS", 0, true}}
		var rows [][]string
		for i := range m.churn {
			if i == h {
				break
			}
			r := &m.churn[i]
			rows = append(rows, []string{r.Dest, rate(r.ClosedPerSec), render.Duration(r.LifetimeP50), render.Duration(r.LifetimeP99), count(int(r.RetransClose))})
		}
		return m.panel(panelChurn, "CHURN", m.sortNote(panelChurn, len(m.churn), len(m.frame.Churn), len(m.frame.Churn)), w, h, cols, rows, len(m.churn), nil)
	}
	extra := []string{
		st.warn.Render("churn: not available (needs destroy events)"),
		st.dim.Render(fmt.Sprintf("estimate: TIME_WAIT/60s; total %s ≈ %s closes/s", count(m.frame.TimeWait), rate(float64(m.frame.TimeWait)/snapshot.TimeWaitLen.Seconds()))),
	}
	cols := []column{{"DESTINATION / LISTENER", 24, false}, {"SIDE", 7, false}, {"TIME_WAIT", 10, true}, {"EST CLOSES/S", 0, true}}
	var rows [][]string
	for i := range m.tw {
		if i == h {
			break
		}
		r := &m.tw[i]
		rows = append(rows, []string{r.Name(), r.Side.String(), count(r.Count), "~" + rate(r.PerSec())})
	}
	return m.panel(panelChurn, "CHURN (estimate)", m.sortNote(panelChurn, len(m.tw), len(m.frame.TWRates), m.frame.TWRatesTotal), w, h, cols, rows, len(m.tw), extra)
}

func (m Model) closeWaitPanel(w, h int) []string {
	cols := []column{{"PROCESS", 22, false}, {"CLOSE_WAIT", 11, true}, {"OLDEST", 8, true}, {"PEERS", 0, false}}
	var rows [][]string
	for i := range m.cw {
		if i == h {
			break
		}
		r := &m.cw[i]
		name := r.Label()
		if r.PID == 0 {
			name = "(owner not visible)"
		}
		rows = append(rows, []string{name, count(r.Count), "~" + render.Duration(r.Oldest), strings.Join(peerText(r.Peers), " ")})
	}
	return m.panel(panelCloseWait, "CLOSE_WAIT BY PROCESS", m.sortNote(panelCloseWait, len(m.cw), len(m.frame.CloseWait), m.frame.CloseWaitTotal), w, h, cols, rows, len(m.cw), nil)
}

func (m Model) retransPanel(w, h int) []string {
	cols := []column{{"REMOTE", 21, false}, {"STATE", 12, false}, {"#/BACKOFF", 10, true}, {"RTO", 7, true}, {"PROCESS", 0, false}}
	var rows [][]string
	for i := range m.rt {
		if i == h {
			break
		}
		r := &m.rt[i]
		rows = append(rows, []string{r.Remote.String(), r.State.String(), strconv.Itoa(int(r.Retrans)) + "/" + strconv.Itoa(int(r.Backoff)),
			render.Duration(r.RTO), procNames(r.Procs)})
	}
	return m.panel(panelRetrans, "RETRANSMITTING", m.sortNote(panelRetrans, len(m.rt), len(m.frame.Retrans), m.frame.RetransTotal), w, h, cols, rows, len(m.rt), nil)
}

func (m Model) findingsPanel(w, h int) []string {
	st := m.st()
	cols := []column{{"SEVERITY", 10, false}, {"ID", 20, false}, {"TITLE", 0, false}}
	var rows [][]string
	for i := range m.finds {
		if i == h {
			break
		}
		r := &m.finds[i]
		sev := strings.ToUpper(r.Severity.String())
		switch r.Severity {
		case doctor.Critical:
			sev = st.crit.Render(sev)
		case doctor.Warning:
			sev = st.warn.Render(sev)
		default:
			sev = st.info.Render(sev)
		}
		rows = append(rows, []string{sev, r.ID, r.Title})
	}
	return m.panel(panelFindings, "DOCTOR FINDINGS", m.sortNote(panelFindings, len(m.finds), len(m.frame.Findings), len(m.frame.Findings)), w, h, cols, rows, len(m.finds), nil)
}

func (m Model) footer(w int) string {
	st := m.st()
	if m.editing {
		s := m.input.View() + st.dim.Render("  enter applies · esc cancels · terms: text, 10.0.0.0/8, pid:123")
		if m.filterErr != nil {
			s += "  " + st.errs.Render(m.filterErr.Error())
		}
		return fit(s, w)
	}
	s := st.dim.Render("q quit · tab panel · s sort · / filter · esc clear filter · p pause")
	if m.err != nil {
		s = st.errs.Render("sample failed (retrying): "+m.err.Error()) + "  " + s
	}
	if !m.filter.Empty() {
		s = st.bold.Render("filter: "+m.filter.String()) + "  " + s
	}
	return fit(s, w)
}

// join puts two blocks of equal height side by side.
func join(left, right []string) []string {
	out := make([]string, max(len(left), len(right)))
	for i := range out {
		var l, r string
		if i < len(left) {
			l = left[i]
		}
		if i < len(right) {
			r = right[i]
		}
		out[i] = l + "│" + r
	}
	return out
}

// fit truncates or pads s (which may hold styles) to exactly w cells.
func fit(s string, w int) string {
	n := ansi.StringWidth(s)
	if n > w {
		return ansi.Truncate(s, w, "…")
	}
	return s + strings.Repeat(" ", w-n)
}

func padLeft(s string, w int) string {
	n := ansi.StringWidth(s)
	if n > w {
		return ansi.Truncate(s, w, "…")
	}
	return strings.Repeat(" ", w-n) + s
}

// procNames keeps top's narrow columns to two names.
func procNames(ps []analyze.ProcRef) string { return render.ProcList(ps, 2) }

// count formats an integer with thousands separators: 1,000,000.
func count(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func rate(r float64) string {
	if r < 10 {
		return strconv.FormatFloat(r, 'f', 1, 64)
	}
	return count(int(r + 0.5))
}

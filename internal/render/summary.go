package render

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// JSON writes v as indented JSON.
func JSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// States formats counts as "ESTABLISHED 12, TIME_WAIT 4", kernel order.
func States(c analyze.StateCounts) string {
	var parts []string
	for _, st := range sockdiag.AllStates() {
		if n := c[st]; n > 0 {
			parts = append(parts, st.String()+" "+strconv.Itoa(n))
		}
	}
	return strings.Join(parts, ", ")
}

// ProcList formats owners as "nginx/12,nginx/13,+4", at most max names.
func ProcList(ps []analyze.ProcRef, max int) string {
	if len(ps) == 0 {
		return "-"
	}
	parts := make([]string, 0, min(len(ps), max+1))
	for i, p := range ps {
		if i == max {
			parts = append(parts, fmt.Sprintf("+%d", len(ps)-max))
			break
		}
		parts = append(parts, p.Label())
	}
	return strings.Join(parts, ",")
}

func procList(ps []analyze.ProcRef) string { return ProcList(ps, 3) }

// Summary writes the human form of a summary.
func Summary(w io.Writer, s *analyze.Summary) error {
	ew := &errWriter{w: w}
	title := "TCP sockets"
	if s.Netns != "" {
		title += " in network namespace " + s.Netns
	}
	fmt.Fprintf(ew, "%s: %d\n", title, s.Total)
	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	for _, st := range sockdiag.AllStates() {
		if n := s.States[st]; n > 0 {
			fmt.Fprintf(tw, "  %s\t%d\n", st, n)
		}
	}
	tw.Flush()

	section(ew, fmt.Sprintf("Ephemeral port budget (usable range %d ports per source IP, destination IP and port)", s.EphemeralRange),
		"no outbound connections from ephemeral ports", "SOURCE\tDESTINATION\tIN USE\tUSED\tTIME_WAIT\tPROCESS", s.PortBudget,
		func(b analyze.PortBudget) string {
			return fmt.Sprintf("%s\t%s\t%d\t%s\t%d\t%s", b.Src, netip.AddrPortFrom(b.Dst, b.DstPort), b.InUse, Percent(b.Used), b.TimeWait(), procList(b.Processes))
		})
	section(ew, "Top destinations", "none", "REMOTE\tSOCKETS\tSTATES\tPROCESS", s.Destinations,
		func(d analyze.Destination) string {
			return fmt.Sprintf("%s\t%d\t%s\t%s", d.Remote, d.Total, States(d.States), procList(d.Processes))
		})
	section(ew, "Listeners", "none", "LOCAL\tACCEPT Q\tBACKLOG\tCONNS\tPROCESS", s.Listeners,
		func(l analyze.Listener) string {
			return fmt.Sprintf("%s\t%d\t%d\t%d\t%s", l.Local, l.AcceptQueue, l.Backlog, l.Connections, procList(l.Processes))
		})
	section(ew, "Processes by socket count", "no socket owners found", "PID\tCOMMAND\tSOCKETS\tFDS/LIMIT\tSTATES", s.Processes,
		func(p analyze.Process) string {
			return fmt.Sprintf("%d\t%s\t%d\t%s\t%s", p.PID, p.Comm, p.Sockets, fdUse(p.FDs, p.FDLimit), States(p.States))
		})
	for _, n := range s.Notes {
		fmt.Fprintf(ew, "\nnote: %s\n", n)
	}
	return ew.err
}

// section writes a titled, aligned table of items, or the empty text when
// there are none.
func section[T any](w io.Writer, title, empty, header string, items []T, row func(T) string) {
	fmt.Fprintf(w, "\n%s\n", title)
	if len(items) == 0 {
		fmt.Fprintf(w, "  %s\n", empty)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  %s\n", header)
	for _, it := range items {
		fmt.Fprintf(tw, "  %s\n", row(it))
	}
	tw.Flush()
}

func fdUse(fds int, limit uint64) string {
	switch limit {
	case 0:
		return strconv.Itoa(fds) + "/?"
	case ^uint64(0):
		return strconv.Itoa(fds) + "/unlimited"
	}
	return strconv.Itoa(fds) + "/" + strconv.FormatUint(limit, 10)
}

// errWriter keeps the first write error so Fprintf chains need no checks.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

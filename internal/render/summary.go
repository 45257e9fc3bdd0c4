package render

import (
	"encoding/json"
	"fmt"
	"io"
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

func procList(ps []analyze.ProcRef) string {
	if len(ps) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(ps))
	for i, p := range ps {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("+%d", len(ps)-3))
			break
		}
		parts = append(parts, p.Comm+"/"+strconv.Itoa(p.PID))
	}
	return strings.Join(parts, ",")
}

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

	fmt.Fprintf(ew, "\nEphemeral port budget (usable range %d ports per source IP, destination IP and port)\n", s.EphemeralRange)
	if len(s.PortBudget) == 0 {
		fmt.Fprintln(ew, "  no outbound connections from ephemeral ports")
	} else {
		tw = tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  SOURCE\tDESTINATION\tIN USE\tUSED\tTIME_WAIT\tPROCESS")
		for _, b := range s.PortBudget {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%d\t%s\n", b.Src, joinHostPort(b.Dst.String(), b.DstPort), b.InUse, Percent(b.Used), b.TimeWait(), procList(b.Processes))
		}
		tw.Flush()
	}

	fmt.Fprintln(ew, "\nTop destinations")
	if len(s.Destinations) == 0 {
		fmt.Fprintln(ew, "  none")
	} else {
		tw = tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  REMOTE\tSOCKETS\tSTATES\tPROCESS")
		for _, d := range s.Destinations {
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\n", d.Remote, d.Total, States(d.States), procList(d.Processes))
		}
		tw.Flush()
	}

	fmt.Fprintln(ew, "\nListeners")
	if len(s.Listeners) == 0 {
		fmt.Fprintln(ew, "  none")
	} else {
		tw = tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  LOCAL\tACCEPT Q\tBACKLOG\tCONNS\tPROCESS")
		for _, l := range s.Listeners {
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%s\n", l.Local, l.AcceptQueue, l.Backlog, l.Connections, procList(l.Processes))
		}
		tw.Flush()
	}

	fmt.Fprintln(ew, "\nProcesses by socket count")
	if len(s.Processes) == 0 {
		fmt.Fprintln(ew, "  no socket owners found")
	} else {
		tw = tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  PID\tCOMMAND\tSOCKETS\tFDS/LIMIT\tSTATES")
		for _, p := range s.Processes {
			fmt.Fprintf(tw, "  %d\t%s\t%d\t%s\t%s\n", p.PID, p.Comm, p.Sockets, fdUse(p.FDs, p.FDLimit), States(p.States))
		}
		tw.Flush()
	}
	for _, n := range s.Notes {
		fmt.Fprintf(ew, "\nnote: %s\n", n)
	}
	return ew.err
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

func joinHostPort(host string, port uint16) string {
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(int(port))
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

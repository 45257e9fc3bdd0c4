package analyze

import (
	"strconv"
	"time"

	"github.com/tcplens/tcplens/internal/snapshot"
)

// Summary is what `tcplens summary` shows.
type Summary struct {
	Time         time.Time     `json:"time"`
	Netns        string        `json:"netns,omitempty"`
	Total        int           `json:"total"`
	States       StateCounts   `json:"states"`
	Destinations []Destination `json:"destinations"`
	Listeners    []Listener    `json:"listeners"`
	Processes    []Process     `json:"processes"`
	PortBudget   []PortBudget  `json:"port_budget"`
	// EphemeralRange is the usable size of ip_local_port_range.
	EphemeralRange int `json:"ephemeral_range"`
	// Notes say what the numbers may miss (processes not visible, an
	// interrupted dump).
	Notes []string `json:"notes,omitempty"`
}

// Summarize builds a Summary; top limits each list (0 = no limit).
func Summarize(s *snapshot.Snapshot, top int) Summary {
	sum := Summary{
		Time: s.Time, Netns: s.Netns, Total: s.Total(), States: StateCounts(s.States),
		Destinations: clip(Destinations(s), top), Listeners: clip(Listeners(s), top),
		Processes: clip(Processes(s), top), PortBudget: clip(PortBudgets(s), top),
		EphemeralRange: s.Sysctls.EphemeralPorts(),
	}
	sum.Notes = Notes(s)
	return sum
}

// Notes explains the blind spots of a snapshot.
func Notes(s *snapshot.Snapshot) []string {
	var n []string
	if s.Dump.Interrupted {
		n = append(n, "the socket tables changed during the dump (NLM_F_DUMP_INTR): a few sockets may be missing or counted twice")
	}
	if s.Dump.Skipped > 0 {
		n = append(n, "skipped "+strconv.Itoa(s.Dump.Skipped)+" malformed netlink messages: "+s.Dump.LastParseError.Error())
	}
	if note := s.Procs.UnreadableNote(); note != "" {
		n = append(n, note)
	}
	return n
}

func clip[T any](s []T, n int) []T {
	if n > 0 && len(s) > n {
		return s[:n]
	}
	return s
}

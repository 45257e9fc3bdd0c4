package doctor

import (
	"encoding/json"
	"fmt"

	"github.com/tcplens/tcplens/internal/analyze"
)

// Severity orders findings. Doctor's exit code is 0 below Warning, 1 for
// Warning and 2 for Critical.
type Severity int

// Severities.
const (
	Info Severity = iota
	Warning
	Critical
)

func (s Severity) String() string {
	switch s {
	case Critical:
		return "critical"
	case Warning:
		return "warning"
	default:
		return "info"
	}
}

// MarshalJSON writes the lower-case name.
func (s Severity) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// UnmarshalJSON reads the lower-case name.
func (s *Severity) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return err
	}
	switch str {
	case "info":
		*s = Info
	case "warning":
		*s = Warning
	case "critical":
		*s = Critical
	default:
		return fmt.Errorf("unknown severity %q", str)
	}
	return nil
}

// Subject is something a finding is about: a destination ("10.0.0.5:5432"),
// a listener ("0.0.0.0:80"), a process ("java/1234") or a sysctl.
type Subject struct {
	Kind      string            `json:"kind"` // destination, listener, process, peer, sysctl
	Name      string            `json:"name"`
	Processes []analyze.ProcRef `json:"processes,omitempty"`
	Numbers   map[string]any    `json:"numbers,omitempty"`
}

// Finding is one problem with its proof and remedy.
type Finding struct {
	ID       string   `json:"id"`
	Severity Severity `json:"severity"`
	Title    string   `json:"title"`
	// Evidence holds the numbers behind the finding.
	Evidence map[string]any `json:"evidence"`
	// Explanation says why, in 2-5 sentences about this host's numbers.
	Explanation string `json:"explanation"`
	// Fix lists concrete steps.
	Fix      []string  `json:"fix"`
	Subjects []Subject `json:"subjects"`
}

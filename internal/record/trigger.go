package record

import (
	"fmt"
	"time"

	"github.com/tcplens/tcplens/internal/doctor"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// Triggers decide when full snapshots are captured.
type Triggers struct {
	// Severity: a finding at or above it that starts (or escalates to it)
	// triggers a capture.
	Severity doctor.Severity
	// A state count that rises by at least JumpAbs sockets and by at least
	// JumpRel times its previous value between two samples triggers a
	// capture; so does ESTABLISHED falling that much (a mass disconnect).
	// JumpAbs <= 0 disables jump triggers.
	JumpAbs int
	JumpRel float64
	// Before and After are the samples captured before and after the one
	// that triggered. A trigger while a capture is still collecting extends
	// it, up to MaxSnapshots snapshots in all.
	Before, After int
	MaxSnapshots  int
	// MaxSockets bounds the sockets (and TIME_WAIT groups) kept per
	// captured snapshot.
	MaxSockets int
	// Rate limit: a token bucket of Burst captures, refilled one per Every.
	// Triggers without a token are counted, not captured.
	Burst int
	Every time.Duration
}

// DefaultTriggers are the defaults of `tcplens record`.
func DefaultTriggers() Triggers {
	return Triggers{
		Severity: doctor.Warning, JumpAbs: 100, JumpRel: 0.5,
		Before: 1, After: 2, MaxSnapshots: 12, MaxSockets: 20000,
		Burst: 5, Every: 2 * time.Minute,
	}
}

func (t *Triggers) validate() error {
	switch {
	case t.Before < 0 || t.Before > 10:
		return fmt.Errorf("capture before %d: must be 0..10 samples", t.Before)
	case t.After < 0 || t.After > 60:
		return fmt.Errorf("capture after %d: must be 0..60 samples", t.After)
	case t.MaxSnapshots < 1+t.Before+t.After:
		return fmt.Errorf("max snapshots per capture %d: must be at least before+1+after = %d", t.MaxSnapshots, 1+t.Before+t.After)
	case t.MaxSockets < 1:
		return fmt.Errorf("max sockets per captured snapshot %d: must be at least 1", t.MaxSockets)
	case t.JumpRel < 0:
		return fmt.Errorf("relative jump %g: must be 0 or more", t.JumpRel)
	case t.Burst < 1 || t.Every <= 0:
		return fmt.Errorf("capture rate %d per %s: need a burst of at least 1 and a positive period", t.Burst, t.Every)
	}
	return nil
}

// Reason says why a capture was taken.
type Reason struct {
	Time time.Time `json:"time"`
	Kind string    `json:"kind"` // finding, jump
	// Finding triggers.
	Finding  string          `json:"finding,omitempty"`
	Severity doctor.Severity `json:"severity,omitzero"`
	Title    string          `json:"title,omitempty"`
	// Jump triggers.
	State string `json:"state,omitempty"`
	From  int    `json:"from,omitzero"`
	To    int    `json:"to,omitzero"`
}

// String is a one-line description.
func (r Reason) String() string {
	if r.Kind == "jump" {
		return fmt.Sprintf("%s %d -> %d", r.State, r.From, r.To)
	}
	return fmt.Sprintf("%s %s: %s", r.Severity, r.Finding, r.Title)
}

// jumps returns a reason for every state count that jumped.
func (t *Triggers) jumps(at time.Time, prev, now *[16]int) []Reason {
	if t.JumpAbs <= 0 {
		return nil
	}
	var out []Reason
	for _, st := range sockdiag.AllStates() {
		if a, b := prev[st], now[st]; t.jumped(a, b, st == sockdiag.Established) {
			out = append(out, Reason{Time: at, Kind: "jump", State: st.String(), From: a, To: b})
		}
	}
	return out
}

// jumped applies the jump thresholds to a count going from a to b: a rise,
// or with falls a change either way (a mass disconnect).
func (t *Triggers) jumped(a, b int, falls bool) bool {
	d := b - a
	if falls && d < 0 {
		d = -d
	}
	return t.JumpAbs > 0 && d >= t.JumpAbs && float64(d) >= t.JumpRel*float64(a)
}

// bucket is a token bucket over sample times (not the wall clock, so that
// tests and replays behave the same).
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) take(t *Triggers, now time.Time) bool {
	if b.last.IsZero() {
		b.tokens = float64(t.Burst)
	} else if d := now.Sub(b.last); d > 0 {
		b.tokens = min(float64(t.Burst), b.tokens+d.Seconds()/t.Every.Seconds())
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}

package top

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tcplens/tcplens/internal/analyze"
)

// Filter selects rows. Its text is space-separated terms that must all
// match:
//
//	pid:1234     a row owned by that process
//	10.0.0.0/8   a row with an address in the prefix (a bare address too)
//	anything     a case-insensitive substring of the row's addresses,
//	             process names ("java/1234"), finding id or title
//
// The zero Filter matches every row.
type Filter struct {
	text     string
	pids     []int
	prefixes []netip.Prefix
	words    []string // lower case
}

// maxFilterTerms bounds the work per row; a filter is typed by hand.
const maxFilterTerms = 16

// ParseFilter parses the filter text. Errors are one line and name the
// term.
func ParseFilter(s string) (Filter, error) {
	f := Filter{text: strings.TrimSpace(s)}
	terms := strings.Fields(s)
	if len(terms) > maxFilterTerms {
		return Filter{}, fmt.Errorf("filter: %d terms, at most %d", len(terms), maxFilterTerms)
	}
	for _, t := range terms {
		if v, ok := strings.CutPrefix(t, "pid:"); ok {
			pid, err := strconv.Atoi(v)
			if err != nil || pid <= 0 {
				return Filter{}, fmt.Errorf("filter %q: pid must be a positive number", t)
			}
			f.pids = append(f.pids, pid)
			continue
		}
		if strings.Contains(t, "/") {
			if p, err := netip.ParsePrefix(t); err == nil {
				f.prefixes = append(f.prefixes, p.Masked())
				continue
			}
		} else if a, err := netip.ParseAddr(t); err == nil {
			f.prefixes = append(f.prefixes, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		f.words = append(f.words, strings.ToLower(t))
	}
	return f, nil
}

// String returns the filter text.
func (f Filter) String() string { return f.text }

// Empty reports whether the filter matches everything.
func (f Filter) Empty() bool { return len(f.pids)+len(f.prefixes)+len(f.words) == 0 }

// subject is what a row offers to a filter.
type subject struct {
	addrs []netip.Addr
	procs []analyze.ProcRef
	text  []string // addresses and names as shown
}

func (f Filter) match(s *subject) bool {
	for _, pid := range f.pids {
		ok := false
		for _, p := range s.procs {
			ok = ok || p.PID == pid
		}
		if !ok {
			return false
		}
	}
	for _, p := range f.prefixes {
		ok := false
		for _, a := range s.addrs {
			ok = ok || p.Contains(a.Unmap())
		}
		if !ok {
			return false
		}
	}
	for _, w := range f.words {
		if !s.contains(w) {
			return false
		}
	}
	return true
}

func (s *subject) contains(w string) bool {
	for _, t := range s.text {
		if strings.Contains(strings.ToLower(t), w) {
			return true
		}
	}
	for _, p := range s.procs {
		if strings.Contains(strings.ToLower(p.Label()), w) {
			return true
		}
	}
	return false
}

package kernel

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

// Size is the number of ports in the range.
func (r PortRange) Size() int { return int(r.Hi) - int(r.Lo) + 1 }

// Contains reports whether port is in the range.
func (r PortRange) Contains(port uint16) bool { return port >= r.Lo && port <= r.Hi }

// Sysctls holds the TCP settings doctor needs, read in the target namespace
// from /proc/sys. Optional ones have a Has* flag: they are absent on older
// kernels or when nf_conntrack is not loaded.
type Sysctls struct {
	LocalPortRange PortRange   // net.ipv4.ip_local_port_range
	ReservedPorts  []PortRange // net.ipv4.ip_local_reserved_ports ("" or "1000-1010,2000")

	TWReuse         int  // net.ipv4.tcp_tw_reuse: 0 off, 1 on, 2 loopback only
	TWReuseDelayMs  int  // net.ipv4.tcp_tw_reuse_delay, ms
	HasTWReuseDelay bool // tcp_tw_reuse_delay exists (6.13+)
	Timestamps      int  // net.ipv4.tcp_timestamps
	MaxTWBuckets    int  // net.ipv4.tcp_max_tw_buckets
	FinTimeout      int  // net.ipv4.tcp_fin_timeout, seconds (orphaned FIN_WAIT2 only)

	KeepaliveTime   int // net.ipv4.tcp_keepalive_time, seconds
	KeepaliveIntvl  int // net.ipv4.tcp_keepalive_intvl, seconds
	KeepaliveProbes int // net.ipv4.tcp_keepalive_probes, count

	Retries1   int // net.ipv4.tcp_retries1
	Retries2   int // net.ipv4.tcp_retries2
	SynRetries int // net.ipv4.tcp_syn_retries

	RTOMinUs  int  // net.ipv4.tcp_rto_min_us
	HasRTOMin bool // tcp_rto_min_us exists (6.11+)

	Somaxconn     int // net.core.somaxconn
	MaxSynBacklog int // net.ipv4.tcp_max_syn_backlog

	ConntrackEstablished int  // net.netfilter.nf_conntrack_tcp_timeout_established, seconds
	HasConntrack         bool // nf_conntrack is loaded
}

// sysctlRoot is where the kernel exposes sysctls; /proc/sys/net resolves in
// the network namespace of the calling thread.
const sysctlRoot = "/proc/sys"

// ReadSysctls reads the settings from /proc/sys of the calling thread's
// network namespace; call it inside netns.Run for another namespace. A
// missing optional key is not an error; a missing required key is an error
// naming the key.
func ReadSysctls() (Sysctls, error) { return readSysctls(sysctlRoot) }

func readSysctls(root string) (Sysctls, error) {
	var s Sysctls
	r := sysctlReader{root: root}

	if v := r.str("net.ipv4.ip_local_port_range", true); r.err == nil {
		rng, err := parseLocalPortRange(v)
		if err != nil {
			return Sysctls{}, fmt.Errorf("sysctl net.ipv4.ip_local_port_range: %w", err)
		}
		s.LocalPortRange = rng
	}
	if v := r.str("net.ipv4.ip_local_reserved_ports", true); r.err == nil {
		rs, err := ParsePortRanges(v)
		if err != nil {
			return Sysctls{}, fmt.Errorf("sysctl net.ipv4.ip_local_reserved_ports: %w", err)
		}
		s.ReservedPorts = rs
	}

	r.int(&s.TWReuse, "net.ipv4.tcp_tw_reuse")
	s.HasTWReuseDelay = r.optInt(&s.TWReuseDelayMs, "net.ipv4.tcp_tw_reuse_delay")
	r.int(&s.Timestamps, "net.ipv4.tcp_timestamps")
	r.int(&s.MaxTWBuckets, "net.ipv4.tcp_max_tw_buckets")
	r.int(&s.FinTimeout, "net.ipv4.tcp_fin_timeout")
	r.int(&s.KeepaliveTime, "net.ipv4.tcp_keepalive_time")
	r.int(&s.KeepaliveIntvl, "net.ipv4.tcp_keepalive_intvl")
	r.int(&s.KeepaliveProbes, "net.ipv4.tcp_keepalive_probes")
	r.int(&s.Retries1, "net.ipv4.tcp_retries1")
	r.int(&s.Retries2, "net.ipv4.tcp_retries2")
	r.int(&s.SynRetries, "net.ipv4.tcp_syn_retries")
	s.HasRTOMin = r.optInt(&s.RTOMinUs, "net.ipv4.tcp_rto_min_us")
	r.int(&s.Somaxconn, "net.core.somaxconn")
	r.int(&s.MaxSynBacklog, "net.ipv4.tcp_max_syn_backlog")
	s.HasConntrack = r.optInt(&s.ConntrackEstablished, "net.netfilter.nf_conntrack_tcp_timeout_established")

	if r.err != nil {
		return Sysctls{}, r.err
	}
	return s, nil
}

// sysctlReader keeps the first error so the field list above stays flat.
type sysctlReader struct {
	root string
	err  error
}

// str reads key; a missing key is an error only when required.
func (r *sysctlReader) str(key string, required bool) string {
	if r.err != nil {
		return ""
	}
	path := filepath.Join(r.root, strings.ReplaceAll(key, ".", "/"))
	b, err := os.ReadFile(path)
	if err != nil {
		if !required && errors.Is(err, fs.ErrNotExist) {
			return ""
		}
		r.err = fmt.Errorf("sysctl %s: read %s: %w", key, path, err)
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (r *sysctlReader) int(dst *int, key string) {
	r.intKey(dst, key, true)
}

// optInt reports whether the optional key exists.
func (r *sysctlReader) optInt(dst *int, key string) bool {
	return r.intKey(dst, key, false)
}

func (r *sysctlReader) intKey(dst *int, key string, required bool) bool {
	if r.err != nil {
		return false
	}
	path := filepath.Join(r.root, strings.ReplaceAll(key, ".", "/"))
	if !required {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return false
		}
	}
	s := r.str(key, true)
	if r.err != nil {
		return false
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		r.err = fmt.Errorf("sysctl %s: value %q is not an integer", key, s)
		return false
	}
	*dst = v
	return true
}

// parseLocalPortRange parses "32768\t60999".
func parseLocalPortRange(s string) (PortRange, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return PortRange{}, fmt.Errorf("want two ports, got %q", s)
	}
	lo, err := parsePort(f[0])
	if err != nil {
		return PortRange{}, err
	}
	hi, err := parsePort(f[1])
	if err != nil {
		return PortRange{}, err
	}
	if lo > hi {
		return PortRange{}, fmt.Errorf("range %d-%d is reversed", lo, hi)
	}
	return PortRange{Lo: lo, Hi: hi}, nil
}

func parsePort(s string) (uint16, error) {
	v, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return uint16(v), nil
}

// ParsePortRanges parses the ip_local_reserved_ports format: a comma
// separated list of ports and inclusive ranges, "1000-1010,2000". An empty
// string (the default) gives nil. Ranges are returned as written; they may
// overlap.
func ParsePortRanges(s string) ([]PortRange, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var out []PortRange
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, fmt.Errorf("empty element in port list %q", s)
		}
		loS, hiS, isRange := strings.Cut(item, "-")
		lo, err := parsePort(strings.TrimSpace(loS))
		if err != nil {
			return nil, fmt.Errorf("port list element %q: %w", item, err)
		}
		hi := lo
		if isRange {
			if hi, err = parsePort(strings.TrimSpace(hiS)); err != nil {
				return nil, fmt.Errorf("port list element %q: %w", item, err)
			}
			if lo > hi {
				return nil, fmt.Errorf("port list element %q: range is reversed", item)
			}
		}
		out = append(out, PortRange{Lo: lo, Hi: hi})
	}
	return out, nil
}

// FormatPortRanges is the inverse of ParsePortRanges.
func FormatPortRanges(rs []PortRange) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(r.Lo)))
		if r.Hi != r.Lo {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(int(r.Hi)))
		}
	}
	return b.String()
}

// EphemeralPorts returns the number of usable ephemeral ports: the size of
// LocalPortRange minus the reserved ports inside it. Reserved ranges may
// overlap each other and the range edges; each port is counted once. This is
// the connect() budget per (src IP, dst IP, dst port).
func (s *Sysctls) EphemeralPorts() int {
	rng := s.LocalPortRange
	if rng.Lo > rng.Hi {
		return 0
	}
	n := rng.Size()
	for _, r := range mergeRanges(s.ReservedPorts) {
		lo, hi := max(r.Lo, rng.Lo), min(r.Hi, rng.Hi)
		if lo <= hi {
			n -= int(hi) - int(lo) + 1
		}
	}
	return n
}

// IsEphemeral reports whether port is inside LocalPortRange and not reserved,
// i.e. whether connect() could have picked it.
func (s *Sysctls) IsEphemeral(port uint16) bool {
	if !s.LocalPortRange.Contains(port) {
		return false
	}
	for _, r := range s.ReservedPorts {
		if r.Contains(port) {
			return false
		}
	}
	return true
}

// mergeRanges returns sorted, non-overlapping ranges covering the same
// ports; the input is not modified.
func mergeRanges(rs []PortRange) []PortRange {
	if len(rs) == 0 {
		return nil
	}
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(a, b PortRange) int { return int(a.Lo) - int(b.Lo) })
	out := sorted[:1]
	for _, r := range sorted[1:] {
		last := &out[len(out)-1]
		if r.Lo <= last.Hi || int(r.Lo) == int(last.Hi)+1 {
			last.Hi = max(last.Hi, r.Hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// Retransmission constants from include/net/tcp.h.
const (
	RTOMin      = 200 * time.Millisecond // TCP_RTO_MIN
	RTOMax      = 120 * time.Second      // TCP_RTO_MAX
	TimeoutInit = time.Second            // TCP_TIMEOUT_INIT, the first SYN's RTO
)

// RetransmitBudget returns how long the kernel keeps retransmitting
// unacknowledged data before giving up with tcp_retries2=retries2 (and no
// TCP_USER_TIMEOUT). Like tcp_model_timeout() in net/ipv4/tcp_timer.c it
// models the RTO as starting at TCP_RTO_MIN (200 ms), doubling per retry and
// capped at TCP_RTO_MAX (120 s), whatever the real RTT:
// sum over i=0..n of min(0.2*2^i, 120) s. That is 924.6 s for 15 and 102.2 s
// for 8. The connection dies at the first timer expiry after the budget.
// Negative retries2 gives 0.
func RetransmitBudget(retries2 int) time.Duration {
	return ModelTimeout(retries2, RTOMin)
}

// ModelTimeout is tcp_model_timeout() in net/ipv4/tcp_timer.c: the time
// budget for retries retransmissions, modelled as an RTO starting at base
// and doubling per retry up to TCP_RTO_MAX. With base TCP_RTO_MIN it is
// RetransmitBudget; with TCP_TIMEOUT_INIT, the SYN budget of
// tcp_syn_retries (127 s for 6). Negative retries or a base <= 0 give 0;
// a budget beyond time.Duration saturates at its maximum.
func ModelTimeout(retries int, base time.Duration) time.Duration {
	if retries < 0 || base <= 0 {
		return 0
	}
	// linear_backoff_thresh = ilog2(TCP_RTO_MAX / base): 9 for 200 ms.
	// Shifting RTOMax down rather than base up cannot overflow.
	thresh := 0
	for base <= RTOMax>>(thresh+1) {
		thresh++
	}
	if retries <= thresh {
		return time.Duration((int64(2)<<retries)-1) * base
	}
	exp := time.Duration((int64(2)<<thresh)-1) * base
	linear := retries - thresh
	if int64(linear) > (math.MaxInt64-int64(exp))/int64(RTOMax) {
		return math.MaxInt64
	}
	return exp + time.Duration(linear)*RTOMax
}

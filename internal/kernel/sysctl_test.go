package kernel

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParsePortRanges(t *testing.T) {
	good := map[string][]PortRange{
		"":                     nil,
		"\n":                   nil,
		"2000":                 {{2000, 2000}},
		"1000-1010,2000\n":     {{1000, 1010}, {2000, 2000}},
		"0-65535":              {{0, 65535}},
		" 5 - 7 , 9 ":          {{5, 7}, {9, 9}},
		"40010-40019,40050":    {{40010, 40019}, {40050, 40050}},
		"10-20,15-25,20-20,18": {{10, 20}, {15, 25}, {20, 20}, {18, 18}},
	}
	for in, want := range good {
		got, err := ParsePortRanges(in)
		if err != nil {
			t.Errorf("ParsePortRanges(%q): %v", in, err)
			continue
		}
		if !slices.Equal(got, want) {
			t.Errorf("ParsePortRanges(%q) = %v, want %v", in, got, want)
		}
	}
	for _, in := range []string{",", "1,", ",1", "1,,2", "a", "1-", "-1", "1-2-3", "20-10", "65536", "-", "1-x", "+5", "1 2"} {
		if got, err := ParsePortRanges(in); err == nil {
			t.Errorf("ParsePortRanges(%q) = %v, want an error", in, got)
		}
	}
}

func FuzzParsePortRanges(f *testing.F) {
	for _, s := range []string{"", "2000", "1000-1010,2000", "0-65535", "1,,2", "20-10", "65536", " 5 - 7 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		rs, err := ParsePortRanges(in)
		if err != nil {
			return
		}
		for _, r := range rs {
			if r.Lo > r.Hi {
				t.Fatalf("%q gave reversed range %v", in, r)
			}
		}
		again, err := ParsePortRanges(FormatPortRanges(rs))
		if err != nil || !slices.Equal(again, rs) {
			t.Fatalf("round trip of %q: %v, %v (was %v)", in, again, err, rs)
		}
		// EphemeralPorts must agree with a brute-force count.
		s := Sysctls{LocalPortRange: PortRange{30000, 40000}, ReservedPorts: rs}
		want := 0
		for p := 30000; p <= 40000; p++ {
			if s.IsEphemeral(uint16(p)) {
				want++
			}
		}
		if got := s.EphemeralPorts(); got != want {
			t.Fatalf("EphemeralPorts for %q = %d, brute force %d", in, got, want)
		}
	})
}

func TestEphemeralPorts(t *testing.T) {
	cases := []struct {
		rng      PortRange
		reserved string
		want     int
	}{
		{PortRange{32768, 60999}, "", 28232},
		{PortRange{40000, 40099}, "40010-40019,40050", 89},
		{PortRange{40000, 40099}, "40010-40019,40015-40030,40019", 79},             // overlapping
		{PortRange{40000, 40099}, "39990-40004,40095-40200", 90},                   // crossing the edges
		{PortRange{40000, 40099}, "1000-2000,50000", 100},                          // outside
		{PortRange{40000, 40099}, "0-65535", 0},                                    // everything
		{PortRange{40000, 40099}, "40050,40050,40050", 99},                         // duplicates
		{PortRange{40000, 40099}, "40000-40009,40010-40019", 80},                   // adjacent
		{PortRange{5, 5}, "", 1},                                                   // single port
		{PortRange{0, 65535}, "1-65534", 2},                                        // full width
		{PortRange{40000, 40099}, "40090-40099,40000-40000,40001-40089", 0},        // unsorted, full cover
		{PortRange{40000, 40099}, "40010-40019,40012-40013,40050,40049-40051", 87}, // contained
	}
	for _, c := range cases {
		rs, err := ParsePortRanges(c.reserved)
		if err != nil {
			t.Fatal(err)
		}
		orig := slices.Clone(rs)
		s := Sysctls{LocalPortRange: c.rng, ReservedPorts: rs}
		if got := s.EphemeralPorts(); got != c.want {
			t.Errorf("range %v reserved %q: EphemeralPorts = %d, want %d", c.rng, c.reserved, got, c.want)
		}
		if !slices.Equal(rs, orig) {
			t.Errorf("EphemeralPorts reordered ReservedPorts: %v", rs)
		}
	}
}

func TestIsEphemeral(t *testing.T) {
	s := Sysctls{LocalPortRange: PortRange{40000, 40099}, ReservedPorts: []PortRange{{40010, 40019}, {40050, 40050}}}
	for port, want := range map[uint16]bool{
		39999: false, 40000: true, 40009: true, 40010: false, 40019: false, 40020: true,
		40050: false, 40051: true, 40099: true, 40100: false, 0: false, 65535: false,
	} {
		if got := s.IsEphemeral(port); got != want {
			t.Errorf("IsEphemeral(%d) = %v, want %v", port, got, want)
		}
	}
}

func TestRetransmitBudget(t *testing.T) {
	cases := map[int]time.Duration{
		-1: 0,
		0:  200 * time.Millisecond,
		1:  600 * time.Millisecond,
		3:  3 * time.Second,
		5:  12600 * time.Millisecond,
		8:  102200 * time.Millisecond,
		9:  204600 * time.Millisecond,
		10: 324600 * time.Millisecond,
		15: 924600 * time.Millisecond,
	}
	for n, want := range cases {
		if got := RetransmitBudget(n); got != want {
			t.Errorf("RetransmitBudget(%d) = %v, want %v", n, got, want)
		}
	}
	// Against the plain sum from DESIGN.md section 4.
	for n := 0; n <= 30; n++ {
		var sum time.Duration
		for i := 0; i <= n; i++ {
			sum += min(200*time.Millisecond<<i, 120*time.Second)
		}
		if got := RetransmitBudget(n); got != sum {
			t.Errorf("RetransmitBudget(%d) = %v, sum formula %v", n, got, sum)
		}
	}
	if got := RetransmitBudget(int(^uint(0) >> 1)); got <= 0 {
		t.Errorf("RetransmitBudget(MaxInt) = %v, want saturation", got)
	}
}

func TestModelTimeout(t *testing.T) {
	// SYNs start at TCP_TIMEOUT_INIT: tcp_syn_retries=6 gives 127 s,
	// 1+2+4+...+64, as the kernel documents.
	cases := []struct {
		n    int
		base time.Duration
		want time.Duration
	}{
		{6, TimeoutInit, 127 * time.Second},
		{7, TimeoutInit, 247 * time.Second}, // the 8th RTO is capped at 120 s
		{15, RTOMin, RetransmitBudget(15)},
		{-1, TimeoutInit, 0},
		{3, 0, 0},
		{3, -time.Second, 0},
	}
	for _, c := range cases {
		if got := ModelTimeout(c.n, c.base); got != c.want {
			t.Errorf("ModelTimeout(%d, %v) = %v, want %v", c.n, c.base, got, c.want)
		}
	}
	// Huge bases and retry counts saturate instead of overflowing or
	// looping.
	for _, base := range []time.Duration{time.Nanosecond, TimeoutInit, math.MaxInt64 / 2, math.MaxInt64} {
		if got := ModelTimeout(int(^uint(0)>>1), base); got != math.MaxInt64 {
			t.Errorf("ModelTimeout(MaxInt, %v) = %v, want saturation", base, got)
		}
	}
}

// writeSysctls builds a fake /proc/sys with the given keys.
func writeSysctls(t *testing.T, kv map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for k, v := range kv {
		p := filepath.Join(root, strings.ReplaceAll(k, ".", "/"))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func requiredSysctls() map[string]string {
	return map[string]string{
		"net.ipv4.ip_local_port_range":     "32768\t60999",
		"net.ipv4.ip_local_reserved_ports": "",
		"net.ipv4.tcp_tw_reuse":            "2",
		"net.ipv4.tcp_timestamps":          "1",
		"net.ipv4.tcp_max_tw_buckets":      "131072",
		"net.ipv4.tcp_fin_timeout":         "60",
		"net.ipv4.tcp_keepalive_time":      "7200",
		"net.ipv4.tcp_keepalive_intvl":     "75",
		"net.ipv4.tcp_keepalive_probes":    "9",
		"net.ipv4.tcp_retries1":            "3",
		"net.ipv4.tcp_retries2":            "15",
		"net.ipv4.tcp_syn_retries":         "6",
		"net.core.somaxconn":               "4096",
		"net.ipv4.tcp_max_syn_backlog":     "2048",
	}
}

func TestReadSysctlsFake(t *testing.T) {
	s, err := readSysctls(writeSysctls(t, requiredSysctls()))
	if err != nil {
		t.Fatal(err)
	}
	if s.HasTWReuseDelay || s.HasRTOMin || s.HasConntrack {
		t.Errorf("optional keys reported present: %+v", s)
	}
	if s.LocalPortRange != (PortRange{32768, 60999}) || s.ReservedPorts != nil || s.EphemeralPorts() != 28232 ||
		s.Retries2 != 15 || s.Somaxconn != 4096 || s.KeepaliveIntvl != 75 {
		t.Errorf("got %+v", s)
	}

	kv := requiredSysctls()
	kv["net.ipv4.tcp_tw_reuse_delay"] = "1000"
	kv["net.ipv4.tcp_rto_min_us"] = "200000"
	kv["net.netfilter.nf_conntrack_tcp_timeout_established"] = "432000"
	s, err = readSysctls(writeSysctls(t, kv))
	if err != nil {
		t.Fatal(err)
	}
	if !s.HasTWReuseDelay || s.TWReuseDelayMs != 1000 || !s.HasRTOMin || s.RTOMinUs != 200000 ||
		!s.HasConntrack || s.ConntrackEstablished != 432000 {
		t.Errorf("optional keys: %+v", s)
	}

	for key := range requiredSysctls() {
		kv := requiredSysctls()
		delete(kv, key)
		if _, err := readSysctls(writeSysctls(t, kv)); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("without %s: error %v does not name the key", key, err)
		}
	}

	bad := map[string]string{
		"net.ipv4.ip_local_port_range":     "60999 32768",
		"net.ipv4.tcp_retries2":            "lots",
		"net.core.somaxconn":               "",
		"net.ipv4.tcp_rto_min_us":          "x",
		"net.ipv4.ip_local_reserved_ports": "1,,2",
	}
	for key, v := range bad {
		kv := requiredSysctls()
		kv[key] = v
		if _, err := readSysctls(writeSysctls(t, kv)); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s=%q: error %v does not name the key", key, v, err)
		}
	}
}

package filter

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tcplens/tcplens/internal/procs"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

func sock(state sockdiag.State, local, remote string) *sockdiag.Socket {
	return &sockdiag.Socket{State: state, Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort(remote)}
}

func TestMatch(t *testing.T) {
	f, err := Parse(Spec{States: []string{"time-wait,CLOSE_WAIT"}, Dst: []string{"10.0.0.0/8"}, Dport: []string{"443", "8000-8080"}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		s    *sockdiag.Socket
		want bool
	}{
		{sock(sockdiag.TimeWait, "192.168.1.1:40000", "10.1.2.3:443"), true},
		{sock(sockdiag.CloseWait, "192.168.1.1:40000", "10.1.2.3:8080"), true},
		{sock(sockdiag.Established, "192.168.1.1:40000", "10.1.2.3:443"), false},
		{sock(sockdiag.TimeWait, "192.168.1.1:40000", "11.1.2.3:443"), false},
		{sock(sockdiag.TimeWait, "192.168.1.1:40000", "10.1.2.3:8081"), false},
	}
	for _, c := range cases {
		if got := f.Match(c.s, nil); got != c.want {
			t.Errorf("%s %s->%s: got %v want %v", c.s.State, c.s.Local, c.s.Remote, got, c.want)
		}
	}
	if f.Mask() != sockdiag.MaskOf(sockdiag.TimeWait, sockdiag.CloseWait) {
		t.Errorf("mask %b", f.Mask())
	}
}

func TestGroupsAndProcess(t *testing.T) {
	f, err := Parse(Spec{States: []string{"connected"}, Process: "nginx"})
	if err != nil {
		t.Fatal(err)
	}
	if f.Mask().Has(sockdiag.Listen) || !f.Mask().Has(sockdiag.TimeWait) {
		t.Errorf("connected mask %b", f.Mask())
	}
	s := sock(sockdiag.Established, "127.0.0.1:80", "127.0.0.1:5000")
	if f.Match(s, nil) || f.Match(s, []*procs.Process{{PID: 9, Comm: "curl"}}) || !f.Match(s, []*procs.Process{{PID: 9, Comm: "nginx"}}) {
		t.Error("process filter by name")
	}
	f, _ = Parse(Spec{Process: "42", Src: []string{"[::1]"}})
	if f.PID != 42 || !f.Match(sock(sockdiag.Established, "[::1]:80", "[::1]:5000"), []*procs.Process{{PID: 42}}) {
		t.Error("process filter by pid")
	}
}

func TestParseErrors(t *testing.T) {
	bad := []Spec{
		{States: []string{"sleeping"}},
		{Src: []string{"10.0.0.300"}},
		{Dst: []string{"10.0.0.0/33"}},
		{Sport: []string{"70000"}},
		{Dport: []string{"90-80"}},
		{Dport: []string{"http"}},
		{Process: "-3"},
		{Process: "a/b"},
	}
	for _, s := range bad {
		_, err := Parse(s)
		if err == nil {
			t.Errorf("%+v: accepted", s)
			continue
		}
		if strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), "--") {
			t.Errorf("%+v: error %q is not one line naming the flag", s, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("time-wait", "10.0.0.0/8", "::1", "1-2", "443", "nginx")
	f.Fuzz(func(t *testing.T, st, src, dst, sp, dp, proc string) {
		flt, err := Parse(Spec{States: []string{st}, Src: []string{src}, Dst: []string{dst}, Sport: []string{sp}, Dport: []string{dp}, Process: proc})
		if err != nil {
			if strings.Contains(err.Error(), "\n") && !strings.ContainsAny(st+src+dst+sp+dp+proc, "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		flt.Match(sock(sockdiag.Established, "127.0.0.1:1", "127.0.0.1:2"), nil)
	})
}

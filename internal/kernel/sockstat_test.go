package kernel

import (
	"strings"
	"testing"
)

func TestParseSockstat(t *testing.T) {
	in := "sockets: used 12\nTCP: inuse 3 orphan 1 tw 100000 alloc 5 mem 288\nUDP: inuse 0 mem 0\n"
	in6 := "TCP6: inuse 2\nUDP6: inuse 0\n"
	var s Sockstat
	if err := ParseSockstat(strings.NewReader(in), &s); err != nil {
		t.Fatal(err)
	}
	if err := ParseSockstat(strings.NewReader(in6), &s); err != nil {
		t.Fatal(err)
	}
	if s != (Sockstat{InUse: 5, Orphan: 1, TW: 100000, Alloc: 5}) {
		t.Errorf("%+v", s)
	}
	for _, bad := range []string{"TCP: inuse x", "TCP: inuse", "TCP: tw -1", "TCP6: inuse 99999999999999999999"} {
		if err := ParseSockstat(strings.NewReader(bad), &s); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseSockstat(f *testing.F) {
	f.Add("TCP: inuse 3 orphan 1 tw 10 alloc 5 mem 288\n")
	f.Add("TCP6: inuse 2\n")
	f.Add("TCP: \nTCP6:")
	f.Fuzz(func(t *testing.T, in string) {
		var s Sockstat
		if err := ParseSockstat(strings.NewReader(in), &s); err == nil && (s.InUse < 0 || s.TW < 0 || s.Orphan < 0 || s.Alloc < 0) {
			t.Fatalf("negative count accepted: %+v", s)
		}
	})
}

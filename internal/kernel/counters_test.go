package kernel

import (
	"math"
	"strings"
	"testing"
)

const sampleNetstat = `TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPTimeWaitOverflow
TcpExt: 0 7 9 150
IpExt: InNoRoutes InOctets OutOctets
IpExt: 0 22888203 18446744073709551615
`

const sampleSNMP = `Ip: Forwarding DefaultTTL InReceives
Ip: 2 64 1218
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails RetransSegs
Tcp: 1 200 120000 -1 12 3 4 5
IcmpMsg: InType3 OutType3
IcmpMsg: 1 1
`

func TestParseCounters(t *testing.T) {
	c := Counters{}
	if err := ParseCounters(strings.NewReader(sampleNetstat), c); err != nil {
		t.Fatal(err)
	}
	if err := ParseCounters(strings.NewReader(sampleSNMP), c); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{
		"TcpExt.ListenOverflows":     7,
		"TcpExt.ListenDrops":         9,
		"TcpExt.TCPTimeWaitOverflow": 150,
		"IpExt.InOctets":             22888203,
		"IpExt.OutOctets":            -1, // MaxUint64 wraps
		"Ip.DefaultTTL":              64,
		"Tcp.MaxConn":                -1,
		"Tcp.AttemptFails":           4,
		"Tcp.RetransSegs":            5,
		"IcmpMsg.OutType3":           1,
	}
	for k, v := range want {
		if got, ok := c[k]; !ok || got != v {
			t.Errorf("%s = %d (present %v), want %d", k, got, ok, v)
		}
	}
	if n := len(c); n != 4+3+3+8+2 {
		t.Errorf("got %d keys, want 20: %v", n, c)
	}
	if c.Get("TcpExt.NoSuchField") != 0 {
		t.Error("Get of a missing key is not 0")
	}
}

func TestParseCountersErrors(t *testing.T) {
	cases := map[string]string{
		"values without header":  "TcpExt: 1 2 3\n",
		"header without values":  "TcpExt: A B\n",
		"second header missing":  "TcpExt: A B\nTcpExt: 1 2\nIpExt: C\n",
		"count mismatch short":   "TcpExt: A B\nTcpExt: 1\n",
		"count mismatch long":    "TcpExt: A B\nTcpExt: 1 2 3\n",
		"non-numeric":            "TcpExt: A B\nTcpExt: 1 x\n",
		"float":                  "TcpExt: A\nTcpExt: 1.5\n",
		"overflow":               "TcpExt: A\nTcpExt: 99999999999999999999999\n",
		"section mismatch":       "TcpExt: A B\nIpExt: 1 2\n",
		"no colon":               "TcpExt A B\nTcpExt: 1 2\n",
		"empty section":          ": A\n: 1\n",
		"space in section":       "Tcp Ext: A\nTcp Ext: 1\n",
		"two headers":            "TcpExt: A B\nTcpExt: C D\n",
		"negative without names": "Tcp: -1\n",
		"too long":               "TcpExt: " + strings.Repeat("A ", maxCounterLine) + "\n",
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			err := ParseCounters(strings.NewReader(in), Counters{})
			if err == nil {
				t.Fatalf("no error for %q", truncate([]byte(in)))
			}
			t.Log(err)
		})
	}
}

func TestParseCountersLenient(t *testing.T) {
	c := Counters{}
	in := "\nTcpExt: A  B\t\n\nTcpExt:   1 2\r\nEmpty:\nEmpty:\n"
	if err := ParseCounters(strings.NewReader(in), c); err != nil {
		t.Fatal(err)
	}
	if c["TcpExt.A"] != 1 || c["TcpExt.B"] != 2 || len(c) != 2 {
		t.Fatalf("got %v", c)
	}
}

func TestDelta(t *testing.T) {
	prev := Counters{"a": 5, "b": 1, "gone": 3, "wrap": math.MaxInt64}
	cur := Counters{"a": 8, "b": 1, "new": 4, "wrap": math.MinInt64 + 1}
	d := cur.Delta(prev)
	want := Counters{"a": 3, "b": 0, "new": 4, "wrap": 2}
	if len(d) != len(want) {
		t.Fatalf("got %v, want %v", d, want)
	}
	for k, v := range want {
		if d[k] != v {
			t.Errorf("delta %s = %d, want %d", k, d[k], v)
		}
	}
	if cur["a"] != 8 || prev["a"] != 5 {
		t.Error("Delta modified its inputs")
	}
}

func FuzzParseCounters(f *testing.F) {
	f.Add(sampleNetstat)
	f.Add(sampleSNMP)
	f.Add("TcpExt: A\nTcpExt: 1\n")
	f.Add("TcpExt: 1\n")
	f.Add(":\n:\n")
	f.Add("A: -\nA: -\n")
	f.Fuzz(func(t *testing.T, in string) {
		c := Counters{}
		err := ParseCounters(strings.NewReader(in), c)
		if err != nil {
			return
		}
		for k := range c {
			sec, field, ok := strings.Cut(k, ".")
			if !ok || sec == "" || field == "" {
				t.Fatalf("bad key %q from %q", k, in)
			}
		}
	})
}

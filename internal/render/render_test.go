package render

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcplens/tcplens/internal/procs"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

func TestDuration(t *testing.T) {
	cases := map[time.Duration]string{
		340 * time.Millisecond: "340ms", 1400 * time.Millisecond: "1.4s", 42 * time.Second: "42s",
		192 * time.Second: "3m12s", 2*time.Hour + 5*time.Minute: "2h5m",
	}
	for d, want := range cases {
		if got := Duration(d); got != want {
			t.Errorf("Duration(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestTimer(t *testing.T) {
	s := &sockdiag.Socket{Timer: sockdiag.TimerRetransmit, TimerExpires: 1400 * time.Millisecond, Retrans: 3}
	if got := Timer(s); got != "retransmit 1.4s #3" {
		t.Errorf("got %q", got)
	}
	s = &sockdiag.Socket{Timer: sockdiag.TimerTimeWait, TimerExpires: 42 * time.Second}
	if got := Timer(s); got != "timewait 42s" {
		t.Errorf("got %q", got)
	}
	if got := Timer(&sockdiag.Socket{}); got != "" {
		t.Errorf("no timer: %q", got)
	}
}

func sample() *sockdiag.Socket {
	return &sockdiag.Socket{
		Family: 10, State: sockdiag.Established,
		Local: netip.MustParseAddrPort("[2001:db8::1]:40000"), Remote: netip.MustParseAddrPort("[2001:db8::2]:443"),
		HasInfo: true, Info: sockdiag.TCPInfo{RTT: 1500, BytesSent: 3 << 20}, Cong: "cubic",
	}
}

func FuzzSocketJSON(f *testing.F) {
	f.Add("nginx", "cubic")
	f.Add("a\"b\\c\x00\xff\xfe", "bb\nr")
	f.Fuzz(func(t *testing.T, comm, cong string) {
		var buf bytes.Buffer
		w := NewSocketJSON(&buf, SocketColumns{Procs: true})
		s := sample()
		s.Cong = cong
		if err := w.Write(s, []*procs.Process{{PID: 7, Comm: comm}}); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		var v map[string]any
		if err := json.Unmarshal(buf.Bytes(), &v); err != nil {
			t.Fatalf("invalid JSON for comm %q: %v\n%s", comm, err, buf.Bytes())
		}
		if strings.Count(buf.String(), "\n") != 1 {
			t.Fatal("not one line")
		}
	})
}

func TestSocketTable(t *testing.T) {
	var buf bytes.Buffer
	w := NewSocketTable(&buf, SocketColumns{Timers: true, Info: true, Procs: true})
	w.Write(sample(), []*procs.Process{{PID: 7, Comm: "curl"}})
	w.Flush()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%q", buf.String())
	}
	for _, want := range []string{"ESTABLISHED", "[2001:db8::1]:40000", "[2001:db8::2]:443", "1.5/0.0", "3.0M/0B", "curl/7"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q lacks %q", lines[1], want)
		}
	}
	// Header columns line up with the row's columns.
	if strings.Index(lines[0], "Peer") != strings.Index(lines[1], "[2001:db8::2]") {
		t.Errorf("Peer column misaligned:\n%s\n%s", lines[0], lines[1])
	}
}

func TestWrap(t *testing.T) {
	var buf bytes.Buffer
	text := strings.Repeat("word ", 30) + "a-very-long-unbreakable-" + strings.Repeat("x", 70) + " end"
	wrap(&buf, "  Why: ", "    ", text)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	for _, l := range lines {
		if len(l) > 80 && !strings.Contains(l, "unbreakable") {
			t.Errorf("line of %d columns", len(l))
		}
	}
	// Every word is kept, in order, after the prefix.
	got := strings.Fields(strings.TrimPrefix(strings.TrimSpace(buf.String()), "Why:"))
	if want := strings.Fields(text); !slices.Equal(got, want) || len(lines) < 3 {
		t.Errorf("wrap lost or reordered words (%d lines):\n%s", len(lines), buf.String())
	}
}

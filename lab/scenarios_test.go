package lab

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tcplens/tcplens/internal/netns"
)

// execute runs a scenario and checks what every scenario promises: it
// finishes within 60 s and leaves no namespace behind.
func execute(t *testing.T, name string) (*Result, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	sc, err := Find(name)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := Execute(ctx, sc, Options{Out: &out})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, ns := range res.Kept {
		t.Errorf("namespace %s kept without --keep", ns)
	}
	// Lab tests make no namespaces of their own, so any of this process's
	// namespaces still present is a leak.
	entries, _ := os.ReadDir(netns.Dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "tl-"+itoa(os.Getpid())+"-") {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
	t.Logf("\n%s", out.String())
	return res, out.String()
}

func TestFind(t *testing.T) {
	if _, err := Find("nope"); err == nil || !strings.Contains(err.Error(), "close-wait-leak") {
		t.Fatalf("Find(nope) = %v, want an error listing the scenarios", err)
	}
	seen := map[string]bool{}
	for _, s := range Scenarios() {
		if seen[s.Name] || s.Summary == "" {
			t.Errorf("scenario %q duplicated or without summary", s.Name)
		}
		seen[s.Name] = true
	}
}

func TestTimewaitOverflow(t *testing.T) {
	res, _ := execute(t, "timewait-overflow")
	v := res.Values
	if v["time_wait_before"] != 50 || v["overflow_before"] != 150 || v["overflow_after"] != 0 || v["time_wait_after"] != 250 {
		t.Errorf("values %v: want 50 TIME_WAIT and +150 overflows with the limit, +0 after raising it", v)
	}
	if !Has(res.Before, "tw-bucket-overflow", "") || Has(res.After, "tw-bucket-overflow", "") {
		t.Errorf("findings before %v after %v", res.Before, res.After)
	}
}

func TestCloseWaitLeak(t *testing.T) {
	res, _ := execute(t, "close-wait-leak")
	v := res.Values
	if v["close_wait_before"] != closeWaitClients || v["close_wait_later"] != closeWaitClients || v["close_wait_after"] != 0 {
		t.Errorf("values %v", v)
	}
	comm, _ := os.ReadFile("/proc/self/comm")
	subject := strings.TrimSpace(string(comm)) + "/" + itoa(os.Getpid())
	found := false
	for _, f := range res.Before {
		found = found || (strings.HasPrefix(f, "close-wait-leak ") && strings.HasSuffix(f, subject))
	}
	if !found || Has(res.After, "close-wait-leak", "") {
		t.Errorf("findings before %v (want close-wait-leak naming %s), after %v", res.Before, subject, res.After)
	}
}

func TestListenOverflow(t *testing.T) {
	res, _ := execute(t, "listen-overflow")
	v := res.Values
	if v["overflows_before"] < 1 || v["syn_retrans_before"] < 1 || v["slowest_ms_before"] < 900 {
		t.Errorf("backlog 4: %v; want overflows, SYN retransmissions and a connect of >= 1 s (the first SYN retry)", v)
	}
	if v["overflows_after"] != 0 || v["syn_retrans_after"] != 0 || v["failed_before"] != 0 {
		t.Errorf("backlog 1024: %v; want no overflow, no retransmission, no failure", v)
	}
	if !Has(res.Before, "listen-overflow", "") || Has(res.After, "listen-overflow", "") {
		t.Errorf("findings before %v after %v", res.Before, res.After)
	}
}

func TestUnixVsTCP(t *testing.T) {
	res, out := execute(t, "unix-vs-tcp")
	v := res.Values
	if v["tcp_done"] != rttClients*rttRequests || v["unix_done"] != rttClients*rttRequests {
		t.Errorf("round trips done: %v", v)
	}
	for _, k := range []string{"tcp", "unix"} {
		if v[k+"_per_sec"] <= 0 || v[k+"_p50_us"] > v[k+"_p99_us"] {
			t.Errorf("%s: %v", k, v)
		}
	}
	if !strings.Contains(out, "Unix socket") {
		t.Errorf("table lacks the Unix column:\n%s", out)
	}
}

func TestLBIdleTimeout(t *testing.T) {
	res, _ := execute(t, "lb-idle-timeout")
	if res.Values["plain_failed"] != 1 || res.Values["keepalive_failed"] != 0 {
		t.Errorf("values %v: want the request without keepalive to fail and the keepalive one to work", res.Values)
	}
	if !Has(res.Before, "idle-no-keepalive", "") || Has(res.After, "idle-no-keepalive", "") {
		t.Errorf("findings before %v after %v", res.Before, res.After)
	}
}

package doctor

import (
	"strings"
	"testing"
	"time"

	"github.com/tcplens/tcplens/lab/harness"
)

func TestTWBucketOverflow(t *testing.T) {
	t.Parallel()
	ns := harness.NewT(t)
	setSysctl(t, ns, "net.ipv4.tcp_max_tw_buckets", "50")
	setSysctl(t, ns, "net.ipv4.tcp_tw_reuse", "0") // keep TIME_WAIT counts exact
	const dst = "127.0.0.1:5432"
	server(t, ns, dst, true)

	churnFast(t, ns, dst, 30)
	waitTW(t, ns, 30)
	if f := findings(diagnose(t, ns, 0, 0, "tw-bucket-overflow"), "tw-bucket-overflow"); len(f) != 0 {
		t.Fatalf("30 of 50 buckets: got %+v, want quiet", f)
	}

	churnFast(t, ns, dst, 12)
	waitTW(t, ns, 42)
	f := findings(diagnose(t, ns, 0, 0, "tw-bucket-overflow"), "tw-bucket-overflow")
	if len(f) != 1 || f[0].Severity != Warning {
		t.Fatalf("42 of 50 buckets: got %+v, want one warning", f)
	}
	if names := subjectNames(f[0]); len(names) != 2 || names[0] != "net.ipv4.tcp_max_tw_buckets" || names[1] != dst {
		t.Errorf("subjects %v, want the sysctl then %s", names, dst)
	}

	// 200 more closes while watching: 8 fit, the rest skip TIME_WAIT.
	r := diagnoseAround(t, ns, 0, func() {
		churnFast(t, ns, dst, 200)
		counterAtLeast(t, ns, "TcpExt.TCPTimeWaitOverflow", 150)
	}, "tw-bucket-overflow")
	f = findings(r, "tw-bucket-overflow")
	if len(f) != 1 || f[0].Severity != Critical || r.ExitCode() != 2 {
		t.Fatalf("overflow observed: got %+v, want one critical", f)
	}
	if d := f[0].Evidence["overflow_delta"].(int64); d < 150 {
		t.Errorf("overflow_delta %d, want >= 150", d)
	}
	if !strings.Contains(f[0].Explanation, "log nothing") || !strings.Contains(f[0].Explanation, "4-tuple") {
		t.Errorf("explanation must say the kernel logs nothing and name the 4-tuple risk: %s", f[0].Explanation)
	}

	// One snapshot, table still full: the counter plus the fill warn.
	if f = findings(diagnose(t, ns, 0, 0, "tw-bucket-overflow"), "tw-bucket-overflow"); len(f) != 1 || f[0].Severity != Warning {
		t.Fatalf("full table, one snapshot: got %+v, want one warning", f)
	}

	// Room again: one snapshot only knows it overflowed at some point.
	setSysctl(t, ns, "net.ipv4.tcp_max_tw_buckets", "100000")
	r = diagnose(t, ns, 0, 0, "tw-bucket-overflow")
	if f = findings(r, "tw-bucket-overflow"); len(f) != 1 || f[0].Severity != Info || r.ExitCode() != 0 {
		t.Fatalf("past overflow, one snapshot: got %+v, want one info", f)
	}
	// Two snapshots without a rise: history only, quiet.
	if f = findings(diagnose(t, ns, 100*time.Millisecond, 0, "tw-bucket-overflow"), "tw-bucket-overflow"); len(f) != 0 {
		t.Fatalf("no rise between snapshots: got %+v, want quiet", f)
	}
}

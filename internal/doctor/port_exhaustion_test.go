package doctor

import (
	"testing"
	"time"

	"github.com/tcplens/tcplens/lab/harness"
)

func TestPortExhaustion(t *testing.T) {
	ns := harness.NewT(t)
	if err := ns.Sysctl("net.ipv4.ip_local_port_range", "40000 40099"); err != nil {
		t.Fatal(err)
	}
	// Loopback reuse (the default 2) would let connect() recycle TIME_WAIT
	// ports; this test wants the plain budget.
	if err := ns.Sysctl("net.ipv4.tcp_tw_reuse", "0"); err != nil {
		t.Fatal(err)
	}
	server(t, ns, "127.0.0.1:5432", true)

	churnFast(t, ns, "127.0.0.1:5432", 40)
	waitTW(t, ns, 40)
	if f := findings(diagnose(t, ns, 0, time.Minute, "port-exhaustion"), "port-exhaustion"); len(f) != 0 {
		t.Fatalf("40%% used: got %d findings, want none: %+v", len(f), f)
	}

	churnFast(t, ns, "127.0.0.1:5432", 20)
	tw := waitTW(t, ns, 60)
	r := diagnose(t, ns, 0, time.Minute, "port-exhaustion")
	f := findings(r, "port-exhaustion")
	if len(f) != 1 || f[0].Severity != Warning || subjectNames(f[0])[0] != "127.0.0.1:5432" {
		t.Fatalf("60%% used: %+v, want one warning for 127.0.0.1:5432", f)
	}
	if f[0].Evidence["ports_in_use"] != tw || f[0].Evidence["range"] != 100 || f[0].Evidence["time_wait"] != tw {
		t.Errorf("evidence %v", f[0].Evidence)
	}
	if r.ExitCode() != 1 {
		t.Errorf("exit code %d, want 1", r.ExitCode())
	}

	churnFast(t, ns, "127.0.0.1:5432", 25)
	waitTW(t, ns, 85)
	r = diagnose(t, ns, 0, time.Minute, "port-exhaustion")
	f = findings(r, "port-exhaustion")
	if len(f) != 1 || f[0].Severity != Critical || r.ExitCode() != 2 {
		t.Fatalf("85%% used: %+v, want one critical", f)
	}
}

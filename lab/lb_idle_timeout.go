package lab

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/tcplens/tcplens/internal/snapshot"
	"github.com/tcplens/tcplens/lab/harness"
)

var lbIdleTimeout = Scenario{
	Name:    "lb-idle-timeout",
	Summary: "a NAT router forgets idle flows after 5 s: the first request after idling hangs unless keepalive is below the timeout",
	run:     runLBIdleTimeout,
}

// Documentation ranges (RFC 5737): they exist only inside the scenario's
// namespaces.
const (
	lbClientAddr  = "192.0.2.2" // the client without keepalive
	lbRouterIn    = "192.0.2.1"
	lbClient2Addr = "203.0.113.2" // the client with keepalive
	lbRouterIn2   = "203.0.113.1"
	lbRouterOut   = "198.51.100.1"
	lbServerAddr  = "198.51.100.2"
	lbServer      = lbServerAddr + ":9000"
	lbTimeout     = 5 * time.Second
	lbIdle        = 8 * time.Second
	// lbRequestTimeout bounds a request: over a forgotten flow it never
	// gets an answer.
	lbRequestTimeout = 3 * time.Second
)

// routerRules NATs the client network and drops packets of flows that
// conntrack no longer knows: a non-SYN packet of an unknown flow is what a
// load balancer that dropped its session entry sees.
const routerRules = `table ip lb {
	chain post {
		type nat hook postrouting priority 100;
		oifname "srv" masquerade
	}
	chain filter_fwd {
		type filter hook forward priority 0;
		ct state invalid drop
		ct state new tcp flags & (syn | ack) != syn drop
	}
}
`

func runLBIdleTimeout(ctx context.Context, r *Run) error {
	client, err := r.Namespace(ctx)
	if err != nil {
		return err
	}
	client2, err := r.Namespace(ctx)
	if err != nil {
		return err
	}
	router, err := r.Namespace(ctx)
	if err != nil {
		return err
	}
	srvNS, err := r.Namespace(ctx)
	if err != nil {
		return err
	}
	r.Columns("keepalive off", "keepalive 2s")
	if err := harness.Link(ctx, client, "eth0", lbClientAddr+"/24", router, "cli", lbRouterIn+"/24"); err != nil {
		return err
	}
	if err := harness.Link(ctx, router, "srv", lbRouterOut+"/24", srvNS, "eth0", lbServerAddr+"/24"); err != nil {
		return err
	}
	if err := harness.Link(ctx, client2, "eth0", lbClient2Addr+"/24", router, "cli2", lbRouterIn2+"/24"); err != nil {
		return err
	}
	if err := client.Route(ctx, "default", lbRouterIn); err != nil {
		return err
	}
	if err := client2.Route(ctx, "default", lbRouterIn2); err != nil {
		return err
	}
	if err := srvNS.Route(ctx, "default", lbRouterOut); err != nil {
		return err
	}
	for k, v := range map[string]string{
		"net.ipv4.ip_forward":                                "1",
		"net.netfilter.nf_conntrack_tcp_loose":               "0",
		"net.netfilter.nf_conntrack_tcp_timeout_established": fmt.Sprint(lbTimeout.Seconds()),
	} {
		if err := router.Sysctl(k, v); err != nil {
			return err
		}
	}
	if err := router.Nft(ctx, routerRules); err != nil {
		return err
	}
	r.Step("clients %s and %s -> router %s (NAT, conntrack established timeout %s) -> server %s", client.Name, client2.Name, router.Name, lbTimeout, lbServer)

	var l net.Listener
	if err := srvNS.Run(func() (err error) {
		// No server-side keepalive: it would refresh the router's entry.
		l, err = (&net.ListenConfig{KeepAlive: -1}).Listen(ctx, "tcp", lbServer)
		return err
	}); err != nil {
		return err
	}
	srv := serve(l, echo)
	defer srv.Close()

	plain, err := client.Dial(ctx, &net.Dialer{KeepAlive: -1, Timeout: 3 * time.Second}, "tcp", lbServer)
	if err != nil {
		return fmt.Errorf("dial through the router: %w", err)
	}
	defer plain.Close()
	kept, err := client2.Dial(ctx, &net.Dialer{Timeout: 3 * time.Second, KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 2 * time.Second, Interval: time.Second, Count: 3}}, "tcp", lbServer)
	if err != nil {
		return fmt.Errorf("dial through the router: %w", err)
	}
	defer kept.Close()
	for _, c := range []net.Conn{plain, kept} {
		if err := echoRoundTrip(c, lbRequestTimeout); err != nil {
			return fmt.Errorf("first request: %w", err)
		}
	}
	r.Step("both clients' first request works; client 1 has no keepalive, client 2 probes after 2 s idle")

	if err := r.Wait(ctx, lbIdle-1500*time.Millisecond, "both connections idle", nil); err != nil {
		return err
	}
	// Doctor on each client, with two snapshots inside the idle period.
	var prev [2]*snapshot.Snapshot
	for i, ns := range []*harness.Namespace{client, client2} {
		if prev[i], err = r.Snapshot(ctx, ns); err != nil {
			return err
		}
	}
	if err := r.Wait(ctx, time.Second, "", nil); err != nil {
		return err
	}
	for i, ns := range []*harness.Namespace{client, client2} {
		now, err := r.Snapshot(ctx, ns)
		if err != nil {
			return err
		}
		r.Step("doctor --idle-timeout %s on client %d:", lbTimeout, i+1)
		r.Diagnose(prev[i], now, lbTimeout, i == 1)
	}
	if err := r.Wait(ctx, 500*time.Millisecond, "", nil); err != nil {
		return err
	}

	start := time.Now()
	plainErr := echoRoundTrip(plain, lbRequestTimeout)
	plainTook := time.Since(start)
	keptErr := echoRoundTrip(kept, lbRequestTimeout)
	if plainErr != nil {
		r.Step("request on the connection without keepalive after %s idle: FAILED after %s: %v", lbIdle, plainTook.Round(time.Millisecond), plainErr)
	} else {
		r.Step("request on the connection without keepalive after %s idle: ok", lbIdle)
	}
	if keptErr != nil {
		r.Step("request on the keepalive connection: FAILED: %v", keptErr)
	} else {
		r.Step("request on the keepalive connection: ok (its probes kept the router's entry alive)")
	}
	r.Set("plain_failed", b2f(plainErr != nil))
	r.Set("keepalive_failed", b2f(keptErr != nil))
	r.Metric("failed requests after idling "+lbIdle.String(), "", b2f(plainErr != nil), b2f(keptErr != nil))
	return nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

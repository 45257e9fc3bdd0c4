package poolprom

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tcplens/tcplens/pool"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixed pool.Stats

func (f fixed) Stats() pool.Stats { return pool.Stats(f) }

func TestCollectorOutput(t *testing.T) {
	defer goleak.VerifyNone(t)
	src := fixed{
		Limits: pool.Limits{MaxTotal: 64, MaxPerRoute: 8},
		Routes: map[string]pool.RouteStats{"db:5432": {
			Open: 5, InUse: 3, Idle: 2, Waiting: 1, Down: true, Gets: 100, Dials: 7, DialErrors: 2,
			WaitTime: 1500 * time.Millisecond, Timeouts: 1, StaleEvictions: 4, IdleCloses: 3, Discards: 1,
		}},
	}
	c := NewCollector(src, Opts{Namespace: "app"})
	want := `
# HELP app_pool_in_use Connections handed out.
# TYPE app_pool_in_use gauge
app_pool_in_use{route="db:5432"} 3
# HELP app_pool_down 1 while the route fails fast after repeated dial failures.
# TYPE app_pool_down gauge
app_pool_down{route="db:5432"} 1
# HELP app_pool_wait_seconds_total Time Gets spent waiting.
# TYPE app_pool_wait_seconds_total counter
app_pool_wait_seconds_total{route="db:5432"} 1.5
# HELP app_pool_closes_total Connections closed by the pool, by reason.
# TYPE app_pool_closes_total counter
app_pool_closes_total{reason="discard",route="db:5432"} 1
app_pool_closes_total{reason="idle",route="db:5432"} 3
app_pool_closes_total{reason="lifetime",route="db:5432"} 0
app_pool_closes_total{reason="surplus",route="db:5432"} 0
# HELP app_pool_max_connections_per_route Cap on connections per route (MaxPerRoute).
# TYPE app_pool_max_connections_per_route gauge
app_pool_max_connections_per_route 8
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"app_pool_in_use", "app_pool_down", "app_pool_wait_seconds_total", "app_pool_closes_total", "app_pool_max_connections_per_route"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c); n != 2+6+14 {
		t.Errorf("%d metrics", n)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
}

func TestCollectorOnRealPool(t *testing.T) {
	defer goleak.VerifyNone(t)
	p, err := pool.New(pool.Config{Dial: func(context.Context, *net.Dialer, string, string) (net.Conn, error) {
		a, b := net.Pipe()
		go func() { io.Copy(io.Discard, b); b.Close() }()
		return a, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := p.Get(context.Background(), "svc:80")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(p, Opts{}))
	if n, err := testutil.GatherAndCount(reg, "pool_in_use"); err != nil || n != 1 {
		t.Errorf("pool_in_use series %d, %v", n, err)
	}
	c.Release()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "pool_idle" {
			continue
		}
		found = true
		if ms := mf.GetMetric(); len(ms) != 1 || ms[0].GetGauge().GetValue() != 1 {
			t.Errorf("pool_idle = %v, want one series of value 1", ms)
		}
	}
	if !found {
		t.Error("pool_idle not gathered")
	}
}

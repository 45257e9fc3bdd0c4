package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tcplens/tcplens/lab/harness"
)

// promResult is one element of an instant vector from /api/v1/query.
type promResult struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (r promResult) float(t *testing.T) float64 {
	s, _ := r.Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("value %v: %v", r.Value, err)
	}
	return v
}

type promAPI struct {
	t    *testing.T
	base string
}

func (p promAPI) get(path string, v any) {
	p.t.Helper()
	resp, err := http.Get(p.base + path)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil || env.Status != "success" {
		p.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if err := json.Unmarshal(env.Data, v); err != nil {
		p.t.Fatalf("GET %s: %v", path, err)
	}
}

func (p promAPI) query(q string) []promResult {
	p.t.Helper()
	var data struct {
		Result []promResult `json:"result"`
	}
	p.get("/api/v1/query?query="+url.QueryEscape(q), &data)
	return data.Result
}

// freePort returns a loopback port nobody listens on right now.
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// lockedBuffer is a bytes.Buffer safe for a child process's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestServeScrapedByPrometheus drives TIME_WAIT churn and a growing
// CLOSE_WAIT leak in a namespace, has a real Prometheus scrape `tcplens
// serve` every second with the alert rules of deploy/ loaded (their `for:`
// cut to 0s), and checks the series through the HTTP API and the alert
// through /api/v1/alerts.
func TestServeScrapedByPrometheus(t *testing.T) {
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("prometheus not installed; scripts/test.sh installs the Debian package")
		}
		t.Skip("prometheus not installed (apt-get install prometheus)")
	}
	ns := harness.NewT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()

	// TIME_WAIT churn: 300 connections the client closes first.
	const churn = 300
	tl, err := ns.Listen("tcp", "127.0.0.1:8000")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.Copy(io.Discard, c) // EOF: the client closed first
				c.Close()
			}()
		}
	}()
	dialClose := func(n int) {
		for range n {
			c, err := ns.Dial(ctx, nil, "tcp", "127.0.0.1:8000")
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
	}
	dialClose(churn)

	// CLOSE_WAIT leak: a server that never closes.
	ll, err := ns.Listen("tcp", "127.0.0.1:8001")
	if err != nil {
		t.Fatal(err)
	}
	defer ll.Close()
	var leaked []net.Conn
	defer func() {
		for _, c := range leaked {
			c.Close()
		}
	}()
	leak := func(n int) {
		for range n {
			c, err := ns.Dial(ctx, nil, "tcp", "127.0.0.1:8001")
			if err != nil {
				t.Fatal(err)
			}
			s, err := ll.Accept()
			if err != nil {
				t.Fatal(err)
			}
			leaked = append(leaked, s)
			c.Close()
		}
	}
	leak(20)

	addr, _ := startServe(t, "--netns", ns.Name, "--listen", "127.0.0.1:0", "--interval", "1s")

	dir := t.TempDir()
	rules, err := os.ReadFile("../../deploy/prometheus/tcplens-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	rules = regexp.MustCompile(`(?m)^(\s+)for: \S+$`).ReplaceAll(rules, []byte("${1}for: 0s"))
	rulesFile := filepath.Join(dir, "rules.yml")
	cfgFile := filepath.Join(dir, "prometheus.yml")
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: tcplens
    static_configs:
      - targets: [%q]
`, rulesFile, addr)
	if err := os.WriteFile(rulesFile, rules, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	promAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	var promLog lockedBuffer
	cmd := exec.CommandContext(ctx, prom, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &promLog, &promLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", promLog.String())
		}
	}()
	api := promAPI{t: t, base: "http://" + promAddr}

	// waitFor polls cond every 250 ms until it holds or ctx ends.
	waitFor := func(what string, cond func() (bool, string)) {
		t.Helper()
		var last string
		for {
			ok, got := cond()
			if ok {
				return
			}
			last = got
			select {
			case <-ctx.Done():
				t.Fatalf("%s: not within the time limit; last: %s", what, last)
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	waitFor("prometheus ready", func() (bool, string) {
		resp, err := http.Get(api.base + "/-/ready")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})

	one := func(q string) (float64, bool) {
		r := api.query(q)
		if len(r) != 1 {
			return 0, false
		}
		return r[0].float(t), true
	}
	pid := strconv.Itoa(os.Getpid())
	cwQuery := `tcplens_close_wait_sockets{job="tcplens",pid="` + pid + `"}`
	waitFor("first scrapes", func() (bool, string) {
		up, ok1 := one(`up{job="tcplens"}`)
		fresh, ok2 := one(`tcplens_scrape_success{job="tcplens"}`)
		cw, ok3 := one(cwQuery)
		return ok1 && ok2 && ok3 && up == 1 && fresh == 1 && cw == 20, fmt.Sprintf("up %v, success %v, close_wait %v", up, fresh, cw)
	})

	// The leak grows and the churn goes on while Prometheus watches; the
	// closes after serve started reach it through destroy events.
	leak(10)
	const moreChurn = 100
	dialClose(moreChurn)
	waitFor("series", func() (bool, string) {
		tw, _ := one(`tcplens_sockets{job="tcplens",state="TIME_WAIT"}`)
		ports, _ := one(`tcplens_ports_in_use{job="tcplens",src="127.0.0.1",dst="127.0.0.1",dst_port="8000"}`)
		ratio, _ := one(`tcplens_port_budget_used_ratio{job="tcplens",dst="127.0.0.1",dst_port="8000"}`)
		cw, _ := one(cwQuery)
		cwState, _ := one(`tcplens_sockets{job="tcplens",state="CLOSE_WAIT"}`)
		opens, _ := one(`tcplens_netstat_Tcp_ActiveOpens_total{job="tcplens"}`)
		finding, _ := one(`tcplens_finding{job="tcplens",id="close-wait-leak"}`)
		closed, _ := one(`tcplens_connections_closed_total{job="tcplens",dst="127.0.0.1:8000",side="client"}`)
		dropped, _ := one(`tcplens_destroy_events_dropped_total{job="tcplens"}`)
		const all = churn + moreChurn
		ok := tw >= all*9/10 && tw <= all && ports >= tw && ratio > 0 && cw == 30 && cwState == 30 && opens >= all+30 && finding >= 1 &&
			closed >= moreChurn && closed <= all && dropped == 0
		return ok, fmt.Sprintf("TIME_WAIT %v, ports %v (ratio %v), close_wait pid %v (state %v), ActiveOpens %v, close-wait-leak finding %v, closed to 127.0.0.1:8000 %v, dropped %v",
			tw, ports, ratio, cw, cwState, opens, finding, closed, dropped)
	})

	// The rules of deploy/ fire on this data.
	waitFor("alert", func() (bool, string) {
		var data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		}
		api.get("/api/v1/alerts", &data)
		for _, a := range data.Alerts {
			if a.Labels["alertname"] == "TcplensCloseWaitLeakGrowing" && a.Labels["pid"] == pid && a.State == "firing" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", data.Alerts)
	})
	// No port budget alert at 300 of 28,232 ports.
	if r := api.query(`ALERTS{alertname=~"TcplensPortExhaustion.*"}`); len(r) != 0 {
		t.Errorf("port exhaustion alert on a 1%% budget: %v", r)
	}
}

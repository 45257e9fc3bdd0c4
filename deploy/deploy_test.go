// Package deploy_test checks the files in deploy/: the Prometheus alert
// rules pass their promtool unit tests, and the rules and the Grafana
// dashboard name only metrics that a real scrape of tcplens serve returns.
package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v2"

	"github.com/tcplens/tcplens/internal/exporter"
	"github.com/tcplens/tcplens/internal/watch"
	"github.com/tcplens/tcplens/lab/harness"
)

// need finds a binary; outside CI a missing one skips the test, in CI it
// fails it.
func need(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not installed (Debian package prometheus); scripts/test.sh installs it", name)
		}
		t.Skipf("%s not installed (apt-get install prometheus)", name)
	}
	return p
}

func TestAlertRules(t *testing.T) {
	promtool := need(t, "promtool")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, args := range [][]string{
		{"check", "rules", "prometheus/tcplens-alerts.yml"},
		{"test", "rules", "prometheus/tcplens-alerts_test.yml"},
	} {
		out, err := exec.CommandContext(ctx, promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}

// scrapedNames scrapes a real exporter watching a namespace with a
// CLOSE_WAIT leak (so that a finding is present too) and returns the
// metric names served.
func scrapedNames(t *testing.T) map[string]bool {
	ns := harness.NewT(t)
	l, err := ns.Listen("tcp", "127.0.0.1:7100")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := ns.Dial(context.Background(), nil, "tcp", "127.0.0.1:7100")
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close() // never closed before: CLOSE_WAIT
	c.Close()

	// As tcplens serve builds it, destroy events included.
	w, err := watch.New(watch.Options{Netns: ns.Name, Interval: time.Second, Procs: true, Churn: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	e, err := exporter.New(w, exporter.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := e.Handler()
	deadline := time.Now().Add(8 * time.Second)
	for {
		if _, err := w.Next(context.Background()); err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		p := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := p.TextToMetricFamilies(rec.Body)
		if err != nil {
			t.Fatalf("scrape does not parse: %v", err)
		}
		if _, ok := mfs["tcplens_finding"]; ok || time.Now().After(deadline) {
			names := make(map[string]bool, len(mfs))
			for n := range mfs {
				names[n] = true
			}
			return names
		}
		time.Sleep(250 * time.Millisecond)
	}
}

var metricName = regexp.MustCompile(`\btcplens_[A-Za-z0-9_]+`)

func TestDashboardAndRulesUseExportedMetrics(t *testing.T) {
	raw, err := os.ReadFile("grafana/tcplens.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			ID      int    `json:"id"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("grafana/tcplens.json: %v", err)
	}
	if dash.UID == "" || len(dash.Panels) < 5 {
		t.Fatalf("dashboard uid %q with %d panels", dash.UID, len(dash.Panels))
	}
	rules, err := os.ReadFile("prometheus/tcplens-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}

	names := scrapedNames(t)
	for _, want := range []string{"tcplens_sockets", "tcplens_finding", "tcplens_close_wait_sockets", "tcplens_ports_in_use", "tcplens_netstat_TcpExt_ListenOverflows_total",
		"tcplens_destroy_events_dropped_total"} {
		if !names[want] {
			t.Fatalf("the scrape lacks %s; got %v", want, names)
		}
	}
	check := func(where, text string) {
		for _, n := range metricName.FindAllString(text, -1) {
			if !names[n] {
				t.Errorf("%s uses %s, which tcplens serve does not export", where, n)
			}
		}
	}
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if !metricName.MatchString(tg.Expr) {
				t.Errorf("panel %q: expr %q names no tcplens metric", p.Title, tg.Expr)
			}
			check("panel "+p.Title, tg.Expr)
		}
	}
	check("grafana/tcplens.json", string(raw)) // templating too
	check("prometheus/tcplens-alerts.yml", string(rules))
	if used := metricName.FindAllString(string(rules), -1); !slices.Contains(used, "tcplens_port_budget_used_ratio") {
		t.Errorf("alert rules do not use the port budget: %v", used)
	}
}

func TestSystemdUnit(t *testing.T) {
	analyze := need(t, "systemd-analyze")
	unit, err := os.ReadFile("systemd/tcplens.service")
	if err != nil {
		t.Fatal(err)
	}
	// verify insists that ExecStart exists: point it at a real binary.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tcplens.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/tcplens", self)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, want := range []string{"AmbientCapabilities=CAP_DAC_READ_SEARCH CAP_SYS_PTRACE\n", "--listen 127.0.0.1:9917", "NoNewPrivileges=yes", "ProtectSystem=strict"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q", want)
		}
	}
}

func TestDaemonSet(t *testing.T) {
	raw, err := os.ReadFile("kubernetes/tcplens-daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	type container struct {
		Args  []string `yaml:"args"`
		Ports []struct {
			ContainerPort int `yaml:"containerPort"`
		}
		SecurityContext struct {
			AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
			Capabilities             struct{ Drop, Add []string }
		} `yaml:"securityContext"`
		Resources struct{ Limits map[string]string } `yaml:"resources"`
	}
	var ds struct {
		Kind string `yaml:"kind"`
		Spec struct {
			Template struct {
				Metadata struct{ Annotations map[string]string }
				Spec     struct {
					HostNetwork bool        `yaml:"hostNetwork"`
					HostPID     bool        `yaml:"hostPID"`
					Containers  []container `yaml:"containers"`
				}
			}
		}
	}
	found := false
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var any map[string]any
		if err := yaml.Unmarshal([]byte(doc), &any); err != nil {
			t.Fatalf("YAML: %v", err)
		}
		if err := yaml.Unmarshal([]byte(doc), &ds); err != nil {
			t.Fatal(err)
		}
		if ds.Kind == "DaemonSet" {
			found = true
			break
		}
	}
	if !found {
		t.Fatal("no DaemonSet")
	}
	sp := ds.Spec.Template.Spec
	if !sp.HostNetwork || !sp.HostPID || len(sp.Containers) != 1 {
		t.Fatalf("hostNetwork %v, hostPID %v, %d containers", sp.HostNetwork, sp.HostPID, len(sp.Containers))
	}
	c := sp.Containers[0]
	args := strings.Join(c.Args, " ")
	ann := ds.Spec.Template.Metadata.Annotations
	if !strings.Contains(args, "--listen=$(NODE_IP):"+ann["prometheus.io/port"]) || !strings.Contains(args, "--allow-remote") || ann["prometheus.io/scrape"] != "true" {
		t.Errorf("args %q do not match the scrape annotations %v", args, ann)
	}
	sc := c.SecurityContext
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) ||
		!slices.Equal(sc.Capabilities.Add, []string{"DAC_READ_SEARCH", "SYS_PTRACE"}) || c.Resources.Limits["memory"] == "" {
		t.Errorf("security context %+v, limits %v", sc, c.Resources.Limits)
	}
}

// TestImageRoot builds tcplens with the Dockerfile's own build line and
// runs it the way the image runs in the DaemonSet: alone on a read-only
// root (FROM scratch) with only /proc mounted, with no capability but
// DAC_READ_SEARCH and SYS_PTRACE (plus SYS_CHROOT, which the chroot into
// the root needs), inside a test namespace. No container engine runs here,
// so this checks what the image needs, not docker build itself.
func TestImageRoot(t *testing.T) {
	df, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var build string
	stages := 0
	for _, line := range strings.Split(string(df), "\n") {
		if strings.HasPrefix(line, "FROM ") {
			stages++
		}
		if rest, ok := strings.CutPrefix(line, "RUN CGO_ENABLED=0 go build "); ok {
			build = "CGO_ENABLED=0 go build " + rest
		}
	}
	if build == "" || !strings.Contains(build, " -o /out/tcplens ") || !strings.Contains(string(df), "\nFROM scratch\n") ||
		!strings.Contains(string(df), "COPY --from=build /out/tcplens /tcplens\n") || !strings.Contains(string(df), `ENTRYPOINT ["/tcplens"]`) || stages != 2 {
		t.Fatalf("Dockerfile: want a CGO_ENABLED=0 build to /out/tcplens and a scratch stage with it as ENTRYPOINT /tcplens:\n%s", df)
	}
	root := t.TempDir()
	cmd := exec.Command("sh", "-c", strings.Replace(build, " -o /out/tcplens ", " -o "+filepath.Join(root, "tcplens")+" ", 1))
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "VERSION=image-test")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build, err, out)
	}
	if err := os.Mkdir(filepath.Join(root, "proc"), 0o555); err != nil {
		t.Fatal(err)
	}

	ns := harness.NewT(t)
	l, err := ns.Listen("tcp", "127.0.0.1:7300")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	image := func(ctx context.Context, args ...string) *exec.Cmd {
		script := `set -e; mount --bind "$1" "$1"; mount -o remount,bind,ro "$1"; mount -t proc proc "$1/proc"; r=$1; shift
exec setpriv --bounding-set=-all,+dac_read_search,+sys_ptrace,+sys_chroot unshare --root="$r" /tcplens "$@"`
		return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", root}, args...)...)
	}
	inImage := func(args ...string) ([]byte, string, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c := image(ctx, args...)
		var stderr bytes.Buffer
		c.Stderr = &stderr
		out, err := c.Output()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out, stderr.String(), code
	}
	if out, errs, _ := inImage("version"); !bytes.HasPrefix(out, []byte("tcplens image-test ")) {
		t.Errorf("version in the image root: %q %s, want the VERSION build argument", out, errs)
	}
	out, errs, code := inImage("summary", "--json")
	if code != 0 || !bytes.Contains(out, []byte(`"127.0.0.1:7300"`)) {
		t.Fatalf("summary in the image root: exit %d %s, want the test's listener 127.0.0.1:7300:\n%s", code, errs, out)
	}
	var sum struct {
		Processes []struct {
			PID int `json:"pid"`
		} `json:"processes"`
	}
	if err := json.Unmarshal(out, &sum); err != nil {
		t.Fatal(err)
	}
	owner := false
	for _, p := range sum.Processes {
		owner = owner || p.PID == os.Getpid()
	}
	if !owner {
		t.Errorf("summary in the image root did not attribute the listener to this process (%d): %s", os.Getpid(), out)
	}
	if out, errs, code := inImage("doctor", "--interval", "0", "--json"); code > 2 || !json.Valid(out) {
		t.Errorf("doctor in the image root: exit %d %s:\n%s", code, errs, out)
	}
	// record is the one command that writes: on the read-only root it must
	// fail with a one-line error.
	if _, errs, code := inImage("record", "--db", "/tcplens.db", "--duration", "1s"); code == 0 || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, "read-only file system") {
		t.Errorf("record on the read-only image root: exit %d, stderr %q: want one line saying the file system is read-only", code, errs)
	}

	// serve, the image's CMD, scraped from inside the namespace.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := image(ctx, "serve", "--listen", "127.0.0.1:9917", "--interval", "200ms")
	var srvErr bytes.Buffer
	srv.Stderr = &srvErr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		srv.Process.Kill()
		srv.Wait()
	}()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return ns.Dial(ctx, &net.Dialer{}, network, addr)
		},
	}}
	var body []byte
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := client.Get("http://127.0.0.1:9917/metrics")
		if err != nil {
			continue
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && bytes.Contains(body, []byte("tcplens_scrape_success 1")) {
			break
		}
	}
	// Two listeners: the test's and serve's own.
	if !bytes.Contains(body, []byte("tcplens_scrape_success 1")) || !bytes.Contains(body, []byte(`tcplens_sockets{state="LISTEN"} 2`)) {
		t.Errorf("serve in the image root: want a successful scrape with both listeners; stderr %s\n%.2000s", srvErr.String(), body)
	}
}

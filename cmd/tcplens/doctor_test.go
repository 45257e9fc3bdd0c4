package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tcplens/tcplens/lab/harness"
)

// exhausted returns a namespace where 85 of 100 ephemeral ports towards
// 127.0.0.1:5432 sit in TIME_WAIT.
func exhausted(t *testing.T) *harness.Namespace {
	ns := harness.NewT(t)
	for k, v := range map[string]string{"net.ipv4.ip_local_port_range": "40000 40099", "net.ipv4.tcp_tw_reuse": "0"} {
		if err := ns.Sysctl(k, v); err != nil {
			t.Fatal(err)
		}
	}
	l, err := ns.Listen("tcp", "127.0.0.1:5432")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for range 85 {
		c, err := ns.Dial(context.Background(), nil, "tcp", "127.0.0.1:5432")
		if err != nil {
			t.Fatal(err)
		}
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		io.ReadAll(s)
		s.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := ns.Exec(context.Background(), "ss", "-Htan", "state", "time-wait")
		if strings.Count(string(out), "\n") == 85 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ns
}

func TestDoctorCritical(t *testing.T) {
	ns := exhausted(t)
	out, errOut, code := tcplens(t, "doctor", "--netns", ns.Name, "--interval", "0", "--json", "--only", "port-exhaustion")
	if code != 2 {
		t.Fatalf("exit %d, want 2 (critical); stderr %q", code, errOut)
	}
	var r struct {
		Findings []struct {
			ID, Severity, Title, Explanation string
			Evidence                         map[string]any
			Fix                              []string
			Subjects                         []struct{ Kind, Name string }
		}
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Findings) != 1 {
		t.Fatalf("findings %+v", r.Findings)
	}
	f := r.Findings[0]
	if f.ID != "port-exhaustion" || f.Severity != "critical" || f.Subjects[0].Kind != "destination" || f.Subjects[0].Name != "127.0.0.1:5432" ||
		f.Evidence["ports_in_use"] != 85.0 || len(f.Fix) < 3 || f.Explanation == "" {
		t.Errorf("finding %+v", f)
	}

	human, _, code := tcplens(t, "doctor", "--netns", ns.Name, "--interval", "0")
	if code != 2 || !strings.Contains(human, "CRITICAL [port-exhaustion]") {
		t.Fatalf("exit %d:\n%s", code, human)
	}
	for _, line := range strings.Split(human, "\n") {
		if len(line) > 80 && strings.Contains(strings.TrimSpace(line), " ") {
			t.Errorf("line over 80 columns: %q", line)
		}
	}
}

// TestDoctorHealthy is the false-positive test: a namespace with an HTTP
// server and a keep-alive client busy during both snapshots must produce no
// warning from any rule.
func TestDoctorHealthy(t *testing.T) {
	ns := harness.NewT(t)
	l, err := ns.Listen("tcp", "127.0.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(l)
	defer srv.Close()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 4,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return ns.Dial(ctx, &net.Dialer{}, network, addr)
		},
	}}
	defer client.CloseIdleConnections()
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		n := 0
		for i := 0; i < 5000; i++ { // bounded; stopped after doctor
			select {
			case <-stop:
				done <- n
				return
			default:
			}
			resp, err := client.Get("http://127.0.0.1:8080/")
			if err != nil {
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			n++
			time.Sleep(2 * time.Millisecond)
		}
		<-stop
		done <- n
	}()
	out, errOut, code := tcplens(t, "doctor", "--netns", ns.Name, "--interval", "500ms")
	close(stop)
	if n := <-done; n < 20 {
		t.Fatalf("only %d requests during the run: not a busy namespace", n)
	}
	if code != 0 || strings.Contains(out, "WARNING") || strings.Contains(out, "CRITICAL") {
		t.Fatalf("exit %d, stderr %q:\n%s", code, errOut, out)
	}
}

func TestDoctorCannotRun(t *testing.T) {
	for _, args := range [][]string{
		{"doctor", "--netns", "tl-missing"},
		{"doctor", "--interval", "soon"},
		{"doctor", "--interval", "-1s"},
		{"doctor", "--lb", "f5"},
		{"doctor", "--lb", "aws-alb", "--idle-timeout", "1m"},
		{"doctor", "--only", "no-such-rule"},
	} {
		out, errOut, code := tcplens(t, args...)
		if code != 3 || out != "" || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%v: exit %d stdout %q stderr %q; want 3, nothing, one line", args, code, out, errOut)
		}
	}
}

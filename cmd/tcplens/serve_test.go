package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/tcplens/tcplens/lab/harness"
)

// logWriter collects serve's log and hands over the address it bound.
type logWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	addr chan string
	sent bool
}

var listenLog = regexp.MustCompile(`msg="tcplens serve" listen=(\S+)`)

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if m := listenLog.FindSubmatch(w.buf.Bytes()); m != nil && !w.sent {
		w.sent = true
		w.addr <- string(m[1])
	}
	return len(p), nil
}

func (w *logWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// startServe runs `tcplens serve` in-process and returns the address it
// listens on and a function that stops it (as SIGTERM would, through the
// command's context) and returns its exit code.
func startServe(t *testing.T, args ...string) (addr string, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := &logWriter{addr: make(chan string, 1)}
	code := make(chan int, 1)
	go func() { code <- run(ctx, append([]string{"serve"}, args...), io.Discard, log) }()
	var once sync.Once
	result := -1
	stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case result = <-code:
			case <-time.After(10 * time.Second):
				t.Errorf("serve did not stop within 10 s of its context ending; log:\n%s", log)
			}
		})
		return result
	}
	t.Cleanup(func() { stop() })
	select {
	case addr = <-log.addr:
		return addr, stop
	case c := <-code:
		t.Fatalf("serve exited with %d before listening:\n%s", c, log)
	case <-time.After(10 * time.Second):
		t.Fatalf("serve did not start within 10 s:\n%s", log)
	}
	return "", nil
}

func TestServeRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	badWeb := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(badWeb, []byte("tls_server_config:\n  cert_file: /nonexistent.pem\n  key_file: /nonexistent.key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "0.0.0.0:9917"}, "--allow-remote"},
		{[]string{"--listen", ":9917"}, "--allow-remote"},
		{[]string{"--listen", "[::]:9917"}, "--allow-remote"},
		{[]string{"--listen", "192.0.2.1:9917"}, "--allow-remote"},
		{[]string{"--listen", "metrics.example.com:9917"}, "--allow-remote"},
		{[]string{"--listen", "127.0.0.1"}, "--listen"},
		{[]string{"--listen", "127.0.0.1:99999"}, "--listen"},
		{[]string{"--interval", "0s"}, "--interval"},
		{[]string{"--interval", "5s", "--max-age", "1s"}, "--max-age"},
		{[]string{"--max-destinations", "0"}, "--max-destinations"},
		{[]string{"--max-processes", "100000"}, "--max-processes"},
		{[]string{"--lb", "nope"}, "--lb"},
		{[]string{"--web.config.file", filepath.Join(dir, "missing.yml")}, "--web.config.file"},
		{[]string{"--web.config.file", badWeb}, "--web.config.file"},
		{[]string{"--netns", "tl-does-not-exist"}, "--netns"},
	} {
		_, stderr, code := tcplens(t, append([]string{"serve"}, tc.args...)...)
		if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "tcplens: ") || !strings.Contains(stderr, tc.want) {
			t.Errorf("serve %v: exit %d, stderr %q; want exit 2 and one line naming %s", tc.args, code, stderr, tc.want)
		}
	}
}

func FuzzListenIsRemote(f *testing.F) {
	for _, s := range []string{"127.0.0.1:9917", "[::1]:0", "localhost:9917", ":9917", "0.0.0.0:1", "[fe80::1%eth0]:9", "host:http", "127.0.0.1", "[::ffff:127.0.0.1]:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		remote, err := listenIsRemote(addr)
		if err != nil {
			return
		}
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("%q accepted but does not split: %v", addr, err)
		}
		// Whatever is called local must be loopback once resolved by the
		// listener: a loopback literal or "localhost".
		if !remote && host != "localhost" {
			ip := net.ParseIP(strings.Split(host, "%")[0])
			if ip == nil || !ip.IsLoopback() {
				t.Fatalf("%q judged local", addr)
			}
		}
	})
}

// selfSigned writes a certificate and key for 127.0.0.1 and returns the
// pool that trusts it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tcplens test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestServeTLSBasicAuth: with an exporter-toolkit web config, /metrics is
// served over TLS only, and only with the right credentials.
func TestServeTLSBasicAuth(t *testing.T) {
	ns := harness.NewT(t)
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webFile := filepath.Join(dir, "web.yml")
	web := "tls_server_config:\n  cert_file: " + certFile + "\n  key_file: " + keyFile + "\nbasic_auth_users:\n  prometheus: " + string(hash) + "\n"
	if err := os.WriteFile(webFile, []byte(web), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, stop := startServe(t, "--netns", ns.Name, "--listen", "127.0.0.1:0", "--interval", "200ms", "--web.config.file", webFile)

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(user, pass string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "https://"+addr+"/metrics", nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("", ""); code != http.StatusUnauthorized || strings.Contains(body, "tcplens_") {
		t.Errorf("no credentials: %d %q", code, body)
	}
	if code, _ := get("prometheus", "wrong"); code != http.StatusUnauthorized {
		t.Errorf("wrong password: %d", code)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body := get("prometheus", "s3cret")
		if code != 200 {
			t.Fatalf("right credentials: %d %q", code, body)
		}
		if strings.Contains(body, "tcplens_scrape_success 1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fresh sample within 5 s:\n%s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Plain HTTP to the TLS port gets no metrics.
	if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 || strings.Contains(string(b), "tcplens_") {
			t.Errorf("plain HTTP served metrics: %d", resp.StatusCode)
		}
	}
	if code := stop(); code != 0 {
		t.Errorf("graceful stop exited %d", code)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("still listening after stop")
	}
}

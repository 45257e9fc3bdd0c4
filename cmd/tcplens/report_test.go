package main

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromium returns the Debian chromium binary; without it the test is
// skipped locally and fails in CI (scripts/test.sh installs it).
func chromium(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium not installed (scripts/test.sh installs it)")
		}
		t.Skip("chromium not installed: apt-get install chromium")
	}
	return p
}

// testReport writes the report of a recording and loads it in headless
// Chromium: no console error, no request but the file itself, every chart
// drawn with a size, and a screenshot (kept in $TCPLENS_SCREENSHOT_DIR when
// set). TCPLENS_SAMPLE_REPORT=path also copies the HTML there (that is how
// docs/sample-report.html is made).
func testReport(t *testing.T, db string) {
	bin := chromium(t)
	dir := t.TempDir()
	html := filepath.Join(dir, "report.html")
	if _, errOut, code := tcplens(t, "report", "--db", db, "-o", html); code != 0 {
		t.Fatalf("report: exit %d: %s", code, errOut)
	}
	page, err := os.ReadFile(html)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"http://", "https://", "<script", "@import", "url("} {
		if bytes.Contains(page, []byte(bad)) && !(bad == "http://" && bytes.Count(page, []byte(bad)) == bytes.Count(page, []byte(`xmlns="http://www.w3.org/2000/svg"`))) {
			t.Errorf("report contains %q", bad)
		}
	}
	if p := os.Getenv("TCPLENS_SAMPLE_REPORT"); p != "" {
		if err := os.WriteFile(p, page, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1100, 900))
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	var mu sync.Mutex
	var problems, requests []string
	if err := chromedp.Listen(bctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert {
				problems = append(problems, "console."+string(e.Type))
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception: "+e.ExceptionDetails.Text)
		case *cdplog.EventEntryAdded:
			if e.Entry.Level == cdplog.EntryLevelError {
				problems = append(problems, "log: "+e.Entry.Text)
			}
		case *network.EventRequestWillBeSent:
			requests = append(requests, e.Request.URL)
		case *network.EventLoadingFailed:
			problems = append(problems, "loading failed: "+e.ErrorText)
		}
	}); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	type box struct {
		W, H    float64
		Paths   int
		Markers int
	}
	if err := chromedp.Do(bctx, chromedp.Navigate("file://"+html), chromedp.WaitReady(chromedp.CSS("svg.chart"))); err != nil {
		t.Fatalf("chromium: load the report: %v", err)
	}
	boxes, err := chromedp.Run(bctx, chromedp.Evaluate[[]box](`Array.from(document.querySelectorAll('svg.chart')).map(s => {
			const r = s.getBoundingClientRect();
			const paths = Array.from(s.querySelectorAll('path.series')).filter(p => {
				const b = p.getBBox(); return (p.getAttribute('d') || '').length > 4 && p.getTotalLength() > 0 && (b.width > 0 || b.height > 0);
			}).length;
			const markers = Array.from(s.querySelectorAll('rect.marker')).filter(m => m.getBoundingClientRect().width > 0).length;
			return {W: r.width, H: r.height, Paths: paths, Markers: markers};
		})`))
	if err != nil {
		t.Fatalf("chromium: measure the charts: %v", err)
	}
	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("chromium: screenshot: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Errorf("page problems: %v", problems)
	}
	for _, u := range requests {
		if !strings.HasPrefix(u, "file://") && !strings.HasPrefix(u, "data:") {
			t.Errorf("network request to %s", u)
		}
	}
	if len(requests) != 1 {
		t.Errorf("requests %v: want only the page itself", requests)
	}
	if len(boxes) < 3 {
		t.Fatalf("%d charts rendered, want at least 3 (states, ports, counters)", len(boxes))
	}
	for i, b := range boxes {
		if b.W < 100 || b.H < 100 {
			t.Errorf("chart %d is %gx%g", i, b.W, b.H)
		}
	}
	// The states chart: LISTEN and CLOSE_WAIT (and the clients' FIN_WAIT2)
	// lines, with the finding and the captures marked on the time axis.
	if boxes[0].Paths < 2 || boxes[0].Markers < 2 {
		t.Errorf("states chart: %d lines, %d markers", boxes[0].Paths, boxes[0].Markers)
	}

	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if colors := distinctColors(img); img.Bounds().Dx() < 800 || img.Bounds().Dy() < 900 || colors < 8 {
		t.Errorf("screenshot %v with %d colours: blank?", img.Bounds(), colors)
	}
	out := dir
	if d := os.Getenv("TCPLENS_SCREENSHOT_DIR"); d != "" {
		out = d
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(out, "report.png")
	if err := os.WriteFile(p, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%v), %d charts %+v", p, img.Bounds().Size(), len(boxes), boxes)
}

func distinctColors(img image.Image) int {
	seen := map[[3]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 7 {
		for x := b.Min.X; x < b.Max.X; x += 7 {
			r, g, bl, _ := img.At(x, y).RGBA()
			seen[[3]uint32{r >> 8, g >> 8, bl >> 8}] = true
			if len(seen) > 64 {
				return len(seen)
			}
		}
	}
	return len(seen)
}

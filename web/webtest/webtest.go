// Package webtest drives the console in a real headless Chromium for tests
// and benchmarks: it finds the browser (failing under CI=true, skipping
// otherwise when it is missing), starts it with the flags this offline
// machine needs and a fresh profile, and saves screenshots as artifacts.
package webtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// Paths Chromium is looked for at, Debian's first.
var chromiumPaths = []string{"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"}

// Chromium returns the browser's path. Under CI=true a missing browser
// fails the test (scripts/setup.sh installs it); otherwise it skips.
func Chromium(tb testing.TB) string {
	tb.Helper()
	for _, p := range chromiumPaths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("requirement missing under CI=true: chromium (scripts/setup.sh installs Debian's chromium)")
	}
	tb.Skipf("skipping: needs chromium for the browser tests (apt-get install chromium, or scripts/setup.sh)")
	return ""
}

// Dialogs records the JavaScript dialogs (alert, confirm, prompt) a page
// opened: an injected script's alert(1) shows up here.
type Dialogs struct {
	mu   sync.Mutex
	list []string
}

// List returns the dialogs seen so far.
func (d *Dialogs) List() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.list...)
}

// Browser starts a headless Chromium with a fresh profile and returns a
// tab's context, cancelled (and the browser stopped) at cleanup. Dialogs
// are recorded and dismissed, so a test can assert none opened.
func Browser(tb testing.TB, timeout time.Duration) (context.Context, *Dialogs) {
	tb.Helper()
	exe := Chromium(tb)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox, // root in a VM: the setuid sandbox is unavailable
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.WindowSize(1400, 1000),
		// The network is closed: no background fetches, updates or sync,
		// which would otherwise retry against refused connections.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints"),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("password-store", "basic"),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, timeout)
	tb.Cleanup(func() {
		cancelTime()
		cancelTab()
		cancelAlloc()
	})
	dialogs := &Dialogs{}
	evs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range evs {
			if err != nil {
				return
			}
			dialogs.mu.Lock()
			dialogs.list = append(dialogs.list, string(ev.Type)+": "+ev.Message)
			dialogs.mu.Unlock()
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	}()
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		tb.Fatalf("start chromium %s: %v", exe, err)
	}
	return ctx, dialogs
}

// ArtifactDir returns dir (created), where screenshots go; CI keeps it.
func ArtifactDir(tb testing.TB, dir string) string {
	tb.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatalf("artifacts: %v", err)
	}
	return dir
}

// Screenshot saves a full-page PNG of the tab as dir/name.png.
func Screenshot(ctx context.Context, tb testing.TB, dir, name string) {
	tb.Helper()
	b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.Errorf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		tb.Errorf("screenshot %s: %v", name, err)
		return
	}
	tb.Logf("screenshot %s", p)
}

// Eval evaluates a JavaScript expression in the tab and decodes its value.
func Eval[T any](ctx context.Context, expr string) (T, error) {
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		return v, fmt.Errorf("evaluate %q: %w", expr, err)
	}
	return v, nil
}

// WaitTrue polls a JavaScript expression until it is true or timeout passes.
func WaitTrue(ctx context.Context, expr string, timeout time.Duration) error {
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", expr, err)
	}
	return nil
}

// Page is a browser tab a test drives: each step fails the test on error
// (after a screenshot named Prefix+"failed").
type Page struct {
	T       testing.TB
	Ctx     context.Context
	Dialogs *Dialogs
	// Dir and Prefix name the screenshots: Dir/Prefix+name.png.
	Dir, Prefix string
}

// NewPage starts a browser (see Browser) for a test whose screenshots go
// to dir with names starting with prefix.
func NewPage(tb testing.TB, dir, prefix string, timeout time.Duration) *Page {
	tb.Helper()
	ctx, d := Browser(tb, timeout)
	return &Page{T: tb, Ctx: ctx, Dialogs: d, Dir: ArtifactDir(tb, dir), Prefix: prefix}
}

// Do runs actions.
func (p *Page) Do(steps ...chromedp.Action[chromedp.Void]) {
	p.T.Helper()
	if err := chromedp.Do(p.Ctx, steps...); err != nil {
		p.Shot("failed")
		p.T.Fatal(err)
	}
}

// Wait waits up to 30 s for a JavaScript expression to be true.
func (p *Page) Wait(expr string) {
	p.T.Helper()
	if err := WaitTrue(p.Ctx, expr, 30*time.Second); err != nil {
		p.Shot("failed")
		p.T.Fatal(err)
	}
}

// Text evaluates a JavaScript expression to a string.
func (p *Page) Text(expr string) string {
	p.T.Helper()
	v, err := Eval[string](p.Ctx, expr)
	if err != nil {
		p.T.Fatal(err)
	}
	return v
}

// Shot saves a screenshot named Prefix+name.
func (p *Page) Shot(name string) { Screenshot(p.Ctx, p.T, p.Dir, p.Prefix+name) }

// Click clicks the element a CSS selector finds.
func (p *Page) Click(sel string) {
	p.T.Helper()
	p.Do(chromedp.Click(chromedp.CSS(sel)))
}

// Type types text into the element a CSS selector finds.
func (p *Page) Type(sel, text string) {
	p.T.Helper()
	p.Do(chromedp.SendKeys(chromedp.CSS(sel), text))
}

// Navigate loads url.
func (p *Page) Navigate(url string) {
	p.T.Helper()
	p.Do(chromedp.Navigate(url))
}

// SetInput sets an input's or select's value as a user would, firing
// input and change.
func (p *Page) SetInput(sel, value string) {
	p.T.Helper()
	p.Do(chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.value = %q;
		e.dispatchEvent(new Event('input', {bubbles: true})); e.dispatchEvent(new Event('change', {bubbles: true})); })()`, sel, value)))
}

// Inert fails the test if markup from data became elements (an image,
// script, frame, SVG, a javascript: link, an inline handler) or if any
// script opened a dialog.
func (p *Page) Inert() {
	p.T.Helper()
	n := p.Text(`String(document.querySelectorAll('main img, main script, main iframe, main svg, main u, main i, ` +
		`a[href^="javascript"], [onerror], [onload]').length)`)
	if n != "0" {
		p.T.Errorf("markup from data became %s element(s)", n)
	}
	if d := p.Dialogs.List(); len(d) > 0 {
		p.T.Errorf("a script ran: dialogs %v", d)
	}
}

package system

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// chromiumPath is Debian's chromium, which `make test` installs (browser-deps).
const chromiumPath = "/usr/bin/chromium"

// browserHistoryMsgs is how many messages a room keeps for history in
// TestBrowserChat (browser.mjs counts on it).
const browserHistoryMsgs = 12

// TestBrowserChat runs e2e/browser.mjs: two chat pages in a real headless
// Chromium show the room's history and talk through a whole system, list
// each other as online and one closing leaves the other's list (presence,
// with a short interval), a third is refused a private room, and a fourth
// resumes after its connection was cut, with every message it missed, then
// past the room's retention, saying it lost some. `make test` installs
// Chromium and playwright-core first; without them this test fails and says
// so. Screenshots go to $PHX_ARTIFACTS if set, else to a temporary folder.
func TestBrowserChat(t *testing.T) {
	e2e := filepath.Join(repoRoot, "e2e")
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("Chromium is not installed at %s: run `make test` (its browser-deps target runs apt-get install chromium): %v", chromiumPath, err)
	}
	if _, err := os.Stat(filepath.Join(e2e, "node_modules", "playwright-core")); err != nil {
		t.Fatalf("playwright-core is not installed in e2e/node_modules: run `make test` (it runs npm ci there): %v", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is required for the browser test: %v", err)
	}
	out := os.Getenv("PHX_ARTIFACTS")
	if out == "" {
		out = t.TempDir()
	} else if out, err = filepath.Abs(out); err != nil {
		t.Fatal(err)
	}
	// browser.mjs resumes a page past the room's retention: 12 messages
	// per room, which the page's history before that stays within. A short
	// presence interval keeps its online lists quick.
	s := startSystem(t, func(c *Config) {
		c.Store.History.MaxMsgsPerRoom = browserHistoryMsgs
		c.Gateway.PresenceInterval = 200 * time.Millisecond
	})

	// browser.mjs stops itself after 60 s; past 2 minutes, interrupt it (so
	// playwright closes Chromium), then kill it 10 s later.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "browser.mjs")
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Dir = e2e
	cmd.Env = append(os.Environ(),
		"PHX_URL="+s.URL(),
		"PHX_OUT="+out,
		"CHROMIUM="+chromiumPath,
	)
	output, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("browser test did not finish in 2 minutes:\n%s", output)
	}
	t.Logf("node browser.mjs (screenshots in %s)\n%s", out, output)
	if err != nil {
		t.Fatalf("browser test failed: %v", err)
	}
}

package system

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// e2ePublicPrefix starts the topics of the public rooms the Node tests may
// create, one per test.
const e2ePublicPrefix = "rooms:e2e-"

// TestPhoenixJS runs the Node test files in e2e/ with the official phoenix.js
// client against a whole system. `make test` installs their npm packages
// first; without them this test fails and says so.
func TestPhoenixJS(t *testing.T) {
	e2e := filepath.Join(repoRoot, "e2e")
	if _, err := os.Stat(filepath.Join(e2e, "node_modules", "phoenix")); err != nil {
		t.Fatalf("phoenix.js is not installed in e2e/node_modules: run `make test` (it runs npm ci there): %v", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is required for the phoenix.js tests: %v", err)
	}
	// Its throughput tests send hundreds of messages a second; its history
	// tests need rooms of their own, as empty as a new room (rooms:lobby is
	// shared by every test file): PHX_PUBLIC_PREFIX names them.
	s := startSystem(t, func(c *Config) {
		noLimits(c)
		c.Rooms.PublicTopics = []string{e2ePublicPrefix + "*"}
	})
	grant(t, natsConn(t, s), "rooms:ops", "alice")

	files, err := filepath.Glob(filepath.Join(e2e, "*.test.mjs"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no e2e/*.test.mjs files (%v)", err)
	}
	args := []string{"--test", "--test-reporter=spec"}
	for _, f := range files {
		args = append(args, filepath.Base(f))
	}
	cmd := exec.Command(node, args...)
	cmd.Dir = e2e
	cmd.Env = append(os.Environ(),
		"PHX_URL="+s.URL(),
		"PHX_NATS_URL="+s.NATSURL(),
		"PHX_MEMBER=alice",
		"PHX_PRIVATE_ROOM=rooms:ops",
		"PHX_PUBLIC_PREFIX="+e2ePublicPrefix,
	)
	done := make(chan struct{})
	var out []byte
	go func() {
		out, err = cmd.CombinedOutput()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("phoenix.js tests did not finish in 3 minutes:\n%s", out)
	}
	t.Logf("node %v\n%s", args, out)
	if err != nil {
		t.Fatalf("phoenix.js tests failed: %v", err)
	}
}

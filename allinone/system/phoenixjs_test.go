package system

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/gateway"
	"github.com/phxnats/phxnats/proto"
)

// e2ePresenceInterval is the presence interval of both gateways of
// TestPhoenixJS, short to keep presence.test.mjs quick.
const e2ePresenceInterval = 200 * time.Millisecond

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
	// Its presence tests need a second gateway (PHX_URL_B), a short
	// presence interval, and to grant and revoke memberships
	// (PHX_MEMBERS_URL).
	s := startSystem(t, func(c *Config) {
		noLimits(c)
		c.Rooms.PublicTopics = []string{e2ePublicPrefix + "*"}
		c.Gateway.PresenceInterval = e2ePresenceInterval
	})
	gwB := startGateway(t, s, func(o *gateway.Options) {
		o.RateLimit, o.UserRateLimit, o.AddrRateLimit, o.MaxPending = gateway.Off, gateway.Off, gateway.Off, gateway.Off
		o.PresenceInterval = e2ePresenceInterval
	})
	nc := natsConn(t, s)
	grant(t, nc, "rooms:ops", "alice")
	members := membersHelper(t, nc)

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
		"PHX_URL_B="+gwB.URL,
		"PHX_MEMBERS_URL="+members.URL,
		"PHX_PRESENCE_INTERVAL_MS="+strconv.FormatInt(e2ePresenceInterval.Milliseconds(), 10),
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

// membersHelper lets the Node tests grant and revoke memberships as an
// operator would: POST /grant or /revoke with a proto.MembershipRequest,
// forwarded to roomsvc over NATS; the answer is roomsvc's
// proto.MembershipReply.
func membersHelper(t *testing.T, nc *nats.Conn) *httptest.Server {
	subjects := map[string]string{"/grant": proto.SubjectMembersGrant, "/revoke": proto.SubjectMembersRevoke}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		subject, ok := subjects[r.URL.Path]
		if !ok || r.Method != http.MethodPost {
			http.Error(w, "POST /grant or /revoke", http.StatusNotFound)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		m, err := nc.Request(subject, body, 5*time.Second)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(m.Data)
	}))
	t.Cleanup(srv.Close)
	return srv
}

package system

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/gateway"
	"github.com/phxnats/phxnats/proto"
	"github.com/phxnats/phxnats/roomsvc/rooms"
)

// repoRoot is the repository root seen from this package's folder.
var repoRoot = filepath.Join("..", "..")

// noLimits turns off the budgets meant for clients on the internet (a
// socket's, a user's, an address's, a room's): for tests that send more
// than a person would, from one address.
func noLimits(c *Config) {
	c.Gateway.RateLimit, c.Gateway.UserRateLimit, c.Gateway.AddrRateLimit = gateway.Off, gateway.Off, gateway.Off
	c.Gateway.MaxPending = gateway.Off
	c.Rooms.RoomRateLimit, c.Rooms.RoomBytesLimit = rooms.Off, rooms.Off
}

// startSystem runs the whole chat on random ports for one test.
func startSystem(t testing.TB, mutate func(*Config)) *System {
	t.Helper()
	cfg := Defaults()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.OpsAddr = "127.0.0.1:0"
	cfg.NATSPort = -1
	cfg.DataDir = t.TempDir()
	cfg.Gateway.AssetsDir = filepath.Join(repoRoot, "gateway", "web", "node_modules", "phoenix", "priv", "static")
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if mutate != nil {
		mutate(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start system: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// wsURL is the socket endpoint of s with the given query (vsn, token).
func wsURL(s *System, query url.Values) string {
	return strings.Replace(s.URL(), "http://", "ws://", 1) + "/socket/websocket?" + query.Encode()
}

// natsConn connects a plain NATS client, as another service would.
func natsConn(t testing.TB, s *System) *nats.Conn {
	t.Helper()
	auth, err := s.NATSAuth()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.NATSURL(), auth)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// token gets a token through the development login.
func token(t testing.TB, s *System, user string) string {
	t.Helper()
	res, err := http.Get(s.URL() + "/token?user_id=" + url.QueryEscape(user))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body struct{ Token, Error string }
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil || res.StatusCode != 200 {
		t.Fatalf("token for %s: %d %v %s", user, res.StatusCode, err, body.Error)
	}
	return body.Token
}

// grant makes user a member of topic through roomsvc's NATS API.
func grant(t testing.TB, nc *nats.Conn, topic, user string) {
	t.Helper()
	data, _ := json.Marshal(proto.MembershipRequest{Topic: topic, UserID: user})
	m, err := nc.Request(proto.SubjectMembersGrant, data, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var rep proto.MembershipReply
	if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Error != "" {
		t.Fatalf("grant %s %s: %s", topic, user, m.Data)
	}
}

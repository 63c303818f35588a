package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/phxnats/phxnats/authsvc/auth"
	"github.com/phxnats/phxnats/authsvc/phxtoken"
	"github.com/phxnats/phxnats/proto"
	"github.com/phxnats/phxnats/proto/natstest"
	"github.com/phxnats/phxnats/roomsvc/rooms"
)

// system is an embedded nats-server with the real roomsvc and authsvc.
type system struct {
	srv *server.Server
	nc  *nats.Conn // a plain client, to observe and to call services
}

func startSystem(t *testing.T) system { return startSystemWith(t, natstest.Options{}) }

// startSystemWith runs the system on a server started with o; the services
// connect with opts.
func startSystemWith(t *testing.T, o natstest.Options, opts ...nats.Option) system {
	t.Helper()
	srv := natstest.Start(t, o)
	nc := natstest.Connect(t, srv, opts...)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := rooms.OpenStore(ctx, js, rooms.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	roomSvc, err := rooms.Start(rooms.Options{Conn: nc, Store: store, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { roomSvc.Drain(context.Background()) })

	signer, err := phxtoken.New(phxtoken.Options{
		SecretKeyBases: []string{"chatctl-test-secret-key-base-0123456789-0123456789-0123456789"},
		Salt:           "user socket",
	})
	if err != nil {
		t.Fatal(err)
	}
	bans, err := auth.OpenBans(ctx, js, auth.BansOptions{})
	if err != nil {
		t.Fatal(err)
	}
	authSvc, err := auth.Start(auth.Options{Conn: nc, Tokens: auth.PhoenixTokens{Signer: signer}, Bans: bans, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { authSvc.Drain(context.Background()) })
	return system{srv: srv, nc: nc}
}

func noEnv(string) string { return "" }

type result struct {
	code           int
	stdout, stderr string
}

func runCmd(t *testing.T, env func(string) string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb, env)
	return result{code, out.String(), errb.String()}
}

// chatctl runs a command against url with no environment.
func chatctl(t *testing.T, url string, args ...string) result {
	t.Helper()
	return runCmd(t, noEnv, append([]string{"--nats-url", url}, args...)...)
}

func TestRoomsMembership(t *testing.T) {
	sys := startSystem(t)
	url := sys.srv.ClientURL()
	steps := []struct {
		args   []string
		stdout string
	}{
		{[]string{"rooms", "members", "rooms:ops"}, ""},
		{[]string{"rooms", "members", "--json", "rooms:ops"}, "[]\n"},
		{[]string{"rooms", "grant", "rooms:ops", "alice"}, "granted alice on rooms:ops\n"},
		{[]string{"rooms", "grant", "rooms:ops", "bob.smith"}, "granted bob.smith on rooms:ops\n"},
		{[]string{"rooms", "grant", "rooms:ops", "alice"}, "granted alice on rooms:ops\n"}, // twice is fine
		{[]string{"rooms", "members", "rooms:ops"}, "alice\nbob.smith\n"},
		{[]string{"rooms", "members", "rooms:ops", "--json"}, `["alice","bob.smith"]` + "\n"},
		{[]string{"rooms", "members", "rooms:other"}, ""},
		{[]string{"rooms", "revoke", "rooms:ops", "alice"}, "revoked alice on rooms:ops\n"},
		{[]string{"rooms", "revoke", "rooms:ops", "bob.smith"}, "revoked bob.smith on rooms:ops\n"},
		{[]string{"rooms", "members", "rooms:ops"}, ""},
		{[]string{"rooms", "members", "--json", "rooms:ops"}, "[]\n"},
	}
	for _, s := range steps {
		r := chatctl(t, url, s.args...)
		if r.code != exitOK || r.stdout != s.stdout || r.stderr != "" {
			t.Fatalf("chatctl %s = %d, stdout %q, stderr %q; want 0, %q", strings.Join(s.args, " "), r.code, r.stdout, r.stderr, s.stdout)
		}
	}

	// The grant is the one roomsvc uses for joins.
	r := chatctl(t, url, "rooms", "grant", "rooms:ops", "carol")
	if r.code != exitOK {
		t.Fatal(r.stderr)
	}
	data, _ := json.Marshal(proto.JoinRequest{Topic: "rooms:ops", UserID: "carol"})
	m, err := sys.nc.Request(proto.JoinSubject(proto.ServiceRooms), data, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var rep proto.Reply
	if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Status != proto.StatusOK {
		t.Fatalf("carol's join after grant: %s %v", m.Data, err)
	}
}

func TestPublish(t *testing.T) {
	sys := startSystem(t)
	sub, err := sys.nc.SubscribeSync("phx.room.rooms:lobby")
	if err != nil {
		t.Fatal(err)
	}
	if err := sys.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	r := chatctl(t, sys.srv.ClientURL(), "publish", "rooms:lobby", "new_msg", `{"body":"deploy finished <&>"}`)
	if r.code != exitOK || r.stdout != "published new_msg to rooms:lobby\n" {
		t.Fatalf("publish = %+v", r)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"event":"new_msg","payload":{"body":"deploy finished <&>"}}`; string(m.Data) != want {
		t.Fatalf("got %s, want %s", m.Data, want)
	}
	if _, err := proto.DecodeBroadcast(m.Data); err != nil {
		t.Fatalf("gateways would drop it: %v", err)
	}
}

func TestToken(t *testing.T) {
	sys := startSystem(t)
	r := chatctl(t, sys.srv.ClientURL(), "token", "alice")
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("token = %+v", r)
	}
	token := strings.TrimSuffix(r.stdout, "\n")
	if token == "" || strings.Contains(token, "\n") {
		t.Fatalf("want one token line, got %q", r.stdout)
	}
	data, _ := json.Marshal(proto.VerifyRequest{Token: token})
	m, err := sys.nc.Request(proto.SubjectAuthVerify, data, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var rep proto.VerifyReply
	if err := json.Unmarshal(m.Data, &rep); err != nil || rep.UserID != "alice" || rep.Error != "" {
		t.Fatalf("verify: %s %v", m.Data, err)
	}
}

func TestDisconnect(t *testing.T) {
	sys := startSystem(t)
	sub, err := sys.nc.SubscribeSync(proto.DisconnectSubjectAll)
	if err != nil {
		t.Fatal(err)
	}
	if err := sys.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ user, subject string }{
		{"alice", "phx.user.alice.disconnect"},
		{"a.b", "phx.user.a_2Eb.disconnect"}, // escaped: one user, never a wildcard
	} {
		r := chatctl(t, sys.srv.ClientURL(), "disconnect", tt.user)
		if want := "sent disconnect for " + tt.user + " on " + tt.subject + "\n"; r.code != exitOK || r.stdout != want {
			t.Fatalf("disconnect %s = %+v, want stdout %q", tt.user, r, want)
		}
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != tt.subject {
			t.Fatalf("published on %s, want %s", m.Subject, tt.subject)
		}
		if user, ok := proto.IsDisconnect(m.Subject, m.Data); !ok || user != tt.user {
			t.Fatalf("gateways read user %q from %s (a disconnect: %v)", user, m.Data, ok)
		}
	}
}

// A ban through chatctl refuses the user's tokens and closes their
// sockets; unban lets new tokens in.
func TestBan(t *testing.T) {
	sys := startSystem(t)
	url := sys.srv.ClientURL()
	sub, err := sys.nc.SubscribeSync(proto.DisconnectSubjectAll)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(token string) proto.VerifyReply {
		t.Helper()
		data, _ := json.Marshal(proto.VerifyRequest{Token: token})
		m, err := sys.nc.Request(proto.SubjectAuthVerify, data, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var rep proto.VerifyReply
		if err := json.Unmarshal(m.Data, &rep); err != nil {
			t.Fatal(err)
		}
		return rep
	}
	tok := strings.TrimSpace(chatctl(t, url, "token", "alice").stdout)
	if rep := verify(tok); rep.UserID != "alice" {
		t.Fatalf("before the ban: %+v", rep)
	}
	steps := []struct {
		args   []string
		stdout string // prefix
	}{
		{[]string{"ban", "alice"}, "banned alice until unban; sockets closed\n"},
		{[]string{"ban", "alice", "--for", "90m"}, "banned alice: tokens signed before "},
		{[]string{"unban", "alice"}, "unbanned alice: tokens signed from "},
	}
	for _, s := range steps {
		r := chatctl(t, url, s.args...)
		if r.code != exitOK || !strings.HasPrefix(r.stdout, s.stdout) || r.stderr != "" {
			t.Fatalf("chatctl %s = %+v, want stdout %q...", strings.Join(s.args, " "), r, s.stdout)
		}
		if s.args[0] == "ban" {
			if m, err := sub.NextMsg(5 * time.Second); err != nil || m.Subject != "phx.user.alice.disconnect" {
				t.Fatalf("ban published %v, %v; want phx.user.alice.disconnect", m, err)
			}
		}
		if rep := verify(tok); rep.Error != proto.TokenRevoked {
			t.Fatalf("after %s: the old token verifies as %+v", s.args[0], rep)
		}
	}
	for _, args := range [][]string{
		{"ban"},
		{"ban", "a", "b"},
		{"ban", "alice", "--for", "0s"},
		{"unban", "alice", "--for", "1h"},
		{"disconnect", "alice", "--for", "1h"},
	} {
		if r := chatctl(t, url, args...); r.code != exitUsage {
			t.Errorf("chatctl %s = %d, want %d", strings.Join(args, " "), r.code, exitUsage)
		}
	}
	// Ids outside proto.ValidUserID are refused before anything is sent.
	long := strings.Repeat("x", proto.MaxUserIDLength+1)
	for _, args := range [][]string{
		{"ban", long}, {"unban", "a\nb"}, {"disconnect", long}, {"token", long}, {"rooms", "grant", "rooms:ops", long},
	} {
		if r := chatctl(t, url, args...); r.code != exitUsage || !strings.Contains(r.stderr, "bad user id") {
			t.Errorf("chatctl %.30s = %d %q, want exit 2 about the user id", strings.Join(args, " "), r.code, r.stderr)
		}
	}
}

// closedPort returns a loopback URL on which nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "nats://" + addr
}

func TestErrors(t *testing.T) {
	sys := startSystem(t)
	bare := natstest.Start(t, natstest.Options{NoJetStream: true}) // NATS without services
	dead := closedPort(t)

	// A responder that never answers, for the timeout.
	silent := natstest.Start(t, natstest.Options{NoJetStream: true})
	snc := natstest.Connect(t, silent)
	if _, err := snc.Subscribe(proto.SubjectMembersList, func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := snc.Flush(); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		url    string
		args   []string
		code   int
		stderr string // a substring
		usage  bool   // the usage text follows the message
	}{
		{"no NATS", dead, []string{"rooms", "grant", "rooms:ops", "alice"}, exitFail,
			"chatctl: cannot connect to NATS at " + dead + ": ", false},
		{"no NATS token", dead, []string{"token", "alice"}, exitFail, "cannot connect to NATS at " + dead, false},
		{"no roomsvc", bare.ClientURL(), []string{"rooms", "grant", "rooms:ops", "alice"}, exitFail,
			"chatctl: roomsvc is not answering on phx.rooms.members.grant (no responders)\n", false},
		{"no roomsvc members", bare.ClientURL(), []string{"rooms", "members", "rooms:ops"}, exitFail,
			"roomsvc is not answering on phx.rooms.members.list (no responders)", false},
		{"no authsvc", bare.ClientURL(), []string{"token", "alice"}, exitFail,
			"chatctl: authsvc is not answering on phx.auth.sign (no responders)\n", false},
		{"timeout", silent.ClientURL(), []string{"--timeout", "200ms", "rooms", "members", "rooms:ops"}, exitFail,
			"chatctl: roomsvc did not answer on phx.rooms.members.list within 200ms (timeout)\n", false},
		{"not a room topic", sys.srv.ClientURL(), []string{"rooms", "grant", "lobby", "alice"}, exitFail,
			`chatctl: roomsvc refused: rooms: "lobby" is not a room topic`, false},
		{"not a room topic members", sys.srv.ClientURL(), []string{"rooms", "members", "other:x"}, exitFail,
			`roomsvc refused: rooms: "other:x" is not a room topic`, false},
		{"empty user", sys.srv.ClientURL(), []string{"rooms", "grant", "rooms:ops", ""}, exitUsage,
			`user "": proto: bad user id: empty`, false},
		{"token empty user", sys.srv.ClientURL(), []string{"token", ""}, exitUsage,
			`user "": proto: bad user id: empty`, false},
		{"bad JSON", dead, []string{"publish", "rooms:lobby", "new_msg", `{"body":`}, exitUsage,
			"chatctl: bad JSON payload: unexpected end of JSON input\n", false},
		{"JSON not an object", dead, []string{"publish", "rooms:lobby", "new_msg", `["hi"]`}, exitUsage,
			`chatctl: bad JSON payload: want a JSON object such as {"body":"hi"}, got ["hi"]`, false},
		{"reserved event", dead, []string{"publish", "rooms:lobby", "phx_close", `{}`}, exitUsage,
			`broadcast event "phx_close" is reserved`, false},
		{"empty topic", dead, []string{"publish", "", "new_msg", `{}`}, exitUsage, `topic "": proto: bad topic: empty`, false},
		{"no command", dead, nil, exitUsage, "chatctl: missing command\n", true},
		{"unknown command", dead, []string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`, true},
		{"rooms no subcommand", dead, []string{"rooms"}, exitUsage, "rooms: missing subcommand", true},
		{"rooms unknown subcommand", dead, []string{"rooms", "kick"}, exitUsage, `rooms: unknown subcommand "kick"`, true},
		{"grant missing user", dead, []string{"rooms", "grant", "rooms:ops"}, exitUsage, "rooms grant: want TOPIC USER, got 1 argument(s)", true},
		{"revoke extra arg", dead, []string{"rooms", "revoke", "rooms:ops", "a", "b"}, exitUsage, "rooms revoke: want TOPIC USER, got 3", true},
		{"members missing topic", dead, []string{"rooms", "members"}, exitUsage, "rooms members: want TOPIC, got 0", true},
		{"publish missing payload", dead, []string{"publish", "rooms:lobby", "new_msg"}, exitUsage, "publish: want TOPIC EVENT JSON, got 2", true},
		{"token missing user", dead, []string{"token"}, exitUsage, "token: want USER, got 0", true},
		{"disconnect missing user", dead, []string{"disconnect"}, exitUsage, "disconnect: want USER, got 0", true},
		{"disconnect empty user", dead, []string{"disconnect", ""}, exitUsage, `user "": proto: bad user id: empty`, false},
		{"json elsewhere", dead, []string{"--json", "token", "alice"}, exitUsage, "--json is only for rooms members", true},
		{"json on grant", dead, []string{"rooms", "grant", "--json", "rooms:ops", "alice"}, exitUsage, "--json is only for rooms members", true},
		{"unknown flag", dead, []string{"--nope", "token", "alice"}, exitUsage, "unknown flag: --nope", true},
		{"bad timeout flag", dead, []string{"--timeout", "soon", "token", "alice"}, exitUsage, `invalid argument "soon"`, true},
		{"zero timeout", dead, []string{"--timeout", "0s", "token", "alice"}, exitUsage, "timeout: want a positive duration", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := chatctl(t, tt.url, tt.args...)
			if r.code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", r.code, tt.code, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
			if !strings.HasPrefix(r.stderr, "chatctl: ") || !strings.Contains(r.stderr, tt.stderr) {
				t.Errorf("stderr %q, want it to contain %q", r.stderr, tt.stderr)
			}
			if got := strings.Contains(r.stderr, "Usage: chatctl"); got != tt.usage {
				t.Errorf("usage shown = %v, want %v; stderr %q", got, tt.usage, r.stderr)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"rooms", "-h"}} {
		r := runCmd(t, noEnv, args...)
		if r.code != exitOK || !strings.HasPrefix(r.stdout, "Usage: chatctl [flags] COMMAND ARGS...\n") || r.stderr != "" {
			t.Errorf("%v = %+v", args, r)
		}
		for _, want := range []string{"rooms grant TOPIC USER", "--nats-url", "--timeout", "--config", "CHAT_NATS_URL", "CHAT_TIMEOUT"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%v: usage lacks %q", args, want)
			}
		}
	}
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "chatctl.yaml")
	if err := os.WriteFile(file, []byte("nats_url: nats://file:4222\ntimeout: 3s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noExt := filepath.Join(dir, "chatctl.conf") // YAML whatever the extension
	if err := os.WriteFile(noExt, []byte("timeout: 4s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(vars map[string]string) func(string) string {
		return func(k string) string { return vars[k] }
	}
	full := map[string]string{"CHAT_NATS_URL": "nats://env:4222", "CHAT_TIMEOUT": "2s"}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		url     string
		timeout time.Duration
	}{
		{"defaults", nil, nil, "nats://127.0.0.1:4222", 5 * time.Second},
		{"file", []string{"--config", file}, nil, "nats://file:4222", 3 * time.Second},
		{"file without extension", []string{"--config", noExt}, nil, "nats://127.0.0.1:4222", 4 * time.Second},
		{"env over default", nil, full, "nats://env:4222", 2 * time.Second},
		{"env over file", []string{"--config", file}, full, "nats://env:4222", 2 * time.Second},
		{"one env over file", []string{"--config", file}, map[string]string{"CHAT_TIMEOUT": "1s"}, "nats://file:4222", time.Second},
		{"flags over env and file", []string{"--config", file, "--nats-url", "nats://flag:4222", "--timeout", "1500ms"}, full,
			"nats://flag:4222", 1500 * time.Millisecond},
		{"flag over env, env over file", []string{"--config", file, "--timeout", "7s"}, full, "nats://env:4222", 7 * time.Second},
		{"flag equal to default still wins", []string{"--config", file, "--timeout", "5s"}, full, "nats://env:4222", 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, rest, err := loadConfig(append(tt.args, "token", "alice"), env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.NATSURL != tt.url || cfg.Timeout != tt.timeout {
				t.Errorf("got %s %s, want %s %s", cfg.NATSURL, cfg.Timeout, tt.url, tt.timeout)
			}
			if strings.Join(rest, " ") != "token alice" {
				t.Errorf("rest = %q", rest)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name   string
		args   []string
		env    map[string]string
		stderr string
	}{
		{"missing file", []string{"--config", filepath.Join(dir, "nope.yaml")}, nil, "config file " + filepath.Join(dir, "nope.yaml")},
		{"not YAML", []string{"--config", write("bad.yaml", "nats_url: [\n")}, nil, "config file"},
		{"unknown key", []string{"--config", write("typo.yaml", "nats-url: nats://x:4222\n")}, nil, "unknown key(s) nats-url (want nats_url, nats_nkey, timeout)"},
		{"bare number timeout", []string{"--config", write("num.yaml", "timeout: 5\n")}, nil, `timeout: want a positive duration such as 5s or 500ms, got "5"`},
		{"bad env timeout", nil, map[string]string{"CHAT_TIMEOUT": "later"}, `got "later"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCmd(t, func(k string) string { return tt.env[k] }, append(tt.args, "token", "alice")...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tt.stderr) || r.stdout != "" {
				t.Errorf("= %+v, want exit 2 and stderr containing %q", r, tt.stderr)
			}
		})
	}
}

// The environment reaches the command: CHAT_NATS_URL alone finds the server.
func TestEnvURL(t *testing.T) {
	sys := startSystem(t)
	env := func(k string) string {
		if k == "CHAT_NATS_URL" {
			return sys.srv.ClientURL()
		}
		return ""
	}
	if r := runCmd(t, env, "token", "alice"); r.code != exitOK {
		t.Fatalf("%+v", r)
	}
}

// Against make run's embedded NATS, which admits only its generated key,
// chatctl needs no flag when run where data/nats.nk is; elsewhere it is
// refused, and a key named but missing is an error.
func TestGeneratedKey(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "data", "nats.nk")
	if err := os.WriteFile(key, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	auth, err := nats.NkeyOptionFromSeed(key)
	if err != nil {
		t.Fatal(err)
	}
	sys := startSystemWith(t, natstest.Options{NKey: pub}, auth)
	url := sys.srv.ClientURL()

	t.Chdir(t.TempDir()) // no data/nats.nk here
	if r := chatctl(t, url, "token", "alice"); r.code != exitFail || !strings.Contains(strings.ToLower(r.stderr), "authorization") || !strings.Contains(r.stderr, "--nats-nkey") {
		t.Fatalf("without the key: %+v, want an authorization failure", r)
	}
	if r := chatctl(t, url, "--nats-nkey", filepath.Join(dir, "nope.nk"), "token", "alice"); r.code != exitFail || !strings.Contains(r.stderr, "nope.nk") {
		t.Fatalf("missing key file: %+v", r)
	}
	t.Chdir(dir)
	if r := chatctl(t, url, "token", "alice"); r.code != exitOK || r.stdout == "" {
		t.Fatalf("with data/nats.nk in the working folder: %+v", r)
	}
	if r := runCmd(t, func(k string) string {
		return map[string]string{"CHAT_NATS_URL": url, "CHAT_NATS_NKEY": key}[k]
	}, "rooms", "grant", "rooms:ops", "alice"); r.code != exitOK {
		t.Fatalf("CHAT_NATS_NKEY: %+v", r)
	}
}

func TestRedactURLs(t *testing.T) {
	got := redactURLs("nats://user:secret@a:4222, nats://tok@b:4222,nats://c:4222")
	if strings.Contains(got, "secret") || strings.Contains(got, "tok@") || !strings.Contains(got, "nats://c:4222") {
		t.Fatalf("redactURLs = %q", got)
	}
	r := chatctl(t, "nats://user:secret@"+strings.TrimPrefix(closedPort(t), "nats://"), "token", "alice")
	if r.code != exitFail || strings.Contains(r.stderr, "secret") {
		t.Fatalf("%+v", r)
	}
}

// The binary stays an outside client: it must not link any service's code
// (the tests do, to run the real services).
func TestOnlyProtoDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "github.com/phxnats/phxnats/chatctl" {
			continue
		}
		if strings.HasPrefix(pkg, "github.com/phxnats/phxnats/") && !strings.HasPrefix(pkg, "github.com/phxnats/phxnats/proto") {
			t.Errorf("chatctl links %s", pkg)
		}
		if pkg == "github.com/phxnats/phxnats/proto/natstest" {
			t.Errorf("chatctl links the test server package %s", pkg)
		}
	}
}

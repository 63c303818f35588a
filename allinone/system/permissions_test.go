package system

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"

	"github.com/phxnats/phxnats/authsvc/auth"
	"github.com/phxnats/phxnats/authsvc/phxtoken"
	"github.com/phxnats/phxnats/gateway"
	"github.com/phxnats/phxnats/proto"
	"github.com/phxnats/phxnats/roomsvc/rooms"
	"github.com/phxnats/phxnats/svckit"
)

// The NATS configuration shipped in deployments/nats.
var (
	natsConfDir     = filepath.Join(repoRoot, "deployments", "nats")
	natsConf        = filepath.Join(natsConfDir, "nats.conf")
	natsClusterConf = filepath.Join(natsConfDir, "cluster.conf")
)

// natsRoles are the users of deployments/nats/permissions.conf; each one's
// password is read from <ROLE>_NATS_PASSWORD.
var natsRoles = []string{"gateway", "roomsvc", "authsvc", "publisher", "operator"}

func passwordEnv(role string) string { return strings.ToUpper(role) + "_NATS_PASSWORD" }

// setNATSPasswords puts a fresh random password for every role into the
// environment, where the config file reads them, and returns them.
func setNATSPasswords(t *testing.T) map[string]string {
	t.Helper()
	pw := make(map[string]string, len(natsRoles))
	for _, role := range natsRoles {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		pw[role] = "pw" + hex.EncodeToString(b)
		t.Setenv(passwordEnv(role), pw[role])
	}
	return pw
}

// startPermissionedNATS runs deployments/nats/nats.conf, users and
// permissions as shipped, on a random local port with a temporary JetStream
// store.
func startPermissionedNATS(t *testing.T) *server.Server {
	t.Helper()
	opts, err := server.ProcessConfigFile(natsConf)
	if err != nil {
		t.Fatalf("%s: %v", natsConf, err)
	}
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.HTTPHost, opts.HTTPPort = "", 0 // no monitoring port in tests
	opts.StoreDir = t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	if !opts.JetStream {
		t.Fatalf("%s does not enable JetStream", natsConf)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// asyncErrors records what the server reported asynchronously to one
// connection: permission violations arrive as -ERR and reach the
// connection's error handler, the publish or subscription itself being
// silently dropped.
type asyncErrors struct {
	mu   sync.Mutex
	errs []error
	more chan struct{}
}

func (a *asyncErrors) add(err error) {
	a.mu.Lock()
	a.errs = append(a.errs, err)
	a.mu.Unlock()
	select {
	case a.more <- struct{}{}:
	default:
	}
}

func (a *asyncErrors) all() []error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.errs)
}

// violation waits for a permissions violation whose text holds want, e.g.
// `Publish to "phx.auth.sign"`.
func (a *asyncErrors) violation(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		for _, err := range a.all() {
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), "Permissions Violation for "+want) {
				return
			}
		}
		select {
		case <-a.more:
		case <-deadline:
			t.Fatalf("no permissions violation for %s; errors seen: %v", want, a.all())
		}
	}
}

// none checks that the connection got no asynchronous error at all.
func (a *asyncErrors) none(t *testing.T, who string) {
	t.Helper()
	if errs := a.all(); len(errs) > 0 {
		t.Errorf("%s got NATS errors (its permissions are too narrow?): %v", who, errs)
	}
}

// connectAs connects to s as one of the roles of permissions.conf, with
// the role's inbox prefix (_INBOX_<role>, what svckit and chatctl set)
// unless opts say otherwise.
func connectAs(t *testing.T, s *server.Server, role, password string, opts ...nats.Option) (*nats.Conn, *asyncErrors) {
	t.Helper()
	rec := &asyncErrors{more: make(chan struct{}, 1)}
	nc, err := nats.Connect(s.ClientURL(), append([]nats.Option{
		nats.Name(role), nats.UserInfo(role, password), nats.CustomInboxPrefix("_INBOX_" + role),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { rec.add(err) })}, opts...)...)
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(nc.Close)
	return nc, rec
}

func TestPermissionConfigsParse(t *testing.T) {
	setNATSPasswords(t)
	t.Setenv("NATS_SERVER_NAME", "nats-1")
	for _, file := range []string{natsConf, natsClusterConf} {
		opts, err := server.ProcessConfigFile(file)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		var users []string
		for _, u := range opts.Users {
			users = append(users, u.Username)
			if u.Permissions == nil || u.Permissions.Publish == nil || u.Permissions.Subscribe == nil {
				t.Errorf("%s: user %s has no publish and subscribe permissions: %+v", file, u.Username, u.Permissions)
			}
			if u.Password == "" || u.Password != os.Getenv(passwordEnv(u.Username)) {
				t.Errorf("%s: user %s's password is not $%s", file, u.Username, passwordEnv(u.Username))
			}
		}
		slices.Sort(users)
		want := slices.Sorted(slices.Values(natsRoles))
		if !slices.Equal(users, want) {
			t.Errorf("%s: users %v, want %v", file, users, want)
		}
		if !opts.JetStream {
			t.Errorf("%s: JetStream is off", file)
		}
		if opts.HTTPPort != 0 && !svckit.Loopback(opts.HTTPHost) {
			t.Errorf("%s: NATS monitoring on %s:%d, want loopback", file, opts.HTTPHost, opts.HTTPPort)
		}
	}
	opts, _ := server.ProcessConfigFile(natsClusterConf)
	if opts.ServerName != "nats-1" || opts.Cluster.Name != "phxnats" || len(opts.Routes) != 3 {
		t.Errorf("cluster.conf: server %q cluster %q routes %v", opts.ServerName, opts.Cluster.Name, opts.Routes)
	}

	// A password missing from the environment stops the server from starting.
	os.Unsetenv(passwordEnv("publisher"))
	if _, err := server.ProcessConfigFile(natsConf); err == nil || !strings.Contains(err.Error(), "PUBLISHER_NATS_PASSWORD") {
		t.Errorf("config without $PUBLISHER_NATS_PASSWORD: err = %v, want an error naming it", err)
	}
}

// The Kubernetes values for the NATS Helm chart carry their own copy of
// permissions.conf: the same users and permissions, except that the
// production gateway (dev_login off) may not ask phx.auth.sign.
func TestPermissionsKubernetesValuesMatch(t *testing.T) {
	setNATSPasswords(t)
	values := filepath.Join(repoRoot, "deployments", "kubernetes", "values-nats.yaml")
	b, err := os.ReadFile(values)
	if err != nil {
		t.Fatal(err)
	}
	// The literal block under "permissions.conf: |", without its indent.
	const key = "permissions.conf: |"
	var block []string
	indent := ""
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case !in && strings.TrimSpace(line) == key:
			in = true
		case in && strings.TrimSpace(line) == "":
			block = append(block, "")
		case in && indent == "":
			indent = line[:len(line)-len(strings.TrimLeft(line, " "))]
			fallthrough
		case in:
			if !strings.HasPrefix(line, indent) {
				in = false
				continue
			}
			block = append(block, strings.TrimPrefix(line, indent))
		}
	}
	if len(block) == 0 {
		t.Fatalf("%s: no %q block", values, key)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "permissions.conf"), []byte(strings.Join(block, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte("include ./permissions.conf\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k8s, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("%s, permissions.conf: %v", values, err)
	}
	shipped, err := server.ProcessConfigFile(natsConf)
	if err != nil {
		t.Fatal(err)
	}
	byName := func(users []*server.User) map[string]*server.User {
		m := make(map[string]*server.User)
		for _, u := range users {
			m[u.Username] = u
		}
		return m
	}
	want, got := byName(shipped.Users), byName(k8s.Users)
	gw := want["gateway"].Permissions.Publish
	if !slices.Contains(gw.Allow, proto.SubjectAuthSign) {
		t.Fatalf("the shipped gateway user may not publish %s any more: update this test", proto.SubjectAuthSign)
	}
	gw.Allow = slices.DeleteFunc(slices.Clone(gw.Allow), func(s string) bool { return s == proto.SubjectAuthSign })
	if len(got) != len(want) {
		t.Fatalf("users %v, want those of %s", slices.Sorted(maps.Keys(got)), natsConf)
	}
	for name, w := range want {
		g := got[name]
		if g == nil {
			t.Errorf("user %s missing from %s", name, values)
			continue
		}
		if !reflect.DeepEqual(g.Permissions, w.Permissions) || g.Password != w.Password {
			t.Errorf("user %s differs from permissions.conf:\n got  %s\n want %s", name, permString(g.Permissions), permString(w.Permissions))
		}
	}
}

func permString(p *server.Permissions) string {
	if p == nil {
		return "<nil>"
	}
	s := func(sp *server.SubjectPermission) string {
		if sp == nil {
			return "-"
		}
		return fmt.Sprintf("allow %v deny %v", sp.Allow, sp.Deny)
	}
	return fmt.Sprintf("pub {%s} sub {%s} responses %v", s(p.Publish), s(p.Subscribe), p.Response != nil)
}

// TestPermissionsLeastPrivilege runs the real services, each with its own
// user of deployments/nats/permissions.conf, and checks that the chat works
// end to end while every role is refused what it does not need.
func TestPermissionsLeastPrivilege(t *testing.T) {
	pw := setNATSPasswords(t)
	ns := startPermissionedNATS(t)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Unknown users and wrong passwords are refused.
	if nc, err := nats.Connect(ns.ClientURL()); err == nil {
		nc.Close()
		t.Fatal("connected without a user")
	}
	if nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo("gateway", pw["operator"])); err == nil {
		nc.Close()
		t.Fatal("connected as gateway with the operator's password")
	}

	// authsvc
	anc, aerr := connectAs(t, ns, "authsvc", pw["authsvc"])
	signer, err := phxtoken.New(phxtoken.Options{SecretKeyBases: []string{strings.Repeat("s", 64)}, Salt: "user socket", MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ajs, err := jetstream.New(anc)
	if err != nil {
		t.Fatal(err)
	}
	bans, err := auth.OpenBans(ctx, ajs, auth.BansOptions{})
	if err != nil {
		t.Fatalf("authsvc cannot open its KV bucket: %v (errors: %v)", err, aerr.all())
	}
	authSvc, err := auth.Start(auth.Options{Conn: anc, Tokens: auth.PhoenixTokens{Signer: signer}, Bans: bans, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { authSvc.Drain(context.Background()) })

	// roomsvc: creates its KV buckets through the JetStream API it may use.
	rnc, rerr := connectAs(t, ns, "roomsvc", pw["roomsvc"])
	js, err := jetstream.New(rnc)
	if err != nil {
		t.Fatal(err)
	}
	store, err := rooms.OpenStore(ctx, js, rooms.StoreOptions{})
	if err != nil {
		t.Fatalf("roomsvc cannot open its KV buckets: %v (errors: %v)", err, rerr.all())
	}
	if err := store.Ping(ctx); err != nil { // its readiness probe
		t.Fatal(err)
	}
	roomSvc, err := rooms.Start(rooms.Options{Conn: rnc, Store: store, Logger: quiet,
		Rules: rooms.Rules{MaxBodyBytes: rooms.DefaultMaxBodyBytes, AnnounceJoins: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { roomSvc.Drain(context.Background()) })

	// gateway, with the development login (it asks authsvc on phx.auth.sign).
	gnc, gerr := connectAs(t, ns, "gateway", pw["gateway"])
	gw, err := gateway.New(gateway.Options{Conn: gnc, Name: "gw-perm", AllowAnonymous: true, DevLogin: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = gw.Shutdown(ctx)
		srv.Close()
	})

	onc, oerr := connectAs(t, ns, "operator", pw["operator"])
	pnc, perr := connectAs(t, ns, "publisher", pw["publisher"])

	// --- The whole chat works with these users. ---

	alice := dial(t, srv.URL, url.Values{"token": {devToken(t, srv.URL, "alice")}})
	anon := dial(t, srv.URL, nil)
	alice.join("rooms:lobby", "1")
	anon.join("rooms:lobby", "1")
	alice.send(`["1","2","rooms:lobby","new_msg",{"body":"hello"}]`)
	alice.expectSkippingJoins(`[null,null,"rooms:lobby","new_msg",{"body":"hello"}]`)
	anon.expectSkippingJoins(`[null,null,"rooms:lobby","new_msg",{"body":"hello"}]`)

	// Presence: the gateway writes its key and snapshots the room (stream
	// info, direct get), roomsvc makes its feed of the bucket, the
	// operator lists the room.
	carol := dial(t, srv.URL, url.Values{"token": {devToken(t, srv.URL, "carol")}})
	carol.joinWith("rooms:lobby", "1", `{"presence":true}`)
	carol.expectState("rooms:lobby", "1", map[string]int{"carol": 1})
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		var list proto.PresenceListReply
		requestJSON(t, onc, proto.SubjectPresenceList, proto.PresenceListRequest{Topic: "rooms:lobby"}, &list)
		if list.Error != "" || time.Since(start) > 3*time.Second {
			t.Fatalf("presence list as operator: %+v", list)
		}
		if _, ok := list.Presences["carol"]; ok {
			break
		}
	}

	// A private room: refused, granted by the operator, then joined.
	alice.send(`["3","3","rooms:ops","phx_join",{}]`)
	alice.expectSkippingJoins(`["3","3","rooms:ops","phx_reply",{"response":{"reason":"unauthorized"},"status":"error"}]`)
	grant(t, onc, "rooms:ops", "alice")
	if got := members(t, onc, "rooms:ops"); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("rooms:ops members = %v, want [alice]", got)
	}
	alice.send(`["4","4","rooms:ops","phx_join",{}]`)
	alice.expectSkippingJoins(`["4","4","rooms:ops","phx_reply",{"response":{},"status":"ok"}]`)
	alice.send(`["4","5","rooms:ops","new_msg",{"body":"ops only"}]`)
	alice.expectSkippingJoins(`[null,null,"rooms:ops","new_msg",{"body":"ops only"}]`)

	// Ignore lists: KV compare-and-set and phx.user.<id>.ignores.
	alice.send(`["1","6","rooms:lobby","ignore",{"user_id":"bob"}]`)
	alice.expectSkippingJoins(`["1","6","rooms:lobby","phx_reply",{"response":{"ignored":["bob"]},"status":"ok"}]`)

	// The operator signs a token, kicks and disconnects.
	var signed proto.SignReply
	requestJSON(t, onc, proto.SubjectAuthSign, proto.SignRequest{UserID: "bob"}, &signed)
	if signed.Token == "" {
		t.Fatalf("operator could not sign a token: %+v", signed)
	}
	bob := dial(t, srv.URL, url.Values{"token": {signed.Token}})
	bob.join("rooms:lobby", "1")
	kick, _ := proto.KickSubject("alice")
	publishJSON(t, onc, kick, proto.Kick{Topic: "rooms:ops"})
	for {
		if f := alice.read(); strings.Contains(f, `"rooms:ops","phx_close"`) {
			break
		}
	}
	bye, _ := proto.DisconnectSubject("bob")
	publishJSON(t, onc, bye, proto.Disconnect{UserID: "bob"})
	if code := bob.closeCode(); code != websocket.CloseGoingAway {
		t.Fatalf("bob's socket closed with %d, want 1001 (disconnect)", code)
	}
	// The operator bans bob: authsvc stores it, and his token is refused.
	var ban proto.BanReply
	requestJSON(t, onc, proto.SubjectAuthBan, proto.BanRequest{UserID: "bob"}, &ban)
	if ban.Error != "" || !ban.Forever {
		t.Fatalf("operator's ban: %+v", ban)
	}
	var verified proto.VerifyReply
	requestJSON(t, gnc, proto.SubjectAuthVerify, proto.VerifyRequest{Token: signed.Token}, &verified)
	if verified.Error != proto.TokenRevoked {
		t.Fatalf("banned user's token: %+v", verified)
	}
	requestJSON(t, onc, proto.SubjectAuthUnban, proto.BanRequest{UserID: "bob"}, &ban)
	if ban.Error != "" {
		t.Fatalf("operator's unban: %+v", ban)
	}

	// The publisher posts into a room; sockets receive it.
	if err := proto.Publish(ctx, pnc, "rooms:lobby", "new_msg", map[string]string{"body": "deploy finished"}); err != nil {
		t.Fatal(err)
	}
	anon.expectSkippingJoins(`[null,null,"rooms:lobby","new_msg",{"body":"deploy finished"}]`)

	// None of the services was refused anything on the way.
	aerr.none(t, "authsvc")
	rerr.none(t, "roomsvc")
	gerr.none(t, "gateway")
	oerr.none(t, "operator")
	perr.none(t, "publisher")

	// --- Everything else is refused. ---
	// Each attempt uses a connection of its own, as the same user, so that
	// the services' connections above stay free of errors to the end.

	// The gateway cannot grant memberships: its request never reaches roomsvc.
	gwProbe, gwProbeErr := connectAs(t, ns, "gateway", pw["gateway"])
	data, _ := json.Marshal(proto.MembershipRequest{Topic: "rooms:ops", UserID: "mallory"})
	if m, err := gwProbe.Request(proto.SubjectMembersGrant, data, 500*time.Millisecond); err == nil {
		t.Fatalf("gateway user's grant was answered: %s", m.Data)
	}
	gwProbeErr.violation(t, `Publish to "phx.rooms.members.grant"`)
	if got := members(t, onc, "rooms:ops"); slices.Contains(got, "mallory") {
		t.Fatalf("the gateway user granted mallory: members %v", got)
	}

	// The publisher's own request fails too: it may not even subscribe to
	// an inbox for the reply.
	pubProbe, pubProbeErr := connectAs(t, ns, "publisher", pw["publisher"], nats.CustomInboxPrefix("_INBOX"))
	if _, err := pubProbe.Request(proto.SubjectAuthSign, []byte(`{"user_id":"mallory"}`), 500*time.Millisecond); err == nil {
		t.Fatal("the publisher got a token")
	}
	pubProbeErr.violation(t, `Subscription to "_INBOX.`)
	pubProbeErr.violation(t, `Publish to "phx.auth.sign"`)

	type attempt struct {
		role    string
		sub     bool // subscribe, else publish
		subject string
	}
	denied := []attempt{
		{"gateway", false, "phx.room.rooms:lobby"}, // cannot forge broadcasts
		{"gateway", false, "$JS.API.STREAM.PURGE.PHX_ROOMS"},
		{"gateway", false, "$JS.API.STREAM.DELETE.PHX_ROOMS"},
		{"gateway", true, "phx.room.>"}, // reads rooms through its consumers only
		{"gateway", false, "phx.rooms.members.revoke"},
		{"gateway", false, "phx.user.alice.disconnect"},
		{"gateway", true, "phx.rooms.members.grant"}, // nor serve memberships
		{"gateway", true, "phx.auth.verify"},
		// Only its own replies: not the operator's (tokens from chatctl
		// token), not roomsvc's, not anyone's in the shared inbox.
		{"gateway", true, "_INBOX.>"},
		{"gateway", true, "_INBOX_operator.>"},
		{"gateway", true, "_INBOX_roomsvc.>"},
		// No consumer of its own, in any of the create forms (a push
		// consumer's deliver subject is not checked by the server), no
		// pull requests (their reply subject is not checked either), no
		// deleting consumers: roomsvc makes its feed.
		{"gateway", false, "$JS.API.CONSUMER.CREATE.PHX_ROOMS"},
		{"gateway", false, "$JS.API.CONSUMER.CREATE.PHX_ROOMS.evil"},
		{"gateway", false, "$JS.API.CONSUMER.CREATE.PHX_ROOMS.evil.phx.room.>"},
		{"gateway", false, "$JS.API.CONSUMER.DURABLE.CREATE.PHX_ROOMS.evil"},
		{"gateway", false, "$JS.API.CONSUMER.MSG.NEXT.PHX_ROOMS.evil"},
		{"gateway", false, "$JS.API.CONSUMER.DELETE.PHX_ROOMS.evil"},

		{"publisher", false, "phx.rooms.members.grant"},
		{"publisher", false, "phx.auth.sign"},
		{"publisher", false, "phx.user.alice.disconnect"},
		{"publisher", false, "phx.svc.rooms.push"},
		{"publisher", true, "phx.room.>"},
		{"publisher", true, "phx.room.rooms:lobby"},
		{"publisher", true, "_INBOX.>"}, // other users' replies

		{"roomsvc", false, "phx.auth.sign"},
		{"roomsvc", false, "phx.user.alice.disconnect"},
		{"roomsvc", false, "$JS.API.STREAM.CREATE.OTHER"}, // only its own buckets
		{"roomsvc", false, "$KV.other.key"},
		{"roomsvc", true, "phx.auth.verify"},
		{"roomsvc", true, "_INBOX.>"},
		{"roomsvc", true, "_INBOX_gateway.>"},
		// It keeps the room stream, never empties or removes it.
		{"roomsvc", false, "$JS.API.STREAM.PURGE.PHX_ROOMS"},
		{"roomsvc", false, "$JS.API.STREAM.DELETE.PHX_ROOMS"},
		{"roomsvc", false, "$JS.API.STREAM.MSG.DELETE.PHX_ROOMS"},
		{"roomsvc", false, "$JS.API.CONSUMER.CREATE.PHX_ROOMS.evil.phx.room.>"},
		{"roomsvc", false, "$JS.API.CONSUMER.DURABLE.CREATE.PHX_ROOMS.evil"},

		{"authsvc", false, "phx.room.rooms:lobby"},
		{"authsvc", false, "phx.rooms.members.grant"},
		{"authsvc", false, "_INBOX.anything"}, // replies only to requests it received
		{"authsvc", false, "phx.user.alice.kick"},
		{"authsvc", false, "$KV.phx_room_members.x"},
		{"authsvc", false, "$JS.API.STREAM.CREATE.OTHER"},
		{"roomsvc", false, "$KV.phx_user_bans.x"},
		{"gateway", false, "phx.auth.ban"},
		{"publisher", false, "phx.auth.unban"},
		{"authsvc", true, "phx.room.>"},

		{"operator", false, "phx.svc.rooms.join"}, // cannot pose as a gateway
		{"operator", false, "phx.auth.verify"},
		{"operator", true, "phx.room.>"},
		{"operator", true, "_INBOX.>"},
		{"operator", true, "_INBOX_gateway.>"},
	}
	leaked := make(chan string, len(denied))
	for _, a := range denied {
		kind, verb := "pub", `Publish to %q`
		if a.sub {
			kind, verb = "sub", `Subscription to %q`
		}
		t.Run(a.role+"_"+kind+"_"+a.subject, func(t *testing.T) {
			nc, rec := connectAs(t, ns, a.role, pw[a.role])
			if a.sub {
				if _, err := nc.Subscribe(a.subject, func(m *nats.Msg) { leaked <- a.role + " received " + m.Subject }); err != nil {
					t.Fatal(err)
				}
			} else if err := nc.Publish(a.subject, []byte(`{"event":"new_msg","payload":{"body":"forged"},"topic":"rooms:ops","user_id":"mallory"}`)); err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			rec.violation(t, fmt.Sprintf(verb, a.subject))
			if a.sub {
				// The subscription is dead: a message published now is not delivered.
				if err := proto.Publish(ctx, onc, "rooms:lobby", "new_msg", map[string]string{"body": "probe"}); err != nil {
					t.Fatal(err)
				}
				anon.expectSkippingJoins(`[null,null,"rooms:lobby","new_msg",{"body":"probe"}]`)
			}
		})
	}

	// A stolen gateway credential cannot aim room traffic at another
	// subject. Asked directly, the server refuses the consumer (above);
	// roomsvc's feed delivers to proto.FeedSubject(key) and nowhere else,
	// whatever the request holds.
	t.Run("gateway_feed_only_to_its_subject", func(t *testing.T) {
		nc, rec := connectAs(t, ns, "gateway", pw["gateway"])
		evil, _ := json.Marshal(map[string]any{"stream_name": proto.RoomStream, "config": map[string]any{
			"name": "evil", "deliver_subject": "phx.user.alice.disconnect", "deliver_policy": "new", "ack_policy": "none"}})
		if m, err := nc.Request("$JS.API.CONSUMER.CREATE."+proto.RoomStream+".evil", evil, 500*time.Millisecond); err == nil {
			t.Fatalf("a push consumer aimed at phx.user.alice.disconnect was answered: %s", m.Data)
		}
		rec.violation(t, `Publish to "$JS.API.CONSUMER.CREATE.PHX_ROOMS.evil"`)
		key := "stolen-gateway-credential-0123"
		req, _ := json.Marshal(map[string]any{"key": key, "heartbeat": time.Second, "subject": "phx.user.alice.disconnect",
			"deliver_subject": "phx.user.alice.disconnect"})
		m, err := nc.Request(proto.SubjectFeedCreate, req, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var rep proto.FeedReply
		if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Error != "" {
			t.Fatalf("feed create: %s %v", m.Data, err)
		}
		if rep.Subject != proto.FeedSubject(key) || !strings.HasPrefix(rep.Subject, proto.FeedSubjectPrefix) {
			t.Fatalf("feed delivers to %q, want %q", rep.Subject, proto.FeedSubject(key))
		}
		if m, err := nc.Request(proto.SubjectFeedDelete, []byte(`{"key":"`+key+`"}`), 5*time.Second); err != nil || strings.Contains(string(m.Data), "error") {
			t.Fatalf("feed delete: %v %v", m, err)
		}
	})
	// Nor delete the running gateway's consumer: the name it can read off
	// the feed's deliveries is not the key that deletes it.
	t.Run("gateway_cannot_delete_another_feed", func(t *testing.T) {
		nc, _ := connectAs(t, ns, "gateway", pw["gateway"])
		names := make(chan string, 16)
		sub, err := nc.Subscribe(proto.FeedSubjectPrefix+"*", func(m *nats.Msg) {
			if meta, err := m.Metadata(); err == nil {
				names <- meta.Consumer
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := proto.Publish(ctx, onc, "rooms:lobby", "new_msg", map[string]string{"body": "spied"}); err != nil {
			t.Fatal(err)
		}
		anon.expectSkippingJoins(`[null,null,"rooms:lobby","new_msg",{"body":"spied"}]`)
		var name string
		select {
		case name = <-names:
		case <-time.After(5 * time.Second):
			t.Fatal("the gateway role could not read the feed (it needs phx.feed.*)")
		}
		if _, err := nc.Request(proto.SubjectFeedDelete, []byte(`{"key":"`+name+`"}`), 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := proto.Publish(ctx, onc, "rooms:lobby", "new_msg", map[string]string{"body": "feed still there"}); err != nil {
			t.Fatal(err)
		}
		anon.expectSkippingJoins(`[null,null,"rooms:lobby","new_msg",{"body":"feed still there"}]`)
	})

	// Nothing denied got through: the next broadcast the lobby sees is this
	// one (a forged one would have arrived first), and no refused
	// subscription received anything.
	if err := proto.Publish(ctx, onc, "rooms:lobby", "new_msg", map[string]string{"body": "sentinel"}); err != nil {
		t.Fatal(err)
	}
	anon.expectSkippingJoins(`[null,null,"rooms:lobby","new_msg",{"body":"sentinel"}]`)
	for { // alice's socket is still open: no consumer delivered to her disconnect subject
		if f := alice.read(); strings.Contains(f, `"sentinel"`) {
			break
		}
	}
	select {
	case l := <-leaked:
		t.Fatalf("a refused subscription got a message: %s", l)
	case <-time.After(200 * time.Millisecond):
	}
	if got := members(t, onc, "rooms:ops"); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("rooms:ops members = %v after the refused attempts, want [alice]", got)
	}

	// The services still work, and were never refused anything.
	anon.send(`["1","7","rooms:lobby","new_msg",{"body":"still fine"}]`)
	anon.expectSkippingJoins(`[null,null,"rooms:lobby","new_msg",{"body":"still fine"}]`)
	aerr.none(t, "authsvc")
	rerr.none(t, "roomsvc")
	gerr.none(t, "gateway")
	oerr.none(t, "operator")
}

// devToken signs a token through the gateway's development login.
func devToken(t *testing.T, base, user string) string {
	t.Helper()
	res, err := http.Get(base + "/token?user_id=" + url.QueryEscape(user))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body struct{ Token, Error string }
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil || res.StatusCode != 200 || body.Token == "" {
		t.Fatalf("dev login for %s: HTTP %d %v %s", user, res.StatusCode, err, body.Error)
	}
	return body.Token
}

// members lists a room's members through roomsvc's NATS API.
func members(t *testing.T, nc *nats.Conn, topic string) []string {
	t.Helper()
	var rep proto.MembershipReply
	requestJSON(t, nc, proto.SubjectMembersList, proto.MembershipRequest{Topic: topic}, &rep)
	if rep.Error != "" {
		t.Fatalf("members of %s: %s", topic, rep.Error)
	}
	return rep.Members
}

func requestJSON(t *testing.T, nc *nats.Conn, subject string, req, rep any) {
	t.Helper()
	data, _ := json.Marshal(req)
	m, err := nc.Request(subject, data, 5*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	if err := json.Unmarshal(m.Data, rep); err != nil {
		t.Fatalf("reply on %s: %v: %s", subject, err, m.Data)
	}
}

func publishJSON(t *testing.T, nc *nats.Conn, subject string, v any) {
	t.Helper()
	data, _ := json.Marshal(v)
	if err := nc.Publish(subject, data); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// The embedded NATS of `make run` admits only the key it generated into
// the data folder: a client without it can neither grant a room nor get a
// token (measured before: both worked for anyone on the machine).
func TestEmbeddedNATSNeedsTheGeneratedKey(t *testing.T) {
	dataDir := t.TempDir()
	s := startSystem(t, func(c *Config) { c.DataDir = dataDir })

	if nc, err := nats.Connect(s.NATSURL()); err == nil {
		nc.Close()
		t.Fatal("connected to the embedded NATS without credentials")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("connect without credentials: %v, want an authorization violation", err)
	}

	key := filepath.Join(dataDir, NATSKeyFile)
	if s.NATSKeyFile() != key {
		t.Fatalf("NATSKeyFile = %s, want %s", s.NATSKeyFile(), key)
	}
	fi, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", key, fi.Mode().Perm())
	}
	seed, _ := os.ReadFile(key)

	// With the key (as chatctl, the nats CLI's --nkey and the README's Go
	// example use it), the operator's requests work.
	auth, err := nats.NkeyOptionFromSeed(key)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.NATSURL(), auth)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	data, _ := json.Marshal(proto.SignRequest{UserID: "mallory"})
	m, err := nc.Request(proto.SubjectAuthSign, data, 5*time.Second)
	if err != nil || !strings.Contains(string(m.Data), `"token"`) {
		t.Fatalf("sign with the key: %v %v", m, err)
	}
	nc.Close()

	// The key survives a restart on the same data folder.
	ctx := t.Context()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	startSystem(t, func(c *Config) { c.DataDir = dataDir })
	if again, _ := os.ReadFile(key); !bytes.Equal(again, seed) {
		t.Fatal("the generated NATS key changed across a restart")
	}
}

// An embedded NATS listening beyond loopback is worth a warning.
func TestEmbeddedNATSBeyondLoopbackWarns(t *testing.T) {
	for _, tt := range []struct {
		host string
		warn bool
	}{{"127.0.0.1", false}, {"0.0.0.0", true}} {
		logFile := filepath.Join(t.TempDir(), "log")
		f, err := os.Create(logFile) // an *os.File takes writes from any goroutine
		if err != nil {
			t.Fatal(err)
		}
		startSystem(t, func(c *Config) {
			c.NATSHost = tt.host
			c.Logger = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelWarn}))
		})
		logs, _ := os.ReadFile(logFile)
		if got := strings.Contains(string(logs), "beyond loopback"); got != tt.warn {
			t.Errorf("NATS on %s: warning %v, want %v; logs:\n%s", tt.host, got, tt.warn, logs)
		}
	}
}

// The development login, on in the one-process default, is refused on a
// listen address beyond loopback unless forced; off, the chat starts there
// without /token.
func TestDevLoginOnlyOnLoopback(t *testing.T) {
	cfg := Defaults()
	cfg.HTTPAddr, cfg.OpsAddr, cfg.NATSPort, cfg.DataDir = "0.0.0.0:0", "127.0.0.1:0", -1, t.TempDir()
	if s, err := Start(t.Context(), cfg); err == nil {
		_ = s.Shutdown(t.Context())
		t.Fatal("started with the development login on 0.0.0.0")
	} else if !strings.Contains(err.Error(), "--gateway-dev-login-public") {
		t.Fatalf("err = %v, want one that says how to force it", err)
	}
	// On every interface the gateway needs its host names (gateway.hosts);
	// these tests reach it by any.
	forced := startSystem(t, func(c *Config) { c.HTTPAddr, c.DevLoginPublic, c.Gateway.Hosts = "0.0.0.0:0", true, []string{"*"} })
	if token(t, forced, "alice") == "" {
		t.Fatal("forced development login gave no token")
	}
	off := startSystem(t, func(c *Config) { c.HTTPAddr, c.Gateway.DevLogin, c.Gateway.Hosts = "0.0.0.0:0", false, []string{"*"} })
	res, err := http.Get(off.URL() + "/token?user_id=alice")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode == http.StatusOK {
		t.Fatal("/token answered 200 with the development login off")
	}
}

// /metrics is not on the public port: the ops listener, on loopback by
// default, serves it (with /healthz and /readyz, which stay public too).
func TestMetricsOnlyOnOpsListener(t *testing.T) {
	if d := Defaults(); !svckit.Loopback(d.OpsAddr) || d.OpsAddr == d.HTTPAddr {
		t.Fatalf("default ops address %s: want loopback, apart from %s", d.OpsAddr, d.HTTPAddr)
	}
	s := startSystem(t, nil)
	for _, tt := range []struct {
		url  string
		code int
	}{
		{s.URL() + "/metrics", http.StatusNotFound},
		{s.URL() + "/healthz", http.StatusOK},
		{s.OpsURL() + "/metrics", http.StatusOK},
		{s.OpsURL() + "/readyz", http.StatusOK},
		{s.OpsURL() + "/token?user_id=alice", http.StatusNotFound},
	} {
		res, err := http.Get(tt.url)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tt.code {
			t.Errorf("GET %s: %d, want %d", tt.url, res.StatusCode, tt.code)
		}
	}
}

// The deployment configs expose nothing beyond what faces the internet on
// purpose (and NATS monitoring is on loopback: TestPermissionConfigsParse):
// the compose ports (the development
// login's gateways included) on the host's loopback, the gateways' /metrics
// on an ops listener apart from the public port, and no development login
// in Kubernetes.
func TestDeploymentsExposure(t *testing.T) {
	read := func(parts ...string) []byte {
		b, err := os.ReadFile(filepath.Join(append([]string{repoRoot, "deployments"}, parts...)...))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var compose struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
			Ports       []string          `yaml:"ports"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(read("compose", "compose.yaml"), &compose); err != nil {
		t.Fatal(err)
	}
	gateways := 0
	for name, svc := range compose.Services {
		for _, p := range svc.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("compose %s publishes %q on every interface of the host", name, p)
			}
		}
		if !strings.HasPrefix(name, "gateway") {
			continue
		}
		gateways++
		env := svc.Environment
		if env["CHAT_GATEWAY_DEV_LOGIN"] == "true" && len(svc.Ports) == 0 {
			t.Errorf("compose %s: development login without a loopback-published port", name)
		}
		if ops := env["CHAT_OPS_ADDR"]; ops == "" || !slices.ContainsFunc(svc.Ports, func(p string) bool { return strings.HasSuffix(p, ":"+ops[strings.LastIndex(ops, ":")+1:]) }) {
			t.Errorf("compose %s: ops listener %q not published (on loopback)", name, ops)
		}
	}
	if gateways == 0 {
		t.Fatal("compose.yaml has no gateway")
	}

	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	if err := yaml.Unmarshal(read("kubernetes", "configmap.yaml"), &cm); err != nil {
		t.Fatal(err)
	}
	var gw struct {
		HTTP    struct{ Addr string }
		Ops     struct{ Addr string }
		Gateway struct {
			DevLogin bool `yaml:"dev_login"`
		}
	}
	if err := yaml.Unmarshal([]byte(cm.Data["gateway.yaml"]), &gw); err != nil {
		t.Fatal(err)
	}
	if gw.Gateway.DevLogin || gw.Ops.Addr == "" || gw.Ops.Addr == gw.HTTP.Addr {
		t.Errorf("kubernetes gateway.yaml: dev_login %v, ops.addr %q beside http.addr %q; want no dev login and /metrics apart",
			gw.Gateway.DevLogin, gw.Ops.Addr, gw.HTTP.Addr)
	}
	if svc := string(read("kubernetes", "gateway.yaml")); !strings.Contains(svc, "containerPort: 4010") {
		t.Error("kubernetes gateway.yaml: no ops container port")
	}

	script := string(read("local", "cluster.sh"))
	if strings.Count(script, `--ops-addr "${GATEWAY_OPS_ADDRS[`) != 2 {
		t.Error("local/cluster.sh: the gateways do not get an ops listener of their own")
	}
}

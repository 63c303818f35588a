package auth

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/proto"
	"github.com/phxnats/phxnats/proto/natstest"
)

const testSecret = "a-secret-key-base-that-is-long-enough-for-the-test-0123456789abc"

// startWithBans runs the service with a ban bucket on a JetStream server.
// The clock of the tokens and of the bans is *clock, so that tests move it.
func startWithBans(t *testing.T, clock *atomic.Int64) (*nats.Conn, PhoenixTokens) {
	t.Helper()
	nc := natstest.Connect(t, natstest.Start(t, natstest.Options{}))
	now := func() time.Time { return time.UnixMilli(clock.Load()) }
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bans, err := OpenBans(ctx, js, BansOptions{ClockSkew: 5 * time.Second, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	tokens := newTokens(t, now, testSecret)
	svc, err := Start(Options{Conn: nc, Tokens: tokens, Bans: bans})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Drain(context.Background()) })
	return nc, tokens
}

// A ban closes the user's sockets and keeps them closed: every token
// signed before it is refused at connect, for good; a ban --for lasts
// that long; an unban lets new tokens in and never the old ones.
func TestBanRevokesTokens(t *testing.T) {
	var clock atomic.Int64
	start := time.Now()
	clock.Store(start.UnixMilli())
	nc, tokens := startWithBans(t, &clock)
	advance := func(d time.Duration) { clock.Add(d.Milliseconds()) }
	sign := func(user string) string {
		t.Helper()
		tok, err := tokens.SignUser(user)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	verify := func(token string) proto.VerifyReply {
		t.Helper()
		return call[proto.VerifyReply](t, nc, proto.SubjectAuthVerify, proto.VerifyRequest{Token: token})
	}
	disconnects, err := nc.SubscribeSync(proto.DisconnectSubjectAll)
	if err != nil {
		t.Fatal(err)
	}

	before := sign("alice")
	bob := sign("bob")
	if rep := verify(before); rep.UserID != "alice" {
		t.Fatalf("before the ban: %+v", rep)
	}
	ban := call[proto.BanReply](t, nc, proto.SubjectAuthBan, proto.BanRequest{UserID: "alice"})
	if ban.Error != "" || !ban.Forever {
		t.Fatalf("ban: %+v", ban)
	}
	m, err := disconnects.NextMsg(5 * time.Second)
	if err != nil || m.Subject != "phx.user.alice.disconnect" {
		t.Fatalf("disconnect after ban: %v %v", m, err)
	}
	advance(time.Minute)
	during := sign("alice")
	steps := []struct {
		name  string
		token string
		want  proto.VerifyReply
	}{
		{"token from before the ban", before, proto.VerifyReply{Error: proto.TokenRevoked}},
		{"token signed during the ban", during, proto.VerifyReply{Error: proto.TokenRevoked}},
		{"another user", bob, proto.VerifyReply{UserID: "bob"}},
	}
	for _, s := range steps {
		if got := verify(s.token); got != s.want {
			t.Errorf("%s: %+v, want %+v", s.name, got, s.want)
		}
	}

	unban := call[proto.BanReply](t, nc, proto.SubjectAuthUnban, proto.BanRequest{UserID: "alice"})
	if unban.Error != "" || unban.Forever || unban.NotBefore == "" {
		t.Fatalf("unban: %+v", unban)
	}
	withinSkew := sign("alice")
	advance(6 * time.Second)
	after := sign("alice")
	for _, s := range []struct {
		name  string
		token string
		want  proto.VerifyReply
	}{
		{"token from before the ban, after unban", before, proto.VerifyReply{Error: proto.TokenRevoked}},
		{"token signed within the clock skew of the unban", withinSkew, proto.VerifyReply{Error: proto.TokenRevoked}},
		{"token signed after unban", after, proto.VerifyReply{UserID: "alice"}},
	} {
		if got := verify(s.token); got != s.want {
			t.Errorf("%s: %+v, want %+v", s.name, got, s.want)
		}
	}

	// A ban for an hour refuses tokens signed within the hour, then lets
	// new ones in.
	timed := call[proto.BanReply](t, nc, proto.SubjectAuthBan, proto.BanRequest{UserID: "bob", Seconds: 3600})
	if timed.Error != "" || timed.Forever || timed.NotBefore == "" {
		t.Fatalf("ban for an hour: %+v", timed)
	}
	advance(59 * time.Minute)
	if got := verify(sign("bob")); got.Error != proto.TokenRevoked {
		t.Errorf("token signed during a timed ban: %+v", got)
	}
	advance(2 * time.Minute)
	if got := verify(sign("bob")); got.UserID != "bob" {
		t.Errorf("token signed after a timed ban: %+v", got)
	}

	for _, req := range []proto.BanRequest{{}, {UserID: strings.Repeat("x", 256)}, {UserID: "a", Seconds: -1}} {
		if rep := call[proto.BanReply](t, nc, proto.SubjectAuthBan, req); rep.Error == "" {
			t.Errorf("ban %+v succeeded", req)
		}
	}
}

// User ids are checked by proto.ValidUserID when signed and when verified,
// so every accepted id can be kicked and disconnected.
func TestUserIDRuleAtSignAndVerify(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t, natstest.Options{NoJetStream: true}))
	tokens := newTokens(t, nil, testSecret)
	svc, err := Start(Options{Conn: nc, Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Drain(context.Background()) })
	long := strings.Repeat("x", proto.MaxUserIDLength)
	for _, tt := range []struct {
		id string
		ok bool
	}{
		{"alice", true},
		{long, true},
		{long + "x", false},
		{"ali\nce", false},
		{"", false},
	} {
		signed := call[proto.SignReply](t, nc, proto.SubjectAuthSign, proto.SignRequest{UserID: tt.id})
		if (signed.Error == "") != tt.ok {
			t.Errorf("sign %.20q: %+v, want ok=%v", tt.id, signed, tt.ok)
		}
		// A Phoenix app (here: the signer itself) may sign any id; verify
		// refuses the ones outside the rule.
		token, err := tokens.Signer.Sign(tt.id)
		if err != nil {
			t.Fatal(err)
		}
		want := proto.VerifyReply{UserID: tt.id}
		if !tt.ok {
			want = proto.VerifyReply{Error: proto.TokenInvalid}
		}
		if got := call[proto.VerifyReply](t, nc, proto.SubjectAuthVerify, proto.VerifyRequest{Token: token}); got != want {
			t.Errorf("verify %.20q: %+v, want %+v", tt.id, got, want)
		}
	}
}

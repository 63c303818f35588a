package rooms

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/proto"
	"github.com/phxnats/phxnats/proto/natstest"
)

func startService(t *testing.T, storeDir string) (*nats.Conn, *Store) {
	t.Helper()
	srv := natstest.Start(t, natstest.Options{StoreDir: storeDir})
	nc := natstest.Connect(t, srv)
	st := openStore(t, nc)
	svc, err := Start(Options{Conn: nc, Store: st, Rules: Rules{MaxBodyBytes: 10}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Drain(context.Background()) })
	return nc, st
}

// openStore opens roomsvc's Store on nc, closed by t.Cleanup.
func openStore(t *testing.T, nc *nats.Conn) *Store {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := OpenStore(ctx, js, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

func request[T any](t *testing.T, nc *nats.Conn, subject string, req any) T {
	t.Helper()
	data, _ := json.Marshal(req)
	m, err := nc.Request(subject, data, 5*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	var out T
	if err := json.Unmarshal(m.Data, &out); err != nil {
		t.Fatalf("reply %s: %v", m.Data, err)
	}
	return out
}

func TestJoin(t *testing.T) {
	nc, _ := startService(t, "")
	join := proto.JoinSubject(proto.ServiceRooms)
	grant := request[proto.MembershipReply](t, nc, proto.SubjectMembersGrant, proto.MembershipRequest{Topic: "rooms:ops", UserID: "alice"})
	if grant.Error != "" {
		t.Fatal(grant.Error)
	}
	tests := []struct {
		topic, user, status, response string
	}{
		{"rooms:lobby", "", "ok", ""},
		{"rooms:lobby", "bob", "ok", ""},
		{"rooms:ops", "alice", "ok", ""},
		{"rooms:ops", "bob", "error", `{"reason":"unauthorized"}`},
		{"rooms:ops", "", "error", `{"reason":"unauthorized"}`},
		{"rooms:secret", "alice", "error", `{"reason":"unauthorized"}`},
		{"rooms:", "alice", "error", `{"reason":"unauthorized"}`},
	}
	for _, tt := range tests {
		got := request[proto.Reply](t, nc, join, proto.JoinRequest{Topic: tt.topic, UserID: tt.user})
		if got.Status != tt.status || string(got.Response) != tt.response {
			t.Errorf("join %s as %q = %s %s, want %s %s", tt.topic, tt.user, got.Status, got.Response, tt.status, tt.response)
		}
	}
	// Revoking takes effect at the next join.
	if rep := request[proto.MembershipReply](t, nc, proto.SubjectMembersRevoke, proto.MembershipRequest{Topic: "rooms:ops", UserID: "alice"}); rep.Error != "" {
		t.Fatal(rep.Error)
	}
	if got := request[proto.Reply](t, nc, join, proto.JoinRequest{Topic: "rooms:ops", UserID: "alice"}); got.Status != "error" {
		t.Errorf("join after revoke = %s", got.Status)
	}
}

func TestPushNewMsgBroadcasts(t *testing.T) {
	nc, _ := startService(t, "")
	sub, err := nc.SubscribeSync("phx.room.rooms:lobby")
	if err != nil {
		t.Fatal(err)
	}
	push := proto.PushSubject(proto.ServiceRooms)
	// The payload is the guide's {"body"} whoever sends; the sender goes
	// beside it, for the channels that ask (proto.JoinSender).
	for _, tc := range []struct{ user, payload, want string }{
		{"", `{"body":"hi","extra":1}`, `{"event":"new_msg","payload":{"body":"hi"}}`},
		{"alice", `{"body":"hi"}`, `{"event":"new_msg","payload":{"body":"hi"},"from":"alice"}`},
		{"alice", `{"body":""}`, `{"event":"new_msg","payload":{"body":""},"from":"alice"}`},
		{"", `{"body":" \n"}`, `{"event":"new_msg","payload":{"body":" \n"}}`},
		{"", `{"body":"<é>"}`, `{"event":"new_msg","payload":{"body":"<é>"}}`},
	} {
		rep := request[proto.Reply](t, nc, push, proto.PushRequest{Topic: "rooms:lobby", Event: "new_msg", UserID: tc.user, Payload: json.RawMessage(tc.payload)})
		if rep.Status != proto.StatusNoReply {
			t.Fatalf("new_msg %s reply = %+v, want noreply", tc.payload, rep)
		}
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Data) != tc.want {
			t.Fatalf("broadcast of %s = %s, want %s", tc.payload, m.Data, tc.want)
		}
	}

	for _, tc := range []struct{ event, payload, reason string }{
		{"new_msg", `{"body":"12345678901"}`, "body is 11 bytes, the limit is 10 bytes"},
		{"new_msg", `{"body":"ééééé!"}`, "body is 11 bytes, the limit is 10 bytes"},
		{"new_msg", `{"body":null}`, "body must be a string"},
		{"shout", `{}`, `unknown event "shout"`},
		// An echo is capped as a message body is.
		{"ping", `{"n":"0123456789"}`, "ping payload is 18 bytes, the limit is 10 bytes"},
	} {
		rep := request[proto.Reply](t, nc, push, proto.PushRequest{Topic: "rooms:lobby", Event: tc.event, Payload: json.RawMessage(tc.payload)})
		want := string(proto.Reason(tc.reason))
		if rep.Status != "error" || string(rep.Response) != want {
			t.Errorf("%s %s = %s %s, want error %s", tc.event, tc.payload, rep.Status, rep.Response, want)
		}
	}
	if m, err := sub.NextMsg(100 * time.Millisecond); err == nil {
		t.Fatalf("an invalid push was broadcast: %s", m.Data)
	}
	ping := request[proto.Reply](t, nc, push, proto.PushRequest{Topic: "rooms:lobby", Event: "ping", Payload: json.RawMessage(`{"n":1}`)})
	if ping.Status != "ok" || string(ping.Response) != `{"n":1}` {
		t.Errorf("ping = %+v", ping)
	}
}

func TestMembershipSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	t.Run("grant", func(t *testing.T) {
		nc, _ := startService(t, dir)
		for _, u := range []string{"bob", "alice", "o.dd*user"} {
			if rep := request[proto.MembershipReply](t, nc, proto.SubjectMembersGrant, proto.MembershipRequest{Topic: "rooms:ops.x", UserID: u}); rep.Error != "" {
				t.Fatal(rep.Error)
			}
		}
	})
	t.Run("after restart", func(t *testing.T) {
		nc, _ := startService(t, dir)
		rep := request[proto.MembershipReply](t, nc, proto.SubjectMembersList, proto.MembershipRequest{Topic: "rooms:ops.x"})
		got, _ := json.Marshal(rep.Members)
		if string(got) != `["alice","bob","o.dd*user"]` {
			t.Fatalf("members = %s (%s)", got, rep.Error)
		}
		// rooms:ops must not see rooms:ops.x's members: the key escape keeps them apart.
		rep = request[proto.MembershipReply](t, nc, proto.SubjectMembersList, proto.MembershipRequest{Topic: "rooms:ops"})
		if len(rep.Members) != 0 || rep.Error != "" {
			t.Fatalf("rooms:ops members = %v %q", rep.Members, rep.Error)
		}
	})
	nc, _ := startService(t, "")
	for _, req := range []proto.MembershipRequest{{Topic: "lobby", UserID: "a"}, {Topic: "rooms:x"}, {Topic: ""}} {
		if rep := request[proto.MembershipReply](t, nc, proto.SubjectMembersGrant, req); rep.Error == "" {
			t.Errorf("grant %+v succeeded", req)
		}
	}
}

func TestAnnounceJoinsIsOptIn(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	nc := natstest.Connect(t, srv)
	svc, err := Start(Options{Conn: nc, Store: openStore(t, nc), Rules: Rules{AnnounceJoins: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Drain(context.Background()) })
	sub, err := nc.SubscribeSync("phx.room.rooms:lobby")
	if err != nil {
		t.Fatal(err)
	}
	request[proto.Reply](t, nc, proto.JoinSubject(proto.ServiceRooms), proto.JoinRequest{Topic: "rooms:lobby", UserID: "alice"})
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"event":"user_joined","payload":{"user_id":"alice"},"from":"alice","exclude_from":true,"opt_in":"joins"}`
	if string(m.Data) != want {
		t.Fatalf("announcement = %s, want %s", m.Data, want)
	}
}

// A body limit whose broadcast cannot fit in a NATS message is refused at
// start, not at the first long message.
func TestStartRefusesABodyLimitOverMaxPayload(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	nc := natstest.Connect(t, srv)
	st := openStore(t, nc)
	_, err := Start(Options{Conn: nc, Store: st, Rules: Rules{MaxBodyBytes: 512 << 10}})
	if err == nil || !strings.Contains(err.Error(), "rooms.max_body_bytes 524288") || !strings.Contains(err.Error(), "use at most") {
		t.Fatalf("Start with a 512 KiB body limit = %v, want a refusal naming the limit", err)
	}
	svc, err := Start(Options{Conn: nc, Store: st})
	if err != nil {
		t.Fatalf("Start with the default body limit: %v", err)
	}
	svc.Drain(context.Background())
}

package gateway

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
	"github.com/phxnats/phxnats/proto/natstest"
)

func TestLPTextOfBinary(t *testing.T) {
	reply, _, _ := wire.V2.AppendReply(nil, "1", "2", "rooms:a", "ok", []byte{1, 2}, true)
	push, _, _ := wire.V2.AppendPush(nil, "1", "rooms:a", "blob", []byte{1, 2}, true)
	bcast, _, _ := wire.V2.AppendBroadcast(nil, "rooms:a", "blob", []byte{1, 2}, true)
	for _, tc := range []struct {
		name  string
		frame []byte
		want  string
	}{
		{"reply", reply, `["1","2","rooms:a","phx_reply",{"response":{"reason":"binary payloads are not supported over long-poll"},"status":"error"}]`},
		{"push", push, `["1",null,"rooms:a","blob",{"error":"binary payloads are not supported over long-poll"}]`},
		{"broadcast", bcast, `[null,null,"rooms:a","blob",{"error":"binary payloads are not supported over long-poll"}]`},
	} {
		got, ok := lpTextOfBinary(wire.V2, tc.frame)
		if !ok || string(got) != tc.want {
			t.Errorf("%s: %s %v\nwant %s", tc.name, got, ok, tc.want)
		}
	}
	for _, bad := range [][]byte{nil, {9}, {1, 5, 0, 0, 0, 'x'}, {2, 1}} {
		if got, ok := lpTextOfBinary(wire.V2, bad); ok {
			t.Errorf("%x: %s, want refusal", bad, got)
		}
	}
}

// lpTestGateway runs a gateway on a real nats-server with stand-ins for
// authsvc (token "u:NAME" is user NAME) and for a rooms service that admits
// every join and replies ok to every push (and the room stream roomsvc
// would create).
func lpTestGateway(t *testing.T) (*Gateway, *http.Server, string) {
	t.Helper()
	ns := natstest.Start(t, natstest.Options{})
	nc := natstest.Connect(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proto.EnsureRoomStream(context.Background(), js, proto.RoomStreamOptions{}); err != nil {
		t.Fatal(err)
	}
	respond := func(subject string, f func([]byte) any) {
		if _, err := nc.Subscribe(subject, func(m *nats.Msg) {
			data, _ := json.Marshal(f(m.Data))
			_ = m.Respond(data)
		}); err != nil {
			t.Fatal(err)
		}
	}
	respond(proto.SubjectAuthVerify, func(b []byte) any {
		var req proto.VerifyRequest
		_ = json.Unmarshal(b, &req)
		if user, ok := strings.CutPrefix(req.Token, "u:"); ok {
			return proto.VerifyReply{UserID: user}
		}
		return proto.VerifyReply{Error: "invalid"}
	})
	respond(proto.JoinSubject(proto.ServiceRooms), func([]byte) any { return proto.OK(nil) })
	respond(proto.PushSubject(proto.ServiceRooms), func([]byte) any { return proto.OK(nil) })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	g, err := New(Options{Conn: natstest.Connect(t, ns), Name: "gw", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: g.Handler()}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return g, srv, "http://" + ln.Addr().String() + "/socket/longpoll?vsn=2.0.0"
}

type lpTestReply struct {
	Status   int      `json:"status"`
	Token    string   `json:"token"`
	Messages []string `json:"messages"`
}

func lpTestDo(t *testing.T, method, u, body string) lpTestReply {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var r lpTestReply
	if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

// lpTestJoin opens a session for user and joins topic; it returns the poll URL.
func lpTestJoin(t *testing.T, endpoint, user, topic string) string {
	t.Helper()
	r := lpTestDo(t, "GET", endpoint+"&token=u:"+user, "")
	if r.Status != 410 {
		t.Fatalf("open: %+v", r)
	}
	u := endpoint + "&token=u:" + user + "&token=" + r.Token
	if r := lpTestDo(t, "POST", u, `["1","1","`+topic+`","phx_join",{}]`); r.Status != 200 {
		t.Fatalf("join: %+v", r)
	}
	if r := lpTestDo(t, "GET", u, ""); r.Status != 200 || len(r.Messages) != 1 {
		t.Fatalf("join reply: %+v", r)
	}
	return u
}

// http.Server.Shutdown waits for active requests: the gateway hooks it so
// that a pending poll does not hold it for a window.
func TestLongPollServerShutdownReleasesPolls(t *testing.T) {
	g, srv, ep := lpTestGateway(t)
	g.SetLongPollWindow(30 * time.Second)
	u := lpTestJoin(t, ep, "alice", "rooms:a")
	got := make(chan lpTestReply, 1)
	go func() { got <- lpTestDo(t, "GET", u, "") }()
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("server shutdown took %v", d)
	}
	if r := <-got; r.Status != 410 {
		t.Errorf("pending poll: %+v, want 410", r)
	}
	if n := g.LongPollSessions(); n != 0 {
		t.Errorf("%d sessions left", n)
	}
}

func TestLongPollDisconnectAndKick(t *testing.T) {
	g, _, ep := lpTestGateway(t)
	g.SetLongPollWindow(300 * time.Millisecond)
	alice1 := lpTestJoin(t, ep, "alice", "rooms:a")
	alice2 := lpTestJoin(t, ep, "alice", "rooms:b")
	bob := lpTestJoin(t, ep, "bob", "rooms:a")

	if n := g.kickLongPoll("alice", "rooms:a"); n != 1 {
		t.Fatalf("kicked %d sessions, want 1", n)
	}
	if r := lpTestDo(t, "GET", alice1, ""); r.Status != 200 || len(r.Messages) != 1 || r.Messages[0] != `["1","1","rooms:a","phx_close",{}]` {
		t.Fatalf("kicked session: %+v, want phx_close", r)
	}

	if n := g.disconnectLongPoll("alice"); n != 2 {
		t.Fatalf("disconnected %d sessions, want 2", n)
	}
	for _, u := range []string{alice1, alice2} {
		if r := lpTestDo(t, "GET", u, ""); r.Status != 410 {
			t.Errorf("disconnected session: %+v, want 410", r)
		}
	}
	if r := lpTestDo(t, "GET", bob, ""); r.Status != 204 {
		t.Errorf("bob: %+v, want 204", r)
	}
	if n := g.LongPollSessions(); n != 1 {
		t.Errorf("%d sessions, want 1", n)
	}
	g.lp.mu.Lock()
	users := len(g.lp.users)
	g.lp.mu.Unlock()
	if users != 1 {
		t.Errorf("user index holds %d users, want 1", users)
	}
}

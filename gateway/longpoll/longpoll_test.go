package longpoll

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/phxnats/phxnats/gateway/internal/gwtest"
)

// lpTestGateway runs a long-poll Server on the stand-in services of
// gwtest and returns it, its parts, its http.Server and its URL (vsn
// 2.0.0).
func lpTestGateway(t *testing.T) (*Server, *gwtest.Env, *http.Server, string) {
	return lpTestGatewayWith(t, func(*Config) {}, &http.Server{})
}

// lpTestGatewayWith is lpTestGateway with change applied to the Config,
// served by srv.
func lpTestGatewayWith(t *testing.T, change func(*Config), srv *http.Server) (*Server, *gwtest.Env, *http.Server, string) {
	t.Helper()
	e := gwtest.New(t)
	cfg := Config{Deps: e.Deps(), SendQueueLen: 1024, MaxFrameSize: 1 << 20}
	change(&cfg)
	s := New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Handler = s
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s, e, srv, "http://" + ln.Addr().String() + "/socket/longpoll?vsn=2.0.0"
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
	t.Parallel()
	g, _, srv, ep := lpTestGateway(t)
	g.SetWindow(30 * time.Second)
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
	if n := g.Sessions(); n != 0 {
		t.Errorf("%d sessions left", n)
	}
}

func TestLongPollDisconnectAndKick(t *testing.T) {
	t.Parallel()
	g, e, _, ep := lpTestGateway(t)
	g.SetWindow(300 * time.Millisecond)
	alice1 := lpTestJoin(t, ep, "alice", "rooms:a")
	alice2 := lpTestJoin(t, ep, "alice", "rooms:b")
	bob := lpTestJoin(t, ep, "bob", "rooms:a")

	if n := e.Registry.Kick("alice", "rooms:a"); n != 1 {
		t.Fatalf("kicked %d sessions, want 1", n)
	}
	if r := lpTestDo(t, "GET", alice1, ""); r.Status != 200 || len(r.Messages) != 1 || r.Messages[0] != `["1","1","rooms:a","phx_close",{}]` {
		t.Fatalf("kicked session: %+v, want phx_close", r)
	}

	if n := e.Registry.Disconnect("alice"); n != 2 {
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
	if n := g.Sessions(); n != 1 {
		t.Errorf("%d sessions, want 1", n)
	}
	if users := e.Registry.Users(); users != 1 {
		t.Errorf("user index holds %d users, want 1", users)
	}
}

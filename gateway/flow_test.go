package gateway

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/gateway/internal/gwtest"
	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/proto"
	"github.com/phxnats/phxnats/proto/natstest"
)

// lpDo sends a long-poll request and decodes its answer.
func lpDo(t *testing.T, method, u, body string) (status int, token string, msgs []string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	if method == "POST" {
		req.Header.Set("Content-Type", "application/x-ndjson")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var r struct {
		Status   int      `json:"status"`
		Token    string   `json:"token"`
		Messages []string `json:"messages"`
	}
	if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r.Status, r.Token, r.Messages
}

// A heartbeat is answered at once while the socket's push waits on a slow
// service, over both transports, as Phoenix answers heartbeats in the
// socket process: phoenix.js would otherwise time it out and reconnect.
func TestHeartbeatWhilePushWaits(t *testing.T) {
	t.Parallel()
	e := gwtest.New(t)
	gwtest.Respond(t, e.Services, proto.JoinSubject("slow"), func([]byte) any { return proto.OK(nil) })
	if _, err := e.Services.Subscribe(proto.PushSubject("slow"), func(m *nats.Msg) {
		go func() {
			time.Sleep(1500 * time.Millisecond)
			data, _ := json.Marshal(proto.OK(nil))
			_ = m.Respond(data)
		}()
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.Services.Flush(); err != nil {
		t.Fatal(err)
	}
	g, err := New(Options{Conn: e.Conn, Name: "gw", Logger: gwtest.Quiet(), Routes: []session.Route{{Pattern: "slow:*", Service: "slow"}}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	const join, push, beat = `["1","1","slow:a","phx_join",{}]`, `["1","2","slow:a","new_msg",{}]`, `[null,"3","phoenix","heartbeat",{}]`
	const beatReply = `[null,"3","phoenix","phx_reply",{"response":{},"status":"ok"}]`

	t.Run("websocket", func(t *testing.T) {
		ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http")+"/socket/websocket?vsn=2.0.0&token=u:alice", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := ws.WriteMessage(websocket.TextMessage, []byte(join)); err != nil {
			t.Fatal(err)
		}
		if _, b, err := ws.ReadMessage(); err != nil || !strings.Contains(string(b), `"ok"`) {
			t.Fatalf("join: %s %v", b, err)
		}
		start := time.Now()
		_ = ws.WriteMessage(websocket.TextMessage, []byte(push))
		_ = ws.WriteMessage(websocket.TextMessage, []byte(beat))
		_, b, err := ws.ReadMessage()
		if err != nil || string(b) != beatReply || time.Since(start) > 500*time.Millisecond {
			t.Fatalf("first frame %s (%v) after %v, want the heartbeat's reply at once", b, err, time.Since(start))
		}
		if _, b, err := ws.ReadMessage(); err != nil || !strings.Contains(string(b), `"1","2","slow:a","phx_reply"`) {
			t.Fatalf("then the push's reply: %s %v", b, err)
		}
	})

	t.Run("long-poll", func(t *testing.T) {
		ep := hs.URL + "/socket/longpoll?vsn=2.0.0&token=u:bob"
		status, token, _ := lpDo(t, "GET", ep, "")
		if status != 410 {
			t.Fatalf("open: %d", status)
		}
		u := ep + "&token=" + token
		if status, _, _ := lpDo(t, "POST", u, join); status != 200 {
			t.Fatalf("join: %d", status)
		}
		if status, _, msgs := lpDo(t, "GET", u, ""); status != 200 || len(msgs) != 1 {
			t.Fatalf("join reply: %d %q", status, msgs)
		}
		start := time.Now()
		if status, _, _ := lpDo(t, "POST", u, push+"\n"+beat); status != 200 {
			t.Fatalf("push and heartbeat: %d", status)
		}
		status, _, msgs := lpDo(t, "GET", u, "")
		if status != 200 || len(msgs) == 0 || msgs[0] != beatReply || time.Since(start) > 500*time.Millisecond {
			t.Fatalf("poll: %d %q after %v, want the heartbeat's reply at once", status, msgs, time.Since(start))
		}
	})
}

// A gateway without NATS for longer than NATSGrace closes its sockets
// with 1013 (phoenix.js reconnects, to a gateway that has NATS), ends its
// long-poll sessions and refuses new sockets with 503, until NATS is back.
func TestCutOffFromNATS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ns := natstest.Start(t, natstest.Options{StoreDir: dir})
	port := ns.Addr().(*net.TCPAddr).Port
	nc := natstest.Connect(t, ns, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	const grace = 400 * time.Millisecond
	g, err := New(Options{Conn: nc, Name: "gw", Logger: gwtest.Quiet(), AllowAnonymous: true, NATSGrace: grace})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.stopWatch)
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	wsURL := "ws" + strings.TrimPrefix(hs.URL, "http") + "/socket/websocket?vsn=2.0.0"
	lpURL := hs.URL + "/socket/longpoll?vsn=2.0.0"
	ws, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	status, token, _ := lpDo(t, "GET", lpURL, "")
	if status != 410 {
		t.Fatalf("long-poll open: %d", status)
	}

	ns.Shutdown()
	ns.WaitForShutdown()
	gone := time.Now()
	// Within the grace, heartbeats are answered still.
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`[null,"1","phoenix","heartbeat",{}]`)); err != nil {
		t.Fatal(err)
	}
	if _, b, err := ws.ReadMessage(); err != nil || !strings.Contains(string(b), `"ok"`) {
		t.Fatalf("heartbeat within the grace: %s %v", b, err)
	}
	_, _, err = ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseTryAgainLater {
		t.Fatalf("websocket: %v, want close 1013", err)
	}
	if d := time.Since(gone); d < grace-50*time.Millisecond {
		t.Fatalf("closed %v after NATS went, before the grace of %v", d, grace)
	}
	if status, _, _ := lpDo(t, "GET", lpURL+"&token="+token, ""); status != 410 {
		t.Fatalf("long-poll session without NATS: %d, want 410 (gone)", status)
	}
	if _, res, err := websocket.DefaultDialer.Dial(wsURL, nil); err == nil || res == nil || res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("new socket without NATS: %v %v, want HTTP 503", res, err)
	}
	if status, _, _ := lpDo(t, "GET", lpURL, ""); status != 500 {
		t.Fatalf("new long-poll session without NATS: %d, want 500 (retried)", status)
	}

	// NATS back on the same address: sockets are welcome again.
	natstest.Start(t, natstest.Options{StoreDir: dir, Port: port})
	deadline := time.Now().Add(10 * time.Second)
	for {
		ws2, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
		if err == nil {
			ws2.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket accepted after NATS came back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

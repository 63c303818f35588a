package system

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phxnats/phxnats/gateway"
	"github.com/phxnats/phxnats/proto"
)

// client is a raw V2 WebSocket client: it sends and reads frames as text.
type client struct {
	t  testing.TB
	ws *websocket.Conn
}

func dial(t testing.TB, endpoint string, query url.Values) *client {
	t.Helper()
	if query == nil {
		query = url.Values{}
	}
	if query.Get("vsn") == "" {
		query.Set("vsn", "2.0.0")
	}
	ws, res, err := websocket.DefaultDialer.Dial(strings.Replace(endpoint, "http://", "ws://", 1)+"/socket/websocket?"+query.Encode(), nil)
	if err != nil {
		status := 0
		if res != nil {
			status = res.StatusCode
		}
		t.Fatalf("dial: %v (HTTP %d)", err, status)
	}
	t.Cleanup(func() { ws.Close() })
	return &client{t: t, ws: ws}
}

func (c *client) send(frame string) {
	c.t.Helper()
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		c.t.Fatalf("send %s: %v", frame, err)
	}
}

func (c *client) read() string {
	c.t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := c.ws.ReadMessage()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return string(data)
}

// expect reads one frame and compares it with want.
func (c *client) expect(want string) {
	c.t.Helper()
	if got := c.read(); got != want {
		c.t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// expectSkippingJoins is expect, but first skips user_joined announcements,
// whose arrival relative to other joins is not ordered.
func (c *client) expectSkippingJoins(want string) {
	c.t.Helper()
	for {
		got := c.read()
		if strings.Contains(got, `"user_joined"`) && !strings.Contains(want, `"user_joined"`) {
			continue
		}
		if got != want {
			c.t.Fatalf("got  %s\nwant %s", got, want)
		}
		return
	}
}

// expectUserJoined reads until user's user_joined announcement, skipping
// announcements of others (a join published just before this socket joined
// may or may not reach it).
func (c *client) expectUserJoined(user string) {
	c.t.Helper()
	want := fmt.Sprintf(`[null,null,"rooms:lobby","user_joined",{"user_id":%q}]`, user)
	for {
		got := c.read()
		if got == want {
			return
		}
		if !strings.Contains(got, `"user_joined"`) {
			c.t.Fatalf("got  %s\nwant %s", got, want)
		}
	}
}

// quiet checks that no frame arrives for d.
func (c *client) quiet(d time.Duration) {
	c.t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(d))
	if _, data, err := c.ws.ReadMessage(); err == nil {
		c.t.Fatalf("unexpected frame %s", data)
	}
	// A read deadline breaks a gorilla connection: only use quiet last.
}

// closeCode reads until the server closes and returns its close code.
func (c *client) closeCode() int {
	c.t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := c.ws.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		if err != nil {
			c.t.Fatalf("connection ended without a close frame: %v", err)
		}
	}
}

func (c *client) join(topic, ref string) { c.t.Helper(); c.joinWith(topic, ref, `{}`) }

// joinWith joins topic with the given join parameters (a JSON object).
func (c *client) joinWith(topic, ref, params string) {
	c.t.Helper()
	c.send(fmt.Sprintf(`[%q,%q,%q,"phx_join",%s]`, ref, ref, topic, params))
	c.expect(fmt.Sprintf(`[%q,%q,%q,"phx_reply",{"response":{},"status":"ok"}]`, ref, ref, topic))
}

// allExtras asks for every delivery beyond the guide (proto.JoinSender,
// proto.JoinJoins, proto.JoinIgnore), as the chat page does.
const allExtras = `{"sender":true,"joins":true,"ignore":true}`

// startGateway runs a second gateway on the system's NATS, as another process would.
func startGateway(t testing.TB, s *System, mutate func(*gateway.Options)) *httptest.Server {
	t.Helper()
	nc := natsConn(t, s)
	opts := gateway.Options{Conn: nc, Name: "gw-b", AllowAnonymous: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if mutate != nil {
		mutate(&opts)
	}
	g, err := gateway.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = g.Shutdown(ctx)
		srv.Close()
	})
	return srv
}

func TestJoinRules(t *testing.T) {
	s := startSystem(t, nil)
	grant(t, natsConn(t, s), "rooms:ops", "alice")
	alice := dial(t, s.URL(), url.Values{"token": {token(t, s, "alice")}})
	bob := dial(t, s.URL(), url.Values{"token": {token(t, s, "bob")}})
	anon := dial(t, s.URL(), nil)

	alice.join("rooms:lobby", "1")
	alice.join("rooms:ops", "2")
	bob.join("rooms:lobby", "1")
	bob.send(`["2","2","rooms:ops","phx_join",{}]`)
	bob.expect(`["2","2","rooms:ops","phx_reply",{"response":{"reason":"unauthorized"},"status":"error"}]`)
	anon.send(`["1","1","rooms:ops","phx_join",{}]`)
	anon.expect(`["1","1","rooms:ops","phx_reply",{"response":{"reason":"unauthorized"},"status":"error"}]`)
	anon.send(`["2","2","nosuch:topic","phx_join",{}]`)
	anon.expect(`[null,"2","nosuch:topic","phx_reply",{"response":{"reason":"unmatched topic"},"status":"error"}]`)

	// A message in the private room reaches alice and not the lobby.
	alice.send(`["2","3","rooms:ops","new_msg",{"body":"ops only"}]`)
	alice.expectSkippingJoins(`[null,null,"rooms:ops","new_msg",{"body":"ops only"}]`)
	bob.quiet(300 * time.Millisecond)
}

func TestBroadcastAcrossTwoGateways(t *testing.T) {
	s := startSystem(t, nil)
	gwB := startGateway(t, s, nil)
	a := dial(t, s.URL(), nil)
	b := dial(t, gwB.URL, nil)
	a.join("rooms:lobby", "1")
	b.join("rooms:lobby", "1")
	a.send(`["1","2","rooms:lobby","new_msg",{"body":"from A"}]`)
	a.expect(`[null,null,"rooms:lobby","new_msg",{"body":"from A"}]`)
	b.expect(`[null,null,"rooms:lobby","new_msg",{"body":"from A"}]`)
	b.send(`["1","2","rooms:lobby","new_msg",{"body":"from B"}]`)
	b.expect(`[null,null,"rooms:lobby","new_msg",{"body":"from B"}]`)
	a.expect(`[null,null,"rooms:lobby","new_msg",{"body":"from B"}]`)

	// V1 sockets get the same broadcast in their own format.
	v1 := dial(t, gwB.URL, url.Values{"vsn": {"1.0.0"}})
	v1.send(`{"topic":"rooms:lobby","event":"phx_join","payload":{},"ref":"1","join_ref":"1"}`)
	v1.expect(`{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"1","topic":"rooms:lobby"}`)
	a.send(`["1","3","rooms:lobby","new_msg",{"body":"to v1"}]`)
	v1.expect(`{"event":"new_msg","payload":{"body":"to v1"},"ref":null,"topic":"rooms:lobby"}`)
}

func TestOutsidePublisher(t *testing.T) {
	s := startSystem(t, nil)
	c := dial(t, s.URL(), nil)
	c.join("rooms:lobby", "1")
	nc := natsConn(t, s)
	// A plain NATS client that knows only the documented subject and payload.
	pub := func(subject, data string) {
		t.Helper()
		if err := nc.Publish(subject, []byte(data)); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	pub("phx.room.rooms:lobby", `{"event":"new_msg","payload":{"body":"deploy finished"}}`)
	c.expect(`[null,null,"rooms:lobby","new_msg",{"body":"deploy finished"}]`)

	// Malformed publishes are dropped, never delivered half-formed.
	for _, bad := range []string{`not json`, `{"event":"phx_close","payload":{}}`, `{"event":"x","payload":"str"}`, `{"payload":{}}`} {
		pub("phx.room.rooms:lobby", bad)
	}
	pub("phx.room.rooms:lobby", `{"event":"alert","payload":{"level":1}}`)
	c.expect(`[null,null,"rooms:lobby","alert",{"level":1}]`)
	if got := testutil.ToFloat64(s.Gateway().Metrics().BroadcastsDropped.WithLabelValues("invalid")); got != 4 {
		t.Errorf("dropped = %v, want 4", got)
	}
	// The Go helper does the same.
	if err := proto.Publish(context.Background(), nc, "rooms:lobby", "new_msg", map[string]string{"body": "from Go"}); err != nil {
		t.Fatal(err)
	}
	c.expect(`[null,null,"rooms:lobby","new_msg",{"body":"from Go"}]`)
}

// Topics crafted to look like NATS wildcards stay literal rooms.
func TestWildcardTopics(t *testing.T) {
	s := startSystem(t, func(c *Config) { c.Rooms.PublicTopics = []string{"rooms:pub*"} })
	star := dial(t, s.URL(), nil)
	gt := dial(t, s.URL(), nil)
	dot := dial(t, s.URL(), nil)
	star.join("rooms:pub*", "1")
	gt.join("rooms:pub>", "1")
	dot.join("rooms:pub.x", "1")

	nc := natsConn(t, s)
	for _, topic := range []string{"rooms:pub.x", "rooms:pubA", "rooms:pub*", "rooms:pub>"} {
		if err := proto.Publish(context.Background(), nc, topic, "new_msg", map[string]string{"body": topic}); err != nil {
			t.Fatal(err)
		}
	}
	// Each socket receives its own room's message only, in publish order.
	dot.expect(`[null,null,"rooms:pub.x","new_msg",{"body":"rooms:pub.x"}]`)
	star.expect(`[null,null,"rooms:pub*","new_msg",{"body":"rooms:pub*"}]`)
	gt.expect(`[null,null,"rooms:pub>","new_msg",{"body":"rooms:pub>"}]`)
	for _, c := range []*client{dot, star, gt} {
		c.send(`[null,"9","phoenix","heartbeat",{}]`)
		c.expect(`[null,"9","phoenix","phx_reply",{"response":{},"status":"ok"}]`)
	}
	// And the anonymous socket cannot reach a private room by wildcard either.
	star.send(`["2","2","rooms:*","phx_join",{}]`)
	star.expect(`["2","2","rooms:*","phx_reply",{"response":{"reason":"unauthorized"},"status":"error"}]`)
}

func TestDeadService(t *testing.T) {
	s := startSystem(t, func(c *Config) { c.Gateway.RequestTimeout = 300 * time.Millisecond })
	c := dial(t, s.URL(), nil)
	c.join("rooms:lobby", "1")
	s.rooms.Drain(context.Background())
	time.Sleep(100 * time.Millisecond)

	// Nobody listens: an error reply at once.
	c.send(`["1","2","rooms:lobby","new_msg",{"body":"anyone?"}]`)
	c.expect(`["1","2","rooms:lobby","phx_reply",{"response":{"reason":"service unavailable"},"status":"error"}]`)
	c.send(`["3","3","rooms:other","phx_join",{}]`)
	c.expect(`["3","3","rooms:other","phx_reply",{"response":{"reason":"service unavailable"},"status":"error"}]`)

	// A service that takes the request and never answers: an error after the timeout.
	nc := natsConn(t, s)
	if _, err := nc.QueueSubscribe(proto.JoinSubject(proto.ServiceRooms), proto.QueueRooms, func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.send(`["4","4","rooms:other","phx_join",{}]`)
	c.expect(`["4","4","rooms:other","phx_reply",{"response":{"reason":"service timeout"},"status":"error"}]`)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("timeout reply took %v", d)
	}
	// The socket is still healthy.
	c.send(`[null,"5","phoenix","heartbeat",{}]`)
	c.expect(`[null,"5","phoenix","phx_reply",{"response":{},"status":"ok"}]`)
}

func TestAuthServiceDownRefusesWith503(t *testing.T) {
	s := startSystem(t, nil)
	tok := token(t, s, "alice")
	s.auth.Drain(context.Background())
	time.Sleep(100 * time.Millisecond)
	_, res, err := websocket.DefaultDialer.Dial(wsURL(s, url.Values{"vsn": {"2.0.0"}, "token": {tok}}), nil)
	if err == nil || res == nil || res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial with authsvc down: err=%v res=%v, want HTTP 503", err, res)
	}
}

func TestOversizedFrame(t *testing.T) {
	s := startSystem(t, func(c *Config) { c.Gateway.MaxFrameSize = 1024 })
	big := dial(t, s.URL(), nil)
	other := dial(t, s.URL(), nil)
	big.join("rooms:lobby", "1")
	other.join("rooms:lobby", "1")
	big.send(`["1","2","rooms:lobby","new_msg",{"body":"` + strings.Repeat("x", 2000) + `"}]`)
	if code := big.closeCode(); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
	other.send(`["1","2","rooms:lobby","new_msg",{"body":"still here"}]`)
	other.expect(`[null,null,"rooms:lobby","new_msg",{"body":"still here"}]`)
}

func TestMalformedFrameClosesOnlyThatSocket(t *testing.T) {
	s := startSystem(t, nil)
	bad := dial(t, s.URL(), nil)
	good := dial(t, s.URL(), nil)
	bad.join("rooms:lobby", "1")
	good.join("rooms:lobby", "1")
	bad.send(`["1","1","rooms:lobby"]`)
	if code := bad.closeCode(); code != websocket.CloseInternalServerErr {
		t.Fatalf("close code %d, want 1011", code)
	}
	good.send(`["1","2","rooms:lobby","new_msg",{"body":"fine"}]`)
	good.expect(`[null,null,"rooms:lobby","new_msg",{"body":"fine"}]`)
}

// A client that stops reading is closed as a slow consumer; the others get everything.
func TestSlowConsumer(t *testing.T) {
	s := startSystem(t, func(c *Config) { c.Gateway.SendQueueLen = 16 })
	slow := dial(t, s.URL(), nil)
	fast := dial(t, s.URL(), nil)
	slow.join("rooms:lobby", "1")
	fast.join("rooms:lobby", "1")

	nc := natsConn(t, s)
	body := strings.Repeat("y", 32<<10)
	const n = 400 // 12.8 MB: far more than the socket buffers hold
	// The fast client reads everything; the publisher stays at most a few
	// messages ahead of it, so only the client that stops reading falls behind.
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for got.Load() < n {
			_ = fast.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, _, err := fast.ws.ReadMessage(); err != nil {
				t.Logf("fast client: %v", err)
				return
			}
			got.Add(1)
		}
	}()
	for i := 0; i < n; i++ {
		for deadline := time.Now().Add(10 * time.Second); int64(i)-got.Load() > 4 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		if err := proto.Publish(context.Background(), nc, "rooms:lobby", "new_msg", map[string]string{"body": body}); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	if got.Load() != n {
		t.Fatalf("fast client received %d of %d", got.Load(), n)
	}
	if got := testutil.ToFloat64(s.Gateway().Metrics().SlowDisconnects); got != 1 {
		t.Fatalf("slow consumer disconnects = %v, want 1", got)
	}
	// The slow socket was closed with 1013 once its queue filled (it may first read what TCP held).
	_ = slow.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := slow.ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseTryAgainLater {
			t.Fatalf("slow socket ended with %v, want close 1013", err)
		}
		break
	}
}

func TestHealthAndMetrics(t *testing.T) {
	s := startSystem(t, nil)
	res, err := http.Get(s.URL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var health map[string]any
	_ = json.NewDecoder(res.Body).Decode(&health)
	res.Body.Close()
	if res.StatusCode != 200 || health["status"] != "ok" {
		t.Fatalf("healthz %d %v", res.StatusCode, health)
	}
	c := dial(t, s.URL(), nil)
	c.join("rooms:lobby", "1")
	res, err = http.Get(s.OpsURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{`phx_gateway_joins_total{result="ok"} 1`, `phx_gateway_connections{transport="websocket"} 1`, "phx_gateway_rooms 1"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestDrainClosesWithRestartCode(t *testing.T) {
	s := startSystem(t, nil)
	c := dial(t, s.URL(), nil)
	c.join("rooms:lobby", "1")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- s.Gateway().Shutdown(ctx)
	}()
	if code := c.closeCode(); code != websocket.CloseServiceRestart {
		t.Fatalf("close code %d, want 1012", code)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestBinaryPayloads(t *testing.T) {
	s := startSystem(t, nil)
	v2 := dial(t, s.URL(), nil)
	v1 := dial(t, s.URL(), url.Values{"vsn": {"1.0.0"}})
	v2.join("rooms:lobby", "1")
	v1.send(`{"topic":"rooms:lobby","event":"phx_join","payload":{},"ref":"1","join_ref":"1"}`)
	v1.expect(`{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"1","topic":"rooms:lobby"}`)

	// A binary new_msg (phoenix.js sends ArrayBuffer payloads this way) is
	// broadcast as a binary frame to V2 and as a clear error to V1.
	push := append([]byte{0, 1, 1, 11, 7}, "12rooms:lobbynew_msg"...)
	push = append(push, 0xde, 0xad, 0xbe, 0xef)
	if err := v2.ws.WriteMessage(websocket.BinaryMessage, push); err != nil {
		t.Fatal(err)
	}
	_ = v2.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, data, err := v2.ws.ReadMessage()
	want := append([]byte{2, 11, 7}, "rooms:lobbynew_msg"...)
	want = append(want, 0xde, 0xad, 0xbe, 0xef)
	if err != nil || typ != websocket.BinaryMessage || string(data) != string(want) {
		t.Fatalf("binary broadcast = %d %x %v, want %x", typ, data, err, want)
	}
	v1.expect(`{"event":"new_msg","payload":{"error":"binary payloads need the V2 serializer (vsn=2.0.0)"},"ref":null,"topic":"rooms:lobby"}`)

	// Another service can publish bytes too.
	if err := proto.PublishBinary(context.Background(), natsConn(t, s), "rooms:lobby", "blob", []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	_, data, err = v2.ws.ReadMessage()
	if err != nil || string(data) != "\x02\x0b\x04rooms:lobbyblob\x01\x02\x03" {
		t.Fatalf("published binary = %q %v", data, err)
	}
	v1.expect(`{"event":"blob","payload":{"error":"binary payloads need the V2 serializer (vsn=2.0.0)"},"ref":null,"topic":"rooms:lobby"}`)
}

// One socket flooding is refused at the gateway; the others are unaffected.
func TestFloodIsRateLimited(t *testing.T) {
	s := startSystem(t, func(c *Config) { c.Gateway.RateLimit, c.Gateway.RateBurst = 50, 50 })
	flood := dial(t, s.URL(), nil)
	calm := dial(t, s.URL(), nil)
	flood.join("rooms:lobby", "1")
	calm.join("rooms:lobby", "1")
	const n = 300
	for i := 0; i < n; i++ {
		flood.send(fmt.Sprintf(`["1","%d","rooms:lobby","ping",{"i":%d}]`, i+2, i))
	}
	ok, limited := 0, 0
	for i := 0; i < n; i++ {
		switch got := flood.read(); {
		case strings.Contains(got, `"status":"ok"`):
			ok++
		case strings.Contains(got, `{"reason":"rate limit exceeded"}`):
			limited++
		default:
			t.Fatalf("unexpected frame %s", got)
		}
	}
	if limited == 0 || ok < 40 || ok > 100 {
		t.Fatalf("ok=%d limited=%d: want the burst through and the rest refused", ok, limited)
	}
	// Heartbeats still pass, and the calm socket is served normally.
	flood.send(`[null,"999","phoenix","heartbeat",{}]`)
	flood.expect(`[null,"999","phoenix","phx_reply",{"response":{},"status":"ok"}]`)
	for i := 0; i < 10; i++ {
		calm.send(fmt.Sprintf(`["1","%d","rooms:lobby","ping",{}]`, i+2))
		calm.expect(fmt.Sprintf(`["1","%d","rooms:lobby","phx_reply",{"response":{},"status":"ok"}]`, i+2))
	}
	t.Logf("flood of %d: %d served, %d refused", n, ok, limited)
}

// A message on the user's disconnect subject closes all of their sockets on every gateway.
func TestForcedDisconnectAcrossGateways(t *testing.T) {
	s := startSystem(t, nil)
	gwB := startGateway(t, s, nil)
	alice := url.Values{"token": {token(t, s, "alice")}}
	aliceA := dial(t, s.URL(), alice)
	aliceB := dial(t, gwB.URL, alice)
	bob := dial(t, s.URL(), url.Values{"token": {token(t, s, "bob")}})
	for _, c := range []*client{aliceA, aliceB, bob} {
		c.join("rooms:lobby", "1")
	}
	subject, data, err := proto.DisconnectMessage("alice")
	if err != nil {
		t.Fatal(err)
	}
	nc := natsConn(t, s)
	// Messages on the subject that are no disconnect of alice change
	// nothing: any NATS client may aim a reply there, as a JetStream
	// acknowledgement aimed by a publisher's reply subject is here.
	if err := nc.PublishRequest(proto.RoomSubjectPrefix+"rooms:lobby", subject, []byte(`{"event":"new_msg","payload":{"body":"aimed"}}`)); err != nil {
		t.Fatal(err)
	}
	for _, wrong := range [][]byte{nil, []byte(`{}`), []byte(`{"disconnect":"bob"}`)} {
		if err := nc.Publish(subject, wrong); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // room for a wrong disconnect to close the sockets
	for _, c := range []*client{aliceA, aliceB} {
		c.expect(`[null,null,"rooms:lobby","new_msg",{"body":"aimed"}]`)
		c.send(`[null,"9","phoenix","heartbeat",{}]`)
		c.expect(`[null,"9","phoenix","phx_reply",{"response":{},"status":"ok"}]`)
	}
	bob.expect(`[null,null,"rooms:lobby","new_msg",{"body":"aimed"}]`)
	if err := nc.Publish(subject, data); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*client{"gateway A": aliceA, "gateway B": aliceB} {
		if code := c.closeCode(); code != websocket.CloseGoingAway {
			t.Errorf("alice on %s: close %d, want 1001", name, code)
		}
	}
	bob.send(`[null,"2","phoenix","heartbeat",{}]`)
	bob.expect(`[null,"2","phoenix","phx_reply",{"response":{},"status":"ok"}]`)
}

// The guide's intercept: user_joined and new_msg from ignored users are not
// delivered to the person who ignores them, on any gateway, and are to
// everyone else. Every socket here asks for senders, joins and its ignore
// list (the chat page's join parameters).
func TestIgnoreListsAcrossGateways(t *testing.T) {
	s := startSystem(t, nil)
	gwB := startGateway(t, s, nil)
	as := func(user string) url.Values { return url.Values{"token": {token(t, s, user)}} }
	aliceA := dial(t, s.URL(), as("alice"))
	aliceB := dial(t, gwB.URL, as("alice"))
	carol := dial(t, s.URL(), as("carol"))
	aliceA.joinWith("rooms:lobby", "1", allExtras)
	aliceB.joinWith("rooms:lobby", "1", allExtras)
	// alice's sockets never get her own user_joined.
	carol.joinWith("rooms:lobby", "1", allExtras)
	aliceA.expect(`[null,null,"rooms:lobby","user_joined",{"user_id":"carol"}]`)
	aliceB.expect(`[null,null,"rooms:lobby","user_joined",{"user_id":"carol"}]`)
	// carol may still see alice's own announcement, published just before she joined.

	// alice ignores bob before he arrives.
	aliceA.send(`["1","2","rooms:lobby","ignore",{"user_id":"bob"}]`)
	aliceA.expect(`["1","2","rooms:lobby","phx_reply",{"response":{"ignored":["bob"]},"status":"ok"}]`)

	bob := dial(t, gwB.URL, as("bob"))
	bob.joinWith("rooms:lobby", "1", allExtras)
	carol.expectUserJoined("bob")
	bob.send(`["1","2","rooms:lobby","new_msg",{"body":"hi from bob","user_id":"bob"}]`)
	bob.expect(`[null,null,"rooms:lobby","new_msg",{"body":"hi from bob","user_id":"bob"}]`)
	carol.expect(`[null,null,"rooms:lobby","new_msg",{"body":"hi from bob","user_id":"bob"}]`)

	// A new socket of alice on gateway B gets the list at join.
	aliceB2 := dial(t, gwB.URL, as("alice"))
	aliceB2.joinWith("rooms:lobby", "1", allExtras)
	carol.expectUserJoined("alice")
	bob.expectUserJoined("alice")

	carol.send(`["1","2","rooms:lobby","new_msg",{"body":"from carol","user_id":"carol"}]`)
	for _, c := range []*client{aliceA, aliceB, aliceB2, bob, carol} {
		// Every socket's next frame is carol's message: bob's join and message were skipped for alice.
		c.expect(`[null,null,"rooms:lobby","new_msg",{"body":"from carol","user_id":"carol"}]`)
	}

	// Unignore: bob reaches alice again, everywhere.
	aliceB2.send(`["1","2","rooms:lobby","unignore",{"user_id":"bob"}]`)
	aliceB2.expect(`["1","2","rooms:lobby","phx_reply",{"response":{"ignored":[]},"status":"ok"}]`)
	time.Sleep(100 * time.Millisecond) // the list travels to gateway A over NATS
	bob.send(`["1","3","rooms:lobby","new_msg",{"body":"bob again","user_id":"bob"}]`)
	for _, c := range []*client{aliceA, aliceB, aliceB2, carol, bob} {
		c.expect(`[null,null,"rooms:lobby","new_msg",{"body":"bob again","user_id":"bob"}]`)
	}

	// Anonymous sockets cannot ignore.
	anon := dial(t, s.URL(), nil)
	anon.join("rooms:lobby", "1")
	anon.send(`["1","2","rooms:lobby","ignore",{"user_id":"bob"}]`)
	anon.expect(`["1","2","rooms:lobby","phx_reply",{"response":{"reason":"log in to ignore users"},"status":"error"}]`)
}

// Revoking a member who is joined removes them from the room at once.
func TestRevokeRemovesJoinedMember(t *testing.T) {
	s := startSystem(t, nil)
	nc := natsConn(t, s)
	grant(t, nc, "rooms:ops", "alice")
	grant(t, nc, "rooms:ops", "carol")
	alice := dial(t, s.URL(), url.Values{"token": {token(t, s, "alice")}})
	carol := dial(t, s.URL(), url.Values{"token": {token(t, s, "carol")}})
	alice.join("rooms:lobby", "1")
	alice.join("rooms:ops", "2")
	carol.join("rooms:ops", "1")

	data, _ := json.Marshal(proto.MembershipRequest{Topic: "rooms:ops", UserID: "alice"})
	if _, err := nc.Request(proto.SubjectMembersRevoke, data, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	alice.expectSkippingJoins(`["2","2","rooms:ops","phx_close",{}]`)
	// She no longer gets the room's messages, and pushing there is unmatched.
	carol.send(`["1","2","rooms:ops","new_msg",{"body":"after revoke"}]`)
	carol.expectSkippingJoins(`[null,null,"rooms:ops","new_msg",{"body":"after revoke"}]`)
	alice.send(`["2","3","rooms:ops","new_msg",{"body":"still here?"}]`)
	alice.expectSkippingJoins(`[null,"3","rooms:ops","phx_reply",{"response":{"reason":"unmatched topic"},"status":"error"}]`)
	// The lobby is untouched.
	alice.send(`["1","4","rooms:lobby","ping",{}]`)
	alice.expectSkippingJoins(`["1","4","rooms:lobby","phx_reply",{"response":{},"status":"ok"}]`)
}

// A socket that sends no complete message is closed after the idle timeout
// (Phoenix: 60 s, close 1002); heartbeats keep it open.
func TestIdleTimeout(t *testing.T) {
	s := startSystem(t, func(c *Config) { c.Gateway.IdleTimeout = 400 * time.Millisecond })
	start := time.Now() // before the dial: the server's idle clock starts at the upgrade
	silent := dial(t, s.URL(), nil)
	beating := dial(t, s.URL(), nil)
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				_ = beating.ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`[null,"%d","phoenix","heartbeat",{}]`, i)))
			}
		}
	}()
	if code := silent.closeCode(); code != websocket.CloseProtocolError {
		t.Fatalf("silent socket: close %d, want 1002", code)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("closed after %v, before the idle timeout", d)
	}
	close(stop)
	<-stopped
	// The heartbeating socket is still served.
	beating.send(`[null,"x","phoenix","heartbeat",{}]`)
	for {
		if got := beating.read(); got == `[null,"x","phoenix","phx_reply",{"response":{},"status":"ok"}]` {
			break
		}
	}
}

// Frames of every length class (7-bit, 16-bit, 64-bit) reach clients intact.
func TestLargeBroadcasts(t *testing.T) {
	s := startSystem(t, nil)
	c := dial(t, s.URL(), nil)
	c.join("rooms:lobby", "1")
	nc := natsConn(t, s)
	for _, n := range []int{10, 200, 70000, 300000} {
		body := strings.Repeat("z", n)
		if err := proto.Publish(context.Background(), nc, "rooms:lobby", "new_msg", map[string]string{"body": body}); err != nil {
			t.Fatal(err)
		}
		c.expect(`[null,null,"rooms:lobby","new_msg",{"body":"` + body + `"}]`)
	}
}

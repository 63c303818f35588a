package system

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phxnats/phxnats/proto"
)

// lpReply is the JSON body of every long-poll answer.
type lpReply struct {
	Status   int       `json:"status"`
	Token    *string   `json:"token"`
	Messages *[]string `json:"messages"`
}

// lpDo sends one long-poll request and decodes the body; every answer but
// a bad method's must be HTTP 200 JSON, with the real status in the body.
func lpDo(t testing.TB, method, rawURL, contentType, body string, header http.Header) (lpReply, *http.Response) {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	var r lpReply
	if res.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: HTTP %d %s, want 200", method, rawURL, res.StatusCode, data)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("%s %s: body %q: %v", method, rawURL, data, err)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("content-type %q", ct)
	}
	if cc := res.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("cache-control %q, want no-store", cc)
	}
	if o := res.Header.Get("Access-Control-Allow-Origin"); o != "*" {
		t.Errorf("access-control-allow-origin %q, want *", o)
	}
	return r, res
}

// lpClient is a raw long-poll client that speaks as phoenix.js 1.8.16: the
// user's params in the query, and the session token appended as a second
// "token" parameter.
type lpClient struct {
	t        testing.TB
	endpoint string     // .../socket/longpoll
	params   url.Values // vsn and the user's token
	session  string
	pending  []string // frames polled but not yet expected
}

func lpEndpoint(base string) string { return base + "/socket/longpoll" }

// lpOpen opens a session; params default to vsn=2.0.0.
func lpOpen(t testing.TB, base string, params url.Values) *lpClient {
	t.Helper()
	if params == nil {
		params = url.Values{}
	}
	if _, ok := params["vsn"]; !ok {
		params.Set("vsn", "2.0.0")
	}
	c := &lpClient{t: t, endpoint: lpEndpoint(base), params: params}
	r, _ := lpDo(t, http.MethodGet, c.endpoint+"?"+params.Encode(), "", "", nil)
	if r.Status != 410 || r.Token == nil || *r.Token == "" || r.Messages == nil || len(*r.Messages) != 0 {
		t.Fatalf("open: got %+v, want status 410 with a token and no messages", r)
	}
	c.session = *r.Token
	return c
}

func (c *lpClient) url() string {
	return c.endpoint + "?" + c.params.Encode() + "&token=" + url.QueryEscape(c.session)
}

// post sends frames: one as a plain body, several as ndjson, like phoenix.js.
func (c *lpClient) post(frames ...string) int {
	c.t.Helper()
	ct, body := "application/json", frames[0]
	if len(frames) > 1 {
		ct, body = "application/x-ndjson", strings.Join(frames, "\n")
	}
	r, _ := lpDo(c.t, http.MethodPost, c.url(), ct, body, nil)
	return r.Status
}

func (c *lpClient) mustPost(frames ...string) {
	c.t.Helper()
	if st := c.post(frames...); st != 200 {
		c.t.Fatalf("POST %v: status %d, want 200", frames, st)
	}
}

// poll sends one GET.
func (c *lpClient) poll() lpReply {
	c.t.Helper()
	r, _ := lpDo(c.t, http.MethodGet, c.url(), "", "", nil)
	if r.Status == 200 || r.Status == 204 {
		if r.Token == nil || *r.Token != c.session || r.Messages == nil {
			c.t.Fatalf("poll: %+v: want the session token and a messages list", r)
		}
	}
	return r
}

// expectN polls until n frames are pending.
func (c *lpClient) expectN(n int) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(c.pending) < n {
		if time.Now().After(deadline) {
			c.t.Fatalf("got %q, want %d frames", c.pending, n)
		}
		r := c.poll()
		switch r.Status {
		case 200:
			c.pending = append(c.pending, *r.Messages...)
		case 204:
		default:
			c.t.Fatalf("poll: status %d, want 200 or 204 (frames so far %q)", r.Status, c.pending)
		}
	}
}

// expect polls until the next frames are exactly want, in order.
func (c *lpClient) expect(want ...string) {
	c.t.Helper()
	c.expectN(len(want))
	got := c.pending[:len(want)]
	c.pending = c.pending[len(want):]
	if !slices.Equal(got, want) {
		c.t.Fatalf("got  %q\nwant %q", got, want)
	}
}

// expectUnordered is expect for frames whose order is not defined.
func (c *lpClient) expectUnordered(want ...string) {
	c.t.Helper()
	c.expectN(len(want))
	got := slices.Clone(c.pending[:len(want)])
	c.pending = c.pending[len(want):]
	slices.Sort(got)
	want = slices.Clone(want)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		c.t.Fatalf("got  %q\nwant %q (in any order)", got, want)
	}
}

func (c *lpClient) join(topic, ref string) {
	c.t.Helper()
	c.mustPost(fmt.Sprintf(`[%q,%q,%q,"phx_join",{}]`, ref, ref, topic))
	c.expect(fmt.Sprintf(`[%q,%q,%q,"phx_reply",{"response":{},"status":"ok"}]`, ref, ref, topic))
}

func lpSessions(s *System) float64 {
	return testutil.ToFloat64(s.Gateway().Metrics().Connections.WithLabelValues("longpoll"))
}

func TestLongPollSession(t *testing.T) {
	s := startSystem(t, nil)
	s.Gateway().SetLongPollWindow(500 * time.Millisecond)
	lp := lpOpen(t, s.URL(), url.Values{"token": {token(t, s, "alice")}})
	if !strings.HasPrefix(lp.session, "lp.") || len(lp.session) < 40 {
		t.Errorf("session token %q: want lp. and 32 random bytes", lp.session)
	}
	if n := lpSessions(s); n != 1 {
		t.Errorf("longpoll connections gauge %v, want 1", n)
	}

	// The transcript's session: a join in a plain POST, then an ndjson batch.
	lp.join("rooms:lobby", "1")
	// The heartbeat is answered at once, the ping once the service replied.
	lp.mustPost(`["1","2","rooms:lobby","ping",{"a":1}]`, `[null,"3","phoenix","heartbeat",{}]`)
	lp.expect(
		`[null,"3","phoenix","phx_reply",{"response":{},"status":"ok"}]`,
		`["1","2","rooms:lobby","phx_reply",{"response":{"a":1},"status":"ok"}]`,
	)

	// Nothing buffered: the poll waits the window, then 204 with the token.
	start := time.Now()
	if r := lp.poll(); r.Status != 204 || len(*r.Messages) != 0 {
		t.Fatalf("idle poll: %+v, want 204 and no messages", r)
	}
	if d := time.Since(start); d < 400*time.Millisecond || d > 3*time.Second {
		t.Errorf("idle poll took %v, want about the 500ms window", d)
	}

	// A pending poll is answered as soon as a frame arrives.
	ws := dial(t, s.URL(), nil)
	ws.join("rooms:lobby", "1")
	got := make(chan lpReply, 1)
	go func() { got <- lp.poll() }()
	time.Sleep(100 * time.Millisecond)
	ws.send(`["1","2","rooms:lobby","new_msg",{"body":"from ws"}]`)
	ws.expect(`[null,null,"rooms:lobby","new_msg",{"body":"from ws"}]`)
	select {
	case r := <-got:
		if r.Status != 200 || !slices.Equal(*r.Messages, []string{`[null,null,"rooms:lobby","new_msg",{"body":"from ws"}]`}) {
			t.Fatalf("woken poll: %+v", r)
		}
	case <-time.After(400 * time.Millisecond):
		t.Fatal("pending poll not answered when the broadcast arrived")
	}

	// The long-poll client's message reaches the WebSocket client and itself.
	lp.mustPost(`["1","4","rooms:lobby","new_msg",{"body":"from long-poll <&>"}]`)
	ws.expect(`[null,null,"rooms:lobby","new_msg",{"body":"from long-poll <&>"}]`)
	lp.expect(`[null,null,"rooms:lobby","new_msg",{"body":"from long-poll <&>"}]`)

	// Another service publishing over NATS.
	if err := proto.Publish(context.Background(), natsConn(t, s), "rooms:lobby", "new_msg", map[string]string{"body": "from Go"}); err != nil {
		t.Fatal(err)
	}
	lp.expect(`[null,null,"rooms:lobby","new_msg",{"body":"from Go"}]`)
	ws.expect(`[null,null,"rooms:lobby","new_msg",{"body":"from Go"}]`)

	// A binary push travels as a base64 ndjson line (as phoenix.js sends an
	// ArrayBuffer payload); the WebSocket gets the bytes, the long-poll
	// client, which cannot take bytes, an error in their place.
	push := append([]byte{0, 1, 1, 11, 7}, "15rooms:lobbynew_msg"...)
	push = append(push, 0xde, 0xad, 0xbe, 0xef)
	lp.mustPost(base64.StdEncoding.EncodeToString(push), `[null,"6","phoenix","heartbeat",{}]`)
	_ = ws.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, data, err := ws.ws.ReadMessage()
	if err != nil || typ != websocket.BinaryMessage || string(data) != "\x02\x0b\x07rooms:lobbynew_msg\xde\xad\xbe\xef" {
		t.Fatalf("binary broadcast at the WebSocket: %d %q %v", typ, data, err)
	}
	// (The broadcast comes back through NATS, so it may follow the heartbeat reply.)
	lp.expectUnordered(
		`[null,null,"rooms:lobby","new_msg",{"error":"binary payloads are not supported over long-poll"}]`,
		`[null,"6","phoenix","phx_reply",{"response":{},"status":"ok"}]`,
	)

	// Leave: ok, then phx_close; broadcasts stop.
	lp.mustPost(`["1","7","rooms:lobby","phx_leave",{}]`)
	lp.expect(`["1","7","rooms:lobby","phx_reply",{"response":{},"status":"ok"}]`, `["1","1","rooms:lobby","phx_close",{}]`)
	ws.send(`["1","3","rooms:lobby","new_msg",{"body":"after leave"}]`)
	ws.expect(`[null,null,"rooms:lobby","new_msg",{"body":"after leave"}]`)
	if r := lp.poll(); r.Status != 204 {
		t.Fatalf("poll after leave: %+v, want 204", r)
	}
}

// The session token may also travel in the header newer phoenix.js sends,
// and V1 clients work too.
func TestLongPollHeaderTokenAndV1(t *testing.T) {
	s := startSystem(t, nil)
	s.Gateway().SetLongPollWindow(300 * time.Millisecond)
	ep := lpEndpoint(s.URL())
	r, _ := lpDo(t, http.MethodGet, ep+"?vsn=1.0.0", "", "", nil)
	if r.Status != 410 || r.Token == nil {
		t.Fatalf("open: %+v", r)
	}
	h := http.Header{"X-Phoenix-Longpoll-Token": {*r.Token}}
	if r, _ := lpDo(t, http.MethodPost, ep+"?vsn=1.0.0", "application/json",
		`{"topic":"rooms:lobby","event":"phx_join","payload":{},"ref":"1","join_ref":"1"}`, h); r.Status != 200 {
		t.Fatalf("post: %+v", r)
	}
	r, _ = lpDo(t, http.MethodGet, ep+"?vsn=1.0.0", "", "", h)
	want := []string{`{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"1","topic":"rooms:lobby"}`}
	if r.Status != 200 || !slices.Equal(*r.Messages, want) {
		t.Fatalf("poll: %+v, want %q", r, want)
	}

	// The authToken option of phoenix.js travels in X-Phoenix-AuthToken.
	r, _ = lpDo(t, http.MethodGet, ep+"?vsn=2.0.0", "", "", http.Header{"X-Phoenix-Authtoken": {"bogus"}})
	if r.Status != 403 {
		t.Fatalf("open with a bad authToken header: %+v, want 403", r)
	}
	r, _ = lpDo(t, http.MethodGet, ep+"?vsn=2.0.0", "", "", http.Header{"X-Phoenix-Authtoken": {token(t, s, "alice")}})
	if r.Status != 410 || r.Token == nil {
		t.Fatalf("open with an authToken header: %+v, want 410", r)
	}
}

func TestLongPollRefusals(t *testing.T) {
	s := startSystem(t, func(c *Config) { c.Gateway.AllowAnonymous = false })
	ep := lpEndpoint(s.URL())
	status := func(method, rawURL, body string, h http.Header) int {
		t.Helper()
		r, _ := lpDo(t, method, rawURL, "application/json", body, h)
		return r.Status
	}
	cases := []struct {
		name, method, url string
		header            http.Header
		want              int
	}{
		{"bad auth token", "GET", ep + "?vsn=2.0.0&token=bogus", nil, 403},
		{"no token when anonymous is off", "GET", ep + "?vsn=2.0.0", nil, 403},
		{"unknown vsn", "GET", ep + "?vsn=3.0.0&token=" + token(t, s, "alice"), nil, 403},
		{"foreign origin", "GET", ep + "?vsn=2.0.0&token=" + token(t, s, "alice"), http.Header{"Origin": {"http://evil.example"}}, 403},
		{"unknown session GET", "GET", ep + "?vsn=2.0.0&token=lp.nosuchsession", nil, 410},
		{"unknown session GET (header)", "GET", ep + "?vsn=2.0.0", http.Header{"X-Phoenix-Longpoll-Token": {"nosuch"}}, 410},
		{"unknown session POST", "POST", ep + "?vsn=2.0.0&token=lp.nosuchsession", nil, 410},
		{"POST without session", "POST", ep + "?vsn=2.0.0", nil, 410},
	}
	for _, tc := range cases {
		if got := status(tc.method, tc.url, `[null,"1","phoenix","heartbeat",{}]`, tc.header); got != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, got, tc.want)
		}
	}
	if n := lpSessions(s); n != 0 {
		t.Errorf("sessions opened by refused requests: %v", n)
	}

	// Other methods get a real 400; a preflight gets CORS headers.
	req, _ := http.NewRequest(http.MethodPut, ep, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("PUT: HTTP %d, want 400", res.StatusCode)
	}
	req, _ = http.NewRequest(http.MethodOptions, ep, nil)
	req.Header.Set("Access-Control-Request-Headers", "content-type,x-phoenix-longpoll-token")
	if res, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Access-Control-Allow-Origin") != "*" ||
		res.Header.Get("Access-Control-Allow-Headers") != "content-type,x-phoenix-longpoll-token" ||
		res.Header.Get("Access-Control-Allow-Methods") != "get, post, options" {
		t.Errorf("OPTIONS: HTTP %d %v", res.StatusCode, res.Header)
	}

	// authsvc down: 500, which phoenix.js retries (403 would make it give up).
	tok := token(t, s, "alice")
	s.auth.Drain(context.Background())
	time.Sleep(100 * time.Millisecond)
	if got := status("GET", ep+"?vsn=2.0.0&token="+url.QueryEscape(tok), "", nil); got != 500 {
		t.Errorf("authsvc down: status %d, want 500", got)
	}
}

// A malformed or oversized POST closes the session; later requests get 410.
func TestLongPollBadPosts(t *testing.T) {
	s := startSystem(t, func(c *Config) { c.Gateway.MaxFrameSize = 1024 })
	s.Gateway().SetLongPollWindow(300 * time.Millisecond)
	for _, tc := range []struct {
		name, ct, body string
		want           int
	}{
		{"malformed frame", "application/json", `["1","1","rooms:lobby"]`, 400},
		{"malformed line in a batch", "application/x-ndjson", "[null,\"1\",\"phoenix\",\"heartbeat\",{}]\n[1,2", 400},
		{"bad base64 line", "application/x-ndjson", "[null,\"1\",\"phoenix\",\"heartbeat\",{}]\n!!notbase64", 400},
		{"too many lines", "application/x-ndjson", strings.Repeat("[null,\"1\",\"phoenix\",\"heartbeat\",{}]\n", 101), 400},
		{"oversized frame", "application/json", `["1","2","rooms:lobby","new_msg",{"body":"` + strings.Repeat("x", 2000) + `"}]`, 413},
		{"oversized batch", "application/x-ndjson", strings.Repeat("[null,\"1\",\"phoenix\",\"heartbeat\",{\"pad\":\""+strings.Repeat("x", 900)+"\"}]\n", 5), 413},
	} {
		lp := lpOpen(t, s.URL(), nil)
		lp.join("rooms:lobby", "1")
		r, _ := lpDo(t, http.MethodPost, lp.url(), tc.ct, tc.body, nil)
		if r.Status != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, r.Status, tc.want)
		}
		// No frame of a rejected batch was handled, and the session is gone.
		if r := lp.poll(); r.Status != 410 {
			t.Errorf("%s: poll after: %+v, want 410", tc.name, r)
		}
	}
	// 100 lines are fine.
	lp := lpOpen(t, s.URL(), nil)
	frames := make([]string, 100)
	want := make([]string, 100)
	for i := range frames {
		frames[i] = fmt.Sprintf(`[null,"%d","phoenix","heartbeat",{}]`, i)
		want[i] = fmt.Sprintf(`[null,"%d","phoenix","phx_reply",{"response":{},"status":"ok"}]`, i)
	}
	lp.mustPost(frames...)
	lp.expect(want...)
	if got := testutil.ToFloat64(s.Gateway().Metrics().MalformedFrames); got != 4 {
		t.Errorf("malformed frames counted %v, want 4", got)
	}
}

// A session that is not polled for 1.5 windows is closed and leaves its rooms.
func TestLongPollExpiry(t *testing.T) {
	// No linger: the room gauge then shows the session has left its room.
	s := startSystem(t, func(c *Config) { c.Gateway.RoomLinger = -1 })
	s.Gateway().SetLongPollWindow(200 * time.Millisecond)
	lp := lpOpen(t, s.URL(), nil)
	lp.join("rooms:lobby", "1")
	rooms := func() float64 { return testutil.ToFloat64(s.Gateway().Metrics().Rooms) }
	if rooms() != 1 || lpSessions(s) != 1 {
		t.Fatalf("rooms %v sessions %v, want 1 and 1", rooms(), lpSessions(s))
	}
	// Polling keeps it alive past the expiry.
	for range 3 {
		if r := lp.poll(); r.Status != 204 {
			t.Fatalf("poll: %+v", r)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for rooms() != 0 || lpSessions(s) != 0 || s.Gateway().LongPollSessions() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after expiry: rooms %v sessions %v", rooms(), lpSessions(s))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := lp.poll(); r.Status != 410 {
		t.Fatalf("poll of an expired session: %+v, want 410", r)
	}
	if st := lp.post(`[null,"1","phoenix","heartbeat",{}]`); st != 410 {
		t.Fatalf("POST to an expired session: %d, want 410", st)
	}
}

// A client that does not poll while its buffer fills is closed as a slow consumer.
func TestLongPollSlowConsumer(t *testing.T) {
	s := startSystem(t, func(c *Config) { c.Gateway.SendQueueLen = 8 })
	s.Gateway().SetLongPollWindow(5 * time.Second)
	slow := lpOpen(t, s.URL(), nil)
	slow.join("rooms:lobby", "1")
	ws := dial(t, s.URL(), nil)
	ws.join("rooms:lobby", "1")
	nc := natsConn(t, s)
	for i := range 20 {
		if err := proto.Publish(context.Background(), nc, "rooms:lobby", "new_msg", map[string]int{"i": i}); err != nil {
			t.Fatal(err)
		}
		ws.expect(fmt.Sprintf(`[null,null,"rooms:lobby","new_msg",{"i":%d}]`, i))
	}
	if r := slow.poll(); r.Status != 410 {
		t.Fatalf("slow consumer's poll: status %d, want 410", r.Status)
	}
	if got := testutil.ToFloat64(s.Gateway().Metrics().SlowDisconnects); got != 1 {
		t.Errorf("slow disconnects %v, want 1", got)
	}
	if lpSessions(s) != 0 {
		t.Errorf("sessions %v, want 0", lpSessions(s))
	}
}

// Draining the gateway answers pending polls at once and ends the sessions.
func TestLongPollDrain(t *testing.T) {
	s := startSystem(t, nil)
	s.Gateway().SetLongPollWindow(10 * time.Second)
	lp := lpOpen(t, s.URL(), nil)
	lp.join("rooms:lobby", "1")
	got := make(chan lpReply, 1)
	go func() { got <- lp.poll() }()
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Gateway().Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.Status != 410 {
			t.Fatalf("pending poll at shutdown: %+v, want 410", r)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("pending poll not answered at shutdown")
	}
	if lpSessions(s) != 0 {
		t.Errorf("sessions %v after shutdown", lpSessions(s))
	}
	// New sessions are refused with a status phoenix.js retries.
	r, _ := lpDo(t, http.MethodGet, lpEndpoint(s.URL())+"?vsn=2.0.0", "", "", nil)
	if r.Status != 500 {
		t.Fatalf("open while draining: %+v, want 500", r)
	}
}

// Long-poll sessions on a second gateway: each gateway holds its own.
func TestLongPollTwoGateways(t *testing.T) {
	s := startSystem(t, nil)
	gwB := startGateway(t, s, nil)
	a := lpOpen(t, s.URL(), nil)
	b := lpOpen(t, gwB.URL, nil)
	a.join("rooms:lobby", "1")
	b.join("rooms:lobby", "1")
	a.mustPost(`["1","2","rooms:lobby","new_msg",{"body":"across"}]`)
	a.expect(`[null,null,"rooms:lobby","new_msg",{"body":"across"}]`)
	b.expect(`[null,null,"rooms:lobby","new_msg",{"body":"across"}]`)
	// A session token is only known to the gateway that issued it.
	wrong := &lpClient{t: t, endpoint: lpEndpoint(gwB.URL), params: a.params, session: a.session}
	if r := wrong.poll(); r.Status != 410 {
		t.Fatalf("session of gateway A polled at B: %+v, want 410", r)
	}
}

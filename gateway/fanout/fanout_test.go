package fanout

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/gateway/metrics"
	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
	"github.com/phxnats/phxnats/proto/natstest"
)

// sink is a local socket for the tests: the transport of a session, which
// records the broadcasts it is sent and the rooms it lost (phx_error).
type sink struct {
	ser    wire.Serializer
	sess   *session.Session
	cfg    session.Config
	mu     sync.Mutex
	frames []session.Frame
	got    chan struct{}
	lost   chan string
}

// newSink makes a member of h that ignores the user "ignored". Its
// session joins rooms as a client does (join) when nc answers joins,
// else only in the Hub (h.Join).
func newSink(h *Hub, nc *nats.Conn, ser wire.Serializer) *sink {
	s := &sink{ser: ser, got: make(chan struct{}, 100), lost: make(chan string, 10)}
	s.cfg = session.Config{
		Conn: nc, Rooms: h, Metrics: metrics.New(), Logger: quiet, Gateway: "gw", RequestTimeout: 5 * time.Second,
		Routes: []session.Route{{Pattern: "rooms:*", Service: proto.ServiceRooms}}, RateLimit: session.Off,
	}
	s.sess, _ = session.New(&s.cfg, s, "user", "")
	s.sess.SetIgnored([]string{"ignored"})
	return s
}

// newUserSink is newSink for a socket of user, which ignores nobody yet.
func newUserSink(h *Hub, ser wire.Serializer, user string) *sink {
	s := newSink(h, nil, ser)
	s.sess, _ = session.New(&s.cfg, s, user, "")
	s.sess.SetIgnored([]string{"ignored"})
	return s
}

func (s *sink) Serializer() wire.Serializer { return s.ser }
func (s *sink) Close(session.Disconnect)    {}
func (s *sink) Deliver(f session.Frame) {
	switch {
	case bytes.Contains(f.Data, []byte(`"phx_error"`)):
		var frame []string
		_ = json.Unmarshal(f.Data, &frame)
		s.lost <- frame[2]
	case bytes.Contains(f.Data, []byte(`"phx_reply"`)):
	default:
		s.mu.Lock()
		s.frames = append(s.frames, f)
		s.mu.Unlock()
		s.got <- struct{}{}
	}
}

// join joins the sink's session to topic as a client does: the session
// asks the rooms service (answered on s.cfg.Conn), then joins the Hub.
func (s *sink) join(t testing.TB, topic string) {
	t.Helper()
	s.sess.HandleMessage(wire.Message{JoinRef: "1", Ref: "1", Topic: topic, Event: "phx_join", Payload: []byte("{}")})
	s.sess.Wait()
	if s.cfg.Rooms.(*Hub).Rooms() == 0 {
		t.Fatalf("join %s refused", topic)
	}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func (s *sink) wait(t *testing.T) session.Frame {
	t.Helper()
	select {
	case <-s.got:
	case <-time.After(5 * time.Second):
		t.Fatal("no frame delivered")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.frames[len(s.frames)-1]
}

// newHub starts a NATS server with the room stream and a Hub on it.
func newHub(t testing.TB) (*Hub, *nats.Conn) { return newHubLinger(t, session.Off) }

func newHubLinger(t testing.TB, linger time.Duration) (*Hub, *nats.Conn) {
	t.Helper()
	srv := natstest.Start(t, natstest.Options{})
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proto.EnsureRoomStream(context.Background(), js, proto.RoomStreamOptions{}); err != nil {
		t.Fatal(err)
	}
	h, err := New(Options{Conn: nc, Linger: linger, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return h, natstest.Connect(t, srv)
}

func TestEncodeOncePerSerializer(t *testing.T) {
	h, pub := newHub(t)
	ctx := context.Background()
	v2a, v2b, v1 := newSink(h, nil, wire.V2), newSink(h, nil, wire.V2), newSink(h, nil, wire.V1)
	for _, s := range []*sink{v2a, v2b, v1} {
		if _, err := h.Join(ctx, "rooms:lobby", s.sess, nil); err != nil {
			t.Fatal(err)
		}
	}
	if h.Rooms() != 1 {
		t.Fatalf("rooms = %d, want one room for three members", h.Rooms())
	}
	if err := proto.Publish(ctx, pub, "rooms:lobby", "new_msg", map[string]string{"body": "hi"}); err != nil {
		t.Fatal(err)
	}
	a, b, c := v2a.wait(t), v2b.wait(t), v1.wait(t)
	if string(a.Data) != `[null,null,"rooms:lobby","new_msg",{"body":"hi"}]` {
		t.Fatalf("v2 frame %s", a.Data)
	}
	if &a.Data[0] != &b.Data[0] {
		t.Error("two V2 sockets got separately encoded copies; want the same bytes")
	}
	if string(c.Data) != `{"event":"new_msg","payload":{"body":"hi"},"ref":null,"topic":"rooms:lobby"}` {
		t.Fatalf("v1 frame %s", c.Data)
	}

	// After the last leave a broadcast reaches nobody.
	for _, s := range []*sink{v2a, v2b, v1} {
		h.Leave("rooms:lobby", s.sess)
	}
	if h.Rooms() != 0 {
		t.Fatalf("rooms = %d after every member left", h.Rooms())
	}
	if err := proto.Publish(ctx, pub, "rooms:lobby", "new_msg", map[string]string{"body": "gone"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v2a.got:
		t.Fatal("delivered after leave")
	case <-time.After(100 * time.Millisecond):
	}
}

func BenchmarkDispatch1000(b *testing.B) {
	h, _ := newHub(b)
	r := &room{topic: "rooms:lobby", index: map[*session.Session]int{}}
	cfg := &session.Config{Rooms: h, Metrics: metrics.New(), Logger: quiet, Gateway: "gw"}
	for i := 0; i < 1000; i++ {
		s, _ := session.New(cfg, &countSink{}, "", "")
		r.add(s, nil)
	}
	subject, _ := proto.RoomSubject(r.topic)
	h.rooms[subject] = r
	msg := []byte(`{"event":"new_msg","payload":{"body":"hello world"}}`)
	b.ReportAllocs()
	for b.Loop() {
		h.dispatch(subject, 1, msg)
	}
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "deliveries/s")
}

// BenchmarkDispatch1000Sender is BenchmarkDispatch1000 with a sender on
// the broadcast and half of the members asking for it: the price of the
// second variant (one more encoding per broadcast, a longer member walk).
func BenchmarkDispatch1000Sender(b *testing.B) {
	h, _ := newHub(b)
	r := &room{topic: "rooms:lobby", index: map[*session.Session]int{}}
	cfg := &session.Config{Rooms: h, Metrics: metrics.New(), Logger: quiet, Gateway: "gw"}
	want := session.WantOf([]string{proto.JoinSender})
	for i := 0; i < 1000; i++ {
		s, _ := session.New(cfg, &countSink{}, "", "")
		w := want
		if i%2 == 0 {
			w = nil
		}
		r.add(s, w)
	}
	subject, _ := proto.RoomSubject(r.topic)
	h.rooms[subject] = r
	msg := []byte(`{"event":"new_msg","payload":{"body":"hello world"},"from":"alice"}`)
	b.ReportAllocs()
	for b.Loop() {
		h.dispatch(subject, 1, msg)
	}
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "deliveries/s")
}

// BenchmarkDispatch1000History is BenchmarkDispatch1000 with half of the
// members joined with history (released): their frames carry the
// position, a second encoding per broadcast, and each costs a lookup of
// its place in the stream.
func BenchmarkDispatch1000History(b *testing.B) {
	h, _ := newHub(b)
	r := &room{topic: "rooms:lobby", index: map[*session.Session]int{}}
	cfg := &session.Config{Rooms: h, Metrics: metrics.New(), Logger: quiet, Gateway: "gw"}
	for i := 0; i < 1000; i++ {
		s, _ := session.New(cfg, &countSink{}, "", "")
		if i%2 == 0 {
			r.add(s, nil)
			continue
		}
		r.add(s, &session.Want{History: true})
		r.release(s, 0)
	}
	subject, _ := proto.RoomSubject(r.topic)
	h.rooms[subject] = r
	msg := []byte(`{"event":"new_msg","payload":{"body":"hello world"}}`)
	b.ReportAllocs()
	seq := uint64(0)
	for b.Loop() {
		seq++
		h.dispatch(subject, seq, msg)
	}
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "deliveries/s")
}

type countSink struct{ n int }

func (c *countSink) Serializer() wire.Serializer { return wire.V2 }
func (c *countSink) Deliver(session.Frame)       { c.n++ }
func (c *countSink) Close(session.Disconnect)    {}

func publish(t *testing.T, nc *nats.Conn, body string) {
	t.Helper()
	publishTo(t, nc, "rooms:lobby", body)
}

func publishTo(t *testing.T, nc *nats.Conn, topic, body string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := proto.Publish(ctx, nc, topic, "new_msg", map[string]string{"body": body}); err != nil {
		t.Fatal(err)
	}
}

func bodies(s *sink) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, f := range s.frames {
		var frame []json.RawMessage
		var p struct{ Body string }
		if json.Unmarshal(f.Data, &frame) == nil && len(frame) == 5 && json.Unmarshal(frame[4], &p) == nil {
			out = append(out, p.Body)
		}
	}
	return out
}

// waitBodies waits until s received n frames and returns their bodies.
func waitBodies(t *testing.T, s *sink, n int) []string {
	t.Helper()
	for i := 0; i < n; i++ {
		s.wait(t)
	}
	return bodies(s)
}

// A join sees exactly what is stored after it returns, in order: nothing
// from before, and not one message of what follows is missing.
func TestJoinStartsAfterStoredMessages(t *testing.T) {
	h, pub := newHub(t)
	publish(t, pub, "before")
	s := newSink(h, nil, wire.V2)
	if _, err := h.Join(context.Background(), "rooms:lobby", s.sess, nil); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 50 {
		want = append(want, fmt.Sprint(i))
		publish(t, pub, want[i])
	}
	if got := waitBodies(t, s, len(want)); !slices.Equal(got, want) {
		t.Fatalf("received %q, want %q", got, want)
	}
}

// What is published while the gateway's NATS connection is down reaches
// its sockets after the reconnect, the case a core subscription loses.
// The room has had no message yet, so the consumer is recreated from the
// sequence the join started at.
func TestCatchUpAfterReconnect(t *testing.T) {
	want := []string{"a", "b", "c"}
	s, _ := whileAway(t, proto.RoomStreamOptions{}, func(pub *nats.Conn) {
		for _, b := range want {
			publish(t, pub, b)
		}
	})
	if got := waitBodies(t, s, len(want)); !slices.Equal(got, want) {
		t.Fatalf("received %q, want %q", got, want)
	}
	select {
	case topic := <-s.lost:
		t.Fatalf("RoomLost(%s) although nothing left the stream", topic)
	default:
	}
}

// When what was published while the gateway was away has already left the
// stream (its limits), the room's sockets are told, to rejoin, rather than
// silently miss it; delivery goes on with what the stream still has.
func TestGapBeyondRetention(t *testing.T) {
	s, listener := whileAway(t, proto.RoomStreamOptions{MaxBytes: 2000}, func(pub *nats.Conn) {
		for i := range 40 { // far more than 2000 bytes
			publish(t, pub, fmt.Sprint(i))
		}
	})
	select {
	case topic := <-s.lost:
		if topic != "rooms:lobby" {
			t.Fatalf("RoomLost(%s)", topic)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no RoomLost after broadcasts left the stream unread")
	}
	// Delivery goes on, in order, with what the stream kept: the newest
	// (to the listener: the member's channel ended with the phx_error).
	var got []string
	for !slices.Contains(got, "39") {
		got = waitBodies(t, listener, 1)
	}
	if len(got) >= 40 || !slices.IsSortedFunc(got, func(a, b string) int { return atoi(a) - atoi(b) }) {
		t.Fatalf("after the gap: %q, want the newest few in order", got)
	}
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// whileAway joins a member to rooms:lobby through a Hub whose NATS server
// then restarts (same port and store), and runs away once the server is
// back but before the Hub has reconnected: what away publishes reaches the
// Hub only through its catch-up. It returns the member, joined as a client
// joins (a lost room ends its channel), and a listener in the room's Hub
// membership only, which a lost room does not end.
func whileAway(t *testing.T, opts proto.RoomStreamOptions, away func(pub *nats.Conn)) (member, listener *sink) {
	t.Helper()
	dir := t.TempDir()
	srv := natstest.Start(t, natstest.Options{StoreDir: dir})
	port := srv.Addr().(*net.TCPAddr).Port
	// A slow reconnect keeps the hub away while away runs.
	hnc := natstest.Connect(t, srv, nats.MaxReconnects(-1), nats.ReconnectWait(2*time.Second), nats.ReconnectJitter(0, 0))
	js, err := jetstream.New(hnc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proto.EnsureRoomStream(context.Background(), js, opts); err != nil {
		t.Fatal(err)
	}
	h, err := New(Options{Conn: hnc, Heartbeat: time.Second, Linger: session.Off, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	rooms := natstest.Connect(t, srv)
	if _, err := rooms.Subscribe(proto.JoinSubject(proto.ServiceRooms), func(m *nats.Msg) {
		data, _ := json.Marshal(proto.OK(nil))
		_ = m.Respond(data)
	}); err != nil {
		t.Fatal(err)
	}
	if err := rooms.Flush(); err != nil {
		t.Fatal(err)
	}
	member = newSink(h, hnc, wire.V2)
	member.join(t, "rooms:lobby")
	listener = newSink(h, nil, wire.V2)
	if _, err := h.Join(context.Background(), "rooms:lobby", listener.sess, nil); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	srv = natstest.Start(t, natstest.Options{StoreDir: dir, Port: port})
	away(natstest.Connect(t, srv))
	if hnc.IsConnected() {
		t.Fatal("the hub reconnected before the publishes; the test proves nothing")
	}
	return member, listener
}

func TestRoomMembers(t *testing.T) {
	subs := make([]*session.Session, 5)
	cfg := &session.Config{Metrics: metrics.New(), Logger: quiet, Gateway: "gw"}
	for i := range subs {
		subs[i], _ = session.New(cfg, &countSink{}, "", "")
	}
	for _, tc := range []struct {
		name   string
		add    []int
		remove []int
	}{
		{"none removed", []int{0, 1, 2}, nil},
		{"first", []int{0, 1, 2}, []int{0}},
		{"last", []int{0, 1, 2}, []int{2}},
		{"all", []int{0, 1, 2, 3, 4}, []int{3, 0, 4, 1, 2}},
		{"twice", []int{0, 0, 1}, []int{1, 1}},
		{"unknown", []int{0}, []int{4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &room{index: map[*session.Session]int{}}
			want := map[*session.Session]bool{}
			for _, i := range tc.add {
				r.add(subs[i], nil)
				want[subs[i]] = true
			}
			for _, i := range tc.remove {
				r.remove(subs[i])
				delete(want, subs[i])
			}
			if len(r.members) != len(want) || len(r.index) != len(want) {
				t.Fatalf("%d members, %d indexed, want %d", len(r.members), len(r.index), len(want))
			}
			for i, m := range r.members {
				if !want[m.s] || r.index[m.s] != i {
					t.Fatalf("member %d: wanted %v, indexed at %d", i, want[m.s], r.index[m.s])
				}
			}
		})
	}
}

// The reader outlives the gateway's last member by Linger: a member
// rejoining within it finds the same reader (and gets what is stored after
// its join); after it, the reader is gone.
func TestLinger(t *testing.T) {
	const linger = 300 * time.Millisecond
	h, pub := newHubLinger(t, linger)
	ctx := context.Background()
	a := newSink(h, nil, wire.V2)
	if _, err := h.Join(ctx, "rooms:lobby", a.sess, nil); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	first := h.feed
	h.mu.Unlock()
	h.Leave("rooms:lobby", a.sess)
	if h.Rooms() != 0 || !h.reading() {
		t.Fatalf("right after the last leave: rooms = %d, reading %v; want 0 and the lingering reader", h.Rooms(), h.reading())
	}
	b := newSink(h, nil, wire.V2)
	if _, err := h.Join(ctx, "rooms:other", b.sess, nil); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	same := h.feed == first
	h.mu.Unlock()
	if !same {
		t.Fatal("a join within the linger started a new reader")
	}
	time.Sleep(2 * linger) // the stopped linger must not end the reader
	publishTo(t, pub, "rooms:other", "after rejoin")
	if got := waitBodies(t, b, 1); !slices.Equal(got, []string{"after rejoin"}) {
		t.Fatalf("rejoined member got %q", got)
	}
	h.Leave("rooms:other", b.sess)
	deadline := time.Now().Add(5 * time.Second)
	for h.reading() {
		if time.Now().After(deadline) {
			t.Fatal("the reader outlived its linger")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A join after that starts a reader again.
	c := newSink(h, nil, wire.V2)
	if _, err := h.Join(ctx, "rooms:lobby", c.sess, nil); err != nil {
		t.Fatal(err)
	}
	publish(t, pub, "again")
	if got := waitBodies(t, c, 1); !slices.Equal(got, []string{"again"}) {
		t.Fatalf("member after a new reader got %q", got)
	}
}

// One reader serves every room, and each room's broadcasts reach only its
// own members, in the order published, however the rooms interleave.
func TestRoomsKeptApart(t *testing.T) {
	h, pub := newHub(t)
	ctx := context.Background()
	topics := []string{"rooms:a", "rooms:b", "rooms:a.b", "rooms:*"} // distinct subjects, no wildcard
	sinks := make([]*sink, len(topics))
	for i, topic := range topics {
		sinks[i] = newSink(h, nil, wire.V2)
		if _, err := h.Join(ctx, topic, sinks[i].sess, nil); err != nil {
			t.Fatal(err)
		}
	}
	if h.Rooms() != len(topics) {
		t.Fatalf("rooms = %d, want %d", h.Rooms(), len(topics))
	}
	publishTo(t, pub, "rooms:nobody-here", "unheard")
	want := make([][]string, len(topics))
	for n := range 10 {
		for i, topic := range topics {
			body := fmt.Sprintf("%s/%d", topic, n)
			want[i] = append(want[i], body)
			publishTo(t, pub, topic, body)
		}
	}
	for i, s := range sinks {
		if got := waitBodies(t, s, len(want[i])); !slices.Equal(got, want[i]) {
			t.Errorf("%s received %q, want %q", topics[i], got, want[i])
		}
	}
	time.Sleep(100 * time.Millisecond) // nothing more may arrive
	for i, s := range sinks {
		if got := bodies(s); len(got) != len(want[i]) {
			t.Errorf("%s received %d frames, want %d: %q", topics[i], len(got), len(want[i]), got)
		}
	}
}

func TestHeartbeatBounds(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t, natstest.Options{NoJetStream: true}))
	for _, tc := range []struct {
		hb time.Duration
		ok bool
	}{
		{0, true}, // the default
		{500 * time.Millisecond, true},
		{30 * time.Second, true},
		{100 * time.Millisecond, false},
		{time.Minute, false},
	} {
		_, err := New(Options{Conn: nc, Heartbeat: tc.hb})
		if (err == nil) != tc.ok {
			t.Errorf("heartbeat %s: err %v, want ok %v", tc.hb, err, tc.ok)
		}
	}
}

// Channels that asked for different things share a room: each gets what it
// asked for, from one encoding per serializer and variant.
func TestJoinParamsPerChannel(t *testing.T) {
	h, pub := newHub(t)
	ctx := context.Background()
	all := session.WantOf([]string{proto.JoinSender, proto.JoinJoins, proto.JoinIgnore})
	plainV2, plainV1 := newSink(h, nil, wire.V2), newSink(h, nil, wire.V1)
	richV2a, richV2b, richV1 := newUserSink(h, wire.V2, "alice"), newSink(h, nil, wire.V2), newSink(h, nil, wire.V1)
	onlyJoins := newSink(h, nil, wire.V2)
	for s, w := range map[*sink]*session.Want{plainV2: nil, plainV1: nil, richV2a: all, richV2b: all, richV1: all, onlyJoins: session.WantOf([]string{"joins"})} {
		if _, err := h.Join(ctx, "rooms:lobby", s.sess, w); err != nil {
			t.Fatal(err)
		}
	}
	js, _ := jetstream.New(pub)
	send := func(b proto.Broadcast) {
		t.Helper()
		if err := proto.PublishBroadcast(ctx, js, "rooms:lobby", b); err != nil {
			t.Fatal(err)
		}
	}
	send(proto.Broadcast{Event: "new_msg", Payload: json.RawMessage(`{"body":"hi"}`), From: "alice"})
	send(proto.Broadcast{Event: "new_msg", Payload: json.RawMessage(`{}`), From: "ignored"})
	send(proto.Broadcast{Event: "user_joined", Payload: json.RawMessage(`{"user_id":"alice"}`), From: "alice", ExcludeFrom: true, OptIn: proto.JoinJoins})
	send(proto.Broadcast{Event: "new_msg", Payload: json.RawMessage(`{"body":"end"}`)})

	frames := func(s *sink, n int) []string {
		t.Helper()
		for range n {
			s.wait(t)
		}
		select {
		case <-s.got:
			t.Fatalf("more than %d frames", n)
		case <-time.After(50 * time.Millisecond):
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		var out []string
		for _, f := range s.frames {
			out = append(out, string(f.Data))
		}
		return out
	}
	const end = `[null,null,"rooms:lobby","new_msg",{"body":"end"}]`
	for _, tc := range []struct {
		name string
		s    *sink
		want []string
	}{
		{"V2 without parameters: the guide's frames", plainV2, []string{
			`[null,null,"rooms:lobby","new_msg",{"body":"hi"}]`,
			`[null,null,"rooms:lobby","new_msg",{}]`, end}},
		{"V1 without parameters", plainV1, []string{
			`{"event":"new_msg","payload":{"body":"hi"},"ref":null,"topic":"rooms:lobby"}`,
			`{"event":"new_msg","payload":{},"ref":null,"topic":"rooms:lobby"}`,
			`{"event":"new_msg","payload":{"body":"end"},"ref":null,"topic":"rooms:lobby"}`}},
		{"alice, everything: her own join is not announced to her, ignored skipped", richV2a, []string{
			`[null,null,"rooms:lobby","new_msg",{"body":"hi","user_id":"alice"}]`, end}},
		{"everything", richV2b, []string{
			`[null,null,"rooms:lobby","new_msg",{"body":"hi","user_id":"alice"}]`,
			`[null,null,"rooms:lobby","user_joined",{"user_id":"alice"}]`, end}},
		{"V1, everything", richV1, []string{
			`{"event":"new_msg","payload":{"body":"hi","user_id":"alice"},"ref":null,"topic":"rooms:lobby"}`,
			`{"event":"user_joined","payload":{"user_id":"alice"},"ref":null,"topic":"rooms:lobby"}`,
			`{"event":"new_msg","payload":{"body":"end"},"ref":null,"topic":"rooms:lobby"}`}},
		{"joins only: no sender, nobody ignored", onlyJoins, []string{
			`[null,null,"rooms:lobby","new_msg",{"body":"hi"}]`,
			`[null,null,"rooms:lobby","new_msg",{}]`,
			`[null,null,"rooms:lobby","user_joined",{"user_id":"alice"}]`, end}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := frames(tc.s, len(tc.want)); !slices.Equal(got, tc.want) {
				t.Fatalf("frames:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
	// Encoded once per serializer and variant.
	if &richV2a.frames[0].Data[0] != &richV2b.frames[0].Data[0] {
		t.Error("two V2 channels asking for the sender got separate encodings")
	}
	if &plainV2.frames[0].Data[0] != &onlyJoins.frames[0].Data[0] {
		t.Error("two V2 channels without the sender got separate encodings")
	}

	// A duplicate join replaces what the channel asked for.
	if _, err := h.Join(ctx, "rooms:lobby", plainV2.sess, session.WantOf([]string{proto.JoinSender})); err != nil {
		t.Fatal(err)
	}
	send(proto.Broadcast{Event: "new_msg", Payload: json.RawMessage(`{"body":"again"}`), From: "bob"})
	if f := plainV2.wait(t); string(f.Data) != `[null,null,"rooms:lobby","new_msg",{"body":"again","user_id":"bob"}]` {
		t.Fatalf("after a rejoin with sender: %s", f.Data)
	}
}

func TestAppendSender(t *testing.T) {
	for _, tc := range []struct{ payload, from, want string }{
		{`{"body":"hi"}`, "alice", `{"body":"hi","user_id":"alice"}`},
		{`{}`, "alice", `{"user_id":"alice"}`},
		{`{ }`, "a", `{"user_id":"a"}`},
		{"{\"a\":1 }\n", "a", `{"a":1,"user_id":"a"}`},
		{`{"body":"x"}`, "<é\"\n>", `{"body":"x","user_id":"<é\"\n>"}`},
		{`{"user_id":"bob"}`, "alice", `{"user_id":"bob"}`},
		{`{"body":{"user_id":"x"},"text":"user_id"}`, "alice", `{"body":{"user_id":"x"},"text":"user_id","user_id":"alice"}`},
	} {
		got := appendSender(nil, []byte(tc.payload), tc.from)
		if string(got) != tc.want {
			t.Errorf("appendSender(%s, %q) = %s, want %s", tc.payload, tc.from, got, tc.want)
		}
		var m map[string]any
		if err := json.Unmarshal(got, &m); err != nil || m["user_id"] != tc.from && !hasKey([]byte(tc.payload), "user_id") {
			t.Errorf("appendSender(%s, %q) = %s: not an object naming the sender (%v)", tc.payload, tc.from, got, err)
		}
	}
}

// FuzzAppendSender: for any valid broadcast payload and sender, the result
// is a JSON object whose user_id is the sender, or the payload as it was
// when it already had a user_id.
func FuzzAppendSender(f *testing.F) {
	f.Add([]byte(`{"body":"hi"}`), "alice")
	f.Add([]byte(`{}`), "")
	f.Add([]byte(` {"user_id":"x"} `), "\x00\xff")
	f.Fuzz(func(t *testing.T, payload []byte, from string) {
		b := proto.Broadcast{Event: "e", Payload: payload}
		if b.Validate() != nil {
			return
		}
		got := appendSender(nil, payload, from)
		var m map[string]json.RawMessage
		if err := json.Unmarshal(got, &m); err != nil {
			t.Fatalf("appendSender(%q, %q) = %q: %v", payload, from, got, err)
		}
		if hasKey(payload, "user_id") {
			if !bytes.Equal(got, payload) {
				t.Fatalf("appendSender(%q, %q) = %q: a payload with a user_id must stay as it is", payload, from, got)
			}
			return
		}
		// Invalid UTF-8 becomes U+FFFD, a byte each, as encoding/json does.
		var user, want string
		quoted, _ := json.Marshal(from)
		_ = json.Unmarshal(quoted, &want)
		if err := json.Unmarshal(m["user_id"], &user); err != nil || user != want {
			t.Fatalf("appendSender(%q, %q): user_id %s", payload, from, m["user_id"])
		}
	})
}

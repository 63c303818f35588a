package system

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phxnats/phxnats/gateway"
	"github.com/phxnats/phxnats/proto"
)

// presenceFrame is a presence_state or presence_diff as a V2 client reads it.
type presenceFrame struct {
	joinRef *string
	event   string
	state   proto.PresenceState // presence_state
	diff    proto.PresenceDiff  // presence_diff
}

// readPresence reads the next frame, which must be a presence frame of topic.
func (c *client) readPresence(topic string) presenceFrame {
	c.t.Helper()
	raw := c.read()
	var arr [5]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &arr); err != nil {
		c.t.Fatalf("not a V2 frame: %s", raw)
	}
	var f presenceFrame
	_ = json.Unmarshal(arr[0], &f.joinRef)
	var ref *string
	var top string
	_ = json.Unmarshal(arr[1], &ref)
	_ = json.Unmarshal(arr[2], &top)
	_ = json.Unmarshal(arr[3], &f.event)
	if ref != nil || top != topic {
		c.t.Fatalf("not a presence frame of %s: %s", topic, raw)
	}
	var err error
	switch f.event {
	case proto.PresenceStateEvent:
		err = json.Unmarshal(arr[4], &f.state)
	case proto.PresenceDiffEvent:
		err = json.Unmarshal(arr[4], &f.diff)
		if f.diff.Joins == nil || f.diff.Leaves == nil {
			c.t.Fatalf("diff without joins or leaves: %s", raw)
		}
	default:
		c.t.Fatalf("not a presence frame: %s", raw)
	}
	if err != nil {
		c.t.Fatalf("bad presence payload %s: %v", raw, err)
	}
	return f
}

// expectState reads presence_state with joinRef and checks the users and
// their number of metas.
func (c *client) expectState(topic, joinRef string, want map[string]int) proto.PresenceState {
	c.t.Helper()
	f := c.readPresence(topic)
	if f.event != proto.PresenceStateEvent || f.joinRef == nil || *f.joinRef != joinRef {
		c.t.Fatalf("want presence_state with join_ref %s, got %+v", joinRef, f)
	}
	checkCounts(c.t, "state", f.state, want)
	return f.state
}

// expectDiff reads presence_diff and checks its joins and leaves.
func (c *client) expectDiff(topic string, joins, leaves map[string]int) proto.PresenceDiff {
	c.t.Helper()
	f := c.readPresence(topic)
	if f.event != proto.PresenceDiffEvent || f.joinRef != nil {
		c.t.Fatalf("want presence_diff with a null join_ref, got %+v", f)
	}
	checkCounts(c.t, "joins", f.diff.Joins, joins)
	checkCounts(c.t, "leaves", f.diff.Leaves, leaves)
	return f.diff
}

var phxRef = regexp.MustCompile(`^[A-Za-z0-9_-]{16}$`)
var onlineAt = regexp.MustCompile(`^[0-9]{10}$`)

func checkCounts(t testing.TB, what string, st proto.PresenceState, want map[string]int) {
	t.Helper()
	got := map[string]int{}
	for user, p := range st {
		got[user] = len(p.Metas)
		for _, m := range p.Metas {
			if !phxRef.MatchString(m.PhxRef) || !onlineAt.MatchString(m.OnlineAt) {
				t.Fatalf("%s: bad meta %+v", what, m)
			}
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: got %v, want %v (%+v)", what, got, want, st)
	}
}

// fastPresence makes presence diffs quick for tests.
func fastPresence(o *gateway.Options) { o.PresenceInterval = 100 * time.Millisecond }

// settle waits past the presence interval, so that the next change is
// flushed at once: a join then finds its own meta in the state the others
// were told, and no diff repeats it to the joiner.
func settle() { time.Sleep(200 * time.Millisecond) }

// joinPresence joins topic with presence (and params) and reads the reply.
func (c *client) joinPresence(topic, ref string) {
	c.t.Helper()
	c.joinWith(topic, ref, `{"presence":true}`)
}

func TestPresenceAcrossTwoGateways(t *testing.T) {
	s := startSystem(t, func(c *Config) { fastPresence(&c.Gateway) })
	gwB := startGateway(t, s, fastPresence)
	const lobby = "rooms:lobby"

	plain := dial(t, s.URL(), url.Values{"token": {token(t, s, "paul")}})
	plain.join(lobby, "1") // no presence: no presence frame, ever

	alice := dial(t, s.URL(), url.Values{"token": {token(t, s, "alice")}})
	alice.joinPresence(lobby, "1")
	alice.expectState(lobby, "1", map[string]int{"alice": 1})

	// bob on the other gateway sees alice; alice sees bob join.
	settle()
	bob := dial(t, gwB.URL, url.Values{"token": {token(t, s, "bob")}})
	bob.joinWith(lobby, "7", `{"sender":true,"presence":true}`) // composes with other keys
	bob.expectState(lobby, "7", map[string]int{"alice": 1, "bob": 1})
	alice.expectDiff(lobby, map[string]int{"bob": 1}, map[string]int{})

	// A second socket of alice, on B: two metas, each its own phx_ref.
	settle()
	alice2 := dial(t, gwB.URL, url.Values{"token": {token(t, s, "alice")}})
	alice2.joinPresence(lobby, "3")
	st := alice2.expectState(lobby, "3", map[string]int{"alice": 2, "bob": 1})
	if refs := st["alice"].Metas; refs[0].PhxRef == refs[1].PhxRef {
		t.Fatalf("two sockets share a phx_ref: %+v", refs)
	}
	alice.expectDiff(lobby, map[string]int{"alice": 1}, map[string]int{})
	bob.expectDiff(lobby, map[string]int{"alice": 1}, map[string]int{})

	// An anonymous socket sees presence and is not tracked.
	anon := dial(t, gwB.URL, nil)
	anon.joinPresence(lobby, "1")
	anon.expectState(lobby, "1", map[string]int{"alice": 2, "bob": 1})

	settle()
	// The second socket leaves: one of alice's metas goes.
	alice2.send(`["3","4","rooms:lobby","phx_leave",{}]`)
	alice2.expect(`["3","4","rooms:lobby","phx_reply",{"response":{},"status":"ok"}]`)
	alice2.expect(`["3","3","rooms:lobby","phx_close",{}]`)
	for _, c := range []*client{alice, bob, anon} {
		c.expectDiff(lobby, map[string]int{}, map[string]int{"alice": 1})
	}

	settle()
	// bob closes his socket: he leaves at once (within the interval).
	bob.ws.Close()
	for _, c := range []*client{alice, anon} {
		c.expectDiff(lobby, map[string]int{}, map[string]int{"bob": 1})
	}

	// Another service reads the room over NATS.
	nc := natsConn(t, s)
	data, _ := json.Marshal(proto.PresenceListRequest{Topic: lobby})
	m, err := nc.Request(proto.SubjectPresenceList, data, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var rep proto.PresenceListReply
	if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Error != "" {
		t.Fatalf("presence list: %s", m.Data)
	}
	checkCounts(t, "list", rep.Presences, map[string]int{"alice": 1})

	plain.quiet(300 * time.Millisecond)
}

// A kick (a revoked membership) takes the socket's presence out.
func TestPresenceKick(t *testing.T) {
	s := startSystem(t, func(c *Config) { fastPresence(&c.Gateway) })
	gwB := startGateway(t, s, fastPresence)
	nc := natsConn(t, s)
	const ops = "rooms:ops"
	grant(t, nc, ops, "carol")
	grant(t, nc, ops, "dave")
	carol := dial(t, s.URL(), url.Values{"token": {token(t, s, "carol")}})
	dave := dial(t, gwB.URL, url.Values{"token": {token(t, s, "dave")}})
	carol.joinPresence(ops, "1")
	carol.expectState(ops, "1", map[string]int{"carol": 1})
	settle()
	dave.joinPresence(ops, "1")
	dave.expectState(ops, "1", map[string]int{"carol": 1, "dave": 1})
	carol.expectDiff(ops, map[string]int{"dave": 1}, map[string]int{})

	settle()
	data, _ := json.Marshal(proto.MembershipRequest{Topic: ops, UserID: "carol"})
	if _, err := nc.Request(proto.SubjectMembersRevoke, data, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	carol.expect(`["1","1","rooms:ops","phx_close",{}]`)
	dave.expectDiff(ops, map[string]int{}, map[string]int{"carol": 1})
	carol.quiet(300 * time.Millisecond) // nothing more for the closed channel
}

// A gateway that stops without a word (its NATS connection gone, nothing
// cleaned up) has its presences removed everywhere within its TTL.
func TestPresenceOfDeadGateway(t *testing.T) {
	s := startSystem(t, func(c *Config) { fastPresence(&c.Gateway) })
	nc := natsConn(t, s)
	g, err := gateway.New(gateway.Options{Conn: nc, Name: "gw-dies", AllowAnonymous: true, PresenceInterval: 100 * time.Millisecond,
		PresenceTTL: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = g.Shutdown(ctx)
	})

	alice := dial(t, s.URL(), url.Values{"token": {token(t, s, "alice")}})
	alice.joinPresence("rooms:lobby", "1")
	alice.expectState("rooms:lobby", "1", map[string]int{"alice": 1})
	settle()
	erin := dial(t, srv.URL, url.Values{"token": {token(t, s, "erin")}})
	erin.joinPresence("rooms:lobby", "1")
	erin.expectState("rooms:lobby", "1", map[string]int{"alice": 1, "erin": 1})
	alice.expectDiff("rooms:lobby", map[string]int{"erin": 1}, map[string]int{})

	// Past a refresh, so the TTL counts from a rewrite, not the join.
	time.Sleep(1500 * time.Millisecond)
	dead := time.Now()
	nc.Close()
	alice.expectDiff("rooms:lobby", map[string]int{}, map[string]int{"erin": 1})
	if took := time.Since(dead); took > 2*time.Second+time.Second {
		t.Fatalf("the dead gateway's presence went after %s, TTL 2s", took)
	}
	t.Logf("dead gateway's presence gone after %s (TTL 2s)", time.Since(dead))
}

// dialQuiet opens a V2 socket with token from any goroutine (nil when it
// cannot).
func dialQuiet(endpoint, token string) *websocket.Conn {
	q := url.Values{"vsn": {"2.0.0"}, "token": {token}}
	ws, _, err := websocket.DefaultDialer.Dial(strings.Replace(endpoint, "http://", "ws://", 1)+"/socket/websocket?"+q.Encode(), nil)
	if err != nil {
		return nil
	}
	return ws
}

// Flapping clients (reconnecting four times a second) cost a room at most
// one diff per interval per gateway, however many flap.
func TestPresenceFlappingIsBatched(t *testing.T) {
	const interval = 500 * time.Millisecond
	const run = 3 * time.Second
	s := startSystem(t, func(c *Config) { c.Gateway.PresenceInterval = interval; noLimits(c) })
	watcher := dial(t, s.URL(), nil)
	watcher.joinPresence("rooms:lobby", "1")
	watcher.expectState("rooms:lobby", "1", map[string]int{})

	tokens := make([]string, 10)
	for i := range tokens {
		tokens[i] = token(t, s, fmt.Sprintf("flapper%d", i))
	}
	stop := time.Now().Add(run)
	done := make(chan int)
	for _, tok := range tokens {
		go func() {
			flaps := 0
			for time.Now().Before(stop) {
				c := dialQuiet(s.URL(), tok)
				if c == nil {
					break
				}
				_ = c.WriteMessage(websocket.TextMessage, []byte(`["1","1","rooms:lobby","phx_join",{"presence":true}]`))
				time.Sleep(250 * time.Millisecond)
				c.Close()
				flaps++
			}
			done <- flaps
		}()
	}
	flaps := 0
	for range tokens {
		flaps += <-done
	}
	// Every flapper has left; read until the last leave.
	diffs, bytes := 0, 0
	deadline := time.Now().Add(run + 3*interval)
	for time.Now().Before(deadline) {
		_ = watcher.ws.SetReadDeadline(time.Now().Add(3 * interval)) // the last leave is out by then
		_, data, err := watcher.ws.ReadMessage()
		if err != nil {
			break
		}
		diffs++
		bytes += len(data)
	}
	// The first diff goes at once, then at most one per interval.
	if max := int((run+3*interval)/interval) + 1; diffs > max {
		t.Fatalf("%d flaps gave %d diffs, more than one per interval (%d)", flaps, diffs, max)
	}
	t.Logf("%d flaps of 10 clients in %s: %d presence_diff frames, %d bytes, to each watching socket (interval %s)", flaps, run, diffs, bytes, interval)
}

// A client that reconnects within the presence interval (a network blip,
// a page reload) to the same gateway takes over the presence its last
// socket left: the room sees no change at all, neither leave nor join,
// and the new socket's state lists it with the same phx_ref. A socket
// that does not come back leaves with the next flush.
func TestPresenceFlapAbsorbed(t *testing.T) {
	const interval = time.Second
	s := startSystem(t, func(c *Config) { c.Gateway.PresenceInterval = interval })
	watcher := dial(t, s.URL(), nil)
	watcher.joinPresence("rooms:lobby", "1")
	watcher.expectState("rooms:lobby", "1", map[string]int{})
	tok := token(t, s, "alice")
	first := dial(t, s.URL(), url.Values{"token": {tok}})
	first.joinPresence("rooms:lobby", "1")
	st := first.expectState("rooms:lobby", "1", map[string]int{"alice": 1})
	watcher.expectDiff("rooms:lobby", map[string]int{"alice": 1}, map[string]int{})

	// The blip: the socket goes, a new one of the same user comes, well
	// within the interval that the watcher's diff just started.
	first.ws.Close()
	again := dial(t, s.URL(), url.Values{"token": {tok}})
	again.joinPresence("rooms:lobby", "1")
	st2 := again.expectState("rooms:lobby", "1", map[string]int{"alice": 1})
	if st2["alice"].Metas[0].PhxRef != st["alice"].Metas[0].PhxRef {
		t.Fatalf("the reconnected socket got a new presence %+v, want the one it had %+v", st2["alice"], st["alice"])
	}
	// Nothing for the watcher for two intervals; then a real leave.
	_ = watcher.ws.SetReadDeadline(time.Now().Add(2 * interval))
	if _, data, err := watcher.ws.ReadMessage(); err == nil {
		t.Fatalf("the room was told of a reconnection: %s", data)
	}
	watcher = dial(t, s.URL(), nil) // a read deadline breaks a gorilla connection
	watcher.joinPresence("rooms:lobby", "2")
	watcher.expectState("rooms:lobby", "2", map[string]int{"alice": 1})
	again.ws.Close()
	watcher.expectDiff("rooms:lobby", map[string]int{}, map[string]int{"alice": 1})
}

package system

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/proto"
)

// histReply is the response of a join that asked for history.
type histReply struct {
	Messages []struct {
		Seq     string          `json:"seq"`
		Event   string          `json:"event"`
		Payload json.RawMessage `json:"payload"`
	} `json:"messages"`
	Seq       string `json:"seq"`
	Recovered bool   `json:"recovered"`
}

// bodies returns the bodies of the reply's new_msg messages.
func (h histReply) bodies() []string {
	var out []string
	for _, m := range h.Messages {
		var p struct{ Body string }
		_ = json.Unmarshal(m.Payload, &p)
		out = append(out, p.Body)
	}
	return out
}

// frame is a V2 frame as a client reads it.
type frame struct {
	JoinRef, Ref *string
	Topic, Event string
	Payload      json.RawMessage
}

func parseFrame(t testing.TB, data string) frame {
	t.Helper()
	if data != "" && data[0] != '[' {
		return frame{Event: "(binary)"} // a V2 binary frame
	}
	var raw []json.RawMessage
	if err := json.Unmarshal([]byte(data), &raw); err != nil || len(raw) != 5 {
		t.Fatalf("not a V2 frame: %s", data)
	}
	var f frame
	_ = json.Unmarshal(raw[0], &f.JoinRef)
	_ = json.Unmarshal(raw[1], &f.Ref)
	_ = json.Unmarshal(raw[2], &f.Topic)
	_ = json.Unmarshal(raw[3], &f.Event)
	f.Payload = raw[4]
	return f
}

// joinHistory joins topic with params and returns the reply's history.
// No frame of the topic may come before the reply.
func (c *client) joinHistory(topic, ref, params string) histReply {
	c.t.Helper()
	c.send(fmt.Sprintf(`[%q,%q,%q,"phx_join",%s]`, ref, ref, topic, params))
	for {
		f := parseFrame(c.t, c.read())
		if f.Topic != topic {
			continue
		}
		if f.Event != "phx_reply" || f.Ref == nil || *f.Ref != ref {
			c.t.Fatalf("%s before the join's reply: %s %s", topic, f.Event, f.Payload)
		}
		var rep struct {
			Status   string
			Response histReply
		}
		if err := json.Unmarshal(f.Payload, &rep); err != nil || rep.Status != "ok" {
			c.t.Fatalf("join %s %s: %s", topic, params, f.Payload)
		}
		return rep.Response
	}
}

// until reads topic's live new_msg frames until one with body: once a
// socket of the gateway got it, the gateway's reader has passed it, and a
// history join that follows has it in its history rather than live.
func (c *client) until(topic, body string) {
	c.t.Helper()
	for {
		if b, _ := c.liveBody(topic); b == body {
			return
		}
	}
}

// liveBody reads topic's next new_msg and returns its body and position.
func (c *client) liveBody(topic string) (body, pos string) {
	c.t.Helper()
	for {
		f := parseFrame(c.t, c.read())
		if f.Topic != topic || f.Event != "new_msg" {
			continue
		}
		var p struct{ Body string }
		_ = json.Unmarshal(f.Payload, &p)
		if f.Ref != nil {
			pos = *f.Ref
		}
		return p.Body, pos
	}
}

func publishBodies(t testing.TB, nc *nats.Conn, topic string, bodies ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, b := range bodies {
		if err := proto.Publish(ctx, nc, topic, "new_msg", map[string]string{"body": b}); err != nil {
			t.Fatal(err)
		}
	}
}

func seqOf(t testing.TB, pos string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(pos, 10, 64)
	if err != nil {
		t.Fatalf("position %q: %v", pos, err)
	}
	return n
}

func equal(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// publicRooms makes the rooms:pub-* topics public, as rooms:lobby.
func publicRooms(c *Config) { c.Rooms.PublicTopics = []string{"rooms:pub-*"} }

// A join with {"history": {"last": N}} gets the room's last N messages,
// oldest first, then the live ones, each with its position as ref; a
// rejoin with {"since": pos} gets exactly what followed pos. A socket
// without history in the same room sees the guide's frames only.
func TestHistoryLastSinceAndLive(t *testing.T) {
	s := startSystem(t, publicRooms)
	nc := natsConn(t, s)
	const topic = "rooms:pub-hist"
	publishBodies(t, nc, topic, "m1", "m2", "m3", "m4", "m5")

	plain := dial(t, s.URL(), nil)
	plain.join(topic, "1")
	c := dial(t, s.URL(), nil)
	h := c.joinHistory(topic, "1", `{"history":{"last":3}}`)
	if !equal(h.bodies(), []string{"m3", "m4", "m5"}) || !h.Recovered {
		t.Fatalf("last 3: %+v", h)
	}
	for i := 1; i < len(h.Messages); i++ {
		if seqOf(t, h.Messages[i].Seq) <= seqOf(t, h.Messages[i-1].Seq) || h.Messages[i].Event != "new_msg" {
			t.Fatalf("messages out of order: %+v", h.Messages)
		}
	}
	if seqOf(t, h.Seq) < seqOf(t, h.Messages[2].Seq) {
		t.Fatalf("resume position %s before the last message %s", h.Seq, h.Messages[2].Seq)
	}
	m3 := h.Messages[0].Seq

	publishBodies(t, nc, topic, "m6")
	body, pos := c.liveBody(topic)
	if body != "m6" || seqOf(t, pos) <= seqOf(t, h.Seq) {
		t.Fatalf("live after history: %q at %q (history ended at %s)", body, pos, h.Seq)
	}
	plain.expect(`[null,null,"rooms:pub-hist","new_msg",{"body":"m6"}]`)

	// Resume from m3: m4, m5, m6, nothing lost.
	r := dial(t, s.URL(), nil)
	h2 := r.joinHistory(topic, "1", fmt.Sprintf(`{"history":{"since":%q}}`, m3))
	if !equal(h2.bodies(), []string{"m4", "m5", "m6"}) || !h2.Recovered || h2.Messages[2].Seq != pos {
		t.Fatalf("since m3: %+v", h2)
	}
	// From the end: nothing, recovered; a number works as well as the string.
	h3 := r.joinHistory(topic, "2", fmt.Sprintf(`{"history":{"since":%s}}`, h2.Seq))
	if len(h3.Messages) != 0 || !h3.Recovered || h3.Seq != h2.Seq {
		t.Fatalf("since the end: %+v", h3)
	}
}

// What the join asked for applies to its history too: without "sender"
// no user_id, without "joins" no user_joined.
func TestHistoryKeepsJoinParams(t *testing.T) {
	s := startSystem(t, nil)
	tok := token(t, s, "alice")
	a := dial(t, s.URL(), url.Values{"token": {tok}})
	a.join("rooms:lobby", "1")
	a.send(`["1","2","rooms:lobby","new_msg",{"body":"hi"}]`)
	a.expect(`[null,null,"rooms:lobby","new_msg",{"body":"hi"}]`) // the guide's new_msg has no reply

	c := dial(t, s.URL(), nil)
	h := c.joinHistory("rooms:lobby", "1", `{"history":{"last":10}}`)
	if len(h.Messages) != 1 || string(h.Messages[0].Payload) != `{"body":"hi"}` {
		t.Fatalf("plain history: %+v", h)
	}
	h = c.joinHistory("rooms:lobby", "2", `{"history":{"last":10},"sender":true}`)
	if len(h.Messages) != 1 || string(h.Messages[0].Payload) != `{"body":"hi","user_id":"alice"}` {
		t.Fatalf("history with sender: %+v", h)
	}
}

// Bad history parameters are refused with a reason; a private room's
// history is its members'.
func TestHistoryRefusals(t *testing.T) {
	s := startSystem(t, nil)
	c := dial(t, s.URL(), nil)
	for _, params := range []string{`{"history":{"last":0}}`, `{"history":{"since":"x"}}`, `{"history":7}`, `{"history":{}}`} {
		c.send(fmt.Sprintf(`["1","1","rooms:lobby","phx_join",%s]`, params))
		c.expect(fmt.Sprintf(`["1","1","rooms:lobby","phx_reply",{"response":{"reason":%q},"status":"error"}]`, proto.ErrBadHistory.Error()))
	}
	c.send(`["2","2","rooms:secret","phx_join",{"history":{"last":5}}]`)
	c.expect(`["2","2","rooms:secret","phx_reply",{"response":{"reason":"unauthorized"},"status":"error"}]`)
}

// Retention that dropped messages after "since" is told: recovered false,
// with every message the room still has; a position the room's bound has
// not passed recovers.
func TestHistoryRecoveredFalse(t *testing.T) {
	s := startSystem(t, func(c *Config) { publicRooms(c); c.Store.History.MaxMsgsPerRoom = 5 })
	nc := natsConn(t, s)
	const topic = "rooms:pub-short"
	publishBodies(t, nc, topic, "m1")
	c := dial(t, s.URL(), nil)
	first := c.joinHistory(topic, "1", `{"history":{"last":1}}`).Messages[0].Seq
	publishBodies(t, nc, topic, "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10")
	c.until(topic, "m10")
	// Each join below on a socket of its own: c's channel gets live broadcasts.
	h := dial(t, s.URL(), nil).joinHistory(topic, "2", fmt.Sprintf(`{"history":{"since":%q}}`, first))
	if h.Recovered || !equal(h.bodies(), []string{"m6", "m7", "m8", "m9", "m10"}) {
		t.Fatalf("since m1 with 5 kept: %+v", h)
	}
	h2 := dial(t, s.URL(), nil).joinHistory(topic, "3", fmt.Sprintf(`{"history":{"since":%q}}`, h.Messages[0].Seq))
	if !h2.Recovered || !equal(h2.bodies(), []string{"m7", "m8", "m9", "m10"}) {
		t.Fatalf("since m6: %+v", h2)
	}
	// A binary broadcast cannot be replayed in JSON: left out, and said.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := proto.PublishBinary(ctx, nc, topic, "blob", []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	publishBodies(t, nc, topic, "m11")
	c.until(topic, "m11")
	h3 := dial(t, s.URL(), nil).joinHistory(topic, "4", fmt.Sprintf(`{"history":{"since":%q}}`, h.Messages[4].Seq))
	if h3.Recovered || !equal(h3.bodies(), []string{"m11"}) {
		t.Fatalf("since m10 past a binary broadcast: %+v", h3)
	}
}

// Positions survive a restart of the one-process system on its data
// folder: a client resumes from where it was.
func TestHistoryAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	keep := func(c *Config) { publicRooms(c); c.DataDir = dir; c.Store.History.MaxMsgsPerRoom = 5 }
	s := startSystem(t, keep)
	nc := natsConn(t, s)
	const topic, other = "rooms:pub-restart", "rooms:pub-other"
	publishBodies(t, nc, topic, "a")
	f := dial(t, s.URL(), nil)
	first := f.joinHistory(topic, "1", `{"history":{"last":1}}`).Messages[0].Seq
	// Seven in another room, five kept: its bound leaves a hole in the
	// stream after "a", which is no loss of this room.
	publishBodies(t, nc, other, "o1", "o2", "o3", "o4", "o5", "o6", "o7")
	publishBodies(t, nc, topic, "b", "c")
	f.until(topic, "c")
	h := dial(t, s.URL(), nil).joinHistory(topic, "1", `{"history":{"last":5}}`)
	if !equal(h.bodies(), []string{"a", "b", "c"}) {
		t.Fatalf("before the restart: %+v", h)
	}
	nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	s2 := startSystem(t, keep)
	publishBodies(t, natsConn(t, s2), topic, "d")
	for _, tc := range []struct {
		topic, since string
		want         []string
		recovered    bool
	}{
		{topic, h.Seq, []string{"d"}, true},
		{topic, first, []string{"b", "c", "d"}, true},
		{other, "0", []string{"o3", "o4", "o5", "o6", "o7"}, false}, // o1, o2 dropped
	} {
		h2 := dial(t, s2.URL(), nil).joinHistory(tc.topic, "1", fmt.Sprintf(`{"history":{"since":%q}}`, tc.since))
		if h2.Recovered != tc.recovered || !equal(h2.bodies(), tc.want) {
			t.Fatalf("after a restart, %s since %s: %+v, want %q recovered %v (data in %s)", tc.topic, tc.since, h2, tc.want, tc.recovered, filepath.Base(dir))
		}
	}
}

// History and live broadcasts meet without a gap or a duplicate while the
// room is busy: sockets join with history in the middle of a stream of
// numbered messages, and each sees every number from its history's first
// to the last, once, in order.
func TestHistoryNoGapUnderLoad(t *testing.T) {
	s := startSystem(t, func(c *Config) { noLimits(c); publicRooms(c) })
	nc := natsConn(t, s)
	const topic = "rooms:pub-busy"
	const total = 1500
	const joiners = 12
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for i := 1; i <= total; i++ {
			if i%10 == 0 {
				time.Sleep(5 * time.Millisecond) // some 2,000 a second: busy, not a flood
			}
			if err := proto.Publish(ctx, nc, topic, "new_msg", map[string]string{"body": strconv.Itoa(i)}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for j := range joiners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(j) * 60 * time.Millisecond)
			c := dial(t, s.URL(), nil)
			params := `{"history":{"last":50}}`
			if j%2 == 1 {
				params = `{"history":{"since":"0"}}`
			}
			h := c.joinHistory(topic, "1", params)
			var got []int
			for _, b := range h.bodies() {
				n, _ := strconv.Atoi(b)
				got = append(got, n)
			}
			last := seqOf(t, h.Seq)
			for len(got) == 0 || got[len(got)-1] < total {
				b, pos := c.liveBody(topic)
				if p := seqOf(t, pos); p <= last {
					t.Errorf("joiner %d: live position %d not after %d", j, p, last)
				} else {
					last = p
				}
				n, _ := strconv.Atoi(b)
				got = append(got, n)
			}
			for i := 1; i < len(got); i++ {
				if got[i] != got[i-1]+1 {
					t.Errorf("joiner %d (%s): %d then %d (history had %d)", j, params, got[i-1], got[i], len(h.Messages))
					return
				}
			}
		}()
	}
	wg.Wait()
	<-done
}

// A position the room stream has not reached (made up, or kept from a
// stream since recreated) is no place to resume from: resuming after it
// would skip every broadcast up to it. The join gets what the room keeps,
// recovered false, and then every live broadcast.
func TestHistoryFuturePosition(t *testing.T) {
	s := startSystem(t, publicRooms)
	nc := natsConn(t, s)
	const topic = "rooms:pub-future"
	publishBodies(t, nc, topic, "a", "b")
	c := dial(t, s.URL(), nil)
	h := c.joinHistory(topic, "1", `{"history":{"since":"99999999"}}`)
	if h.Recovered || !equal(h.bodies(), []string{"a", "b"}) || seqOf(t, h.Seq) >= 99999999 {
		t.Fatalf("since a future position: %+v", h)
	}
	publishBodies(t, nc, topic, "c")
	if body, _ := c.liveBody(topic); body != "c" {
		t.Fatalf("live after a future position: %q", body)
	}
}

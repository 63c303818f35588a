package session_test

import (
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/phxnats/phxnats/gateway/internal/gwtest"
	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
)

// fakeTransport records what its session sends.
type fakeTransport struct {
	ser    wire.Serializer
	mu     sync.Mutex
	frames []string
	closed []session.Disconnect
	// before, when set, runs in Deliver before the frame is recorded,
	// outside the lock: another goroutine's act racing the send.
	before func(fr session.Frame)
}

func (f *fakeTransport) Serializer() wire.Serializer { return f.ser }
func (f *fakeTransport) Deliver(fr session.Frame) {
	f.mu.Lock()
	before := f.before
	f.mu.Unlock()
	if before != nil {
		before(fr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frames = append(f.frames, string(fr.Data))
}
func (f *fakeTransport) Close(d session.Disconnect) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = append(f.closed, d)
}

// take returns and forgets what was sent so far.
func (f *fakeTransport) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.frames
	f.frames = nil
	return out
}

// newSession starts the stand-in services and a session of user "alice"
// speaking ser, after cfg changes the shared configuration.
func newSession(t *testing.T, ser wire.Serializer, change func(cfg *session.Config)) (*session.Session, *fakeTransport, *gwtest.Env) {
	t.Helper()
	t.Parallel()
	e := gwtest.New(t)
	if change != nil {
		change(e.Session)
	}
	tr := &fakeTransport{ser: ser}
	s, ok := session.New(e.Session, tr, "alice", "")
	if !ok {
		t.Fatal("session refused")
	}
	t.Cleanup(s.End)
	return s, tr, e
}

// handle gives m to s and waits until it has been handled.
func handle(s *session.Session, m wire.Message) {
	s.HandleMessage(m)
	s.Wait()
}

func msg(joinRef, ref, topic, event, payload string) wire.Message {
	return wire.Message{JoinRef: joinRef, Ref: ref, Topic: topic, Event: event, Payload: []byte(payload)}
}

func expect(t *testing.T, tr *fakeTransport, want ...string) {
	t.Helper()
	if got := tr.take(); !slices.Equal(got, want) {
		t.Fatalf("sent:\n%q\nwant:\n%q", got, want)
	}
}

const okReply = `{"response":{},"status":"ok"}]`

func TestJoinLeave(t *testing.T) {
	s, tr, e := newSession(t, wire.V2, nil)
	handle(s, msg("1", "1", "rooms:a", "phx_join", `{}`))
	expect(t, tr, `["1","1","rooms:a","phx_reply",`+okReply)
	if e.Hub.Rooms() != 1 {
		t.Fatalf("rooms %d after the join", e.Hub.Rooms())
	}
	handle(s, msg("1", "2", "rooms:a", "phx_leave", `{}`))
	expect(t, tr, `["1","2","rooms:a","phx_reply",`+okReply, `["1","1","rooms:a","phx_close",{}]`)
	if e.Hub.Rooms() != 0 {
		t.Fatalf("rooms %d after the leave", e.Hub.Rooms())
	}
	// Phoenix replies ok to a leave of a topic that is not joined.
	handle(s, msg("1", "3", "rooms:a", "phx_leave", `{}`))
	expect(t, tr, `["1","3","rooms:a","phx_reply",`+okReply)
}

// A second join of a joined topic is answered, then the old channel gets
// its phx_close; the socket never leaves the room meanwhile.
func TestDuplicateJoin(t *testing.T) {
	s, tr, e := newSession(t, wire.V2, nil)
	handle(s, msg("1", "1", "rooms:a", "phx_join", `{}`))
	handle(s, msg("5", "5", "rooms:a", "phx_join", `{}`))
	expect(t, tr, `["1","1","rooms:a","phx_reply",`+okReply, `["5","5","rooms:a","phx_reply",`+okReply, `["1","1","rooms:a","phx_close",{}]`)
	if e.Hub.Rooms() != 1 {
		t.Fatalf("rooms %d", e.Hub.Rooms())
	}
	// The push is answered with the new channel's join_ref.
	handle(s, msg("1", "6", "rooms:a", "new_msg", `{"body":"hi"}`))
	expect(t, tr, `["5","6","rooms:a","phx_reply",`+okReply)
}

func TestUnmatchedTopic(t *testing.T) {
	const unmatched = `{"response":{"reason":"unmatched topic"},"status":"error"}]`
	s, tr, e := newSession(t, wire.V2, nil)
	for _, tc := range []struct {
		name string
		m    wire.Message
		want string
	}{
		{"join without a route", msg("1", "1", "other:a", "phx_join", `{}`), `[null,"1","other:a","phx_reply",` + unmatched},
		{"join of the phoenix topic", msg("2", "2", "phoenix", "phx_join", `{}`), `[null,"2","phoenix","phx_reply",` + unmatched},
		{"push before a join", msg("3", "3", "rooms:a", "new_msg", `{}`), `[null,"3","rooms:a","phx_reply",` + unmatched},
	} {
		handle(s, tc.m)
		if got := tr.take(); len(got) != 1 || got[0] != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	if e.Hub.Rooms() != 0 {
		t.Fatalf("rooms %d", e.Hub.Rooms())
	}
}

// Frames over the rate limit are refused at the edge; heartbeats pass.
func TestRateLimit(t *testing.T) {
	s, tr, _ := newSession(t, wire.V2, func(cfg *session.Config) { cfg.RateLimit, cfg.RateBurst = 0.001, 2 })
	handle(s, msg("1", "1", "rooms:a", "phx_join", `{}`))
	handle(s, msg("1", "2", "rooms:a", "new_msg", `{}`))
	handle(s, msg("1", "3", "rooms:a", "new_msg", `{}`))
	handle(s, msg("", "4", "phoenix", "heartbeat", `{}`))
	expect(t, tr,
		`["1","1","rooms:a","phx_reply",`+okReply,
		`["1","2","rooms:a","phx_reply",`+okReply,
		`["1","3","rooms:a","phx_reply",{"response":{"reason":"rate limit exceeded"},"status":"error"}]`,
		`[null,"4","phoenix","phx_reply",`+okReply)
}

func TestKick(t *testing.T) {
	s, tr, e := newSession(t, wire.V2, nil)
	handle(s, msg("1", "1", "rooms:a", "phx_join", `{}`))
	tr.take()
	if !s.Kick("rooms:a") {
		t.Fatal("kick of a joined topic reported false")
	}
	expect(t, tr, `["1","1","rooms:a","phx_close",{}]`)
	if e.Hub.Rooms() != 0 {
		t.Fatalf("rooms %d after the kick", e.Hub.Rooms())
	}
	if s.Kick("rooms:a") {
		t.Fatal("second kick reported true")
	}
	expect(t, tr)
	// A kick through the registry reaches the user's sessions.
	handle(s, msg("2", "2", "rooms:b", "phx_join", `{}`))
	tr.take()
	if n := e.Registry.Kick("alice", "rooms:b"); n != 1 {
		t.Fatalf("registry kicked %d sessions", n)
	}
	expect(t, tr, `["2","2","rooms:b","phx_close",{}]`)
	e.Registry.Disconnect("alice")
	if len(tr.closed) != 1 || tr.closed[0] != session.DisconnectUser {
		t.Fatalf("closes %+v", tr.closed)
	}
}

// A binary reply reaches a client that cannot carry bytes as an error
// reply (binary.go), and a binary broadcast as the event with an error;
// a V2 WebSocket gets the bytes.
func TestBinaryRefused(t *testing.T) {
	const lp = "binary payloads are not supported over long-poll"
	const v1 = "binary payloads need the V2 serializer (vsn=2.0.0)"
	for _, tc := range []struct {
		name         string
		ser          wire.Serializer
		reply, bcast string // "" when the frame is binary
	}{
		{"V2", wire.V2, "", ""},
		{"V1", wire.V1,
			`{"event":"phx_reply","payload":{"response":{"reason":"` + v1 + `"},"status":"error"},"ref":"1","topic":"bin:a"}`,
			`{"event":"blob","payload":{"error":"` + v1 + `"},"ref":null,"topic":"bin:a"}`},
		{"long-poll", session.TextOnly(wire.V2, lp),
			`["1","1","bin:a","phx_reply",{"response":{"reason":"` + lp + `"},"status":"error"}]`,
			`[null,null,"bin:a","blob",{"error":"` + lp + `"}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, tr, e := newSession(t, tc.ser, func(cfg *session.Config) {
				cfg.Routes = []session.Route{{Pattern: "bin:*", Service: "bin"}}
			})
			gwtest.Respond(t, e.Services, proto.JoinSubject("bin"), func([]byte) any {
				return proto.Reply{Status: proto.StatusOK, Binary: []byte{1, 2}}
			})
			if err := e.Services.Flush(); err != nil {
				t.Fatal(err)
			}
			handle(s, msg("1", "1", "bin:a", "phx_join", `{}`))
			got := tr.take()
			if len(got) != 1 || (tc.reply == "") != (got[0][0] == 1) || (tc.reply != "" && got[0] != tc.reply) {
				t.Fatalf("reply %q\nwant  %q", got, tc.reply)
			}
			data, bin, err := session.AppendBroadcast(nil, tc.ser, "bin:a", "blob", []byte{1, 2}, true)
			if err != nil || bin != (tc.bcast == "") || (!bin && string(data) != tc.bcast) {
				t.Fatalf("broadcast %q binary %v err %v\nwant %q", data, bin, err, tc.bcast)
			}
		})
	}
}

// A private room's service asks for a confirmation (proto.Reply.Confirm):
// the session asks again once the socket is in the room, and a refusal
// then takes it out and is what the client gets.
func TestConfirmedJoin(t *testing.T) {
	var kick func(topic string)
	s, tr, e := newSession(t, wire.V2, func(cfg *session.Config) {
		cfg.Routes = append(cfg.Routes, session.Route{Pattern: "private:*", Service: "priv"})
	})
	gwtest.Respond(t, e.Services, proto.JoinSubject("priv"), func([]byte) any {
		return proto.Reply{Status: proto.StatusOK, Confirm: true}
	})
	gwtest.Respond(t, e.Services, proto.JoinedSubject("priv"), func(b []byte) any {
		var req proto.JoinRequest
		_ = json.Unmarshal(b, &req)
		switch req.Topic {
		case "private:revoked":
			return proto.Error("unauthorized")
		case "private:kicked":
			kick(req.Topic) // the revoke's kick arrives while the join is on its way
		}
		return proto.OK(nil)
	})
	if err := e.Services.Flush(); err != nil { // the stand-ins listen before the first join
		t.Fatal(err)
	}
	kick = func(topic string) {
		if !s.Kick(topic) {
			t.Errorf("Kick(%s) during its join reported no channel", topic)
		}
	}
	const unauthorized = `{"response":{"reason":"unauthorized"},"status":"error"}]`
	for _, tc := range []struct {
		topic, want string
		rooms       int
	}{
		{"private:ok", `["1","1","private:ok","phx_reply",` + okReply, 1},
		{"private:revoked", `["2","2","private:revoked","phx_reply",` + unauthorized, 1},
		{"private:kicked", `["3","3","private:kicked","phx_reply",` + unauthorized, 1},
	} {
		ref := tc.want[2:3]
		handle(s, msg(ref, ref, tc.topic, "phx_join", `{}`))
		expect(t, tr, tc.want)
		if e.Hub.Rooms() != tc.rooms {
			t.Fatalf("%s: %d rooms, want %d (the refused join must leave its room)", tc.topic, e.Hub.Rooms(), tc.rooms)
		}
	}
	// The refused channels are not joined: a push is unmatched, a kick finds nothing.
	handle(s, msg("3", "4", "private:kicked", "new_msg", `{}`))
	expect(t, tr, `[null,"4","private:kicked","phx_reply",{"response":{"reason":"unmatched topic"},"status":"error"}]`)
	if s.Kick("private:kicked") {
		t.Fatal("a kick found the refused channel")
	}
}

// A kick (or a lost room) that lands while the join's reply is being sent
// is what the client learns next: the reply, then phx_close (phx_error),
// never the close first, which phoenix.js would drop as the frame of a
// channel not yet joined, leaving it joined to a room it is out of.
func TestEndedDuringJoinReply(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(s *session.Session, topic string) bool
		want string
	}{
		{"kick", (*session.Session).Kick, `["1","1","rooms:a","phx_close",{}]`},
		{"lost room", (*session.Session).ChannelError, `["1","1","rooms:a","phx_error",{}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, tr, e := newSession(t, wire.V2, nil)
			var ended atomic.Bool
			tr.before = func(fr session.Frame) {
				if ended.CompareAndSwap(false, true) && !tc.end(s, "rooms:a") {
					t.Error("the join on its way was not found")
				}
			}
			handle(s, msg("1", "1", "rooms:a", "phx_join", `{}`))
			expect(t, tr, `["1","1","rooms:a","phx_reply",`+okReply, tc.want)
			if e.Hub.Rooms() != 0 {
				t.Fatalf("rooms %d: the ended join stayed in its room", e.Hub.Rooms())
			}
			// Not joined: a push is unmatched.
			handle(s, msg("1", "2", "rooms:a", "new_msg", `{"body":"x"}`))
			expect(t, tr, `[null,"2","rooms:a","phx_reply",{"response":{"reason":"unmatched topic"},"status":"error"}]`)
		})
	}
}

func TestIgnoreUpdates(t *testing.T) {
	s, _, _ := newSession(t, wire.V2, nil)
	check := func(step string, ignored ...string) {
		t.Helper()
		for _, u := range []string{"bob", "carol", "dave"} {
			if got, want := s.Skips(u, false, true), slices.Contains(ignored, u); got != want {
				t.Errorf("%s: Skips(%s) = %v, want %v", step, u, got, want)
			}
			if s.Skips(u, false, false) {
				t.Errorf("%s: Skips(%s) without the channel's ignore = true", step, u)
			}
		}
	}
	s.SetIgnored([]string{"bob", "carol"})
	check("whole list", "bob", "carol")
	s.UpdateIgnored(&proto.IgnoreUpdate{Add: []string{"dave"}, Remove: []string{"bob"}})
	check("diff", "carol", "dave")
	s.UpdateIgnored(&proto.IgnoreUpdate{Ignored: []string{"bob"}})
	check("replaced", "bob")
	s.SetIgnored(nil)
	check("cleared")
	if !s.Skips("alice", true, false) {
		t.Error("a broadcast excluding its sender reached the sender's socket")
	}
}

// After a NATS reconnect the gateway asks again for the channels whose
// joins were confirmed (a kick sent meanwhile was lost): a refusal now
// ends the channel with phx_close, as the lost kick would have.
func TestReconfirm(t *testing.T) {
	var revoked, storeDown atomic.Bool
	s, tr, e := newSession(t, wire.V2, func(cfg *session.Config) {
		cfg.Routes = append(cfg.Routes, session.Route{Pattern: "private:*", Service: "priv"})
	})
	gwtest.Respond(t, e.Services, proto.JoinSubject("priv"), func([]byte) any {
		return proto.Reply{Status: proto.StatusOK, Confirm: true}
	})
	gwtest.Respond(t, e.Services, proto.JoinedSubject("priv"), func([]byte) any {
		switch {
		case storeDown.Load():
			return proto.Error("membership store unavailable")
		case revoked.Load():
			return proto.Error("unauthorized")
		}
		return proto.OK(nil)
	})
	if err := e.Services.Flush(); err != nil {
		t.Fatal(err)
	}
	s.HandleMessage(msg("1", "1", "private:a", "phx_join", `{}`))
	s.HandleMessage(msg("2", "2", "rooms:b", "phx_join", `{}`)) // not confirmed: never asked again
	s.Wait()
	expect(t, tr, `["1","1","private:a","phx_reply",`+okReply, `["2","2","rooms:b","phx_reply",`+okReply)
	if n, u := s.Reconfirm(); n != 0 || u != 0 {
		t.Fatalf("Reconfirm kicked %d (%d unanswered) while still a member", n, u)
	}
	expect(t, tr)
	// A service that cannot tell (its store electing a leader after the
	// same NATS failure) ends nothing: the registry asks again later.
	storeDown.Store(true)
	if n, u := s.Reconfirm(); n != 0 || u != 1 {
		t.Fatalf("Reconfirm with the store down: kicked %d, unanswered %d; want 0, 1", n, u)
	}
	expect(t, tr)
	storeDown.Store(false)
	revoked.Store(true)
	if n, u := s.Reconfirm(); n != 1 || u != 0 {
		t.Fatalf("Reconfirm kicked %d (%d unanswered) after the revoke, want 1", n, u)
	}
	expect(t, tr, `["1","1","private:a","phx_close",{}]`)
	if e.Hub.Rooms() != 1 {
		t.Fatalf("%d rooms, want rooms:b alone", e.Hub.Rooms())
	}
}

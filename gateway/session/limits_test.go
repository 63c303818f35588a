package session_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/gateway/internal/gwtest"
	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
)

const rateLimited = `{"response":{"reason":"rate limit exceeded"},"status":"error"}]`

// The budgets of a user (across its sockets) and of a client address
// (across every socket from it) are shared; another user or address has
// its own. Heartbeats are never counted.
func TestSharedBudgets(t *testing.T) {
	s, tr, e := newSession(t, wire.V2, func(cfg *session.Config) {
		cfg.UserRateLimit, cfg.UserRateBurst = 0.001, 2
		cfg.AddrRateLimit, cfg.AddrRateBurst = 0.001, 2
	})
	other := func(user, addr string) (*session.Session, *fakeTransport) {
		tr := &fakeTransport{ser: wire.V2}
		s, _ := session.New(e.Session, tr, user, addr)
		t.Cleanup(s.End)
		return s, tr
	}
	// s is alice with no address; a second socket of alice, from 10.0.0.1.
	s2, tr2 := other("alice", "10.0.0.1")
	handle(s, msg("1", "1", "rooms:a", "phx_join", `{}`))
	handle(s2, msg("1", "1", "rooms:a", "phx_join", `{}`))
	handle(s, msg("1", "2", "rooms:a", "new_msg", `{}`)) // alice's third frame
	handle(s, msg("", "3", "phoenix", "heartbeat", `{}`))
	expect(t, tr, `["1","1","rooms:a","phx_reply",`+okReply,
		`["1","2","rooms:a","phx_reply",`+rateLimited,
		`[null,"3","phoenix","phx_reply",`+okReply)
	expect(t, tr2, `["1","1","rooms:a","phx_reply",`+okReply)
	// bob from the same address shares its budget (one frame left), not alice's.
	s3, tr3 := other("bob", "10.0.0.1")
	handle(s3, msg("1", "1", "rooms:a", "phx_join", `{}`))
	handle(s3, msg("1", "2", "rooms:a", "new_msg", `{}`))
	expect(t, tr3, `["1","1","rooms:a","phx_reply",`+okReply, `["1","2","rooms:a","phx_reply",`+rateLimited)
	// carol from elsewhere has budgets of her own.
	s4, tr4 := other("carol", "10.0.0.2")
	handle(s4, msg("1", "1", "rooms:a", "phx_join", `{}`))
	handle(s4, msg("1", "2", "rooms:a", "new_msg", `{}`))
	expect(t, tr4, `["1","1","rooms:a","phx_reply",`+okReply, `["1","2","rooms:a","phx_reply",`+okReply)
	// A budget outlives neither its last socket: alice's next socket, the
	// others gone, starts afresh.
	s.End()
	s2.End()
	s5, tr5 := other("alice", "10.0.0.3")
	handle(s5, msg("1", "1", "rooms:a", "phx_join", `{}`))
	expect(t, tr5, `["1","1","rooms:a","phx_reply",`+okReply)
}

// slowPushes routes "slow:*" to a service that admits joins at once and
// answers each push after the delay its payload names in milliseconds,
// and returns the deadline header every push carried.
func slowPushes(t *testing.T, nc *nats.Conn) chan string {
	t.Helper()
	deadlines := make(chan string, 100)
	gwtest.Respond(t, nc, proto.JoinSubject("slow"), func([]byte) any { return proto.OK(nil) })
	if _, err := nc.Subscribe(proto.PushSubject("slow"), func(m *nats.Msg) {
		deadlines <- m.Header.Get(proto.DeadlineHeader)
		var req proto.PushRequest
		_ = json.Unmarshal(m.Data, &req)
		var p struct{ Ms int }
		_ = json.Unmarshal(req.Payload, &p)
		go func() {
			time.Sleep(time.Duration(p.Ms) * time.Millisecond)
			data, _ := json.Marshal(proto.OK(nil))
			_ = m.Respond(data)
		}()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return deadlines
}

func slowRoute(cfg *session.Config) {
	cfg.Routes = append(cfg.Routes, session.Route{Pattern: "slow:*", Service: "slow"})
}

// waitFrames waits until tr has n frames and returns them.
func waitFrames(t *testing.T, tr *fakeTransport, n int, within time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		tr.mu.Lock()
		got := len(tr.frames)
		tr.mu.Unlock()
		if got >= n {
			return tr.take()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d frames after %v, want %d: %q", got, within, n, tr.take())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// A heartbeat is answered at once while a push waits on a slow service,
// as Phoenix answers it in the socket process; the channel's frames keep
// their order behind it.
func TestHeartbeatNotBehindPushes(t *testing.T) {
	s, tr, e := newSession(t, wire.V2, slowRoute)
	slowPushes(t, e.Services)
	handle(s, msg("1", "1", "slow:a", "phx_join", `{}`))
	tr.take()
	s.HandleMessage(msg("1", "2", "slow:a", "new_msg", `{"ms":800}`))
	s.HandleMessage(msg("1", "3", "slow:a", "new_msg", `{"ms":0}`))
	s.HandleMessage(msg("", "4", "phoenix", "heartbeat", `{}`))
	if got := waitFrames(t, tr, 1, 300*time.Millisecond); got[0] != `[null,"4","phoenix","phx_reply",`+okReply {
		t.Fatalf("first frame %q, want the heartbeat's reply", got)
	}
	got := waitFrames(t, tr, 2, 3*time.Second)
	if !strings.Contains(got[0], `"2","slow:a"`) || !strings.Contains(got[1], `"3","slow:a"`) {
		t.Fatalf("push replies out of order: %q", got)
	}
}

// Frames waiting behind a slow one are bounded (Config.MaxPending); one
// over the bound is refused at once.
func TestPendingBound(t *testing.T) {
	s, tr, e := newSession(t, wire.V2, func(cfg *session.Config) {
		slowRoute(cfg)
		cfg.MaxPending = 2
	})
	slowPushes(t, e.Services)
	handle(s, msg("1", "1", "slow:a", "phx_join", `{}`))
	tr.take()
	s.HandleMessage(msg("1", "2", "slow:a", "new_msg", `{"ms":500}`))
	time.Sleep(50 * time.Millisecond) // the first is with the service
	for _, ref := range []string{"3", "4", "5"} {
		s.HandleMessage(msg("1", ref, "slow:a", "new_msg", `{"ms":0}`))
	}
	if got := waitFrames(t, tr, 1, 300*time.Millisecond); got[0] != `["1","5","slow:a","phx_reply",`+rateLimited {
		t.Fatalf("first frame %q, want the third waiting push refused", got)
	}
	s.Wait()
	if got := tr.take(); len(got) != 3 {
		t.Fatalf("replies %q, want the three pushes taken", got)
	}
}

// Every request carries its deadline (proto.DeadlineHeader): the send
// time plus the request timeout.
func TestRequestsCarryTheirDeadline(t *testing.T) {
	s, tr, e := newSession(t, wire.V2, slowRoute)
	deadlines := slowPushes(t, e.Services)
	handle(s, msg("1", "1", "slow:a", "phx_join", `{}`))
	start := time.Now()
	handle(s, msg("1", "2", "slow:a", "new_msg", `{"ms":0}`))
	tr.take()
	ms, err := strconv.ParseInt(<-deadlines, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	dl := time.UnixMilli(ms)
	if want := start.Add(e.Session.RequestTimeout); dl.Before(want.Add(-time.Second)) || dl.After(want.Add(time.Second)) {
		t.Fatalf("deadline %v, want about %v", dl, want)
	}
}

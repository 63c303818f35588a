package rooms

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/proto"
	"github.com/phxnats/phxnats/proto/natstest"
)

// startWith starts a roomsvc with rules and wrap on a fresh server.
func startWith(t *testing.T, rules Rules, wrap proto.Wrapper) *nats.Conn {
	t.Helper()
	nc := natstest.Connect(t, natstest.Start(t, natstest.Options{}))
	svc, err := Start(Options{Conn: nc, Store: openStore(t, nc), Rules: rules, Wrap: wrap})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Drain(context.Background()) })
	return nc
}

// A room's messages beyond its budget are refused and not broadcast;
// another room keeps its own budget.
func TestRoomBudget(t *testing.T) {
	nc := startWith(t, Rules{PublicTopics: []string{"rooms:*"}, RoomRateLimit: 1, RoomBytesLimit: Off}, nil)
	push := proto.PushSubject(proto.ServiceRooms)
	body := "x"
	say := func(topic string) proto.Reply {
		return request[proto.Reply](t, nc, push, proto.PushRequest{Topic: topic, Event: "new_msg", Payload: json.RawMessage(`{"body":"` + body + `"}`)})
	}
	// The burst is two seconds' worth: 2 messages.
	for i := range 2 {
		if rep := say("rooms:lobby"); rep.Status != proto.StatusNoReply {
			t.Fatalf("message %d within the budget: %+v", i, rep)
		}
	}
	rep := say("rooms:lobby")
	if rep.Status != proto.StatusError || string(rep.Response) != string(proto.Reason(ReasonRoomBusy)) {
		t.Fatalf("message over the budget: %s %s", rep.Status, rep.Response)
	}
	// Other rooms have budgets of their own.
	if rep := say("rooms:other"); rep.Status != proto.StatusNoReply {
		t.Fatalf("another room: %+v", rep)
	}
	// The bytes budget counts the message's size: a burst of 1 MiB (the
	// largest broadcast) is 20 messages of 50 KB.
	nc = startWith(t, Rules{RoomRateLimit: Off, RoomBytesLimit: 1}, nil)
	body = strings.Repeat("x", 50_000)
	n := 0
	for ; n < 100; n++ {
		if say("rooms:lobby").Status != proto.StatusNoReply {
			break
		}
	}
	if n != 20 {
		t.Fatalf("%d messages of 50 KB passed a 1 byte/s budget, want its 1 MiB burst's worth, 20", n)
	}
}

// A push whose deadline (proto.DeadlineHeader) passed while roomsvc was
// busy with it is not broadcast: its client was told "service timeout".
func TestExpiredPushIsNotBroadcast(t *testing.T) {
	slow := func(_ string, h nats.MsgHandler) nats.MsgHandler {
		return func(m *nats.Msg) {
			if string(m.Header.Get("slow")) != "" {
				time.Sleep(300 * time.Millisecond)
			}
			h(m)
		}
	}
	nc := startWith(t, Rules{}, slow)
	sub, err := nc.SubscribeSync(mustRoomSubject(t, "rooms:lobby"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		slow      bool
		timeout   time.Duration
		broadcast bool
	}{
		{"in time", false, 2 * time.Second, true},
		{"past its deadline", true, 100 * time.Millisecond, false},
	} {
		data, _ := json.Marshal(proto.PushRequest{Topic: "rooms:lobby", Event: "new_msg", Payload: json.RawMessage(`{"body":"` + tc.name + `"}`)})
		m := &nats.Msg{Subject: proto.PushSubject(proto.ServiceRooms), Data: data, Header: nats.Header{}}
		if tc.slow {
			m.Header.Set("slow", "1")
		}
		proto.SetDeadline(m, time.Now().Add(tc.timeout))
		_, err := nc.RequestMsg(m, tc.timeout)
		if (err == nil) != tc.broadcast {
			t.Fatalf("%s: request error %v", tc.name, err)
		}
		got, err := sub.NextMsg(time.Second)
		if (err == nil) != tc.broadcast {
			var data []byte
			if got != nil {
				data = got.Data
			}
			t.Fatalf("%s: broadcast %s (err %v), want broadcast %v", tc.name, data, err, tc.broadcast)
		}
	}
}

func mustRoomSubject(t *testing.T, topic string) string {
	t.Helper()
	s, err := proto.RoomSubject(topic)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

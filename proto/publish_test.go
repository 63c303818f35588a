package proto

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/phxnats/phxnats/proto/natstest"
)

func TestPublish(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t, natstest.Options{NoJetStream: true}))
	sub, err := nc.SubscribeSync("phx.room.rooms:a_2Eb")
	if err != nil {
		t.Fatal(err)
	}
	// A wildcard-looking topic must not reach other rooms.
	other, err := nc.SubscribeSync("phx.room.rooms:a")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := Publish(ctx, nc, "rooms:a.b", "new_msg", map[string]string{"body": "hi"}); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var b Broadcast
	if err := json.Unmarshal(msg.Data, &b); err != nil {
		t.Fatal(err)
	}
	if b.Event != "new_msg" || string(b.Payload) != `{"body":"hi"}` {
		t.Fatalf("got %s", msg.Data)
	}
	if m, err := other.NextMsg(100 * time.Millisecond); err == nil {
		t.Fatalf("rooms:a received %s", m.Data)
	}

	for name, tc := range map[string]struct {
		topic, event string
		payload      any
	}{
		"reserved event": {"rooms:lobby", "phx_close", map[string]any{}},
		"not an object":  {"rooms:lobby", "new_msg", "text"},
		"empty topic":    {"", "new_msg", map[string]any{}},
	} {
		if err := Publish(ctx, nc, tc.topic, tc.event, tc.payload); err == nil {
			t.Errorf("%s: Publish succeeded, want an error", name)
		}
	}
}

package proto

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/proto/natstest"
)

func TestPublish(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t, natstest.Options{}))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := EnsureRoomStream(ctx, js, RoomStreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := nc.SubscribeSync("phx.room.rooms:a_2Eb")
	if err != nil {
		t.Fatal(err)
	}
	// A wildcard-looking topic must not reach other rooms.
	other, err := nc.SubscribeSync("phx.room.rooms:a")
	if err != nil {
		t.Fatal(err)
	}
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

	// Publish returned after the stream stored it.
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("stream holds %+v (err %v), want the one broadcast", info.State, err)
	}
	if _, err := st.GetLastMsgForSubject(ctx, "phx.room.rooms:a_2Eb"); err != nil {
		t.Fatalf("broadcast not stored under its room subject: %v", err)
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

func TestPublishWithoutStream(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t, natstest.Options{NoJetStream: true}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := Publish(ctx, nc, "rooms:lobby", "new_msg", map[string]string{"body": "hi"})
	if !errors.Is(err, ErrNoRoomStream) {
		t.Fatalf("Publish without JetStream: %v, want ErrNoRoomStream", err)
	}
}

// A max age shorter than the stream's duplicate window still makes a
// stream (JetStream refuses a window longer than the max age).
func TestRoomStreamShortMaxAge(t *testing.T) {
	js, err := jetstream.New(natstest.Connect(t, natstest.Start(t, natstest.Options{})))
	if err != nil {
		t.Fatal(err)
	}
	st, err := EnsureRoomStream(context.Background(), js, RoomStreamOptions{MaxAge: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if d := st.CachedInfo().Config.Duplicates; d > 5*time.Second {
		t.Fatalf("duplicate window %s, longer than the max age", d)
	}
}

// A flood of one room evicts that room's own oldest broadcasts
// (MaxMsgsPerRoom), not the other rooms', which MaxBytes alone would.
func TestRoomFloodEvictsItsOwnMessages(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t, natstest.Options{}))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := EnsureRoomStream(ctx, js, RoomStreamOptions{MaxBytes: 64 << 10, MaxMsgsPerRoom: 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := Publish(ctx, nc, "rooms:quiet", "new_msg", map[string]string{"body": "still here"}); err != nil {
		t.Fatal(err)
	}
	flood, _ := RoomSubject("rooms:flood")
	body := []byte(`{"event":"new_msg","payload":{"body":"flood flood flood flood flood flood flood flood flood flood"}}`)
	for i := 0; i < 2000; i++ {
		if _, err := js.Publish(ctx, flood, body); err != nil {
			t.Fatal(err)
		}
	}
	quiet, _ := RoomSubject("rooms:quiet")
	if _, err := st.GetLastMsgForSubject(ctx, quiet); err != nil {
		t.Fatalf("the quiet room's broadcast is gone after another room's flood: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 11 {
		t.Fatalf("stream holds %d messages, want the quiet room's 1 and the flood's last 10", info.State.Msgs)
	}
}

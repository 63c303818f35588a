package proto

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/proto/natstest"
)

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

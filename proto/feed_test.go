package proto

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/proto/natstest"
)

func TestFeed(t *testing.T) {
	key := "a-secret-key-of-the-gateway"
	if FeedName(key) != FeedName(key) || FeedName(key) == FeedName(key+"x") || strings.Contains(FeedName(key), key) {
		t.Fatalf("FeedName(%q) = %q: want a stable hash that hides the key", key, FeedName(key))
	}
	for _, req := range []FeedRequest{
		{Key: "short", Heartbeat: time.Second},
		{Key: "has.a.dot.in.the.key", Heartbeat: time.Second},
		{Key: key, Heartbeat: time.Minute},
		{Key: key},
	} {
		if _, err := FeedConsumerConfig(req); err == nil {
			t.Errorf("FeedConsumerConfig(%+v) accepted", req)
		}
	}

	js, err := jetstream.New(natstest.Connect(t, natstest.Start(t, natstest.Options{})))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := EnsureRoomStream(ctx, js, RoomStreamOptions{}); err != nil {
		t.Fatal(err)
	}
	rep := CreateFeed(ctx, js, FeedRequest{Key: key, StartSeq: 1, Heartbeat: time.Second})
	if rep.Error != "" || rep.Consumer != FeedName(key) || rep.Subject != FeedSubject(key) || rep.FirstSeq != 1 {
		t.Fatalf("CreateFeed = %+v", rep)
	}
	info, err := js.PushConsumer(ctx, RoomStream, rep.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().Config.DeliverSubject; got != FeedSubject(key) {
		t.Fatalf("deliver subject %q", got)
	}
	if again := CreateFeed(ctx, js, FeedRequest{Key: key, StartSeq: 1, Heartbeat: time.Second}); again.Error != "" {
		t.Fatalf("creating the same feed again: %s", again.Error)
	}
	if del := DeleteFeed(ctx, js, key); del.Error != "" {
		t.Fatal(del.Error)
	}
	if _, err := js.PushConsumer(ctx, RoomStream, rep.Consumer); err == nil {
		t.Fatal("the feed's consumer is still there")
	}
	if del := DeleteFeed(ctx, js, key); del.Error != "" {
		t.Fatalf("deleting a feed already gone: %s", del.Error)
	}
	// Only the room and presence streams are served: a gateway must not
	// read anything else (ignore lists, bans).
	for _, stream := range []string{"KV_phx_user_ignores", "KV_phx_user_bans", "OTHER"} {
		if rep := CreateFeed(ctx, js, FeedRequest{Stream: stream, Key: key, StartSeq: 1, Heartbeat: time.Second}); rep.Error == "" {
			t.Errorf("a feed of %s was made", stream)
		}
		if rep := DeleteStreamFeed(ctx, js, FeedRequest{Stream: stream, Key: key}); rep.Error == "" {
			t.Errorf("a feed of %s was deleted", stream)
		}
	}
}

package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/proto"
)

// rooms who merges the keys every gateway wrote for the room (here written
// as two gateways would) through roomsvc's phx.presence.list.
func TestRoomsWho(t *testing.T) {
	sys := startSystem(t)
	url := sys.srv.ClientURL()
	if r := chatctl(t, url, "rooms", "who", "rooms:lobby"); r.code != exitOK || r.stdout != "" {
		t.Fatalf("empty room: %+v", r)
	}
	if r := chatctl(t, url, "rooms", "who", "--json", "rooms:lobby"); r.code != exitOK || r.stdout != "{}\n" {
		t.Fatalf("empty room --json: %+v", r)
	}
	js, err := jetstream.New(sys.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, proto.PresenceBucket)
	if err != nil {
		t.Fatal(err)
	}
	put := func(instance, value string) {
		key, err := proto.PresenceKey("rooms:lobby", instance)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.PutString(ctx, key, value); err != nil {
			t.Fatal(err)
		}
	}
	put("gw-a-1", `{"alice":{"metas":[{"phx_ref":"AAAAAAAAAAAAAAAA","online_at":"1700000000"}]},"bob":{"metas":[{"phx_ref":"BBBBBBBBBBBBBBBB","online_at":"1700000001"}]}}`)
	put("gw-b-2", `{"alice":{"metas":[{"phx_ref":"CCCCCCCCCCCCCCCC","online_at":"1700000002"}]}}`)
	put("gw-c-3", `not json: skipped`)
	if r := chatctl(t, url, "rooms", "who", "rooms:lobby"); r.code != exitOK || r.stdout != "alice 2\nbob 1\n" {
		t.Fatalf("who: %+v", r)
	}
	r := chatctl(t, url, "rooms", "who", "--json", "rooms:lobby")
	if r.code != exitOK || !strings.HasPrefix(r.stdout, `{"alice":{"metas":[{"phx_ref":"AAAAAAAAAAAAAAAA","online_at":"1700000000"},{"phx_ref":"CCCCCCCCCCCCCCCC"`) {
		t.Fatalf("who --json: %+v", r)
	}
	if r := chatctl(t, url, "rooms", "who", "rooms:other"); r.code != exitOK || r.stdout != "" {
		t.Fatalf("other room: %+v", r)
	}
	if r := chatctl(t, url, "rooms", "who"); r.code != exitUsage {
		t.Fatalf("who without a topic: %+v", r)
	}
}

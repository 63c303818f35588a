package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/proto"
	"github.com/phxnats/phxnats/proto/natstest"
)

// An ignore list holds at most rooms.ignore_max ids of at most
// proto.MaxUserIDLength bytes; each change reaches the gateways as a diff,
// and only the join reply carries the whole list.
func TestIgnoreListLimitsAndDiffs(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := OpenStore(ctx, js, StoreOptions{IgnoreMax: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	svc, err := Start(Options{Conn: nc, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Drain(context.Background()) })
	updates, err := nc.SubscribeSync("phx.user.alice.ignores")
	if err != nil {
		t.Fatal(err)
	}
	push := proto.PushSubject(proto.ServiceRooms)
	steps := []struct {
		event, other string
		response     string // to the client
		ignore       string // to the gateway, in the reply
		published    string // to every gateway; "" none
	}{
		{"ignore", "bob", `{"ignored":["bob"]}`, `{"add":["bob"]}`, `{"add":["bob"]}`},
		{"ignore", "bob", `{"ignored":["bob"]}`, `{"add":["bob"]}`, ""}, // no change
		{"ignore", "carol", `{"ignored":["bob","carol"]}`, `{"add":["carol"]}`, `{"add":["carol"]}`},
		{"ignore", "dave", `{"ignored":["bob","carol","dave"]}`, `{"add":["dave"]}`, `{"add":["dave"]}`},
		{"ignore", "erin", `{"reason":"you cannot ignore more than 3 users"}`, "", ""},
		{"unignore", "carol", `{"ignored":["bob","dave"]}`, `{"remove":["carol"]}`, `{"remove":["carol"]}`},
		{"ignore", "erin", `{"ignored":["bob","dave","erin"]}`, `{"add":["erin"]}`, `{"add":["erin"]}`},
		{"ignore", strings.Repeat("x", proto.MaxUserIDLength+1), `{"reason":"user_id must be 1 to 255 bytes of UTF-8 without control characters"}`, "", ""},
		{"ignore", "a\x00b", `{"reason":"user_id must be 1 to 255 bytes of UTF-8 without control characters"}`, "", ""},
	}
	for _, s := range steps {
		payload, _ := json.Marshal(map[string]string{"user_id": s.other})
		rep := request[proto.Reply](t, nc, push, proto.PushRequest{Topic: "rooms:lobby", Event: s.event, UserID: "alice", Payload: payload})
		var ignore string
		if rep.Ignore != nil {
			b, _ := json.Marshal(rep.Ignore)
			ignore = string(b)
		}
		if string(rep.Response) != s.response || ignore != s.ignore {
			t.Fatalf("%s %.20s: response %s, ignore %s; want %s, %s", s.event, s.other, rep.Response, ignore, s.response, s.ignore)
		}
		m, err := updates.NextMsg(100 * time.Millisecond)
		switch {
		case s.published == "" && err == nil:
			t.Fatalf("%s %.20s published %s", s.event, s.other, m.Data)
		case s.published != "" && (err != nil || string(m.Data) != s.published):
			t.Fatalf("%s %.20s published %v %v, want %s", s.event, s.other, m, err, s.published)
		}
	}
	join := request[proto.Reply](t, nc, proto.JoinSubject(proto.ServiceRooms), proto.JoinRequest{Topic: "rooms:lobby", UserID: "alice"})
	if b, _ := json.Marshal(join.Ignore); string(b) != `{"ignored":["bob","dave","erin"]}` {
		t.Fatalf("join reply's ignore = %s", b)
	}
	if _, _, err := st.SetIgnored(ctx, "alice", "frank", true); !errors.Is(err, ErrIgnoreListFull) {
		t.Fatalf("SetIgnored past the cap = %v", err)
	}
}

// The buckets are bounded, and a full list of the longest ids fits the
// ignore bucket's largest value.
func TestBucketLimits(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := OpenStore(ctx, js, StoreOptions{IgnoreMax: 20, MembersMaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	for _, tt := range []struct {
		bucket       string
		maxBytes     int64
		maxValueSize int32
	}{
		{DefaultBucket, 1 << 20, MemberMaxValueSize},
		{DefaultIgnoreBucket, DefaultIgnoresMaxBytes, int32(IgnoreMaxValueSize(20))},
	} {
		kv, err := js.KeyValue(ctx, tt.bucket)
		if err != nil {
			t.Fatal(err)
		}
		status, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cfg := status.(*jetstream.KeyValueBucketStatus).StreamInfo().Config
		if cfg.MaxBytes != tt.maxBytes || cfg.MaxMsgSize != tt.maxValueSize {
			t.Errorf("%s: max bytes %d, max value size %d; want %d, %d", tt.bucket, cfg.MaxBytes, cfg.MaxMsgSize, tt.maxBytes, tt.maxValueSize)
		}
	}
	// The worst list: 20 of the longest ids, every byte escaped in JSON.
	worst := strings.Repeat(`"`, proto.MaxUserIDLength)
	for i := range 20 {
		other := fmt.Sprintf("%02d", i) + worst[2:]
		if _, _, err := st.SetIgnored(ctx, "alice", other, true); err != nil {
			t.Fatalf("ignore %d: %v", i, err)
		}
	}
	// Anything larger is refused by the bucket itself.
	kv, _ := js.KeyValue(ctx, DefaultIgnoreBucket)
	if _, err := kv.Put(ctx, "too-big", make([]byte, IgnoreMaxValueSize(20)+1)); err == nil {
		t.Fatal("the ignore bucket stored a value over its limit")
	}
}

// Memberships take only ids that proto.ValidUserID accepts; joins with
// other ids are refused.
func TestUserIDRule(t *testing.T) {
	nc, _ := startService(t, "")
	long := strings.Repeat("x", proto.MaxUserIDLength)
	for _, tt := range []struct {
		user string
		ok   bool
	}{
		{"alice", true},
		{long, true},
		{long + "x", false},
		{"bad\nid", false},
	} {
		rep := request[proto.MembershipReply](t, nc, proto.SubjectMembersGrant, proto.MembershipRequest{Topic: "rooms:ops", UserID: tt.user})
		if (rep.Error == "") != tt.ok {
			t.Errorf("grant %.20q: %q, want ok=%v", tt.user, rep.Error, tt.ok)
		}
		join := request[proto.Reply](t, nc, proto.JoinSubject(proto.ServiceRooms), proto.JoinRequest{Topic: "rooms:lobby", UserID: tt.user})
		if (join.Status == proto.StatusOK) != tt.ok {
			t.Errorf("join as %.20q: %s, want ok=%v", tt.user, join.Status, tt.ok)
		}
	}
}

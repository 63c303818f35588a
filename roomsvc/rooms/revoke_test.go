package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phxnats/phxnats/proto"
	"github.com/phxnats/phxnats/proto/natstest"
)

// A revoke racing a join never leaves the user able to post: whatever the
// join and its confirmation answered, a push after the revoke is refused
// and nothing of it reaches the room.
func TestRevokeRacesJoin(t *testing.T) {
	nc, _ := startService(t, "")
	const topic = "rooms:ops"
	room, err := nc.SubscribeSync("phx.room." + topic)
	if err != nil {
		t.Fatal(err)
	}
	join, joined, push := proto.JoinSubject(proto.ServiceRooms), proto.JoinedSubject(proto.ServiceRooms), proto.PushSubject(proto.ServiceRooms)
	confirmed := 0
	for i := range 200 {
		user := fmt.Sprintf("user-%d", i)
		member := proto.MembershipRequest{Topic: topic, UserID: user}
		if rep := request[proto.MembershipReply](t, nc, proto.SubjectMembersGrant, member); rep.Error != "" {
			t.Fatal(rep.Error)
		}
		// A member who is joined and posting, so that the cache knows them.
		if rep := request[proto.Reply](t, nc, push, proto.PushRequest{Topic: topic, Event: "ping", UserID: user, Payload: json.RawMessage(`{}`)}); rep.Status != proto.StatusOK {
			t.Fatalf("member's ping: %+v", rep)
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			if rep := request[proto.MembershipReply](t, nc, proto.SubjectMembersRevoke, member); rep.Error != "" {
				t.Error(rep.Error)
			}
		})
		wg.Go(func() {
			req := proto.JoinRequest{Topic: topic, UserID: user}
			if rep := request[proto.Reply](t, nc, join, req); rep.Status == proto.StatusOK {
				if !rep.Confirm {
					t.Error("a private room's join reply does not ask for confirmation")
				}
				if request[proto.Reply](t, nc, joined, req).Status == proto.StatusOK {
					confirmed++ // only this goroutine writes it
				}
			}
		})
		wg.Wait()
		rep := request[proto.Reply](t, nc, push, proto.PushRequest{Topic: topic, Event: "new_msg", UserID: user, Payload: json.RawMessage(`{"body":"x"}`)})
		if rep.Status != proto.StatusError || string(rep.Response) != `{"reason":"unauthorized"}` {
			t.Fatalf("iteration %d: push after revoke = %s %s, want unauthorized", i, rep.Status, rep.Response)
		}
	}
	if m, err := room.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("a revoked user's message reached the room: %s", m.Data)
	}
	t.Logf("%d of 200 joins were confirmed before the revoke", confirmed)
}

// A revoke through one roomsvc instance reaches the membership cache of
// another through its watch of the bucket.
func TestRevokeReachesOtherInstances(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	ncA, ncB := natstest.Connect(t, srv), natstest.Connect(t, srv)
	a, b := openStore(t, ncA), openStore(t, ncB)
	ctx := context.Background()
	if err := a.Grant(ctx, "rooms:ops", "alice"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.IsMember(ctx, "rooms:ops", "alice"); !ok || err != nil {
		t.Fatalf("IsMember before revoke = %v, %v", ok, err)
	}
	if !b.members.has(memberKey("rooms:ops", "alice")) {
		t.Fatal("the membership was not cached")
	}
	if err := a.Revoke(ctx, "rooms:ops", "alice"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok, err := b.IsMember(ctx, "rooms:ops", "alice")
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the other instance still finds the revoked member")
		}
		time.Sleep(time.Millisecond)
	}
}

// Pushes to a private room are for members only; public rooms are open.
func TestPushChecksMembership(t *testing.T) {
	nc, _ := startService(t, "")
	push := proto.PushSubject(proto.ServiceRooms)
	if rep := request[proto.MembershipReply](t, nc, proto.SubjectMembersGrant, proto.MembershipRequest{Topic: "rooms:ops", UserID: "alice"}); rep.Error != "" {
		t.Fatal(rep.Error)
	}
	tests := []struct {
		topic, user, status string
	}{
		{"rooms:ops", "alice", proto.StatusNoReply},
		{"rooms:ops", "bob", proto.StatusError},
		{"rooms:ops", "", proto.StatusError},
		{"rooms:lobby", "bob", proto.StatusNoReply},
		{"rooms:lobby", "", proto.StatusNoReply},
		{"other:x", "alice", proto.StatusError},
	}
	for _, tt := range tests {
		rep := request[proto.Reply](t, nc, push, proto.PushRequest{Topic: tt.topic, Event: "new_msg", UserID: tt.user, Payload: json.RawMessage(`{"body":"x"}`)})
		if rep.Status != tt.status || (tt.status == proto.StatusError && !strings.Contains(string(rep.Response), "unauthorized")) {
			t.Errorf("push to %s as %q = %s %s, want %s", tt.topic, tt.user, rep.Status, rep.Response, tt.status)
		}
	}
}

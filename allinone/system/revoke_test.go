package system

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phxnats/phxnats/proto"
)

// Revoking a member is certain, however it races the member's join: once
// the revoke is answered, the socket is either refused or gets phx_close
// for the room (the kick, or a join confirmation that sees the revoke),
// and after that no broadcast of the room reaches it. Each round joins a
// fresh private room while the membership is revoked; a probe is then
// broadcast into it and a sentinel into the lobby: the stream's one order
// means a socket still in the room would get the probe first.
func TestRevokeRacesJoin(t *testing.T) {
	s := startSystem(t, noLimits) // 40 rounds of joins by one user, at once
	nc := natsConn(t, s)
	tok := token(t, s, "alice")
	const rounds = 40
	var refused, kicked int
	for i := range rounds {
		topic := fmt.Sprintf("rooms:race-%d", i)
		grant(t, nc, topic, "alice")
		c := dial(t, s.URL(), url.Values{"token": {tok}})
		c.join("rooms:lobby", "1")

		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			// From before the join's membership check to after its room
			// join, round by round.
			time.Sleep(time.Duration(i%10) * 200 * time.Microsecond)
			data, _ := json.Marshal(proto.MembershipRequest{Topic: topic, UserID: "alice"})
			if m, err := nc.Request(proto.SubjectMembersRevoke, data, 5*time.Second); err != nil || strings.Contains(string(m.Data), "error") {
				t.Errorf("revoke: %v", err)
			}
		}()
		c.send(fmt.Sprintf(`["2","2",%q,"phx_join",{}]`, topic))
		wg.Wait()

		// The join's reply; if it was ok, the channel must then be closed.
		reply, closed := fmt.Sprintf(`["2","2",%q,"phx_reply"`, topic), fmt.Sprintf(`["2","2",%q,"phx_close",{}]`, topic)
		open := false
		for {
			f := c.read() // fails the test after 5 s without a frame
			if strings.HasPrefix(f, reply) {
				if open = strings.Contains(f, `"status":"ok"`); !open {
					refused++
					break
				}
			} else if f == closed && open {
				kicked++
				break
			}
		}

		probe, sentinel := fmt.Sprint("probe-", i), fmt.Sprint("sentinel-", i)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := proto.Publish(ctx, nc, topic, "new_msg", map[string]string{"body": probe}); err != nil {
			t.Fatal(err)
		}
		if err := proto.Publish(ctx, nc, "rooms:lobby", "new_msg", map[string]string{"body": sentinel}); err != nil {
			t.Fatal(err)
		}
		cancel()
		for f := c.read(); !strings.Contains(f, sentinel); f = c.read() {
			if strings.Contains(f, probe) {
				t.Fatalf("round %d: the revoked member got the room's broadcast: %s", i, f)
			}
		}
	}
	t.Logf("%d rounds: %d joins refused, %d closed after joining", rounds, refused, kicked)
}

package system

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phxnats/phxnats/proto"
)

// A ban is not undone by phoenix.js's reconnect: the user's sockets close
// (1001, as chatctl disconnect), and the token they had is refused with 403
// at the upgrade, on every gateway, until an unban; even then it stays
// refused, and only a token issued afterwards connects.
func TestBanKeepsUserOut(t *testing.T) {
	const skew = 300 * time.Millisecond
	s := startSystem(t, func(c *Config) { c.TokenClockSkew, c.Bans.ClockSkew = skew, skew })
	nc := natsConn(t, s)
	old := token(t, s, "alice")
	alice := dial(t, s.URL(), url.Values{"token": {old}})
	alice.join("rooms:lobby", "1")

	ban := func(subject string) proto.BanReply {
		t.Helper()
		data, _ := json.Marshal(proto.BanRequest{UserID: "alice"})
		m, err := nc.Request(subject, data, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var rep proto.BanReply
		if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Error != "" {
			t.Fatalf("%s: %s", subject, m.Data)
		}
		return rep
	}
	upgrade := func(tok string) int {
		t.Helper()
		q := url.Values{"vsn": {"2.0.0"}, "token": {tok}}
		ws, res, err := websocket.DefaultDialer.Dial(strings.Replace(s.URL(), "http://", "ws://", 1)+"/socket/websocket?"+q.Encode(), nil)
		if err == nil {
			ws.Close()
			return http.StatusSwitchingProtocols
		}
		if res == nil {
			t.Fatalf("dial: %v", err)
		}
		return res.StatusCode
	}

	ban(proto.SubjectAuthBan)
	if code := alice.closeCode(); code != websocket.CloseGoingAway {
		t.Fatalf("banned user's socket closed with %d, want 1001", code)
	}
	if got := upgrade(old); got != http.StatusForbidden {
		t.Fatalf("reconnect with the old token: HTTP %d, want 403", got)
	}
	if got := upgrade(token(t, s, "alice")); got != http.StatusForbidden {
		t.Fatalf("a new token during the ban: HTTP %d, want 403", got)
	}
	ban(proto.SubjectAuthUnban)
	if got := upgrade(old); got != http.StatusForbidden {
		t.Fatalf("the old token after unban: HTTP %d, want 403", got)
	}
	// A token signed more than the clock skew after the unban connects.
	time.Sleep(skew + 100*time.Millisecond)
	if got := upgrade(token(t, s, "alice")); got != http.StatusSwitchingProtocols {
		t.Fatalf("a new token after unban: HTTP %d, want 101", got)
	}
}

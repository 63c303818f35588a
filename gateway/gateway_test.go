package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phxnats/phxnats/gateway/internal/gwtest"
)

func TestWithDefaults(t *testing.T) {
	t.Parallel()
	d := DefaultOptions()
	for _, tc := range []struct {
		name            string
		in              Options
		rate            float64
		burst           int
		linger, timeout time.Duration
	}{
		{"zero values", Options{}, d.RateLimit, d.RateBurst, d.RoomLinger, d.RequestTimeout},
		{"burst follows the rate", Options{RateLimit: 50}, 50, 50, d.RoomLinger, d.RequestTimeout},
		{"set values kept", Options{RateLimit: 50, RateBurst: 7, RoomLinger: time.Second, RequestTimeout: time.Minute}, 50, 7, time.Second, time.Minute},
		{"off", Options{RateLimit: Off, RoomLinger: Off}, Off, 0, Off, d.RequestTimeout},
		{"any negative is off", Options{RateLimit: -5, RoomLinger: -time.Second}, Off, 0, Off, d.RequestTimeout},
	} {
		got := tc.in.withDefaults()
		if got.RateLimit != tc.rate || got.RateBurst != tc.burst || got.RoomLinger != tc.linger || got.RequestTimeout != tc.timeout {
			t.Errorf("%s: rate %v burst %d linger %v timeout %v", tc.name, got.RateLimit, got.RateBurst, got.RoomLinger, got.RequestTimeout)
		}
		if got.SendQueueLen != d.SendQueueLen || got.MaxFrameSize != d.MaxFrameSize || got.LongPollWindow != d.LongPollWindow || got.Routes == nil {
			t.Errorf("%s: defaults not applied: %+v", tc.name, got)
		}
	}
}

// Shutdown drains both transports: the WebSocket gets its close 1012, the
// long-poll session is gone (410), and the gateway reports it drains.
func TestShutdownDrainsBothTransports(t *testing.T) {
	t.Parallel()
	e := gwtest.New(t)
	g, err := New(Options{Conn: e.Conn, Name: "gw", Logger: gwtest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	get := func(path string) (int, map[string]any) {
		res, err := http.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(res.Body).Decode(&body)
		return res.StatusCode, body
	}
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http")+"/socket/websocket?vsn=2.0.0&token=u:alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	_, open := get("/socket/longpoll?vsn=2.0.0&token=u:bob")
	token, _ := open["token"].(string)
	if open["status"] != float64(410) || token == "" {
		t.Fatalf("long-poll open: %v", open)
	}
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Fatalf("readyz %d before the drain", code)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.Shutdown(ctx) }()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseServiceRestart {
		t.Fatalf("websocket: %v, want close 1012", err)
	}
	_ = ws.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, poll := get("/socket/longpoll?vsn=2.0.0&token=u:bob&token=" + token); poll["status"] != float64(410) {
		t.Fatalf("long-poll after the drain: %v", poll)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || body["status"] != "draining" {
		t.Fatalf("readyz %d %v after the drain", code, body)
	}
	if n := g.LongPollSessions(); n != 0 {
		t.Fatalf("%d long-poll sessions left", n)
	}
}

// The limits for the internet take their defaults when zero, and any
// negative value turns them off (Off).
func TestWithDefaultsInternetLimits(t *testing.T) {
	t.Parallel()
	d := DefaultOptions()
	got := Options{}.withDefaults()
	if got.UserRateLimit != d.UserRateLimit || got.UserRateBurst != d.UserRateBurst || got.AddrRateLimit != d.AddrRateLimit ||
		got.AddrRateBurst != d.AddrRateBurst || got.MaxPending != d.MaxPending || got.LongPollMaxSessions != d.LongPollMaxSessions ||
		got.LongPollMaxPerAddr != d.LongPollMaxPerAddr || got.NATSGrace != d.NATSGrace {
		t.Errorf("defaults not applied: %+v", got)
	}
	off := Options{UserRateLimit: -2, AddrRateLimit: Off, MaxPending: -5, LongPollMaxSessions: Off, LongPollMaxPerAddr: -1, NATSGrace: -time.Second}.withDefaults()
	if off.UserRateLimit != Off || off.AddrRateLimit != Off || off.MaxPending != Off || off.LongPollMaxSessions != Off ||
		off.LongPollMaxPerAddr != Off || off.NATSGrace != Off {
		t.Errorf("negative values not turned off: %+v", off)
	}
	if r := (Options{AddrRateLimit: 7}).withDefaults(); r.AddrRateBurst != 7 {
		t.Errorf("address burst %d, want the rate, 7", r.AddrRateBurst)
	}
}

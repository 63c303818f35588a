package longpoll

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phxnats/phxnats/proto"
)

// Sessions are bounded per client address and in total; a refused one
// gets {"status":500}, which phoenix.js retries, and a closed session
// frees its place.
func TestLongPollSessionCaps(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		change func(*Config)
	}{
		{"per address", func(c *Config) { c.MaxPerAddr = 2 }},
		{"in total", func(c *Config) { c.MaxSessions = 2 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, e, _, ep := lpTestGatewayWith(t, tc.change, &http.Server{})
			open := func() int { return lpTestDo(t, "GET", ep+"&token=u:alice", "").Status }
			if a, b := open(), open(); a != 410 || b != 410 {
				t.Fatalf("first two sessions: %d %d, want 410 (opened)", a, b)
			}
			if s := open(); s != 500 {
				t.Fatalf("third session: %d, want 500 (refused)", s)
			}
			if n := g.Sessions(); n != 2 {
				t.Fatalf("%d sessions, want 2", n)
			}
			e.Registry.Disconnect("alice")
			if s := open(); s != 410 {
				t.Fatalf("after the others closed: %d, want 410 (opened)", s)
			}
		})
	}
}

// A session's POSTs are taken one at a time: a second waits, unread,
// until the first is in; their frames reach the session in that order.
func TestLongPollOnePostAtATime(t *testing.T) {
	t.Parallel()
	_, _, _, ep := lpTestGateway(t)
	u := lpTestJoin(t, ep, "alice", "rooms:a")
	body, w := io.Pipe()
	first := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", u, body)
		req.ContentLength = -1
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			first <- 0
			return
		}
		res.Body.Close()
		first <- res.StatusCode
	}()
	push := func(ref string) string { return `["1","` + ref + `","rooms:a","new_msg",{"body":"hi"}]` }
	frame := push("2")
	if _, err := w.Write([]byte(frame[:10])); err != nil { // the first POST's body, in part
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	second := make(chan lpTestReply, 1)
	go func() { second <- lpTestDo(t, "POST", u, push("3")) }()
	select {
	case r := <-second:
		t.Fatalf("the second POST was taken while the first was being read: %+v", r)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := w.Write([]byte(frame[10:])); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if s := <-first; s != 200 {
		t.Fatalf("first POST: HTTP %d", s)
	}
	if r := <-second; r.Status != 200 {
		t.Fatalf("second POST: %+v", r)
	}
	var got []string
	for len(got) < 2 {
		r := lpTestDo(t, "GET", u, "")
		if r.Status != 200 {
			t.Fatalf("poll: %+v", r)
		}
		got = append(got, r.Messages...)
	}
	if !strings.Contains(got[0], `"2","rooms:a"`) || !strings.Contains(got[1], `"3","rooms:a"`) {
		t.Fatalf("replies %q, want ref 2 then ref 3", got)
	}
}

// A poll waits its window even when the HTTP server's timeouts are
// shorter (svckit's are 30 s, a window may be longer): it extends its own.
func TestLongPollOutlivesServerTimeouts(t *testing.T) {
	t.Parallel()
	g, _, _, ep := lpTestGatewayWith(t, func(*Config) {}, &http.Server{ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
	g.SetWindow(600 * time.Millisecond)
	u := lpTestJoin(t, ep, "alice", "rooms:a")
	start := time.Now()
	if r := lpTestDo(t, "GET", u, ""); r.Status != 204 || time.Since(start) < 500*time.Millisecond {
		t.Fatalf("poll: %+v after %v, want 204 after the window", r, time.Since(start))
	}
}

// A session's buffer is bounded in bytes as well as in frames: a client
// that opens polls and never reads them cannot make the gateway hold more
// than SendQueueBytes for it. Past that it is closed as a slow consumer,
// and its next poll gets 410.
func TestLongPollBufferBytes(t *testing.T) {
	t.Parallel()
	_, e, _, ep := lpTestGatewayWith(t, func(c *Config) { c.SendQueueBytes = 64 << 10 }, &http.Server{})
	u := lpTestJoin(t, ep, "alice", "rooms:a")
	big := strings.Repeat("x", 20<<10)
	for i := range 4 { // 80 KiB in 4 frames: over the bytes, far under SendQueueLen
		if err := proto.Publish(t.Context(), e.Services, "rooms:a", "new_msg", map[string]string{"body": big + string(rune('a'+i))}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.Metrics.SlowDisconnects != nil && testutil.ToFloat64(e.Metrics.SlowDisconnects) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the session holding more than SendQueueBytes was not closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r := lpTestDo(t, "GET", u, ""); r.Status != 410 {
		t.Fatalf("poll after the close: %+v, want 410", r)
	}
}

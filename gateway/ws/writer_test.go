package ws

import (
	"bytes"
	"errors"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phxnats/phxnats/gateway/internal/gwtest"
	"github.com/phxnats/phxnats/gateway/session"
)

// TestWritePoolSlowClient checks the shared writers: a client that stops
// reading is closed as a slow consumer without holding up another socket,
// which gets every frame in order, and pings are answered between frames.
func TestWritePoolSlowClient(t *testing.T) {
	t.Parallel()
	_, e, url := testServer(t, false)
	fast, fastConn := dial(t, e, url, "fast")
	slow, slowConn := dial(t, e, url, "slow")

	// 32 MiB to a client that does not read: more than the kernel buffers
	// hold, so its writer is stuck until the client reads or WriteTimeout.
	big := bytes.Repeat([]byte("x"), 32<<10)
	for range 1000 {
		slowConn.Deliver(session.Frame{Data: big})
	}
	time.Sleep(100 * time.Millisecond)
	const n = 500
	for i := range n {
		fastConn.Deliver(session.Frame{Data: []byte(strconv.Itoa(i))})
	}
	pongs := make(chan string, 1)
	fast.SetPongHandler(func(s string) error { pongs <- s; return nil })
	if err := fast.WriteControl(websocket.PingMessage, []byte("hi"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	_ = fast.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range n {
		_, b, err := fast.ReadMessage()
		if err != nil {
			t.Fatalf("fast client, frame %d: %v", i, err)
		}
		if string(b) != strconv.Itoa(i) {
			t.Fatalf("fast client: frame %d is %q", i, b)
		}
	}
	if len(pongs) == 0 { // the pong may follow the frames: read until it comes
		_ = fast.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _, _ = fast.ReadMessage()
	}
	select {
	case p := <-pongs:
		if p != "hi" {
			t.Fatalf("pong %q", p)
		}
	default:
		t.Fatal("no pong")
	}

	for range 1100 { // over the 1,024-frame queue
		slowConn.Deliver(session.Frame{Data: big})
	}
	_ = slow.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		_, _, err := slow.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			if ce.Code != CloseSlowConsumer {
				t.Fatalf("slow client closed with %d", ce.Code)
			}
			break
		}
		if err != nil {
			t.Fatalf("slow client: %v", err)
		}
	}
}

// A socket whose client was slow once is written by a goroutine of its
// own with a write deadline; once it has caught up, the shared writers
// take it back, and their writes must not fail on that old deadline. They
// did: every later frame ended the socket without a close frame (1006),
// some 900 of 5,000 presence sockets in a load test where clients
// reconnected every second.
func TestWritePoolAfterSlowPhase(t *testing.T) {
	t.Parallel()
	e := gwtest.New(t)
	const timeout = 300 * time.Millisecond
	s := New(Config{Deps: e.Deps(), SendQueueLen: 4096, WriteTimeout: timeout, IdleTimeout: time.Minute, MaxFrameSize: 1 << 20})
	hs := httptest.NewServer(s)
	t.Cleanup(func() { hs.Close(); s.Close() })
	client, c := dial(t, e, "ws"+strings.TrimPrefix(hs.URL, "http")+"/socket/websocket?vsn=2.0.0", "once-slow")
	if c.raw == nil {
		t.Skip("no raw socket here: no shared writers")
	}
	// More than the socket buffers take at once: the rest goes to a
	// goroutine writer with a deadline, which the client then reads.
	big := bytes.Repeat([]byte("x"), 64<<10)
	const n = 200
	for range n {
		c.Deliver(session.Frame{Data: big})
	}
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range n {
		if _, _, err := client.ReadMessage(); err != nil {
			t.Fatalf("frame %d of the burst: %v", i, err)
		}
	}
	time.Sleep(2 * timeout) // the goroutine writer's deadline is past
	for i := range 3 {
		c.Deliver(session.Frame{Data: []byte("after " + strconv.Itoa(i))})
		if _, b, err := client.ReadMessage(); err != nil || string(b) != "after "+strconv.Itoa(i) {
			t.Fatalf("frame %d after the slow phase: %q %v", i, b, err)
		}
	}
}

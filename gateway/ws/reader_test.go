package ws

import (
	"context"
	"errors"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phxnats/phxnats/gateway/internal/gwtest"
	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wsframe"
)

// forEachReader runs f, in parallel, with the goroutine reader and, where
// there is one, the poller, which must treat a client alike.
func forEachReader(t *testing.T, f func(t *testing.T, goroutineReaders bool)) {
	t.Parallel()
	for _, name := range []string{"goroutine", "poller"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f(t, name == "goroutine")
		})
	}
}

// testServer runs a Server on the stand-in services of gwtest and returns
// it, its parts, and the socket URL (vsn 2.0.0) without a token.
func testServer(t *testing.T, goroutineReaders bool) (*Server, *gwtest.Env, string) {
	t.Helper()
	e := gwtest.New(t)
	s := New(Config{
		Deps:         e.Deps(),
		SendQueueLen: 1024, WriteTimeout: 10 * time.Second, IdleTimeout: time.Minute, MaxFrameSize: 1 << 20,
		GoroutineReaders: goroutineReaders,
	})
	hs := httptest.NewServer(s)
	t.Cleanup(func() {
		hs.Close()
		s.Close()
	})
	return s, e, "ws" + strings.TrimPrefix(hs.URL, "http") + "/socket/websocket?vsn=2.0.0"
}

// dial connects user and returns the client and the server's conn.
func dial(t *testing.T, e *gwtest.Env, url, user string) (*websocket.Conn, *conn) {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url+"&token=u:"+user, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	return ws, e.WaitUser(t, user, 1)[0].Transport().(*conn)
}

// readerTestConn connects a client and returns it, the raw connection
// under it, on which the test writes frames of its own making, and the
// gateway's parts.
func readerTestConn(t *testing.T, user string, goroutineReaders bool) (*websocket.Conn, net.Conn, *Server, *gwtest.Env) {
	s, e, url := testServer(t, goroutineReaders)
	ws, c := dial(t, e, url, user)
	if polled, want := c.rd != nil, !goroutineReaders && pollingAvailable; polled != want {
		t.Fatalf("socket polled: %v, want %v", polled, want)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	return ws, ws.NetConn(), s, e
}

func writeRaw(t *testing.T, conn net.Conn, frames ...[]byte) {
	t.Helper()
	var b []byte
	for _, f := range frames {
		b = append(b, f...)
	}
	if _, err := conn.Write(b); err != nil {
		t.Fatal(err)
	}
}

// readClose reads until the server's close frame and returns its code.
func readClose(t *testing.T, ws *websocket.Conn) int {
	t.Helper()
	for {
		_, _, err := ws.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		if err != nil {
			t.Fatalf("no close frame: %v", err)
		}
	}
}

// TestReaderOrderAndFragments sends a join, a push and a heartbeat in one
// write, the heartbeat fragmented around a ping: the join's and the
// push's replies come in the order sent, though they wait on NATS, the
// heartbeat is answered without waiting for them, and the ping is
// answered.
func TestReaderOrderAndFragments(t *testing.T) {
	forEachReader(t, func(t *testing.T, goroutineReaders bool) {
		ws, conn, _, e := readerTestConn(t, "alice", goroutineReaders)
		pongs := make(chan string, 1)
		ws.SetPongHandler(func(s string) error { pongs <- s; return nil })
		hb := `[null,"3","phoenix","heartbeat",{}]`
		writeRaw(t, conn,
			text(true, `["1","1","rooms:lobby","phx_join",{}]`),
			text(true, `["1","2","rooms:lobby","new_msg",{"body":"hi"}]`),
			text(false, hb[:10]),
			clientFrame(true, wsframe.OpPing, []byte("p"), true),
			cont(false, hb[10:20]),
			cont(true, hb[20:]),
		)
		var channel []string // the channel's replies, in order
		for range 3 {
			_, b, err := ws.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), `"phx_reply"`) || !strings.Contains(string(b), `"ok"`) {
				t.Fatalf("want an ok reply, got %s", b)
			}
			if !strings.Contains(string(b), `"3",`) {
				channel = append(channel, string(b))
			}
		}
		if len(channel) != 2 || !strings.Contains(channel[0], `"1",`) || !strings.Contains(channel[1], `"2",`) {
			t.Fatalf("the join's and push's replies, in order: %q", channel)
		}
		if p := <-pongs; p != "p" {
			t.Fatalf("pong %q", p)
		}
		// The gateway answers a client's close at once only when no
		// writer owns the socket (a close frame must not land inside a
		// frame being written); the writer of the replies just read may
		// not have let go yet.
		waitWriterIdle(t, e.WaitUser(t, "alice", 1)[0].Transport())
		writeRaw(t, conn, clientFrame(true, wsframe.OpClose, closePayload(websocket.CloseNormalClosure, ""), true))
		if code := readClose(t, ws); code != websocket.CloseNormalClosure {
			t.Fatalf("close %d", code)
		}
		e.WaitNoSessions(t)
	})
}

// waitWriterIdle waits until no writer owns the socket behind tr.
func waitWriterIdle(t *testing.T, tr session.Transport) {
	t.Helper()
	c := tr.(*conn)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		writing := c.writing
		c.mu.Unlock()
		if !writing {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the socket's writer did not finish")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestReaderRefuses checks the close codes of frames the gateway refuses.
func TestReaderRefuses(t *testing.T) {
	tests := []struct {
		name  string
		frame []byte
		code  int
	}{
		{"unmasked", clientFrame(true, wsframe.OpText, []byte(`[null,"1","phoenix","heartbeat",{}]`), false), websocket.CloseProtocolError},
		{"unknown opcode", clientFrame(true, 5, nil, true), websocket.CloseProtocolError},
		// Only the header: the size is refused before the payload comes.
		{"too big", text(true, strings.Repeat("x", 1<<20+1))[:14], websocket.CloseMessageTooBig},
		{"malformed", text(true, `{"not":"phoenix"}`), CloseMalformed},
	}
	t.Parallel()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forEachReader(t, func(t *testing.T, goroutineReaders bool) {
				ws, conn, _, e := readerTestConn(t, "bob", goroutineReaders)
				writeRaw(t, conn, tt.frame)
				if code := readClose(t, ws); code != tt.code {
					t.Fatalf("close %d, want %d", code, tt.code)
				}
				if tt.code == CloseMalformed { // the gateway waits for the client's close
					writeRaw(t, conn, clientFrame(true, wsframe.OpClose, closePayload(tt.code, ""), true))
				}
				e.WaitNoSessions(t)
			})
		})
	}
}

// TestReaderEnds checks that a socket ends when the client goes away
// without a close frame, and when the gateway drains.
func TestReaderEnds(t *testing.T) {
	forEachReader(t, func(t *testing.T, goroutineReaders bool) {
		_, conn, _, e := readerTestConn(t, "carol", goroutineReaders)
		_ = conn.Close()
		e.WaitNoSessions(t)

		ws, _, _, e := readerTestConn(t, "dave", goroutineReaders)
		// The client does not answer the gateway's close frame: the
		// gateway ends the socket once it has waited for the answer.
		ws.SetCloseHandler(func(int, string) error { return nil })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		errc := make(chan error, 1)
		go func() { errc <- e.Registry.Drain(ctx) }()
		if code := readClose(t, ws); code != session.DisconnectShutdown.Code {
			t.Fatalf("close %d", code)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	})
}

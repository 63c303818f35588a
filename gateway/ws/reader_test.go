package ws

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// forEachReader runs f with the goroutine reader and, where there is one,
// the poller, which must treat a client alike.
func forEachReader(t *testing.T, f func(t *testing.T)) {
	readers := []bool{false}
	if pollReads {
		readers = append(readers, true)
	}
	defer func(v bool) { pollReads = v }(pollReads)
	for _, polled := range readers {
		pollReads = polled
		name := "goroutine"
		if polled {
			name = "poller"
		}
		t.Run(name, f)
	}
}

// readerTestConn connects a client and returns it, the raw connection
// under it, on which the test writes frames of its own making, and the
// gateway.
func readerTestConn(t *testing.T, user string) (*websocket.Conn, net.Conn, *Gateway) {
	g, _, lpURL := lpTestGateway(t)
	wsURL := "ws" + strings.TrimPrefix(strings.Replace(lpURL, "/socket/longpoll", "/socket/websocket", 1), "http")
	ws, _, err := websocket.DefaultDialer.Dial(wsURL+"&token=u:"+user, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	deadline := time.Now().Add(5 * time.Second)
	for len(g.userConns(user)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no server socket")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := g.userConns(user)[0].rd != nil; got != pollReads {
		t.Fatalf("socket polled: %v, want %v", got, pollReads)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	return ws, ws.NetConn(), g
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

func waitNoConns(t *testing.T, g *Gateway) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		g.mu.Lock()
		n := len(g.conns)
		g.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sockets left", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestReaderOrderAndFragments sends a join, a push and a heartbeat in one
// write, the heartbeat fragmented around a ping: the replies come in the
// order sent, though the join and push wait on NATS, and the ping is
// answered.
func TestReaderOrderAndFragments(t *testing.T) {
	forEachReader(t, func(t *testing.T) {
		ws, conn, g := readerTestConn(t, "alice")
		pongs := make(chan string, 1)
		ws.SetPongHandler(func(s string) error { pongs <- s; return nil })
		hb := `[null,"3","phoenix","heartbeat",{}]`
		writeRaw(t, conn,
			text(true, `["1","1","rooms:lobby","phx_join",{}]`),
			text(true, `["1","2","rooms:lobby","new_msg",{"body":"hi"}]`),
			text(false, hb[:10]),
			clientFrame(true, opPing, []byte("p"), true),
			cont(false, hb[10:20]),
			cont(true, hb[20:]),
		)
		for _, ref := range []string{`"1"`, `"2"`, `"3"`} {
			_, b, err := ws.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), ref+`,`) || !strings.Contains(string(b), `"phx_reply"`) || !strings.Contains(string(b), `"ok"`) {
				t.Fatalf("want the reply to ref %s, got %s", ref, b)
			}
		}
		if p := <-pongs; p != "p" {
			t.Fatalf("pong %q", p)
		}
		writeRaw(t, conn, clientFrame(true, opClose, closePayload(websocket.CloseNormalClosure, ""), true))
		if code := readClose(t, ws); code != websocket.CloseNormalClosure {
			t.Fatalf("close %d", code)
		}
		waitNoConns(t, g)
	})
}

// TestReaderRefuses checks the close codes of frames the gateway refuses.
func TestReaderRefuses(t *testing.T) {
	tests := []struct {
		name  string
		frame []byte
		code  int
	}{
		{"unmasked", clientFrame(true, opText, []byte(`[null,"1","phoenix","heartbeat",{}]`), false), websocket.CloseProtocolError},
		{"unknown opcode", clientFrame(true, 5, nil, true), websocket.CloseProtocolError},
		// Only the header: the size is refused before the payload comes.
		{"too big", text(true, strings.Repeat("x", 1<<20+1))[:14], websocket.CloseMessageTooBig},
		{"malformed", text(true, `{"not":"phoenix"}`), CloseMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forEachReader(t, func(t *testing.T) {
				ws, conn, g := readerTestConn(t, "bob")
				writeRaw(t, conn, tt.frame)
				if code := readClose(t, ws); code != tt.code {
					t.Fatalf("close %d, want %d", code, tt.code)
				}
				if tt.code == CloseMalformed { // the gateway waits for the client's close
					writeRaw(t, conn, clientFrame(true, opClose, closePayload(tt.code, ""), true))
				}
				waitNoConns(t, g)
			})
		})
	}
}

// TestReaderEnds checks that a socket ends when the client goes away
// without a close frame, and when the gateway drains.
func TestReaderEnds(t *testing.T) {
	forEachReader(t, func(t *testing.T) {
		_, conn, g := readerTestConn(t, "carol")
		_ = conn.Close()
		waitNoConns(t, g)

		ws, _, g := readerTestConn(t, "dave")
		// The client does not answer the gateway's close frame: the
		// gateway ends the socket once it has waited for the answer.
		ws.SetCloseHandler(func(int, string) error { return nil })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		errc := make(chan error, 1)
		go func() { errc <- g.Shutdown(ctx) }()
		if code := readClose(t, ws); code != CloseRestart {
			t.Fatalf("close %d", code)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	})
}

package ws

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phxnats/phxnats/gateway/fanout"
)

func TestAppendFrameHeader(t *testing.T) {
	tests := []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x81, 0}},
		{125, []byte{0x81, 125}},
		{126, []byte{0x81, 126, 0, 126}},
		{65535, []byte{0x81, 126, 0xff, 0xff}},
		{65536, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
		{1 << 20, []byte{0x81, 127, 0, 0, 0, 0, 0, 0x10, 0, 0}},
	}
	for _, tt := range tests {
		if got := appendFrameHeader(nil, 1, tt.n); !bytes.Equal(got, tt.want) {
			t.Errorf("n=%d: % x, want % x", tt.n, got, tt.want)
		}
	}
	if got := appendFrameHeader(nil, 2, 3); !bytes.Equal(got, []byte{0x82, 3}) {
		t.Errorf("binary: % x", got)
	}
}

// TestWritePoolSlowClient checks the shared writers: a client that stops
// reading is closed as a slow consumer without holding up another socket,
// which gets every frame in order, and pings are answered between frames.
func TestWritePoolSlowClient(t *testing.T) {
	g, _, lpURL := lpTestGateway(t)
	wsURL := "ws" + strings.TrimPrefix(strings.Replace(lpURL, "/socket/longpoll", "/socket/websocket", 1), "http")
	dial := func(user string) (*websocket.Conn, *wsConn) {
		ws, _, err := websocket.DefaultDialer.Dial(wsURL+"&token=u:"+user, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ws.Close() })
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if cs := g.userConns(user); len(cs) == 1 {
				return ws, cs[0]
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("no server socket for %s", user)
		return nil, nil
	}
	fast, fastConn := dial("fast")
	slow, slowConn := dial("slow")

	// 32 MiB to a client that does not read: more than the kernel buffers
	// hold, so its writer is stuck until the client reads or WriteTimeout.
	big := bytes.Repeat([]byte("x"), 32<<10)
	for range 1000 {
		slowConn.Deliver(fanout.Frame{Data: big})
	}
	time.Sleep(100 * time.Millisecond)
	const n = 500
	for i := range n {
		fastConn.Deliver(fanout.Frame{Data: []byte(strconv.Itoa(i))})
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
		slowConn.Deliver(fanout.Frame{Data: big})
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

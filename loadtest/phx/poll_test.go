//go:build linux

package phx

import (
	"errors"
	"fmt"
	"testing"

	"github.com/gorilla/websocket"
)

func serverFrame(op byte, fin bool, payload string) []byte {
	b := []byte{op, 0}
	if fin {
		b[0] |= 0x80
	}
	switch n := len(payload); {
	case n <= 125:
		b[1] = byte(n)
	default:
		b[1] = 126
		b = append(b, byte(n>>8), byte(n))
	}
	return append(b, payload...)
}

// TestConsumeSplit feeds a stream of frames (one fragmented, one long, a
// close at the end) cut at every byte, as reads can cut it.
func TestConsumeSplit(t *testing.T) {
	long := fmt.Sprintf(`[null,null,"t","long",{"b":"%0300d"}]`, 7)
	var stream []byte
	stream = append(stream, serverFrame(1, true, `[null,null,"t","a",{}]`)...)
	stream = append(stream, serverFrame(1, false, `[null,null,"t",`)...)
	stream = append(stream, serverFrame(0, true, `"b",{}]`)...)
	stream = append(stream, serverFrame(1, true, long)...)
	stream = append(stream, serverFrame(8, true, "\x03\xf5full")...)
	for cut := 0; cut < len(stream); cut++ {
		var events []string
		c := &Conn{stats: &Stats{}, opts: Options{OnMessage: func(_ *Conn, f *Frame) { events = append(events, string(f.Event)) }}}
		c.closing.Store(true) // no close reply to write
		rest, n1, err := c.consume(append([]byte(nil), stream[:cut]...), 0, 1)
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		_, n2, err := c.consume(append(rest, stream[cut:]...), 0, 1)
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 1013 || ce.Text != "full" {
			t.Fatalf("cut %d: close: %v", cut, err)
		}
		if n1+n2 != 3 || fmt.Sprint(events) != "[a b long]" {
			t.Fatalf("cut %d: %d frames, events %v", cut, n1+n2, events)
		}
	}
}

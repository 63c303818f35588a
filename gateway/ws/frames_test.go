package ws

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/phxnats/phxnats/gateway/wsframe"
)

// testMask is the masking key of the frames the tests build; not zero, so
// a parser that forgot to unmask would be caught.
var testMask = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// clientFrame builds one client frame: fin and opcode, masked or not.
func clientFrame(fin bool, op byte, payload []byte, masked bool) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	var b []byte
	b = append(b, b0)
	var maskBit byte
	if masked {
		maskBit = 0x80
	}
	switch n := len(payload); {
	case n <= 125:
		b = append(b, maskBit|byte(n))
	case n <= 0xffff:
		b = append(b, maskBit|126, byte(n>>8), byte(n))
	default:
		b = append(b, maskBit|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if !masked {
		return append(b, payload...)
	}
	b = append(b, testMask[:]...)
	for i, c := range payload {
		b = append(b, c^testMask[i&3])
	}
	return b
}

func text(fin bool, s string) []byte { return clientFrame(fin, wsframe.OpText, []byte(s), true) }
func cont(fin bool, s string) []byte {
	return clientFrame(fin, wsframe.OpContinuation, []byte(s), true)
}
func closePayload(code int, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

// describe renders a result for comparison; payload bytes are copied out.
func describe(r frameResult) string {
	switch r.event {
	case frameMessage:
		kind := "text"
		if r.binary {
			kind = "binary"
		}
		return fmt.Sprintf("%s %q", kind, r.data)
	case framePing:
		return fmt.Sprintf("ping %q", r.data)
	case framePong:
		return "pong"
	case frameClose:
		return fmt.Sprintf("close %d %q", r.code, r.text)
	case frameError:
		return fmt.Sprintf("error %d", r.code)
	}
	return ""
}

// parseStream runs a stream through clientFrames the way the poller does,
// arriving in the given chunks: what is left of an incomplete frame is
// kept and the next chunk appended to it. It stops at the first error or
// close, as the socket would end there.
func parseStream(chunks [][]byte, limit int64) []string {
	var r clientFrames
	var got []string
	var kept []byte
	for _, chunk := range chunks {
		data := append(kept, chunk...)
		kept = nil
		for {
			res, n := r.next(data, limit)
			data = data[n:]
			if res.event == frameMore && n == 0 {
				kept = bytes.Clone(data)
				break
			}
			if d := describe(res); d != "" {
				got = append(got, d)
			}
			if res.event == frameError || res.event == frameClose {
				return got
			}
		}
	}
	return got
}

var frameTests = []struct {
	name   string
	stream [][]byte
	limit  int64
	want   []string
}{
	{"text", [][]byte{text(true, "hello")}, 0, []string{`text "hello"`}},
	{"binary", [][]byte{clientFrame(true, wsframe.OpBinary, []byte{0, 1, 2}, true)}, 0, []string{`binary "\x00\x01\x02"`}},
	{"empty", [][]byte{text(true, "")}, 0, []string{`text ""`}},
	{"16-bit length", [][]byte{text(true, strings.Repeat("a", 300))}, 0, []string{fmt.Sprintf("text %q", strings.Repeat("a", 300))}},
	{"64-bit length", [][]byte{text(true, strings.Repeat("b", 70000))}, 0, []string{fmt.Sprintf("text %q", strings.Repeat("b", 70000))}},
	{"several", [][]byte{text(true, "a"), clientFrame(true, wsframe.OpBinary, []byte("b"), true), text(true, "c")}, 0,
		[]string{`text "a"`, `binary "b"`, `text "c"`}},
	{"unmasked", [][]byte{clientFrame(true, wsframe.OpText, []byte("x"), false)}, 0, []string{"error 1002"}},
	{"reserved bits", [][]byte{append([]byte{0xc1}, text(true, "x")[1:]...)}, 0, []string{"error 1002"}},
	{"unknown opcode", [][]byte{clientFrame(true, 3, []byte("x"), true)}, 0, []string{"error 1002"}},
	{"unknown control opcode", [][]byte{clientFrame(true, 0xb, nil, true)}, 0, []string{"error 1002"}},
	{"negative length", [][]byte{{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1}}, 0, []string{"error 1002"}},
	{"fragmented", [][]byte{text(false, "he"), cont(false, ""), cont(false, "l"), cont(true, "lo")}, 0, []string{`text "hello"`}},
	{"fragmented binary", [][]byte{clientFrame(false, wsframe.OpBinary, []byte{1}, true), cont(true, "\x02")}, 0, []string{`binary "\x01\x02"`}},
	{"empty fragments", [][]byte{text(false, ""), cont(true, "")}, 0, []string{`text ""`}},
	{"control frames inside a message", [][]byte{
		text(false, "he"),
		clientFrame(true, wsframe.OpPing, []byte("p1"), true),
		cont(false, "ll"),
		clientFrame(true, wsframe.OpPong, []byte("x"), true),
		cont(true, "o"),
		text(true, "next"),
	}, 0, []string{`ping "p1"`, "pong", `text "hello"`, `text "next"`}},
	{"close inside a message", [][]byte{text(false, "he"), clientFrame(true, wsframe.OpClose, closePayload(1000, "bye"), true), cont(true, "llo")}, 0,
		[]string{`close 1000 "bye"`}},
	{"continuation without a start", [][]byte{cont(true, "x")}, 0, []string{"error 1002"}},
	{"message inside a message", [][]byte{text(false, "a"), text(true, "b")}, 0, []string{"error 1002"}},
	{"fragmented control frame", [][]byte{clientFrame(false, wsframe.OpPing, nil, true)}, 0, []string{"error 1002"}},
	{"long control frame", [][]byte{clientFrame(true, wsframe.OpPing, bytes.Repeat([]byte("p"), 126), true)}, 0, []string{"error 1002"}},
	{"longest ping", [][]byte{clientFrame(true, wsframe.OpPing, bytes.Repeat([]byte("p"), 125), true)}, 0, []string{fmt.Sprintf("ping %q", strings.Repeat("p", 125))}},
	{"at the limit", [][]byte{text(true, "12345")}, 5, []string{`text "12345"`}},
	{"over the limit", [][]byte{text(true, "123456")}, 5, []string{"error 1009"}},
	{"over the limit in fragments", [][]byte{text(false, "123"), cont(false, "45"), cont(true, "6")}, 5, []string{"error 1009"}},
	{"limit counts messages, not frames", [][]byte{text(false, "123"), cont(true, "45"), text(true, "12345")}, 5,
		[]string{`text "12345"`, `text "12345"`}},
	{"close without a code", [][]byte{clientFrame(true, wsframe.OpClose, nil, true)}, 0, []string{`close 1005 ""`}},
	{"close", [][]byte{clientFrame(true, wsframe.OpClose, closePayload(4001, "gone"), true)}, 0, []string{`close 4001 "gone"`}},
	{"close with one byte", [][]byte{clientFrame(true, wsframe.OpClose, []byte{3}, true)}, 0, []string{"error 1002"}},
	{"close with a reserved code", [][]byte{clientFrame(true, wsframe.OpClose, closePayload(1005, ""), true)}, 0, []string{"error 1002"}},
	{"close with a bad reason", [][]byte{clientFrame(true, wsframe.OpClose, closePayload(1000, "\xff"), true)}, 0, []string{"error 1002"}},
	{"nothing after a close", [][]byte{clientFrame(true, wsframe.OpClose, closePayload(1000, ""), true), text(true, "late")}, 0,
		[]string{`close 1000 ""`}},
}

func TestClientFrames(t *testing.T) {
	for _, tt := range frameTests {
		t.Run(tt.name, func(t *testing.T) {
			var stream []byte
			for _, f := range tt.stream {
				stream = append(stream, f...)
			}
			want := strings.Join(tt.want, "\n")
			if got := strings.Join(parseStream([][]byte{bytes.Clone(stream)}, tt.limit), "\n"); got != want {
				t.Fatalf("in one read:\n%s\nwant:\n%s", got, want)
			}
			// Cut at every byte, and read byte by byte: the same result,
			// since a frame is acted on only once it is whole.
			for i := 0; i < len(stream); i++ {
				if i == 64 && len(stream) > 4096 {
					i = len(stream) - 64 // a long payload's middle is all alike
				}
				s := bytes.Clone(stream)
				if got := strings.Join(parseStream([][]byte{s[:i], s[i:]}, tt.limit), "\n"); got != want {
					t.Fatalf("cut at %d:\n%s\nwant:\n%s", i, got, want)
				}
			}
			if len(stream) < 4096 {
				s := bytes.Clone(stream)
				var chunks [][]byte
				for i := range s {
					chunks = append(chunks, s[i:i+1])
				}
				if got := strings.Join(parseStream(chunks, tt.limit), "\n"); got != want {
					t.Fatalf("byte by byte:\n%s\nwant:\n%s", got, want)
				}
			}
		})
	}
}

// TestClientFramesTruncated checks that an incomplete frame is neither
// used nor changed (its mask is applied only once it is whole), and that
// a header over the limit is refused before its payload arrives.
func TestClientFramesTruncated(t *testing.T) {
	f := text(true, strings.Repeat("x", 200))
	for i := range len(f) {
		b := bytes.Clone(f[:i])
		var r clientFrames
		res, n := r.next(b, 0)
		if res.event != frameMore || n != 0 || !bytes.Equal(b, f[:i]) {
			t.Fatalf("%d bytes: event %d, used %d, changed %v", i, res.event, n, !bytes.Equal(b, f[:i]))
		}
	}
	var r clientFrames
	if res, _ := r.next(f[:4], 100); res.event != frameError || res.code != websocket.CloseMessageTooBig {
		t.Fatalf("header over the limit: %+v", res)
	}
}

// FuzzClientFrames: any byte stream, cut anywhere, gives the same events
// as in one read, never a message over the limit, and never a panic.
func FuzzClientFrames(f *testing.F) {
	for _, tt := range frameTests {
		var stream []byte
		for _, fr := range tt.stream {
			stream = append(stream, fr...)
		}
		f.Add(stream, uint16(len(stream)/2), uint16(tt.limit))
	}
	f.Fuzz(func(t *testing.T, stream []byte, cut, limit uint16) {
		c := int(cut) % (len(stream) + 1)
		whole := parseStream([][]byte{bytes.Clone(stream)}, int64(limit))
		s := bytes.Clone(stream)
		split := parseStream([][]byte{s[:c], s[c:]}, int64(limit))
		if strings.Join(whole, "\n") != strings.Join(split, "\n") {
			t.Fatalf("cut at %d:\n%q\nin one read:\n%q", c, split, whole)
		}
		var r clientFrames
		data := bytes.Clone(stream)
		for {
			res, n := r.next(data, int64(limit))
			if n < 0 || n > len(data) {
				t.Fatalf("used %d of %d bytes", n, len(data))
			}
			data = data[n:]
			if res.event == frameMessage && limit > 0 && len(res.data) > int(limit) {
				t.Fatalf("message of %d bytes over the limit %d", len(res.data), limit)
			}
			if (res.event == frameMore && n == 0) || res.event == frameError || res.event == frameClose {
				break
			}
		}
	})
}

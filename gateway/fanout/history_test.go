package fanout

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
)

// A channel that asked for history is held from its join until Release:
// it then gets, in order, only the broadcasts after the position its
// history ended at, each with its position as the frame's ref; a plain
// channel in the same room is not held and gets Phoenix's frames.
func TestHistoryHoldAndRelease(t *testing.T) {
	h, _ := newHub(t)
	ctx := context.Background()
	hist, plain := newSink(h, nil, wire.V2), newSink(h, nil, wire.V2)
	pos, err := h.Join(ctx, "rooms:lobby", hist.sess, &session.Want{History: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Join(ctx, "rooms:lobby", plain.sess, nil); err != nil {
		t.Fatal(err)
	}
	subject, _ := proto.RoomSubject("rooms:lobby")
	msg := func(body string) []byte { return []byte(`{"event":"new_msg","payload":{"body":"` + body + `"}}`) }
	for i, body := range []string{"a", "b", "c"} {
		h.dispatch(subject, pos+1+uint64(i), msg(body))
	}
	if n := len(plain.frames); n != 3 {
		t.Fatalf("plain channel got %d frames, want 3 (it is never held)", n)
	}
	if string(plain.frames[0].Data) != `[null,null,"rooms:lobby","new_msg",{"body":"a"}]` {
		t.Fatalf("plain frame %s", plain.frames[0].Data)
	}
	if n := len(hist.frames); n != 0 {
		t.Fatalf("held channel got %d frames before Release", n)
	}
	// Its history ended at "a": it gets b and c, then the live d.
	h.Release("rooms:lobby", hist.sess, pos+1)
	h.dispatch(subject, pos+4, msg("d"))
	var got []string
	for _, f := range hist.frames {
		got = append(got, string(f.Data))
	}
	ref := func(n uint64) string { return proto.FormatPosition(pos + n) }
	want := []string{
		`[null,"` + ref(2) + `","rooms:lobby","new_msg",{"body":"b"}]`,
		`[null,"` + ref(3) + `","rooms:lobby","new_msg",{"body":"c"}]`,
		`[null,"` + ref(4) + `","rooms:lobby","new_msg",{"body":"d"}]`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("held channel got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// A position from another gateway ahead of this one: nothing at or
	// before it is delivered.
	h.Release("rooms:lobby", hist.sess, pos+10)
	h.dispatch(subject, pos+5, msg("e"))
	if n := len(hist.frames); n != 3 {
		t.Fatalf("a broadcast before the channel's position was delivered (%d frames)", n)
	}
}

// A hold that overflows ends the channel with phx_error (the client
// rejoins from the position it has) rather than grow without bound.
func TestHistoryHoldOverflow(t *testing.T) {
	h, _ := newHub(t)
	s := newSink(h, nil, wire.V2)
	pos, err := h.Join(context.Background(), "rooms:lobby", s.sess, &session.Want{History: true})
	if err != nil {
		t.Fatal(err)
	}
	subject, _ := proto.RoomSubject("rooms:lobby")
	for i := range maxHeld + 1 {
		h.dispatch(subject, pos+1+uint64(i), []byte(`{"event":"new_msg","payload":{}}`))
	}
	h.Release("rooms:lobby", s.sess, pos)
	if h.Rooms() != 0 {
		t.Fatalf("rooms %d: an overflowed hold must end the channel", h.Rooms())
	}
	if n := len(s.frames); n != 0 {
		t.Fatalf("%d frames of an overflowed hold delivered", n)
	}
}

// Join's position is where the reader stands: a member that joins after
// broadcasts were read gets exactly the later ones.
func TestJoinPosition(t *testing.T) {
	h, pub := newHub(t)
	ctx := context.Background()
	first := newSink(h, nil, wire.V2)
	p0, err := h.Join(ctx, "rooms:lobby", first.sess, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Publish(ctx, pub, "rooms:lobby", "new_msg", map[string]string{"body": "x"}); err != nil {
		t.Fatal(err)
	}
	first.wait(t)
	second := newSink(h, nil, wire.V2)
	deadline := time.Now().Add(5 * time.Second)
	for {
		p1, err := h.Join(ctx, "rooms:other", second.sess, nil)
		if err != nil {
			t.Fatal(err)
		}
		if p1 == p0+1 {
			break // a new room starts where the reader stands
		}
		if time.Now().After(deadline) {
			t.Fatalf("position %d after one broadcast from %d", p1, p0)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

package fanout

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/gateway/metrics"
	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
	"github.com/phxnats/phxnats/proto/natstest"
)

type sink struct {
	ser    wire.Serializer
	mu     sync.Mutex
	frames []Frame
	got    chan struct{}
}

func newSink(ser wire.Serializer) *sink { return &sink{ser: ser, got: make(chan struct{}, 100)} }

func (s *sink) Serializer() wire.Serializer    { return s.ser }
func (s *sink) Skips(from string, _ bool) bool { return from == "ignored" }
func (s *sink) Deliver(f Frame) {
	s.mu.Lock()
	s.frames = append(s.frames, f)
	s.mu.Unlock()
	s.got <- struct{}{}
}

func (s *sink) wait(t *testing.T) Frame {
	t.Helper()
	select {
	case <-s.got:
	case <-time.After(5 * time.Second):
		t.Fatal("no frame delivered")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.frames[len(s.frames)-1]
}

func TestEncodeOncePerSerializer(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{NoJetStream: true})
	nc := natstest.Connect(t, srv)
	h := New(nc, slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New())
	ctx := context.Background()
	v2a, v2b, v1 := newSink(wire.V2), newSink(wire.V2), newSink(wire.V1)
	for _, s := range []*sink{v2a, v2b, v1} {
		if err := h.Join(ctx, "rooms:lobby", s); err != nil {
			t.Fatal(err)
		}
	}
	if h.Rooms() != 1 {
		t.Fatalf("rooms = %d, want one subscription for three members", h.Rooms())
	}
	pub := natstest.Connect(t, srv)
	if err := proto.Publish(ctx, pub, "rooms:lobby", "new_msg", map[string]string{"body": "hi"}); err != nil {
		t.Fatal(err)
	}
	a, b, c := v2a.wait(t), v2b.wait(t), v1.wait(t)
	if string(a.Data) != `[null,null,"rooms:lobby","new_msg",{"body":"hi"}]` {
		t.Fatalf("v2 frame %s", a.Data)
	}
	if &a.Data[0] != &b.Data[0] {
		t.Error("two V2 sockets got separately encoded copies; want the same bytes")
	}
	if string(c.Data) != `{"event":"new_msg","payload":{"body":"hi"},"ref":null,"topic":"rooms:lobby"}` {
		t.Fatalf("v1 frame %s", c.Data)
	}

	// The last leave unsubscribes; a later broadcast reaches nobody.
	for _, s := range []*sink{v2a, v2b, v1} {
		h.Leave("rooms:lobby", s)
	}
	if h.Rooms() != 0 {
		t.Fatalf("rooms = %d after every member left", h.Rooms())
	}
	if err := proto.Publish(ctx, pub, "rooms:lobby", "new_msg", map[string]string{"body": "gone"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v2a.got:
		t.Fatal("delivered after leave")
	case <-time.After(100 * time.Millisecond):
	}
}

func BenchmarkDispatch1000(b *testing.B) {
	srv := natstest.Start(b, natstest.Options{NoJetStream: true})
	nc := natstest.Connect(b, srv)
	h := New(nc, slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New())
	r := &room{topic: "rooms:lobby", members: map[Subscriber]struct{}{}}
	for i := 0; i < 1000; i++ {
		r.members[&countSink{}] = struct{}{}
	}
	msg := natsMsg(`{"event":"new_msg","payload":{"body":"hello world"}}`)
	b.ReportAllocs()
	for b.Loop() {
		h.dispatch(r, msg)
	}
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "deliveries/s")
}

type countSink struct{ n int }

func (c *countSink) Serializer() wire.Serializer { return wire.V2 }
func (c *countSink) Deliver(Frame)               { c.n++ }
func (c *countSink) Skips(string, bool) bool     { return false }

func natsMsg(data string) *nats.Msg {
	return &nats.Msg{Subject: "phx.room.rooms:lobby", Data: []byte(data)}
}

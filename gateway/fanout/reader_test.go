package fanout

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/gateway/metrics"
	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
)

// atomicSink is a transport that counts deliveries from the reader's
// goroutine.
type atomicSink struct{ n atomic.Int64 }

func (c *atomicSink) Serializer() wire.Serializer { return wire.V2 }
func (c *atomicSink) Deliver(session.Frame)       { c.n.Add(1) }
func (c *atomicSink) Close(session.Disconnect)    {}

// BenchmarkReadStream measures the reader: b.N messages stored in the room
// stream while the Hub reads it, until the one local socket has them all
// (one NATS server on loopback, up to 2,000 publishes awaiting their acks).
func BenchmarkReadStream(b *testing.B) {
	h, pub := newHub(b)
	s := &atomicSink{}
	sess, _ := session.New(&session.Config{Rooms: h, Metrics: metrics.New(), Logger: quiet, Gateway: "gw"}, s, "", "")
	if _, err := h.Join(context.Background(), "rooms:lobby", sess, nil); err != nil {
		b.Fatal(err)
	}
	msg := []byte(`{"event":"new_msg","payload":{"body":"hello world"}}`)
	js, err := jetstream.New(pub, jetstream.WithPublishAsyncMaxPending(2000))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := js.PublishAsync("phx.room.rooms:lobby", msg); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	deadline := time.Now().Add(time.Minute)
	for s.n.Load() < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d delivered", s.n.Load(), b.N)
		}
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkReadStored measures the reader alone: b.N messages already in
// the stream, read from the first by a new reader (consumer creation
// included).
func BenchmarkReadStored(b *testing.B) {
	h, pub := newHub(b)
	js, err := jetstream.New(pub, jetstream.WithPublishAsyncMaxPending(2000))
	if err != nil {
		b.Fatal(err)
	}
	msg := []byte(`{"event":"new_msg","payload":{"body":"hello world"}}`)
	for range b.N {
		if _, err := js.PublishAsync("phx.room.rooms:lobby", msg); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	var n atomic.Int64
	all := make(chan struct{})
	rd := &reader{nc: h.opts.Conn, js: h.js, heartbeat: time.Second, next: 1,
		deliver: func(string, uint64, []byte) {
			if n.Add(1) == int64(b.N) {
				close(all)
			}
		},
		onError: func(err error) { b.Error(err) }, onGap: func(from, to uint64) { b.Errorf("gap %d-%d", from, to) },
		restart: make(chan struct{}, 1), done: make(chan struct{})}
	b.ResetTimer()
	if _, err := rd.consume(context.Background()); err != nil {
		b.Fatal(err)
	}
	select {
	case <-all:
	case <-time.After(time.Minute):
		b.Fatalf("%d of %d delivered", n.Load(), b.N)
	}
	b.StopTimer()
	rd.stop()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// A message the stream drops before the reader's consumer sent it leaves
// the consumer's own sequence contiguous; the jump in the stream's
// sequence is what tells the reader it lost something.
func TestReaderReportsStreamSequenceGaps(t *testing.T) {
	h, pub := newHub(t)
	js, err := jetstream.New(pub)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 10 {
		if _, err := js.Publish(ctx, "phx.room.rooms:lobby", fmt.Appendf(nil, `{"event":"new_msg","payload":{"n":%d}}`, i+1)); err != nil {
			t.Fatal(err)
		}
	}
	st, err := js.Stream(ctx, proto.RoomStream)
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{4, 5, 9} { // unread: the reader starts at 1
		if err := st.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var got []uint64
	var gaps [][2]uint64
	done := make(chan struct{})
	rd := &reader{nc: h.opts.Conn, js: h.js, heartbeat: time.Second, next: 1,
		deliver: func(_ string, _ uint64, data []byte) {
			var b struct{ Payload struct{ N uint64 } }
			_ = json.Unmarshal(data, &b)
			mu.Lock()
			got = append(got, b.Payload.N)
			if len(got) == 7 {
				close(done)
			}
			mu.Unlock()
		},
		onError: func(err error) { t.Error(err) },
		onGap: func(from, to uint64) {
			mu.Lock()
			gaps = append(gaps, [2]uint64{from, to})
			mu.Unlock()
		},
		restart: make(chan struct{}, 1), done: make(chan struct{})}
	if _, err := rd.consume(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rd.stop)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("not every stored message was delivered")
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []uint64{1, 2, 3, 6, 7, 8, 10}; !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	if want := [][2]uint64{{4, 5}, {9, 9}}; !slices.Equal(gaps, want) {
		t.Fatalf("gaps %v, want %v", gaps, want)
	}
}

// A new consumer that starts past messages the stream dropped may deliver
// its first message before the reader has reported the gap: the gap must
// still reach the members first, and once. (Found by the history fault
// tests: a broadcast after the gap could reach a channel before its
// phx_error, and its position would then jump the gap on rejoin.)
func TestReaderReportsAGapBeforeWhatFollows(t *testing.T) {
	var events []string
	rd := &reader{next: 5, gen: 1, name: "c1",
		deliver: func(_ string, seq uint64, _ []byte) { events = append(events, fmt.Sprint("deliver ", seq)) },
		onGap:   func(from, to uint64) { events = append(events, fmt.Sprint("gap ", from, "-", to)) },
		onError: func(error) {},
		restart: make(chan struct{}, 1), done: make(chan struct{}),
	}
	// consume found the stream starting at 9: 5..8 are gone.
	rd.gap = [2]uint64{5, 8}
	msg := func(stream, consumer uint64) *nats.Msg {
		return &nats.Msg{Subject: "phx.room.rooms:lobby", Data: []byte(`{}`), Sub: &nats.Subscription{},
			Reply: fmt.Sprintf("$JS.ACK.%s.c1.1.%d.%d.1700000000000000000.0", proto.RoomStream, stream, consumer)}
	}
	rd.receive(1, "c1", msg(9, 1)) // the consumer's first message, before consume returned
	rd.reportGap()                 // then the supervisor
	rd.receive(1, "c1", msg(10, 2))
	if want := []string{"gap 5-8", "deliver 9", "deliver 10"}; !slices.Equal(events, want) {
		t.Fatalf("events %q, want %q", events, want)
	}

	// The other order: the supervisor first, then the messages.
	events = nil
	rd.gap, rd.next, rd.dseq = [2]uint64{11, 12}, 11, 0
	rd.reportGap()
	rd.receive(1, "c1", msg(13, 1))
	if want := []string{"gap 11-12", "deliver 13"}; !slices.Equal(events, want) {
		t.Fatalf("events %q, want %q", events, want)
	}
}

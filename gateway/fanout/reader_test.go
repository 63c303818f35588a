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

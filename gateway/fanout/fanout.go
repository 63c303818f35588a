// Package fanout delivers room broadcasts from NATS to the sockets of one
// gateway.
//
// A Hub reads each room from the JetStream stream proto.RoomStream through
// one consumer, however many local sockets joined it: the first
// local join creates it, the last leave stops it. Reading the stream rather
// than a core subscription is what makes an acknowledged broadcast reach
// every member: the consumer starts at a stream sequence, so a broadcast
// stored after a join was answered is delivered even before the gateway's
// interest has spread through a NATS cluster, and after a NATS failure the
// room's reader (reader.go) replaces the consumer with one that starts after
// the last message delivered, so nothing published meanwhile is lost or
// duplicated. Every gateway also sees a room in the stream's one order.
//
// Each broadcast is validated and encoded once per serializer version, and
// the same bytes are handed to every local subscriber, which must queue them
// without blocking (a slow socket is the socket's problem, never the room's).
package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/gateway/metrics"
	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
)

// Frame is one encoded WebSocket message. Data is shared between sockets
// and must never be modified.
type Frame struct {
	Data   []byte
	Binary bool
}

// Subscriber is a local socket that receives room broadcasts.
type Subscriber interface {
	// Serializer is the wire format the socket speaks.
	Serializer() wire.Serializer
	// Deliver queues f for sending. It must not block; a subscriber whose
	// queue is full closes itself.
	Deliver(f Frame)
	// Skips reports whether a broadcast From a user must not reach this
	// subscriber (its user ignores them, or excludeFrom and it is theirs).
	Skips(from string, excludeFrom bool) bool
	// RoomLost tells the subscriber that broadcasts of topic may have been
	// missed (they left the stream before the gateway could read them):
	// like a crashed Phoenix channel, it must end its channel with
	// phx_error so that the client rejoins and catches up its own way. It
	// is called without the Hub's locks held and may call Leave.
	RoomLost(topic string)
}

// Options configure a Hub.
type Options struct {
	// Conn is the NATS connection; required.
	Conn *nats.Conn
	// Heartbeat is how often the NATS server proves a room's consumer is
	// alive when the room is quiet; a consumer silent for two heartbeats
	// (its NATS node died) is recreated where the last one stopped.
	// Default 2s, within 500ms-30s; a quiet room costs one small message
	// per heartbeat.
	Heartbeat time.Duration
	// Linger keeps a room's consumer this long after its last local
	// member left, so that a socket that reconnects and rejoins (phoenix.js
	// after a network blip, a page reload) finds it running instead of
	// costing a new consumer, which on a NATS cluster goes through the
	// JetStream meta leader. Zero stops it with the last leave.
	Linger time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics defaults to a fresh metrics.New().
	Metrics *metrics.Metrics
}

// Hub maps rooms to local subscribers.
type Hub struct {
	js      jetstream.JetStream
	opts    Options
	log     *slog.Logger
	metrics *metrics.Metrics

	mu    sync.Mutex
	rooms map[string]*room
}

type room struct {
	topic string
	// ready is closed once the room's consumer exists (or err is set), so
	// that a join is acknowledged only when broadcasts will reach it.
	ready chan struct{}
	err   error
	rd    *reader
	// linger, while set, ends the room unless a member joins first.
	// Guarded by Hub.mu.
	linger *time.Timer

	mu sync.RWMutex
	// members in a slice, because dispatch walks it for every broadcast
	// (a slice walk is several times cheaper than a map's), and their
	// positions in it, for removal.
	members []Subscriber
	index   map[Subscriber]int
}

// add makes s a member; adding a member again does nothing. r.mu is held.
func (r *room) add(s Subscriber) {
	if _, ok := r.index[s]; !ok {
		r.index[s] = len(r.members)
		r.members = append(r.members, s)
	}
}

// remove takes s out, moving the last member into its place. r.mu is held.
func (r *room) remove(s Subscriber) {
	i, ok := r.index[s]
	if !ok {
		return
	}
	last := len(r.members) - 1
	r.members[i] = r.members[last]
	r.index[r.members[i]] = i
	r.members[last] = nil
	r.members = r.members[:last]
	delete(r.index, s)
}

// New creates a Hub.
func New(opts Options) (*Hub, error) {
	if opts.Conn == nil {
		return nil, errors.New("fanout: Options.Conn is required")
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 2 * time.Second
	}
	// nats.go refuses other values when a room's consumer starts, which
	// would fail every join; say so at start instead.
	if opts.Heartbeat < 500*time.Millisecond || opts.Heartbeat > 30*time.Second {
		return nil, fmt.Errorf("fanout: room heartbeat %s: must be within 500ms-30s", opts.Heartbeat)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	js, err := jetstream.New(opts.Conn)
	if err != nil {
		return nil, fmt.Errorf("fanout: %w", err)
	}
	h := &Hub{js: js, opts: opts, log: opts.Logger, metrics: opts.Metrics, rooms: make(map[string]*room)}
	go h.watchReconnects(opts.Conn.StatusChanged(nats.CONNECTED, nats.CLOSED))
	return h, nil
}

// Join adds s to topic's room, starting the room's consumer if s is the
// first local member. It returns once broadcasts stored from now on will
// reach s.
func (h *Hub) Join(ctx context.Context, topic string, s Subscriber) error {
	subject, err := proto.RoomSubject(topic)
	if err != nil {
		return err
	}
	h.mu.Lock()
	r := h.rooms[topic]
	if r != nil && r.linger != nil {
		r.linger.Stop()
		r.linger = nil
	}
	if r == nil {
		r = &room{topic: topic, ready: make(chan struct{}), index: make(map[Subscriber]int)}
		h.rooms[topic] = r
		h.metrics.Rooms.Inc()
		r.rd = &reader{
			js: h.js, subject: subject, heartbeat: h.opts.Heartbeat,
			deliver: func(data []byte) { h.dispatch(r, data) },
			onError: func(err error) {
				h.metrics.RoomConsumerErrors.Inc()
				h.log.Warn("room consumer", "topic", topic, "err", err)
			},
			onGap:   func(from, to uint64) { h.lost(r, from, to) },
			restart: make(chan struct{}, 1),
			done:    make(chan struct{}),
		}
		go func() {
			defer close(r.ready)
			// Not the joiner's context: other members may wait on this room.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r.err = r.rd.start(ctx)
		}()
	}
	r.mu.Lock()
	r.add(s)
	r.mu.Unlock()
	h.mu.Unlock()

	select {
	case <-r.ready:
		if r.err != nil {
			h.Leave(topic, s)
			return r.err
		}
		return nil
	case <-ctx.Done():
		h.Leave(topic, s)
		return ctx.Err()
	}
}

// Leave removes s from topic's room; the room's consumer stops Linger
// after the last local member left. Leaving a room one is not in does
// nothing.
func (h *Hub) Leave(topic string, s Subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[topic]
	if r == nil {
		return
	}
	r.mu.Lock()
	r.remove(s)
	empty := len(r.members) == 0
	r.mu.Unlock()
	if !empty {
		return
	}
	failed := false
	select {
	case <-r.ready:
		failed = r.err != nil // the next join must try again
	default:
	}
	if h.opts.Linger > 0 && !failed {
		if r.linger == nil {
			r.linger = time.AfterFunc(h.opts.Linger, func() { h.expire(r) })
		}
		return
	}
	h.drop(r)
}

// expire ends r if it is still without members when its linger is over.
func (h *Hub) expire(r *room) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rooms[r.topic] != r || r.linger == nil {
		return // rejoined, or already gone
	}
	r.linger = nil
	r.mu.RLock()
	empty := len(r.members) == 0
	r.mu.RUnlock()
	if empty {
		h.drop(r)
	}
}

// drop removes r and stops its consumer. h.mu is held.
func (h *Hub) drop(r *room) {
	delete(h.rooms, r.topic)
	h.metrics.Rooms.Dec()
	go h.stop(r)
}

// stop ends r's reader once it has started.
func (h *Hub) stop(r *room) {
	<-r.ready
	if r.err == nil {
		r.rd.stop()
	}
}

// watchReconnects has every room replace its consumer after a NATS
// reconnect: what the server sent while the connection was down went to
// an inbox nobody listened to.
func (h *Hub) watchReconnects(events chan nats.Status) {
	for st := range events {
		if st == nats.CLOSED {
			return
		}
		h.mu.Lock()
		for _, r := range h.rooms {
			select {
			case <-r.ready:
				if r.err == nil {
					r.rd.replace()
				}
			default: // still starting: its first consumer is new anyway
			}
		}
		h.mu.Unlock()
	}
}

// lost tells every member of r that stream sequences from..to, which may
// have held some of r's broadcasts, are gone.
func (h *Hub) lost(r *room, from, to uint64) {
	h.metrics.RoomGaps.Inc()
	r.mu.RLock()
	members := slices.Clone(r.members)
	r.mu.RUnlock()
	h.log.Warn("room broadcasts lost before they could be read; members rejoin",
		"topic", r.topic, "first_seq", from, "last_seq", to, "members", len(members))
	for _, s := range members {
		s.RoomLost(r.topic)
	}
}

// Rooms returns the number of rooms with a consumer, lingering ones
// included.
func (h *Hub) Rooms() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.rooms)
}

func (h *Hub) dispatch(r *room, data []byte) {
	h.metrics.Broadcasts.Inc()
	b, err := proto.DecodeBroadcast(data)
	if err != nil {
		h.metrics.BroadcastsDropped.WithLabelValues("invalid").Inc()
		h.log.Warn("dropped malformed room message", "topic", r.topic, "err", err, "size", len(data))
		return
	}
	// Encode at most once per serializer: every V2 socket shares one
	// slice, every V1 socket another.
	var cache [2]struct {
		s wire.Serializer
		f Frame
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for _, s := range r.members {
		if b.From != "" && s.Skips(b.From, b.ExcludeFrom) {
			continue
		}
		ser := s.Serializer()
		var f Frame
		found := false
		for i := range cache {
			if cache[i].s == ser {
				f, found = cache[i].f, true
				break
			}
		}
		if !found {
			data, bin, err := encode(ser, r.topic, &b)
			if err != nil {
				h.log.Warn("cannot encode broadcast", "topic", r.topic, "vsn", ser.Vsn(), "err", err)
				continue
			}
			f = Frame{Data: data, Binary: bin}
			for i := range cache {
				if cache[i].s == nil {
					cache[i].s, cache[i].f = ser, f
					break
				}
			}
		}
		s.Deliver(f)
		n++
	}
	h.metrics.Deliveries.Add(float64(n))
}

var binaryUnsupported, _ = proto.Marshal(map[string]string{"error": proto.BinaryUnsupported})

// encode encodes b for one serializer. V1 cannot carry bytes, so a binary
// broadcast reaches V1 sockets as the same event with an error payload.
func encode(ser wire.Serializer, topic string, b *proto.Broadcast) ([]byte, bool, error) {
	if b.Binary == nil {
		return ser.AppendBroadcast(nil, topic, b.Event, b.Payload, false)
	}
	data, bin, err := ser.AppendBroadcast(nil, topic, b.Event, b.Binary, true)
	if errors.Is(err, wire.ErrBinaryUnsupported) {
		return ser.AppendBroadcast(nil, topic, b.Event, binaryUnsupported, false)
	}
	return data, bin, err
}

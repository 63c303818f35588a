// Package fanout delivers room broadcasts from NATS to the sockets of one
// gateway.
//
// A Hub reads the JetStream stream proto.RoomStream through one consumer
// for all its rooms, however many rooms and local sockets it has: the
// first local join starts it, and it stops Linger after the gateway's last
// member left. Each message goes to the local members of the room its
// subject names; a room with no local member costs the gateway a map
// lookup.
//
// One consumer per gateway rather than one per room: the NATS server finds
// a filtered consumer's next message by walking the stream from the last
// one it delivered, past every other room's messages, so with a consumer
// per room the server's work per delivery grew with the number of busy
// rooms (at 1,000 rooms in echo, 38% of the whole system's CPU went to
// that walk; BENCHMARKS.md). Every gateway reading every room is also what
// Phoenix.PubSub does: a broadcast goes to every node.
//
// Reading the stream rather than a core subscription is what makes an
// acknowledged broadcast reach every member: the consumer starts at a
// stream sequence, so a broadcast stored after a join was answered is
// delivered even before the gateway's interest has spread through a NATS
// cluster, and after a NATS failure the reader (reader.go) replaces the
// consumer with one that starts after the last message delivered, so
// nothing published meanwhile is lost or duplicated. Every gateway also
// sees a room in the stream's one order.
//
// Each broadcast is validated and encoded once per serializer version, and
// the same bytes are handed to every local subscriber, which must queue them
// without blocking (a slow socket is the socket's problem, never the room's).
package fanout

import (
	"bytes"
	"context"
	"encoding/json"
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
	// subscriber: excludeFrom and it is the user's own socket, or ignore
	// (its channel asked for proto.JoinIgnore) and its user ignores them.
	Skips(from string, excludeFrom, ignore bool) bool
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
	// Heartbeat is how often the NATS server proves the Hub's consumer is
	// alive when the rooms are quiet; a consumer silent for two heartbeats
	// (its NATS node died) is recreated where the last one stopped.
	// Default 2s, within 500ms-30s.
	Heartbeat time.Duration
	// Linger keeps the Hub's consumer this long after the gateway's last
	// local member left, so that sockets that reconnect and rejoin
	// (phoenix.js after a network blip, a page reload) find it running
	// instead of costing a new consumer, which on a NATS cluster goes
	// through the JetStream meta leader. Zero stops it with the last
	// leave.
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

	mu sync.RWMutex
	// rooms with local members, by subject: a stream message names its
	// room by subject, so dispatch finds it without decoding the topic.
	rooms map[string]*room
	feed  *feed
	// idle, while set, stops the feed unless a member joins first; idleGen
	// tells a stale timer's callback from the current one's.
	idle    *time.Timer
	idleGen uint64
}

// feed is the Hub's reader of the whole room stream, started by the first
// join and stopped Linger after the gateway's last member left.
type feed struct {
	// ready is closed once the reader's consumer exists (or err is set),
	// so that a join is acknowledged only when broadcasts will reach it.
	ready chan struct{}
	err   error
	rd    *reader
}

// failed reports whether the feed could not start; the next join starts
// another.
func (f *feed) failed() bool {
	select {
	case <-f.ready:
		return f.err != nil
	default:
		return false
	}
}

// Want is what one channel's join asked to receive beyond the channels
// guide's frames (proto.JoinFlags of its phx_join payload). A channel that
// asked for nothing has a nil *Want, and dispatch sends it the guide's
// frames without looking further.
type Want struct {
	// Sender: payloads of broadcasts with a From get it as "user_id".
	Sender bool
	// Ignore: broadcasts From users the socket's user ignores are skipped.
	Ignore bool
	// Flags are all the join parameters asked for with true, matched
	// against proto.Broadcast.OptIn.
	Flags []string
}

// WantOf returns what a join with the given flags (proto.JoinFlags) asks
// for, nil when nothing.
func WantOf(flags []string) *Want {
	if len(flags) == 0 {
		return nil
	}
	return &Want{
		Sender: slices.Contains(flags, proto.JoinSender),
		Ignore: slices.Contains(flags, proto.JoinIgnore),
		Flags:  flags,
	}
}

// member is a subscriber in a room, with what its channel asked for.
type member struct {
	s    Subscriber
	want *Want
}

type room struct {
	topic string

	mu sync.RWMutex
	// members in a slice, because dispatch walks it for every broadcast
	// (a slice walk is several times cheaper than a map's), and their
	// positions in it, for removal.
	members []member
	index   map[Subscriber]int
}

// add makes s a member; adding a member again (a duplicate join) only
// replaces what it asked for. r.mu is held.
func (r *room) add(s Subscriber, want *Want) {
	if i, ok := r.index[s]; ok {
		r.members[i].want = want
		return
	}
	r.index[s] = len(r.members)
	r.members = append(r.members, member{s, want})
}

// remove takes s out, moving the last member into its place. r.mu is held.
func (r *room) remove(s Subscriber) {
	i, ok := r.index[s]
	if !ok {
		return
	}
	last := len(r.members) - 1
	r.members[i] = r.members[last]
	r.index[r.members[i].s] = i
	r.members[last] = member{}
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
	// nats.go refuses other values when the feed's consumer starts, which
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

// Join adds s to topic's room, starting the Hub's reader of the room
// stream if it is not running. want is what its channel asked for beyond
// the guide (nil: nothing); joining again replaces it. It returns once
// broadcasts stored from now on will reach s.
func (h *Hub) Join(ctx context.Context, topic string, s Subscriber, want *Want) error {
	subject, err := proto.RoomSubject(topic)
	if err != nil {
		return err
	}
	h.mu.Lock()
	if h.idle != nil {
		h.idle.Stop()
		h.idle = nil
	}
	if h.feed == nil || h.feed.failed() {
		h.feed = h.startFeed()
	}
	f := h.feed
	r := h.rooms[subject]
	if r == nil {
		r = &room{topic: topic, index: make(map[Subscriber]int)}
		h.rooms[subject] = r
		h.metrics.Rooms.Inc()
	}
	r.mu.Lock()
	r.add(s, want)
	r.mu.Unlock()
	h.mu.Unlock()

	select {
	case <-f.ready:
		if f.err != nil {
			h.Leave(topic, s)
			return f.err
		}
		return nil
	case <-ctx.Done():
		h.Leave(topic, s)
		return ctx.Err()
	}
}

func (h *Hub) startFeed() *feed {
	f := &feed{ready: make(chan struct{})}
	f.rd = &reader{
		nc: h.opts.Conn, js: h.js, heartbeat: h.opts.Heartbeat,
		deliver: h.dispatch,
		onError: func(err error) {
			h.metrics.RoomConsumerErrors.Inc()
			h.log.Warn("room stream consumer", "err", err)
		},
		onGap:   h.lost,
		restart: make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	go func() {
		defer close(f.ready)
		// Not the joiner's context: other joins may wait on the feed.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		f.err = f.rd.start(ctx)
	}()
	return f
}

// Leave removes s from topic's room; the Hub's reader stops Linger after
// the gateway's last member left. Leaving a room one is not in does
// nothing.
func (h *Hub) Leave(topic string, s Subscriber) {
	subject, err := proto.RoomSubject(topic)
	if err != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[subject]
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
	delete(h.rooms, subject)
	h.metrics.Rooms.Dec()
	if len(h.rooms) > 0 || h.feed == nil || h.idle != nil {
		return
	}
	if h.feed.failed() {
		h.feed = nil
		return
	}
	if h.opts.Linger > 0 {
		h.idleGen++
		gen := h.idleGen
		h.idle = time.AfterFunc(h.opts.Linger, func() { h.expire(gen) })
		return
	}
	h.dropFeed()
}

// expire stops the feed if the gateway still has no member when the
// linger that generation gen started is over.
func (h *Hub) expire(gen uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.idle == nil || gen != h.idleGen {
		return // a member joined meanwhile
	}
	h.idle = nil
	if len(h.rooms) == 0 && h.feed != nil {
		h.dropFeed()
	}
}

// dropFeed stops the feed once it has started. h.mu is held.
func (h *Hub) dropFeed() {
	f := h.feed
	h.feed = nil
	go func() {
		<-f.ready
		if f.err == nil {
			f.rd.stop()
		}
	}()
}

// reading reports whether the Hub's reader of the room stream is running
// or starting (it lingers after the last member left).
func (h *Hub) reading() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.feed != nil
}

// watchReconnects has the feed replace its consumer after a NATS
// reconnect: what the server sent while the connection was down went to
// an inbox nobody listened to.
func (h *Hub) watchReconnects(events chan nats.Status) {
	for st := range events {
		if st == nats.CLOSED {
			return
		}
		h.mu.RLock()
		f := h.feed
		h.mu.RUnlock()
		if f == nil {
			continue
		}
		select {
		case <-f.ready:
			if f.err == nil {
				f.rd.replace()
			}
		default: // still starting: its first consumer is new anyway
		}
	}
}

// lost tells every local member of every room that stream sequences
// from..to, which may have held some of their broadcasts, are gone.
func (h *Hub) lost(from, to uint64) {
	h.metrics.RoomGaps.Inc()
	type loss struct {
		topic   string
		members []Subscriber
	}
	var losses []loss
	h.mu.RLock()
	for _, r := range h.rooms {
		r.mu.RLock()
		l := loss{topic: r.topic, members: make([]Subscriber, len(r.members))}
		for i, m := range r.members {
			l.members[i] = m.s
		}
		losses = append(losses, l)
		r.mu.RUnlock()
	}
	h.mu.RUnlock()
	h.log.Warn("room broadcasts lost before they could be read; members rejoin",
		"first_seq", from, "last_seq", to, "rooms", len(losses))
	for _, l := range losses {
		for _, s := range l.members {
			s.RoomLost(l.topic)
		}
	}
}

// Rooms returns the number of rooms with local members.
func (h *Hub) Rooms() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.rooms)
}

// dispatch hands a stream message to its room's local members, if the
// gateway has any.
func (h *Hub) dispatch(subject string, data []byte) {
	h.mu.RLock()
	r := h.rooms[subject]
	h.mu.RUnlock()
	if r == nil {
		return // another gateway's room
	}
	h.metrics.Broadcasts.Inc()
	b, err := proto.DecodeBroadcast(data)
	if err != nil {
		h.metrics.BroadcastsDropped.WithLabelValues("invalid").Inc()
		h.log.Warn("dropped malformed room message", "topic", r.topic, "err", err, "size", len(data))
		return
	}
	// Encode at most once per serializer and variant: every V2 socket
	// that asked for nothing shares one slice, every V1 socket another,
	// and each serializer has at most one more for channels that asked
	// for the sender.
	sender := b.From != "" && b.Binary == nil
	var cache [4]struct {
		s      wire.Serializer
		sender bool
		f      Frame
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for i := range r.members {
		m := &r.members[i]
		var ignore, withSender bool
		if w := m.want; w != nil {
			if b.OptIn != "" && !slices.Contains(w.Flags, b.OptIn) {
				continue
			}
			ignore, withSender = w.Ignore, sender && w.Sender
		} else if b.OptIn != "" {
			continue
		}
		if b.From != "" && (ignore || b.ExcludeFrom) && m.s.Skips(b.From, b.ExcludeFrom, ignore) {
			continue
		}
		ser := m.s.Serializer()
		var f Frame
		found := false
		for i := range cache {
			if cache[i].s == ser && cache[i].sender == withSender {
				f, found = cache[i].f, true
				break
			}
		}
		if !found {
			data, bin, err := encode(ser, r.topic, &b, withSender)
			if err != nil {
				h.log.Warn("cannot encode broadcast", "topic", r.topic, "vsn", ser.Vsn(), "err", err)
				continue
			}
			f = Frame{Data: data, Binary: bin}
			for i := range cache {
				if cache[i].s == nil {
					cache[i].s, cache[i].sender, cache[i].f = ser, withSender, f
					break
				}
			}
		}
		m.s.Deliver(f)
		n++
	}
	h.metrics.Deliveries.Add(float64(n))
}

var binaryUnsupported, _ = proto.Marshal(map[string]string{"error": proto.BinaryUnsupported})

// encode encodes b for one serializer, with b.From added to the payload
// as "user_id" when withSender. V1 cannot carry bytes, so a binary
// broadcast reaches V1 sockets as the same event with an error payload.
func encode(ser wire.Serializer, topic string, b *proto.Broadcast, withSender bool) ([]byte, bool, error) {
	if b.Binary == nil {
		payload := b.Payload
		if withSender {
			payload = appendSender(nil, payload, b.From)
		}
		return ser.AppendBroadcast(nil, topic, b.Event, payload, false)
	}
	data, bin, err := ser.AppendBroadcast(nil, topic, b.Event, b.Binary, true)
	if errors.Is(err, wire.ErrBinaryUnsupported) {
		return ser.AppendBroadcast(nil, topic, b.Event, binaryUnsupported, false)
	}
	return data, bin, err
}

// appendSender appends the JSON object payload with "user_id": from added
// as its last key, where Phoenix's Jason puts it for %{body: ..., user_id:
// ...}. A payload that already has a "user_id" (user_joined's names the
// user who joined) is appended as it is.
func appendSender(dst, payload []byte, from string) []byte {
	if hasKey(payload, "user_id") {
		return append(dst, payload...)
	}
	obj := bytes.TrimRight(payload, " \t\r\n")
	obj = bytes.TrimRight(obj[:len(obj)-1], " \t\r\n") // without its '}'
	dst = append(dst, obj...)
	if obj[len(obj)-1] != '{' {
		dst = append(dst, ',')
	}
	dst = append(dst, `"user_id":`...)
	dst = wire.AppendJSONString(dst, from)
	return append(dst, '}')
}

// hasKey reports whether the JSON object obj has key at its top level.
func hasKey(obj []byte, key string) bool {
	if !bytes.Contains(obj, []byte(key)) {
		return false // most payloads: no need to parse
	}
	dec := json.NewDecoder(bytes.NewReader(obj))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return false
		}
		if t == key {
			return true
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return false
		}
	}
	return false
}

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
// Each broadcast is validated and encoded once per serializer, and the
// same bytes are handed to every local member (a session), whose transport
// must queue them without blocking (a slow socket is the socket's problem,
// never the room's).
package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/gateway/metrics"
	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/proto"
)

// Defaults of Options.
const (
	DefaultHeartbeat = 2 * time.Second
	DefaultLinger    = 30 * time.Second
)

// Options configure a Hub.
type Options struct {
	// Conn is the NATS connection; required.
	Conn *nats.Conn
	// Heartbeat is how often the NATS server proves the Hub's consumer is
	// alive when the rooms are quiet; a consumer silent for two heartbeats
	// (its NATS node died) is recreated where the last one stopped.
	// Default DefaultHeartbeat, within 500ms-30s.
	Heartbeat time.Duration
	// Linger keeps the Hub's consumer this long after the gateway's last
	// local member left, so that sockets that reconnect and rejoin
	// (phoenix.js after a network blip, a page reload) find it running
	// instead of costing a new consumer, which on a NATS cluster goes
	// through the JetStream meta leader. Default DefaultLinger; session.Off
	// stops it with the last leave.
	Linger time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics defaults to a fresh metrics.New().
	Metrics *metrics.Metrics
}

// Hub maps rooms to their local members, the sessions joined to them.
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
	// pos is the stream sequence of the last message dispatch looked up
	// (stored under mu's read lock), or where the reader started.
	pos atomic.Uint64
	// idle, while set, stops the feed unless a member joins first; idleGen
	// tells a stale timer's callback from the current one's.
	idle    *time.Timer
	idleGen uint64
	closed  bool
}

// feed is the Hub's reader of the whole room stream, started by the first
// join and stopped Linger after the gateway's last member left.
type feed struct {
	// ready is closed once the reader's consumer exists (or err is set),
	// so that a join is acknowledged only when broadcasts will reach it.
	ready chan struct{}
	err   error
	rd    *reader
	// start is the stream's last sequence when the reader started; set
	// before ready is closed, and once startedAt is.
	start     uint64
	startedAt atomic.Bool
}

// started reports whether the reader has taken its start position.
func (f *feed) started() bool { return f.startedAt.Load() }

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

// New creates a Hub.
func New(opts Options) (*Hub, error) {
	if opts.Conn == nil {
		return nil, errors.New("fanout: Options.Conn is required")
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = DefaultHeartbeat
	}
	switch {
	case opts.Linger == 0:
		opts.Linger = DefaultLinger
	case opts.Linger < 0:
		opts.Linger = 0
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
// broadcasts stored from now on will reach s, with the room stream's
// position at the moment s entered: s gets the room's broadcasts after
// it, never one at or before it.
//
// A channel that asked for history (want.History) is held: its
// broadcasts wait, in order, until Release, so that the join's reply
// (which carries the history up to the position) goes first.
func (h *Hub) Join(ctx context.Context, topic string, s *session.Session, want *session.Want) (uint64, error) {
	subject, err := proto.RoomSubject(topic)
	if err != nil {
		return 0, err
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return 0, ErrClosed
	}
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
		r = &room{topic: topic, index: make(map[*session.Session]int)}
		// Every message dispatch looks up from now on finds the room.
		r.pos.Store(h.pos.Load())
		h.rooms[subject] = r
		h.metrics.Rooms.Inc()
	}
	r.mu.Lock()
	r.add(s, want)
	// Dispatch stores a message's sequence in r.pos under r.mu before it
	// hands the message to the members: every one after pos reaches s.
	pos := r.pos.Load()
	r.mu.Unlock()
	started := f.started()
	h.mu.Unlock()

	select {
	case <-f.ready:
		if f.err != nil {
			h.Leave(topic, s)
			return 0, f.err
		}
		if !started {
			// The reader started after s entered: it delivers what
			// follows the stream's last message at its start.
			pos = f.start
		}
		return pos, nil
	case <-ctx.Done():
		h.Leave(topic, s)
		return 0, ctx.Err()
	}
}

// Release hands a held channel (Join with want.History) its broadcasts
// after position after, in order, and from then on delivers only those
// after it. A channel whose hold overflowed gets phx_error instead.
func (h *Hub) Release(topic string, s *session.Session, after uint64) {
	subject, err := proto.RoomSubject(topic)
	if err != nil {
		return
	}
	h.mu.RLock()
	r := h.rooms[subject]
	h.mu.RUnlock()
	if r == nil {
		return
	}
	r.mu.Lock()
	overflow := r.release(s, after)
	r.mu.Unlock()
	if overflow {
		h.Leave(topic, s)
		s.ChannelError(topic)
	}
}

// started moves the Hub's position to last, where feed f's reader starts,
// before it delivers anything.
func (h *Hub) started(f *feed, last uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f.start = last
	f.startedAt.Store(true)
	if h.feed != f {
		return
	}
	h.pos.Store(last)
	for _, r := range h.rooms {
		r.mu.Lock()
		r.pos.Store(max(r.pos.Load(), last))
		r.mu.Unlock()
	}
}

func (h *Hub) startFeed() *feed {
	f := &feed{ready: make(chan struct{})}
	f.rd = &reader{
		nc: h.opts.Conn, js: h.js, heartbeat: h.opts.Heartbeat,
		deliver: h.dispatch,
		onStart: func(last uint64) { h.started(f, last) },
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
func (h *Hub) Leave(topic string, s *session.Session) {
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
	if len(h.rooms) > 0 || h.feed == nil || h.idle != nil || h.closed {
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

// ErrClosed is returned by Join after Close.
var ErrClosed = errors.New("fanout: hub closed")

// Close stops the Hub's reader of the room stream at once, lingering or
// not, and refuses joins from then on. Members still in rooms stay there
// (they may still Leave) but get nothing more.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	if h.idle != nil {
		h.idle.Stop()
		h.idle = nil
	}
	if h.feed != nil {
		h.dropFeed()
	}
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
// from..to, which may have held some of their broadcasts, are gone: like
// a crashed Phoenix channel, each ends its channel with phx_error, so
// that the client rejoins and catches up its own way.
func (h *Hub) lost(from, to uint64) {
	h.metrics.RoomGaps.Inc()
	type loss struct {
		topic   string
		members []*session.Session
	}
	var losses []loss
	h.mu.RLock()
	for _, r := range h.rooms {
		r.mu.RLock()
		l := loss{topic: r.topic, members: make([]*session.Session, len(r.members))}
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
			s.ChannelError(l.topic)
		}
	}
}

// Rooms returns the number of rooms with local members.
func (h *Hub) Rooms() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.rooms)
}

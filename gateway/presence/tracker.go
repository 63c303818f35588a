// Package presence is Phoenix Presence across every gateway: who is in a
// room, one meta per socket, for the unmodified phoenix.js Presence class.
//
// A Tracker serves the channels of its gateway joined with
// proto.JoinPresence. It keeps the presences of its own sockets per room
// and writes them into the KV bucket proto.PresenceBucket under its own
// key per room (proto.PresenceKey, its instance drawn at start), at most
// once per Interval while they change, and again every TTL/3 with a TTL,
// so that the keys of a gateway that died expire. It reads the bucket's
// stream with one consumer for all rooms (made by roomsvc, as the room
// feed is), keeps for each room with a local presence channel the state
// of every other gateway, and at most once per Interval computes the
// Phoenix diff of the merged state against what its channels were last
// told: one presence_diff, encoded once per serializer, for all of them.
// A channel that joins gets presence_state, the state its channels were
// last told, so that every later diff applies to it exactly.
package presence

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
)

// Defaults of Options.
const (
	// DefaultInterval is Phoenix's tracker broadcast_period.
	DefaultInterval = 1500 * time.Millisecond
	// DefaultTTL bounds how long the presences of a gateway that died
	// outlive it: at most TTL, then the next Interval.
	DefaultTTL = 12 * time.Second
	// DefaultHeartbeat is the presence consumer's idle heartbeat.
	DefaultHeartbeat = 2 * time.Second
	// DefaultTimeout bounds each NATS request of the tracker.
	DefaultTimeout = 5 * time.Second
)

// Options configure a Tracker.
type Options struct {
	// Conn is the NATS connection; required.
	Conn *nats.Conn
	// Name is the gateway's name; the tracker's instance is Name and a
	// random suffix, new for every process.
	Name string
	// Interval bounds the diffs and the writes of one room on this
	// gateway: at most one each per Interval (the first change after a
	// quiet Interval goes out at once). Default DefaultInterval.
	Interval time.Duration
	// TTL is the life of this gateway's keys, rewritten every TTL/3; at
	// least a second, whole seconds. Default DefaultTTL.
	TTL time.Duration
	// Heartbeat is the presence consumer's idle heartbeat (500ms-30s);
	// one silent for two is replaced. Default DefaultHeartbeat.
	Heartbeat time.Duration
	// Timeout bounds each request (a room's snapshot, the consumer).
	// Default DefaultTimeout.
	Timeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Tracker is one gateway's presence (see the package comment). It
// implements session.Presence.
type Tracker struct {
	opts     Options
	nc       *nats.Conn
	js       jetstream.JetStream
	log      *slog.Logger
	instance string
	// maxValue bounds the value of one key: a room's local presences.
	maxValue int

	mu     sync.Mutex
	rooms  map[string]*room
	feed   *feed
	closed bool
	done   chan struct{}
}

// room is one topic with local presence channels.
type room struct {
	topic string
	key   string // this gateway's key
	ready chan struct{}
	err   error // set before ready is closed when the snapshot failed

	mu       sync.Mutex
	channels map[*session.Session]*channel
	// left holds, until the next flush, the metas of sockets that left
	// since the last one, by user: a socket of the same user that joins
	// before the flush (a client reconnecting, a page reload) takes one
	// over, so the others see no change at all (flapping costs the room
	// nothing). A real leave still goes out with that flush.
	left   map[string][]*proto.Meta
	remote map[string]*remoteKey // other gateways' keys, by instance
	shown  proto.PresenceState   // what the channels were last told
	state  []byte                // shown encoded; nil until needed
	// viewDirty: the merged state may differ from shown; localDirty: this
	// gateway's key must be written.
	viewDirty, localDirty bool
	written               bool   // the key holds presences
	value                 []byte // what was last written into it
	localBytes            int    // estimate of the key's value
	lastFlush             time.Time
	timer                 *time.Timer
	gone                  bool
}

// channel is one local presence channel.
type channel struct {
	tr      session.Transport
	ser     wire.Serializer
	joinRef string
	user    string
	meta    *proto.Meta // nil: not tracked (anonymous, or the value full)
	ready   bool        // has its presence_state
}

// remoteKey is another gateway's key of a room.
type remoteKey struct {
	seq   uint64
	state proto.PresenceState // nil: deleted
	raw   []byte
	at    time.Time
}

// New creates a Tracker. It starts reading the bucket at the first Join.
func New(opts Options) (*Tracker, error) {
	if opts.Conn == nil {
		return nil, errors.New("presence: Options.Conn is required")
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultTTL
	}
	if opts.TTL < time.Second {
		return nil, fmt.Errorf("presence: TTL %s: must be at least 1s", opts.TTL)
	}
	if opts.Heartbeat == 0 {
		opts.Heartbeat = DefaultHeartbeat
	}
	if opts.Heartbeat < proto.MinFeedHeartbeat || opts.Heartbeat > proto.MaxFeedHeartbeat {
		return nil, fmt.Errorf("presence: heartbeat %s: must be within %s-%s", opts.Heartbeat, proto.MinFeedHeartbeat, proto.MaxFeedHeartbeat)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	js, err := jetstream.New(opts.Conn)
	if err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	suffix := make([]byte, 6)
	if _, err := rand.Read(suffix); err != nil {
		return nil, err
	}
	name := opts.Name
	if name == "" {
		name = "gateway"
	}
	t := &Tracker{
		opts: opts, nc: opts.Conn, js: js, log: opts.Logger,
		instance: name + "-" + hex.EncodeToString(suffix),
		maxValue: int(min(opts.Conn.MaxPayload(), proto.RoomStreamMaxMsgSize)) - 4096,
		rooms:    make(map[string]*room),
		done:     make(chan struct{}),
	}
	go t.refresh()
	go t.watchReconnects(opts.Conn.StatusChanged(nats.CONNECTED, nats.CLOSED))
	return t, nil
}

// Instance is this tracker's instance: the second part of its keys.
func (t *Tracker) Instance() string { return t.instance }

// Join gives the channel presence_state and from then on presence_diff,
// and tracks the socket unless it is anonymous (session.Presence).
func (t *Tracker) Join(topic, joinRef string, s *session.Session) {
	for attempt := 0; attempt < 3; attempt++ {
		r, err := t.follow(topic)
		if err != nil {
			t.log.Warn("presence unavailable; the channel rejoins", "topic", topic, "err", err)
			s.ChannelError(topic)
			return
		}
		if t.join(r, joinRef, s) {
			return
		}
	}
}

// join adds the channel to r; false when r was dropped meanwhile.
func (t *Tracker) join(r *room, joinRef string, s *session.Session) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gone {
		return false
	}
	c := r.channels[s]
	if c == nil {
		c = &channel{tr: s.Transport(), ser: s.Serializer(), user: s.UserID()}
		r.channels[s] = c
	}
	c.joinRef, c.ready = joinRef, false
	if c.user != "" && c.meta == nil {
		if n := metaBytes(c.user); r.localBytes+n <= t.maxValue {
			if old := r.left[c.user]; len(old) > 0 {
				// The same user's socket left within this interval: its
				// presence goes on, unchanged, in this socket.
				c.meta = old[len(old)-1]
				r.left[c.user] = old[:len(old)-1]
			} else {
				c.meta = &proto.Meta{PhxRef: proto.NewPresenceRef(), OnlineAt: proto.OnlineAt(time.Now())}
			}
			r.localBytes += n
			r.localDirty, r.viewDirty = true, true
		} else {
			t.log.Warn("presence: room full on this gateway; the socket sees presence but is not tracked", "topic", r.topic, "user", c.user)
		}
	}
	if ref, ok := s.Joined(r.topic); !ok || ref != joinRef {
		t.removeLocked(r, s) // kicked or left meanwhile
		return true
	}
	// The others learn of this one (now, or within Interval) before it
	// gets the state they were told, so every later diff applies to it.
	t.maybeFlushLocked(r)
	data, bin, err := c.ser.AppendPush(nil, joinRef, r.topic, proto.PresenceStateEvent, r.stateFor(c), false)
	if err != nil {
		t.log.Error("encode presence_state", "topic", r.topic, "err", err)
		return true
	}
	c.tr.Deliver(session.Frame{Data: data, Binary: bin})
	c.ready = true
	return true
}

// Leave ends the channel's presence (session.Presence).
func (t *Tracker) Leave(topic string, s *session.Session) {
	t.mu.Lock()
	r := t.rooms[topic]
	t.mu.Unlock()
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t.removeLocked(r, s)
}

// removeLocked takes s's channel out of r. r.mu is held.
func (t *Tracker) removeLocked(r *room, s *session.Session) {
	c := r.channels[s]
	if c == nil || r.gone {
		return
	}
	delete(r.channels, s)
	if c.meta != nil {
		r.localBytes -= metaBytes(c.user)
		r.localDirty, r.viewDirty = true, true
		if r.left == nil {
			r.left = make(map[string][]*proto.Meta)
		}
		r.left[c.user] = append(r.left[c.user], c.meta)
	}
	if len(r.channels) == 0 {
		t.dropLocked(r)
		return
	}
	t.maybeFlushLocked(r)
}

// dropLocked stops following r, whose last channel left, and deletes this
// gateway's key of it. r.mu is held.
func (t *Tracker) dropLocked(r *room) {
	r.gone = true
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	if r.written {
		t.purge(r.key)
		r.written = false
	}
	t.mu.Lock()
	if t.rooms[r.topic] == r {
		delete(t.rooms, r.topic)
	}
	t.mu.Unlock()
}

// snapshotRooms returns the rooms followed now.
func (t *Tracker) snapshotRooms() []*room {
	t.mu.Lock()
	defer t.mu.Unlock()
	rooms := make([]*room, 0, len(t.rooms))
	for _, r := range t.rooms {
		rooms = append(rooms, r)
	}
	return rooms
}

// watchReconnects, after a NATS reconnect, rewrites this gateway's keys
// (they may have expired meanwhile) and has the feed start again.
func (t *Tracker) watchReconnects(events chan nats.Status) {
	for st := range events {
		if st == nats.CLOSED {
			return
		}
		t.rewriteAll()
		t.mu.Lock()
		f := t.feed
		t.mu.Unlock()
		if f != nil {
			f.doubt()
		}
	}
}

// resync brings every room up to date after the feed was replaced by one
// that starts after stream sequence last: each room's keys as of last,
// then what the feed delivers.
func (t *Tracker) resync(last uint64) {
	for _, r := range t.snapshotRooms() {
		if !isReady(r) || r.err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), t.opts.Timeout)
		entries, _, err := proto.LoadPresence(ctx, t.nc, r.topic, last)
		cancel()
		if err != nil {
			t.log.Warn("presence resync failed; the room's channels rejoin", "topic", r.topic, "err", err)
			t.fail(r)
			continue
		}
		r.mu.Lock()
		if !r.gone {
			t.mergeLocked(r, entries, last)
			t.maybeFlushLocked(r)
		}
		r.mu.Unlock()
	}
}

// fail ends every channel of r with phx_error (phoenix.js rejoins, and
// gets a fresh presence_state).
func (t *Tracker) fail(r *room) {
	r.mu.Lock()
	var sessions []*session.Session
	for s := range r.channels {
		sessions = append(sessions, s)
	}
	r.mu.Unlock()
	for _, s := range sessions {
		s.ChannelError(r.topic)
	}
}

// Close deletes this gateway's keys and stops reading. Channels still
// joined get nothing more.
func (t *Tracker) Close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	close(t.done)
	f := t.feed
	t.feed = nil
	t.mu.Unlock()
	for _, r := range t.snapshotRooms() {
		r.mu.Lock()
		if !r.gone {
			t.dropLocked(r)
		}
		r.mu.Unlock()
	}
	select {
	case <-t.js.PublishAsyncComplete():
	case <-time.After(t.opts.Timeout):
	}
	if f != nil {
		f.stop()
	}
}

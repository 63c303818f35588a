// Package session is the Phoenix socket protocol, independent of the
// transport: what the gateway does with each decoded client frame (heartbeat,
// phx_join, phx_leave, pushes) and what it sends back, with Phoenix's
// semantics. Business decisions are asked of services over NATS.
//
// It owns the contract with the transports (Transport, Frame, Disconnect):
// the fan-out delivers to sessions, and sessions to their transport, so
// each talks to the next in one direction only.
package session

import (
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"

	"github.com/phxnats/phxnats/gateway/metrics"
	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
)

// Route sends every topic matching Pattern to Service. A Pattern ending in
// '*' matches by prefix, any other exactly, as Phoenix's `channel` macro.
type Route struct {
	Pattern string
	Service string
}

// Match reports whether topic matches the route's pattern.
func (r Route) Match(topic string) bool {
	if prefix, ok := strings.CutSuffix(r.Pattern, "*"); ok {
		return strings.HasPrefix(topic, prefix)
	}
	return topic == r.Pattern
}

// Config is shared by all sessions of a gateway. It must not be copied
// once a session uses it.
type Config struct {
	Conn    *nats.Conn
	Rooms   Rooms
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	Routes  []Route
	// Registry, when not nil, tracks every session from New to End.
	Registry Registry
	// Presence, when not nil, serves channels joined with
	// proto.JoinPresence (presence.go).
	Presence Presence
	// Gateway names this gateway in requests to services, and starts the
	// id of each of its connections.
	Gateway string
	// RequestTimeout bounds every request to a service.
	RequestTimeout time.Duration
	// MaxChannels bounds the topics one socket may join (Phoenix: 100).
	MaxChannels int
	// RateLimit is the most frames per second one socket may send
	// (heartbeats excepted), with bursts of RateBurst; Off means no limit.
	// Frames over it get an error reply and never reach a service.
	RateLimit float64
	RateBurst int
	// UserRateLimit and AddrRateLimit (with their bursts) are the same
	// budget shared by all sockets of one user, and by all sockets from
	// one client address, on this gateway (limits.go); Off: no limit.
	UserRateLimit float64
	UserRateBurst int
	AddrRateLimit float64
	AddrRateBurst int
	// MaxPending bounds the channel frames of one socket waiting for
	// their turn while an earlier one waits on a service, and
	// MaxPendingBytes their payloads; a frame over either gets
	// {"reason":"rate limit exceeded"}. Zero or Off: no bound.
	MaxPending      int
	MaxPendingBytes int

	connSeq      atomic.Uint64
	users, addrs sharedLimits
}

// Session is the protocol state of one socket: the channels it joined.
// HandleMessage is called from one goroutine at a time (the socket's
// reader); it answers heartbeats at once and queues channel frames, which
// run in order on a goroutine of the session's (limits.go), so each
// socket's frames keep their order, like Phoenix's socket process and its
// channels.
type Session struct {
	cfg    *Config
	tr     Transport
	ser    wire.Serializer
	userID string
	addr   string
	connID string

	// Budgets (limits.go), nil when off.
	limiter, userLimiter, addrLimiter *rate.Limiter

	qmu         sync.Mutex
	queue       []wire.Message // channel frames waiting for the worker
	queueBytes  int            // their payloads' size
	working     bool           // a worker goroutine runs
	queueClosed bool           // ended: frames are dropped
	idle        chan struct{}  // closed when the worker stops; nil unless Wait waits
	ended       atomic.Bool    // End has run
	// ignored is the set of users whose broadcasts this socket skips; read
	// by the fan-out for every broadcast that names its sender, so it is
	// swapped whole rather than locked.
	ignored atomic.Pointer[map[string]struct{}]

	mu       sync.Mutex
	channels map[string]string // topic -> join_ref
	// joining holds the topics whose join is between the room join and
	// its reply, with the reason to refuse it instead ("" while none): a
	// kick or a lost room in that window ends the join, not a channel.
	joining map[string]string
	// confirmed holds the service of each channel whose join was
	// confirmed (proto.Reply.Confirm), to ask again after a NATS
	// reconnect (Reconfirm); nil for most sockets.
	confirmed map[string]string
	// presence holds the topics handed to cfg.Presence (presence.go);
	// nil for most sockets.
	presence map[string]struct{}
	closed   bool
}

// New creates the session of a socket authenticated as userID ("" for
// anonymous) from the client address addr ("" when unknown: no address
// budget) and registers it. It reports false while the gateway drains or
// is cut off from NATS: the transport must then refuse or close the
// connection, and End the session all the same.
func New(cfg *Config, tr Transport, userID, addr string) (*Session, bool) {
	connID := cfg.Gateway + "-" + strconv.FormatUint(cfg.connSeq.Add(1), 10)
	s := &Session{cfg: cfg, tr: tr, ser: tr.Serializer(), userID: userID, addr: addr, connID: connID, channels: make(map[string]string)}
	s.limit()
	if cfg.Registry != nil {
		return s, cfg.Registry.Add(s)
	}
	return s, true
}

// UserID is the socket's user, "" when anonymous.
func (s *Session) UserID() string { return s.userID }

// Addr is the socket's client address, "" when unknown.
func (s *Session) Addr() string { return s.addr }

// ConnID is the connection's id in requests to services.
func (s *Session) ConnID() string { return s.connID }

// Serializer is the wire format of the socket.
func (s *Session) Serializer() wire.Serializer { return s.ser }

// Transport is the connection the session speaks through.
func (s *Session) Transport() Transport { return s.tr }

// Deliver queues a frame (a room broadcast) to the socket without
// blocking; see Transport.Deliver.
func (s *Session) Deliver(f Frame) { s.tr.Deliver(f) }

// Disconnect ends the connection from outside (a forced disconnect, the
// drain); the transport then ends the session.
func (s *Session) Disconnect(d Disconnect) { s.tr.Close(d) }

// Reserved events and topics of the protocol.
const (
	topicPhoenix = "phoenix"
	evHeartbeat  = "heartbeat"
	evJoin       = "phx_join"
	evLeave      = "phx_leave"
)

// Reasons sent to clients in error replies.
const (
	ReasonUnmatchedTopic = "unmatched topic"
	ReasonTooMany        = "too many channels joined"
	ReasonUnavailable    = "service unavailable"
	ReasonTimeout        = "service timeout"
	ReasonBadReply       = "bad service reply"
	ReasonRateLimited    = "rate limit exceeded"
	// ReasonUnauthorized refuses a join that a revoked membership
	// (a kick) ended on its way, as the room's service would now.
	ReasonUnauthorized = "unauthorized"
)

// HandleMessage acts on one decoded client frame without waiting on any
// service: a heartbeat is answered at once, a frame over a budget is
// refused at once, and a channel frame is queued behind the socket's
// earlier ones (limits.go). The session keeps m (a copy of its payload).
func (s *Session) HandleMessage(m wire.Message) {
	s.cfg.Metrics.FramesIn.Inc()
	if m.Topic == topicPhoenix && m.Event == evHeartbeat {
		// Never behind a push that waits on a service: phoenix.js would
		// time the heartbeat out and reconnect.
		s.reply("", m.Ref, m.Topic, proto.OK(nil))
		return
	}
	if !s.allow() || !s.enqueue(m) {
		// A flood is answered here, at the edge, so it costs the services
		// nothing; heartbeats pass so the client is not also timed out.
		s.cfg.Metrics.RateLimited.Inc()
		joinRef, _ := s.joinRef(m.Topic)
		s.reply(joinRef, m.Ref, m.Topic, proto.Error(ReasonRateLimited))
	}
}

// handle runs one channel frame, on the session's worker.
func (s *Session) handle(m wire.Message) {
	switch {
	case m.Event == evJoin:
		s.join(m)
	case m.Event == evLeave:
		s.leave(m)
	default:
		s.push(m)
	}
}

// End leaves every room and unregisters the session. The transport calls
// it when the connection is gone; later calls do nothing.
func (s *Session) End() {
	if !s.ended.CompareAndSwap(false, true) {
		return
	}
	s.closeQueue()
	s.unlimit()
	s.mu.Lock()
	s.closed = true
	topics := make([]string, 0, len(s.channels))
	for t := range s.channels {
		topics = append(topics, t)
	}
	s.channels = nil
	s.mu.Unlock()
	for _, t := range topics {
		s.cfg.Rooms.Leave(t, s)
	}
	s.presenceEnd()
	if s.cfg.Registry != nil {
		s.cfg.Registry.Remove(s)
	}
}

// Kick removes the socket from topic as if the server had stopped the
// channel: it leaves the room and sends phx_close with the channel's
// join_ref, after which phoenix.js drops the channel without rejoining. It
// reports whether the socket was joined. Safe to call from any goroutine.
func (s *Session) Kick(topic string) bool {
	return s.end(topic, s.ser.AppendClose, ReasonUnauthorized)
}

// ChannelError ends the socket's channel on topic as a crashed Phoenix
// channel ends: it leaves the room and sends phx_error with the channel's
// join_ref, after which phoenix.js rejoins (and the app's join callback
// can fetch what it missed). It reports whether the socket was joined. Safe
// to call from any goroutine. The fan-out calls it for a room whose
// broadcasts may have been lost, without its locks held.
func (s *Session) ChannelError(topic string) bool {
	return s.end(topic, s.ser.AppendError, ReasonUnavailable)
}

// end ends the channel on topic with the control frame enc makes; a join
// on its way is refused with reason instead.
func (s *Session) end(topic string, enc func([]byte, string, string) ([]byte, bool, error), reason string) bool {
	s.mu.Lock()
	joinRef, ok := s.channels[topic]
	if ok {
		delete(s.channels, topic)
	}
	_, joining := s.joining[topic]
	if joining { // a duplicate join on its way is refused too
		s.joining[topic] = reason
	}
	s.mu.Unlock()
	if !ok {
		if joining {
			s.cfg.Rooms.Leave(topic, s) // it may be in the room already
			s.presenceLeave(topic)
		}
		return joining
	}
	s.cfg.Rooms.Leave(topic, s)
	s.presenceLeave(topic)
	s.control(joinRef, topic, enc)
	return true
}

func (s *Session) route(topic string) (string, bool) {
	for _, r := range s.cfg.Routes {
		if r.Match(topic) {
			return r.Service, true
		}
	}
	return "", false
}

func (s *Session) joinRef(topic string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ref, ok := s.channels[topic]
	return ref, ok
}

func (s *Session) join(m wire.Message) {
	service, ok := s.route(m.Topic)
	if !ok || m.Topic == topicPhoenix {
		// Phoenix answers unmatched joins without a join_ref.
		s.cfg.Metrics.Joins.WithLabelValues("unmatched").Inc()
		s.reply("", m.Ref, m.Topic, proto.Error(ReasonUnmatchedTopic))
		return
	}
	if _, err := proto.EncodeTopic(m.Topic); err != nil {
		s.cfg.Metrics.Joins.WithLabelValues("unmatched").Inc()
		s.reply("", m.Ref, m.Topic, proto.Error(ReasonUnmatchedTopic))
		return
	}
	joinRef := m.JoinRef
	if joinRef == "" {
		joinRef = m.Ref
	}
	oldRef, rejoin := s.joinRef(m.Topic)
	if !rejoin && s.cfg.MaxChannels > 0 && s.joined() >= s.cfg.MaxChannels {
		s.cfg.Metrics.Joins.WithLabelValues("error").Inc()
		s.reply(m.JoinRef, m.Ref, m.Topic, proto.Error(ReasonTooMany))
		return
	}
	rep := s.request("join", proto.JoinSubject(service), proto.JoinRequest{
		Topic: m.Topic, UserID: s.userID, Payload: json.RawMessage(m.Payload), Gateway: s.cfg.Gateway, ConnID: s.connID,
	})
	if rep.Status == proto.StatusNoReply {
		rep = proto.Error(ReasonBadReply)
	}
	if rep.Status == proto.StatusOK && rep.Ignore != nil {
		// Before the room join, so no ignored user's message slips through.
		s.UpdateIgnored(rep.Ignore)
	}
	held := false
	if rep.Status == proto.StatusOK {
		rep, held = s.enter(m, service, rep)
	}
	s.mu.Lock()
	if reason := s.joining[m.Topic]; reason != "" && rep.Status == proto.StatusOK {
		rep = proto.Error(reason) // kicked or lost while joining
	}
	if s.closed {
		s.forgetJoining(m.Topic)
		s.mu.Unlock()
		s.cfg.Rooms.Leave(m.Topic, s)
		return
	}
	if rep.Status != proto.StatusOK {
		s.forgetJoining(m.Topic)
		// A refused duplicate join still ends the old channel, as in Phoenix.
		delete(s.channels, m.Topic)
		s.mu.Unlock()
		s.cfg.Rooms.Leave(m.Topic, s)
		s.presenceLeave(m.Topic)
		s.cfg.Metrics.Joins.WithLabelValues(rep.Status).Inc()
		s.reply(m.JoinRef, m.Ref, m.Topic, rep)
		if rejoin {
			s.control(oldRef, m.Topic, s.ser.AppendClose)
		}
		return
	}
	// The old channel of a duplicate join ends with the reply; a kick in
	// between finds only the join.
	delete(s.channels, m.Topic)
	s.mu.Unlock()
	s.cfg.Metrics.Joins.WithLabelValues(rep.Status).Inc()
	// The join stays "joining" until its reply is queued: a kick (or a
	// lost room) meanwhile is seen below and its phx_close (or
	// phx_error) follows the reply, never precedes it.
	s.reply(m.JoinRef, m.Ref, m.Topic, rep)
	if held {
		// The reply held the history: now the broadcasts after it.
		s.cfg.Rooms.Release(m.Topic, s, rep.Resume)
	}
	s.mu.Lock()
	reason := s.joining[m.Topic]
	s.forgetJoining(m.Topic)
	switch {
	case s.closed:
		s.mu.Unlock()
		s.cfg.Rooms.Leave(m.Topic, s)
		return
	case reason == "":
		s.channels[m.Topic] = joinRef
		s.noteConfirmed(m.Topic, service, rep.Confirm)
		s.mu.Unlock()
	default:
		// Ended after the reply was decided: end() took it out of the room.
		s.mu.Unlock()
	}
	if rejoin {
		// Phoenix sends the old channel's phx_close after the new join's reply.
		s.control(oldRef, m.Topic, s.ser.AppendClose)
	}
	if reason != "" {
		enc := s.ser.AppendError
		if reason == ReasonUnauthorized {
			enc = s.ser.AppendClose
		}
		s.control(joinRef, m.Topic, enc)
		s.presenceLeave(m.Topic)
		return
	}
	// After the reply (and the old channel's phx_close): presence_state.
	s.presenceJoin(m, joinRef)
}

// forgetJoining ends topic's joining state. s.mu is held.
func (s *Session) forgetJoining(topic string) {
	delete(s.joining, topic)
	if len(s.joining) == 0 {
		s.joining = nil // an idle socket keeps no map (idle memory, BENCHMARKS.md)
	}
}

func (s *Session) joined() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.channels)
}

func (s *Session) leave(m wire.Message) {
	joinRef, ok := s.joinRef(m.Topic)
	if !ok {
		// Phoenix replies ok to a leave of a topic that is not joined.
		s.reply(m.JoinRef, m.Ref, m.Topic, proto.OK(nil))
		return
	}
	s.mu.Lock()
	delete(s.channels, m.Topic)
	s.mu.Unlock()
	s.cfg.Rooms.Leave(m.Topic, s)
	s.presenceLeave(m.Topic)
	s.reply(m.JoinRef, m.Ref, m.Topic, proto.OK(nil))
	s.control(joinRef, m.Topic, s.ser.AppendClose)
}

func (s *Session) push(m wire.Message) {
	joinRef, ok := s.joinRef(m.Topic)
	if !ok {
		s.reply("", m.Ref, m.Topic, proto.Error(ReasonUnmatchedTopic))
		return
	}
	service, _ := s.route(m.Topic)
	req := proto.PushRequest{Topic: m.Topic, Event: m.Event, UserID: s.userID, Gateway: s.cfg.Gateway, ConnID: s.connID}
	if m.Binary {
		req.Binary = m.Payload
		if req.Binary == nil {
			req.Binary = []byte{}
		}
	} else {
		req.Payload = json.RawMessage(m.Payload)
	}
	rep := s.request("push", proto.PushSubject(service), req)
	if rep.Ignore != nil {
		s.UpdateIgnored(rep.Ignore)
	}
	if rep.Status == proto.StatusNoReply {
		return
	}
	// Phoenix replies with the channel's current join_ref, even when the
	// push carried a stale one.
	s.reply(joinRef, m.Ref, m.Topic, rep)
}

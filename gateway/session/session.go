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
	"context"
	"encoding/json"
	"errors"
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

	connSeq atomic.Uint64
}

// Session is the protocol state of one socket: the channels it joined.
// HandleMessage must be called from one goroutine at a time (the socket's
// reader), which keeps each socket's frames in order, like Phoenix's
// socket process.
type Session struct {
	cfg    *Config
	tr     Transport
	ser    wire.Serializer
	userID string
	connID string

	limiter *rate.Limiter // nil without a limit
	// ignored is the set of users whose broadcasts this socket skips; read
	// by the fan-out for every broadcast that names its sender, so it is
	// swapped whole rather than locked.
	ignored atomic.Pointer[map[string]struct{}]

	mu       sync.Mutex
	channels map[string]string // topic -> join_ref
	closed   bool
}

// New creates the session of a socket authenticated as userID ("" for
// anonymous) and registers it. It reports false while the gateway drains:
// the transport must then refuse or close the connection, and End the
// session all the same.
func New(cfg *Config, tr Transport, userID string) (*Session, bool) {
	connID := cfg.Gateway + "-" + strconv.FormatUint(cfg.connSeq.Add(1), 10)
	s := &Session{cfg: cfg, tr: tr, ser: tr.Serializer(), userID: userID, connID: connID, channels: make(map[string]string)}
	if cfg.RateLimit > 0 {
		s.limiter = rate.NewLimiter(rate.Limit(cfg.RateLimit), max(cfg.RateBurst, 1))
	}
	if cfg.Registry != nil {
		return s, cfg.Registry.Add(s)
	}
	return s, true
}

// UserID is the socket's user, "" when anonymous.
func (s *Session) UserID() string { return s.userID }

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
)

// HandleMessage acts on one decoded client frame.
func (s *Session) HandleMessage(m wire.Message) {
	s.cfg.Metrics.FramesIn.Inc()
	heartbeat := m.Topic == topicPhoenix && m.Event == evHeartbeat
	if s.limiter != nil && !heartbeat && !s.limiter.Allow() {
		// A flood is answered here, at the edge, so it costs the services
		// nothing; heartbeats pass so the client is not also timed out.
		s.cfg.Metrics.RateLimited.Inc()
		joinRef, _ := s.joinRef(m.Topic)
		s.reply(joinRef, m.Ref, m.Topic, proto.Error(ReasonRateLimited))
		return
	}
	switch {
	case heartbeat:
		s.reply("", m.Ref, m.Topic, proto.OK(nil))
	case m.Event == evJoin:
		s.join(m)
	case m.Event == evLeave:
		s.leave(m)
	default:
		s.push(m)
	}
}

// End leaves every room and unregisters the session. The transport calls
// it once, when the connection is gone.
func (s *Session) End() {
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
	if s.cfg.Registry != nil {
		s.cfg.Registry.Remove(s)
	}
}

// Kick removes the socket from topic as if the server had stopped the
// channel: it leaves the room and sends phx_close with the channel's
// join_ref, after which phoenix.js drops the channel without rejoining. It
// reports whether the socket was joined. Safe to call from any goroutine.
func (s *Session) Kick(topic string) bool { return s.end(topic, s.ser.AppendClose) }

// ChannelError ends the socket's channel on topic as a crashed Phoenix
// channel ends: it leaves the room and sends phx_error with the channel's
// join_ref, after which phoenix.js rejoins (and the app's join callback
// can fetch what it missed). It reports whether the socket was joined. Safe
// to call from any goroutine. The fan-out calls it for a room whose
// broadcasts may have been lost, without its locks held.
func (s *Session) ChannelError(topic string) bool { return s.end(topic, s.ser.AppendError) }

func (s *Session) end(topic string, enc func([]byte, string, string) ([]byte, bool, error)) bool {
	s.mu.Lock()
	joinRef, ok := s.channels[topic]
	if ok {
		delete(s.channels, topic)
	}
	s.mu.Unlock()
	if !ok {
		return false
	}
	s.cfg.Rooms.Leave(topic, s)
	s.control(joinRef, topic, enc)
	return true
}

// SetIgnored replaces the users whose broadcasts the socket skips.
func (s *Session) SetIgnored(users []string) {
	set := make(map[string]struct{}, len(users))
	for _, u := range users {
		set[u] = struct{}{}
	}
	s.ignored.Store(&set)
}

// Skips reports whether a broadcast from user must not reach this socket:
// with excludeFrom, a broadcast not meant for the user's own sockets; with
// ignore (the channel joined with proto.JoinIgnore), one from a user this
// socket's user ignores.
func (s *Session) Skips(from string, excludeFrom, ignore bool) bool {
	if from == "" {
		return false
	}
	if excludeFrom && from == s.userID {
		return true
	}
	if !ignore {
		return false
	}
	if set := s.ignored.Load(); set != nil {
		_, ok := (*set)[from]
		return ok
	}
	return false
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
		s.SetIgnored(rep.Ignore.Ignored)
	}
	if rep.Status == proto.StatusOK {
		// On a duplicate join the socket stays in the room (Join is
		// idempotent), so no broadcast is lost between the two channels.
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
		err := s.cfg.Rooms.Join(ctx, m.Topic, s, WantOf(proto.JoinFlags(m.Payload)))
		cancel()
		if err != nil {
			s.cfg.Logger.Error("room subscription failed", "topic", m.Topic, "err", err)
			rep = proto.Error(ReasonUnavailable)
		}
	}
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		s.cfg.Rooms.Leave(m.Topic, s)
		return
	case rep.Status == proto.StatusOK:
		s.channels[m.Topic] = joinRef
		s.mu.Unlock()
	default:
		// A refused duplicate join still ends the old channel, as in Phoenix.
		delete(s.channels, m.Topic)
		s.mu.Unlock()
		if rejoin {
			s.cfg.Rooms.Leave(m.Topic, s)
		}
	}
	s.cfg.Metrics.Joins.WithLabelValues(rep.Status).Inc()
	s.reply(m.JoinRef, m.Ref, m.Topic, rep)
	if rejoin {
		// Phoenix sends the old channel's phx_close after the new join's reply.
		s.control(oldRef, m.Topic, s.ser.AppendClose)
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
		s.SetIgnored(rep.Ignore.Ignored)
	}
	if rep.Status == proto.StatusNoReply {
		return
	}
	// Phoenix replies with the channel's current join_ref, even when the
	// push carried a stale one.
	s.reply(joinRef, m.Ref, m.Topic, rep)
}

// request asks a service and always returns a Reply: failures of NATS or of
// the service become error replies, so the client never waits forever.
func (s *Session) request(kind, subject string, req any) proto.Reply {
	data, err := json.Marshal(req)
	if err != nil {
		return proto.Error("bad request")
	}
	start := time.Now()
	msg, err := s.cfg.Conn.Request(subject, data, s.cfg.RequestTimeout)
	outcome := "ok"
	var rep proto.Reply
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		outcome, rep = "no_responders", proto.Error(ReasonUnavailable)
	case errors.Is(err, nats.ErrTimeout):
		outcome, rep = "timeout", proto.Error(ReasonTimeout)
	case err != nil:
		outcome, rep = "error", proto.Error(ReasonUnavailable)
	default:
		if err := json.Unmarshal(msg.Data, &rep); err != nil || rep.Validate() != nil {
			outcome, rep = "bad_reply", proto.Error(ReasonBadReply)
		}
	}
	s.cfg.Metrics.RequestSeconds.WithLabelValues(kind, outcome).Observe(time.Since(start).Seconds())
	if outcome != "ok" {
		s.cfg.Logger.Warn("service request failed", "subject", subject, "outcome", outcome, "err", err)
	}
	return rep
}

func (s *Session) reply(joinRef, ref, topic string, rep proto.Reply) {
	resp, binary := []byte(rep.Response), false
	switch {
	case rep.Binary != nil:
		resp, binary = rep.Binary, true
	case len(resp) == 0:
		resp = emptyObject
	}
	data, bin, err := s.ser.AppendReply(nil, joinRef, ref, topic, rep.Status, resp, binary)
	if r := refused(err); binary && r != nil {
		// The client cannot carry bytes (binary.go).
		data, bin, err = s.ser.AppendReply(nil, joinRef, ref, topic, proto.StatusError, proto.Reason(r.reason), false)
	}
	if err != nil {
		s.cfg.Logger.Error("encode reply", "topic", topic, "err", err)
		return
	}
	s.send(data, bin)
}

func (s *Session) control(joinRef, topic string, enc func([]byte, string, string) ([]byte, bool, error)) {
	data, bin, err := enc(nil, joinRef, topic)
	if err != nil {
		s.cfg.Logger.Error("encode control frame", "topic", topic, "err", err)
		return
	}
	s.send(data, bin)
}

func (s *Session) send(data []byte, bin bool) {
	s.cfg.Metrics.FramesOut.Inc()
	s.tr.Deliver(Frame{Data: data, Binary: bin})
}

var emptyObject = []byte("{}")

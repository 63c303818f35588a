// Package rooms is roomsvc: the chat rooms of the Phoenix channels guide,
// served over NATS. It decides who may join which room, validates what
// members say, and broadcasts it to the room.
package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/proto"
	"github.com/phxnats/phxnats/roomsvc/history"
)

// Options configure a Service.
type Options struct {
	// Conn is the NATS connection; required.
	Conn *nats.Conn
	// Store holds memberships; required.
	Store *Store
	// Rules are the chat rules; the zero value is the guide's chat.
	Rules Rules
	// QueueGroup defaults to proto.QueueRooms.
	QueueGroup string
	// Service is the name the gateway routes to; defaults to proto.ServiceRooms.
	Service string
	// StoreTimeout bounds each KV operation and each broadcast (including
	// its retries while a stream leader is elected); default 2s.
	StoreTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Wrap, if set, wraps every handler, e.g. to count and time requests
	// (svckit.Ops.Instrument).
	Wrap proto.Wrapper
}

// Service answers joins, pushes and membership requests for rooms:* topics.
type Service struct {
	opts   Options
	subs   *proto.Subscriptions
	budget *budget
}

// Start subscribes the service to its subjects. Stop it with Drain.
func Start(opts Options) (*Service, error) {
	if opts.Conn == nil || opts.Store == nil {
		return nil, errors.New("rooms: Options.Conn and Options.Store are required")
	}
	if opts.QueueGroup == "" {
		opts.QueueGroup = proto.QueueRooms
	}
	if opts.Service == "" {
		opts.Service = proto.ServiceRooms
	}
	if err := proto.ValidService(opts.Service); err != nil {
		return nil, err
	}
	if opts.StoreTimeout <= 0 {
		opts.StoreTimeout = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	// A body the rules accept must fit in the broadcast that carries it.
	if err := opts.Rules.CheckFits(min(opts.Conn.MaxPayload(), proto.RoomStreamMaxMsgSize)); err != nil {
		return nil, fmt.Errorf("rooms: %w", err)
	}
	// So must the longest ignore list in its KV value.
	if need := int64(IgnoreMaxValueSize(opts.Store.ignoreMax)); need > opts.Conn.MaxPayload() {
		return nil, fmt.Errorf("rooms: rooms.ignore_max %d: a full list may take %d bytes, more than the %d bytes a NATS message may carry here",
			opts.Store.ignoreMax, need, opts.Conn.MaxPayload())
	}
	s := &Service{opts: opts, budget: opts.Rules.budget()}
	handlers := map[string]nats.MsgHandler{
		proto.JoinSubject(opts.Service):    s.handleJoin,
		proto.JoinedSubject(opts.Service):  s.handleJoined,
		proto.HistorySubject(opts.Service): s.handleHistory,
		proto.PushSubject(opts.Service):    s.handlePush,
		proto.SubjectMembersGrant:          s.handleMembership,
		proto.SubjectMembersRevoke:         s.handleMembership,
		proto.SubjectMembersList:           s.handleMembership,
		proto.SubjectPresenceList:          s.handlePresenceList,
	}
	// Gateways may not create consumers of the room stream themselves
	// (proto.SubjectFeedCreate says why): roomsvc makes them their feeds.
	maps.Copy(handlers, proto.FeedHandlers(opts.Store.js, opts.StoreTimeout, opts.Logger))
	var err error
	if s.subs, err = proto.Serve(opts.Conn, opts.QueueGroup, handlers, opts.Wrap); err != nil {
		return nil, fmt.Errorf("rooms: %w", err)
	}
	return s, nil
}

// Drain stops taking new requests and returns once the ones already
// received are answered, or ctx ends.
func (s *Service) Drain(ctx context.Context) { s.subs.Drain(ctx) }

func (s *Service) handleJoin(m *nats.Msg) {
	var req proto.JoinRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		s.respond(m, proto.Error("bad join request"))
		return
	}
	s.respond(m, s.join(m, req))
}

func (s *Service) join(m *nats.Msg, req proto.JoinRequest) proto.Reply {
	if !IsRoom(req.Topic) || (req.UserID != "" && proto.ValidUserID(req.UserID) != nil) {
		return proto.Error("unauthorized")
	}
	if _, err := proto.HistoryOf(req.Payload); err != nil {
		return proto.Error(err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.StoreTimeout)
	defer cancel()
	rep := proto.OK(nil)
	if !s.opts.Rules.IsPublic(req.Topic) {
		if refused := s.allowed(ctx, req.Topic, req.UserID, s.opts.Store.IsMember); refused != nil {
			return *refused
		}
		// A revoke may land between this check and the socket's arrival
		// in the room, where its kick would find nobody: the gateway asks
		// again once the socket is in (handleJoined).
		rep.Confirm = true
	}
	if req.UserID == "" {
		return rep
	}
	// The socket filters broadcasts from the users its user ignores.
	// The ignore list is a filter, not a permission: if the store cannot
	// answer (a KV leader election), admit the user and leave the socket's
	// current list as it is rather than refuse even the lobby.
	if ignored, err := s.opts.Store.Ignored(ctx, req.UserID); err != nil {
		s.opts.Logger.Warn("ignore list lookup failed; joining without it", "user", req.UserID, "err", err)
	} else {
		rep.Ignore = &proto.IgnoreUpdate{Ignored: ignored}
	}
	if s.opts.Rules.AnnounceJoins {
		// The guide's user_joined, to everyone in the room but the user,
		// on the channels that asked for announcements.
		// Left out when the room is over its budget: a join storm must
		// not fill the stream either.
		payload, _ := proto.Marshal(map[string]string{"user_id": req.UserID})
		b := proto.Broadcast{Event: "user_joined", Payload: payload, From: req.UserID, ExcludeFrom: true, OptIn: proto.JoinJoins}
		if s.budget.allow(req.Topic, size(req.Topic, b)) {
			_ = s.broadcast(m, req.Topic, b)
		}
	}
	return rep
}

// allowed returns nil when user may use the private room topic according
// to isMember, else the reply that refuses.
func (s *Service) allowed(ctx context.Context, topic, user string, isMember func(context.Context, string, string) (bool, error)) *proto.Reply {
	ok, err := isMember(ctx, topic, user)
	if err != nil {
		s.opts.Logger.Error("membership lookup failed", "topic", topic, "user", user, "err", err)
		rep := proto.Error("membership store unavailable")
		return &rep
	}
	if !ok {
		rep := proto.Error("unauthorized")
		return &rep
	}
	return nil
}

// handleJoined confirms a join that asked for it (proto.Reply.Confirm),
// once the socket is in the room: from the bucket, not the cache, so that
// a revoke done anywhere before this moment refuses it, and any revoke
// after it finds the socket in the room.
func (s *Service) handleJoined(m *nats.Msg) {
	var req proto.JoinRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		s.respond(m, proto.Error("bad join request"))
		return
	}
	if !IsRoom(req.Topic) {
		s.respond(m, proto.Error("unauthorized"))
		return
	}
	rep := proto.OK(nil)
	if !s.opts.Rules.IsPublic(req.Topic) {
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.StoreTimeout)
		defer cancel()
		if refused := s.allowed(ctx, req.Topic, req.UserID, s.opts.Store.IsMemberNow); refused != nil {
			rep = *refused
		}
	}
	s.respond(m, rep)
}

// handleHistory answers a join that asked for history, once the socket is
// in the room (proto.HistorySubject): it confirms the join as
// handleJoined does, then reads the room's messages up to the gateway's
// position.
func (s *Service) handleHistory(m *nats.Msg) {
	var req proto.JoinRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		s.respond(m, proto.Error("bad join request"))
		return
	}
	s.respond(m, s.history(req))
}

func (s *Service) history(req proto.JoinRequest) proto.Reply {
	if !IsRoom(req.Topic) {
		return proto.Error("unauthorized")
	}
	ask, err := proto.HistoryOf(req.Payload)
	if err != nil {
		return proto.Error(err.Error())
	}
	if ask == nil {
		return proto.Error(proto.ErrBadHistory.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.StoreTimeout)
	defer cancel()
	if !s.opts.Rules.IsPublic(req.Topic) {
		if refused := s.allowed(ctx, req.Topic, req.UserID, s.opts.Store.IsMemberNow); refused != nil {
			return *refused
		}
	}
	ch := history.Channel{User: req.UserID, Flags: proto.JoinFlags(req.Payload)}
	if req.UserID != "" && slices.Contains(ch.Flags, proto.JoinIgnore) {
		ignored, err := s.opts.Store.Ignored(ctx, req.UserID)
		if err != nil {
			s.opts.Logger.Warn("ignore list lookup failed; history without it", "user", req.UserID, "err", err)
		}
		ch.Ignored = make(map[string]struct{}, len(ignored))
		for _, u := range ignored {
			ch.Ignored[u] = struct{}{}
		}
	}
	st := s.opts.Store
	rep, resume, err := st.history.Read(ctx, req.Topic, *ask, req.Position, ch, st.historyMax)
	if err != nil {
		s.opts.Logger.Warn("history read failed", "topic", req.Topic, "position", req.Position, "err", err)
		return proto.Error(ReasonHistoryUnavailable)
	}
	data, err := json.Marshal(rep)
	if err != nil {
		return proto.Error(ReasonHistoryUnavailable)
	}
	out := proto.OK(data)
	out.Resume = resume
	return out
}

// ReasonHistoryUnavailable refuses a history join that could not be
// answered in time (the history stream behind, or unreachable); phoenix.js
// joins again after its backoff.
const ReasonHistoryUnavailable = "history unavailable"

func (s *Service) handlePush(m *nats.Msg) {
	var req proto.PushRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		s.respond(m, proto.Error("bad push request"))
		return
	}
	s.respond(m, s.push(m, req))
}

func (s *Service) push(m *nats.Msg, req proto.PushRequest) proto.Reply {
	if !IsRoom(req.Topic) {
		return proto.Error("unauthorized")
	}
	if !s.opts.Rules.IsPublic(req.Topic) {
		// Every push to a private room is checked, so a member revoked
		// while joined (a kick lost, a join that raced the revoke) can
		// say nothing more. The cache makes this free for members.
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.StoreTimeout)
		refused := s.allowed(ctx, req.Topic, req.UserID, s.opts.Store.IsMember)
		cancel()
		if refused != nil {
			return *refused
		}
	}
	switch req.Event {
	case "ignore", "unignore":
		return s.ignore(req)
	case "new_msg":
		b := proto.Broadcast{Event: "new_msg", From: req.UserID}
		if req.Binary != nil {
			// An ArrayBuffer from phoenix.js: broadcast the bytes as they came.
			if err := s.opts.Rules.NewMsgBinary(req.Binary); err != nil {
				return proto.Error(err.Error())
			}
			b.Binary = req.Binary
		} else {
			body, err := s.opts.Rules.NewMsg(req.Payload)
			if err != nil {
				return proto.Error(err.Error())
			}
			// The guide's payload, exactly; the sender travels beside it
			// (From), for the channels that ask for it (proto.JoinSender).
			b.Payload, _ = proto.Marshal(newMsg{Body: body})
		}
		if !s.budget.allow(req.Topic, size(req.Topic, b)) {
			return proto.Error(ReasonRoomBusy)
		}
		// Stored before the reply, so the gateway's next push from this
		// client (sent only after this reply) is stored, and so delivered
		// everywhere, after this one, whichever instance serves it. The
		// stream's acknowledgement is also what makes the message safe
		// from a NATS node failure.
		if err := s.broadcast(m, req.Topic, b); err != nil {
			return proto.Error("broadcast failed")
		}
		return proto.NoReply()
	case "ping":
		// The reference app's ping: reply with the payload, binary or JSON.
		// Handy for round-trip checks and load tests. Payloads are capped
		// as new_msg bodies are, so an echo costs no more than a message.
		if n, limit := len(req.Payload)+len(req.Binary), s.opts.Rules.maxBody(); n > limit {
			return proto.Error(fmt.Sprintf("ping payload is %d bytes, the limit is %d bytes", n, limit))
		}
		if req.Binary != nil {
			return proto.Reply{Status: proto.StatusOK, Binary: req.Binary}
		}
		if len(req.Payload) == 0 || req.Payload[0] != '{' {
			return proto.Error("ping needs an object payload")
		}
		return proto.OK(req.Payload)
	default:
		return proto.Error(fmt.Sprintf("unknown event %q", req.Event))
	}
}

// kick removes a user whose membership was revoked from the room on every
// gateway now, not only at their next join. Public rooms stay open to them.
func (s *Service) kick(topic, user string) error {
	if s.opts.Rules.IsPublic(topic) {
		return nil
	}
	subject, err := proto.KickSubject(user)
	if err != nil {
		return err
	}
	data, _ := proto.Marshal(proto.Kick{Topic: topic})
	return s.opts.Conn.Publish(subject, data)
}

// newMsg is the new_msg broadcast payload: the guide's %{body: body}.
type newMsg struct {
	Body string `json:"body"`
}

// errExpired: the request's deadline passed before its broadcast; its
// client was told "service timeout", so it is not sent.
var errExpired = errors.New("request deadline passed")

// broadcast stores b in topic's room, for the request m, within the
// request's deadline (proto.DeadlineHeader): a request whose client was
// told it timed out is not broadcast. (A publish already on its way when
// the deadline passes may still be stored: the window is that publish's
// round trip.)
func (s *Service) broadcast(m *nats.Msg, topic string, b proto.Broadcast) error {
	if proto.Expired(m) {
		s.opts.Logger.Debug("broadcast dropped: request past its deadline", "topic", topic, "event", b.Event)
		return errExpired
	}
	ctx, cancel := proto.WithDeadline(context.Background(), m)
	defer cancel()
	ctx, cancel2 := context.WithTimeout(ctx, s.opts.StoreTimeout)
	defer cancel2()
	err := s.opts.Store.Broadcast(ctx, topic, b)
	if err != nil {
		s.opts.Logger.Error("broadcast failed", "topic", topic, "event", b.Event, "err", err)
	}
	return err
}

// ignore handles the guide's ignore/unignore pushes: {"user_id": other}.
// The list lives in JetStream KV; every gateway with a socket of the user
// learns the change (a diff, not the list) over proto.IgnoresSubject and
// filters from then on. The client's reply holds the whole list, as the
// chat page shows it; it is at most rooms.ignore_max ids.
func (s *Service) ignore(req proto.PushRequest) proto.Reply {
	if req.UserID == "" {
		return proto.Error("log in to ignore users")
	}
	var p struct {
		UserID string `json:"user_id"`
	}
	if err := json.Unmarshal(req.Payload, &p); err != nil || p.UserID == "" {
		return proto.Error(req.Event + ` needs a payload {"user_id": string}`)
	}
	if err := proto.ValidUserID(p.UserID); err != nil {
		return proto.Error(fmt.Sprintf("user_id must be 1 to %d bytes of UTF-8 without control characters", proto.MaxUserIDLength))
	}
	if p.UserID == req.UserID {
		return proto.Error("you cannot ignore yourself")
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.StoreTimeout)
	defer cancel()
	add := req.Event == "ignore"
	list, changed, err := s.opts.Store.SetIgnored(ctx, req.UserID, p.UserID, add)
	switch {
	case errors.Is(err, ErrIgnoreListFull):
		return proto.Error(fmt.Sprintf("you cannot ignore more than %d users", s.opts.Store.ignoreMax))
	case err != nil:
		s.opts.Logger.Error("ignore list update failed", "user", req.UserID, "err", err)
		return proto.Error("ignore store unavailable")
	}
	diff := &proto.IgnoreUpdate{Remove: []string{p.UserID}}
	if add {
		diff = &proto.IgnoreUpdate{Add: []string{p.UserID}}
	}
	if subject, err := proto.IgnoresSubject(req.UserID); changed && err == nil {
		data, _ := proto.Marshal(diff)
		if err := s.opts.Conn.Publish(subject, data); err != nil {
			s.opts.Logger.Error("publish ignore change", "user", req.UserID, "err", err)
		}
	}
	response, _ := proto.Marshal(proto.IgnoreUpdate{Ignored: list})
	return proto.Reply{Status: proto.StatusOK, Response: response, Ignore: diff}
}

func (s *Service) handleMembership(m *nats.Msg) {
	var req proto.MembershipRequest
	var rep proto.MembershipReply
	if err := json.Unmarshal(m.Data, &req); err != nil {
		rep.Error = "bad membership request: " + err.Error()
		s.respond(m, rep)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.StoreTimeout)
	defer cancel()
	var err error
	switch m.Subject {
	case proto.SubjectMembersGrant:
		err = s.opts.Store.Grant(ctx, req.Topic, req.UserID)
	case proto.SubjectMembersRevoke:
		if err = s.opts.Store.Revoke(ctx, req.Topic, req.UserID); err == nil {
			err = s.kick(req.Topic, req.UserID)
		}
	case proto.SubjectMembersList:
		if err = checkMember(req.Topic, "-"); err == nil {
			rep.Members, err = s.opts.Store.Members(ctx, req.Topic)
		}
	}
	if err != nil {
		rep.Error = err.Error()
	} else {
		s.opts.Logger.Info("membership", "op", m.Subject, "topic", req.Topic, "user", req.UserID)
	}
	s.respond(m, rep)
}

func (s *Service) respond(m *nats.Msg, v any) { proto.Respond(m, v, s.opts.Logger) }

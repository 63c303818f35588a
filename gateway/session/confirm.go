package session

import (
	"context"
	"encoding/json"

	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
)

// enter puts the socket in topic's room once its service said yes (rep),
// and returns the reply the client gets. On a duplicate join the socket
// stays in the room (Join is idempotent), so no broadcast is lost between
// the two channels. When the service asked for a confirmation
// (rep.Confirm, a private room), it is asked again once the socket is in
// the room: a permission revoked meanwhile is seen then, and one revoked
// later finds the socket joined (or joining), where its kick ends it.
//
// A join that asked for history gets it here (proto.HistorySubject) once
// the socket is in the room, whose broadcasts for it are held meanwhile;
// held reports that the caller must release them once the reply is out.
func (s *Session) enter(m wire.Message, service string, rep proto.Reply) (_ proto.Reply, held bool) {
	s.mu.Lock()
	if s.joining == nil {
		s.joining = make(map[string]string)
	}
	s.joining[m.Topic] = ""
	s.mu.Unlock()
	want, hist := wantOf(m.Payload)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	pos, err := s.cfg.Rooms.Join(ctx, m.Topic, s, want)
	cancel()
	if err != nil {
		s.cfg.Logger.Error("room subscription failed", "topic", m.Topic, "err", err)
		return proto.Error(ReasonUnavailable), false
	}
	s.mu.Lock()
	reason := s.joining[m.Topic]
	s.mu.Unlock()
	if reason != "" {
		// Kicked before the room join: take it out again at once.
		s.cfg.Rooms.Leave(m.Topic, s)
		return proto.Error(reason), false
	}
	if hist != nil {
		// The history up to where the socket entered the room; the
		// service confirms the join as it does for JoinedSubject.
		h := s.request("history", proto.HistorySubject(service), proto.JoinRequest{
			Topic: m.Topic, UserID: s.userID, Payload: json.RawMessage(m.Payload), Gateway: s.cfg.Gateway, ConnID: s.connID, Position: pos,
		})
		if h.Status == proto.StatusNoReply {
			h = proto.Error(ReasonBadReply)
		}
		if h.Status == proto.StatusOK {
			h.Confirm = rep.Confirm
			h.Ignore = nil
		}
		return h, true
	}
	if !rep.Confirm {
		return rep, false
	}
	confirmed := s.request("joined", proto.JoinedSubject(service), proto.JoinRequest{
		Topic: m.Topic, UserID: s.userID, Payload: json.RawMessage(m.Payload), Gateway: s.cfg.Gateway, ConnID: s.connID,
	})
	if confirmed.Status == proto.StatusNoReply {
		confirmed = proto.Error(ReasonBadReply)
	}
	if confirmed.Status != proto.StatusOK {
		return confirmed, false
	}
	return rep, false
}

// noteConfirmed remembers (or forgets) that topic's channel was
// confirmed by service. s.mu is held.
func (s *Session) noteConfirmed(topic, service string, confirmed bool) {
	switch {
	case confirmed:
		if s.confirmed == nil {
			s.confirmed = make(map[string]string)
		}
		s.confirmed[topic] = service
	case s.confirmed != nil:
		delete(s.confirmed, topic)
	}
}

// Reconfirm asks again, for every channel whose join was confirmed, whether
// the socket may stay, and kicks it (phx_close) from those it may no
// longer be in. The gateway calls it after a NATS reconnect: kicks are
// core NATS messages, and one sent while the connection was down is lost,
// so a membership revoked meanwhile is found here instead. A service that
// cannot answer (not reconnected yet, its store unavailable) leaves the
// channel as it is and counts in unanswered, for the caller to ask again
// later; only a refusal ({"reason": "unauthorized"}) kicks.
func (s *Session) Reconfirm() (kicked, unansweredN int) {
	s.mu.Lock()
	type channel struct{ topic, service string }
	var channels []channel
	for topic, service := range s.confirmed {
		if _, ok := s.channels[topic]; ok {
			channels = append(channels, channel{topic, service})
		}
	}
	s.mu.Unlock()
	for _, c := range channels {
		rep := s.request("joined", proto.JoinedSubject(c.service), proto.JoinRequest{
			Topic: c.topic, UserID: s.userID, Payload: json.RawMessage(`{}`), Gateway: s.cfg.Gateway, ConnID: s.connID,
		})
		switch {
		case rep.Status != proto.StatusError:
		case !isRefusal(rep):
			// The service could not tell (its store is electing a
			// leader after the same NATS failure, say): ask again.
			unansweredN++
		case s.Kick(c.topic):
			kicked++
		}
	}
	return kicked, unansweredN
}

// isRefusal reports whether rep refuses the channel: {"reason":
// "unauthorized"}, what the room's service answers a user who is not a
// member (proto.JoinedSubject). Any other error (the session's own when no
// service answered, or a service that cannot read its store) tells
// nothing, and must not end a member's channel.
func isRefusal(rep proto.Reply) bool {
	var r struct{ Reason string }
	_ = json.Unmarshal(rep.Response, &r)
	return r.Reason == ReasonUnauthorized
}

package session

import (
	"slices"

	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
)

// Presence is the gateway's presence tracker as a session sees it
// (presence.Tracker): Phoenix Presence for channels joined with
// proto.JoinPresence.
type Presence interface {
	// Join is called once a channel joined with presence has its join
	// reply queued: the tracker sends it presence_state (with joinRef)
	// and from then on presence_diff, and tracks the socket under its
	// user unless it is anonymous. A channel joined again replaces the
	// earlier one. The tracker must check with Joined that the channel
	// is still there once it holds it (a kick may have ended it meanwhile).
	Join(topic, joinRef string, s *Session)
	// Leave ends the presence of s on topic (no more frames, its meta
	// gone from the room); leaving what was never joined does nothing.
	Leave(topic string, s *Session)
}

// Joined returns the join_ref of the socket's channel on topic, if it is
// joined.
func (s *Session) Joined(topic string) (joinRef string, ok bool) { return s.joinRef(topic) }

// presenceJoin hands a channel that has just joined to the tracker when
// its join asked for presence; a channel joined again without it leaves
// presence.
func (s *Session) presenceJoin(m wire.Message, joinRef string) {
	if s.cfg.Presence == nil {
		return
	}
	if !slices.Contains(proto.JoinFlags(m.Payload), proto.JoinPresence) {
		s.presenceLeave(m.Topic) // a duplicate join that no longer asks for it
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if s.presence == nil {
		s.presence = make(map[string]struct{})
	}
	s.presence[m.Topic] = struct{}{}
	s.mu.Unlock()
	s.cfg.Presence.Join(m.Topic, joinRef, s)
}

// presenceLeave takes the socket's presence on topic out, if it has one.
func (s *Session) presenceLeave(topic string) {
	if s.cfg.Presence == nil {
		return
	}
	s.mu.Lock()
	_, ok := s.presence[topic]
	delete(s.presence, topic)
	if len(s.presence) == 0 {
		s.presence = nil
	}
	s.mu.Unlock()
	if ok {
		s.cfg.Presence.Leave(topic, s)
	}
}

// presenceEnd takes every presence of the socket out (End).
func (s *Session) presenceEnd() {
	if s.cfg.Presence == nil {
		return
	}
	s.mu.Lock()
	topics := make([]string, 0, len(s.presence))
	for t := range s.presence {
		topics = append(topics, t)
	}
	s.presence = nil
	s.mu.Unlock()
	for _, t := range topics {
		s.cfg.Presence.Leave(t, s)
	}
}

package fanout

import (
	"sync"

	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
)

// room is one topic's local members.
type room struct {
	topic string

	mu sync.RWMutex
	// members in a slice, because dispatch walks it for every broadcast
	// (a slice walk is several times cheaper than a map's), and their
	// positions in it, for removal.
	members []*session.Session
	index   map[*session.Session]int
}

// add makes s a member; adding a member again does nothing. r.mu is held.
func (r *room) add(s *session.Session) {
	if _, ok := r.index[s]; !ok {
		r.index[s] = len(r.members)
		r.members = append(r.members, s)
	}
}

// remove takes s out, moving the last member into its place. r.mu is held.
func (r *room) remove(s *session.Session) {
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
	// Encode at most once per serializer: every V2 WebSocket shares one
	// slice, every V1 socket another, every V2 long-poll session a third.
	var cache [3]struct {
		s wire.Serializer
		f session.Frame
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for _, s := range r.members {
		if b.From != "" && s.Skips(b.From, b.ExcludeFrom) {
			continue
		}
		ser := s.Serializer()
		var f session.Frame
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
			f = session.Frame{Data: data, Binary: bin}
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

// encode encodes b for one serializer; bytes its clients cannot carry
// become the same event with an error payload (session.AppendBroadcast).
func encode(ser wire.Serializer, topic string, b *proto.Broadcast) ([]byte, bool, error) {
	if b.Binary == nil {
		return ser.AppendBroadcast(nil, topic, b.Event, b.Payload, false)
	}
	return session.AppendBroadcast(nil, ser, topic, b.Event, b.Binary, true)
}

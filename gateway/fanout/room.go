package fanout

import (
	"bytes"
	"encoding/json"
	"sync"

	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
)

// member is a session in a room, with what its channel asked for.
//
// It holds the session's transport and serializer too, which never change:
// dispatch then reads each member from the slice alone and goes straight
// to the transport, and a session object is touched only for the rare
// broadcast that it may have to skip. Reading them through the session
// cost a cache miss per delivery (10,000 sessions do not fit in a
// core's cache): with it, saturated fan-out needed 0.35-0.44 against
// 0.25 us per delivery (BENCHMARKS.md, 6 December).
type member struct {
	s    *session.Session
	tr   session.Transport
	ser  wire.Serializer
	want *session.Want
}

// room is one topic's local members.
type room struct {
	topic string

	mu sync.RWMutex
	// members in a slice, because dispatch walks it for every broadcast
	// (a slice walk is several times cheaper than a map's), and their
	// positions in it, for removal.
	members []member
	index   map[*session.Session]int
}

// add makes s a member; adding a member again (a duplicate join) only
// replaces what it asked for. r.mu is held.
func (r *room) add(s *session.Session, want *session.Want) {
	if i, ok := r.index[s]; ok {
		r.members[i].want = want
		return
	}
	r.index[s] = len(r.members)
	r.members = append(r.members, member{s: s, tr: s.Transport(), ser: s.Serializer(), want: want})
}

// remove takes s out, moving the last member into its place. r.mu is held.
func (r *room) remove(s *session.Session) {
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
	// Encode at most once per serializer and variant: every V2 WebSocket
	// that asked for nothing shares one slice, every V1 socket another,
	// every V2 long-poll session a third, and each serializer has at most
	// one more for the channels that asked for the sender.
	sender := b.From != "" && b.Binary == nil
	var cache [6]struct {
		s      wire.Serializer
		sender bool
		f      session.Frame
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for i := range r.members {
		m := &r.members[i]
		var ignore, withSender bool
		if w := m.want; w != nil {
			if !w.Accepts(b.OptIn) {
				continue
			}
			ignore, withSender = w.Ignore, sender && w.Sender
		} else if b.OptIn != "" {
			continue
		}
		if b.From != "" && (ignore || b.ExcludeFrom) && m.s.Skips(b.From, b.ExcludeFrom, ignore) {
			continue
		}
		ser := m.ser
		var f session.Frame
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
			f = session.Frame{Data: data, Binary: bin}
			for i := range cache {
				if cache[i].s == nil {
					cache[i].s, cache[i].sender, cache[i].f = ser, withSender, f
					break
				}
			}
		}
		m.tr.Deliver(f)
		n++
	}
	h.metrics.Deliveries.Add(float64(n))
}

// encode encodes b for one serializer, with b.From added to the payload
// as "user_id" when withSender; bytes its clients cannot carry become the
// same event with an error payload (session.AppendBroadcast).
func encode(ser wire.Serializer, topic string, b *proto.Broadcast, withSender bool) ([]byte, bool, error) {
	if b.Binary == nil {
		payload := b.Payload
		if withSender {
			payload = appendSender(nil, payload, b.From)
		}
		return ser.AppendBroadcast(nil, topic, b.Event, payload, false)
	}
	return session.AppendBroadcast(nil, ser, topic, b.Event, b.Binary, true)
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

package fanout

import (
	"bytes"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
)

// member is a session in a room, with what its channel asked for.
//
// It holds the session's transport and serializer too (as an index), which
// never change: dispatch then reads each member from the slice alone and
// goes straight to the transport, and a session object is touched only
// for the rare broadcast that it may have to skip. Reading them through the session
// cost a cache miss per delivery (10,000 sessions do not fit in a
// core's cache): with it, saturated fan-out needed 0.35-0.44 against
// 0.25 us per delivery (BENCHMARKS.md, 6 December).
type member struct {
	s    *session.Session
	tr   session.Transport
	want *session.Want
	// ser indexes the room's serializers (room.sers): dispatch finds the
	// frame for it in an array, not by comparing interfaces, and the
	// member stays 40 bytes (the walk over 10,000 of them is what a
	// broadcast costs; BENCHMARKS.md, 6 December, second section).
	ser uint8
}

// histState is a history channel's place in the room stream.
type histState struct {
	// after: broadcasts at or before it are not for this channel (its
	// join's history had them).
	after uint64
	// holding: the join's reply is not out yet; broadcasts wait in held.
	holding  bool
	held     []heldFrame
	overflow bool
}

type heldFrame struct {
	seq uint64
	f   session.Frame
}

// maxHeld bounds the broadcasts a channel holds while its history join is
// answered (milliseconds, normally); past it the channel gets phx_error
// and its client rejoins from the position it has.
const maxHeld = 10000

// room is one topic's local members.
type room struct {
	topic string
	// pos is the stream sequence of the last message dispatched to the
	// room, stored under mu (read) before its delivery: a member added
	// under mu gets every message after it.
	pos atomic.Uint64

	mu sync.RWMutex
	// members in a slice, because dispatch walks it for every broadcast
	// (a slice walk is several times cheaper than a map's), and their
	// positions in it, for removal.
	members []member
	index   map[*session.Session]int
	// sers are the serializers of the room's members, each once (V1, V2,
	// long-poll's: a handful), indexed by member.ser.
	sers []wire.Serializer
	// hist holds the state of the members whose channel asked for
	// history (want.History), beside the slice rather than in it: a
	// field in every member cost 2-4 ns per delivery to all (the walk
	// over 48-byte members fits the cache better than over 56-byte ones;
	// BenchmarkDispatch1000, BENCHMARKS.md).
	hist map[*session.Session]*histState
}

// add makes s a member; adding a member again (a duplicate join) only
// replaces what it asked for. r.mu is held.
func (r *room) add(s *session.Session, want *session.Want) {
	delete(r.hist, s)
	if want != nil && want.History {
		if r.hist == nil {
			r.hist = make(map[*session.Session]*histState)
		}
		r.hist[s] = &histState{holding: true}
	}
	if i, ok := r.index[s]; ok {
		r.members[i].want = want
		return
	}
	ser := s.Serializer()
	idx := slices.Index(r.sers, ser)
	if idx < 0 {
		idx = len(r.sers)
		r.sers = append(r.sers, ser)
	}
	r.index[s] = len(r.members)
	r.members = append(r.members, member{s: s, tr: s.Transport(), want: want, ser: uint8(min(idx, 255))})
}

// release ends s's hold (Hub.Release); it reports whether the hold
// overflowed. r.mu is held.
func (r *room) release(s *session.Session, after uint64) (overflow bool) {
	i, ok := r.index[s]
	h := r.hist[s]
	if !ok || h == nil {
		return false
	}
	m := &r.members[i]
	h.after, h.holding = after, false
	held := h.held
	h.held = nil
	if h.overflow {
		return true
	}
	for _, hf := range held {
		if hf.seq > after {
			m.tr.Deliver(hf.f)
		}
	}
	return false
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
	if r.hist != nil {
		delete(r.hist, s)
		if len(r.hist) == 0 {
			r.hist = nil
		}
	}
}

// dispatch hands a stream message to its room's local members, if the
// gateway has any.
func (h *Hub) dispatch(subject string, seq uint64, data []byte) {
	h.mu.RLock()
	h.pos.Store(seq)
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
	// three more: with the sender, with the position (history), with both.
	sender := b.From != "" && b.Binary == nil
	var ref string // the position, for history channels' JSON frames
	var cache [cachedSers * 4]struct {
		f    session.Frame
		done bool
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	r.pos.Store(seq)
	n := 0
	for i := range r.members {
		m := &r.members[i]
		variant := 0 // bit 0: with the sender, bit 1: with the position
		var ignore bool
		var hs *histState
		if w := m.want; w != nil {
			if !w.Accepts(b.OptIn) {
				continue
			}
			ignore = w.Ignore
			if sender && w.Sender {
				variant = 1
			}
			if w.History {
				hs = r.hist[m.s]
				if seq <= hs.after {
					continue // its join's history had it
				}
				if b.Binary == nil {
					variant |= 2
					if ref == "" {
						ref = proto.FormatPosition(seq)
					}
				}
			}
		} else if b.OptIn != "" {
			continue
		}
		if b.From != "" && (ignore || b.ExcludeFrom) && m.s.Skips(b.From, b.ExcludeFrom, ignore) {
			continue
		}
		var f session.Frame
		c := int(m.ser)*4 + variant
		if c < len(cache) && cache[c].done {
			f = cache[c].f
		} else {
			ser := r.sers[m.ser]
			var ref1 string
			if variant&2 != 0 {
				ref1 = ref
			}
			data, bin, err := encode(ser, r.topic, &b, variant&1 != 0, ref1)
			if err != nil {
				h.log.Warn("cannot encode broadcast", "topic", r.topic, "vsn", ser.Vsn(), "err", err)
				continue
			}
			f = session.Frame{Data: data, Binary: bin}
			if c < len(cache) {
				cache[c].f, cache[c].done = f, true
			}
		}
		if hs != nil && hs.holding {
			// Its join's reply is not out yet (Hub.Release).
			if len(hs.held) < maxHeld {
				hs.held = append(hs.held, heldFrame{seq: seq, f: f})
			} else {
				hs.overflow = true
			}
			continue
		}
		m.tr.Deliver(f)
		n++
	}
	h.metrics.Deliveries.Add(float64(n))
}

// cachedSers is how many of a room's serializers dispatch keeps encoded
// frames for; a room has a handful (V1, V2, long-poll's), and members of
// any further one get frames encoded each (correct, slower).
const cachedSers = 4

// encode encodes b for one serializer, with b.From added to the payload
// as "user_id" when withSender and ref (a position) as the frame's ref
// when not empty; bytes its clients cannot carry become the
// same event with an error payload (session.AppendBroadcast).
func encode(ser wire.Serializer, topic string, b *proto.Broadcast, withSender bool, ref string) ([]byte, bool, error) {
	if b.Binary == nil {
		payload := b.Payload
		if withSender {
			payload = appendSender(nil, payload, b.From)
		}
		if ref != "" {
			return ser.AppendBroadcastRef(nil, ref, topic, b.Event, payload), false, nil
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

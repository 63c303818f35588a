// Package fanout delivers room broadcasts from NATS to the sockets of one
// gateway.
//
// A Hub holds one NATS subscription per room, however many local sockets
// joined it: the first local join subscribes, the last leave unsubscribes.
// Each broadcast is validated and encoded once per serializer version, and the
// same bytes are handed to every local subscriber, which must queue them
// without blocking (a slow socket is the socket's problem, never the room's).
package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/gateway/metrics"
	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
)

// Frame is one encoded WebSocket message. Data is shared between sockets
// and must never be modified.
type Frame struct {
	Data   []byte
	Binary bool
}

// Subscriber is a local socket that receives room broadcasts.
type Subscriber interface {
	// Serializer is the wire format the socket speaks.
	Serializer() wire.Serializer
	// Deliver queues f for sending. It must not block; a subscriber whose
	// queue is full closes itself.
	Deliver(f Frame)
	// Skips reports whether a broadcast From a user must not reach this
	// subscriber (its user ignores them, or excludeFrom and it is theirs).
	Skips(from string, excludeFrom bool) bool
}

// Hub maps rooms to local subscribers.
type Hub struct {
	nc      *nats.Conn
	log     *slog.Logger
	metrics *metrics.Metrics

	mu    sync.Mutex
	rooms map[string]*room
}

type room struct {
	topic string
	sub   *nats.Subscription
	// ready is closed once the server has the subscription (or err is set),
	// so that a join is acknowledged only when broadcasts will reach it.
	ready chan struct{}
	err   error

	mu      sync.RWMutex
	members map[Subscriber]struct{}
}

// New creates a Hub on the NATS connection.
func New(nc *nats.Conn, log *slog.Logger, m *metrics.Metrics) *Hub {
	return &Hub{nc: nc, log: log, metrics: m, rooms: make(map[string]*room)}
}

// Join adds s to topic's room, subscribing to the room's subject if s is the
// first local member. It returns once broadcasts published from now on will
// reach s.
func (h *Hub) Join(ctx context.Context, topic string, s Subscriber) error {
	subject, err := proto.RoomSubject(topic)
	if err != nil {
		return err
	}
	h.mu.Lock()
	r := h.rooms[topic]
	if r == nil {
		r = &room{topic: topic, ready: make(chan struct{}), members: make(map[Subscriber]struct{})}
		r.sub, err = h.nc.Subscribe(subject, func(m *nats.Msg) { h.dispatch(r, m) })
		if err != nil {
			h.mu.Unlock()
			return fmt.Errorf("fanout: subscribe %s: %w", subject, err)
		}
		// Losing broadcasts to a client-side limit would be silent; the
		// per-socket queues bound memory instead.
		_ = r.sub.SetPendingLimits(-1, -1)
		h.rooms[topic] = r
		h.metrics.Rooms.Inc()
		go func() {
			// Flush is a round trip: after it the server has the SUB.
			if err := h.nc.Flush(); err != nil {
				r.err = fmt.Errorf("fanout: flush subscription %s: %w", subject, err)
			}
			close(r.ready)
		}()
	}
	r.mu.Lock()
	r.members[s] = struct{}{}
	r.mu.Unlock()
	h.mu.Unlock()

	select {
	case <-r.ready:
		if r.err != nil {
			h.Leave(topic, s)
			return r.err
		}
		return nil
	case <-ctx.Done():
		h.Leave(topic, s)
		return ctx.Err()
	}
}

// Leave removes s from topic's room, unsubscribing when it was the last
// local member. Leaving a room one is not in does nothing.
func (h *Hub) Leave(topic string, s Subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[topic]
	if r == nil {
		return
	}
	r.mu.Lock()
	delete(r.members, s)
	empty := len(r.members) == 0
	r.mu.Unlock()
	if empty {
		delete(h.rooms, topic)
		h.metrics.Rooms.Dec()
		if err := r.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			h.log.Warn("unsubscribe room", "topic", topic, "err", err)
		}
	}
}

// Rooms returns the number of rooms with a subscription.
func (h *Hub) Rooms() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.rooms)
}

func (h *Hub) dispatch(r *room, m *nats.Msg) {
	h.metrics.Broadcasts.Inc()
	b, err := proto.DecodeBroadcast(m.Data)
	if err != nil {
		h.metrics.BroadcastsDropped.WithLabelValues("invalid").Inc()
		h.log.Warn("dropped malformed room message", "topic", r.topic, "err", err, "size", len(m.Data))
		return
	}
	// Encode at most once per serializer: every V2 socket shares one
	// slice, every V1 socket another.
	var cache [2]struct {
		s wire.Serializer
		f Frame
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for s := range r.members {
		if b.From != "" && s.Skips(b.From, b.ExcludeFrom) {
			continue
		}
		ser := s.Serializer()
		var f Frame
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
			f = Frame{Data: data, Binary: bin}
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

var binaryUnsupported, _ = proto.Marshal(map[string]string{"error": proto.BinaryUnsupported})

// encode encodes b for one serializer. V1 cannot carry bytes, so a binary
// broadcast reaches V1 sockets as the same event with an error payload.
func encode(ser wire.Serializer, topic string, b *proto.Broadcast) ([]byte, bool, error) {
	if b.Binary == nil {
		return ser.AppendBroadcast(nil, topic, b.Event, b.Payload, false)
	}
	data, bin, err := ser.AppendBroadcast(nil, topic, b.Event, b.Binary, true)
	if errors.Is(err, wire.ErrBinaryUnsupported) {
		return ser.AppendBroadcast(nil, topic, b.Event, binaryUnsupported, false)
	}
	return data, bin, err
}

package proto

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
)

// Wrapper wraps a request handler, e.g. to count and time requests.
type Wrapper func(subject string, h nats.MsgHandler) nats.MsgHandler

// Subscriptions are a service's subscriptions on its request subjects.
type Subscriptions []*nats.Subscription

// Serve subscribes each handler to its subject in the queue group, so that
// every instance of a service shares the requests, and returns once the
// server has the subscriptions. wrap may be nil. On error nothing stays
// subscribed.
func Serve(nc *nats.Conn, group string, handlers map[string]nats.MsgHandler, wrap Wrapper) (Subscriptions, error) {
	var subs Subscriptions
	for subject, h := range handlers {
		if wrap != nil {
			h = wrap(subject, h)
		}
		sub, err := nc.QueueSubscribe(subject, group, h)
		if err != nil {
			subs.unsubscribe()
			return nil, fmt.Errorf("subscribe %s: %w", subject, err)
		}
		// Bursts (a join storm) must queue, not be dropped as a slow consumer.
		_ = sub.SetPendingLimits(1<<20, 256<<20)
		subs = append(subs, sub)
	}
	if err := nc.Flush(); err != nil {
		subs.unsubscribe()
		return nil, fmt.Errorf("flush subscriptions: %w", err)
	}
	return subs, nil
}

// Drain stops taking requests and finishes the ones already received.
func (s Subscriptions) Drain() {
	for _, sub := range s {
		_ = sub.Drain()
	}
}

func (s Subscriptions) unsubscribe() {
	for _, sub := range s {
		_ = sub.Unsubscribe()
	}
}

// Respond answers a request with v as JSON (see Marshal), logging what
// cannot be sent; a message without a reply subject is not an error.
func Respond(m *nats.Msg, v any, log *slog.Logger) {
	data, err := Marshal(v)
	if err != nil {
		log.Error("encode reply", "subject", m.Subject, "err", err)
		return
	}
	if err := m.Respond(data); err != nil && !errors.Is(err, nats.ErrMsgNoReply) {
		log.Warn("reply failed", "subject", m.Subject, "err", err)
	}
}

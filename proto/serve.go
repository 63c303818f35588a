package proto

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/proto/workpool"
)

// Wrapper wraps a request handler, e.g. to count and time requests.
type Wrapper func(subject string, h nats.MsgHandler) nats.MsgHandler

// MaxInFlight is how many requests one service instance handles at once.
// Handlers wait on NATS (a KV read, a stream acknowledgement), so running
// them one at a time would make an instance as slow as its slowest round
// trip; past this many, requests wait in the subscription's buffer.
const MaxInFlight = 512

// Subscriptions are a service's subscriptions on its request subjects.
type Subscriptions struct {
	subs    []*nats.Subscription
	pool    *workpool.Pool
	expired atomic.Uint64
}

// Expired returns how many requests were dropped past their deadline.
func (s *Subscriptions) Expired() uint64 { return s.expired.Load() }

// Serve subscribes each handler to its subject in the queue group, so that
// every instance of a service shares the requests, and returns once the
// server has the subscriptions. wrap may be nil. On error nothing stays
// subscribed.
//
// Requests are handled concurrently, up to MaxInFlight, on a pool of
// goroutines that keep their grown stacks between requests, so a handler
// must not assume the order of requests. (The
// gateway sends a socket's next request only after the reply to the
// previous one, which is the order that matters.) A request whose
// DeadlineHeader has passed when its turn comes is dropped unanswered:
// its sender has given up on it.
func Serve(nc *nats.Conn, group string, handlers map[string]nats.MsgHandler, wrap Wrapper) (*Subscriptions, error) {
	s := &Subscriptions{pool: workpool.New(MaxInFlight, 0)}
	for subject, h := range handlers {
		if wrap != nil {
			h = wrap(subject, h)
		}
		sub, err := nc.QueueSubscribe(subject, group, s.concurrent(h))
		if err != nil {
			s.unsubscribe()
			return nil, fmt.Errorf("subscribe %s: %w", subject, err)
		}
		// Bursts (a join storm) must queue, not be dropped as a slow consumer.
		_ = sub.SetPendingLimits(1<<20, 256<<20)
		s.subs = append(s.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		s.unsubscribe()
		return nil, fmt.Errorf("flush subscriptions: %w", err)
	}
	return s, nil
}

func (s *Subscriptions) concurrent(h nats.MsgHandler) nats.MsgHandler {
	return func(m *nats.Msg) {
		// Blocks the subscription when the pool is full: back-pressure.
		s.pool.Go(func() {
			if Expired(m) {
				s.expired.Add(1)
				return
			}
			h(m)
		})
	}
}

// Drain stops taking requests and returns once the ones already received
// have been answered (or ctx ends), so that the connection can close
// without dropping a reply.
func (s *Subscriptions) Drain(ctx context.Context) {
	for _, sub := range s.subs {
		_ = sub.Drain()
	}
	// A draining subscription still hands its buffered requests to the
	// handler; it is invalid once the last one was handed over.
	for _, sub := range s.subs {
		for sub.IsValid() && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if ctx.Err() != nil {
		return
	}
	done := make(chan struct{})
	go func() { s.pool.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

func (s *Subscriptions) unsubscribe() {
	for _, sub := range s.subs {
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

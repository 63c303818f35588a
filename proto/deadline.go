package proto

import (
	"context"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// DeadlineHeader is the NATS header with which a request carries its
// deadline, in Unix milliseconds: the moment its sender stops waiting for
// the reply (the gateway sets it to the send time plus
// gateway.request_timeout, when its client is told "service timeout").
// Serve drops a request whose deadline has passed before its handler
// starts, without a reply, and a handler that acts on the world (roomsvc's
// broadcast) checks again before it acts, so that a request its client
// was told failed does not take effect later. Requests without it have no
// deadline.
const DeadlineHeader = "Phx-Deadline"

// SetDeadline sets m's DeadlineHeader to t; m.Header must not be nil.
func SetDeadline(m *nats.Msg, t time.Time) {
	m.Header.Set(DeadlineHeader, strconv.FormatInt(t.UnixMilli(), 10))
}

// Deadline returns the deadline m carries, if any.
func Deadline(m *nats.Msg) (time.Time, bool) {
	if m.Header == nil {
		return time.Time{}, false
	}
	v := m.Header.Get(DeadlineHeader)
	if v == "" {
		return time.Time{}, false
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}

// Expired reports whether m's deadline has passed.
func Expired(m *nats.Msg) bool {
	dl, ok := Deadline(m)
	return ok && !time.Now().Before(dl)
}

// WithDeadline returns ctx bounded by m's deadline too, when it has one.
func WithDeadline(ctx context.Context, m *nats.Msg) (context.Context, context.CancelFunc) {
	if dl, ok := Deadline(m); ok {
		return context.WithDeadline(ctx, dl)
	}
	return context.WithCancel(ctx)
}

package proto

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// RoomStream is the JetStream stream that stores every room broadcast: its
// subjects are RoomSubjectAll, so a plain NATS publish on a RoomSubject is
// stored too.
//
// Gateways read rooms from it, one consumer of the whole stream per gateway,
// instead of a core NATS subscription.
// That is what makes fan-out survive faults: a broadcast the stream
// acknowledged reaches every gateway with the room, in the stream's order,
// even when a gateway's NATS node fails over (its consumer resumes after the
// last message it delivered) or when the gateway's interest has not reached
// every node of a cluster yet (the consumer starts at a stream sequence, not
// at a subscription's arrival). The stream keeps messages only as long as a
// gateway may need to catch up after a reconnect (RoomStreamOptions.MaxAge).
//
// roomsvc creates the stream at start (EnsureRoomStream); gateways and
// publishers only use it.
const RoomStream = "PHX_ROOMS"

// RoomStreamOptions size RoomStream.
type RoomStreamOptions struct {
	// Replicas is 1 on a single server, 3 on a NATS cluster so that an
	// acknowledged broadcast outlives a node. Default 1.
	Replicas int
	// MaxAge is how long a broadcast stays available for a gateway that
	// reconnects; default DefaultRoomStreamMaxAge.
	MaxAge time.Duration
	// MaxBytes bounds the stream's size; the oldest broadcasts go first.
	// Default DefaultRoomStreamMaxBytes.
	MaxBytes int64
	// MaxMsgsPerRoom bounds the broadcasts the stream keeps for one room
	// (JetStream's MaxMsgsPerSubject): a room flooding past it loses its
	// own oldest broadcasts, not other rooms' (which MaxBytes alone would
	// evict). Default DefaultRoomStreamMaxMsgsPerRoom; -1: no bound.
	//
	// Sized to bite only in a flood: roomsvc's per-room budget
	// (rooms.room_rate_limit) lets a room store at most its rate times
	// MaxAge per roomsvc instance. A bite deletes inside the stream; a
	// gateway whose consumer had not yet read the deleted broadcasts sees
	// a jump in the stream sequence, a loss like any other (it was one:
	// those broadcasts never reached it), and a gateway that had read them
	// sees nothing.
	MaxMsgsPerRoom int64
}

// Defaults of RoomStreamOptions. A gateway catches up within seconds of a
// NATS reconnect; a minute covers that with a wide margin while keeping the
// stream small at high broadcast rates.
const (
	DefaultRoomStreamMaxAge   = time.Minute
	DefaultRoomStreamMaxBytes = 256 << 20
	// DefaultRoomStreamMaxMsgsPerRoom is above the minute's worth of one
	// room at roomsvc's default budget (100 broadcasts/s), on one instance.
	DefaultRoomStreamMaxMsgsPerRoom = 10000
)

// EnsureRoomStream creates RoomStream, or updates its limits when it exists.
// The stream is on disk although its messages only need to outlive a
// reconnect: a stream in memory would vanish with a restarted single
// nats-server, and every join and broadcast would fail until roomsvc
// restarted too.
func EnsureRoomStream(ctx context.Context, js jetstream.JetStream, opts RoomStreamOptions) (jetstream.Stream, error) {
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultRoomStreamMaxAge
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultRoomStreamMaxBytes
	}
	switch {
	case opts.MaxMsgsPerRoom == 0:
		opts.MaxMsgsPerRoom = DefaultRoomStreamMaxMsgsPerRoom
	case opts.MaxMsgsPerRoom < 0:
		opts.MaxMsgsPerRoom = -1 // JetStream's "unlimited"
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        RoomStream,
		Description: "phxnats room broadcasts, read by the gateways; see proto.RoomStream",
		Subjects:    []string{RoomSubjectAll},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      opts.MaxAge,
		MaxBytes:    opts.MaxBytes,
		// Per room: a flood evicts its own room's oldest, not others'.
		MaxMsgsPerSubject: opts.MaxMsgsPerRoom,
		Replicas:          opts.Replicas,
		// Publishers retry with the same Nats-Msg-Id (see Publish); a
		// retry within this window is stored once. JetStream refuses a
		// window longer than MaxAge.
		Duplicates: min(30*time.Second, opts.MaxAge),
		MaxMsgSize: RoomStreamMaxMsgSize,
	})
	if err != nil {
		return nil, fmt.Errorf("proto: create stream %s: %w", RoomStream, err)
	}
	return st, nil
}

// RoomStreamMaxMsgSize is the largest broadcast RoomStream stores: NATS's
// default max_payload. Services that accept content for broadcasts bound
// it so that what they accept fits (roomsvc checks at start).
const RoomStreamMaxMsgSize = 1 << 20

// ErrNoRoomStream means no JetStream stream stored a broadcast: JetStream is
// off on the NATS server, or roomsvc never ran on it to create RoomStream.
var ErrNoRoomStream = errors.New("proto: no stream stores room broadcasts (is JetStream enabled and roomsvc started?)")

// publishStored publishes data on subject and returns once RoomStream has
// stored it. An attempt that times out is retried with the same message id
// until ctx ends, so that a stream leader election neither loses the
// broadcast nor stores it twice. (nats.go itself retries a publish that
// found no stream for a moment, which an election also causes.)
func publishStored(ctx context.Context, js jetstream.JetStream, subject string, data []byte) (*jetstream.PubAck, error) {
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, nuid.Next())
	for {
		// Each attempt gets a deadline of its own: during an election the
		// first attempts go unanswered, and the caller's deadline must
		// leave room for the retry that succeeds.
		actx, cancel := context.WithTimeout(ctx, attemptTimeout(ctx))
		ack, err := js.PublishMsg(actx, msg, jetstream.WithExpectStream(RoomStream))
		cancel()
		switch {
		case err == nil:
			return ack, nil
		case errors.Is(err, jetstream.ErrNoStreamResponse):
			return nil, fmt.Errorf("%w: publish to %s", ErrNoRoomStream, subject)
		case ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)):
			continue
		}
		return nil, fmt.Errorf("proto: publish to %s: %w", subject, err)
	}
}

// attemptTimeout is the deadline of one publish attempt: a quarter of what
// is left, at least 250ms and at most 2s.
func attemptTimeout(ctx context.Context) time.Duration {
	d := 2 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, max(time.Until(dl)/4, 250*time.Millisecond))
	}
	return d
}

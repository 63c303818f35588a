package fanout

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/proto"
)

// reader reads proto.RoomStream, every room, in stream order, exactly
// once, across NATS failures: it remembers the stream sequence of the next
// message it owes the room, and whenever its consumer may have lost
// something (a reconnect, missed heartbeats, a gap in the consumer's own
// sequence, the consumer gone with its NATS node) it replaces the consumer
// with one that starts at that sequence.
//
// nats.go's ordered consumer does the same, but its recreation backs off
// from 1s to 10s with 10s attempts, which turned a NATS node failure into a
// ten-second silence in the fault tests; here attempts are short and
// frequent, and a reconnect recreates at once.
type reader struct {
	js        jetstream.JetStream
	heartbeat time.Duration
	// deliver gets each message's subject (its room) and data.
	deliver func(subject string, data []byte)
	onError func(err error)
	// onGap reports stream sequences from..to that the reader owed but
	// the stream no longer holds (its limits removed them while the
	// gateway could not read): it cannot tell which rooms they were for,
	// so every room must assume they held some of its messages.
	onGap func(from, to uint64)

	restart chan struct{} // buffered(1): a replacement is due
	done    chan struct{} // closed by stop

	mu   sync.Mutex
	gen  int    // bumped by each new consumer; older deliveries are ignored
	next uint64 // stream sequence of the next message to deliver
	dseq uint64 // consumer sequence of the last message delivered
	cons jetstream.Consumer
	cc   jetstream.ConsumeContext
}

// Errors after which a consumer is replaced.
var replaceOn = []error{
	jetstream.ErrNoHeartbeat, jetstream.ErrConsumerDeleted, jetstream.ErrConsumerNotFound,
	jetstream.ErrConsumerLeadershipChanged, nats.ErrNoResponders, errGap,
}

var (
	errGap     = errors.New("fanout: gap in the consumer's sequence")
	errStopped = errors.New("fanout: room reader stopped")
)

// start creates the first consumer at the stream's next sequence and
// returns once it exists: a message stored from then on reaches deliver.
func (rd *reader) start(ctx context.Context) error {
	st, err := rd.js.Stream(ctx, proto.RoomStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return proto.ErrNoRoomStream
	}
	if err != nil {
		return fmt.Errorf("fanout: stream %s: %w", proto.RoomStream, err)
	}
	rd.next = st.CachedInfo().State.LastSeq + 1
	if _, err := rd.consume(ctx); err != nil {
		return err
	}
	go rd.supervise()
	return nil
}

// consume replaces the current consumer by one starting at rd.next. If the
// stream no longer holds rd.next, the consumer starts at its first message
// and consume returns the sequences skipped. Only one consume runs at a
// time (start, then the supervisor); the lock is not held while the
// server makes the consumer, which can take seconds during an election.
func (rd *reader) consume(ctx context.Context) (gap [2]uint64, err error) {
	rd.mu.Lock()
	if rd.stopped() {
		rd.mu.Unlock()
		return gap, errStopped
	}
	rd.dropLocked()
	rd.gen++ // from here on, the old consumer's deliveries and errors are ignored
	gen, next := rd.gen, rd.next
	rd.mu.Unlock()

	// No filter: the stream holds only room subjects, and an unfiltered
	// consumer's next message is simply the next in the stream.
	cons, err := rd.js.CreateConsumer(ctx, proto.RoomStream, jetstream.ConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   next,
		AckPolicy:     jetstream.AckNonePolicy,
		// One reader, in memory, on one node: if that node dies the
		// reader notices (heartbeats) and makes another.
		Replicas:      1,
		MemoryStorage: true,
		// Left behind when this gateway loses NATS for good; the server
		// removes it.
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return gap, fmt.Errorf("fanout: consumer of %s: %w", proto.RoomStream, err)
	}

	rd.mu.Lock()
	defer rd.mu.Unlock()
	if rd.stopped() {
		// stopped meanwhile: a consumer kept now would never be stopped
		rd.deleteAsync(cons)
		return gap, errStopped
	}
	// The server starts a consumer at the stream's first message when the
	// one asked for is gone, and reports it as already delivered.
	if first := cons.CachedInfo().Delivered.Stream + 1; first > next {
		gap = [2]uint64{next, first - 1}
		rd.next = first
	}
	rd.dseq = 0
	cc, err := cons.Consume(func(m jetstream.Msg) { rd.receive(gen, m) },
		jetstream.PullHeartbeat(rd.heartbeat),
		jetstream.PullExpiry(max(30*time.Second, 3*rd.heartbeat)),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			rd.mu.Lock()
			stale := gen != rd.gen
			rd.mu.Unlock()
			if stale {
				return
			}
			rd.onError(err)
			for _, e := range replaceOn {
				if errors.Is(err, e) {
					rd.replace()
					return
				}
			}
		}))
	if err != nil {
		rd.deleteAsync(cons)
		return gap, fmt.Errorf("fanout: consume %s: %w", proto.RoomStream, err)
	}
	rd.cons, rd.cc = cons, cc
	return gap, nil
}

// stopped reports whether stop was called.
func (rd *reader) stopped() bool {
	select {
	case <-rd.done:
		return true
	default:
		return false
	}
}

func (rd *reader) receive(gen int, m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		return
	}
	rd.mu.Lock()
	if gen != rd.gen {
		rd.mu.Unlock()
		return
	}
	if meta.Sequence.Consumer != rd.dseq+1 {
		// A message went to an inbox nobody listened to (during a
		// reconnect): start again from the first one not delivered.
		rd.mu.Unlock()
		rd.onError(errGap)
		rd.replace()
		return
	}
	rd.dseq = meta.Sequence.Consumer
	rd.next = meta.Sequence.Stream + 1
	rd.mu.Unlock()
	// The subscription calls this for one message at a time, so the
	// stream's order holds without holding the lock while delivering.
	rd.deliver(m.Subject(), m.Data())
}

// replace asks the supervisor for a new consumer.
func (rd *reader) replace() {
	select {
	case rd.restart <- struct{}{}:
	default: // one is already due
	}
}

// supervise replaces the consumer when asked, retrying quickly: after a
// node failure, the stream needs a few seconds to elect a leader, and
// every attempt before that fails.
func (rd *reader) supervise() {
	for {
		select {
		case <-rd.done:
			return
		case <-rd.restart:
		}
		for attempt := 0; ; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			gap, err := rd.consume(ctx)
			cancel()
			if err == nil {
				if gap[0] != 0 {
					rd.onGap(gap[0], gap[1])
				}
				break
			}
			if errors.Is(err, errStopped) {
				return
			}
			rd.onError(err)
			select {
			case <-rd.done:
				return
			case <-time.After(min(100*time.Millisecond<<min(attempt, 4), time.Second)):
			}
		}
	}
}

// stop ends the reader and deletes its consumer.
func (rd *reader) stop() {
	close(rd.done)
	rd.mu.Lock()
	defer rd.mu.Unlock()
	rd.gen++
	rd.dropLocked()
}

// dropLocked stops the current consumer and deletes it from the server
// rather than leave it there until its inactivity threshold.
func (rd *reader) dropLocked() {
	if rd.cc != nil {
		rd.cc.Stop()
		rd.deleteAsync(rd.cons)
		rd.cc, rd.cons = nil, nil
	}
}

func (rd *reader) deleteAsync(cons jetstream.Consumer) {
	name := cons.CachedInfo().Name
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rd.js.DeleteConsumer(ctx, proto.RoomStream, name)
	}()
}

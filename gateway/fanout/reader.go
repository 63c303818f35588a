package fanout

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
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
// The consumer is a push consumer that roomsvc makes for the reader
// (proto.SubjectFeedCreate): the gateway's NATS user may not create
// consumers, whose deliver subject nats-server does not check. It
// delivers to a subject derived from a secret key the reader draws for
// each consumer, where the reader subscribes before asking for it. Without
// roomsvc on NATS (no responders: tests, a bare nats-server) the reader
// makes the same consumer itself, where its permissions allow.
//
// nats.go's ordered consumer does the same, but its recreation backs off
// from 1s to 10s with 10s attempts, which turned a NATS node failure into a
// ten-second silence in the fault tests; here attempts are short and
// frequent, and a reconnect recreates at once.
type reader struct {
	nc        *nats.Conn
	js        jetstream.JetStream
	heartbeat time.Duration
	// deliver gets each message's subject (its room), stream sequence and
	// data.
	deliver func(subject string, seq uint64, data []byte)
	// onStart gets the stream's last sequence when the reader starts:
	// the messages after it are what deliver will get.
	onStart func(last uint64)
	onError func(err error)
	// onGap reports stream sequences from..to that the reader owed but
	// the stream no longer holds (its limits removed them, or they were
	// deleted, before the consumer sent them): it cannot tell which rooms
	// they were for, so every room must assume they held some of its
	// messages.
	onGap func(from, to uint64)

	restart chan struct{} // buffered(1): a replacement is due
	done    chan struct{} // closed by stop

	// dmu orders what members learn: a gap is reported (onGap) before
	// any message after it is delivered, whichever goroutine finds it.
	dmu sync.Mutex

	mu sync.Mutex
	// gap is the sequences a new consumer skipped (the stream no longer
	// had them), not reported yet: by receive, when the consumer's first
	// message comes, or by supervise, if it comes first.
	gap  [2]uint64
	gen  int    // bumped by each new consumer; older deliveries are ignored
	next uint64 // stream sequence of the next message to deliver
	dseq uint64 // consumer sequence of the last message delivered
	key  string // the current consumer's key (proto.FeedRequest)
	name string // and its name
	sub  *nats.Subscription
	// seen is set by every message of the current consumer; watch clears
	// it every two heartbeats and replaces a consumer that stayed silent.
	seen  atomic.Bool
	watch *time.Timer
}

// Errors after which a consumer is replaced.
var replaceOn = []error{jetstream.ErrNoHeartbeat, jetstream.ErrConsumerDeleted, errGap}

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
	if rd.onStart != nil {
		rd.onStart(rd.next - 1)
	}
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
	key, err := proto.NewFeedKey()
	if err != nil {
		return gap, err
	}
	name := proto.FeedName(key)
	rd.mu.Lock()
	if rd.stopped() {
		rd.mu.Unlock()
		return gap, errStopped
	}
	rd.dropLocked()
	rd.gen++ // from here on, the old consumer's deliveries and errors are ignored
	rd.dseq = 0
	gen, next := rd.gen, rd.next
	rd.mu.Unlock()

	// Listen first: the consumer delivers as soon as it exists.
	sub, err := rd.nc.Subscribe(proto.FeedSubject(key), func(m *nats.Msg) { rd.receive(gen, name, m) })
	if err != nil {
		return gap, fmt.Errorf("fanout: subscribe to the room feed: %w", err)
	}
	_ = sub.SetPendingLimits(1<<20, 256<<20)
	rep, err := proto.RequestFeed(ctx, rd.nc, rd.js, proto.FeedRequest{Key: key, StartSeq: next, Heartbeat: rd.heartbeat})
	if err != nil {
		_ = sub.Unsubscribe()
		return gap, err
	}

	rd.mu.Lock()
	defer rd.mu.Unlock()
	if rd.stopped() || gen != rd.gen {
		// stopped meanwhile: a consumer kept now would never be stopped
		_ = sub.Unsubscribe()
		proto.ReleaseFeed(rd.nc, rd.js, proto.FeedRequest{Key: key})
		return gap, errStopped
	}
	if rep.FirstSeq > next {
		// Left to receive or reportGap (not rd.next moved here): the
		// consumer may deliver before this returns, and its messages
		// must not reach a member before the gap does.
		gap = [2]uint64{next, rep.FirstSeq - 1}
		rd.gap = gap
	}
	rd.sub, rd.key, rd.name = sub, key, name
	rd.seen.Store(true)
	rd.watch = time.AfterFunc(2*rd.heartbeat, func() { rd.check(gen) })
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

// check replaces the consumer of generation gen if nothing came from it,
// not even a heartbeat, for two heartbeats.
func (rd *reader) check(gen int) {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if gen != rd.gen || rd.stopped() {
		return
	}
	if rd.seen.Swap(false) {
		rd.watch.Reset(2 * rd.heartbeat)
		return
	}
	go rd.fail(gen, jetstream.ErrNoHeartbeat)
}

// fail reports err from the consumer of generation gen and replaces it.
func (rd *reader) fail(gen int, err error) {
	rd.mu.Lock()
	stale := gen != rd.gen
	rd.mu.Unlock()
	if stale {
		return
	}
	rd.onError(err)
	rd.replace()
}

func (rd *reader) receive(gen int, name string, m *nats.Msg) {
	rd.seen.Store(true)
	if len(m.Data) == 0 && m.Header != nil {
		if status := m.Header.Get("Status"); status != "" {
			rd.control(gen, status, m)
			return
		}
	}
	meta, err := m.Metadata()
	if err != nil || meta.Consumer != name {
		return
	}
	rd.dmu.Lock()
	defer rd.dmu.Unlock()
	rd.mu.Lock()
	if gen != rd.gen {
		rd.mu.Unlock()
		return
	}
	if meta.Sequence.Consumer != rd.dseq+1 {
		// A message was lost (the subscription overflowed, or the server
		// sent it during a reconnect): start again from the first one not
		// delivered.
		rd.mu.Unlock()
		rd.fail(gen, errGap)
		return
	}
	// The consumer reads the whole stream, so a stream sequence skipped
	// while the consumer's own is contiguous is a message the stream
	// dropped (its limits, a deletion) before the consumer sent it: lost.
	var lost [2]uint64
	if meta.Sequence.Stream > rd.next {
		lost = [2]uint64{rd.next, meta.Sequence.Stream - 1}
	}
	rd.gap = [2]uint64{} // reported here, with what followed it
	rd.dseq = meta.Sequence.Consumer
	rd.next = meta.Sequence.Stream + 1
	rd.mu.Unlock()
	if lost[0] != 0 {
		rd.onGap(lost[0], lost[1])
	}
	// The subscription calls this for one message at a time, so the
	// stream's order holds without holding the lock while delivering.
	rd.deliver(m.Subject, meta.Sequence.Stream, m.Data)
}

// control handles the consumer's status messages: an idle heartbeat names
// the last message the consumer sent, so that a lost last message is
// noticed too; a 409 says the consumer is gone.
func (rd *reader) control(gen int, status string, m *nats.Msg) {
	switch status {
	case "100":
		last, err := strconv.ParseUint(m.Header.Get("Nats-Last-Consumer"), 10, 64)
		if err != nil {
			return
		}
		rd.mu.Lock()
		lost := gen == rd.gen && last > rd.dseq
		rd.mu.Unlock()
		if lost {
			rd.fail(gen, errGap)
		}
	case "409":
		rd.fail(gen, jetstream.ErrConsumerDeleted)
	}
}

// reportGap reports the sequences the current consumer skipped, unless
// receive has (its first message came first): a quiet stream must not
// hide a loss.
func (rd *reader) reportGap() {
	rd.dmu.Lock()
	defer rd.dmu.Unlock()
	rd.mu.Lock()
	gap := rd.gap
	rd.gap = [2]uint64{}
	if gap[0] != 0 {
		rd.next = max(rd.next, gap[1]+1)
	}
	rd.mu.Unlock()
	if gap[0] != 0 {
		rd.onGap(gap[0], gap[1])
	}
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
			_, err := rd.consume(ctx)
			cancel()
			if err == nil {
				rd.reportGap()
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

// dropLocked stops listening to the current consumer and deletes it
// from the server rather than leave it there until its inactivity
// threshold.
func (rd *reader) dropLocked() {
	if rd.sub != nil {
		_ = rd.sub.Unsubscribe()
		rd.watch.Stop()
		proto.ReleaseFeed(rd.nc, rd.js, proto.FeedRequest{Key: rd.key})
		rd.sub, rd.key, rd.name = nil, "", ""
	}
}

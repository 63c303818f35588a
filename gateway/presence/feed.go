package presence

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

// feed is the tracker's one consumer of proto.PresenceStream, for all
// rooms. Like the room feed (gateway/fanout), roomsvc makes it
// (proto.SubjectFeedCreate with the presence stream), delivering to a
// subject derived from a secret key, since the gateway may not create
// consumers; without roomsvc on NATS the tracker makes it itself.
//
// Unlike the room stream, the presence stream deletes messages all the
// time (a key keeps its last value only), so skipped stream sequences mean
// nothing. What matters is the consumer's own sequence: on any doubt (a
// gap in it, missed heartbeats, the consumer gone, a NATS reconnect) the
// feed is replaced by one starting after the stream's last message, and
// every followed room is snapshotted again as of that message (resync):
// nothing missed, nothing applied twice (every key is applied by its
// sequence).
type feed struct {
	t     *Tracker
	ready chan struct{} // closed once the first consumer exists, or err is set
	err   error
	again chan struct{} // buffered(1): a replacement is due
	done  chan struct{}

	mu    sync.Mutex
	gen   int
	dseq  uint64
	key   string
	sub   *nats.Subscription
	seen  atomic.Bool
	watch *time.Timer
}

// startFeed starts the tracker's feed; t.mu is held.
func (t *Tracker) startFeed() *feed {
	f := &feed{t: t, ready: make(chan struct{}), again: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), t.opts.Timeout)
		defer cancel()
		_, f.err = f.consume(ctx)
		close(f.ready)
		if f.err == nil {
			f.supervise()
		}
	}()
	return f
}

// wait returns once the feed runs, or why it does not.
func (f *feed) wait(ctx context.Context) error {
	select {
	case <-f.ready:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// failed reports whether the feed could not start.
func (f *feed) failed() bool {
	select {
	case <-f.ready:
		return f.err != nil
	default:
		return false
	}
}

// consume replaces the consumer by one that starts after the stream's
// last message, and returns that message's sequence.
func (f *feed) consume(ctx context.Context) (uint64, error) {
	t := f.t
	st, err := t.js.Stream(ctx, proto.PresenceStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, fmt.Errorf("presence: no stream %s (is roomsvc started?)", proto.PresenceStream)
	}
	if err != nil {
		return 0, fmt.Errorf("presence: stream %s: %w", proto.PresenceStream, err)
	}
	last := st.CachedInfo().State.LastSeq
	key, err := proto.NewFeedKey()
	if err != nil {
		return 0, err
	}
	name := proto.FeedName(key)
	f.mu.Lock()
	if f.stopped() {
		f.mu.Unlock()
		return 0, errStopped
	}
	f.dropLocked()
	f.gen++
	f.dseq = 0
	gen := f.gen
	f.mu.Unlock()

	sub, err := t.nc.Subscribe(proto.FeedSubject(key), func(m *nats.Msg) { f.receive(gen, name, m) })
	if err != nil {
		return 0, fmt.Errorf("presence: subscribe to the presence feed: %w", err)
	}
	_ = sub.SetPendingLimits(1<<20, 256<<20)
	req := proto.FeedRequest{Stream: proto.PresenceStream, Key: key, StartSeq: last + 1, Heartbeat: t.opts.Heartbeat}
	if _, err := proto.RequestFeed(ctx, t.nc, t.js, req); err != nil {
		_ = sub.Unsubscribe()
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped() || gen != f.gen {
		_ = sub.Unsubscribe()
		f.deleteAsync(key)
		return 0, errStopped
	}
	f.sub, f.key = sub, key
	f.seen.Store(true)
	f.watch = time.AfterFunc(2*t.opts.Heartbeat, func() { f.check(gen) })
	return last, nil
}

var errStopped = errors.New("presence: feed stopped")

func (f *feed) stopped() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// receive handles one message of the consumer of generation gen.
func (f *feed) receive(gen int, name string, m *nats.Msg) {
	f.seen.Store(true)
	if len(m.Data) == 0 && m.Header != nil {
		switch m.Header.Get("Status") {
		case "100":
			last, err := strconv.ParseUint(m.Header.Get("Nats-Last-Consumer"), 10, 64)
			f.mu.Lock()
			lost := err == nil && gen == f.gen && last > f.dseq
			f.mu.Unlock()
			if lost {
				f.fail(gen)
			}
			return
		case "409":
			f.fail(gen)
			return
		case "":
		default:
			return
		}
	}
	meta, err := m.Metadata()
	if err != nil || meta.Consumer != name {
		return
	}
	f.mu.Lock()
	if gen != f.gen {
		f.mu.Unlock()
		return
	}
	if meta.Sequence.Consumer != f.dseq+1 {
		f.mu.Unlock()
		f.fail(gen)
		return
	}
	f.dseq = meta.Sequence.Consumer
	f.mu.Unlock()
	f.t.apply(m.Subject, meta.Sequence.Stream, m.Header, m.Data)
}

// check replaces the consumer of generation gen if it stayed silent for
// two heartbeats.
func (f *feed) check(gen int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if gen != f.gen || f.stopped() {
		return
	}
	if f.seen.Swap(false) {
		f.watch.Reset(2 * f.t.opts.Heartbeat)
		return
	}
	go f.fail(gen)
}

// fail replaces the consumer of generation gen, unless it was already.
func (f *feed) fail(gen int) {
	f.mu.Lock()
	stale := gen != f.gen
	f.mu.Unlock()
	if !stale {
		f.doubt()
	}
}

// doubt asks for a new consumer and a resync of every room.
func (f *feed) doubt() {
	select {
	case f.again <- struct{}{}:
	default:
	}
}

// supervise replaces the consumer when asked, retrying until it works,
// then resyncs every room.
func (f *feed) supervise() {
	for {
		select {
		case <-f.done:
			return
		case <-f.again:
		}
		for attempt := 0; ; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			last, err := f.consume(ctx)
			cancel()
			if err == nil {
				f.t.resync(last)
				break
			}
			if errors.Is(err, errStopped) {
				return
			}
			f.t.log.Warn("presence consumer", "err", err)
			select {
			case <-f.done:
				return
			case <-time.After(min(100*time.Millisecond<<min(attempt, 4), time.Second)):
			}
		}
	}
}

// stop ends the feed and deletes its consumer.
func (f *feed) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped() {
		return
	}
	close(f.done)
	f.gen++
	f.dropLocked()
}

// dropLocked stops listening to the current consumer and deletes it.
func (f *feed) dropLocked() {
	if f.sub != nil {
		_ = f.sub.Unsubscribe()
		f.watch.Stop()
		f.deleteAsync(f.key)
		f.sub, f.key = nil, ""
	}
}

// deleteAsync has roomsvc delete the consumer made for key, or deletes
// it when none listens.
func (f *feed) deleteAsync(key string) {
	proto.ReleaseFeed(f.t.nc, f.t.js, proto.FeedRequest{Stream: proto.PresenceStream, Key: key})
}

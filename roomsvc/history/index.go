// Package history serves room history and resume (proto.HistoryStream):
// the broadcasts a join asked for, read by sequence from the history
// stream, with the truth about what retention dropped.
//
// Reading a room's messages out of a stream shared by every room with a
// filtered read costs the NATS server a walk past every other room's
// messages (nats-server 2.15 msgBlock.firstMatching; BENCHMARKS.md), so a
// join would cost more the busier the other rooms are. Instead, each
// roomsvc instance keeps an Index: the sequences of every room's messages
// in the history stream, read once through one ordered consumer of the
// stream's headers. A join then costs a map lookup and one direct get by
// sequence per message it returns, whatever the other rooms do.
//
// The Index costs some 8 bytes per message kept in the history stream
// (100 per room by default) plus a map entry per room, and is rebuilt from
// the stream at start. It is a cache of JetStream state, like the
// membership cache: the instance stays stateless.
package history

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/proto"
)

// Index knows, for each room, the sequences of its messages in
// proto.HistoryStream, and what may have been dropped.
type Index struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	st     jetstream.Stream
	cc     jetstream.ConsumeContext
	log    *slog.Logger
	perRm  int
	closed chan struct{}

	mu    sync.Mutex
	rooms map[string]*room
	// pos is the last stream sequence the index took in.
	pos uint64
	// lostUpTo: messages at or before it may have been dropped from the
	// stream before the index saw them, for any room (the stream's front
	// moved past them, or the consumer skipped a sequence).
	lostUpTo uint64
	// loadedTo is the stream's last sequence when the index opened.
	loadedTo uint64
	// moved, made by a waiter, is closed when pos moves.
	moved chan struct{}
}

// room is one room's messages in the stream, oldest first.
type room struct {
	seqs []uint64
	// dropped is the last sequence of the room known to be gone
	// (trimmed past the per-room bound, or found missing).
	dropped uint64
}

// Open reads proto.HistoryStream's headers into a new Index, from its
// first message, and keeps it current until Close. perRoom is the stream's
// MaxMsgsPerSubject.
func Open(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, perRoom int, log *slog.Logger) (*Index, error) {
	if log == nil {
		log = slog.Default()
	}
	if perRoom <= 0 {
		perRoom = proto.DefaultHistoryMaxMsgsPerRoom
	}
	st, err := js.Stream(ctx, proto.HistoryStream)
	if err != nil {
		return nil, fmt.Errorf("history: stream %s: %w", proto.HistoryStream, err)
	}
	state := st.CachedInfo().State
	x := &Index{nc: nc, js: js, st: st, log: log, perRm: perRoom, closed: make(chan struct{}), rooms: make(map[string]*room)}
	x.pos = state.FirstSeq - 1
	if state.Msgs == 0 {
		x.pos = state.LastSeq
	}
	x.lostUpTo, x.loadedTo = x.pos, state.LastSeq
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverAllPolicy,
		HeadersOnly:   true,
	})
	if err != nil {
		return nil, fmt.Errorf("history: consumer of %s: %w", proto.HistoryStream, err)
	}
	if x.cc, err = cons.Consume(x.take); err != nil {
		return nil, fmt.Errorf("history: consume %s: %w", proto.HistoryStream, err)
	}
	go x.trim()
	return x, nil
}

// Close stops the Index.
func (x *Index) Close() {
	select {
	case <-x.closed:
		return
	default:
	}
	close(x.closed)
	x.cc.Stop()
}

// take adds one message of the stream.
func (x *Index) take(m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.takeLocked(m.Subject(), meta.Sequence.Stream)
}

// takeLocked adds the message at seq of subject. x.mu is held.
func (x *Index) takeLocked(subject string, seq uint64) {
	if seq <= x.pos {
		return // the ordered consumer starting again: seen
	}
	if seq > x.pos+1 && seq-1 > x.loadedTo {
		// The stream dropped messages before the index read them; whose
		// rooms they were is unknown, so every room may have lost some.
		// (Below loadedTo, what the stream held at Open, holes are its
		// rooms' bounds at work: look accounts for them.)
		x.lostUpTo = max(x.lostUpTo, seq-1)
	}
	x.pos = seq
	r := x.rooms[subject]
	if r == nil {
		r = &room{}
		x.rooms[subject] = r
	}
	r.seqs = append(r.seqs, seq)
	if over := len(r.seqs) - x.perRm; over > 0 {
		// The stream drops a room's oldest past its bound: so does the index.
		r.dropped = r.seqs[over-1]
		r.seqs = append(r.seqs[:0], r.seqs[over:]...)
	}
	if x.moved != nil {
		close(x.moved)
		x.moved = nil
	}
}

// trim forgets, every minute, the messages the stream's front (its age and
// size limits) has passed, so that rooms gone quiet cost nothing.
func (x *Index) trim() {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-x.closed:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		info, err := x.st.Info(ctx)
		cancel()
		if err != nil {
			continue
		}
		x.forgetBefore(info.State.FirstSeq)
	}
}

// forgetBefore forgets the messages before first, the stream's first.
func (x *Index) forgetBefore(first uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if first == 0 {
		return
	}
	x.lostUpTo = max(x.lostUpTo, first-1)
	for subj, r := range x.rooms {
		i := sort.Search(len(r.seqs), func(i int) bool { return r.seqs[i] >= first })
		if i == len(r.seqs) {
			delete(x.rooms, subj) // lostUpTo covers what it knew
			continue
		}
		if i > 0 {
			r.dropped = max(r.dropped, r.seqs[i-1])
			r.seqs = append(r.seqs[:0], r.seqs[i:]...)
		}
	}
}

// errBehind: the index did not reach the position asked for in time.
var errBehind = errors.New("history: the history stream is behind")

// wait returns once the index has taken in every message up to pos.
func (x *Index) wait(ctx context.Context, pos uint64) error {
	for {
		x.mu.Lock()
		if x.pos >= pos {
			x.mu.Unlock()
			return nil
		}
		if x.moved == nil {
			x.moved = make(chan struct{})
		}
		moved := x.moved
		x.mu.Unlock()
		select {
		case <-moved:
		case <-ctx.Done():
		case <-x.closed:
		}
		if ctx.Err() != nil {
			return errBehind
		}
		select {
		case <-x.closed:
			return errBehind
		default:
		}
	}
}

// view is what the index knows of one room at one moment.
type view struct {
	seqs              []uint64 // up to the position asked for, oldest first
	dropped, lostUpTo uint64
}

// look returns subject's messages up to pos.
func (x *Index) look(subject string, pos uint64) view {
	x.mu.Lock()
	defer x.mu.Unlock()
	v := view{lostUpTo: x.lostUpTo}
	if r := x.rooms[subject]; r != nil {
		n := sort.Search(len(r.seqs), func(i int) bool { return r.seqs[i] > pos })
		v.seqs = append([]uint64(nil), r.seqs[:n]...)
		v.dropped = r.dropped
		if len(r.seqs) >= x.perRm {
			// A full room may have lost older messages to its bound,
			// before the index saw them (it started after).
			v.dropped = max(v.dropped, r.seqs[0]-1)
		}
	}
	return v
}

// missing notes that subject's message seq is no longer in the stream.
func (x *Index) missing(subject string, seq uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if r := x.rooms[subject]; r != nil {
		r.dropped = max(r.dropped, seq)
		if i := sort.Search(len(r.seqs), func(i int) bool { return r.seqs[i] >= seq }); i < len(r.seqs) && r.seqs[i] == seq {
			r.seqs = append(r.seqs[:i], r.seqs[i+1:]...)
		}
	}
}

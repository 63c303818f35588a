package presence

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
)

// The state of a room that has local presence channels: every gateway's
// presences in it, merged, and the diffs its channels are told.

// follow returns topic's room once it holds the state of every gateway,
// snapshotting it when it is new.
func (t *Tracker) follow(topic string) (*room, error) {
	key, err := proto.PresenceKey(topic, t.instance)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, errors.New("presence: tracker closed")
	}
	r := t.rooms[topic]
	if r != nil {
		t.mu.Unlock()
		select {
		case <-r.ready:
			return r, r.err
		case <-time.After(t.opts.Timeout):
			return nil, errors.New("presence: snapshot timed out")
		}
	}
	r = &room{topic: topic, key: key, ready: make(chan struct{}), channels: make(map[*session.Session]*channel),
		remote: make(map[string]*remoteKey), shown: proto.PresenceState{}}
	t.rooms[topic] = r
	if t.feed == nil || t.feed.failed() {
		t.feed = t.startFeed()
	}
	f := t.feed
	t.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), t.opts.Timeout)
	defer cancel()
	err = f.wait(ctx)
	if err == nil {
		// Updates the feed delivers from now on are applied to r as they
		// come (by sequence); the snapshot adds what came before.
		var entries []proto.PresenceEntry
		if entries, _, err = proto.LoadPresence(ctx, t.nc, topic, 0); err == nil {
			r.mu.Lock()
			t.mergeLocked(r, entries, 0)
			r.shown = t.mergedLocked(r)
			r.mu.Unlock()
		}
	}
	if err != nil {
		r.err = fmt.Errorf("presence: snapshot of %s: %w", topic, err)
		t.mu.Lock()
		if t.rooms[topic] == r {
			delete(t.rooms, topic)
		}
		t.mu.Unlock()
	}
	close(r.ready)
	return r, r.err
}

// mergeLocked applies a snapshot of r's keys: each key newer than what r
// holds replaces it, and a key r holds at sequence dropBelow or lower that
// the snapshot lacks is gone. r.mu is held.
func (t *Tracker) mergeLocked(r *room, entries []proto.PresenceEntry, dropBelow uint64) {
	seen := make(map[string]bool, len(entries))
	now := time.Now()
	for _, e := range entries {
		if e.Instance == t.instance {
			continue
		}
		seen[e.Instance] = true
		t.applyLocked(r, e, nil, now)
	}
	for inst, k := range r.remote {
		if !seen[inst] && k.seq <= dropBelow && k.state != nil {
			k.state, k.raw = nil, nil
			r.viewDirty = true
		}
	}
}

// applyLocked records another gateway's key of r when it is newer than
// what r holds. r.mu is held.
func (t *Tracker) applyLocked(r *room, e proto.PresenceEntry, raw []byte, now time.Time) {
	k := r.remote[e.Instance]
	if k != nil && k.seq >= e.Seq {
		return
	}
	if k == nil {
		k = &remoteKey{}
		r.remote[e.Instance] = k
	}
	if raw == nil && e.State != nil {
		raw, _ = proto.Marshal(e.State)
	}
	changed := (k.state == nil) != (e.State == nil) || !bytes.Equal(k.raw, raw)
	k.seq, k.state, k.raw, k.at = e.Seq, e.State, raw, now
	if changed {
		r.viewDirty = true
	}
}

// apply is the feed's delivery of one message of the presence stream.
func (t *Tracker) apply(subject string, seq uint64, h nats.Header, data []byte) {
	e, ok := proto.PresenceEntryOf(subject, h, data)
	if !ok || e.Instance == t.instance {
		return
	}
	topic, _, _ := proto.ParsePresenceKey(subject)
	t.mu.Lock()
	r := t.rooms[topic]
	t.mu.Unlock()
	if r == nil {
		return // a room without local presence channels
	}
	e.Seq = seq
	if e.State == nil {
		data = nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gone {
		return
	}
	t.applyLocked(r, e, data, time.Now())
	if isReady(r) {
		t.maybeFlushLocked(r)
	}
}

func isReady(r *room) bool {
	select {
	case <-r.ready:
		return true
	default:
		return false
	}
}

// localLocked is this gateway's presences in r. r.mu is held.
func (r *room) localLocked() proto.PresenceState {
	st := proto.PresenceState{}
	for _, c := range r.channels {
		if c.meta != nil {
			p := st[c.user]
			p.Metas = append(p.Metas, *c.meta)
			st[c.user] = p
		}
	}
	for _, p := range st {
		sortMetas(p.Metas)
	}
	return st
}

// mergedLocked is r's state across every gateway: this one's presences,
// then the others' in the order of their instances. r.mu is held.
func (t *Tracker) mergedLocked(r *room) proto.PresenceState {
	insts := make([]string, 0, len(r.remote))
	for inst, k := range r.remote {
		if k.state != nil {
			insts = append(insts, inst)
		}
	}
	slices.Sort(insts)
	states := make([]proto.PresenceState, 0, len(insts)+1)
	states = append(states, r.localLocked())
	for _, inst := range insts {
		states = append(states, r.remote[inst].state)
	}
	return proto.MergePresence(states...)
}

// stateLocked is shown, encoded. r.mu is held.
func (r *room) stateLocked() []byte {
	if r.state == nil {
		r.state, _ = proto.Marshal(r.shown)
	}
	return r.state
}

// stateFor is the presence_state of channel c: shown, with c's own meta
// when the others have not been told of it yet (a join within Interval of
// the last flush), as Phoenix lists a socket's own presence to it at once.
// The diff that later tells the others holds it again, which phoenix.js
// applies as a no-op (a join of a phx_ref it has). r.mu is held.
func (r *room) stateFor(c *channel) []byte {
	base := r.stateLocked()
	if c.meta == nil {
		return base
	}
	cur, ok := r.shown[c.user]
	if slices.ContainsFunc(cur.Metas, func(m proto.Meta) bool { return m.PhxRef == c.meta.PhxRef }) {
		return base
	}
	if ok { // rare: another socket of the user is shown
		st := maps.Clone(r.shown)
		st[c.user] = proto.Presence{Metas: append(slices.Clip(cur.Metas), *c.meta)}
		data, _ := proto.Marshal(st)
		return data
	}
	// Most joins: the user's entry spliced in front of the shared state.
	entry, _ := proto.Marshal(proto.PresenceState{c.user: {Metas: []proto.Meta{*c.meta}}})
	out := make([]byte, 0, len(entry)+len(base))
	out = append(out, entry[:len(entry)-1]...)
	if len(base) > 2 {
		out = append(append(out, ','), base[1:]...)
	} else {
		out = append(out, '}')
	}
	return out
}

// maybeFlushLocked flushes r now if its last flush is an Interval ago,
// else once it is. r.mu is held.
func (t *Tracker) maybeFlushLocked(r *room) {
	if !r.viewDirty && !r.localDirty || r.gone {
		return
	}
	wait := time.Until(r.lastFlush.Add(t.opts.Interval))
	if wait <= 0 {
		t.flushLocked(r)
		return
	}
	if r.timer == nil {
		r.timer = time.AfterFunc(wait, func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.timer = nil
			if !r.gone {
				t.flushLocked(r)
			}
		})
	}
}

// flushLocked writes this gateway's key of r if it changed, and sends
// the room's channels the diff since they were last told. r.mu is held.
func (t *Tracker) flushLocked(r *room) {
	r.lastFlush = time.Now()
	r.left = nil // leaves not taken over go out now
	if r.localDirty {
		r.localDirty = false
		t.writeLocked(r, false)
	}
	if !r.viewDirty {
		return
	}
	r.viewDirty = false
	next := t.mergedLocked(r)
	d := Diff(r.shown, next)
	r.shown, r.state = next, nil
	if Empty(d) {
		return
	}
	payload, err := proto.Marshal(d)
	if err != nil {
		t.log.Error("encode presence_diff", "topic", r.topic, "err", err)
		return
	}
	// Encoded once per serializer for all the room's channels.
	var cache [4]struct {
		ser wire.Serializer
		f   session.Frame
	}
	for _, c := range r.channels {
		if !c.ready {
			continue
		}
		var f session.Frame
		found := false
		for i := range cache {
			if cache[i].ser == c.ser {
				f, found = cache[i].f, true
				break
			}
		}
		if !found {
			data, bin, err := c.ser.AppendBroadcast(nil, r.topic, proto.PresenceDiffEvent, payload, false)
			if err != nil {
				continue
			}
			f = session.Frame{Data: data, Binary: bin}
			for i := range cache {
				if cache[i].ser == nil {
					cache[i].ser, cache[i].f = c.ser, f
					break
				}
			}
		}
		c.tr.Deliver(f)
	}
}

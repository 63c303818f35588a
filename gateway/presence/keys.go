package presence

import (
	"bytes"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/proto"
)

// This gateway's keys in the presence bucket: written at most once per
// Interval while they change, rewritten every TTL/3 so they stay alive.

// metaBytes is what one tracked socket of user adds to a key's value, at
// most (escapes and all).
func metaBytes(user string) int { return 2*len(user) + 128 }

// writeLocked writes this gateway's presences in r into its key, or
// deletes the key when there are none; unless again (the TTL's refresh),
// a value the key holds already is not written (a flap absorbed within
// an interval changes nothing). r.mu is held, so that writes of one key
// leave in order.
func (t *Tracker) writeLocked(r *room, again bool) {
	local := r.localLocked()
	if len(local) == 0 {
		if r.written {
			t.purge(r.key)
			r.written = false
		}
		return
	}
	data, err := proto.Marshal(local)
	if err != nil {
		return
	}
	if !again && r.written && bytes.Equal(data, r.value) {
		return
	}
	r.written, r.value = true, data
	t.publish(r, &nats.Msg{Subject: proto.PresenceSubjectPrefix + r.key, Data: data, Header: nats.Header{}}, t.opts.TTL)
}

// purge deletes key, leaving a marker for PresenceMarkerTTL.
func (t *Tracker) purge(key string) {
	m := &nats.Msg{Subject: proto.PresenceSubjectPrefix + key, Header: nats.Header{}}
	m.Header.Set("KV-Operation", "PURGE")
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	t.publish(nil, m, proto.PresenceMarkerTTL)
}

// publish stores m in the bucket without waiting; a write that fails is
// written again (r's key) at the next flush or refresh.
func (t *Tracker) publish(r *room, m *nats.Msg, ttl time.Duration) {
	fut, err := t.js.PublishMsgAsync(m, jetstream.WithMsgTTL(ttl), jetstream.WithExpectStream(proto.PresenceStream))
	if err != nil {
		t.writeFailed(r, err)
		return
	}
	go func() {
		select {
		case <-fut.Ok():
		case err := <-fut.Err():
			t.writeFailed(r, err)
		}
	}()
}

func (t *Tracker) writeFailed(r *room, err error) {
	t.log.Warn("presence write failed", "err", err)
	if r == nil {
		return
	}
	go func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if !r.gone {
			r.localDirty, r.value = true, nil // written again, even unchanged
			t.maybeFlushLocked(r)
		}
	}()
}

// refresh rewrites every key of this gateway every TTL/3, so that they
// stay alive, and forgets old deletions.
func (t *Tracker) refresh() {
	tick := time.NewTicker(t.opts.TTL / 3)
	defer tick.Stop()
	for {
		select {
		case <-t.done:
			return
		case <-tick.C:
		}
		t.rewriteAll()
	}
}

// rewriteAll writes every key of this gateway again.
func (t *Tracker) rewriteAll() {
	now := time.Now()
	for _, r := range t.snapshotRooms() {
		r.mu.Lock()
		if !r.gone && r.written {
			t.writeLocked(r, true)
		}
		for inst, k := range r.remote {
			if k.state == nil && now.Sub(k.at) > proto.PresenceMarkerTTL {
				delete(r.remote, inst)
			}
		}
		r.mu.Unlock()
	}
}

// Package registry is the gateway's table of live sessions, by connection
// and by user, whatever their transport (WebSocket or long-poll), and the
// one path by which the gateway acts on them from outside: the per-user
// control messages of proto (kick, forced disconnect, ignore list) and the
// drain on shutdown.
package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/proto"
)

// Registry tracks sessions; it implements session.Registry. Create it with
// New.
type Registry struct {
	log  *slog.Logger
	subs []*nats.Subscription // per-user control subjects

	mu       sync.Mutex
	all      map[*session.Session]struct{}
	users    map[string]map[*session.Session]struct{} // by user id; anonymous sessions are not here
	draining bool
	cutOff   bool // without NATS: see CutOff
}

// New creates a Registry that acts on the per-user control subjects: one
// subscription per gateway for each kind of message, whatever the number
// of users.
func New(nc *nats.Conn, log *slog.Logger) (*Registry, error) {
	r := &Registry{log: log, all: make(map[*session.Session]struct{}), users: make(map[string]map[*session.Session]struct{})}
	for subject, h := range map[string]nats.MsgHandler{
		proto.DisconnectSubjectAll: r.handleDisconnect,
		proto.KickSubjectAll:       r.handleKick,
		proto.IgnoresSubjectAll:    r.handleIgnores,
	} {
		sub, err := nc.Subscribe(subject, h)
		if err != nil {
			r.unsubscribe()
			return nil, fmt.Errorf("gateway: subscribe %s: %w", subject, err)
		}
		r.subs = append(r.subs, sub)
	}
	go r.reconfirmAfterReconnects(nc.StatusChanged(nats.CONNECTED, nats.CLOSED))
	return r, nil
}

// reconfirmParallel bounds the confirmations asked at once after a NATS
// reconnect, so that a gateway with many private channels does not send
// them all to its services at the same moment.
const reconfirmParallel = 8

// reconfirmAfterReconnects has every session ask again, after each NATS
// reconnect, for the channels whose joins were confirmed: a kick published
// while the gateway was disconnected never arrives (core NATS), and a
// revoked member would otherwise stay in the room (session.Reconfirm).
// The services may reconnect after the gateway: sessions whose questions
// went unanswered ask again, a few times, at growing intervals.
func (r *Registry) reconfirmAfterReconnects(events chan nats.Status) {
	for st := range events {
		if st == nats.CLOSED {
			return
		}
		pending := r.snapshot()
		for attempt := 0; len(pending) > 0 && attempt < reconfirmAttempts; attempt++ {
			if attempt > 0 {
				time.Sleep(min(250*time.Millisecond<<attempt, 8*time.Second))
			}
			var kicked int
			pending, kicked = r.reconfirm(pending)
			if kicked > 0 {
				r.log.Info("channels ended after a NATS reconnect: memberships revoked meanwhile", "channels", kicked)
			}
		}
	}
}

// reconfirmAttempts bounds how often, after one reconnect, a session asks
// again while its services do not answer: about 30 s in all.
const reconfirmAttempts = 7

// reconfirm runs Reconfirm on sessions, reconfirmParallel at a time, and
// returns those that got no answer for some channel.
func (r *Registry) reconfirm(sessions []*session.Session) (unanswered []*session.Session, kicked int) {
	work := make(chan *session.Session)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(reconfirmParallel, len(sessions)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range work {
				k, u := s.Reconfirm()
				mu.Lock()
				kicked += k
				if u > 0 {
					unanswered = append(unanswered, s)
				}
				mu.Unlock()
			}
		}()
	}
	for _, s := range sessions {
		work <- s
	}
	close(work)
	wg.Wait()
	return unanswered, kicked
}

// Add registers s; it reports false while the registry drains or is cut
// off from NATS.
func (r *Registry) Add(s *session.Session) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all[s] = struct{}{}
	if user := s.UserID(); user != "" {
		if r.users[user] == nil {
			r.users[user] = make(map[*session.Session]struct{})
		}
		r.users[user][s] = struct{}{}
	}
	return !r.draining && !r.cutOff
}

// Remove forgets s.
func (r *Registry) Remove(s *session.Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.all, s)
	user := s.UserID()
	if set := r.users[user]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(r.users, user)
		}
	}
}

// Len returns the number of sessions.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.all)
}

// Users returns the number of users with at least one session.
func (r *Registry) Users() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.users)
}

// Draining reports whether Drain has started.
func (r *Registry) Draining() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.draining
}

// User returns the sessions of a user.
func (r *Registry) User(user string) []*session.Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*session.Session, 0, len(r.users[user]))
	for s := range r.users[user] {
		out = append(out, s)
	}
	return out
}

// Kick removes a user's sessions from topic with a phx_close (a revoked
// membership) and returns how many were joined to it.
func (r *Registry) Kick(user, topic string) int {
	n := 0
	for _, s := range r.User(user) {
		if s.Kick(topic) {
			n++
		}
	}
	return n
}

// Disconnect ends every session of a user with session.DisconnectUser and
// returns how many it ended.
func (r *Registry) Disconnect(user string) int {
	all := r.User(user)
	for _, s := range all {
		s.Disconnect(session.DisconnectUser)
	}
	return len(all)
}

// Drain stops acting on control messages, refuses new sessions, and ends
// every session with session.DisconnectShutdown: each client gets what was
// queued to it and then the close. It returns when every session has
// ended or ctx ends, whichever comes first; then it ends what is left with
// session.DisconnectShutdownNow.
func (r *Registry) Drain(ctx context.Context) error {
	r.unsubscribe()
	r.mu.Lock()
	r.draining = true
	r.mu.Unlock()
	for _, s := range r.snapshot() {
		s.Disconnect(session.DisconnectShutdown)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for r.Len() > 0 {
		select {
		case <-ctx.Done():
			for _, s := range r.snapshot() {
				s.Disconnect(session.DisconnectShutdownNow)
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// CutOff ends every session with d and refuses new ones until Restore:
// the gateway has been without NATS too long to serve its sockets (no
// pushes, no broadcasts), and their clients are better off reconnecting
// to a gateway that has it. It returns how many sessions it ended.
func (r *Registry) CutOff(d session.Disconnect) int {
	r.mu.Lock()
	r.cutOff = true
	r.mu.Unlock()
	all := r.snapshot()
	for _, s := range all {
		s.Disconnect(d)
	}
	return len(all)
}

// Restore accepts sessions again after CutOff.
func (r *Registry) Restore() {
	r.mu.Lock()
	r.cutOff = false
	r.mu.Unlock()
}

// IsCutOff reports whether CutOff holds.
func (r *Registry) IsCutOff() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cutOff
}

func (r *Registry) snapshot() []*session.Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*session.Session, 0, len(r.all))
	for s := range r.all {
		out = append(out, s)
	}
	return out
}

func (r *Registry) unsubscribe() {
	for _, sub := range r.subs {
		_ = sub.Unsubscribe()
	}
}

// handleKick removes a user's local sockets from one topic (a revoked
// membership) with a phx_close, live.
func (r *Registry) handleKick(m *nats.Msg) {
	user, err := proto.UserFromSubject(m.Subject)
	var k proto.Kick
	if err == nil {
		err = json.Unmarshal(m.Data, &k)
	}
	if err != nil || k.Topic == "" {
		r.log.Warn("bad kick message", "subject", m.Subject, "err", err)
		return
	}
	if n := r.Kick(user, k.Topic); n > 0 {
		r.log.Info("kicked", "user", user, "topic", k.Topic, "sockets", n)
	}
}

// handleIgnores applies a user's new ignore list to their local sockets, so
// the fan-out filters without asking a service per message.
func (r *Registry) handleIgnores(m *nats.Msg) {
	user, err := proto.UserFromSubject(m.Subject)
	var u proto.IgnoreUpdate
	if err == nil {
		err = json.Unmarshal(m.Data, &u)
	}
	if err != nil {
		r.log.Warn("bad ignore list message", "subject", m.Subject, "err", err)
		return
	}
	for _, s := range r.User(user) {
		s.UpdateIgnored(&u)
	}
}

// handleDisconnect closes every local socket of a user (logout, ban), as
// Phoenix's "disconnect" broadcast on the socket id does: code 1001.
func (r *Registry) handleDisconnect(m *nats.Msg) {
	user, ok := proto.IsDisconnect(m.Subject, m.Data)
	if !ok {
		// Any client may aim a reply (a JetStream acknowledgement) here.
		r.log.Warn("ignored a message on a disconnect subject that is no disconnect", "subject", m.Subject, "size", len(m.Data))
		return
	}
	if n := r.Disconnect(user); n > 0 {
		r.log.Info("forced disconnect", "user", user, "sockets", n)
	}
}

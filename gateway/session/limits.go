package session

import (
	"fmt"
	"runtime/debug"
	"sync"

	"golang.org/x/time/rate"

	"github.com/phxnats/phxnats/gateway/wire"
)

// A socket's channel frames (joins, leaves, pushes) are budgeted three
// ways, each a token bucket: the socket's own (Config.RateLimit), its
// user's across the user's sockets on this gateway (UserRateLimit), and
// its client address's across every socket from it (AddrRateLimit). A
// frame over any of them gets {"reason":"rate limit exceeded"} at once and
// reaches no service. Heartbeats are never counted.

// sharedLimits are the buckets shared by several sessions, by key (a user
// id or a client address). A bucket lives while a session holds it, so
// the table is as large as the gateway's live users and addresses.
type sharedLimits struct {
	mu sync.Mutex
	m  map[string]*sharedLimiter
}

type sharedLimiter struct {
	*rate.Limiter
	holders int
}

// acquire returns key's bucket, made with limit and burst when it is new.
func (t *sharedLimits) acquire(key string, limit float64, burst int) *rate.Limiter {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[string]*sharedLimiter)
	}
	l := t.m[key]
	if l == nil {
		l = &sharedLimiter{Limiter: rate.NewLimiter(rate.Limit(limit), max(burst, 1))}
		t.m[key] = l
	}
	l.holders++
	return l.Limiter
}

// release gives key's bucket back; the last holder forgets it.
func (t *sharedLimits) release(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if l := t.m[key]; l != nil {
		if l.holders--; l.holders <= 0 {
			delete(t.m, key)
		}
	}
}

// limit takes the session's bucket and the shared ones it is under, when
// their limits are on.
func (s *Session) limit() {
	cfg := s.cfg
	if cfg.RateLimit > 0 {
		s.limiter = rate.NewLimiter(rate.Limit(cfg.RateLimit), max(cfg.RateBurst, 1))
	}
	if cfg.UserRateLimit > 0 && s.userID != "" {
		s.userLimiter = cfg.users.acquire(s.userID, cfg.UserRateLimit, cfg.UserRateBurst)
	}
	if cfg.AddrRateLimit > 0 && s.addr != "" {
		s.addrLimiter = cfg.addrs.acquire(s.addr, cfg.AddrRateLimit, cfg.AddrRateBurst)
	}
}

// unlimit gives the shared buckets back (End).
func (s *Session) unlimit() {
	if s.userLimiter != nil {
		s.cfg.users.release(s.userID)
	}
	if s.addrLimiter != nil {
		s.cfg.addrs.release(s.addr)
	}
}

// allow reports whether a channel frame is within the socket's, its
// user's and its address's budgets.
func (s *Session) allow() bool {
	return (s.limiter == nil || s.limiter.Allow()) &&
		(s.userLimiter == nil || s.userLimiter.Allow()) &&
		(s.addrLimiter == nil || s.addrLimiter.Allow())
}

// The channel frames of a socket run in order on a goroutine of the
// session's own, started when a frame arrives and gone when none waits,
// so that an idle socket costs no goroutine. The transport's reader only
// queues them: it goes on reading, and heartbeats are answered at once,
// however long a service takes, as Phoenix answers them in the socket
// process apart from its channels.

// enqueue queues m for the session's worker; it reports false when the
// socket already has Config.MaxPending frames, or Config.MaxPendingBytes
// of payload, waiting (one frame is always taken when none waits).
func (s *Session) enqueue(m wire.Message) bool {
	// The transport may reuse the bytes it decoded m from.
	m.Payload = cloneBytes(m.Payload)
	s.qmu.Lock()
	if s.queueClosed {
		s.qmu.Unlock()
		return true // the socket is gone: nothing to answer
	}
	if len(s.queue) > 0 && ((s.cfg.MaxPending > 0 && len(s.queue) >= s.cfg.MaxPending) ||
		(s.cfg.MaxPendingBytes > 0 && s.queueBytes+len(m.Payload) > s.cfg.MaxPendingBytes)) {
		s.qmu.Unlock()
		return false
	}
	s.queue = append(s.queue, m)
	s.queueBytes += len(m.Payload)
	start := !s.working
	s.working = true
	s.qmu.Unlock()
	if start {
		go s.work()
	}
	return true
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}

// work handles the queued frames in order until none is left.
func (s *Session) work() {
	for {
		s.qmu.Lock()
		if len(s.queue) == 0 || s.queueClosed {
			s.queue, s.queueBytes, s.working = nil, 0, false
			if s.idle != nil {
				close(s.idle)
				s.idle = nil
			}
			s.qmu.Unlock()
			return
		}
		m := s.queue[0]
		s.queue[0] = wire.Message{}
		s.queue = s.queue[1:]
		s.queueBytes -= len(m.Payload)
		s.qmu.Unlock()
		if !s.handleRecovered(m) {
			return
		}
	}
}

// handleRecovered handles m; a panic there ends this socket alone
// (DisconnectPanic, counted), never the process. It reports false then.
func (s *Session) handleRecovered(m wire.Message) (ok bool) {
	defer func() {
		if ok {
			return
		}
		v := recover()
		if s.cfg.Metrics != nil && s.cfg.Metrics.Panics != nil {
			s.cfg.Metrics.Panics.Inc()
		}
		s.cfg.Logger.Error("panic in a socket's channel work, closing the socket",
			"topic", m.Topic, "event", m.Event, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		s.qmu.Lock()
		s.queueClosed, s.queue, s.queueBytes, s.working = true, nil, 0, false
		if s.idle != nil {
			close(s.idle)
			s.idle = nil
		}
		s.qmu.Unlock()
		s.tr.Close(DisconnectPanic)
	}()
	s.handle(m)
	return true
}

// closeQueue drops the frames not yet handled (End).
func (s *Session) closeQueue() {
	s.qmu.Lock()
	s.queueClosed = true
	s.queue, s.queueBytes = nil, 0
	s.qmu.Unlock()
}

// Wait returns once every frame given to HandleMessage before the call
// has been handled (or dropped with the session's end).
func (s *Session) Wait() {
	s.qmu.Lock()
	if !s.working {
		s.qmu.Unlock()
		return
	}
	if s.idle == nil {
		s.idle = make(chan struct{})
	}
	idle := s.idle
	s.qmu.Unlock()
	<-idle
}

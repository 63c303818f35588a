package longpoll

import (
	"sync"
	"time"

	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wire"
)

// lpSession is one long-poll client: a protocol session plus the frames
// buffered for its next poll. It is the session's Transport.
type lpSession struct {
	srv    *Server
	token  string
	ser    wire.Serializer // never carries binary frames (session.TextOnly for V2)
	sess   *session.Session
	expiry time.Duration

	addr string // the client address it was opened from
	// post holds the turn of the POST being read and handed to the
	// session (one slot): a session's POSTs run one at a time, which
	// keeps their frames in order and reads one body at a time.
	post chan struct{}

	mu       sync.Mutex
	buf      [][]byte      // encoded text frames, oldest first; shared, never modified
	bufBytes int           // their bytes
	wake     chan struct{} // closed when buf gains a frame or the session closes; nil when nobody waits
	polls    int           // GETs in progress
	lastPoll time.Time     // start or end of the latest GET
	closed   bool
	timer    *time.Timer // expiry check
}

// Serializer implements session.Transport.
func (ls *lpSession) Serializer() wire.Serializer { return ls.ser }

// Deliver implements session.Transport. It never blocks: when SendQueueLen
// frames (or SendQueueBytes bytes: a client that opens polls and never
// reads their answers holds them) wait for a poll the session is closed
// as a slow consumer, and its
// next poll gets 410, which makes phoenix.js reconnect and rejoin. Every
// frame is text: the serializer refuses bytes (session.TextOnly).
func (ls *lpSession) Deliver(f session.Frame) {
	ls.mu.Lock()
	if ls.closed {
		ls.mu.Unlock()
		return
	}
	if len(ls.buf) >= ls.srv.cfg.SendQueueLen ||
		ls.srv.cfg.SendQueueBytes > 0 && ls.bufBytes+len(f.Data) > ls.srv.cfg.SendQueueBytes && len(ls.buf) > 0 {
		ls.closeLocked(false)
		ls.mu.Unlock()
		ls.srv.cfg.Metrics.SlowDisconnects.Inc()
		ls.srv.cfg.Logger.Warn("slow consumer disconnected", "user", ls.sess.UserID(), "queue", ls.srv.cfg.SendQueueLen, "transport", "longpoll")
		// Deliver may run under the room's lock (fan-out), and leaving
		// rooms takes it: finish elsewhere.
		go ls.finish()
		return
	}
	ls.buf = append(ls.buf, f.Data)
	ls.bufBytes += len(f.Data)
	if ls.wake != nil {
		close(ls.wake)
		ls.wake = nil
	}
	ls.mu.Unlock()
}

// Close implements session.Transport: pending polls get the frames already
// buffered (or 410), unless d.Now, then the client finds its session gone
// and reconnects, as after a WebSocket close. Long-poll has no close codes.
func (ls *lpSession) Close(d session.Disconnect) { ls.close(!d.Now) }

// closeLocked marks the session closed and wakes its pending polls; it
// reports whether it did (the caller must then call finish). keepBuffered
// leaves the buffered frames to the pending polls. ls.mu must be held.
func (ls *lpSession) closeLocked(keepBuffered bool) bool {
	if ls.closed {
		return false
	}
	ls.closed = true
	if !keepBuffered {
		ls.buf, ls.bufBytes = nil, 0
	}
	if ls.wake != nil {
		close(ls.wake)
		ls.wake = nil
	}
	if ls.timer != nil {
		ls.timer.Stop()
	}
	return true
}

// finish forgets a closed session and ends it (its rooms, the registry).
func (ls *lpSession) finish() {
	s := ls.srv
	s.mu.Lock()
	if s.sessions[ls.token] == ls {
		delete(s.sessions, ls.token)
		s.releaseLocked(ls.addr)
	}
	s.mu.Unlock()
	ls.sess.End()
	s.cfg.Metrics.Connections.WithLabelValues("longpoll").Dec()
}

func (ls *lpSession) close(keepBuffered bool) {
	ls.mu.Lock()
	ok := ls.closeLocked(keepBuffered)
	ls.mu.Unlock()
	if ok {
		ls.finish()
	}
}

func (ls *lpSession) isClosed() bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.closed
}

// checkIdle runs on the session's timer: it closes the session when no GET
// is in progress and none ended for expiry (Phoenix: window_ms * 1.5).
func (ls *lpSession) checkIdle() {
	ls.mu.Lock()
	if ls.closed {
		ls.mu.Unlock()
		return
	}
	next := ls.expiry
	if ls.polls == 0 {
		idle := time.Since(ls.lastPoll)
		if idle >= ls.expiry {
			ls.closeLocked(false)
			ls.mu.Unlock()
			ls.srv.cfg.Logger.Debug("long-poll session expired", "user", ls.sess.UserID())
			ls.finish()
			return
		}
		next -= idle
	}
	ls.timer.Reset(next)
	ls.mu.Unlock()
}

package ws

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wire"
)

// conn is one WebSocket client: a reader that feeds the session (on
// Linux one of a few shared epoll workers, elsewhere a goroutine of the
// socket's own), and a writer only while frames are queued, so an idle
// socket costs no writer stack. The writer is one of a few shared goroutines (writers), or,
// while the client is slow to read, a goroutine of the socket's own.
type conn struct {
	srv  *Server
	ws   *websocket.Conn
	raw  syscall.RawConn // nil when the connection is not a plain socket
	ser  wire.Serializer
	user string // for logs: set before the socket is shared, unlike sess
	sess *session.Session
	// rd is the state of a socket read by the shared pollers, nil when
	// the socket has a reader goroutine.
	rd *pollState

	// lastActive is when the client's last complete message came, as
	// srv.clock read it.
	lastActive atomic.Int64
	// releaseSlot gives the socket's place back to the connection caps.
	releaseSlot func()
	ended       atomic.Bool
	// writeDeadline is the write deadline last set; only the socket's
	// writer touches it.
	writeDeadline time.Time

	mu    sync.Mutex
	queue []session.Frame
	spare []session.Frame // the other half of queue while a writer works
	// queued is the bytes of queue's frames, inflight of the frames a
	// writer took and has not finished: together bounded by
	// SendQueueBytes.
	queued, inflight int
	pong             []byte // a ping's payload to answer, nil when none
	// writing: a writer owns the socket (it is on writers' list, being
	// written, or has a goroutine of its own). Only the owner writes, so
	// a write the client could take only in part is finished before
	// anything else goes out.
	writing bool
	state   connState
	// closeCode/closeText are sent once the queue has drained
	// (stateFlushing, stateAborting).
	closeCode int
	closeText string
}

// connState is where a socket is in its closing; transition moves it.
//
//	          closeAfterFlush            the writer sends the queue,
//	open ───────────────────▶ flushing ──then our close frame (sendClose)──┐
//	  │ \        abort                                                    │
//	  │  └────────────────────▶ aborting ──the frame being written, then ─┤
//	  │                                    our close frame                 ▼
//	  └──the client's close (replyClose), a failed write (fail)────────▶ closed
//
// flushing and aborting also end in closed when the client's close or a
// write failure comes first. Only open accepts frames; a close asked for
// in any other state changes nothing, so the first reason wins. The
// connection itself ends when its reader sees the client's close frame,
// the end of the stream or the read deadline that sendClose sets.
type connState uint8

const (
	stateOpen     connState = iota // frames are accepted
	stateFlushing                  // no more frames; what is queued goes out, then our close frame
	stateAborting                  // the queue was dropped; our close frame follows what is being written
	stateClosed                    // nothing more goes out: the client's close was answered, or a write failed
)

// transition moves c to next and does what entering next means to c's
// queue; it reports false, changing nothing, when c's state does not lead
// there. c.mu is held; what must follow outside the lock is the caller's.
func (c *conn) transition(next connState, code int, text string) bool {
	switch {
	case c.state == stateClosed, c.state != stateOpen && next != stateClosed:
		return false
	}
	c.state = next
	switch next {
	case stateFlushing:
		c.closeCode, c.closeText = code, text
	case stateAborting:
		c.closeCode, c.closeText = code, text
		c.queue, c.queued = nil, 0
	case stateClosed:
		c.queue, c.spare, c.pong = nil, nil, nil
		c.queued = 0
	}
	return true
}

// closeDue reports whether our close frame is to follow the queue. c.mu
// is held.
func (c *conn) closeDue() bool { return c.state == stateFlushing || c.state == stateAborting }

// wakeWriter releases c.mu and hands the socket to a writer, unless one
// owns it already. c.mu is held.
func (c *conn) wakeWriter() {
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		c.startWriter()
	}
}

// Serializer implements session.Transport.
func (c *conn) Serializer() wire.Serializer { return c.ser }

// Deliver implements session.Transport. It never blocks: when the queue
// is full, in frames or in bytes, the socket is closed with
// CloseSlowConsumer.
func (c *conn) Deliver(f session.Frame) {
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return
	}
	maxBytes := c.srv.cfg.SendQueueBytes
	if len(c.queue) >= c.srv.cfg.SendQueueLen || maxBytes > 0 && c.queued+c.inflight+len(f.Data) > maxBytes {
		frames, bytes := len(c.queue), c.queued+c.inflight
		c.mu.Unlock()
		c.srv.cfg.Metrics.SlowDisconnects.Inc()
		c.srv.cfg.Logger.Warn("slow consumer disconnected", "user", c.user, "frames", frames, "bytes", bytes)
		c.abort(CloseSlowConsumer, "send queue full")
		return
	}
	c.queue = append(c.queue, f)
	c.queued += len(f.Data)
	c.wakeWriter()
}

// Close implements session.Transport: the queued frames, then the close
// frame; or, with d.Now, the connection ends at once.
func (c *conn) Close(d session.Disconnect) {
	if d.Now {
		c.closeConn()
		return
	}
	c.closeAfterFlush(d.Code, d.Reason)
}

// onPing queues the pong, so that it cannot land inside a batch the
// client has taken only in part (gorilla's default handler writes at once).
func (c *conn) onPing(data string) error {
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return nil
	}
	c.pong = []byte(data) // a newer ping's payload replaces an older one, as RFC 6455 allows
	c.wakeWriter()
	return nil
}

// onClose answers the client's close frame, as gorilla's default handler
// does, once a writer that owns the socket has finished its frame (never
// in the middle of one).
func (c *conn) onClose(code int, _ string) error {
	c.replyClose(code, "")
	return nil
}

// replyClose sends a close frame and accepts no more frames: the socket
// ends as soon as this returns. A writer that owns the socket finishes its
// frames first (a second at most; else no close frame). It reports whether
// it sent the frame.
func (c *conn) replyClose(code int, text string) bool {
	c.mu.Lock()
	busy := c.writing
	ok := c.transition(stateClosed, 0, "")
	c.writing = true
	c.mu.Unlock()
	if ok && busy {
		// The writer lets go once what it took is out (release): rare
		// and short, so a poll rather than a signal on every release.
		// Skipping the close frame instead left the client with 1006
		// about once in 100 runs of TestOversizedFrame on a loaded
		// machine.
		for deadline := time.Now().Add(time.Second); busy && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
			c.mu.Lock()
			if busy = c.writing; !busy {
				c.writing = true
			}
			c.mu.Unlock()
		}
	}
	if ok && !busy {
		msg := websocket.FormatCloseMessage(code, text)
		return c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)) == nil
	}
	return false
}

// Bounds of linger.
const (
	lingerTime  = time.Second
	lingerBytes = 64 << 10
)

// linger follows a close frame sent for the client's fault (a message over
// the limit) while the client may still be sending: it ends our side of
// the stream and reads, for a moment and a few bytes at most, what the
// client still sends. Closing a TCP socket with bytes unread resets it,
// and the reset can overtake the close frame, which the client then never
// reads: it saw 1006 instead of 1009 about once in 150 runs on a loaded
// machine (TestOversizedFrame).
func (c *conn) linger() {
	tc, ok := c.ws.NetConn().(*net.TCPConn)
	if !ok {
		return
	}
	_ = tc.CloseWrite()
	_ = tc.SetReadDeadline(time.Now().Add(lingerTime))
	_, _ = io.CopyN(io.Discard, tc, lingerBytes)
}

// fail ends a socket whose write failed.
func (c *conn) fail() {
	c.mu.Lock()
	c.transition(stateClosed, 0, "")
	c.mu.Unlock()
	c.closeConn()
}

// closeAfterFlush sends what is queued, then a close frame.
func (c *conn) closeAfterFlush(code int, text string) { c.closeWith(stateFlushing, code, text) }

// abort drops what is queued and closes as soon as the frames already being
// written are out: a close frame cannot overtake a frame half written, and
// a writer stuck on a dead client is ended by WriteTimeout.
func (c *conn) abort(code int, text string) { c.closeWith(stateAborting, code, text) }

func (c *conn) closeWith(next connState, code int, text string) {
	c.mu.Lock()
	if !c.transition(next, code, text) {
		c.mu.Unlock()
		return
	}
	c.wakeWriter()
}

// sendClose starts the closing handshake: the reader sees the client's
// close frame (or the deadline) and closes the connection, so the client
// reads our code rather than a reset.
func (c *conn) sendClose() {
	c.mu.Lock()
	msg := websocket.FormatCloseMessage(c.closeCode, c.closeText)
	c.mu.Unlock()
	if err := c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
		c.closeConn()
		return
	}
	const wait = 2 * time.Second
	if c.rd != nil {
		time.AfterFunc(wait, c.closeConn)
		return
	}
	_ = c.ws.SetReadDeadline(time.Now().Add(wait))
}

// closeConn ends the connection from outside its reader. A polled socket
// is only shut down here: its reader sees the end of the stream and
// closes it once it has left the poller, so the descriptor is never
// closed (and its number reused) while the poller may still use it.
func (c *conn) closeConn() {
	if c.rd != nil {
		_ = c.raw.Control(shutdownFD)
		return
	}
	_ = c.ws.Close()
}

// touch records a complete message from the client: the socket's activity.
func (c *conn) touch() { c.lastActive.Store(int64(c.srv.clock())) }

// watchIdle closes the socket when the client sent no complete message for
// IdleTimeout, as Phoenix does (60 s by default); phoenix.js heartbeats
// every 30 s. Pings and fragments do not count, so a client cannot hold a
// socket, and what it sent of a message, with them alone; nor do frames
// sent to the client. Time is the monotonic srv.clock. It is a timer, not
// a goroutine, so idle sockets cost no extra stack; stop it with the
// returned function.
func (c *conn) watchIdle() (stop func() bool) {
	idle := c.srv.cfg.IdleTimeout
	var t *time.Timer
	// Armed far away first, so the callback never sees t unset.
	t = time.AfterFunc(time.Hour, func() {
		defer c.recoverPanic("idle timer", func() { c.abort(ClosePanic, "internal error") })
		since := c.srv.clock() - time.Duration(c.lastActive.Load())
		if since >= idle {
			c.abort(CloseIdle, "idle timeout")
			return
		}
		c.trimQueue()
		t.Reset(idle - since)
	})
	t.Reset(idle)
	return t.Stop
}

func (c *conn) serve() {
	stopIdle := c.watchIdle()
	defer c.end(stopIdle)
	defer c.recoverPanic("reader", func() { c.replyClose(ClosePanic, "internal error") })
	c.readLoop()
}

// end is what follows a socket's last read, whichever reader it had; the
// first call counts.
func (c *conn) end(stopIdle func() bool) {
	if c.ended.Swap(true) {
		return
	}
	defer func() {
		_ = c.ws.Close()
		c.releaseSlot()
		c.srv.cfg.Metrics.Connections.WithLabelValues("websocket").Dec()
	}()
	defer c.recoverPanic("end", nil)
	stopIdle()
	c.sess.End()
}

// recoverPanic, deferred, keeps a panic in one socket's handling from
// ending the gateway: it counts and logs it, then runs then (which closes
// the socket) unless then is nil.
func (c *conn) recoverPanic(where string, then func()) {
	v := recover()
	if v == nil {
		return
	}
	c.panicked(where, v)
	if then != nil {
		then()
	}
}

// panicked counts and logs a panic recovered from one socket's handling.
func (c *conn) panicked(where string, v any) {
	c.srv.cfg.Metrics.Panics.Inc()
	c.srv.cfg.Logger.Error("panic in a socket's handling, closing the socket", "in", where, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
}

// errOverBudget ends a socket whose message would take the bytes held in
// unfinished messages over MaxUnfinishedBytes.
var errOverBudget = errors.New("unfinished messages over the gateway's budget")

// hold adds n bytes (n < 0: releases them) to those held in unfinished
// messages; it reports false, adding nothing, when that would take them
// over MaxUnfinishedBytes.
func (s *Server) hold(n int64) bool {
	v := s.unfinished.Add(n)
	if max := s.cfg.MaxUnfinishedBytes; n > 0 && max > 0 && v > max {
		s.unfinished.Add(-n)
		return false
	}
	return true
}

// firstRead is the buffer a message is read into at first; what the
// buffer grows by beyond it is held against MaxUnfinishedBytes until the
// message is complete.
const firstRead = 512

// readMessage reads the next message as gorilla's ReadMessage does (it
// reassembles fragments up to the read limit), holding what the message
// takes beyond firstRead against MaxUnfinishedBytes until it is complete.
func (c *conn) readMessage() (typ int, data []byte, err error) {
	typ, r, err := c.ws.NextReader()
	if err != nil {
		return typ, nil, err
	}
	data = make([]byte, 0, firstRead)
	var held int64
	defer func() { c.srv.hold(-held) }()
	for {
		if len(data) == cap(data) {
			grow := cap(data)
			if limit := c.srv.cfg.MaxFrameSize; limit > 0 {
				grow = max(min(grow, int(limit)+1-len(data)), 1)
			}
			if !c.srv.hold(int64(grow)) {
				return typ, nil, errOverBudget
			}
			held += int64(grow)
			data = append(make([]byte, 0, cap(data)+grow), data...)
		}
		n, err := r.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if err == io.EOF {
			return typ, data, nil
		}
		if err != nil {
			return typ, nil, err
		}
	}
}

func (c *conn) readLoop() {
	for {
		typ, data, err := c.readMessage()
		if err != nil {
			switch {
			case errors.Is(err, websocket.ErrReadLimit):
				// gorilla has already sent 1009.
				c.srv.cfg.Logger.Info("frame over the size limit, closing socket", "limit", c.srv.cfg.MaxFrameSize)
				c.linger()
			case errors.Is(err, errOverBudget):
				c.overBudget()
				if c.replyClose(CloseOverBudget, "gateway busy") {
					c.linger()
				}
			}
			return
		}
		c.received(data, typ == websocket.BinaryMessage)
	}
}

// overBudget counts and logs a socket closed for MaxUnfinishedBytes.
func (c *conn) overBudget() {
	c.srv.cfg.Metrics.OverBudget.Inc()
	c.srv.cfg.Logger.Warn("unfinished messages over the gateway's budget, closing socket",
		"budget", c.srv.cfg.MaxUnfinishedBytes, "user", c.user)
}

// received acts on one message from the client, for either reader. The
// session answers a heartbeat at once and queues anything else behind
// the socket's earlier frames, on a goroutine of its own (session.
// HandleMessage), so the reader never waits on a service and goes on
// reading: a heartbeat is never stuck behind a slow push.
func (c *conn) received(data []byte, binary bool) {
	c.touch()
	c.mu.Lock()
	closing := c.state != stateOpen
	c.mu.Unlock()
	if closing {
		return // waiting for the client's close frame
	}
	m, err := c.ser.Decode(data, binary)
	if err != nil {
		c.srv.cfg.Metrics.MalformedFrames.Inc()
		c.srv.cfg.Logger.Info("malformed frame, closing socket", "err", err, "size", len(data))
		c.abort(CloseMalformed, "malformed frame")
		return
	}
	c.sess.HandleMessage(m)
}

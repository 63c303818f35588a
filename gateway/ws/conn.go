package ws

import (
	"errors"
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
	sess *session.Session
	// rd is the state of a socket read by the shared pollers, nil when
	// the socket has a reader goroutine.
	rd *pollState

	lastActive atomic.Int64 // unix nanos of the last frame in or out
	// writeDeadline is the write deadline last set; only the socket's
	// writer touches it.
	writeDeadline time.Time

	mu    sync.Mutex
	queue []session.Frame
	spare []session.Frame // the other half of queue while a writer works
	pong  []byte          // a ping's payload to answer, nil when none
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
		c.queue = nil
	case stateClosed:
		c.queue, c.spare, c.pong = nil, nil, nil
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
// is full the socket is closed with CloseSlowConsumer.
func (c *conn) Deliver(f session.Frame) {
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return
	}
	if len(c.queue) >= c.srv.cfg.SendQueueLen {
		c.mu.Unlock()
		c.srv.cfg.Metrics.SlowDisconnects.Inc()
		c.srv.cfg.Logger.Warn("slow consumer disconnected", "user", c.sess.UserID(), "queue", c.srv.cfg.SendQueueLen)
		c.abort(CloseSlowConsumer, "send queue full")
		return
	}
	c.queue = append(c.queue, f)
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
// does, unless a writer owns the socket: then the reply is left out rather
// than written into the middle of a frame.
func (c *conn) onClose(code int, _ string) error {
	c.replyClose(code, "")
	return nil
}

// replyClose sends a close frame at once, unless a writer owns the socket,
// and accepts no more frames: the socket ends as soon as this returns.
func (c *conn) replyClose(code int, text string) {
	c.mu.Lock()
	busy := c.writing
	ok := c.transition(stateClosed, 0, "")
	c.writing = true
	c.mu.Unlock()
	if ok && !busy {
		msg := websocket.FormatCloseMessage(code, text)
		_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	}
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

func (c *conn) touch() { c.lastActive.Store(time.Now().UnixNano()) }

// watchIdle closes the socket when nothing went in or out for IdleTimeout,
// as Phoenix does (60 s by default); phoenix.js heartbeats every 30 s. It
// is a timer, not a goroutine, so idle sockets cost no extra stack; stop
// it with the returned function.
func (c *conn) watchIdle() (stop func() bool) {
	idle := c.srv.cfg.IdleTimeout
	var t *time.Timer
	// Armed far away first, so the callback never sees t unset.
	t = time.AfterFunc(time.Hour, func() {
		since := time.Since(time.Unix(0, c.lastActive.Load()))
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
	c.readLoop()
	c.end(stopIdle)
}

// end is what follows a socket's last read, whichever reader it had.
func (c *conn) end(stopIdle func() bool) {
	stopIdle()
	c.sess.End()
	_ = c.ws.Close()
	c.srv.cfg.Metrics.Connections.WithLabelValues("websocket").Dec()
}

func (c *conn) readLoop() {
	for {
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			// gorilla has already sent 1009 for a frame over the read limit.
			if errors.Is(err, websocket.ErrReadLimit) {
				c.srv.cfg.Logger.Info("frame over the size limit, closing socket", "limit", c.srv.cfg.MaxFrameSize)
			}
			return
		}
		c.received(data, typ == websocket.BinaryMessage)
	}
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

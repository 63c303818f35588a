package ws

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phxnats/phxnats/gateway/fanout"
	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wire"
)

// WebSocket close codes the gateway uses. phoenix.js reconnects after any
// code but 1000, so every server-side close here leads to a reconnect.
const (
	// CloseIdle: no frame in or out for IdleTimeout (Bandit uses 1002).
	CloseIdle = websocket.CloseProtocolError
	// CloseMalformed: a frame could not be decoded (Bandit uses 1011).
	CloseMalformed = websocket.CloseInternalServerErr
	// CloseSlowConsumer: the socket's send queue filled up because the
	// client does not read fast enough. Its queued frames are dropped; the
	// client reconnects and rejoins.
	CloseSlowConsumer = websocket.CloseTryAgainLater
	// CloseRestart: the gateway is draining for shutdown (as Phoenix's drainer).
	CloseRestart = websocket.CloseServiceRestart
)

// authTokenPrefix is how phoenix.js's authToken option travels in
// Sec-WebSocket-Protocol: "base64url.bearer.phx." + base64 of the token.
const authTokenPrefix = "base64url.bearer.phx."

// wsConn is one WebSocket client: a reader that feeds the session (on
// Linux one of a few shared epoll workers, elsewhere a goroutine of the
// socket's own), and a writer only while frames are queued, so an idle
// socket costs no writer stack. The writer is one of a few shared goroutines (writers), or,
// while the client is slow to read, a goroutine of the socket's own.
type wsConn struct {
	g    *Gateway
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
	queue []fanout.Frame
	spare []fanout.Frame // the other half of queue while a writer works
	pong  []byte         // a ping's payload to answer, nil when none
	// writing: a writer owns the socket (it is on writers' list, being
	// written, or has a goroutine of its own). Only the owner writes, so
	// a write the client could take only in part is finished before
	// anything else goes out.
	writing bool
	closing bool // no more frames are accepted
	// closeCode/closeText are sent once the queue has drained (graceful close).
	closeCode int
	closeText string
}

// Serializer implements fanout.Subscriber.
func (c *wsConn) Serializer() wire.Serializer { return c.ser }

// Skips implements fanout.Subscriber.
func (c *wsConn) Skips(from string, excludeFrom bool) bool { return c.sess.Skips(from, excludeFrom) }

// RoomLost implements fanout.Subscriber.
func (c *wsConn) RoomLost(topic string) { c.sess.ChannelError(topic) }

// Deliver implements fanout.Subscriber. It never blocks: when the queue is
// full the socket is closed with CloseSlowConsumer.
func (c *wsConn) Deliver(f fanout.Frame) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	if len(c.queue) >= c.g.opts.SendQueueLen {
		c.mu.Unlock()
		c.g.metrics.SlowDisconnects.Inc()
		c.g.log.Warn("slow consumer disconnected", "user", c.sess.UserID(), "queue", c.g.opts.SendQueueLen)
		c.abort(CloseSlowConsumer, "send queue full")
		return
	}
	c.queue = append(c.queue, f)
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		c.startWriter()
	}
}

// startWriter hands a socket that has something to send to a writer.
func (c *wsConn) startWriter() {
	if c.raw != nil {
		writers.add(c)
		return
	}
	go c.writeLoop(nil)
}

// onPing queues the pong, so that it cannot land inside a batch the
// client has taken only in part (gorilla's default handler writes at once).
func (c *wsConn) onPing(data string) error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return nil
	}
	c.pong = []byte(data) // a newer ping's payload replaces an older one, as RFC 6455 allows
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		c.startWriter()
	}
	return nil
}

// onClose answers the client's close frame, as gorilla's default handler
// does, unless a writer owns the socket: then the reply is left out rather
// than written into the middle of a frame.
func (c *wsConn) onClose(code int, _ string) error {
	c.replyClose(code, "")
	return nil
}

// replyClose sends a close frame at once, unless a writer owns the socket,
// and accepts no more frames: the socket ends as soon as this returns.
func (c *wsConn) replyClose(code int, text string) {
	c.mu.Lock()
	busy := c.writing
	c.closing, c.writing, c.queue, c.pong = true, true, nil, nil
	c.mu.Unlock()
	if !busy {
		msg := websocket.FormatCloseMessage(code, text)
		_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	}
}

// take swaps out what the writer is to send.
func (c *wsConn) take() (batch []fanout.Frame, pong []byte) {
	c.mu.Lock()
	batch, pong = c.queue, c.pong
	c.queue, c.spare, c.pong = c.spare, nil, nil
	c.mu.Unlock()
	return batch, pong
}

// release ends a writer's turn once everything taken is written. It
// reports whether the writer must go on (more was queued meanwhile) or
// send the close frame; after that the socket stays owned, since nothing
// follows a close.
func (c *wsConn) release(batch []fanout.Frame) (more, sendClose bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) > 0 || c.pong != nil {
		if cap(batch) <= c.g.opts.SendQueueLen {
			c.spare = batch[:0] // a busy socket appends without allocating
		}
		return true, false
	}
	if c.closeCode != 0 {
		return false, true
	}
	if cap(c.queue) == 0 && cap(batch) <= c.g.opts.SendQueueLen {
		// Kept for the next burst, so a busy socket that the writers
		// catch up with does not grow a new queue each time; watchIdle
		// drops it once the socket has been quiet for a while.
		c.queue = batch[:0]
	}
	c.writing = false
	return false, false
}

// trimQueue drops a large idle queue's storage, so a socket that was busy
// once costs no more than any other while it is quiet.
func (c *wsConn) trimQueue() {
	c.mu.Lock()
	if !c.writing && len(c.queue) == 0 && cap(c.queue) > 16 {
		c.queue = nil
	}
	c.mu.Unlock()
}

// fail ends a socket whose write failed.
func (c *wsConn) fail() {
	c.mu.Lock()
	c.closing, c.queue, c.spare, c.pong = true, nil, nil, nil
	c.mu.Unlock()
	c.closeConn()
}

// writers is the gateway's shared write pool.
//
// A goroutine started per socket whenever its queue turns non-empty writes
// as soon as it runs, usually a single frame, and its start and exit cost
// about a tenth of the fan-out CPU. The pool instead works through the
// sockets that have frames in turn, so while it writes to some, the
// broadcasts that keep arriving pile up in the queues of the others: the
// busier the gateway, the more frames each write syscall carries. A
// socket is written without blocking; one that cannot take its whole
// batch (a client slow to read) is finished on a goroutine of its own, so
// it holds up no one.
var writers writePool

type writePool struct {
	start sync.Once
	mu    sync.Mutex
	cond  sync.Cond
	ready []*wsConn // sockets waiting for a writer, in order from head
	head  int
	idle  int // workers waiting on cond
}

// writePoolTake is how many sockets a worker takes off the list at once:
// enough to make the lock cheap, few enough to share work among workers.
const writePoolTake = 32

func (p *writePool) add(c *wsConn) {
	p.start.Do(func() {
		p.cond.L = &p.mu
		for range runtime.GOMAXPROCS(0) {
			go p.work()
		}
	})
	p.mu.Lock()
	p.ready = append(p.ready, c)
	if p.idle > 0 {
		p.cond.Signal()
	}
	p.mu.Unlock()
}

// poolWorker is one writer's state: its buffer, and the raw write
// callback made once, since a closure made per write escapes to the heap.
type poolWorker struct {
	buf     []byte
	out     []byte // what write is to send
	written int
	err     error
	write   func(fd uintptr) bool
}

func (p *writePool) work() {
	w := &poolWorker{}
	w.write = w.writeFD
	var mine []*wsConn
	for {
		p.mu.Lock()
		for p.head == len(p.ready) {
			if cap(p.ready) > 4096 {
				p.ready = nil // a storm is over: do not keep its list
			}
			p.ready, p.head = p.ready[:0], 0
			p.idle++
			p.cond.Wait()
			p.idle--
		}
		n := min(len(p.ready)-p.head, writePoolTake)
		mine = append(mine[:0], p.ready[p.head:p.head+n]...)
		clear(p.ready[p.head : p.head+n])
		p.head += n
		if p.head >= 1024 && p.head*2 >= len(p.ready) {
			// Under steady load the list never empties: move the live
			// part down rather than let append grow it without end.
			k := copy(p.ready, p.ready[p.head:])
			clear(p.ready[k:])
			p.ready, p.head = p.ready[:k], 0
		}
		p.mu.Unlock()
		for i, c := range mine {
			c.flush(w)
			mine[i] = nil
		}
		if cap(w.buf) > 2*maxWrite {
			w.buf = nil
		}
	}
}

// flush writes what c has queued without blocking. Then c goes back to
// the end of the pool's list if more was queued meanwhile, goes idle, or,
// when the client did not take it all, continues on a goroutine of its
// own.
func (c *wsConn) flush(w *poolWorker) {
	batch, pong := c.take()
	buf := w.buf[:0]
	defer func() { w.buf = buf }()
	if pong != nil {
		buf = appendControl(buf, websocket.PongMessage, pong)
	}
	for i := 0; i < len(batch) || len(buf) > 0; {
		for i < len(batch) && len(buf) < maxWrite {
			buf = appendFrame(buf, batch[i])
			batch[i] = fanout.Frame{} // shared bytes: let them go once written
			i++
		}
		n, err := w.tryWrite(c.raw, buf)
		if err != nil {
			c.fail()
			return
		}
		if n < len(buf) {
			go c.writeLoop(&pendingWrite{bytes.Clone(buf[n:]), batch[i:]})
			return
		}
		buf = buf[:0]
	}
	if len(batch) > 0 || pong != nil {
		c.touch()
	}
	switch more, closeNow := c.release(batch); {
	case more:
		writers.add(c)
	case closeNow:
		go c.sendClose() // it may wait on the client; the pool does not
	}
}

// tryWrite writes as much of b as the socket takes now, without waiting.
func (w *poolWorker) tryWrite(raw syscall.RawConn, b []byte) (int, error) {
	w.out, w.written, w.err = b, 0, nil
	err := raw.Write(w.write)
	if err == nil {
		err = w.err
	}
	w.out = nil
	return w.written, err
}

// pendingWrite is what a client did not take at once: the rest of a
// write, and the frames of the batch not yet framed.
type pendingWrite struct {
	data   []byte
	frames []fanout.Frame
}

// writeLoop writes the socket from a goroutine of its own, with blocking
// writes bounded by WriteTimeout, until its queue is empty: for a client
// slow to read, and for connections that are not plain sockets.
func (c *wsConn) writeLoop(p *pendingWrite) {
	if p != nil {
		if err := c.writeBatch(p.data, nil, p.frames); err != nil {
			c.fail()
			return
		}
		c.touch()
	}
	for {
		batch, pong := c.take()
		if len(batch) > 0 || pong != nil {
			if err := c.writeBatch(nil, pong, batch); err != nil {
				c.fail()
				return
			}
			c.touch()
		}
		more, closeNow := c.release(batch)
		if closeNow {
			c.sendClose()
		}
		if !more {
			return
		}
	}
}

// maxWrite bounds one write: a batch larger than this goes out in several
// writes, each holding whole frames.
const maxWrite = 256 << 10

var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}

// writeBatch writes head (bytes already framed), the pong and every frame
// of batch with blocking writes, as few as possible.
//
// The server never masks frames and the gateway does not negotiate
// compression, so the framing is RFC 6455's plain header, encoded here
// rather than by gorilla, which writes one frame per call. gorilla still
// writes the close frame (sendClose, onClose), but only when no batch is
// in flight.
func (c *wsConn) writeBatch(head, pong []byte, batch []fanout.Frame) error {
	conn := c.ws.NetConn()
	if err := c.refreshWriteDeadline(); err != nil {
		return err
	}
	bp := writeBufs.Get().(*[]byte)
	buf := append((*bp)[:0], head...)
	defer func() {
		if cap(buf) <= maxWrite*2 {
			*bp = buf[:0]
			writeBufs.Put(bp)
		}
	}()
	if pong != nil {
		buf = appendControl(buf, websocket.PongMessage, pong)
	}
	for i, f := range batch {
		buf = appendFrame(buf, f)
		batch[i] = fanout.Frame{} // shared bytes: let them go once written
		if len(buf) >= maxWrite {
			if _, err := conn.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	if len(buf) > 0 {
		if _, err := conn.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// refreshWriteDeadline moves the write deadline, which bounds the blocking
// writes. Moving it costs a timer update, so under load it is only
// refreshed once half of WriteTimeout is used up. Only the socket's writer
// calls it.
func (c *wsConn) refreshWriteDeadline() error {
	now := time.Now()
	if c.writeDeadline.Sub(now) >= c.g.opts.WriteTimeout/2 {
		return nil
	}
	c.writeDeadline = now.Add(c.g.opts.WriteTimeout)
	return c.ws.NetConn().SetWriteDeadline(c.writeDeadline)
}

// appendFrame appends f as one WebSocket frame.
func appendFrame(dst []byte, f fanout.Frame) []byte {
	op := byte(websocket.TextMessage)
	if f.Binary {
		op = websocket.BinaryMessage
	}
	dst = appendFrameHeader(dst, op, len(f.Data))
	return append(dst, f.Data...)
}

// appendControl appends a control frame; RFC 6455 caps its payload at 125
// bytes, which gorilla enforces on the pings it reads.
func appendControl(dst []byte, op int, payload []byte) []byte {
	dst = appendFrameHeader(dst, byte(op), len(payload))
	return append(dst, payload...)
}

// appendFrameHeader appends an unmasked, final WebSocket frame header.
func appendFrameHeader(dst []byte, opcode byte, n int) []byte {
	dst = append(dst, 0x80|opcode)
	switch {
	case n <= 125:
		return append(dst, byte(n))
	case n <= 0xFFFF:
		return append(dst, 126, byte(n>>8), byte(n))
	default:
		return append(dst, 127, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// closeAfterFlush sends what is queued, then a close frame.
func (c *wsConn) closeAfterFlush(code int, text string) { c.closeWith(code, text, false) }

// abort drops what is queued and closes as soon as the frames already being
// written are out: a close frame cannot overtake a frame half written, and
// a writer stuck on a dead client is ended by WriteTimeout.
func (c *wsConn) abort(code int, text string) { c.closeWith(code, text, true) }

func (c *wsConn) closeWith(code int, text string, drop bool) {
	c.mu.Lock()
	if c.closeCode != 0 {
		c.mu.Unlock()
		return
	}
	c.closing, c.closeCode, c.closeText = true, code, text
	if drop {
		c.queue = nil
	}
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		c.startWriter()
	}
}

// sendClose starts the closing handshake: the reader sees the client's
// close frame (or the deadline) and closes the connection, so the client
// reads our code rather than a reset.
func (c *wsConn) sendClose() {
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
func (c *wsConn) closeConn() {
	if c.rd != nil {
		_ = c.raw.Control(shutdownFD)
		return
	}
	_ = c.ws.Close()
}

func (c *wsConn) touch() { c.lastActive.Store(time.Now().UnixNano()) }

// watchIdle closes the socket when nothing went in or out for IdleTimeout,
// as Phoenix does (60 s by default); phoenix.js heartbeats every 30 s. It
// is a timer, not a goroutine, so idle sockets cost no extra stack; stop
// it with the returned function.
func (c *wsConn) watchIdle() (stop func() bool) {
	idle := c.g.opts.IdleTimeout
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

func (g *Gateway) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	query := r.URL.Query()
	vsn, hasVsn := query["vsn"]
	var ser wire.Serializer
	var err error
	if hasVsn {
		// Phoenix refuses an explicit empty vsn; only a missing one means V1.
		ser, err = wire.ForVsn(vsn[0])
		if vsn[0] == "" {
			err = wire.ErrUnsupportedVsn
		}
	} else {
		ser = wire.V1
	}
	if err != nil {
		g.refuse(w, http.StatusForbidden, "vsn")
		return
	}
	if !g.originAllowed(r) {
		g.refuse(w, http.StatusForbidden, "origin")
		return
	}
	token, hasToken := query["token"]
	tok := ""
	if hasToken {
		tok = token[0]
	}
	if t, ok := subprotocolToken(r); ok {
		tok, hasToken = t, true
	}
	userID, status := g.authenticate(tok, hasToken)
	if status != 0 {
		g.refuse(w, status, "auth")
		return
	}
	ws, err := g.upgrader.Upgrade(w, r, nil)
	if err != nil {
		// Upgrade has already answered with 400.
		g.metrics.ConnectsRefused.WithLabelValues("upgrade").Inc()
		return
	}
	c := &wsConn{g: g, ws: ws, ser: ser}
	c.raw = rawConn(ws.NetConn())
	c.rd = newPollState(c.raw)
	ws.SetPingHandler(c.onPing)
	ws.SetCloseHandler(c.onClose)
	c.touch()
	c.sess = session.New(&g.sessionCfg, c, userID, g.nextConnID())
	ws.SetReadLimit(g.opts.MaxFrameSize)
	if !g.track(c, true) {
		c.abort(CloseRestart, "server shutting down")
	}
	g.metrics.Connections.WithLabelValues("websocket").Inc()
	// The socket lives on in a poller or its own goroutine so that this
	// handler returns: net/http then frees the request and the
	// connection's buffers, about a third of an idle socket's memory
	// otherwise.
	if !c.startPolling() {
		go c.serve()
	}
}

func (c *wsConn) serve() {
	stopIdle := c.watchIdle()
	c.readLoop()
	c.end(stopIdle)
}

// end is what follows a socket's last read, whichever reader it had.
func (c *wsConn) end(stopIdle func() bool) {
	stopIdle()
	c.sess.Close()
	_ = c.ws.Close()
	c.g.track(c, false)
	c.g.metrics.Connections.WithLabelValues("websocket").Dec()
}

func (c *wsConn) readLoop() {
	for {
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			// gorilla has already sent 1009 for a frame over the read limit.
			if errors.Is(err, websocket.ErrReadLimit) {
				c.g.log.Info("frame over the size limit, closing socket", "limit", c.g.opts.MaxFrameSize)
			}
			return
		}
		m, run := c.received(data, typ == websocket.BinaryMessage)
		if !run {
			continue
		}
		// Joins and pushes wait on NATS through deep call chains (JSON,
		// requests). Running them on a goroutine of their own, while the
		// reader waits so the socket's order is kept, leaves the reader's
		// stack small for the long idle hours that follow: a few KiB per
		// socket.
		done := make(chan struct{})
		go func() {
			c.sess.HandleMessage(m)
			close(done)
		}()
		<-done
	}
}

// received acts on one message from the client, for either reader.
// Heartbeats are answered at once; a join or push is returned with run
// set, for the reader to hand to c.sess.HandleMessage off its own
// goroutine and read nothing more from the socket until it is done, which
// keeps the socket's order: it waits on NATS.
func (c *wsConn) received(data []byte, binary bool) (m wire.Message, run bool) {
	c.touch()
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if closing {
		return m, false // waiting for the client's close frame
	}
	m, err := c.ser.Decode(data, binary)
	if err != nil {
		c.g.metrics.MalformedFrames.Inc()
		c.g.log.Info("malformed frame, closing socket", "err", err, "size", len(data))
		c.abort(CloseMalformed, "malformed frame")
		return m, false
	}
	if m.Topic == "phoenix" && m.Event == "heartbeat" {
		// Answered inline, no service asked. Anything else, even on the
		// phoenix topic, may be routed to a service (a "*" route), so
		// a poller worker must not run it.
		c.sess.HandleMessage(m)
		return m, false
	}
	return m, true
}

// subprotocolToken reads phoenix.js's authToken from Sec-WebSocket-Protocol.
func subprotocolToken(r *http.Request) (string, bool) {
	for _, p := range websocket.Subprotocols(r) {
		if enc, ok := strings.CutPrefix(p, authTokenPrefix); ok {
			b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(enc, "="))
			if err != nil {
				return "", true // present but undecodable: refused as a bad token
			}
			return string(b), true
		}
	}
	return "", false
}

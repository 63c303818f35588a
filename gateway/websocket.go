package gateway

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
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

// wsConn is one WebSocket client: a reader goroutine that feeds the session,
// and a writer goroutine that exists only while frames are queued, so an idle
// socket costs no writer stack.
type wsConn struct {
	g    *Gateway
	ws   *websocket.Conn
	ser  wire.Serializer
	sess *session.Session

	lastActive atomic.Int64 // unix nanos of the last frame in or out
	// writeDeadline is the write deadline last set; only the writer
	// goroutine touches it.
	writeDeadline time.Time

	mu      sync.Mutex
	queue   []fanout.Frame
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
		go c.writeLoop()
	}
}

func (c *wsConn) writeLoop() {
	// The writer swaps two slices with Deliver, so a busy socket appends
	// broadcasts without allocating; small ones are kept for the next burst.
	var spare []fanout.Frame
	for {
		c.mu.Lock()
		batch := c.queue
		c.queue = spare
		spare = nil
		if len(batch) == 0 {
			c.writing = false
			code, text := c.closeCode, c.closeText
			c.mu.Unlock()
			if code != 0 {
				c.sendClose(code, text)
			}
			return
		}
		c.mu.Unlock()
		if err := c.writeBatch(batch); err != nil {
			c.mu.Lock()
			c.closing, c.queue, c.writing = true, nil, false
			c.mu.Unlock()
			_ = c.ws.Close()
			return
		}
		if cap(batch) <= 16 {
			spare = batch[:0]
		}
		c.touch()
	}
}

// maxWrite bounds one write: a batch larger than this goes out in several
// writes, each holding whole frames.
const maxWrite = 256 << 10

var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}

// writeBatch frames every queued message and writes them with as few
// syscalls as possible (one for a typical batch) instead of one per frame,
// which is what lets a broadcast reach thousands of sockets quickly.
//
// It writes to the connection under gorilla, which is safe because each
// Write holds whole frames: the only other writer, gorilla's own control
// frames (pong, close reply), is one Write too, and the net.Conn keeps
// concurrent Writes from interleaving. The server never masks frames and
// the gateway does not negotiate compression, so the framing is RFC 6455's
// plain header.
func (c *wsConn) writeBatch(batch []fanout.Frame) error {
	conn := c.ws.NetConn()
	// Moving the deadline costs a timer update per call; under load only
	// refresh it once half of WriteTimeout is used up. (gorilla moves it too
	// when it answers a client's ping; phoenix.js and browsers send none.)
	now := time.Now()
	if c.writeDeadline.Sub(now) < c.g.opts.WriteTimeout/2 {
		c.writeDeadline = now.Add(c.g.opts.WriteTimeout)
		if err := conn.SetWriteDeadline(c.writeDeadline); err != nil {
			return err
		}
	}
	bp := writeBufs.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() {
		if cap(buf) <= maxWrite*2 {
			*bp = buf[:0]
			writeBufs.Put(bp)
		}
	}()
	for i, f := range batch {
		op := byte(websocket.TextMessage)
		if f.Binary {
			op = websocket.BinaryMessage
		}
		buf = appendFrameHeader(buf, op, len(f.Data))
		buf = append(buf, f.Data...)
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
		go c.writeLoop()
	}
}

// sendClose starts the closing handshake: the reader goroutine sees the
// client's close frame (or the deadline) and closes the connection, so the
// client reads our code rather than a reset.
func (c *wsConn) sendClose(code int, text string) {
	msg := websocket.FormatCloseMessage(code, text)
	if err := c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
		_ = c.ws.Close()
		return
	}
	_ = c.ws.SetReadDeadline(time.Now().Add(2 * time.Second))
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
	c.touch()
	c.sess = session.New(&g.sessionCfg, c, userID, g.nextConnID())
	ws.SetReadLimit(g.opts.MaxFrameSize)
	if !g.track(c, true) {
		c.abort(CloseRestart, "server shutting down")
	}
	g.metrics.Connections.WithLabelValues("websocket").Inc()
	// The socket lives on in its own goroutine so that this handler
	// returns: net/http then frees the request and the connection's
	// buffers, about a third of an idle socket's memory otherwise.
	go c.serve()
}

func (c *wsConn) serve() {
	stopIdle := c.watchIdle()
	c.readLoop()
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
		c.touch()
		c.mu.Lock()
		closing := c.closing
		c.mu.Unlock()
		if closing {
			continue // waiting for the client's close frame
		}
		m, err := c.ser.Decode(data, typ == websocket.BinaryMessage)
		if err != nil {
			c.g.metrics.MalformedFrames.Inc()
			c.g.log.Info("malformed frame, closing socket", "err", err, "size", len(data))
			c.abort(CloseMalformed, "malformed frame")
			continue
		}
		if m.Topic == "phoenix" {
			c.sess.HandleMessage(m) // heartbeats: answered inline, no service asked
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

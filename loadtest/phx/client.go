// Package phx is a minimal Phoenix channels client speaking serializer V2 the
// way phoenix.js does: the socket URL carries vsn=2.0.0 and the token param,
// every push gets a fresh ref, a join's ref becomes its join_ref, and a
// heartbeat [null, ref, "phoenix", "heartbeat", {}] goes out every 30 s.
//
// It is written for load generation: frames are parsed in place without
// allocations, one reused read buffer per socket, and the caller sees
// server pushes and broadcasts through a callback on the reader goroutine.
package phx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phxnats/phxnats/gateway/wsframe"
)

// Frame is one server frame [join_ref, ref, topic, event, payload]. Its
// slices alias the socket's read buffer: they are valid only during the
// callback that receives them.
type Frame struct {
	JoinRef []byte // nil for null
	Ref     []byte // nil for null
	Topic   []byte
	Event   []byte
	Payload []byte // raw JSON
	// Worker is the Poller worker that read the frame (0 without a poller).
	Worker int
	// At is when the read that brought the frame returned (unix nanos).
	At int64
}

// Reply is a decoded phx_reply.
type Reply struct {
	Status   string
	Response json.RawMessage
}

// Stats are counters shared by many sockets.
type Stats struct {
	HeartbeatsSent    atomic.Int64
	HeartbeatReplies  atomic.Int64
	FramesIn          atomic.Int64
	FramesOut         atomic.Int64
	Disconnects       atomic.Int64 // closed by the server or the network, not by us
	SlowConsumerClose atomic.Int64 // code 1013 among Disconnects
	mu                sync.Mutex
	LastDisconnect    string
}

// DisconnectReason returns the last unexpected disconnect's error text.
func (s *Stats) DisconnectReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.LastDisconnect
}

// Options configure Dial.
type Options struct {
	// URL is the socket endpoint, e.g. ws://127.0.0.1:4000/socket/websocket.
	URL string
	// Token goes into the token query param when not empty.
	Token string
	// SrcIP is the local address to dial from (nil: the kernel's choice).
	// Spreading sockets over 127.0.0.1..127.0.0.N multiplies the usable
	// ephemeral ports.
	SrcIP net.IP
	// Heartbeat is the heartbeat interval; 0 means phoenix.js's 30 s,
	// negative none.
	Heartbeat time.Duration
	// OnMessage receives every frame that is not a phx_reply (broadcasts,
	// pushes, phx_close, phx_error), on the reader goroutine.
	OnMessage func(c *Conn, f *Frame)
	// Stats, when set, are updated.
	Stats *Stats
	// ReadBufferSize and WriteBufferSize for gorilla (defaults 1024, 1024).
	ReadBufferSize, WriteBufferSize int
	// Poller, when set, reads the socket instead of a goroutine of its own;
	// OnMessage then runs on the poller's worker.
	Poller *Poller
}

var writePool sync.Pool

// Conn is one Phoenix socket.
type Conn struct {
	ws    *websocket.Conn
	opts  Options
	stats *Stats

	wmu  sync.Mutex
	wbuf []byte

	// With a Poller: the socket's own descriptor (gorilla's is closed), the
	// bytes of a frame not yet complete, and fragments; only the worker
	// touches pending, frag and in. fdClosed is guarded by wmu.
	poll     *pollWorker
	fd       int
	fdClosed bool
	pending  []byte
	frag     []byte
	in       Frame

	ref atomic.Uint64

	mu      sync.Mutex
	waiting map[string]chan Reply

	hb      *time.Timer
	closing atomic.Bool
	done    chan struct{}
	err     error // read error, set before done is closed

	// Value is free for the caller (e.g. an index).
	Value any
}

// Dial connects and starts the reader (and the heartbeat).
func Dial(ctx context.Context, o Options) (*Conn, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	q.Set("vsn", "2.0.0")
	if o.Token != "" {
		q.Set("token", o.Token)
	}
	u.RawQuery = q.Encode()
	if o.ReadBufferSize == 0 {
		o.ReadBufferSize = 1024
	}
	if o.WriteBufferSize == 0 {
		o.WriteBufferSize = 1024
	}
	d := websocket.Dialer{
		HandshakeTimeout: 15 * time.Second,
		ReadBufferSize:   o.ReadBufferSize,
		WriteBufferSize:  o.WriteBufferSize,
		WriteBufferPool:  &writePool,
	}
	if o.SrcIP != nil {
		nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: o.SrcIP}, Timeout: 15 * time.Second}
		d.NetDialContext = nd.DialContext
	}
	ws, resp, err := d.DialContext(ctx, u.String(), nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial: %w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	c := &Conn{ws: ws, opts: o, stats: o.Stats, waiting: make(map[string]chan Reply), done: make(chan struct{}), fd: -1}
	if c.stats == nil {
		c.stats = &Stats{}
	}
	if o.Poller != nil {
		if err := o.Poller.adopt(c, ws.NetConn()); err != nil {
			_ = ws.Close()
			return nil, err
		}
		c.ws = nil
	} else {
		go c.readLoop()
	}
	if o.Heartbeat >= 0 {
		iv := o.Heartbeat
		if iv == 0 {
			iv = 30 * time.Second
		}
		c.hb = time.AfterFunc(iv, func() { c.heartbeat(iv) })
	}
	return c, nil
}

func (c *Conn) heartbeat(iv time.Duration) {
	if c.closing.Load() {
		return
	}
	if _, err := c.Push("phoenix", "heartbeat", nil, ""); err == nil {
		c.stats.HeartbeatsSent.Add(1)
	}
	c.hb.Reset(iv)
}

// NextRef returns a fresh ref.
func (c *Conn) NextRef() string { return strconv.FormatUint(c.ref.Add(1), 10) }

// Push sends [joinRef, ref, topic, event, payload] with a fresh ref and
// returns the ref. joinRef "" is sent as null; payload nil as {}.
func (c *Conn) Push(topic, event string, payload []byte, joinRef string) (string, error) {
	ref := c.NextRef()
	return ref, c.send(joinRef, ref, topic, event, payload)
}

func (c *Conn) send(joinRef, ref, topic, event string, payload []byte) error {
	if payload == nil {
		payload = []byte("{}")
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := c.wbuf[:0]
	b = append(b, '[')
	b = appendStrOrNull(b, joinRef)
	b = append(b, ',')
	b = appendStrOrNull(b, ref)
	b = append(b, ',')
	b = strconv.AppendQuote(b, topic)
	b = append(b, ',')
	b = strconv.AppendQuote(b, event)
	b = append(b, ',')
	b = append(b, payload...)
	b = append(b, ']')
	c.wbuf = b
	if cap(c.wbuf) > 4096 {
		c.wbuf = nil
	}
	if c.poll != nil {
		if err := c.writeFrameLocked(websocket.TextMessage, b); err != nil {
			return err
		}
	} else {
		_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
			return err
		}
	}
	c.stats.FramesOut.Add(1)
	return nil
}

func appendStrOrNull(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return strconv.AppendQuote(b, s)
}

// Call pushes and waits for the phx_reply with the push's ref.
func (c *Conn) Call(ctx context.Context, topic, event string, payload []byte, joinRef string) (Reply, error) {
	ref := c.NextRef()
	ch := make(chan Reply, 1)
	c.mu.Lock()
	c.waiting[ref] = ch
	c.mu.Unlock()
	if err := c.send(joinRef, ref, topic, event, payload); err != nil {
		c.forget(ref)
		return Reply{}, err
	}
	return c.wait(ctx, ref, ch)
}

// Join sends phx_join (its ref is its join_ref, as phoenix.js) and waits for
// the reply; a non-ok status is returned as an error. It returns the join_ref.
func (c *Conn) Join(ctx context.Context, topic string, payload []byte) (string, error) {
	ref := c.NextRef()
	ch := make(chan Reply, 1)
	c.mu.Lock()
	c.waiting[ref] = ch
	c.mu.Unlock()
	if err := c.send(ref, ref, topic, "phx_join", payload); err != nil {
		c.forget(ref)
		return "", err
	}
	rep, err := c.wait(ctx, ref, ch)
	if err != nil {
		return "", err
	}
	if rep.Status != "ok" {
		return "", fmt.Errorf("join %s refused: %s %s", topic, rep.Status, rep.Response)
	}
	return ref, nil
}

func (c *Conn) wait(ctx context.Context, ref string, ch chan Reply) (Reply, error) {
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		c.forget(ref)
		return Reply{}, ctx.Err()
	case <-c.done:
		c.forget(ref)
		return Reply{}, fmt.Errorf("socket closed: %w", c.err)
	}
}

func (c *Conn) forget(ref string) {
	c.mu.Lock()
	delete(c.waiting, ref)
	c.mu.Unlock()
}

// Done is closed when the socket's reader has stopped.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err is why the reader stopped (valid after Done).
func (c *Conn) Err() error { return c.err }

// Close sends a normal close frame and closes the connection without
// waiting for the server's answer beyond a short grace period.
func (c *Conn) Close() {
	if c.closing.Swap(true) {
		return
	}
	if c.hb != nil {
		c.hb.Stop()
	}
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	if c.poll != nil {
		_ = c.writeFrame(websocket.CloseMessage, msg)
	} else {
		_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	}
	select {
	case <-c.done:
	case <-time.After(500 * time.Millisecond):
	}
	c.closeConn()
	<-c.done
}

func (c *Conn) closeConn() {
	if c.poll != nil {
		c.poll.release(c)
	} else {
		_ = c.ws.Close()
	}
}

// Abort closes the TCP connection at once.
func (c *Conn) Abort() {
	c.closing.Store(true)
	if c.hb != nil {
		c.hb.Stop()
	}
	c.closeConn()
	<-c.done
}

var (
	replyEvent     = []byte("phx_reply")
	phoenixTopic   = []byte("phoenix")
	statusOKSuffix = []byte(`"status":"ok"}`)
)

func (c *Conn) readLoop() {
	buf := make([]byte, 0, 512)
	var f Frame
	for {
		if cap(buf) > 64<<10 {
			buf = make([]byte, 0, 512) // do not keep a rare large frame's buffer
		}
		_, r, err := c.ws.NextReader()
		if err != nil {
			_ = c.ws.Close()
			c.finish(err)
			return
		}
		buf, err = readAll(buf[:0], r)
		if err != nil {
			continue // the next NextReader returns the error
		}
		c.stats.FramesIn.Add(1)
		f.At = time.Now().UnixNano()
		c.handle(buf, &f)
	}
}

// finish records why the socket ended and closes done.
func (c *Conn) finish(err error) {
	c.err = err
	if !c.closing.Load() {
		c.stats.Disconnects.Add(1)
		var ce *websocket.CloseError
		if errors.As(err, &ce) && ce.Code == websocket.CloseTryAgainLater {
			c.stats.SlowConsumerClose.Add(1)
		}
		c.stats.mu.Lock()
		c.stats.LastDisconnect = err.Error()
		c.stats.mu.Unlock()
	}
	close(c.done)
}

// handle routes one frame: replies to their waiting call, the rest to
// OnMessage.
func (c *Conn) handle(buf []byte, f *Frame) {
	if err := ParseFrame(buf, f); err != nil {
		c.stats.mu.Lock()
		c.stats.LastDisconnect = "unparsable frame: " + err.Error()
		c.stats.mu.Unlock()
		return
	}
	if bytes.Equal(f.Event, replyEvent) {
		if bytes.Equal(f.Topic, phoenixTopic) {
			c.stats.HeartbeatReplies.Add(1)
			return
		}
		if f.Ref != nil {
			c.mu.Lock()
			ch, ok := c.waiting[string(f.Ref)]
			if ok {
				delete(c.waiting, string(f.Ref))
			}
			c.mu.Unlock()
			if ok {
				ch <- parseReply(f.Payload)
				return
			}
		}
	}
	if c.opts.OnMessage != nil {
		c.opts.OnMessage(c, f)
	}
}

// writeFrame writes one client frame on a polled socket.
func (c *Conn) writeFrame(op int, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeFrameLocked(op, payload)
}

// writeFrameLocked frames payload with a zero mask key: RFC 6455 wants an
// unpredictable key against cache poisoning through proxies, which a load
// generator on loopback has no use for, and servers accept any key.
func (c *Conn) writeFrameLocked(op int, payload []byte) error {
	b := make([]byte, 0, 14+len(payload))
	b = wsframe.AppendMaskedHeader(b, byte(op), len(payload), [4]byte{})
	b = append(b, payload...)
	return c.writeRaw(b)
}

func readAll(b []byte, r io.Reader) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

func parseReply(p []byte) Reply {
	if bytes.HasSuffix(p, statusOKSuffix) && bytes.HasPrefix(p, []byte(`{"response":`)) {
		return Reply{Status: "ok", Response: json.RawMessage(bytes.Clone(p[len(`{"response":`) : len(p)-len(statusOKSuffix)-1]))}
	}
	var r struct {
		Status   string          `json:"status"`
		Response json.RawMessage `json:"response"`
	}
	if err := json.Unmarshal(p, &r); err != nil {
		return Reply{Status: "unparsable", Response: json.RawMessage(bytes.Clone(p))}
	}
	return Reply{Status: r.Status, Response: r.Response}
}

// ParseFrame parses a V2 text frame in place. Strings holding escapes are
// not unescaped (the load tool's topics and events never hold any).
func ParseFrame(b []byte, f *Frame) error {
	if len(b) < 2 || b[0] != '[' || b[len(b)-1] != ']' {
		b = bytes.TrimSpace(b) // servers send none; the check is for the rare one that does
	}
	if len(b) < 2 || b[0] != '[' || b[len(b)-1] != ']' {
		return errors.New("not a JSON array")
	}
	b = b[1 : len(b)-1]
	fields := [4]*[]byte{&f.JoinRef, &f.Ref, &f.Topic, &f.Event}
	for i, dst := range fields {
		b = skipSpace(b)
		switch {
		case bytes.HasPrefix(b, []byte("null")):
			*dst = nil
			b = b[4:]
		case len(b) > 0 && b[0] == '"':
			end := 1 + bytes.IndexByte(b[1:], '"')
			if end == 0 || bytes.IndexByte(b[1:end], '\\') >= 0 {
				end = 1 // absent, or escapes: go byte by byte
				for end < len(b) && b[end] != '"' {
					if b[end] == '\\' {
						end++
					}
					end++
				}
			}
			if end >= len(b) {
				return fmt.Errorf("field %d: unterminated string", i)
			}
			*dst = b[1:end]
			b = b[end+1:]
		default:
			return fmt.Errorf("field %d: not a string or null", i)
		}
		b = skipSpace(b)
		if len(b) == 0 || b[0] != ',' {
			return fmt.Errorf("field %d: missing comma", i)
		}
		b = b[1:]
	}
	f.Payload = bytes.TrimSpace(b)
	if len(f.Payload) == 0 {
		return errors.New("missing payload")
	}
	return nil
}

func skipSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\t' || b[0] == '\r') {
		b = b[1:]
	}
	return b
}

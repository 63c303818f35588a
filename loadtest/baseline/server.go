// Package baseline is the yardstick for the gateway's figures: a bare
// gorilla/websocket server that speaks just enough Phoenix V2 for the load
// scenarios (phx_join ok, heartbeat, phx_leave, new_msg broadcast to every
// socket of the room, ping reply) with no NATS, no services and no auth.
// What the full system costs is then a ratio to this server on the same
// machine.
//
// The design is the plainest one: per socket a reader goroutine and a writer
// goroutine fed by a buffered channel; a broadcast is encoded once (JSON and
// WebSocket framing: a server frame is the same bytes for every socket) and
// offered to each member's channel without blocking; a member whose channel
// is full is closed with 1013, as the gateway does. The writer takes
// everything its channel holds and writes it with one syscall (Coalesce,
// the default), or writes each frame on its own, the classic way.
package baseline

import (
	"context"
	"errors"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phxnats/phxnats/loadtest/phx"
)

// Server is a running baseline server.
type Server struct {
	queueLen int
	coalesce bool
	upgrader websocket.Upgrader
	http     *http.Server
	ln       net.Listener

	mu    sync.RWMutex
	rooms map[string]*room

	conns      sync.WaitGroup
	live       sync.Map // *conn -> struct{}
	Broadcasts atomic.Int64
	Deliveries atomic.Int64
	Kicked     atomic.Int64
}

type room struct {
	mu      sync.RWMutex
	members map[*conn]string // conn -> join_ref
}

type conn struct {
	ws     *websocket.Conn
	send   chan []byte // whole frames
	once   sync.Once
	closed chan struct{}
}

// Options configure Start.
type Options struct {
	// Addr to listen on, e.g. 127.0.0.1:4700 (":0" picks a port).
	Addr string
	// QueueLen is the frames buffered per socket; default 1024 (the gateway's default).
	QueueLen int
	// Coalesce writes every frame a socket's writer finds queued with one
	// syscall; without it each frame is a write of its own.
	Coalesce bool
}

// Start listens and serves /socket/websocket.
func Start(o Options) (*Server, error) {
	if o.QueueLen <= 0 {
		o.QueueLen = 1024
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, err
	}
	s := &Server{
		queueLen: o.QueueLen,
		coalesce: o.Coalesce,
		ln:       ln,
		rooms:    make(map[string]*room),
		upgrader: websocket.Upgrader{
			ReadBufferSize:  1024,
			WriteBufferSize: 4096,
			WriteBufferPool: &sync.Pool{},
			CheckOrigin:     func(*http.Request) bool { return true },
		},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/socket/websocket", s.serveWS)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.http.Serve(ln) }()
	return s, nil
}

// Addr is the listening address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the socket endpoint for phx.Options.URL.
func (s *Server) URL() string { return "ws://" + s.Addr() + "/socket/websocket" }

// Close stops listening, closes every socket and waits for their goroutines.
func (s *Server) Close() error {
	err := s.http.Close()
	s.live.Range(func(k, _ any) bool {
		k.(*conn).close()
		return true
	})
	s.conns.Wait()
	return err
}

func (c *conn) close() {
	c.once.Do(func() {
		close(c.closed)
		_ = c.ws.Close()
	})
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if v := r.URL.Query().Get("vsn"); v != "2.0.0" {
		w.WriteHeader(http.StatusForbidden) // only V2 here
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &conn{ws: ws, send: make(chan []byte, s.queueLen), closed: make(chan struct{})}
	s.conns.Add(1)
	s.live.Store(c, struct{}{})
	go s.writeLoop(c)
	joined := map[string]bool{}
	defer func() {
		for t := range joined {
			s.leave(t, c)
		}
		c.close()
		s.live.Delete(c)
		s.conns.Done()
	}()
	var f phx.Frame
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		if err := phx.ParseFrame(data, &f); err != nil {
			c.sendClose(websocket.CloseInternalServerErr, "malformed frame")
			return
		}
		topic, event := string(f.Topic), string(f.Event)
		switch {
		case topic == "phoenix" && event == "heartbeat":
			c.reply(f.JoinRef, f.Ref, f.Topic, "ok", nil)
		case event == "phx_join":
			s.join(topic, c, string(f.Ref))
			joined[topic] = true
			c.reply(f.Ref, f.Ref, f.Topic, "ok", nil)
		case event == "phx_leave":
			s.leave(topic, c)
			delete(joined, topic)
			c.reply(f.JoinRef, f.Ref, f.Topic, "ok", nil)
		case !joined[topic]:
			c.reply(nil, f.Ref, f.Topic, "error", []byte(`{"reason":"unmatched topic"}`))
		case event == "new_msg":
			// Like roomsvc: no reply, a broadcast to the room (sender included).
			s.broadcast(topic, f.Payload)
		case event == "ping":
			c.reply(f.JoinRef, f.Ref, f.Topic, "ok", f.Payload)
		default:
			c.reply(f.JoinRef, f.Ref, f.Topic, "error", []byte(`{"reason":"unknown event"}`))
		}
	}
}

func (s *Server) join(topic string, c *conn, joinRef string) {
	s.mu.Lock()
	r := s.rooms[topic]
	if r == nil {
		r = &room{members: make(map[*conn]string)}
		s.rooms[topic] = r
	}
	r.mu.Lock()
	r.members[c] = joinRef
	r.mu.Unlock()
	s.mu.Unlock()
}

func (s *Server) leave(topic string, c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[topic]
	if r == nil {
		return
	}
	r.mu.Lock()
	delete(r.members, c)
	empty := len(r.members) == 0
	r.mu.Unlock()
	if empty {
		delete(s.rooms, topic)
	}
}

func (s *Server) broadcast(topic string, payload []byte) {
	s.mu.RLock()
	r := s.rooms[topic]
	s.mu.RUnlock()
	if r == nil {
		return
	}
	b := make([]byte, 0, len(topic)+len(payload)+50)
	b = append(b, `[null,null,`...)
	b = strconv.AppendQuote(b, topic)
	b = append(b, `,"new_msg",`...)
	b = append(b, payload...)
	b = append(b, ']')
	pm := textFrame(b)
	s.Broadcasts.Add(1)
	var slow []*conn
	n := 0
	r.mu.RLock()
	for m := range r.members {
		select {
		case m.send <- pm:
			n++
		default:
			slow = append(slow, m)
		}
	}
	r.mu.RUnlock()
	s.Deliveries.Add(int64(n))
	for _, m := range slow {
		s.Kicked.Add(1)
		m.sendClose(websocket.CloseTryAgainLater, "send queue full")
	}
}

func (c *conn) reply(joinRef, ref, topic []byte, status string, response []byte) {
	if response == nil {
		response = []byte("{}")
	}
	b := make([]byte, 0, 64+len(topic)+len(response))
	b = append(b, '[')
	b = appendRef(b, joinRef)
	b = append(b, ',')
	b = appendRef(b, ref)
	b = append(b, ',', '"')
	b = append(b, topic...)
	b = append(b, `","phx_reply",{"response":`...)
	b = append(b, response...)
	b = append(b, `,"status":"`...)
	b = append(b, status...)
	b = append(b, `"}]`...)
	pm := textFrame(b)
	select {
	case c.send <- pm:
	case <-c.closed:
	default:
		c.sendClose(websocket.CloseTryAgainLater, "send queue full")
	}
}

func appendRef(b, ref []byte) []byte {
	if ref == nil {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = append(b, ref...)
	return append(b, '"')
}

func (c *conn) sendClose(code int, text string) {
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
	c.close()
}

// textFrame frames b as one unmasked, final text frame.
func textFrame(b []byte) []byte {
	n := len(b)
	f := make([]byte, 0, n+10)
	f = append(f, 0x81)
	switch {
	case n <= 125:
		f = append(f, byte(n))
	case n <= 0xFFFF:
		f = append(f, 126, byte(n>>8), byte(n))
	default:
		f = append(f, 127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(f, b...)
}

// writeLoop writes frames straight to the connection: each Write holds
// whole frames, and gorilla's own control frames (close) are one Write
// too, so the two never interleave.
func (s *Server) writeLoop(c *conn) {
	nc := c.ws.NetConn()
	var buf []byte
	for {
		select {
		case f := <-c.send:
			buf = append(buf[:0], f...)
			if s.coalesce {
				// Let the broadcaster run first: woken by the first frame,
				// the writer would otherwise find no second one.
				runtime.Gosched()
			}
		more:
			for s.coalesce && len(buf) < 256<<10 {
				select {
				case f := <-c.send:
					buf = append(buf, f...)
				default:
					break more
				}
			}
			_ = nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := nc.Write(buf); err != nil {
				c.close()
				return
			}
			if cap(buf) > 64<<10 {
				buf = nil
			}
		case <-c.closed:
			return
		}
	}
}

// Serve runs the server until ctx ends.
func Serve(ctx context.Context, o Options, ready func(*Server)) error {
	s, err := Start(o)
	if err != nil {
		return err
	}
	if ready != nil {
		ready(s)
	}
	<-ctx.Done()
	if err := s.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

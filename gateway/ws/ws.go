// Package ws is the gateway's WebSocket transport (/socket/websocket):
// the upgrade, one conn per client with its send queue and named close
// states, the shared write pool that writes queued frames with
// non-blocking raw writes, and, on Linux, the epoll pollers that read
// idle sockets without a goroutine each. Frames are RFC 6455's, from
// package wsframe; what a message means is package session's.
//
// Everything a Server runs (write pool, pollers, buffers) is its own, so
// several gateways share nothing in one process.
package ws

import (
	"encoding/base64"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phxnats/phxnats/gateway/connect"
	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wsframe"
)

// WebSocket close codes the transport uses on its own; the drain and
// forced disconnects are session.Disconnect values. phoenix.js reconnects
// after any code but 1000, so every server-side close leads to a reconnect.
const (
	// CloseIdle: no frame in or out for IdleTimeout (Bandit uses 1002).
	CloseIdle = wsframe.CloseProtocolError
	// CloseMalformed: a frame could not be decoded (Bandit uses 1011).
	CloseMalformed = wsframe.CloseInternalError
	// CloseSlowConsumer: the socket's send queue filled up because the
	// client does not read fast enough. Its queued frames are dropped; the
	// client reconnects and rejoins.
	CloseSlowConsumer = wsframe.CloseTryAgainLater
	// CloseOverBudget: the socket's message not yet complete would take
	// the bytes held in unfinished messages over MaxUnfinishedBytes.
	CloseOverBudget = wsframe.CloseMessageTooBig
	// ClosePanic: handling the socket panicked; the socket is closed, the
	// gateway goes on.
	ClosePanic = wsframe.CloseInternalError
)

// authTokenPrefix is how phoenix.js's authToken option travels in
// Sec-WebSocket-Protocol: "base64url.bearer.phx." + base64 of the token.
const authTokenPrefix = "base64url.bearer.phx."

// Config is what the transport needs from the gateway.
type Config struct {
	connect.Deps
	// SendQueueLen is the most frames queued to one socket; a socket whose
	// queue is full is closed with CloseSlowConsumer.
	SendQueueLen int
	// SendQueueBytes bounds the bytes of the frames queued to one socket
	// and being written to it, alike (0: no bound). Frames shared between
	// sockets count in full for each.
	SendQueueBytes int
	// MaxUnfinishedBytes bounds the bytes all sockets hold of client
	// messages not yet complete (fragments so far, the start of a frame);
	// a socket that would take the total over it is closed with
	// CloseOverBudget (0: no bound). Each socket's share is bounded by
	// MaxFrameSize.
	MaxUnfinishedBytes int64
	// WriteTimeout bounds one batch of blocking writes to a socket.
	WriteTimeout time.Duration
	// IdleTimeout closes sockets that sent no complete message for this
	// long (pings, pongs and fragments do not count).
	IdleTimeout time.Duration
	// MaxFrameSize is the largest client message in bytes; a larger one
	// closes the socket with 1009.
	MaxFrameSize int64
	// GoroutineReaders reads every socket with a goroutine of its own, as
	// on systems without epoll, instead of the shared pollers.
	GoroutineReaders bool
}

// Server serves WebSocket clients. Create it with New.
type Server struct {
	cfg       Config
	upgrader  websocket.Upgrader
	writers   writePool
	pollers   pollers
	writeBufs sync.Pool
	// unfinished is the bytes held in client messages not yet complete.
	unfinished atomic.Int64
	// clock is how long the Server has run, by the monotonic clock: what
	// the idle timeout measures, so that a step of the wall clock (an NTP
	// correction, a VM resumed) closes no socket. Tests may replace it
	// before the first socket.
	clock func() time.Duration
}

// New creates a Server; its pollers and writers start with the first socket.
func New(cfg Config) *Server {
	start := time.Now() // with a monotonic reading, which time.Since uses
	s := &Server{cfg: cfg, clock: func() time.Duration { return time.Since(start) }}
	s.writeBufs.New = func() any { b := make([]byte, 0, 32<<10); return &b }
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		// Small buffers and a shared write pool keep idle sockets cheap.
		ReadBufferSize:  1024,
		WriteBufferSize: 4096,
		WriteBufferPool: &sync.Pool{},
		// Origins are checked before the upgrade, with Phoenix's rules.
		CheckOrigin: func(*http.Request) bool { return true },
		// Answer phoenix.js's authToken subprotocol offer.
		Subprotocols: []string{"phoenix"},
	}
	return s
}

// Close stops the write pool's workers and the pollers that no socket
// uses any more: call it once the sockets have ended (after the drain). A
// socket served after that gets goroutines of its own.
func (s *Server) Close() {
	s.writers.close()
	s.pollers.close()
}

// ServeHTTP upgrades a Phoenix socket (GET /socket/websocket).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The caps first: a flood is refused before it costs a token check.
	release, refused := s.cfg.Connect.Admit(s.cfg.Connect.ClientAddr(r))
	if refused != nil {
		w.WriteHeader(refused.Status)
		return
	}
	tok, hasTok := subprotocolToken(r)
	client, refused := s.cfg.Connect.Check(r, r.URL.Query(), tok, hasTok)
	if refused != nil {
		release()
		// Phoenix answers a refused socket with an empty body.
		w.WriteHeader(refused.Status)
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		release()
		// Upgrade has already answered with 400.
		s.cfg.Metrics.ConnectsRefused.WithLabelValues("upgrade").Inc()
		return
	}
	c := &conn{srv: s, ws: ws, ser: client.Ser, user: client.UserID, releaseSlot: release}
	c.raw = rawConn(ws.NetConn())
	c.rd = s.newPollState(c.raw)
	ws.SetPingHandler(c.onPing)
	ws.SetCloseHandler(c.onClose)
	c.touch()
	sess, ok := session.New(s.cfg.Session, c, client.UserID, connect.AddrKey(client.Addr))
	c.sess = sess
	ws.SetReadLimit(s.cfg.MaxFrameSize)
	if !ok {
		// Refused while the gateway drains, when its pollers may be
		// closing: a reader goroutine of its own ends the socket. Decided
		// before the close starts a writer, which reads c.rd.
		c.rd = nil
		c.Close(session.DisconnectShutdown)
	}
	s.cfg.Metrics.Connections.WithLabelValues("websocket").Inc()
	// The socket lives on in a poller or its own goroutine so that this
	// handler returns: net/http then frees the request and the
	// connection's buffers, about a third of an idle socket's memory
	// otherwise.
	if !c.startPolling() {
		go c.serve()
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

// Package longpoll is Phoenix's long-poll transport at /socket/longpoll, for phoenix.js's
// `transport: LongPoll` and its automatic fallback (longPollFallbackMs), with
// the semantics of Phoenix's lib/phoenix/transports/long_poll.ex and
// long_poll_server.ex:
//
//   - Every answer is HTTP 200 with a JSON body that carries the real status:
//     {"status":N} or {"messages":[...],"status":N,"token":T}. Only methods
//     other than GET, POST and OPTIONS get a real HTTP 400.
//   - GET without a session token opens a session: the user's token is
//     verified exactly as for the WebSocket ("token" param or the
//     X-Phoenix-AuthToken header), then {"status":410,"token":T,"messages":[]}.
//   - GET with a session token returns the buffered frames at once (200), or
//     waits up to the poll window for some, else answers 204.
//   - POST with a session token carries one text frame, or with content type
//     application/x-ndjson up to 100 frames, one a line (a line that is not
//     JSON is a base64 V2 binary frame). Answer {"status":200}.
//   - A session not polled for 1.5 windows is closed and leaves its rooms.
//
// Sessions live in this gateway's memory, as Phoenix's live in one node's
// process: behind several gateways, long-poll needs sticky routing (by the
// session token, or by client address) so that every request of a session
// reaches the gateway that holds it. A request that reaches another gateway
// finds no session and gets 410, which makes phoenix.js reconnect and rejoin.
//
// Deviations from Phoenix:
//   - The session token is an opaque random string (prefix sessionPrefix)
//     looked up in memory, not a signed Phoenix.Token.
//   - A GET with an unknown or expired session token answers {"status":410}
//     without opening a new session. phoenix.js reacts to either answer the
//     same way (close 3410 "session_gone", reconnect, rejoin); Phoenix would
//     open a session that the client then abandons.
//   - When authsvc cannot be asked, a new session gets {"status":500}, which
//     phoenix.js retries (the WebSocket gets HTTP 503 for the same reason);
//     Phoenix has no such case. A draining gateway also answers 500.
//   - A malformed POST (a frame that does not decode, bad base64, more than
//     100 lines) closes the session and answers {"status":400} at once, and
//     no frame of it is handled; Phoenix crashes the session process and
//     answers 408 after a window. A body over the size limit closes the
//     session with {"status":413} (the WebSocket closes with 1009).
//   - Empty ndjson lines are skipped, and lines starting with '{' (V1 frames)
//     are taken as text.
//   - Binary frames cannot be carried to the client: phoenix.js JSON-parses
//     every message of a poll. A binary reply, push or broadcast reaches a
//     long-poll client as a text frame with an error payload instead, the
//     way V1 sockets get them: a reply {"status":"error","response":
//     {"reason":R}}, a push or broadcast of the same event with {"error":R}
//     (R = BinaryUnsupported; session.TextOnly). Phoenix has no answer here (its
//     long-poll server cannot encode them). Binary pushes from the client
//     (base64 ndjson lines) are supported.
package longpoll

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phxnats/phxnats/gateway/connect"
	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wire"
)

const (
	// DefaultWindow is how long a poll waits for messages (Phoenix's window_ms).
	DefaultWindow = 10 * time.Second
	// maxBatch is the most frames in one ndjson POST (Phoenix's @max_poll_batch_size).
	maxBatch = 100
	// batchBodyFactor bounds an ndjson POST to this many MaxFrameSize: room
	// for a full batch of ordinary frames and a few large ones, while memory
	// per request stays a small multiple of a WebSocket frame's (and a
	// session reads one POST at a time).
	batchBodyFactor = 4
	// writeSlack is how long a poll may take to write its answer, past
	// its window.
	writeSlack = 10 * time.Second
	// sessionPrefix starts every session token, which tells it apart from
	// the user's token in the "token" query parameter (phoenix.js 1.8.16
	// appends the session token as a second "token" parameter).
	sessionPrefix = "lp."
	// Headers of phoenix.js: newer versions send the session token in
	// tokenHeader; the authToken option travels in authTokenHeader.
	tokenHeader     = "X-Phoenix-Longpoll-Token"
	authTokenHeader = "X-Phoenix-AuthToken"
)

// BinaryUnsupported is the error long-poll clients get in place of
// binary data.
const BinaryUnsupported = "binary payloads are not supported over long-poll"

// Config is what the transport needs from the gateway.
type Config struct {
	connect.Deps
	// SendQueueLen is the most frames buffered for a poll, and
	// SendQueueBytes the most bytes (Off: no bound); a session with more is
	// closed as a slow consumer.
	SendQueueLen   int
	SendQueueBytes int
	// MaxFrameSize is the largest client frame in bytes.
	MaxFrameSize int64
	// Window is how long a GET waits for messages; default DefaultWindow.
	Window time.Duration
	// MaxSessions bounds the open sessions, MaxPerAddr those opened from
	// one client address; a new session over either gets {"status":500}
	// (phoenix.js retries). Zero or less: no bound.
	MaxSessions int
	MaxPerAddr  int
}

// Server serves long-poll clients and holds their sessions. Create it
// with New.
type Server struct {
	cfg    Config
	textV2 wire.Serializer // V2 without binary frames: session.TextOnly
	window atomic.Int64    // poll window in ns; 0 means DefaultWindow
	hooked sync.Map        // *http.Server -> struct{}: servers whose Shutdown drains long-poll

	mu       sync.Mutex
	sessions map[string]*lpSession // by session token
	perAddr  map[string]int        // open sessions by client address
	total    int                   // open sessions, counted from reserve
	draining bool
}

// New creates a Server.
func New(cfg Config) *Server {
	s := &Server{cfg: cfg, textV2: session.TextOnly(wire.V2, BinaryUnsupported), sessions: make(map[string]*lpSession), perAddr: make(map[string]int)}
	s.SetWindow(cfg.Window)
	return s
}

// SetWindow sets how long a GET waits for messages (default DefaultWindow,
// Phoenix's window_ms). A session that is not polled for 1.5 windows is
// closed. Sessions opened earlier keep the expiry they were opened with.
func (s *Server) SetWindow(d time.Duration) {
	if d < 0 {
		d = 0
	}
	s.window.Store(int64(d))
}

func (s *Server) windowLen() time.Duration {
	if d := time.Duration(s.window.Load()); d > 0 {
		return d
	}
	return DefaultWindow
}

// Sessions returns the number of open sessions.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Drain closes every session and refuses new ones: pending polls get the
// frames already buffered (or 410), and the client's next request finds no
// session (410) or no server, so phoenix.js reconnects, to another gateway
// behind the load balancer. The gateway's drain (registry.Drain) closes
// them as well; Drain is for an http.Server shutting down on its own.
func (s *Server) Drain() {
	s.mu.Lock()
	s.draining = true
	all := make([]*lpSession, 0, len(s.sessions))
	for _, ls := range s.sessions {
		all = append(all, ls)
	}
	s.mu.Unlock()
	for _, ls := range all {
		ls.close(true)
	}
}

// hookServer makes the http.Server that serves long-poll drain it as soon
// as its Shutdown starts. Shutdown waits for active requests, and a pending
// poll would otherwise hold it for up to a window.
func (s *Server) hookServer(r *http.Request) {
	srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server)
	if !ok {
		return
	}
	if _, loaded := s.hooked.LoadOrStore(srv, struct{}{}); !loaded {
		srv.RegisterOnShutdown(s.Drain)
	}
}

// ServeHTTP answers GET, POST and OPTIONS on /socket/longpoll.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.hookServer(r)
	w.Header().Set("Access-Control-Allow-Origin", "*")
	if !s.cfg.Connect.OriginAllowed(r) {
		// Phoenix checks the origin of every long-poll request, preflights included.
		s.cfg.Metrics.ConnectsRefused.WithLabelValues("origin").Inc()
		writeStatus(w, http.StatusForbidden)
		return
	}
	switch r.Method {
	case http.MethodOptions:
		// CORS preflight: the Origin header is checked on the real request.
		h := w.Header()
		h.Set("Access-Control-Allow-Headers", strings.Join(r.Header.Values("Access-Control-Request-Headers"), ", "))
		h.Set("Access-Control-Allow-Methods", "get, post, options")
		h.Set("Access-Control-Max-Age", "3600")
		w.WriteHeader(http.StatusOK)
	case http.MethodGet:
		query := r.URL.Query()
		if tok, ok := sessionToken(r, query); ok {
			ls := s.lookup(tok)
			if ls == nil {
				writeStatus(w, http.StatusGone)
				return
			}
			s.poll(w, r, ls)
			return
		}
		s.open(w, r, query)
	case http.MethodPost:
		var ls *lpSession
		if tok, ok := sessionToken(r, r.URL.Query()); ok {
			ls = s.lookup(tok)
		}
		if ls == nil {
			writeStatus(w, http.StatusGone)
			return
		}
		s.publish(w, r, ls)
	default:
		w.WriteHeader(http.StatusBadRequest)
	}
}

// sessionToken finds the session token: the X-Phoenix-Longpoll-Token
// header (newer phoenix.js), else the last "token" query parameter when it
// is a session token. phoenix.js 1.8.16 appends the session token as a
// second "token" parameter after the socket's own params, whose "token" is
// the user's.
func sessionToken(r *http.Request, query url.Values) (string, bool) {
	if t := r.Header.Get(tokenHeader); t != "" {
		return t, true
	}
	if ts := query["token"]; len(ts) > 0 && strings.HasPrefix(ts[len(ts)-1], sessionPrefix) {
		return ts[len(ts)-1], true
	}
	return "", false
}

func (s *Server) lookup(token string) *lpSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[token]
}

// open authenticates a new client like the WebSocket upgrade does and
// opens its session.
func (s *Server) open(w http.ResponseWriter, r *http.Request, query url.Values) {
	authTok := r.Header.Get(authTokenHeader)
	client, refused := s.cfg.Connect.Check(r, query, authTok, authTok != "")
	if refused != nil {
		if refused.Status == http.StatusForbidden {
			writeStatus(w, http.StatusForbidden)
		} else {
			// authsvc unavailable: 500 makes phoenix.js retry (403 would not).
			writeStatus(w, http.StatusInternalServerError)
		}
		return
	}
	token, err := newToken()
	if err != nil {
		s.cfg.Logger.Error("long-poll session token", "err", err)
		writeStatus(w, http.StatusInternalServerError)
		return
	}
	addr := connect.AddrKey(client.Addr)
	ls := &lpSession{srv: s, token: token, ser: client.Ser, addr: addr, expiry: s.windowLen() * 3 / 2, post: make(chan struct{}, 1)}
	if ls.ser == wire.V2 {
		ls.ser = s.textV2
	}
	if !s.reserve(addr) {
		s.cfg.Metrics.ConnectsRefused.WithLabelValues("longpoll_sessions").Inc()
		s.cfg.Logger.Info("long-poll session refused: too many sessions", "addr", addr)
		writeStatus(w, http.StatusInternalServerError)
		return
	}
	sess, ok := session.New(s.cfg.Session, ls, client.UserID, addr)
	ls.sess = sess
	s.mu.Lock()
	if !ok || s.draining || ls.isClosed() { // closed: a drain or cut-off got it first
		s.releaseLocked(addr)
		s.mu.Unlock()
		sess.End()
		// phoenix.js retries 500, and reaches another gateway.
		writeStatus(w, http.StatusInternalServerError)
		return
	}
	s.sessions[token] = ls
	s.mu.Unlock()
	s.cfg.Metrics.Connections.WithLabelValues("longpoll").Inc()

	ls.mu.Lock()
	ls.lastPoll = time.Now()
	ls.timer = time.AfterFunc(ls.expiry, ls.checkIdle)
	ls.mu.Unlock()
	writeMessages(w, http.StatusGone, token, nil)
}

// reserve counts a session about to open from addr, or reports false
// when the bounds (Config.MaxSessions, MaxPerAddr) are reached. A session
// counts from here until finish forgets it.
func (s *Server) reserve(addr string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if (s.cfg.MaxSessions > 0 && s.total >= s.cfg.MaxSessions) || (s.cfg.MaxPerAddr > 0 && s.perAddr[addr] >= s.cfg.MaxPerAddr) {
		return false
	}
	s.perAddr[addr]++
	s.total++
	return true
}

// releaseLocked uncounts a session of addr; s.mu is held.
func (s *Server) releaseLocked(addr string) {
	s.total--
	if s.perAddr[addr]--; s.perAddr[addr] <= 0 {
		delete(s.perAddr, addr)
	}
}

// poll answers a GET: the buffered frames at once, or those that arrive
// within the window, or 204. Concurrent polls of one session each wait; the
// first to find frames takes them all.
func (s *Server) poll(w http.ResponseWriter, r *http.Request, ls *lpSession) {
	// The server's timeouts are shorter than a window may be: this
	// request may take the window and the time to write its answer.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.windowLen() + writeSlack))
	_ = rc.SetWriteDeadline(time.Now().Add(s.windowLen() + writeSlack))
	ls.mu.Lock()
	ls.polls++
	ls.lastPoll = time.Now()
	ls.mu.Unlock()
	defer func() {
		ls.mu.Lock()
		ls.polls--
		ls.lastPoll = time.Now()
		ls.mu.Unlock()
	}()
	timer := time.NewTimer(s.windowLen())
	defer timer.Stop()
	for {
		ls.mu.Lock()
		if len(ls.buf) > 0 {
			msgs := ls.buf
			ls.buf, ls.bufBytes = nil, 0
			ls.mu.Unlock()
			writeMessages(w, http.StatusOK, ls.token, msgs)
			return
		}
		if ls.closed {
			ls.mu.Unlock()
			writeStatus(w, http.StatusGone)
			return
		}
		if ls.wake == nil {
			ls.wake = make(chan struct{})
		}
		wake := ls.wake
		ls.mu.Unlock()
		select {
		case <-wake:
		case <-timer.C:
			writeMessages(w, http.StatusNoContent, ls.token, nil)
			return
		case <-r.Context().Done():
			return // the client is gone; the frames wait for its next poll
		}
	}
}

// publish answers a POST: it decodes every frame of the body first, then
// hands them to the session in order. A session's POSTs are taken one at
// a time, as Phoenix's long-poll server takes them in its process: a
// second waits, without reading its body, until the first is done (or
// its client gives up). phoenix.js before 1.8 sends each message in a
// POST of its own, concurrently, so refusing the second would make it
// reconnect. Handing frames to the session does not wait on services
// (session.HandleMessage), so a POST holds the turn only while its body
// arrives, which the HTTP server's read timeout bounds.
func (s *Server) publish(w http.ResponseWriter, r *http.Request, ls *lpSession) {
	select {
	case ls.post <- struct{}{}:
		defer func() { <-ls.post }()
	case <-r.Context().Done():
		return
	}
	ndjson := false
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil && mt == "application/x-ndjson" {
		ndjson = true
	}
	limit := s.cfg.MaxFrameSize
	if ndjson {
		limit *= batchBodyFactor
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.cfg.Logger.Info("long-poll body over the size limit, closing session", "limit", limit, "user", ls.sess.UserID())
			ls.close(false)
			writeStatus(w, http.StatusRequestEntityTooLarge)
			return
		}
		writeStatus(w, http.StatusBadRequest) // the client went away mid-body
		return
	}
	msgs, status, err := decodeBody(ls.ser, body, ndjson, s.cfg.MaxFrameSize)
	if err != nil {
		s.cfg.Metrics.MalformedFrames.Inc()
		s.cfg.Logger.Info("malformed long-poll request, closing session", "err", err, "size", len(body), "user", ls.sess.UserID())
		ls.close(false)
		writeStatus(w, status)
		return
	}
	for _, m := range msgs {
		if ls.isClosed() {
			break
		}
		ls.sess.HandleMessage(m)
	}
	if ls.isClosed() {
		writeStatus(w, http.StatusGone)
		return
	}
	writeStatus(w, http.StatusOK)
}

package gateway

// Phoenix's long-poll transport at /socket/longpoll, for phoenix.js's
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
//   - The session token is an opaque random string (prefix lpSessionPrefix)
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
//     (R = LongPollBinaryUnsupported). Phoenix has no answer here (its
//     long-poll server cannot encode them). Binary pushes from the client
//     (base64 ndjson lines) are supported.

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phxnats/phxnats/gateway/fanout"
	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
)

const (
	// DefaultLongPollWindow is how long a poll waits for messages (Phoenix's window_ms).
	DefaultLongPollWindow = 10 * time.Second
	// lpMaxBatch is the most frames in one ndjson POST (Phoenix's @max_poll_batch_size).
	lpMaxBatch = 100
	// lpBatchBodyFactor bounds an ndjson POST to this many MaxFrameSize: room
	// for a full batch of ordinary frames and a few large ones, while memory
	// per request stays a small multiple of a WebSocket frame's.
	lpBatchBodyFactor = 4
	// lpSessionPrefix starts every session token, which tells it apart from
	// the user's token in the "token" query parameter (phoenix.js 1.8.16
	// appends the session token as a second "token" parameter).
	lpSessionPrefix = "lp."
	// Headers of phoenix.js: newer versions send the session token in
	// lpTokenHeader; the authToken option travels in lpAuthTokenHeader.
	lpTokenHeader     = "X-Phoenix-Longpoll-Token"
	lpAuthTokenHeader = "X-Phoenix-AuthToken"
)

// LongPollBinaryUnsupported is the error long-poll clients get in place of
// binary data.
const LongPollBinaryUnsupported = "binary payloads are not supported over long-poll"

// longPolls is the gateway's table of long-poll sessions. Its zero value is ready.
type longPolls struct {
	window atomic.Int64 // poll window in ns; 0 means DefaultLongPollWindow
	hooked sync.Map     // *http.Server -> struct{}: servers whose Shutdown drains long-poll

	mu       sync.Mutex
	sessions map[string]*lpSession
	users    map[string]map[*lpSession]struct{} // sessions by user id, for forced disconnects and kicks
	draining bool
}

// SetLongPollWindow sets how long a long-poll GET waits for messages
// (default DefaultLongPollWindow, Phoenix's window_ms). A session that is
// not polled for 1.5 windows is closed. Sessions opened earlier keep the
// expiry they were opened with.
func (g *Gateway) SetLongPollWindow(d time.Duration) {
	if d < 0 {
		d = 0
	}
	g.lp.window.Store(int64(d))
}

func (g *Gateway) lpWindow() time.Duration {
	if d := time.Duration(g.lp.window.Load()); d > 0 {
		return d
	}
	return DefaultLongPollWindow
}

// LongPollSessions returns the number of open long-poll sessions.
func (g *Gateway) LongPollSessions() int {
	g.lp.mu.Lock()
	defer g.lp.mu.Unlock()
	return len(g.lp.sessions)
}

// lpSession is one long-poll client: a protocol session plus the frames
// buffered for its next poll.
type lpSession struct {
	g      *Gateway
	token  string
	ser    wire.Serializer
	sess   *session.Session
	expiry time.Duration

	// post serializes the POSTs of the session: HandleMessage must not run
	// concurrently for one session.
	post sync.Mutex

	mu           sync.Mutex
	buf          [][]byte      // encoded text frames, oldest first; shared, never modified
	wake         chan struct{} // closed when buf gains a frame or the session closes; nil when nobody waits
	polls        int           // GETs in progress
	lastPoll     time.Time     // start or end of the latest GET
	closed       bool
	warnedBinary bool
	timer        *time.Timer // expiry check
}

// Serializer implements fanout.Subscriber.
func (ls *lpSession) Serializer() wire.Serializer { return ls.ser }

// Skips implements fanout.Subscriber.
func (ls *lpSession) Skips(from string, excludeFrom, ignore bool) bool {
	return ls.sess.Skips(from, excludeFrom, ignore)
}

// RoomLost implements fanout.Subscriber.
func (ls *lpSession) RoomLost(topic string) { ls.sess.ChannelError(topic) }

// Deliver implements fanout.Subscriber. It never blocks: when SendQueueLen
// frames wait for a poll the session is closed as a slow consumer, and its
// next poll gets 410, which makes phoenix.js reconnect and rejoin.
func (ls *lpSession) Deliver(f fanout.Frame) {
	ls.mu.Lock()
	if ls.closed {
		ls.mu.Unlock()
		return
	}
	data := f.Data
	if f.Binary {
		var ok bool
		if data, ok = lpTextOfBinary(ls.ser, f.Data); !ok {
			warn := !ls.warnedBinary
			ls.warnedBinary = true
			ls.mu.Unlock()
			if warn {
				ls.g.log.Warn("undecodable binary frame dropped", "user", ls.sess.UserID(), "transport", "longpoll")
			}
			return
		}
	}
	if len(ls.buf) >= ls.g.opts.SendQueueLen {
		ls.closeLocked(false)
		ls.mu.Unlock()
		ls.g.metrics.SlowDisconnects.Inc()
		ls.g.log.Warn("slow consumer disconnected", "user", ls.sess.UserID(), "queue", ls.g.opts.SendQueueLen, "transport", "longpoll")
		// Deliver may run under the room's lock (fan-out), and leaving
		// rooms takes it: finish elsewhere.
		go ls.finish()
		return
	}
	ls.buf = append(ls.buf, data)
	if ls.wake != nil {
		close(ls.wake)
		ls.wake = nil
	}
	ls.mu.Unlock()
}

// closeLocked marks the session closed and wakes its pending polls; it
// reports whether it did (the caller must then call finish). keepBuffered
// leaves the buffered frames to the pending polls. ls.mu must be held.
func (ls *lpSession) closeLocked(keepBuffered bool) bool {
	if ls.closed {
		return false
	}
	ls.closed = true
	if !keepBuffered {
		ls.buf = nil
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

// finish forgets a closed session and leaves its rooms.
func (ls *lpSession) finish() {
	g := ls.g
	g.lp.mu.Lock()
	if g.lp.sessions[ls.token] == ls {
		delete(g.lp.sessions, ls.token)
	}
	if set := g.lp.users[ls.sess.UserID()]; set != nil {
		delete(set, ls)
		if len(set) == 0 {
			delete(g.lp.users, ls.sess.UserID())
		}
	}
	g.lp.mu.Unlock()
	ls.sess.Close()
	g.metrics.Connections.WithLabelValues("longpoll").Dec()
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
			ls.g.log.Debug("long-poll session expired", "user", ls.sess.UserID())
			ls.finish()
			return
		}
		next -= idle
	}
	ls.timer.Reset(next)
	ls.mu.Unlock()
}

// drainLongPoll closes every long-poll session and refuses new ones: pending
// polls get the frames already buffered (or 410), and the client's next
// request finds no session (410) or no server, so phoenix.js reconnects,
// to another gateway behind the load balancer.
func (g *Gateway) drainLongPoll() {
	g.lp.mu.Lock()
	g.lp.draining = true
	all := make([]*lpSession, 0, len(g.lp.sessions))
	for _, ls := range g.lp.sessions {
		all = append(all, ls)
	}
	g.lp.mu.Unlock()
	for _, ls := range all {
		ls.close(true)
	}
}

// lpUserSessions returns the long-poll sessions of a user.
func (g *Gateway) lpUserSessions(user string) []*lpSession {
	g.lp.mu.Lock()
	defer g.lp.mu.Unlock()
	out := make([]*lpSession, 0, len(g.lp.users[user]))
	for ls := range g.lp.users[user] {
		out = append(out, ls)
	}
	return out
}

// disconnectLongPoll closes the long-poll sessions of user, as
// handleDisconnect closes its WebSockets, and returns how many it closed.
// Pending polls get the frames already buffered (or 410), then the client
// finds its session gone and reconnects, as after the WebSocket's 1001.
func (g *Gateway) disconnectLongPoll(user string) int {
	all := g.lpUserSessions(user)
	for _, ls := range all {
		ls.close(true)
	}
	return len(all)
}

// kickLongPoll removes user's long-poll sessions from topic with a
// phx_close, as handleKick does for WebSockets, and returns how many were
// joined.
func (g *Gateway) kickLongPoll(user, topic string) int {
	n := 0
	for _, ls := range g.lpUserSessions(user) {
		if ls.sess.Kick(topic) {
			n++
		}
	}
	return n
}

// lpHookServer makes the http.Server that serves long-poll drain it as soon
// as its Shutdown starts. Shutdown waits for active requests, and a pending
// poll would otherwise hold it for up to a window.
func (g *Gateway) lpHookServer(r *http.Request) {
	srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server)
	if !ok {
		return
	}
	if _, loaded := g.lp.hooked.LoadOrStore(srv, struct{}{}); !loaded {
		srv.RegisterOnShutdown(g.drainLongPoll)
	}
}

func (g *Gateway) serveLongPoll(w http.ResponseWriter, r *http.Request) {
	g.lpHookServer(r)
	w.Header().Set("Access-Control-Allow-Origin", "*")
	if !g.originAllowed(r) {
		// Phoenix checks the origin of every long-poll request, preflights included.
		g.metrics.ConnectsRefused.WithLabelValues("origin").Inc()
		lpStatus(w, http.StatusForbidden)
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
		if tok, ok := lpSessionToken(r, query); ok {
			ls := g.lpLookup(tok)
			if ls == nil {
				lpStatus(w, http.StatusGone)
				return
			}
			g.lpPoll(w, r, ls)
			return
		}
		g.lpOpen(w, r, query)
	case http.MethodPost:
		var ls *lpSession
		if tok, ok := lpSessionToken(r, r.URL.Query()); ok {
			ls = g.lpLookup(tok)
		}
		if ls == nil {
			lpStatus(w, http.StatusGone)
			return
		}
		g.lpPublish(w, r, ls)
	default:
		w.WriteHeader(http.StatusBadRequest)
	}
}

// lpSessionToken finds the session token: the X-Phoenix-Longpoll-Token
// header (newer phoenix.js), else the last "token" query parameter when it
// is a session token. phoenix.js 1.8.16 appends the session token as a
// second "token" parameter after the socket's own params, whose "token" is
// the user's.
func lpSessionToken(r *http.Request, query url.Values) (string, bool) {
	if t := r.Header.Get(lpTokenHeader); t != "" {
		return t, true
	}
	if ts := query["token"]; len(ts) > 0 && strings.HasPrefix(ts[len(ts)-1], lpSessionPrefix) {
		return ts[len(ts)-1], true
	}
	return "", false
}

func (g *Gateway) lpLookup(token string) *lpSession {
	g.lp.mu.Lock()
	defer g.lp.mu.Unlock()
	return g.lp.sessions[token]
}

// lpOpen authenticates a new client like the WebSocket upgrade does and
// opens its session.
func (g *Gateway) lpOpen(w http.ResponseWriter, r *http.Request, query url.Values) {
	ser := wire.V1
	if vsn, ok := query["vsn"]; ok {
		// Phoenix refuses an explicit empty vsn; only a missing one means V1.
		s, err := wire.ForVsn(vsn[0])
		if err != nil || vsn[0] == "" {
			g.metrics.ConnectsRefused.WithLabelValues("vsn").Inc()
			lpStatus(w, http.StatusForbidden)
			return
		}
		ser = s
	}
	tok, hasToken := "", false
	if t := query["token"]; len(t) > 0 {
		tok, hasToken = t[0], true
	}
	if t := r.Header.Get(lpAuthTokenHeader); t != "" {
		tok, hasToken = t, true
	}
	userID, status := g.authenticate(tok, hasToken)
	if status != 0 {
		g.metrics.ConnectsRefused.WithLabelValues("auth").Inc()
		if status == http.StatusForbidden {
			lpStatus(w, http.StatusForbidden)
		} else {
			// authsvc unavailable: 500 makes phoenix.js retry (403 would not).
			lpStatus(w, http.StatusInternalServerError)
		}
		return
	}
	token, err := newLPToken()
	if err != nil {
		g.log.Error("long-poll session token", "err", err)
		lpStatus(w, http.StatusInternalServerError)
		return
	}
	window := g.lpWindow()
	ls := &lpSession{g: g, token: token, ser: ser, expiry: window * 3 / 2}
	ls.sess = session.New(&g.sessionCfg, ls, userID, g.nextConnID())

	g.lp.mu.Lock()
	if g.lp.draining {
		g.lp.mu.Unlock()
		// phoenix.js retries 500, and reaches another gateway.
		lpStatus(w, http.StatusInternalServerError)
		return
	}
	if g.lp.sessions == nil {
		g.lp.sessions = make(map[string]*lpSession)
	}
	g.lp.sessions[token] = ls
	if userID != "" {
		if g.lp.users == nil {
			g.lp.users = make(map[string]map[*lpSession]struct{})
		}
		if g.lp.users[userID] == nil {
			g.lp.users[userID] = make(map[*lpSession]struct{})
		}
		g.lp.users[userID][ls] = struct{}{}
	}
	g.lp.mu.Unlock()
	g.metrics.Connections.WithLabelValues("longpoll").Inc()

	ls.mu.Lock()
	ls.lastPoll = time.Now()
	ls.timer = time.AfterFunc(ls.expiry, ls.checkIdle)
	ls.mu.Unlock()
	lpMessages(w, http.StatusGone, token, nil)
}

// lpPoll answers a GET: the buffered frames at once, or those that arrive
// within the window, or 204. Concurrent polls of one session each wait; the
// first to find frames takes them all.
func (g *Gateway) lpPoll(w http.ResponseWriter, r *http.Request, ls *lpSession) {
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
	timer := time.NewTimer(g.lpWindow())
	defer timer.Stop()
	for {
		ls.mu.Lock()
		if len(ls.buf) > 0 {
			msgs := ls.buf
			ls.buf = nil
			ls.mu.Unlock()
			lpMessages(w, http.StatusOK, ls.token, msgs)
			return
		}
		if ls.closed {
			ls.mu.Unlock()
			lpStatus(w, http.StatusGone)
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
			lpMessages(w, http.StatusNoContent, ls.token, nil)
			return
		case <-r.Context().Done():
			return // the client is gone; the frames wait for its next poll
		}
	}
}

// lpPublish answers a POST: it decodes every frame of the body first, then
// hands them to the session in order.
func (g *Gateway) lpPublish(w http.ResponseWriter, r *http.Request, ls *lpSession) {
	ndjson := false
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil && mt == "application/x-ndjson" {
		ndjson = true
	}
	limit := g.opts.MaxFrameSize
	if ndjson {
		limit *= lpBatchBodyFactor
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			g.log.Info("long-poll body over the size limit, closing session", "limit", limit, "user", ls.sess.UserID())
			ls.close(false)
			lpStatus(w, http.StatusRequestEntityTooLarge)
			return
		}
		lpStatus(w, http.StatusBadRequest) // the client went away mid-body
		return
	}
	msgs, status, err := lpDecode(ls.ser, body, ndjson, g.opts.MaxFrameSize)
	if err != nil {
		g.metrics.MalformedFrames.Inc()
		g.log.Info("malformed long-poll request, closing session", "err", err, "size", len(body), "user", ls.sess.UserID())
		ls.close(false)
		lpStatus(w, status)
		return
	}
	ls.post.Lock()
	for _, m := range msgs {
		if ls.isClosed() {
			break
		}
		ls.sess.HandleMessage(m)
	}
	ls.post.Unlock()
	if ls.isClosed() {
		lpStatus(w, http.StatusGone)
		return
	}
	lpStatus(w, http.StatusOK)
}

var (
	errLPBatch     = errors.New("more than 100 frames in one long-poll batch")
	errLPFrameSize = errors.New("frame over the size limit")
)

// lpDecode splits a POST body into frames and decodes them; on error it
// also returns the status to answer with.
func lpDecode(ser wire.Serializer, body []byte, ndjson bool, maxFrame int64) ([]wire.Message, int, error) {
	if !ndjson {
		m, err := ser.Decode(body, false)
		if err != nil {
			return nil, http.StatusBadRequest, err
		}
		return []wire.Message{m}, 0, nil
	}
	var msgs []wire.Message
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			continue
		}
		if len(msgs) == lpMaxBatch {
			return nil, http.StatusBadRequest, errLPBatch
		}
		var m wire.Message
		var err error
		if line[0] == '[' || line[0] == '{' {
			if int64(len(line)) > maxFrame {
				return nil, http.StatusRequestEntityTooLarge, errLPFrameSize
			}
			m, err = ser.Decode(line, false)
		} else {
			// phoenix.js sends binary frames as standard base64.
			if int64(base64.StdEncoding.DecodedLen(len(line))) > maxFrame+2 {
				return nil, http.StatusRequestEntityTooLarge, errLPFrameSize
			}
			data := make([]byte, base64.StdEncoding.DecodedLen(len(line)))
			n, derr := base64.StdEncoding.Decode(data, line)
			if derr != nil {
				return nil, http.StatusBadRequest, errors.Join(wire.ErrMalformed, derr)
			}
			if int64(n) > maxFrame {
				return nil, http.StatusRequestEntityTooLarge, errLPFrameSize
			}
			m, err = ser.Decode(data[:n], true)
		}
		if err != nil {
			return nil, http.StatusBadRequest, err
		}
		msgs = append(msgs, m)
	}
	if len(msgs) == 0 {
		return nil, http.StatusBadRequest, errors.Join(wire.ErrMalformed, errors.New("empty long-poll batch"))
	}
	return msgs, 0, nil
}

// newLPToken returns an unguessable session token.
func newLPToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return lpSessionPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// lpStatus answers {"status":N}, in an HTTP 200 as Phoenix does.
func lpStatus(w http.ResponseWriter, status int) {
	lpWrite(w, strconv.AppendInt([]byte(`{"status":`), int64(status), 10), '}')
}

// lpMessages answers {"messages":[...],"status":N,"token":T}, with each
// message the text of one frame as a JSON string, keys in Phoenix's order.
func lpMessages(w http.ResponseWriter, status int, token string, msgs [][]byte) {
	size := 64 + len(token)
	for _, m := range msgs {
		size += len(m) + len(m)/8 + 3
	}
	b := make([]byte, 0, size)
	b = append(b, `{"messages":[`...)
	for i, m := range msgs {
		if i > 0 {
			b = append(b, ',')
		}
		b = wire.AppendJSONString(b, string(m))
	}
	b = append(b, `],"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"token":`...)
	b = wire.AppendJSONString(b, token)
	lpWrite(w, b, '}')
}

func lpWrite(w http.ResponseWriter, body []byte, last byte) {
	body = append(body, last)
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// lpTextOfBinary turns a V2 binary server frame (reply, push or broadcast,
// v2_json_serializer.ex) into the text frame a long-poll client can take: the
// same message with an error in place of the bytes.
func lpTextOfBinary(ser wire.Serializer, f []byte) ([]byte, bool) {
	// fields reads n one-byte lengths after the kind byte, then the fields.
	fields := func(n int) ([]string, bool) {
		if len(f) < 1+n {
			return nil, false
		}
		out := make([]string, n)
		off := 1 + n
		for i := range n {
			l := int(f[1+i])
			if off+l > len(f) {
				return nil, false
			}
			out[i] = string(f[off : off+l])
			off += l
		}
		return out, true
	}
	var data []byte
	var err error
	switch {
	case len(f) == 0:
		return nil, false
	case f[0] == 1: // reply: join_ref, ref, topic, status
		v, ok := fields(4)
		if !ok {
			return nil, false
		}
		data, _, err = ser.AppendReply(nil, v[0], v[1], v[2], proto.StatusError, lpBinaryReason, false)
	case f[0] == 0: // push: join_ref, topic, event
		v, ok := fields(3)
		if !ok {
			return nil, false
		}
		data, _, err = ser.AppendPush(nil, v[0], v[1], v[2], lpBinaryError, false)
	case f[0] == 2: // broadcast: topic, event
		v, ok := fields(2)
		if !ok {
			return nil, false
		}
		data, _, err = ser.AppendBroadcast(nil, v[0], v[1], lpBinaryError, false)
	default:
		return nil, false
	}
	return data, err == nil
}

var (
	lpBinaryReason = []byte(proto.Reason(LongPollBinaryUnsupported))
	lpBinaryError  = func() []byte {
		b, _ := proto.Marshal(map[string]string{"error": LongPollBinaryUnsupported})
		return b
	}()
)

// Package gateway is the Phoenix-protocol edge of the system: it accepts
// phoenix.js sockets over WebSocket, verifies their tokens with authsvc,
// routes joins and pushes to services over NATS, and fans room broadcasts
// out to local sockets.
//
// The wire format is in package wire, the per-socket protocol in package
// session and the room fan-out in package fanout; this package is the HTTP
// side: transports, the development login, health, metrics and the page.
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/gateway/fanout"
	"github.com/phxnats/phxnats/gateway/metrics"
	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/proto"
)

// Options configure a Gateway. Zero values take the defaults documented on
// each field.
type Options struct {
	// Conn is the NATS connection; required.
	Conn *nats.Conn
	// Name identifies this gateway in logs and service requests; default the host name.
	Name string
	// Routes map topics to services; default rooms:* -> rooms.
	Routes []session.Route
	// AllowAnonymous lets sockets connect without a token param. A token
	// that is present but invalid is always refused with 403.
	AllowAnonymous bool
	// RequestTimeout bounds each request to authsvc or a service; default 5s.
	RequestTimeout time.Duration
	// SendQueueLen is the most frames queued to one socket; when a socket's
	// queue is full it is closed with CloseSlowConsumer. Default 1024.
	SendQueueLen int
	// WriteTimeout bounds one batch of writes to a socket; default 10s.
	WriteTimeout time.Duration
	// IdleTimeout closes sockets with no traffic either way; default 60s (Phoenix's).
	IdleTimeout time.Duration
	// MaxFrameSize is the largest client frame in bytes; larger ones close
	// the socket with 1009. Default 1 MiB.
	MaxFrameSize int64
	// RoomHeartbeat is how often the gateway's room stream consumer
	// proves it is alive while the rooms are quiet; one silent for two
	// heartbeats (its NATS node died) is recreated where it stopped.
	// Default 2s.
	RoomHeartbeat time.Duration
	// RoomLinger keeps the room stream consumer running this long after
	// the gateway's last socket left its rooms, so that sockets rejoining
	// soon (phoenix.js after a network blip) find it running. Default 30s;
	// negative: stop with the last leave.
	RoomLinger time.Duration
	// MaxChannels bounds the topics one socket joins; default 100 (Phoenix's).
	MaxChannels int
	// RateLimit is the most frames per second one socket may send, with
	// bursts of RateBurst (default RateLimit); frames over it get an error
	// reply {"reason":"rate limit exceeded"}. Heartbeats are exempt.
	// Default 1000; negative means no limit.
	RateLimit float64
	RateBurst int
	// CheckOrigin lists the browser origins allowed to connect, written as
	// Phoenix's check_origin list ("https://example.com", "//example.com",
	// "//*.example.com"); empty means the request's own host; "*" allows
	// any. Requests without an Origin header are always allowed. A refused
	// origin gets HTTP 403.
	CheckOrigin []string
	// DevLogin serves GET /token?user_id=NAME, which asks authsvc to sign a
	// token for anyone. For development only: real deployments issue
	// tokens from their own login.
	DevLogin bool
	// LongPollWindow is how long a long-poll GET waits for messages
	// (Phoenix's window_ms); a session not polled for 1.5 windows is
	// closed. Default 10s.
	LongPollWindow time.Duration
	// AssetsDir holds phoenix.min.js from the phoenix npm package, served
	// at /assets/phoenix.js for the chat page.
	AssetsDir string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Gateway serves Phoenix sockets. Create it with New.
type Gateway struct {
	opts       Options
	log        *slog.Logger
	metrics    *metrics.Metrics
	hub        *fanout.Hub
	sessionCfg session.Config
	upgrader   websocket.Upgrader
	origins    originChecker
	connSeq    atomic.Uint64

	control []*nats.Subscription // per-user control subjects

	mu       sync.Mutex
	conns    map[*wsConn]struct{}
	users    map[string]map[*wsConn]struct{} // sockets by user id, for forced disconnects
	draining bool

	lp longPolls // long-poll sessions (longpoll.go)
}

// DefaultRoutes send rooms:* to roomsvc, as the channels guide's UserSocket.
var DefaultRoutes = []session.Route{{Pattern: "rooms:*", Service: proto.ServiceRooms}}

// New creates a Gateway.
func New(opts Options) (*Gateway, error) {
	if opts.Conn == nil {
		return nil, errors.New("gateway: Options.Conn is required")
	}
	if opts.Name == "" {
		opts.Name, _ = os.Hostname()
	}
	if opts.Routes == nil {
		opts.Routes = DefaultRoutes
	}
	for _, r := range opts.Routes {
		if r.Pattern == "" || strings.Contains(strings.TrimSuffix(r.Pattern, "*"), "*") {
			return nil, fmt.Errorf("gateway: route pattern %q: only a trailing * is allowed", r.Pattern)
		}
		if err := proto.ValidService(r.Service); err != nil {
			return nil, fmt.Errorf("gateway: route %q: %w", r.Pattern, err)
		}
	}
	setDefault(&opts.RequestTimeout, 5*time.Second)
	setDefault(&opts.SendQueueLen, 1024)
	setDefault(&opts.WriteTimeout, 10*time.Second)
	setDefault(&opts.IdleTimeout, 60*time.Second)
	setDefault(&opts.MaxFrameSize, 1<<20)
	setDefault(&opts.MaxChannels, 100)
	setDefault(&opts.RoomHeartbeat, 2*time.Second)
	setDefault(&opts.RoomLinger, 30*time.Second)
	setDefault(&opts.LongPollWindow, DefaultLongPollWindow)
	setDefault(&opts.RateLimit, 1000)
	if opts.RateLimit < 0 {
		opts.RateLimit = 0
	}
	setDefault(&opts.RateBurst, int(opts.RateLimit))
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	g := &Gateway{
		opts:    opts,
		log:     opts.Logger,
		metrics: metrics.New(),
		conns:   make(map[*wsConn]struct{}),
		users:   make(map[string]map[*wsConn]struct{}),
	}
	var err error
	if g.origins, err = newOriginChecker(opts.CheckOrigin); err != nil {
		return nil, err
	}
	g.lp.window.Store(int64(opts.LongPollWindow))
	if g.hub, err = fanout.New(fanout.Options{Conn: opts.Conn, Heartbeat: opts.RoomHeartbeat, Linger: max(opts.RoomLinger, 0), Logger: g.log, Metrics: g.metrics}); err != nil {
		return nil, err
	}
	g.sessionCfg = session.Config{
		Conn: opts.Conn, Hub: g.hub, Metrics: g.metrics, Logger: g.log, Routes: opts.Routes,
		Gateway: opts.Name, RequestTimeout: opts.RequestTimeout, MaxChannels: opts.MaxChannels,
		RateLimit: opts.RateLimit, RateBurst: opts.RateBurst,
	}
	// One subscription per gateway for each kind of per-user control
	// message, whatever the number of users.
	for subject, h := range map[string]nats.MsgHandler{
		proto.DisconnectSubjectAll: g.handleDisconnect,
		proto.KickSubjectAll:       g.handleKick,
		proto.IgnoresSubjectAll:    g.handleIgnores,
	} {
		sub, err := opts.Conn.Subscribe(subject, h)
		if err != nil {
			g.unsubscribe()
			return nil, fmt.Errorf("gateway: subscribe %s: %w", subject, err)
		}
		g.control = append(g.control, sub)
	}
	g.upgrader = websocket.Upgrader{
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
	return g, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Metrics returns the gateway's metrics.
func (g *Gateway) Metrics() *metrics.Metrics { return g.metrics }

// Handler routes the gateway's HTTP endpoints:
//
//	GET /socket/websocket  Phoenix socket (vsn=1.0.0 or 2.0.0)
//	GET /token             development login (when Options.DevLogin)
//	GET /healthz           200 while NATS is connected
//	GET /readyz            200 while NATS is connected and the gateway is not draining
//	GET /metrics           Prometheus metrics
//	GET /                  the chat page
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/socket/websocket", g.serveWebSocket)
	mux.HandleFunc("/socket/longpoll", g.serveLongPoll)
	if g.opts.DevLogin {
		mux.HandleFunc("GET /token", g.serveToken)
	}
	mux.HandleFunc("GET /healthz", g.serveHealth)
	mux.HandleFunc("GET /readyz", g.serveReady)
	mux.Handle("GET /metrics", g.metrics.Handler())
	g.handlePage(mux)
	return mux
}

// Shutdown drains the gateway: every socket gets the frames already queued
// to it and then a close with CloseRestart, which makes phoenix.js reconnect
// (to another gateway behind the load balancer). It returns when all
// sockets are closed or ctx ends, whichever comes first; then it closes the
// remaining ones at once. Stop the http.Server from accepting first.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.drainLongPoll()
	g.unsubscribe()
	g.mu.Lock()
	g.draining = true
	conns := make([]*wsConn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	for _, c := range conns {
		c.closeAfterFlush(CloseRestart, "server shutting down")
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		g.mu.Lock()
		n := len(g.conns)
		g.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			g.mu.Lock()
			for c := range g.conns {
				c.closeConn()
			}
			g.mu.Unlock()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (g *Gateway) unsubscribe() {
	for _, sub := range g.control {
		_ = sub.Unsubscribe()
	}
}

// track adds or removes a socket; adding fails while draining.
func (g *Gateway) track(c *wsConn, add bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	user := c.sess.UserID()
	if !add {
		delete(g.conns, c)
		if set := g.users[user]; set != nil {
			delete(set, c)
			if len(set) == 0 {
				delete(g.users, user)
			}
		}
		return true
	}
	g.conns[c] = struct{}{}
	if user != "" {
		if g.users[user] == nil {
			g.users[user] = make(map[*wsConn]struct{})
		}
		g.users[user][c] = struct{}{}
	}
	return !g.draining
}

// userConns returns the local sockets of a user.
func (g *Gateway) userConns(user string) []*wsConn {
	g.mu.Lock()
	defer g.mu.Unlock()
	conns := make([]*wsConn, 0, len(g.users[user]))
	for c := range g.users[user] {
		conns = append(conns, c)
	}
	return conns
}

// handleKick removes a user's local sockets from one topic (a revoked
// membership) with a phx_close, live.
func (g *Gateway) handleKick(m *nats.Msg) {
	user, err := proto.UserFromSubject(m.Subject)
	var k proto.Kick
	if err == nil {
		err = json.Unmarshal(m.Data, &k)
	}
	if err != nil || k.Topic == "" {
		g.log.Warn("bad kick message", "subject", m.Subject, "err", err)
		return
	}
	n := g.kickLongPoll(user, k.Topic)
	for _, c := range g.userConns(user) {
		if c.sess.Kick(k.Topic) {
			n++
		}
	}
	if n > 0 {
		g.log.Info("kicked", "user", user, "topic", k.Topic, "sockets", n)
	}
}

// handleIgnores applies a user's new ignore list to their local sockets, so
// the fan-out filters without asking a service per message.
func (g *Gateway) handleIgnores(m *nats.Msg) {
	user, err := proto.UserFromSubject(m.Subject)
	var u proto.IgnoreUpdate
	if err == nil {
		err = json.Unmarshal(m.Data, &u)
	}
	if err != nil {
		g.log.Warn("bad ignore list message", "subject", m.Subject, "err", err)
		return
	}
	for _, c := range g.userConns(user) {
		c.sess.SetIgnored(u.Ignored)
	}
}

// handleDisconnect closes every local socket of a user (logout, ban), as
// Phoenix's "disconnect" broadcast on the socket id does: code 1001.
func (g *Gateway) handleDisconnect(m *nats.Msg) {
	user, err := proto.UserFromSubject(m.Subject)
	if err != nil {
		g.log.Warn("bad disconnect subject", "subject", m.Subject, "err", err)
		return
	}
	conns := g.userConns(user)
	for _, c := range conns {
		c.closeAfterFlush(websocket.CloseGoingAway, "disconnected")
	}
	if n := len(conns) + g.disconnectLongPoll(user); n > 0 {
		g.log.Info("forced disconnect", "user", user, "sockets", n)
	}
}

func (g *Gateway) nextConnID() string {
	return g.opts.Name + "-" + strconv.FormatUint(g.connSeq.Add(1), 10)
}

func (g *Gateway) refuse(w http.ResponseWriter, status int, reason string) {
	g.metrics.ConnectsRefused.WithLabelValues(reason).Inc()
	// Phoenix answers a refused socket with an empty body.
	w.WriteHeader(status)
}

// authenticate returns the user id for a token, or the HTTP status that
// refuses the connection: 403 for a bad token (as Phoenix), 503 when authsvc
// cannot be asked, so that clients retry instead of giving up.
func (g *Gateway) authenticate(token string, present bool) (string, int) {
	if !present {
		if g.opts.AllowAnonymous {
			return "", 0
		}
		return "", http.StatusForbidden
	}
	if token == "" {
		return "", http.StatusForbidden
	}
	data, _ := json.Marshal(proto.VerifyRequest{Token: token})
	start := time.Now()
	msg, err := g.opts.Conn.Request(proto.SubjectAuthVerify, data, g.opts.RequestTimeout)
	if err != nil {
		g.metrics.RequestSeconds.WithLabelValues("verify", "error").Observe(time.Since(start).Seconds())
		g.log.Warn("token verification unavailable", "err", err)
		return "", http.StatusServiceUnavailable
	}
	g.metrics.RequestSeconds.WithLabelValues("verify", "ok").Observe(time.Since(start).Seconds())
	var rep proto.VerifyReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return "", http.StatusServiceUnavailable
	}
	if rep.Error != "" || rep.UserID == "" {
		return "", http.StatusForbidden
	}
	return rep.UserID, 0
}

// originAllowed applies Phoenix's check_origin to browser requests.
func (g *Gateway) originAllowed(r *http.Request) bool { return g.origins.allowed(r) }

func (g *Gateway) serveHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if !g.opts.Conn.IsConnected() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, `{"status":"nats disconnected"}`+"\n")
		return
	}
	fmt.Fprintf(w, `{"status":"ok","rooms":%d}`+"\n", g.hub.Rooms())
}

func (g *Gateway) serveReady(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	draining := g.draining
	g.mu.Unlock()
	switch {
	case draining:
		httpJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
	case !g.opts.Conn.IsConnected():
		httpJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "nats disconnected"})
	default:
		httpJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}

// serveToken is the development login: it signs a token for any user_id.
func (g *Gateway) serveToken(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user_id")
	if err := validUserID(user); err != nil {
		httpJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	data, _ := json.Marshal(proto.SignRequest{UserID: user})
	msg, err := g.opts.Conn.Request(proto.SubjectAuthSign, data, g.opts.RequestTimeout)
	if err != nil {
		httpJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "authsvc unavailable: " + err.Error()})
		return
	}
	var rep proto.SignReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil || rep.Error != "" || rep.Token == "" {
		httpJSON(w, http.StatusBadGateway, map[string]string{"error": "authsvc refused: " + rep.Error})
		return
	}
	httpJSON(w, http.StatusOK, map[string]string{"token": rep.Token})
}

func validUserID(u string) error {
	if u == "" || len(u) > 64 {
		return errors.New("user_id must be 1 to 64 characters")
	}
	for _, c := range u {
		if c < 0x20 || c == 0x7f {
			return errors.New("user_id must not hold control characters")
		}
	}
	return nil
}

func httpJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

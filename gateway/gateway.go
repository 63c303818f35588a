// Package gateway is the Phoenix-protocol edge of the system: it accepts
// phoenix.js sockets over WebSocket and long-poll, verifies their tokens
// with authsvc, routes joins and pushes to services over NATS, and fans
// room broadcasts out to local sockets.
//
// This package wires the parts and serves what is not a socket (the
// development login, health, metrics, the page). The parts, each in its
// own package: wire (the V1/V2 serializers), session (the per-socket
// protocol and its contract with the transports), fanout (the room
// stream, rooms and their members), registry (live sessions by user: kicks,
// forced disconnects, ignore lists, the drain), connect (origin, vsn and
// token checks), ws and longpoll (the transports) and wsframe (RFC 6455
// framing).
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/gateway/connect"
	"github.com/phxnats/phxnats/gateway/fanout"
	"github.com/phxnats/phxnats/gateway/longpoll"
	"github.com/phxnats/phxnats/gateway/metrics"
	"github.com/phxnats/phxnats/gateway/registry"
	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/ws"
	"github.com/phxnats/phxnats/proto"
)

// Off, as RateLimit or RoomLinger, turns the setting off: no rate limit,
// no linger. A zero value takes the default.
const Off = session.Off

// Options configure a Gateway. Zero values take DefaultOptions' values.
type Options struct {
	// Conn is the NATS connection; required.
	Conn *nats.Conn
	// Name identifies this gateway in logs and service requests; default the host name.
	Name string
	// Routes map topics to services; default DefaultRoutes.
	Routes []session.Route
	// AllowAnonymous lets sockets connect without a token param. A token
	// that is present but invalid is always refused with 403.
	AllowAnonymous bool
	// RequestTimeout bounds each request to authsvc or a service.
	RequestTimeout time.Duration
	// SendQueueLen is the most frames queued to one socket; when a socket's
	// queue is full it is closed with ws.CloseSlowConsumer.
	SendQueueLen int
	// SendQueueBytes bounds a WebSocket's queue in bytes as well (the
	// frames queued and those being written; a broadcast counts in full
	// for each socket); over it the socket is closed as a slow consumer.
	SendQueueBytes int
	// MaxUnfinishedBytes bounds the bytes all WebSockets together hold of
	// client messages not yet complete (fragments so far, a frame's
	// start); a socket that would take them over it is closed with 1009.
	// Each socket's share is bounded by MaxFrameSize. Off: no bound.
	MaxUnfinishedBytes int64
	// MaxConns caps the gateway's WebSockets (503 when full) and
	// MaxConnsPerAddr those of one client address (429), an IPv6 /64
	// counting as one address. Off: no cap.
	MaxConns, MaxConnsPerAddr int
	// TrustedProxies are the addresses and networks ("10.0.0.0/8") of the
	// proxies whose X-Forwarded-For names the client; a request from any
	// other peer is that peer's.
	TrustedProxies []string
	// Hosts are the names clients reach the gateway by, as a Phoenix
	// endpoint's url host: a request for the sockets, the development
	// login or the page with any other Host is refused with 403, so that a
	// page on another name resolving to the gateway (DNS rebinding) cannot
	// use it. Entries: "chat.example.com", "*.example.com", addresses;
	// "*" accepts any Host. Empty: connect.DefaultHosts(ListenAddr), the
	// loopback names for a gateway on loopback; one listening on every
	// interface must list them. Health and metrics answer any Host.
	Hosts []string
	// ListenAddr is the address the HTTP server listens on, for the
	// default Hosts; "" counts as loopback.
	ListenAddr string
	// WriteTimeout bounds one batch of writes to a socket.
	WriteTimeout time.Duration
	// IdleTimeout closes WebSockets that sent no complete message for
	// this long (Phoenix's 60s); pings and fragments do not count.
	IdleTimeout time.Duration
	// MaxFrameSize is the largest client frame in bytes; larger ones close
	// the socket with 1009.
	MaxFrameSize int64
	// RoomHeartbeat is how often the gateway's room stream consumer
	// proves it is alive while the rooms are quiet; one silent for two
	// heartbeats (its NATS node died) is recreated where it stopped.
	RoomHeartbeat time.Duration
	// RoomLinger keeps the room stream consumer running this long after
	// the gateway's last socket left its rooms, so that sockets rejoining
	// soon (phoenix.js after a network blip) find it running. Off: stop
	// with the last leave.
	RoomLinger time.Duration
	// MaxChannels bounds the topics one socket joins (Phoenix's 100).
	MaxChannels int
	// RateLimit is the most frames per second one socket may send, with
	// bursts of RateBurst (default RateLimit); frames over it get an error
	// reply {"reason":"rate limit exceeded"}. Heartbeats are exempt. Off:
	// no limit.
	RateLimit float64
	RateBurst int
	// UserRateLimit (bursts of UserRateBurst) is the same budget for all
	// sockets of one user on this gateway together, and AddrRateLimit
	// (AddrRateBurst) for all sockets from one client address. Off: no
	// limit; a burst defaults to its rate.
	UserRateLimit float64
	UserRateBurst int
	AddrRateLimit float64
	AddrRateBurst int
	// MaxPending bounds the frames of one socket waiting for their turn
	// behind one that waits on a service (and their payloads, together,
	// to MaxFrameSize); one more gets {"reason":"rate limit exceeded"}.
	// Heartbeats never wait. Off: no bound.
	MaxPending int
	// LongPollMaxSessions bounds the long-poll sessions of the gateway,
	// LongPollMaxPerAddr those from one client address; a session over
	// either is refused ({"status":500}, which phoenix.js retries). Off:
	// no bound.
	LongPollMaxSessions int
	LongPollMaxPerAddr  int
	// NATSGrace is how long the gateway keeps its sockets without a NATS
	// connection: then it closes them all with code 1013 (phoenix.js
	// reconnects, to a gateway behind the load balancer that has NATS),
	// ends its long-poll sessions, and refuses new sockets with 503 until
	// NATS is back. Off: never.
	NATSGrace time.Duration
	// CheckOrigin lists the browser origins allowed to connect, written as
	// Phoenix's check_origin list ("https://example.com", "//example.com",
	// "//*.example.com"); empty means an origin whose host is one of Hosts
	// (the request's own Host when Hosts is "*"); "*" allows any. Requests without an Origin header are always allowed. A refused
	// origin gets HTTP 403.
	CheckOrigin []string
	// DevLogin serves GET /token?user_id=NAME, which asks authsvc to sign a
	// token for anyone. For development only: real deployments issue
	// tokens from their own login.
	DevLogin bool
	// LongPollWindow is how long a long-poll GET waits for messages
	// (Phoenix's window_ms); a session not polled for 1.5 windows is
	// closed.
	LongPollWindow time.Duration
	// AssetsDir holds phoenix.min.js from the phoenix npm package, served
	// at /assets/phoenix.js for the chat page.
	AssetsDir string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// DefaultRoutes send rooms:* to roomsvc, as the channels guide's UserSocket.
var DefaultRoutes = []session.Route{{Pattern: "rooms:*", Service: proto.ServiceRooms}}

// DefaultOptions are the defaults of every setting: New takes them for
// zero values, and the configuration keys (package config) show them.
// RateBurst defaults to RateLimit.
func DefaultOptions() Options {
	return Options{
		Routes:         DefaultRoutes,
		RequestTimeout: 5 * time.Second,
		SendQueueLen:   1024,
		WriteTimeout:   10 * time.Second,
		IdleTimeout:    60 * time.Second,
		MaxFrameSize:   1 << 20,
		RoomHeartbeat:  fanout.DefaultHeartbeat,
		RoomLinger:     fanout.DefaultLinger,
		MaxChannels:    100,
		// A person chats at a message a second or less: 10 frames a
		// second per socket, 20 per user (a few tabs), 50 per address (a
		// few people behind one NAT) leave room for pastes and joins,
		// and bound what a flood costs the services and the stream.
		RateLimit:           10,
		RateBurst:           20,
		UserRateLimit:       20,
		UserRateBurst:       40,
		AddrRateLimit:       50,
		AddrRateBurst:       100,
		MaxPending:          64,
		LongPollMaxSessions: 10000,
		LongPollMaxPerAddr:  50,
		NATSGrace:           10 * time.Second,
		LongPollWindow:      longpoll.DefaultWindow,

		// What a client may hold of the gateway (issue 13).
		SendQueueBytes: 4 << 20,
		// Fragmented or slow messages of 64 sockets at the 1 MiB frame
		// limit; a chat message is a few hundred bytes in one read.
		MaxUnfinishedBytes: 64 << 20,
		MaxConns:           100_000,
		// Generous for offices and carriers behind one NAT address; a
		// single machine can still not take more than 1 % of the gateway.
		MaxConnsPerAddr: 1000,
	}
}

// withDefaults fills opts' zero values from DefaultOptions and spells
// every "off" as Off.
func (opts Options) withDefaults() Options {
	d := DefaultOptions()
	if opts.Name == "" {
		opts.Name, _ = os.Hostname()
	}
	if opts.Routes == nil {
		opts.Routes = d.Routes
	}
	setDefault(&opts.RequestTimeout, d.RequestTimeout)
	setDefault(&opts.SendQueueLen, d.SendQueueLen)
	setDefault(&opts.SendQueueBytes, d.SendQueueBytes)
	setDefault(&opts.MaxUnfinishedBytes, d.MaxUnfinishedBytes)
	setDefault(&opts.MaxConns, d.MaxConns)
	setDefault(&opts.MaxConnsPerAddr, d.MaxConnsPerAddr)
	opts.MaxUnfinishedBytes = max(opts.MaxUnfinishedBytes, 0) // Off: 0 for ws
	opts.MaxConns = max(opts.MaxConns, 0)                     // Off: 0 for connect
	opts.MaxConnsPerAddr = max(opts.MaxConnsPerAddr, 0)
	setDefault(&opts.WriteTimeout, d.WriteTimeout)
	setDefault(&opts.IdleTimeout, d.IdleTimeout)
	setDefault(&opts.MaxFrameSize, d.MaxFrameSize)
	setDefault(&opts.MaxChannels, d.MaxChannels)
	setDefault(&opts.RoomHeartbeat, d.RoomHeartbeat)
	setDefault(&opts.RoomLinger, d.RoomLinger)
	setDefault(&opts.LongPollWindow, d.LongPollWindow)
	rateDefault(&opts.RateLimit, &opts.RateBurst, d.RateLimit, d.RateBurst)
	rateDefault(&opts.UserRateLimit, &opts.UserRateBurst, d.UserRateLimit, d.UserRateBurst)
	rateDefault(&opts.AddrRateLimit, &opts.AddrRateBurst, d.AddrRateLimit, d.AddrRateBurst)
	offDefault(&opts.MaxPending, d.MaxPending)
	offDefault(&opts.LongPollMaxSessions, d.LongPollMaxSessions)
	offDefault(&opts.LongPollMaxPerAddr, d.LongPollMaxPerAddr)
	offDefault(&opts.NATSGrace, d.NATSGrace)
	if opts.RoomLinger < 0 {
		opts.RoomLinger = Off
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return opts
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// offDefault sets a zero *v to def and spells any negative as Off.
func offDefault[T int | time.Duration](v *T, def T) {
	switch {
	case *v == 0:
		*v = def
	case *v < 0:
		*v = Off
	}
}

// rateDefault fills a rate limit and its burst: both defaults when the
// limit is zero, Off when it is negative, else a burst defaulting to the
// limit.
func rateDefault(limit *float64, burst *int, defLimit float64, defBurst int) {
	switch {
	case *limit == 0:
		*limit = defLimit
		setDefault(burst, defBurst)
	case *limit < 0:
		*limit = Off
	default:
		setDefault(burst, int(*limit))
	}
}

// Gateway serves Phoenix sockets. Create it with New.
type Gateway struct {
	opts       Options
	log        *slog.Logger
	metrics    *metrics.Metrics
	hub        *fanout.Hub
	reg        *registry.Registry
	sessionCfg session.Config
	ws         *ws.Server
	lp         *longpoll.Server
	stopWatch  func()
	connect    *connect.Checker
}

// New creates a Gateway.
func New(opts Options) (*Gateway, error) {
	if opts.Conn == nil {
		return nil, errors.New("gateway: Options.Conn is required")
	}
	opts = opts.withDefaults()
	for _, r := range opts.Routes {
		if r.Pattern == "" || strings.Contains(strings.TrimSuffix(r.Pattern, "*"), "*") {
			return nil, fmt.Errorf("gateway: route pattern %q: only a trailing * is allowed", r.Pattern)
		}
		if err := proto.ValidService(r.Service); err != nil {
			return nil, fmt.Errorf("gateway: route %q: %w", r.Pattern, err)
		}
	}
	hosts := opts.Hosts
	if len(hosts) == 0 {
		var err error
		if hosts, err = connect.DefaultHosts(opts.ListenAddr); err != nil {
			return nil, err
		}
	} else if slices.Contains(hosts, "*") {
		opts.Logger.Warn("gateway.hosts is *: any Host is accepted, so a page on any name resolving to this gateway can use it (DNS rebinding); list the public names instead")
	}
	proxies, err := connect.ParseTrustedProxies(opts.TrustedProxies)
	if err != nil {
		return nil, err
	}
	g := &Gateway{opts: opts, log: opts.Logger, metrics: metrics.New()}
	checker, err := connect.New(connect.Options{
		Conn: opts.Conn, RequestTimeout: opts.RequestTimeout, AllowAnonymous: opts.AllowAnonymous,
		CheckOrigin: opts.CheckOrigin, Hosts: hosts, TrustedProxies: proxies,
		MaxConns: opts.MaxConns, MaxConnsPerAddr: opts.MaxConnsPerAddr, Metrics: g.metrics, Logger: g.log,
	})
	if err != nil {
		return nil, err
	}
	g.connect = checker
	if g.hub, err = fanout.New(fanout.Options{Conn: opts.Conn, Heartbeat: opts.RoomHeartbeat, Linger: opts.RoomLinger, Logger: g.log, Metrics: g.metrics}); err != nil {
		return nil, err
	}
	if g.reg, err = registry.New(opts.Conn, g.log); err != nil {
		g.hub.Close()
		return nil, err
	}
	g.sessionCfg = session.Config{
		Conn: opts.Conn, Rooms: g.hub, Registry: g.reg, Metrics: g.metrics, Logger: g.log, Routes: opts.Routes,
		Gateway: opts.Name, RequestTimeout: opts.RequestTimeout, MaxChannels: opts.MaxChannels,
		RateLimit: opts.RateLimit, RateBurst: opts.RateBurst,
		UserRateLimit: opts.UserRateLimit, UserRateBurst: opts.UserRateBurst,
		AddrRateLimit: opts.AddrRateLimit, AddrRateBurst: opts.AddrRateBurst,
		MaxPending: opts.MaxPending, MaxPendingBytes: int(opts.MaxFrameSize),
	}
	deps := connect.Deps{Session: &g.sessionCfg, Connect: checker, Metrics: g.metrics, Logger: g.log}
	g.ws = ws.New(ws.Config{
		Deps:         deps,
		SendQueueLen: opts.SendQueueLen, WriteTimeout: opts.WriteTimeout, IdleTimeout: opts.IdleTimeout,
		MaxFrameSize: opts.MaxFrameSize, SendQueueBytes: opts.SendQueueBytes, MaxUnfinishedBytes: opts.MaxUnfinishedBytes,
	})
	g.lp = longpoll.New(longpoll.Config{
		Deps:         deps,
		SendQueueLen: opts.SendQueueLen, SendQueueBytes: opts.SendQueueBytes, MaxFrameSize: opts.MaxFrameSize, Window: opts.LongPollWindow,
		MaxSessions: opts.LongPollMaxSessions, MaxPerAddr: opts.LongPollMaxPerAddr,
	})
	g.watchNATS()
	return g, nil
}

// Metrics returns the gateway's metrics.
func (g *Gateway) Metrics() *metrics.Metrics { return g.metrics }

// SetLongPollWindow sets how long a long-poll GET waits for messages
// (Options.LongPollWindow). Sessions opened earlier keep the expiry they
// were opened with.
func (g *Gateway) SetLongPollWindow(d time.Duration) { g.lp.SetWindow(d) }

// LongPollSessions returns the number of open long-poll sessions.
func (g *Gateway) LongPollSessions() int { return g.lp.Sessions() }

// Handler routes the gateway's HTTP endpoints:
//
//	GET /socket/websocket  Phoenix socket (vsn=1.0.0 or 2.0.0)
//	/socket/longpoll       Phoenix long-poll (GET, POST, OPTIONS)
//	GET /token             development login (when Options.DevLogin)
//	GET /healthz           200 while NATS is connected
//	GET /readyz            200 while NATS is connected and the gateway is not draining
//	GET /metrics           Prometheus metrics
//	GET /                  the chat page
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/socket/websocket", g.refuseWithoutNATS(g.ws))
	mux.Handle("/socket/longpoll", g.knownHost(g.lp))
	if g.opts.DevLogin {
		mux.Handle("GET /token", g.knownHost(http.HandlerFunc(g.serveToken)))
	}
	mux.HandleFunc("GET /healthz", g.serveHealth)
	mux.HandleFunc("GET /readyz", g.serveReady)
	mux.Handle("GET /metrics", g.metrics.Handler())
	g.handlePage(mux)
	return g.recoverPanics(mux)
}

// knownHost refuses, with 403, a request whose Host is not one of
// Options.Hosts. WebSockets check it on their own (package connect),
// before anything else; long-poll requests, answered with a JSON status
// otherwise, get a plain 403 here, as the page does.
func (g *Gateway) knownHost(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.connect.HostAllowed(r) {
			g.metrics.ConnectsRefused.WithLabelValues("host").Inc()
			http.Error(w, "unknown host", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// recoverPanics counts a panic of a request's handling (a long-poll
// request, the page) in phx_gateway_panics_total and answers 500 when
// nothing was sent yet; net/http would recover it too, uncounted. A
// WebSocket's own goroutines recover in package ws.
func (g *Gateway) recoverPanics(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v) // net/http's way to abort a response, not a failure
			}
			g.metrics.Panics.Inc()
			g.log.Error("panic serving a request", "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			w.WriteHeader(http.StatusInternalServerError)
		}()
		h.ServeHTTP(w, r)
	})
}

// Shutdown drains the gateway: every socket gets the frames already queued
// to it and then a close with code 1012, which makes phoenix.js reconnect
// (to another gateway behind the load balancer); long-poll sessions end
// alike. It returns when all sockets are closed or ctx ends, whichever
// comes first; then it closes the remaining ones at once. Stop the
// http.Server from accepting first.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.stopWatch()
	err := g.reg.Drain(ctx)
	if err == nil {
		g.ws.Close()
	}
	g.hub.Close()
	return err
}

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
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/phxnats/phxnats/gateway/connect"
	"github.com/phxnats/phxnats/gateway/fanout"
	"github.com/phxnats/phxnats/gateway/longpoll"
	"github.com/phxnats/phxnats/gateway/metrics"
	"github.com/phxnats/phxnats/gateway/presence"
	"github.com/phxnats/phxnats/gateway/registry"
	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/ws"
	"github.com/phxnats/phxnats/proto"
)

// Gateway serves Phoenix sockets. Create it with New.
type Gateway struct {
	opts       Options
	log        *slog.Logger
	metrics    *metrics.Metrics
	hub        *fanout.Hub
	presence   *presence.Tracker
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
	if g.presence, err = presence.New(presence.Options{
		Conn: opts.Conn, Name: opts.Name, Interval: opts.PresenceInterval, TTL: opts.PresenceTTL,
		Heartbeat: opts.RoomHeartbeat, Timeout: opts.RequestTimeout, Logger: g.log,
	}); err != nil {
		g.hub.Close()
		return nil, err
	}
	if g.reg, err = registry.New(opts.Conn, g.log); err != nil {
		g.hub.Close()
		g.presence.Close()
		return nil, err
	}
	g.sessionCfg = session.Config{
		Conn: opts.Conn, Rooms: g.hub, Registry: g.reg, Presence: g.presence, Metrics: g.metrics, Logger: g.log, Routes: opts.Routes,
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
	g.presence.Close()
	return err
}

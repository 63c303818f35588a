package gateway

import (
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/gateway/fanout"
	"github.com/phxnats/phxnats/gateway/longpoll"
	"github.com/phxnats/phxnats/gateway/presence"
	"github.com/phxnats/phxnats/gateway/session"
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
	// PresenceInterval bounds the presence diffs and writes of one room
	// on this gateway: at most one each per interval (Phoenix's
	// broadcast_period); a leave, close or kick shows within it.
	PresenceInterval time.Duration
	// PresenceTTL is the life of this gateway's presence keys, rewritten
	// every third of it: the presences of a gateway that died are gone
	// from every other within PresenceTTL and one PresenceInterval. At
	// least 1s, whole seconds.
	PresenceTTL time.Duration
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
		// Presence (issue 15): Phoenix's 1.5 s broadcast period; a dead
		// gateway's presences gone within 12 s + 1.5 s.
		PresenceInterval: presence.DefaultInterval,
		PresenceTTL:      presence.DefaultTTL,
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
	setDefault(&opts.PresenceInterval, d.PresenceInterval)
	setDefault(&opts.PresenceTTL, d.PresenceTTL)
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

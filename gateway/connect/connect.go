// Package connect holds what every new Phoenix socket goes through,
// whatever its transport: the Host and Phoenix's check_origin, the
// serializer version (vsn), the user's token and its verification by
// authsvc; the client's address (behind trusted proxies) and the caps on
// connections per address and per gateway.
package connect

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/gateway/metrics"
	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
)

// Options configure a Checker.
type Options struct {
	// Conn asks authsvc; required.
	Conn *nats.Conn
	// RequestTimeout bounds a token verification.
	RequestTimeout time.Duration
	// AllowAnonymous lets sockets connect without a token. A token that is
	// present but invalid is always refused.
	AllowAnonymous bool
	// CheckOrigin is Phoenix's check_origin list (see originChecker).
	CheckOrigin []string
	// Hosts are the names clients reach the gateway by (see hostChecker);
	// nil: LoopbackHosts.
	Hosts []string
	// TrustedProxies are the proxies whose X-Forwarded-For is believed
	// (ParseTrustedProxies); none: the peer's address is the client's.
	TrustedProxies []netip.Prefix
	// MaxConns and MaxConnsPerAddr cap the connections Admit lets in, in
	// all and per client address (an IPv6 /64); 0: no cap.
	MaxConns, MaxConnsPerAddr int
	Metrics                   *metrics.Metrics
	Logger                    *slog.Logger
}

// Checker admits or refuses new sockets. Create it with New.
type Checker struct {
	opts    Options
	origins originChecker
	hosts   hostChecker
	proxies []netip.Prefix
	limits  connLimits
}

// New creates a Checker; it fails on a malformed CheckOrigin or Hosts entry.
func New(opts Options) (*Checker, error) {
	origins, err := newOriginChecker(opts.CheckOrigin)
	if err != nil {
		return nil, err
	}
	if opts.Hosts == nil {
		opts.Hosts = LoopbackHosts
	}
	hosts, err := newHostChecker(opts.Hosts)
	if err != nil {
		return nil, err
	}
	return &Checker{
		opts: opts, origins: origins, hosts: hosts, proxies: opts.TrustedProxies,
		limits: connLimits{maxTotal: opts.MaxConns, maxPerAddr: opts.MaxConnsPerAddr, byAddr: map[netip.Addr]int{}},
	}, nil
}

// OriginAllowed applies Phoenix's check_origin to browser requests.
func (c *Checker) OriginAllowed(r *http.Request) bool { return c.origins.allowed(r, c.hosts) }

// Client is who an admitted socket is.
type Client struct {
	// Ser is the serializer its vsn asked for.
	Ser wire.Serializer
	// UserID is its user, "" when anonymous.
	UserID string
	// Addr is the client's address (ClientAddr): the peer's, or the one
	// a trusted proxy forwarded. The zero Addr when unknown.
	Addr netip.Addr
}

// Refusal is why a socket is refused.
type Refusal struct {
	// Reason is the label of the connects-refused metric: host, vsn,
	// origin, auth, full or address.
	Reason string
	// Status is 403; 503 when authsvc could not be asked or the gateway
	// is full (a client should retry rather than give up); 429 when the
	// client's address holds its share of connections.
	Status int
}

// Check admits a new socket, or refuses it and counts the refusal. The
// user's token is the first "token" query parameter, unless the transport
// found one elsewhere (carried, when hasCarried): phoenix.js's authToken
// option travels in a subprotocol (WebSocket) or a header (long-poll).
func (c *Checker) Check(r *http.Request, query url.Values, carried string, hasCarried bool) (Client, *Refusal) {
	if !c.HostAllowed(r) {
		return Client{}, c.refuse("host", http.StatusForbidden)
	}
	ser, ok := serializer(query)
	if !ok {
		return Client{}, c.refuse("vsn", http.StatusForbidden)
	}
	if !c.OriginAllowed(r) {
		return Client{}, c.refuse("origin", http.StatusForbidden)
	}
	tok, hasToken := "", false
	if t := query["token"]; len(t) > 0 {
		tok, hasToken = t[0], true
	}
	if hasCarried {
		tok, hasToken = carried, true
	}
	user, status := c.authenticate(tok, hasToken)
	if status != 0 {
		return Client{}, c.refuse("auth", status)
	}
	return Client{Ser: ser, UserID: user, Addr: c.ClientAddr(r)}, nil
}

func (c *Checker) refuse(reason string, status int) *Refusal {
	c.opts.Metrics.ConnectsRefused.WithLabelValues(reason).Inc()
	return &Refusal{Reason: reason, Status: status}
}

// serializer negotiates the serializer as Phoenix does: a missing vsn means
// V1, an explicit empty one is refused.
func serializer(query url.Values) (wire.Serializer, bool) {
	vsn, ok := query["vsn"]
	if !ok {
		return wire.V1, true
	}
	ser, err := wire.ForVsn(vsn[0])
	return ser, err == nil && vsn[0] != ""
}

// authenticate returns the user id for a token, or the HTTP status that
// refuses the connection: 403 for a bad token (as Phoenix), 503 when authsvc
// cannot be asked, so that clients retry instead of giving up.
func (c *Checker) authenticate(token string, present bool) (string, int) {
	if !present {
		if c.opts.AllowAnonymous {
			return "", 0
		}
		return "", http.StatusForbidden
	}
	if token == "" {
		return "", http.StatusForbidden
	}
	data, _ := json.Marshal(proto.VerifyRequest{Token: token})
	start := time.Now()
	msg, err := c.opts.Conn.Request(proto.SubjectAuthVerify, data, c.opts.RequestTimeout)
	if err != nil {
		c.opts.Metrics.RequestSeconds.WithLabelValues("verify", "error").Observe(time.Since(start).Seconds())
		c.opts.Logger.Warn("token verification unavailable", "err", err)
		return "", http.StatusServiceUnavailable
	}
	c.opts.Metrics.RequestSeconds.WithLabelValues("verify", "ok").Observe(time.Since(start).Seconds())
	var rep proto.VerifyReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return "", http.StatusServiceUnavailable
	}
	if rep.Error == proto.TokenUnavailable {
		// authsvc could not tell (its ban bucket did not answer): retry.
		return "", http.StatusServiceUnavailable
	}
	if rep.Error != "" || rep.UserID == "" {
		return "", http.StatusForbidden
	}
	return rep.UserID, 0
}

// Deps is what the gateway gives each transport (ws, longpoll) alike.
type Deps struct {
	// Session is the protocol's configuration, shared by the transports.
	Session *session.Config
	// Connect admits new sockets (origin, vsn, token).
	Connect *Checker
	Metrics *metrics.Metrics
	Logger  *slog.Logger
}

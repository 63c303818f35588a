// Package config maps the gateway.* configuration keys (flags, CHAT_GATEWAY_*
// environment variables, YAML) to gateway.Options, for the gateway binary and
// the one-process default alike.
package config

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/viper"

	"github.com/phxnats/phxnats/gateway"
	"github.com/phxnats/phxnats/svckit"
)

// Defaults are the gateway.* defaults of a deployed gateway: the
// gateway's own (gateway.DefaultOptions), with anonymous sockets allowed,
// no development login, and phoenix.js where `make assets` installs it.
func Defaults() gateway.Options {
	d := gateway.DefaultOptions()
	d.AllowAnonymous = true
	d.AssetsDir = filepath.Join("gateway", "web", "node_modules", "phoenix", "priv", "static")
	return d
}

// Settings are the gateway.* keys with d's values as defaults.
func Settings(d gateway.Options) []svckit.Setting {
	return []svckit.Setting{
		{Key: "gateway.name", Default: d.Name, Help: "this gateway's name in logs and service requests (default: host name)"},
		{Key: "gateway.allow_anonymous", Default: d.AllowAnonymous, Help: "accept sockets without a token (a bad token is always refused with 403)"},
		{Key: "gateway.dev_login", Default: d.DevLogin, Help: "serve GET /token?user_id=NAME (development only; refused on a non-loopback listen address unless gateway.dev_login_public)"},
		{Key: "gateway.dev_login_public", Default: false, Help: "allow gateway.dev_login on a listen address beyond loopback (anyone who reaches it gets a token for any name)"},
		{Key: "gateway.request_timeout", Default: d.RequestTimeout, Help: "timeout of each request to a service"},
		{Key: "gateway.send_queue", Default: d.SendQueueLen, Help: "frames queued per socket before it is closed as a slow consumer"},
		{Key: "gateway.send_queue_bytes", Default: d.SendQueueBytes, Help: "bytes queued per WebSocket (and being written) before it is closed as a slow consumer"},
		{Key: "gateway.max_unfinished_bytes", Default: int(d.MaxUnfinishedBytes), Help: "bytes all WebSockets may hold of messages not yet complete; a socket that would exceed it is closed with 1009 (0: no bound)"},
		{Key: "gateway.max_conns", Default: d.MaxConns, Help: "WebSockets this gateway accepts; more are answered 503 (0: no cap)"},
		{Key: "gateway.max_conns_per_address", Default: d.MaxConnsPerAddr, Help: "WebSockets one client address (an IPv6 /64) may hold; more are answered 429 (0: no cap)"},
		{Key: "gateway.trusted_proxies", Default: d.TrustedProxies, Help: "addresses or networks of proxies whose X-Forwarded-For names the client (none: the peer is the client)"},
		{Key: "gateway.hosts", Default: d.Hosts, Help: "host names clients use (Phoenix's url host; *.domain; * any); others get 403; empty: the loopback names on a loopback http.addr, its host otherwise (required on 0.0.0.0)"},
		{Key: "gateway.idle_timeout", Default: d.IdleTimeout, Help: "close sockets that sent no complete message for this long (pings and fragments do not count)"},
		{Key: "gateway.max_frame_size", Default: int(d.MaxFrameSize), Help: "largest client frame in bytes"},
		{Key: "gateway.max_channels", Default: d.MaxChannels, Help: "topics one socket may join"},
		{Key: "gateway.room_heartbeat", Default: d.RoomHeartbeat, Help: "heartbeat of the room stream consumer; a consumer silent for two is recreated"},
		{Key: "gateway.presence_interval", Default: d.PresenceInterval, Help: "presence: at most one presence_diff and one write of a room per gateway per interval (Phoenix's broadcast_period)"},
		{Key: "gateway.presence_ttl", Default: d.PresenceTTL, Help: "presence: life of this gateway's keys in the bucket phx_presence (rewritten every third); a dead gateway's presences go within it plus one interval (at least 1s)"},
		{Key: "gateway.room_linger", Default: d.RoomLinger, Help: "keep the room stream consumer this long after the gateway's last socket left its rooms (0: stop at once)"},
		{Key: "gateway.rate_limit", Default: d.RateLimit, Help: "frames per second one socket may send (heartbeats exempt; -1: no limit)"},
		{Key: "gateway.rate_burst", Default: d.RateBurst, Help: "burst of frames above the rate"},
		{Key: "gateway.user_rate_limit", Default: d.UserRateLimit, Help: "frames per second all sockets of one user on this gateway may send together (heartbeats exempt; -1: no limit)"},
		{Key: "gateway.user_rate_burst", Default: d.UserRateBurst, Help: "burst of a user's frames above its rate"},
		{Key: "gateway.addr_rate_limit", Default: d.AddrRateLimit, Help: "frames per second all sockets from one client address may send together (heartbeats exempt; -1: no limit)"},
		{Key: "gateway.addr_rate_burst", Default: d.AddrRateBurst, Help: "burst of an address's frames above its rate"},
		{Key: "gateway.max_pending", Default: d.MaxPending, Help: "frames of one socket that may wait behind one waiting on a service (-1: no bound)"},
		{Key: "gateway.longpoll_max_sessions", Default: d.LongPollMaxSessions, Help: "long-poll sessions on this gateway (-1: no bound)"},
		{Key: "gateway.longpoll_max_per_addr", Default: d.LongPollMaxPerAddr, Help: "long-poll sessions from one client address (-1: no bound)"},
		{Key: "gateway.nats_grace", Default: d.NATSGrace, Help: "without NATS this long, close every socket (1013) and refuse new ones until it is back (-1s: never)"},
		{Key: "gateway.longpoll_window", Default: d.LongPollWindow, Help: "how long a long-poll request waits for messages"},
		{Key: "gateway.check_origin", Default: d.CheckOrigin, Help: "allowed browser origins, Phoenix style (empty: an origin on one of gateway.hosts; *: any)"},
		{Key: "gateway.assets_dir", Default: d.AssetsDir, Help: "folder holding phoenix.min.js from npm, for the chat page"},
	}
}

// CheckDevLogin refuses the development login, which signs a token for
// any name, on a listen address beyond loopback, unless
// gateway.dev_login_public forces it (a container whose published port is
// on the host's loopback, say).
func CheckDevLogin(v *viper.Viper, addr string) error {
	if v.GetBool("gateway.dev_login") && !v.GetBool("gateway.dev_login_public") && !svckit.Loopback(addr) {
		return fmt.Errorf("gateway.dev_login signs a token for any name, and %s is reachable beyond this machine: "+
			"turn it off (--gateway-dev-login=false), listen on loopback, or force it with --gateway-dev-login-public", addr)
	}
	return nil
}

// Options reads the gateway.* keys. Conn and Logger are left to the caller.
func Options(v *viper.Viper) (gateway.Options, error) {
	if err := svckit.Positive(v, "gateway.send_queue", "gateway.send_queue_bytes", "gateway.max_frame_size", "gateway.max_channels"); err != nil {
		return gateway.Options{}, err
	}
	linger := v.GetDuration("gateway.room_linger")
	if linger == 0 {
		linger = gateway.Off // 0 in the configuration means none; in Options, the default
	}
	opts := gateway.Options{
		Name:                v.GetString("gateway.name"),
		AllowAnonymous:      v.GetBool("gateway.allow_anonymous"),
		DevLogin:            v.GetBool("gateway.dev_login"),
		RequestTimeout:      v.GetDuration("gateway.request_timeout"),
		SendQueueLen:        v.GetInt("gateway.send_queue"),
		IdleTimeout:         v.GetDuration("gateway.idle_timeout"),
		MaxFrameSize:        v.GetInt64("gateway.max_frame_size"),
		MaxChannels:         v.GetInt("gateway.max_channels"),
		RoomHeartbeat:       v.GetDuration("gateway.room_heartbeat"),
		RoomLinger:          linger,
		PresenceInterval:    v.GetDuration("gateway.presence_interval"),
		PresenceTTL:         v.GetDuration("gateway.presence_ttl"),
		RateLimit:           v.GetFloat64("gateway.rate_limit"),
		RateBurst:           v.GetInt("gateway.rate_burst"),
		UserRateLimit:       v.GetFloat64("gateway.user_rate_limit"),
		UserRateBurst:       v.GetInt("gateway.user_rate_burst"),
		AddrRateLimit:       v.GetFloat64("gateway.addr_rate_limit"),
		AddrRateBurst:       v.GetInt("gateway.addr_rate_burst"),
		MaxPending:          v.GetInt("gateway.max_pending"),
		LongPollMaxSessions: v.GetInt("gateway.longpoll_max_sessions"),
		LongPollMaxPerAddr:  v.GetInt("gateway.longpoll_max_per_addr"),
		NATSGrace:           v.GetDuration("gateway.nats_grace"),
		LongPollWindow:      v.GetDuration("gateway.longpoll_window"),
		CheckOrigin:         svckit.List(v, "gateway.check_origin"),
		AssetsDir:           v.GetString("gateway.assets_dir"),
	}
	edgeOptions(v, &opts)
	return opts, nil
}

// edgeOptions reads what a client may hold of the gateway (issue 13) and
// the names and proxies it is reached by. As with room_linger, 0 in the
// configuration means no cap.
func edgeOptions(v *viper.Viper, opts *gateway.Options) {
	orOff := func(key string) int64 {
		if n := v.GetInt64(key); n > 0 {
			return n
		}
		return gateway.Off
	}
	opts.SendQueueBytes = v.GetInt("gateway.send_queue_bytes")
	opts.MaxUnfinishedBytes = orOff("gateway.max_unfinished_bytes")
	opts.MaxConns = int(orOff("gateway.max_conns"))
	opts.MaxConnsPerAddr = int(orOff("gateway.max_conns_per_address"))
	opts.TrustedProxies = svckit.List(v, "gateway.trusted_proxies")
	opts.Hosts = svckit.List(v, "gateway.hosts")
	opts.ListenAddr = v.GetString("http.addr")
}

package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/phxnats/phxnats/allinone/system"
	"github.com/phxnats/phxnats/gateway"
)

// setting is one configuration key. The same table makes the flags, the
// environment variables (CHAT_ + upper-case key with '.' as '_') and the
// YAML keys, so they cannot drift apart.
type setting struct {
	key  string
	def  any
	help string
}

func settings() []setting {
	d := system.Defaults()
	return []setting{
		{"http.addr", d.HTTPAddr, "gateway HTTP listen address (chat page, /socket, /healthz, /metrics)"},
		{"nats.host", d.NATSHost, "embedded nats-server listen host"},
		{"nats.port", d.NATSPort, "embedded nats-server client port (-1: random)"},
		{"data_dir", d.DataDir, "folder for JetStream data and the generated secret"},
		{"auth.secret_key_base", []string{}, "token secrets; the first signs, all verify (default: generated in data_dir)"},
		{"auth.salt", d.TokenSalt, "Phoenix.Token salt"},
		{"auth.max_age", d.TokenMaxAge, "token lifetime"},
		{"gateway.allow_anonymous", d.Gateway.AllowAnonymous, "accept sockets without a token"},
		{"gateway.dev_login", d.Gateway.DevLogin, "serve GET /token?user_id=NAME (development only)"},
		{"gateway.request_timeout", 5 * time.Second, "timeout of each request to a service"},
		{"gateway.send_queue", 1024, "frames queued per socket before it is closed as a slow consumer"},
		{"gateway.idle_timeout", 60 * time.Second, "close sockets with no traffic for this long"},
		{"gateway.max_frame_size", 1 << 20, "largest client frame in bytes"},
		{"gateway.max_channels", 100, "topics one socket may join"},
		{"gateway.rate_limit", 1000, "frames per second one socket may send (heartbeats exempt; -1: no limit)"},
		{"gateway.rate_burst", 1000, "burst of frames above the rate"},
		{"gateway.check_origin", []string{}, "allowed browser origins (empty: same host; *: any)"},
		{"gateway.assets_dir", d.Gateway.AssetsDir, "folder holding phoenix.min.js from npm"},
		{"rooms.public", []string{}, "extra public topics; a trailing * matches a prefix (rooms:lobby is always public)"},
		{"rooms.max_body_length", d.Rooms.MaxBodyLength, "longest new_msg body in characters"},
		{"rooms.announce_joins", d.Rooms.AnnounceJoins, "broadcast user_joined {user_id} when a logged-in user joins a room"},
		{"log.level", "info", "debug, info, warn or error"},
		{"log.format", "json", "json or text"},
	}
}

// loadConfig reads flags, CHAT_* environment variables and an optional YAML
// file, in that order of precedence, over the defaults.
func loadConfig(args []string) (system.Config, *slog.Logger, error) {
	v := viper.New()
	fs := pflag.NewFlagSet("chat", pflag.ContinueOnError)
	configFile := fs.String("config", "", "YAML config file (keys as in the table in the README)")
	for _, s := range settings() {
		name := strings.NewReplacer(".", "-", "_", "-").Replace(s.key)
		switch d := s.def.(type) {
		case string:
			fs.String(name, d, s.help)
		case int:
			fs.Int(name, d, s.help)
		case bool:
			fs.Bool(name, d, s.help)
		case time.Duration:
			fs.Duration(name, d, s.help)
		case []string:
			fs.StringSlice(name, d, s.help)
		default:
			panic(fmt.Sprintf("setting %s: unsupported default %T", s.key, d))
		}
		v.SetDefault(s.key, s.def)
		if err := v.BindPFlag(s.key, fs.Lookup(name)); err != nil {
			return system.Config{}, nil, err
		}
	}
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: chat [flags]\n\nRuns the whole chat in one process. Every flag is also a CHAT_* environment variable and a YAML key.\n\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		return system.Config{}, nil, err
	}
	v.SetEnvPrefix("CHAT")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if *configFile != "" {
		v.SetConfigFile(*configFile)
		if err := v.ReadInConfig(); err != nil {
			return system.Config{}, nil, fmt.Errorf("config file: %w", err)
		}
	}

	logger, err := newLogger(v.GetString("log.level"), v.GetString("log.format"))
	if err != nil {
		return system.Config{}, nil, err
	}
	cfg := system.Defaults()
	cfg.HTTPAddr = v.GetString("http.addr")
	cfg.NATSHost = v.GetString("nats.host")
	cfg.NATSPort = v.GetInt("nats.port")
	cfg.DataDir = v.GetString("data_dir")
	cfg.SecretKeyBases = nonEmpty(v.GetStringSlice("auth.secret_key_base"))
	cfg.TokenSalt = v.GetString("auth.salt")
	cfg.TokenMaxAge = v.GetDuration("auth.max_age")
	cfg.Gateway = gateway.Options{
		AllowAnonymous: v.GetBool("gateway.allow_anonymous"),
		DevLogin:       v.GetBool("gateway.dev_login"),
		RequestTimeout: v.GetDuration("gateway.request_timeout"),
		SendQueueLen:   v.GetInt("gateway.send_queue"),
		IdleTimeout:    v.GetDuration("gateway.idle_timeout"),
		MaxFrameSize:   v.GetInt64("gateway.max_frame_size"),
		MaxChannels:    v.GetInt("gateway.max_channels"),
		CheckOrigin:    nonEmpty(v.GetStringSlice("gateway.check_origin")),
		RateLimit:      v.GetFloat64("gateway.rate_limit"),
		RateBurst:      v.GetInt("gateway.rate_burst"),
		AssetsDir:      v.GetString("gateway.assets_dir"),
	}
	cfg.Rooms.PublicTopics = nonEmpty(v.GetStringSlice("rooms.public"))
	cfg.Rooms.MaxBodyLength = v.GetInt("rooms.max_body_length")
	cfg.Rooms.AnnounceJoins = v.GetBool("rooms.announce_joins")
	cfg.Logger = logger
	for name, n := range map[string]int64{
		"gateway.send_queue": int64(cfg.Gateway.SendQueueLen), "gateway.max_frame_size": cfg.Gateway.MaxFrameSize,
		"gateway.max_channels": int64(cfg.Gateway.MaxChannels), "rooms.max_body_length": int64(cfg.Rooms.MaxBodyLength),
	} {
		if n <= 0 {
			return system.Config{}, nil, fmt.Errorf("%s must be positive, got %d", name, n)
		}
	}
	for _, secret := range cfg.SecretKeyBases {
		if len(secret) < 32 {
			return system.Config{}, nil, fmt.Errorf("auth.secret_key_base: each secret must be at least 32 bytes (got %d)", len(secret))
		}
	}
	return cfg, logger, nil
}

func nonEmpty(in []string) []string {
	// Environment variables arrive as one string: accept commas there too.
	var out []string
	for _, item := range in {
		for _, s := range strings.Split(item, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

func newLogger(level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("log.format must be json or text, got %q", format)
}

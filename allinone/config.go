package main

import (
	"errors"
	"io"

	"github.com/phxnats/phxnats/allinone/system"
	authcfg "github.com/phxnats/phxnats/authsvc/config"
	gwcfg "github.com/phxnats/phxnats/gateway/config"
	roomcfg "github.com/phxnats/phxnats/roomsvc/config"
	"github.com/phxnats/phxnats/svckit"

	"log/slog"
)

// settings are the one-process default's keys: its own, and those of the
// three services, which mean the same as in their own binaries.
func settings() []svckit.Setting {
	d := system.Defaults()
	own := []svckit.Setting{
		{Key: "http.addr", Default: d.HTTPAddr, Help: "gateway HTTP listen address (chat page, /socket, /healthz, /readyz)"},
		{Key: "ops.addr", Default: d.OpsAddr, Help: "operations listen address (/metrics, /healthz, /readyz); keep it on loopback or a private network"},
		{Key: "nats.host", Default: d.NATSHost, Help: "embedded nats-server listen host"},
		{Key: "nats.port", Default: d.NATSPort, Help: "embedded nats-server client port (-1: random)"},
		{Key: "data_dir", Default: d.DataDir, Help: "folder for JetStream data and the generated secret"},
	}
	all := append(own, authcfg.Settings()...)
	all = append(all, gwcfg.Settings(d.Gateway)...)
	all = append(all, roomcfg.RulesSettings()...) // one embedded server: one KV replica
	all = append(all, roomcfg.LimitSettings()...)
	return append(all, svckit.LogSettings()...)
}

// loadConfig reads flags, CHAT_* environment variables and an optional YAML
// file (--config), in that order of precedence, over the defaults.
func loadConfig(args []string, usage io.Writer) (system.Config, *slog.Logger, error) {
	v, err := svckit.Load("allinone", args, settings(), usage)
	if err != nil {
		return system.Config{}, nil, err
	}
	logger, err := svckit.Logger(v)
	if err != nil {
		return system.Config{}, nil, err
	}
	cfg := system.Defaults()
	cfg.HTTPAddr = v.GetString("http.addr")
	cfg.OpsAddr = v.GetString("ops.addr")
	cfg.NATSHost = v.GetString("nats.host")
	cfg.NATSPort = v.GetInt("nats.port")
	cfg.DataDir = v.GetString("data_dir")
	cfg.Logger = logger
	// No secret configured is fine here: one is generated into data_dir.
	if cfg.SecretKeyBases, err = authcfg.Secrets(v); err != nil && !errors.Is(err, authcfg.ErrNoSecret) {
		return system.Config{}, nil, err
	}
	cfg.TokenSalt = v.GetString("auth.salt")
	cfg.TokenMaxAge = v.GetDuration("auth.max_age")
	if cfg.Bans, err = authcfg.BansOptions(v); err != nil {
		return system.Config{}, nil, err
	}
	cfg.TokenClockSkew = max(cfg.Bans.ClockSkew, 0)
	if err := roomcfg.Limits(v, &cfg.Store); err != nil {
		return system.Config{}, nil, err
	}
	if cfg.Gateway, err = gwcfg.Options(v); err != nil {
		return system.Config{}, nil, err
	}
	if err := gwcfg.CheckDevLogin(v, cfg.HTTPAddr); err != nil {
		return system.Config{}, nil, err
	}
	cfg.DevLoginPublic = v.GetBool("gateway.dev_login_public")
	if cfg.Rooms, err = roomcfg.Rules(v); err != nil {
		return system.Config{}, nil, err
	}
	return cfg, logger, nil
}

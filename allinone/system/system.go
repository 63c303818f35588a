// Package system runs the whole chat in one process: an embedded
// nats-server with JetStream, authsvc, roomsvc and the gateway, each talking
// to the others over NATS exactly as they do when deployed apart.
package system

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/authsvc/auth"
	"github.com/phxnats/phxnats/authsvc/phxtoken"
	"github.com/phxnats/phxnats/gateway"
	gwcfg "github.com/phxnats/phxnats/gateway/config"
	"github.com/phxnats/phxnats/roomsvc/rooms"
	"github.com/phxnats/phxnats/svckit"
)

// Config is the one-process system's configuration. See Defaults.
type Config struct {
	// HTTPAddr is where the gateway listens ("127.0.0.1:0" picks a port).
	// Start refuses the development login (Gateway.DevLogin) on an address
	// beyond loopback unless DevLoginPublic.
	HTTPAddr       string
	DevLoginPublic bool
	// OpsAddr is the operations listener: /metrics (not on HTTPAddr),
	// /healthz and /readyz. Loopback by default.
	OpsAddr string
	// NATSHost and NATSPort are where the embedded nats-server listens for
	// other services and tools; port -1 picks a free port. Clients need
	// the key in DataDir/NATSKeyFile; a host beyond loopback is logged as
	// a warning.
	NATSHost string
	NATSPort int
	// DataDir holds JetStream's files, the generated secret and the
	// generated NATS key (NATSKeyFile).
	DataDir string
	// SecretKeyBases sign and verify tokens (the first signs). Empty means
	// a secret generated once and kept in DataDir.
	SecretKeyBases []string
	// TokenSalt is the Phoenix.Token salt ("user socket" in the guide).
	TokenSalt string
	// TokenMaxAge is how long a token stays valid: tokens are signed with
	// it and none older is accepted.
	TokenMaxAge time.Duration
	// TokenClockSkew is the tolerated clock difference (auth.clock_skew).
	TokenClockSkew time.Duration
	// Bans configures authsvc's ban bucket; Now is for tests.
	Bans auth.BansOptions
	// Store bounds roomsvc's KV buckets (rooms.ignore_max, ...).
	Store rooms.StoreOptions
	// Gateway options; Conn, Logger and Name are filled in by Start.
	Gateway gateway.Options
	// Rooms are the chat rules.
	Rooms rooms.Rules
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Defaults returns the configuration `make run` uses.
func Defaults() Config {
	return Config{
		HTTPAddr:       "127.0.0.1:4000",
		OpsAddr:        "127.0.0.1:4010",
		NATSHost:       "127.0.0.1",
		NATSPort:       4222,
		DataDir:        "data",
		TokenSalt:      "user socket",
		TokenMaxAge:    1209600 * time.Second, // two weeks, as the channels guide verifies
		TokenClockSkew: auth.DefaultClockSkew,
		Gateway:        gatewayDefaults(),
		Rooms:          rooms.Rules{MaxBodyBytes: rooms.DefaultMaxBodyBytes, AnnounceJoins: true},
	}
}

// gatewayDefaults are a deployed gateway's, plus the development login:
// the one-process default is for trying the chat.
func gatewayDefaults() gateway.Options {
	o := gwcfg.Defaults()
	o.DevLogin = true
	return o
}

// System is the running chat.
type System struct {
	cfg      Config
	log      *slog.Logger
	nats     *server.Server
	natsKey  string // the seed file every connection uses
	conns    []*nats.Conn
	auth     *auth.Service
	rooms    *rooms.Service
	store    *rooms.Store
	gateway  *gateway.Gateway
	http     *http.Server
	listener net.Listener
	ops      *http.Server
	opsLn    net.Listener
}

// Start runs every part and returns once the chat is reachable.
func Start(ctx context.Context, cfg Config) (_ *System, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &System{cfg: cfg, log: cfg.Logger}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if cfg.Gateway.DevLogin && !cfg.DevLoginPublic && !svckit.Loopback(cfg.HTTPAddr) {
		return nil, fmt.Errorf("the development login signs a token for any name, and %s is reachable beyond this machine: "+
			"turn it off (--gateway-dev-login=false), listen on loopback, or force it with --gateway-dev-login-public", cfg.HTTPAddr)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	secrets := cfg.SecretKeyBases
	if len(secrets) == 0 {
		secret, err := loadOrCreateSecret(filepath.Join(cfg.DataDir, "secret_key_base"))
		if err != nil {
			return nil, err
		}
		secrets = []string{secret}
	}

	s.natsKey = filepath.Join(cfg.DataDir, NATSKeyFile)
	natsUser, err := loadOrCreateNKey(s.natsKey)
	if err != nil {
		return nil, err
	}
	if !svckit.Loopback(cfg.NATSHost) {
		s.log.Warn("the embedded NATS listens beyond loopback: anyone who can reach it and holds the key can grant rooms and sign tokens",
			"host", cfg.NATSHost, "key", s.natsKey)
	}
	s.nats, err = server.NewServer(&server.Options{
		ServerName: "phxnats-embedded",
		Host:       cfg.NATSHost,
		Port:       cfg.NATSPort,
		JetStream:  true,
		StoreDir:   filepath.Join(cfg.DataDir, "nats"),
		NoSigs:     true,
		NoLog:      true,
		// One user, the generated key: nobody connects without it.
		Nkeys: []*server.NkeyUser{{Nkey: natsUser}},
	})
	if err != nil {
		return nil, fmt.Errorf("nats-server: %w", err)
	}
	go s.nats.Start()
	if !s.nats.ReadyForConnections(15 * time.Second) {
		return nil, fmt.Errorf("nats-server did not start on %s:%d (is the port taken?)", cfg.NATSHost, cfg.NATSPort)
	}

	connect := func(name string) (*nats.Conn, error) {
		auth, err := s.NATSAuth()
		if err != nil {
			return nil, err
		}
		// Each part reads replies in its own inbox, as with deployments/nats.
		nc, err := nats.Connect(s.nats.ClientURL(), nats.Name(name), nats.MaxReconnects(-1), auth,
			nats.CustomInboxPrefix("_INBOX_"+name))
		if err != nil {
			return nil, fmt.Errorf("%s: connect to NATS: %w", name, err)
		}
		s.conns = append(s.conns, nc)
		return nc, nil
	}

	// authsvc
	signer, err := phxtoken.New(phxtoken.Options{
		SecretKeyBases: secrets, Salt: cfg.TokenSalt, MaxAge: cfg.TokenMaxAge,
		MaxAgeCap: cfg.TokenMaxAge, ClockSkew: cfg.TokenClockSkew, Now: cfg.Bans.Now,
	})
	if err != nil {
		return nil, err
	}
	anc, err := connect("authsvc")
	if err != nil {
		return nil, err
	}
	ajs, err := jetstream.New(anc)
	if err != nil {
		return nil, err
	}
	bans, err := auth.OpenBans(ctx, ajs, cfg.Bans)
	if err != nil {
		return nil, err
	}
	if s.auth, err = auth.Start(auth.Options{Conn: anc, Tokens: auth.PhoenixTokens{Signer: signer}, Bans: bans, Logger: s.log.With("svc", "authsvc")}); err != nil {
		return nil, err
	}

	// roomsvc
	rnc, err := connect("roomsvc")
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(rnc)
	if err != nil {
		return nil, err
	}
	if s.store, err = rooms.OpenStore(ctx, js, cfg.Store); err != nil {
		return nil, err
	}
	if s.rooms, err = rooms.Start(rooms.Options{Conn: rnc, Store: s.store, Rules: cfg.Rooms, Logger: s.log.With("svc", "roomsvc")}); err != nil {
		return nil, err
	}

	// gateway
	gnc, err := connect("gateway")
	if err != nil {
		return nil, err
	}
	gopts := cfg.Gateway
	gopts.Conn = gnc
	if gopts.ListenAddr == "" {
		gopts.ListenAddr = cfg.HTTPAddr // for the default gateway.hosts
	}
	gopts.Logger = s.log.With("svc", "gateway")
	if s.gateway, err = gateway.New(gopts); err != nil {
		return nil, err
	}
	public, ops := svckit.SplitOps(s.gateway.Handler())
	if s.opsLn, err = net.Listen("tcp", cfg.OpsAddr); err != nil {
		return nil, fmt.Errorf("ops: listen on %s: %w", cfg.OpsAddr, err)
	}
	if !svckit.Loopback(cfg.OpsAddr) {
		s.log.Warn("the ops listener (/metrics) is not on loopback: keep its port off public networks", "addr", cfg.OpsAddr)
	}
	if s.listener, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("gateway: listen on %s: %w", cfg.HTTPAddr, err)
	}
	s.http = s.serve(s.listener, public)
	s.ops = s.serve(s.opsLn, ops)
	return s, nil
}

func (s *System) serve(ln net.Listener, h http.Handler) *http.Server {
	srv := svckit.NewHTTPServer(h)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return srv
}

// OpsURL is the operations listener's address, e.g. http://127.0.0.1:4010.
func (s *System) OpsURL() string { return "http://" + s.opsLn.Addr().String() }

// URL is the chat page's address, e.g. http://127.0.0.1:4000.
func (s *System) URL() string { return "http://" + s.listener.Addr().String() }

// NATSURL is the embedded nats-server's client address.
func (s *System) NATSURL() string { return s.nats.ClientURL() }

// NATSKeyFile is the path of the nkey seed that NATS clients need
// (nats.NkeyOptionFromSeed, nats --nkey, chatctl --nats-nkey).
func (s *System) NATSKeyFile() string { return s.natsKey }

// NATSAuth is the nats.Option that authenticates with NATSKeyFile.
func (s *System) NATSAuth() (nats.Option, error) { return nats.NkeyOptionFromSeed(s.natsKey) }

// Gateway is the running gateway.
func (s *System) Gateway() *gateway.Gateway { return s.gateway }

// Shutdown drains in dependency order: the gateway's sockets first (they
// get a reconnect code), then the services' subscriptions, then NATS.
func (s *System) Shutdown(ctx context.Context) error {
	var errs []error
	if s.http != nil {
		// Stop accepting; hijacked WebSockets are the gateway's to close.
		if err := s.http.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.ops != nil {
		_ = s.ops.Shutdown(ctx)
	}
	if s.gateway != nil {
		if err := s.gateway.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.rooms != nil {
		s.rooms.Drain(ctx)
	}
	if s.store != nil {
		s.store.Close()
	}
	if s.auth != nil {
		s.auth.Drain(ctx)
	}
	for _, nc := range s.conns {
		if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			errs = append(errs, err)
		}
	}
	s.close()
	return errors.Join(errs...)
}

func (s *System) close() {
	if s.listener != nil {
		_ = s.listener.Close()
	}
	if s.opsLn != nil {
		_ = s.opsLn.Close()
	}
	for _, nc := range s.conns {
		nc.Close()
	}
	if s.nats != nil {
		s.nats.Shutdown()
		s.nats.WaitForShutdown()
	}
}

// loadOrCreateSecret keeps one generated secret_key_base per data folder, so
// tokens survive restarts of the one-process default.
func loadOrCreateSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		secret := strings.TrimSpace(string(b))
		if len(secret) < 32 {
			return "", fmt.Errorf("%s holds a secret shorter than 32 bytes", path)
		}
		return secret, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	buf := make([]byte, 48)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	secret := base64.RawURLEncoding.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write generated secret: %w", err)
	}
	return secret, nil
}

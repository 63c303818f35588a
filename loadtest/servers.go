package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	rpprof "runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/phxnats/phxnats/allinone/system"
	"github.com/phxnats/phxnats/gateway"
	"github.com/phxnats/phxnats/loadtest/baseline"
	"github.com/phxnats/phxnats/roomsvc/rooms"
)

func baselineMain(args []string) int {
	fs := flag.NewFlagSet("baseline-server", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:4700", "listen address (port 0 picks one; printed as LISTEN <addr> on stdout)")
	queue := fs.Int("queue", 1024, "frames buffered per socket before it is closed as a slow consumer")
	coalesce := fs.Bool("coalesce", true, "write all of a socket's queued frames with one syscall (false: one write per frame)")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof here, e.g. 127.0.0.1:6060")
	life := fs.Duration("max-lifetime", 2*time.Hour, "stop by itself after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := loopbackOnly(*addr); err != nil {
		fmt.Fprintln(os.Stderr, "baseline-server:", err)
		return 2
	}
	stopPprof, err := servePprof(*pprofAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline-server: --pprof:", err)
		return 2
	}
	defer stopPprof()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *life)
	defer cancel()
	err = baseline.Serve(ctx, baseline.Options{Addr: *addr, QueueLen: *queue, Coalesce: *coalesce}, func(s *baseline.Server) {
		fmt.Printf("LISTEN %s\n", s.Addr())
		fmt.Fprintf(os.Stderr, "baseline-server: %s (pid %d)\n", s.URL(), os.Getpid())
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline-server:", err)
		return 1
	}
	return 0
}

// servePprof serves net/http/pprof on a loopback address ("": none).
func servePprof(addr string) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	if err := loopbackOnly(addr); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.ListenAndServe() }()
	return func() { _ = srv.Close() }, nil
}

// startCPUProfile profiles this process into path ("": no profile).
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := rpprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { rpprof.StopCPUProfile(); f.Close() }, nil
}

func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("listen on a loopback address only, got %q", host)
	}
	return nil
}

// serveMain runs the same system as the allinone binary (system.Start with
// the allinone defaults), plus a pprof endpoint and an optional CPU
// profile, so the gateway can be profiled under load.
func serveMain(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	httpAddr := fs.String("http-addr", "127.0.0.1:4000", "gateway address (port 0 picks one; printed as LISTEN <addr> on stdout)")
	dataDir := fs.String("data-dir", "", "JetStream data and secret (default: a temporary folder, removed at exit)")
	public := fs.String("rooms-public", "rooms:bench*", "public topics, comma-separated")
	rateLimit := fs.Float64("gateway-rate-limit", -1, "frames/s per socket, and per user and per address (-1: none)")
	sendQueue := fs.Int("gateway-send-queue", 1024, "frames queued per socket")
	idle := fs.Duration("gateway-idle-timeout", 60*time.Second, "idle timeout")
	perAddr := fs.Int("gateway-max-conns-per-address", -1, "WebSockets per client address (-1: no cap; the load spreads ~1,200 sockets over each of its 16 source addresses)")
	secret := fs.String("secret", "", "secret_key_base (default: generated in data-dir)")
	announce := fs.Bool("rooms-announce-joins", false, "broadcast user_joined when a logged-in user joins (allinone's default is true)")
	logLevel := fs.String("log-level", "warn", "debug, info, warn, error")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof here, e.g. 127.0.0.1:6060")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	life := fs.Duration("max-lifetime", 2*time.Hour, "stop by itself after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := loopbackOnly(*httpAddr); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 2
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 2
	}
	if *dataDir == "" {
		d, err := os.MkdirTemp("", "loadtest-serve-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "serve:", err)
			return 1
		}
		defer os.RemoveAll(d)
		*dataDir = d
	}
	cfg := system.Defaults()
	cfg.HTTPAddr = *httpAddr
	cfg.OpsAddr = "127.0.0.1:0" // beside make run
	cfg.NATSPort = -1
	cfg.DataDir = *dataDir
	if *secret != "" {
		cfg.SecretKeyBases = []string{*secret}
	}
	// A load test floods from one address on purpose: every budget the
	// rate limit stands for (socket, user, address, the room's in roomsvc)
	// follows --gateway-rate-limit, and the bounds on waiting frames and
	// on long-poll sessions are off.
	cfg.Gateway.RateLimit = *rateLimit
	cfg.Gateway.UserRateLimit = *rateLimit
	cfg.Gateway.AddrRateLimit = *rateLimit
	cfg.Gateway.MaxPending = gateway.Off
	cfg.Gateway.LongPollMaxSessions = gateway.Off
	cfg.Gateway.LongPollMaxPerAddr = gateway.Off
	if *rateLimit < 0 {
		cfg.Rooms.RoomRateLimit, cfg.Rooms.RoomBytesLimit = rooms.Off, rooms.Off
	}
	cfg.Gateway.SendQueueLen = *sendQueue
	cfg.Gateway.IdleTimeout = *idle
	cfg.Gateway.MaxConnsPerAddr = *perAddr
	cfg.Rooms.AnnounceJoins = *announce
	for _, p := range strings.Split(*public, ",") {
		if p = strings.TrimSpace(p); p != "" {
			cfg.Rooms.PublicTopics = append(cfg.Rooms.PublicTopics, p)
		}
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	}
	defer stopProfile()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *life)
	defer cancel()
	startCtx, cancelStart := context.WithTimeout(ctx, 30*time.Second)
	sys, err := system.Start(startCtx, cfg)
	cancelStart()
	if err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	}
	stopPprof, err := servePprof(*pprofAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "serve: --pprof:", err)
		return 2
	}
	defer stopPprof()
	addr := strings.TrimPrefix(sys.URL(), "http://")
	fmt.Printf("LISTEN %s\n", addr)
	fmt.Fprintf(os.Stderr, "serve: ws://%s/socket/websocket (pid %d, nats %s, data %s)\n", addr, os.Getpid(), sys.NATSURL(), *dataDir)
	<-ctx.Done()
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancelDrain()
	if err := sys.Shutdown(drainCtx); err != nil {
		fmt.Fprintln(os.Stderr, "serve: shutdown:", err)
	}
	return 0
}

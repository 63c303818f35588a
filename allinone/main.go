// Command allinone runs the whole chat in one process: an embedded
// nats-server with JetStream, authsvc, roomsvc and the gateway. It is what
// `make run` starts. Configuration: flags, CHAT_* environment variables and
// a YAML file (--config); see the README.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/phxnats/phxnats/allinone/system"
	"github.com/phxnats/phxnats/svckit"
)

func main() {
	cfg, log, err := loadConfig(os.Args[1:], os.Stderr)
	if errors.Is(err, svckit.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	sys, err := system.Start(startCtx, cfg)
	cancel()
	if err != nil {
		log.Error("start failed", "err", err)
		os.Exit(1)
	}
	log.Info("chat is running", "url", sys.URL(), "nats", sys.NATSURL(), "nats_key", sys.NATSKeyFile(), "data_dir", cfg.DataDir)
	fmt.Fprintf(os.Stderr, "\n  Chat: %s   (NATS: %s, key %s)   Ctrl-C to stop\n\n", sys.URL(), sys.NATSURL(), sys.NATSKeyFile())
	<-ctx.Done()
	stop()
	log.Info("shutting down: draining sockets and services")
	drainCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := sys.Shutdown(drainCtx); err != nil {
		log.Error("shutdown", "err", err)
		os.Exit(1)
	}
	log.Info("stopped")
}

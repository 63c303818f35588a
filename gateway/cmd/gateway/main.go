// Command gateway is the Phoenix endpoint as a service of its own: phoenix.js
// sockets (WebSocket and long-poll) on one side, NATS on the other. Run as
// many as you like behind a load balancer; they share nothing but NATS.
//
// Configuration: flags, CHAT_* environment variables and a YAML file
// (--config); `gateway --help` lists every key.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/phxnats/phxnats/gateway"
	gwcfg "github.com/phxnats/phxnats/gateway/config"
	"github.com/phxnats/phxnats/svckit"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	settings := append([]svckit.Setting{
		{Key: "http.addr", Default: "127.0.0.1:4000", Help: "listen address: /socket, /healthz, /readyz, /metrics and the chat page"},
		{Key: "drain_timeout", Default: 15 * time.Second, Help: "how long SIGTERM waits for sockets to take their last frames"},
	}, svckit.NATSSettings()...)
	settings = append(settings, gwcfg.Settings(gwcfg.Defaults())...)
	settings = append(settings, svckit.LogSettings()...)
	v, err := svckit.Load("gateway", args, settings, os.Stderr)
	if errors.Is(err, svckit.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		return 2
	}
	log, err := svckit.Logger(v)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		return 2
	}
	log = log.With("svc", "gateway")
	opts, err := gwcfg.Options(v)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		return 2
	}
	nc, err := svckit.ConnectNATS(v, "gateway", log)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	opts.Conn, opts.Logger = nc, log
	g, err := gateway.New(opts)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	ctx, stop := svckit.SignalContext()
	defer stop()
	srvCtx, stopServer := context.WithCancel(context.Background())
	defer stopServer()
	addr, err := svckit.ListenAndServe(srvCtx, v.GetString("http.addr"), g.Handler(), log)
	if err != nil {
		log.Error("listen", "addr", v.GetString("http.addr"), "err", err)
		return 1
	}
	log.Info("serving", "addr", addr.String(), "nats", nc.ConnectedUrlRedacted())
	<-ctx.Done()

	// Drain: stop accepting, give every socket its queued frames and a
	// reconnect close code, then let NATS finish what it holds.
	log.Info("draining")
	drain, cancel := context.WithTimeout(context.Background(), v.GetDuration("drain_timeout"))
	defer cancel()
	stopServer()
	status := 0
	if err := g.Shutdown(drain); err != nil {
		log.Warn("sockets still open at the drain deadline were closed", "err", err)
	}
	if err := svckit.DrainNATS(nc, 5*time.Second); err != nil {
		log.Error("NATS drain", "err", err)
		status = 1
	}
	log.Info("stopped")
	return status
}

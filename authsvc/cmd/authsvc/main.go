// Command authsvc signs and verifies user tokens.
//
//	authsvc serve [flags]      serve phx.auth.verify and phx.auth.sign over NATS
//	authsvc token sign|verify  sign or verify a Phoenix.Token on the command line
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/phxnats/phxnats/authsvc/auth"
	authcfg "github.com/phxnats/phxnats/authsvc/config"
	"github.com/phxnats/phxnats/svckit"
)

const usage = `usage:
  authsvc serve [flags]           serve phx.auth.verify and phx.auth.sign over NATS (authsvc serve --help)
  authsvc token sign|verify ...   sign or verify a Phoenix.Token on the command line (authsvc token help)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "token":
		os.Exit(runToken(os.Args[2:], os.Stdout, os.Stderr))
	case "serve":
		os.Exit(runServe(os.Args[2:]))
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "authsvc: unknown command %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}

// runServe runs the service until SIGTERM. It refuses to start without a
// secret: tokens signed with a made-up one would not survive a restart.
func runServe(args []string) int {
	settings := append([]svckit.Setting{
		{Key: "http.addr", Default: "127.0.0.1:4012", Help: "listen address of /healthz, /readyz and /metrics"},
	}, svckit.NATSSettings()...)
	settings = append(settings, authcfg.Settings()...)
	settings = append(settings, svckit.LogSettings()...)
	v, err := svckit.Load("authsvc serve", args, settings, os.Stderr)
	if errors.Is(err, svckit.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "authsvc:", err)
		return 2
	}
	log, err := svckit.Logger(v)
	if err != nil {
		fmt.Fprintln(os.Stderr, "authsvc:", err)
		return 2
	}
	log = log.With("svc", "authsvc")
	secrets, err := authcfg.Secrets(v)
	if err != nil {
		fmt.Fprintln(os.Stderr, "authsvc:", err)
		return 2
	}
	signer, err := authcfg.Signer(v, secrets)
	if err != nil {
		fmt.Fprintln(os.Stderr, "authsvc:", err)
		return 2
	}
	nc, err := svckit.ConnectNATS(v, "authsvc", log)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	svc, err := auth.Start(auth.Options{Conn: nc, Tokens: auth.PhoenixTokens{Signer: signer}, Logger: log})
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	ctx, stop := svckit.SignalContext()
	defer stop()
	srvCtx, stopServer := context.WithCancel(context.Background())
	defer stopServer()
	ops := &svckit.Ops{Conn: nc}
	addr, err := svckit.ListenAndServe(srvCtx, v.GetString("http.addr"), ops.Handler(), log)
	if err != nil {
		log.Error("listen", "addr", v.GetString("http.addr"), "err", err)
		return 1
	}
	log.Info("serving", "ops", addr.String(), "nats", nc.ConnectedUrlRedacted())
	<-ctx.Done()
	log.Info("draining")
	svc.Drain()
	if err := svckit.DrainNATS(nc, 10*time.Second); err != nil {
		log.Error("NATS drain", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

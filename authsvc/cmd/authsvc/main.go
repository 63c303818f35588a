// Command authsvc signs and verifies user tokens.
//
//	authsvc serve [flags]      serve phx.auth.verify and phx.auth.sign over NATS
//	authsvc token sign|verify  sign or verify a Phoenix.Token on the command line
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/viper"

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
	return svckit.Run(svckit.Service{
		Name:     "authsvc",
		OpsAddr:  "127.0.0.1:4012",
		Settings: append(authcfg.Settings(), authcfg.StoreSettings()...),
		Check: func(v *viper.Viper) error {
			secrets, err := authcfg.Secrets(v)
			if err == nil {
				_, err = authcfg.Signer(v, secrets)
			}
			if err == nil {
				_, err = authcfg.BansOptions(v)
			}
			return err
		},
		Start: startServe,
	}, args, os.Stderr)
}

func startServe(ctx context.Context, v *viper.Viper, nc *nats.Conn, log *slog.Logger) (http.Handler, func(context.Context) error, error) {
	secrets, _ := authcfg.Secrets(v)
	signer, err := authcfg.Signer(v, secrets)
	if err != nil {
		return nil, nil, err
	}
	bansOpts, _ := authcfg.BansOptions(v)
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, nil, err
	}
	// JetStream may still be electing leaders when a cluster starts: retry
	// for a while rather than crash-loop.
	var bans *auth.Bans
	for attempt := 1; ; attempt++ {
		openCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		bans, err = auth.OpenBans(openCtx, js, bansOpts)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil || attempt == 60 {
			return nil, nil, errors.Join(errors.New("ban store"), err)
		}
		log.Warn("ban store not reachable yet, retrying", "attempt", attempt, "err", err)
		time.Sleep(time.Second)
	}
	ops := &svckit.Ops{Conn: nc, Ready: []svckit.Probe{bans.Ping}}
	svc, err := auth.Start(auth.Options{
		Conn: nc, Tokens: auth.PhoenixTokens{Signer: signer}, Bans: bans,
		StoreTimeout: v.GetDuration("auth.store_timeout"), Logger: log, Wrap: ops.Instrument,
	})
	if err != nil {
		return nil, nil, err
	}
	return ops.Handler(), func(ctx context.Context) error { svc.Drain(ctx); return nil }, nil
}

// Command authsvc signs and verifies user tokens.
//
//	authsvc serve [flags]      serve phx.auth.verify and phx.auth.sign over NATS
//	authsvc token sign|verify  sign or verify a Phoenix.Token on the command line
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/authsvc/auth"
	"github.com/phxnats/phxnats/authsvc/phxtoken"
)

const usage = `usage:
  authsvc serve [--nats-url URL] [--secret-key-base SKB[,SKB...]] [--salt SALT] [--max-age DURATION]
  authsvc token sign|verify ...   (authsvc token help)

serve reads CHAT_NATS_URL, CHAT_AUTH_SECRET_KEY_BASE, CHAT_AUTH_SALT and
CHAT_AUTH_MAX_AGE when the flags are not given. It refuses to start without a
secret key base.
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
		os.Exit(runServe(os.Args[2:], os.Stderr))
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "authsvc: unknown command %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func runServe(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("nats-url", env("CHAT_NATS_URL", nats.DefaultURL), "NATS server URLs, comma-separated")
	secrets := fs.String("secret-key-base", env("CHAT_AUTH_SECRET_KEY_BASE", ""), "secrets, comma-separated; the first signs")
	salt := fs.String("salt", env("CHAT_AUTH_SALT", "user socket"), "Phoenix.Token salt")
	maxAge := fs.String("max-age", env("CHAT_AUTH_MAX_AGE", "336h"), "token lifetime")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil)).With("svc", "authsvc")
	age, err := time.ParseDuration(*maxAge)
	if err != nil || age <= 0 {
		fmt.Fprintf(stderr, "authsvc: --max-age: want a positive duration such as 336h, got %q\n", *maxAge)
		return 2
	}
	var keys []string
	for _, s := range strings.Split(*secrets, ",") {
		if s = strings.TrimSpace(s); s != "" {
			keys = append(keys, s)
		}
	}
	if len(keys) == 0 {
		fmt.Fprintln(stderr, "authsvc: no secret key base: set --secret-key-base or CHAT_AUTH_SECRET_KEY_BASE")
		return 2
	}
	signer, err := phxtoken.New(phxtoken.Options{SecretKeyBases: keys, Salt: *salt, MaxAge: age})
	if err != nil {
		fmt.Fprintln(stderr, "authsvc:", err)
		return 2
	}
	nc, err := nats.Connect(*url, nats.Name("authsvc"), nats.MaxReconnects(-1))
	if err != nil {
		fmt.Fprintf(stderr, "authsvc: connect to NATS at %s: %v\n", *url, err)
		return 1
	}
	svc, err := auth.Start(auth.Options{Conn: nc, Tokens: auth.PhoenixTokens{Signer: signer}, Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "authsvc:", err)
		return 1
	}
	log.Info("serving", "nats", nc.ConnectedUrl())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	log.Info("draining")
	svc.Drain()
	if err := nc.Drain(); err != nil {
		log.Error("drain", "err", err)
		return 1
	}
	return 0
}

package svckit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/viper"
)

// Service is one binary's part in Run: its settings and how to start it.
type Service struct {
	// Name is the command name, used in usage, logs and the NATS connection name.
	Name string
	// OpsAddr is the default http.addr.
	OpsAddr string
	// PublicOpsAddr, when set, says that http.addr is a public endpoint
	// (the gateway's sockets): Run then serves /metrics not there but on
	// ops.addr, whose default this is, with /healthz and /readyz (see
	// SplitOps).
	PublicOpsAddr string
	// Settings are the service's own keys; Run adds http.addr, nats.*,
	// drain_timeout and log.*.
	Settings []Setting
	// Check validates the configuration before anything connects; its
	// errors are usage errors (exit status 2).
	Check func(v *viper.Viper) error
	// Start starts the service on nc. It returns the handler served on
	// http.addr and the function that drains the service on SIGTERM (before
	// Run drains NATS).
	Start func(ctx context.Context, v *viper.Viper, nc *nats.Conn, log *slog.Logger) (http.Handler, func(context.Context) error, error)
}

// Run is a service binary's main: configuration, logger, NATS, the HTTP
// endpoint, and on SIGINT/SIGTERM a drain in order: the service, then NATS.
// It returns the exit status: 0, 1 for a failure, 2 for a bad configuration.
func Run(s Service, args []string, stderr io.Writer) int {
	settings := append([]Setting{
		{Key: "http.addr", Default: s.OpsAddr, Help: "HTTP listen address (/healthz, /readyz, /metrics)"},
		{Key: "drain_timeout", Default: 15 * time.Second, Help: "how long SIGTERM waits for the service to drain"},
	}, NATSSettings()...)
	if s.PublicOpsAddr != "" {
		settings = append(settings, Setting{Key: "ops.addr", Default: s.PublicOpsAddr,
			Help: "operations listen address (/metrics, /healthz, /readyz); keep it on loopback or a private network"})
	}
	settings = append(settings, s.Settings...)
	settings = append(settings, LogSettings()...)
	v, err := Load(s.Name, args, settings, stderr)
	if errors.Is(err, ErrHelp) {
		return 0
	}
	usage := func(err error) int {
		fmt.Fprintf(stderr, "%s: %v\n", s.Name, err)
		return 2
	}
	if err != nil {
		return usage(err)
	}
	log, err := Logger(v)
	if err != nil {
		return usage(err)
	}
	log = log.With("svc", s.Name)
	if s.Check != nil {
		if err := s.Check(v); err != nil {
			return usage(err)
		}
	}
	nc, err := ConnectNATS(v, s.Name, log)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	ctx, stop := SignalContext()
	defer stop()
	handler, drain, err := s.Start(ctx, v, nc, log)
	if err != nil {
		log.Error("start failed", "err", err)
		nc.Close()
		return 1
	}
	srvCtx, stopServer := context.WithCancel(context.Background())
	defer stopServer()
	var opsAddr net.Addr
	if s.PublicOpsAddr != "" {
		var ops http.Handler
		handler, ops = SplitOps(handler)
		if opsAddr, err = ListenAndServe(srvCtx, v.GetString("ops.addr"), ops, log); err != nil {
			log.Error("listen", "addr", v.GetString("ops.addr"), "err", err)
			return 1
		}
		if !Loopback(v.GetString("ops.addr")) {
			log.Warn("ops.addr is not on loopback: keep its port off public networks", "addr", opsAddr.String())
		}
	}
	addr, err := ListenAndServe(srvCtx, v.GetString("http.addr"), handler, log)
	if err != nil {
		log.Error("listen", "addr", v.GetString("http.addr"), "err", err)
		return 1
	}
	if opsAddr != nil {
		log.Info("serving", "addr", addr.String(), "ops_addr", opsAddr.String(), "nats", nc.ConnectedUrlRedacted())
	} else {
		log.Info("serving", "addr", addr.String(), "nats", nc.ConnectedUrlRedacted())
	}
	<-ctx.Done()

	log.Info("draining")
	status := 0
	drainCtx, cancel := context.WithTimeout(context.Background(), v.GetDuration("drain_timeout"))
	defer cancel()
	stopServer()
	if err := drain(drainCtx); err != nil {
		log.Warn("drain incomplete", "err", err)
	}
	if err := DrainNATS(nc, 10*time.Second); err != nil {
		log.Error("NATS drain", "err", err)
		status = 1
	}
	log.Info("stopped")
	return status
}

// Exit runs s with the process's arguments and exits with its status.
func Exit(s Service) { os.Exit(Run(s, os.Args[1:], os.Stderr)) }

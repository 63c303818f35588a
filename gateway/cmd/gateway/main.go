// Command gateway is the Phoenix endpoint as a service of its own: phoenix.js
// sockets (WebSocket and long-poll) on one side, NATS on the other. Run as
// many as you like behind a load balancer; they share nothing but NATS.
//
// Configuration: flags, CHAT_* environment variables and a YAML file
// (--config); `gateway --help` lists every key. On SIGTERM every socket gets
// its queued frames and close code 1012, after which phoenix.js reconnects.
package main

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/spf13/viper"

	"github.com/phxnats/phxnats/gateway"
	gwcfg "github.com/phxnats/phxnats/gateway/config"
	"github.com/phxnats/phxnats/svckit"
)

func main() {
	svckit.Exit(svckit.Service{
		Name:    "gateway",
		OpsAddr: "127.0.0.1:4000", // the public endpoint: sockets, page, /healthz, /readyz
		// /metrics stays off the public endpoint, on ops.addr.
		PublicOpsAddr: "127.0.0.1:4010",
		Settings:      gwcfg.Settings(gwcfg.Defaults()),
		Check: func(v *viper.Viper) error {
			if _, err := gwcfg.Options(v); err != nil {
				return err
			}
			return gwcfg.CheckDevLogin(v, v.GetString("http.addr"))
		},
		Start: func(_ context.Context, v *viper.Viper, nc *nats.Conn, log *slog.Logger) (http.Handler, func(context.Context) error, error) {
			opts, err := gwcfg.Options(v)
			if err != nil {
				return nil, nil, err
			}
			opts.Conn, opts.Logger = nc, log
			g, err := gateway.New(opts)
			if err != nil {
				return nil, nil, err
			}
			return g.Handler(), g.Shutdown, nil
		},
	})
}

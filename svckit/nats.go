package svckit

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/viper"
)

// NATSSettings are the NATS connection keys of the service binaries.
func NATSSettings() []Setting {
	return []Setting{
		{"nats.url", nats.DefaultURL, "NATS server URLs, comma-separated (a cluster's seed list)"},
		{"nats.user", "", "NATS user name"},
		{"nats.password", "", "NATS password"},
		{"nats.creds", "", "NATS credentials file (JWT auth)"},
	}
}

// InboxPrefix is where the service called name receives replies:
// "_INBOX_" + name. The NATS users of deployments/nats may subscribe only
// to their own role's inbox, so that no role reads another's replies; the
// service name is the role's user name.
func InboxPrefix(name string) string { return "_INBOX_" + name }

// ConnectNATS connects as name with the nats.* settings, its replies
// arriving under InboxPrefix(name). The connection
// reconnects forever with jittered backoff and buffers publishes while
// reconnecting (nats.go's default 8 MiB), so a NATS node going away is a
// pause, not a crash; requests made meanwhile fail fast and callers answer
// their clients with an error.
func ConnectNATS(v *viper.Viper, name string, log *slog.Logger) (*nats.Conn, error) {
	url := v.GetString("nats.url")
	opts := []nats.Option{
		nats.Name(name),
		nats.CustomInboxPrefix(InboxPrefix(name)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: our own Close or Drain
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("NATS error", "subject", subject, "err", err)
		}),
	}
	if u := v.GetString("nats.user"); u != "" {
		opts = append(opts, nats.UserInfo(u, v.GetString("nats.password")))
	}
	if c := v.GetString("nats.creds"); c != "" {
		opts = append(opts, nats.UserCredentials(c))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", url, err)
	}
	log.Info("connected to NATS", "server", nc.ConnectedUrlRedacted())
	return nc, nil
}

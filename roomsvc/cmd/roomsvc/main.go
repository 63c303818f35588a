// Command roomsvc serves the chat rooms over NATS: join authorization with
// memberships in JetStream KV, new_msg validation and broadcast, ignore
// lists, membership management. It keeps no state of its own: run as many
// instances as you like; they share the work through a queue group.
//
// Configuration: flags, CHAT_* environment variables and a YAML file
// (--config); `roomsvc --help` lists every key.
package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/viper"

	roomcfg "github.com/phxnats/phxnats/roomsvc/config"
	"github.com/phxnats/phxnats/roomsvc/rooms"
	"github.com/phxnats/phxnats/svckit"
)

func main() {
	svckit.Exit(svckit.Service{
		Name:     "roomsvc",
		OpsAddr:  "127.0.0.1:4011",
		Settings: roomcfg.Settings(),
		Check: func(v *viper.Viper) error {
			_, err := roomcfg.Rules(v)
			if err == nil {
				_, err = roomcfg.StoreOptions(v)
			}
			return err
		},
		Start: start,
	})
}

func start(ctx context.Context, v *viper.Viper, nc *nats.Conn, log *slog.Logger) (http.Handler, func(context.Context) error, error) {
	rules, _ := roomcfg.Rules(v)
	storeOpts, _ := roomcfg.StoreOptions(v)
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, nil, err
	}
	// JetStream may still be electing leaders when a cluster starts: retry
	// for a while rather than crash-loop.
	var store *rooms.Store
	for attempt := 1; ; attempt++ {
		// Short attempts: on a fresh cluster a stalled attempt succeeds at
		// once when retried, while a long one only waits out its timeout.
		openCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		store, err = rooms.OpenStore(openCtx, js, storeOpts)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil || attempt == 60 {
			return nil, nil, errors.Join(errors.New("membership store"), err)
		}
		log.Warn("membership store not reachable yet, retrying", "attempt", attempt, "err", err)
		time.Sleep(time.Second)
	}
	ops := &svckit.Ops{Conn: nc, Ready: []svckit.Probe{store.Ping}}
	svc, err := rooms.Start(rooms.Options{Conn: nc, Store: store, Rules: rules, StoreTimeout: v.GetDuration("rooms.store_timeout"), Logger: log, Wrap: ops.Instrument})
	if err != nil {
		return nil, nil, err
	}
	return ops.Handler(), func(ctx context.Context) error { svc.Drain(ctx); store.Close(); return nil }, nil
}

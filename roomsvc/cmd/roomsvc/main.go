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
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	roomcfg "github.com/phxnats/phxnats/roomsvc/config"
	"github.com/phxnats/phxnats/roomsvc/rooms"
	"github.com/phxnats/phxnats/svckit"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	settings := append([]svckit.Setting{
		{Key: "http.addr", Default: "127.0.0.1:4011", Help: "listen address of /healthz, /readyz and /metrics"},
	}, svckit.NATSSettings()...)
	settings = append(settings, roomcfg.Settings()...)
	settings = append(settings, svckit.LogSettings()...)
	v, err := svckit.Load("roomsvc", args, settings, os.Stderr)
	if errors.Is(err, svckit.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "roomsvc:", err)
		return 2
	}
	log, err := svckit.Logger(v)
	if err != nil {
		fmt.Fprintln(os.Stderr, "roomsvc:", err)
		return 2
	}
	log = log.With("svc", "roomsvc")
	rules, err := roomcfg.Rules(v)
	if err != nil {
		fmt.Fprintln(os.Stderr, "roomsvc:", err)
		return 2
	}
	storeOpts, err := roomcfg.StoreOptions(v)
	if err != nil {
		fmt.Fprintln(os.Stderr, "roomsvc:", err)
		return 2
	}

	nc, err := svckit.ConnectNATS(v, "roomsvc", log)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	js, err := jetstream.New(nc)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	ctx, stop := svckit.SignalContext()
	defer stop()
	// JetStream may still be electing leaders when a cluster starts: retry.
	var store *rooms.Store
	for attempt := 1; ; attempt++ {
		openCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		store, err = rooms.OpenStore(openCtx, js, storeOpts)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil || attempt == 30 {
			log.Error("start failed: membership store", "err", err)
			return 1
		}
		log.Warn("membership store not reachable yet, retrying", "attempt", attempt, "err", err)
		time.Sleep(time.Second)
	}
	svc, err := rooms.Start(rooms.Options{Conn: nc, Store: store, Rules: rules, StoreTimeout: v.GetDuration("rooms.store_timeout"), Logger: log})
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	ops := &svckit.Ops{Conn: nc, Ready: []svckit.Probe{store.Ping}}
	srvCtx, stopServer := context.WithCancel(context.Background())
	defer stopServer()
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

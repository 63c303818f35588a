// Package gwtest gives the gateway's tests what a transport runs on: a real
// nats-server with the room stream roomsvc would create, stand-ins that
// answer as authsvc (the token "u:NAME" is user NAME) and as a rooms
// service that admits every join and answers ok to every push, and the
// gateway's parts wired on it (fan-out, registry, session configuration,
// connect checks).
package gwtest

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/gateway/connect"
	"github.com/phxnats/phxnats/gateway/fanout"
	"github.com/phxnats/phxnats/gateway/metrics"
	"github.com/phxnats/phxnats/gateway/registry"
	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/proto"
	"github.com/phxnats/phxnats/proto/natstest"
)

// Env is a gateway's parts on a real NATS server.
type Env struct {
	// Conn is the gateway's connection; Services the stand-ins'.
	Conn, Services *nats.Conn
	Metrics        *metrics.Metrics
	Logger         *slog.Logger
	Hub            *fanout.Hub
	Registry       *registry.Registry
	Session        *session.Config
	Connect        *connect.Checker
}

// Quiet is a logger that drops everything.
func Quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// New starts a NATS server with the stand-ins and wires the parts on it,
// with the gateway's defaults: no anonymous sockets, no rate limit.
func New(t testing.TB) *Env {
	t.Helper()
	ns := natstest.Start(t, natstest.Options{})
	e := &Env{Conn: natstest.Connect(t, ns), Services: natstest.Connect(t, ns), Metrics: metrics.New(), Logger: Quiet()}
	js, err := jetstream.New(e.Services)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proto.EnsureRoomStream(context.Background(), js, proto.RoomStreamOptions{}); err != nil {
		t.Fatal(err)
	}
	Respond(t, e.Services, proto.SubjectAuthVerify, func(b []byte) any {
		var req proto.VerifyRequest
		_ = json.Unmarshal(b, &req)
		if user, ok := strings.CutPrefix(req.Token, "u:"); ok {
			return proto.VerifyReply{UserID: user}
		}
		return proto.VerifyReply{Error: "invalid"}
	})
	Respond(t, e.Services, proto.JoinSubject(proto.ServiceRooms), func([]byte) any { return proto.OK(nil) })
	Respond(t, e.Services, proto.PushSubject(proto.ServiceRooms), func([]byte) any { return proto.OK(nil) })
	if err := e.Services.Flush(); err != nil {
		t.Fatal(err)
	}
	if e.Hub, err = fanout.New(fanout.Options{Conn: e.Conn, Linger: session.Off, Logger: e.Logger, Metrics: e.Metrics}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Hub.Close)
	if e.Registry, err = registry.New(e.Conn, e.Logger); err != nil {
		t.Fatal(err)
	}
	e.Session = &session.Config{
		Conn: e.Conn, Rooms: e.Hub, Metrics: e.Metrics, Logger: e.Logger, Registry: e.Registry,
		Routes:  []session.Route{{Pattern: "rooms:*", Service: proto.ServiceRooms}},
		Gateway: "gw", RequestTimeout: 5 * time.Second, MaxChannels: 100, RateLimit: session.Off,
	}
	if e.Connect, err = connect.New(connect.Options{Conn: e.Conn, RequestTimeout: 5 * time.Second, Metrics: e.Metrics, Logger: e.Logger}); err != nil {
		t.Fatal(err)
	}
	return e
}

// Deps are the parts as a transport gets them.
func (e *Env) Deps() connect.Deps {
	return connect.Deps{Session: e.Session, Connect: e.Connect, Metrics: e.Metrics, Logger: e.Logger}
}

// Respond answers every request on subject with f's value as JSON.
func Respond(t testing.TB, nc *nats.Conn, subject string, f func(req []byte) any) {
	t.Helper()
	if _, err := nc.Subscribe(subject, func(m *nats.Msg) {
		data, _ := json.Marshal(f(m.Data))
		_ = m.Respond(data)
	}); err != nil {
		t.Fatal(err)
	}
}

// WaitUser waits until user has n sessions and returns them.
func (e *Env) WaitUser(t testing.TB, user string, n int) []*session.Session {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ss := e.Registry.User(user); len(ss) == n {
			return ss
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d sessions, want %d", user, len(e.Registry.User(user)), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WaitNoSessions waits until every session has ended.
func (e *Env) WaitNoSessions(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.Registry.Len() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions left", e.Registry.Len())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

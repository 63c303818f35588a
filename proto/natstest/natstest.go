// Package natstest starts real, embedded nats-servers for tests: on a random
// loopback port, with JetStream in a temporary folder, shut down by
// t.Cleanup. Every module's tests use it so that none of them mocks NATS.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Options tune Start. The zero value starts a server with JetStream.
type Options struct {
	// NoJetStream starts a core-NATS-only server.
	NoJetStream bool
	// StoreDir keeps JetStream data in a given folder, so that a test can
	// restart a server on the same data; default t.TempDir().
	StoreDir string
	// Port defaults to a random free port (-1).
	Port int
	// NKey, an nkey user's public key, makes it the only user: clients
	// connect with its seed (nats.NkeyOptionFromSeed).
	NKey string
}

// Start runs a nats-server for the duration of the test.
func Start(t testing.TB, o Options) *server.Server {
	t.Helper()
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      o.Port,
		NoLog:     true,
		NoSigs:    true,
		JetStream: !o.NoJetStream,
		StoreDir:  o.StoreDir,
	}
	if o.NKey != "" {
		opts.Nkeys = []*server.NkeyUser{{Nkey: o.NKey}}
	}
	if opts.Port == 0 {
		opts.Port = -1
	}
	if opts.JetStream && opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("natstest: nats-server did not become ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect opens a client connection to s, closed by t.Cleanup.
func Connect(t testing.TB, s *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("natstest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

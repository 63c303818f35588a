package registry_test

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/gateway/internal/gwtest"
	"github.com/phxnats/phxnats/gateway/metrics"
	"github.com/phxnats/phxnats/gateway/registry"
	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
	"github.com/phxnats/phxnats/proto/natstest"
)

// rooms is a fan-out that only remembers who is in which room: the
// registry's behaviour does not depend on broadcasts.
type rooms struct {
	mu sync.Mutex
	in map[string]bool
}

func (r *rooms) Join(_ context.Context, topic string, _ *session.Session, _ *session.Want) (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.in[topic] = true
	return 0, nil
}

func (r *rooms) Release(string, *session.Session, uint64) {}

func (r *rooms) Leave(topic string, _ *session.Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.in, topic)
}

// transport records the frames its session sends.
type transport struct {
	mu     sync.Mutex
	frames []string
}

func (t *transport) Serializer() wire.Serializer { return wire.V2 }
func (t *transport) Close(session.Disconnect)    {}
func (t *transport) Deliver(f session.Frame) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.frames = append(t.frames, string(f.Data))
}

func (t *transport) has(s string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, f := range t.frames {
		if f == s {
			return true
		}
	}
	return false
}

// A kick published while the gateway is cut off from NATS never arrives:
// after the reconnect, the registry has every session ask again for its
// confirmed channels, and one whose membership went meanwhile is closed.
func TestReconfirmAfterReconnect(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ns := natstest.Start(t, natstest.Options{StoreDir: dir})
	port := ns.Addr().(*net.TCPAddr).Port
	reconnecting := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(20 * time.Millisecond)}
	nc := natstest.Connect(t, ns, reconnecting...)
	svc := natstest.Connect(t, ns, reconnecting...)
	var revoked atomic.Bool
	gwtest.Respond(t, svc, proto.JoinSubject("priv"), func([]byte) any {
		return proto.Reply{Status: proto.StatusOK, Confirm: true}
	})
	gwtest.Respond(t, svc, proto.JoinedSubject("priv"), func(b []byte) any {
		var req proto.JoinRequest
		_ = json.Unmarshal(b, &req)
		if revoked.Load() && strings.HasSuffix(req.Topic, ":gone") {
			return proto.Error("unauthorized")
		}
		return proto.OK(nil)
	})
	if err := svc.Flush(); err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New(nc, gwtest.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	rs := &rooms{in: map[string]bool{}}
	cfg := &session.Config{
		Conn: nc, Rooms: rs, Registry: reg, Metrics: metrics.New(), Logger: gwtest.Quiet(), Gateway: "gw",
		Routes:         []session.Route{{Pattern: "private:*", Service: "priv"}},
		RequestTimeout: 2 * time.Second, MaxChannels: 100, RateLimit: session.Off,
	}
	tr := &transport{}
	s, _ := session.New(cfg, tr, "alice", "")
	t.Cleanup(s.End)
	for i, topic := range []string{"private:gone", "private:kept"} {
		ref := string(rune('1' + i))
		s.HandleMessage(wire.Message{JoinRef: ref, Ref: ref, Topic: topic, Event: "phx_join", Payload: []byte(`{}`)})
	}
	s.Wait()

	ns.Shutdown()
	ns.WaitForShutdown()
	revoked.Store(true) // and its kick, published now, would reach no gateway
	natstest.Start(t, natstest.Options{StoreDir: dir, Port: port})

	closed := `["1","1","private:gone","phx_close",{}]`
	deadline := time.Now().Add(10 * time.Second)
	for !tr.has(closed) {
		if time.Now().After(deadline) {
			t.Fatalf("no phx_close for the revoked channel after the reconnect; sent %q", tr.frames)
		}
		time.Sleep(10 * time.Millisecond)
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.in["private:gone"] || !rs.in["private:kept"] {
		t.Fatalf("rooms after the reconnect: %v, want private:kept alone", rs.in)
	}
}

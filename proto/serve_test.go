package proto

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/proto/natstest"
)

// Requests are handled concurrently (one waiting on another does not
// deadlock), and Drain returns only once the requests received are
// answered.
func TestServeConcurrentAndDrain(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t, natstest.Options{NoJetStream: true}))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	second := make(chan struct{})
	var answered atomic.Int32
	// One subject: each subscription has a goroutine of its own in nats.go,
	// so only two requests on the same subject show Serve's concurrency.
	subs, err := Serve(nc, "q", map[string]nats.MsgHandler{
		"svc.x": func(m *nats.Msg) {
			if string(m.Data) == "second" {
				close(second)
				answered.Add(1)
				Respond(m, map[string]string{"ok": "second"}, log)
				return
			}
			// Answerable only if the second request runs meanwhile.
			select {
			case <-second:
			case <-time.After(5 * time.Second):
			}
			time.Sleep(200 * time.Millisecond) // still running when Drain starts
			answered.Add(1)
			Respond(m, map[string]string{"ok": "first"}, log)
		},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() {
		_, err := nc.Request("svc.x", []byte("first"), 10*time.Second)
		first <- err
	}()
	time.Sleep(50 * time.Millisecond) // the first is waiting
	// Handled one at a time, this would wait for the first, which waits
	// for it: the request would time out.
	if _, err := nc.Request("svc.x", []byte("second"), 2*time.Second); err != nil {
		t.Fatalf("second request while the first waits: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	subs.Drain(ctx)
	if n := answered.Load(); n != 2 {
		t.Fatalf("Drain returned with %d of 2 requests answered", n)
	}
	if err := <-first; err != nil {
		t.Fatalf("first request: %v", err)
	}
}

// A request whose deadline (DeadlineHeader) passed before its turn is
// dropped unanswered, so that what its sender was told failed never
// happens later; one with time left, or without a deadline, is handled.
func TestServeDropsExpiredRequests(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t, natstest.Options{NoJetStream: true}))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	handled := make(chan string, 10)
	subs, err := Serve(nc, "q", map[string]nats.MsgHandler{
		"svc.x": func(m *nats.Msg) {
			handled <- string(m.Data)
			Respond(m, map[string]string{"ok": string(m.Data)}, log)
		},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	request := func(name string, deadline time.Time) error {
		m := &nats.Msg{Subject: "svc.x", Data: []byte(name), Header: nats.Header{}}
		if !deadline.IsZero() {
			SetDeadline(m, deadline)
		}
		_, err := nc.RequestMsg(m, 500*time.Millisecond)
		return err
	}
	if err := request("expired", time.Now().Add(-time.Millisecond)); err == nil {
		t.Fatal("a request past its deadline was answered")
	}
	if err := request("in time", time.Now().Add(5*time.Second)); err != nil {
		t.Fatalf("a request within its deadline: %v", err)
	}
	if err := request("no deadline", time.Time{}); err != nil {
		t.Fatalf("a request without a deadline: %v", err)
	}
	close(handled)
	var got []string
	for h := range handled {
		got = append(got, h)
	}
	if len(got) != 2 || got[0] != "in time" || got[1] != "no deadline" {
		t.Fatalf("handled %q, want the two requests with time left", got)
	}
	if subs.Expired() != 1 {
		t.Fatalf("Expired() = %d, want 1", subs.Expired())
	}
}

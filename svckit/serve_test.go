package svckit

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/proto/natstest"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func TestOps(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t, natstest.Options{NoJetStream: true}))
	ready := errors.New("store not reachable")
	ops := &Ops{Conn: nc, Ready: []Probe{func(context.Context) error { return ready }}}
	sub, err := nc.Subscribe("svc.echo", ops.Instrument("svc.echo", func(m *nats.Msg) { _ = m.Respond(m.Data) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	srv := httptest.NewServer(ops.Handler())
	t.Cleanup(srv.Close)

	if code, _ := get(t, srv.URL+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, body := get(t, srv.URL+"/readyz"); code != 503 || !strings.Contains(body, "store not reachable") {
		t.Errorf("/readyz with a failing probe = %d %s", code, body)
	}
	ready = nil
	if code, _ := get(t, srv.URL+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d", code)
	}
	for i := 0; i < 3; i++ {
		if _, err := nc.Request("svc.echo", []byte("x"), 5e9); err != nil {
			t.Fatal(err)
		}
	}
	_, metrics := get(t, srv.URL+"/metrics")
	for _, want := range []string{`phx_service_requests_total{subject="svc.echo"} 3`, "phx_nats_client_connected 1", "go_goroutines"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	nc.Close()
	if code, _ := get(t, srv.URL+"/healthz"); code != 503 {
		t.Errorf("/healthz with NATS closed = %d", code)
	}
}

// /metrics is served on the operations listener only; the public endpoint
// keeps everything else, health and readiness included.
func TestSplitOps(t *testing.T) {
	h := http.NewServeMux()
	for _, path := range []string{"/metrics", "/healthz", "/readyz", "/socket/websocket", "/"} {
		h.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, path) })
	}
	public, ops := SplitOps(h)
	pub, op := httptest.NewServer(public), httptest.NewServer(ops)
	defer pub.Close()
	defer op.Close()
	for _, tt := range []struct {
		srv  *httptest.Server
		path string
		code int
	}{
		{pub, "/metrics", 404}, {pub, "/healthz", 200}, {pub, "/readyz", 200}, {pub, "/socket/websocket", 200}, {pub, "/", 200},
		{op, "/metrics", 200}, {op, "/healthz", 200}, {op, "/readyz", 200}, {op, "/socket/websocket", 404}, {op, "/", 404},
	} {
		if code, _ := get(t, tt.srv.URL+tt.path); code != tt.code {
			t.Errorf("%s%s: %d, want %d", map[bool]string{true: "public", false: "ops"}[tt.srv == pub], tt.path, code, tt.code)
		}
	}
}

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:4000": true, "localhost:4000": true, "[::1]:4000": true, "127.0.0.2:1": true, "127.0.0.1": true,
		":4000": false, "0.0.0.0:4000": false, "[::]:4000": false, "10.0.0.5:4000": false, "example.com:4000": false, "": false,
	} {
		if got := Loopback(addr); got != want {
			t.Errorf("Loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

// Every HTTP server of the system has timeouts: a client that sends its
// request slowly, writes nothing or keeps an idle connection cannot hold a
// connection forever. Writes outlast a long-poll window (10 s by default).
func TestHTTPServerTimeouts(t *testing.T) {
	srv := NewHTTPServer(http.NotFoundHandler())
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.IdleTimeout <= 0 || srv.WriteTimeout <= 10*time.Second {
		t.Fatalf("timeouts: header %v, read %v, write %v, idle %v", srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout)
	}
}

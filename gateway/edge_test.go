package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/phxnats/phxnats/gateway/internal/gwtest"
)

// Issue 13, point 10: a request whose Host is not one of the gateway's
// (by default, on loopback, its loopback names) gets no socket, no token
// and no page, however its Origin agrees: a DNS-rebinding page (evil.test
// resolving to 127.0.0.1) is refused. Health and metrics answer any Host.
func TestUnknownHostRefused(t *testing.T) {
	t.Parallel()
	e := gwtest.New(t)
	g, err := New(Options{Conn: e.Conn, Name: "gw", Logger: gwtest.Quiet(), DevLogin: true, AllowAnonymous: true, ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	port := hs.URL[strings.LastIndex(hs.URL, ":"):]
	tests := []struct {
		name, host, path string
		upgrade          bool
		want             int
	}{
		{"socket, rebinding", "evil.test" + port, "/socket/websocket?vsn=2.0.0", true, http.StatusForbidden},
		{"socket, own host", "127.0.0.1" + port, "/socket/websocket?vsn=2.0.0", true, http.StatusSwitchingProtocols},
		{"socket, localhost", "localhost" + port, "/socket/websocket?vsn=2.0.0", true, http.StatusSwitchingProtocols},
		{"long-poll, rebinding", "evil.test" + port, "/socket/longpoll?vsn=2.0.0", false, http.StatusForbidden},
		{"dev login, rebinding", "evil.test" + port, "/token?user_id=mallory", false, http.StatusForbidden},
		{"page, rebinding", "evil.test" + port, "/", false, http.StatusForbidden},
		{"script, rebinding", "evil.test" + port, "/app.js", false, http.StatusForbidden},
		{"page, own host", "127.0.0.1" + port, "/", false, http.StatusOK},
		{"health, any host", "evil.test" + port, "/healthz", false, http.StatusOK},
		{"metrics, any host", "evil.test" + port, "/metrics", false, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{"Origin": {"http://" + tt.host}}
			if tt.upgrade {
				h.Set("Host", tt.host)
				ws, res, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http")+tt.path, h)
				if err == nil {
					_ = ws.Close()
				}
				if res == nil || res.StatusCode != tt.want {
					t.Fatalf("upgrade: %v %v, want %d", res, err, tt.want)
				}
				return
			}
			req, _ := http.NewRequest("GET", hs.URL+tt.path, nil)
			req.Header = h
			req.Host = tt.host
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.want)
			}
		})
	}
}

// The allowed Hosts default from the listen address; a gateway on every
// interface must be told its names.
func TestHostsFromListenAddr(t *testing.T) {
	t.Parallel()
	e := gwtest.New(t)
	for _, tt := range []struct {
		listen string
		hosts  []string
		ok     bool
	}{
		{"127.0.0.1:4000", nil, true},
		{"", nil, true},
		{"0.0.0.0:4000", nil, false},
		{":4000", nil, false},
		{"0.0.0.0:4000", []string{"chat.example.com"}, true},
		{"0.0.0.0:4000", []string{"*"}, true},
		{"127.0.0.1:4000", []string{"bad host"}, false},
	} {
		_, err := New(Options{Conn: e.Conn, Logger: gwtest.Quiet(), ListenAddr: tt.listen, Hosts: tt.hosts})
		if (err == nil) != tt.ok {
			t.Errorf("listen %q hosts %v: %v", tt.listen, tt.hosts, err)
		}
	}
}

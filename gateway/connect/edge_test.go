package connect

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/phxnats/phxnats/gateway/metrics"
)

func TestHostChecker(t *testing.T) {
	t.Parallel()
	tests := []struct {
		hosts []string
		host  string
		want  bool
	}{
		{LoopbackHosts, "localhost:4000", true},
		{LoopbackHosts, "LOCALHOST", true},
		{LoopbackHosts, "127.0.0.1:4000", true},
		{LoopbackHosts, "[::1]:4000", true},
		{LoopbackHosts, "localhost.:4000", true},
		// DNS rebinding: another name that resolves to 127.0.0.1.
		{LoopbackHosts, "evil.test:4000", false},
		{LoopbackHosts, "127.0.0.2:4000", false},
		{LoopbackHosts, "", false},
		{[]string{"chat.example.com"}, "chat.example.com", true},
		{[]string{"chat.example.com"}, "chat.example.com:443", true},
		{[]string{"chat.example.com"}, "example.com", false},
		{[]string{"*.example.com"}, "chat.example.com", true},
		{[]string{"*.example.com"}, "example.com", true},
		{[]string{"*.example.com"}, "badexample.com", false},
		{[]string{"10.0.0.5"}, "10.0.0.5:4000", true},
		{[]string{"*"}, "anything.test", true},
	}
	for _, tt := range tests {
		h, err := newHostChecker(tt.hosts)
		if err != nil {
			t.Fatal(err)
		}
		if got := h.allowedName(tt.host); got != tt.want {
			t.Errorf("hosts %v, Host %q: allowed = %v, want %v", tt.hosts, tt.host, got, tt.want)
		}
	}
	for _, bad := range [][]string{{}, {"*.exa*mple.com"}, {"a b"}, {"http://x/"}} {
		if _, err := newHostChecker(bad); err == nil {
			t.Errorf("hosts %q accepted", bad)
		}
	}
}

func TestDefaultHosts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		listen string
		want   string // hosts joined by ","; "error" for an error
	}{
		{"", "localhost,127.0.0.1,::1"},
		{"127.0.0.1:4000", "localhost,127.0.0.1,::1"},
		{"localhost:4000", "localhost,127.0.0.1,::1"},
		{"[::1]:0", "localhost,127.0.0.1,::1"},
		{"10.0.0.5:4000", "10.0.0.5"},
		{"chat.internal:4000", "chat.internal"},
		{"0.0.0.0:4000", "error"},
		{":4000", "error"},
		{"[::]:4000", "error"},
	}
	for _, tt := range tests {
		hosts, err := DefaultHosts(tt.listen)
		got := strings.Join(hosts, ",")
		if err != nil {
			got = "error"
		}
		if got != tt.want {
			t.Errorf("DefaultHosts(%q) = %q (%v), want %q", tt.listen, got, err, tt.want)
		}
	}
}

func TestClientAddr(t *testing.T) {
	t.Parallel()
	trusted, err := ParseTrustedProxies([]string{"10.0.0.0/8", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		remote    string
		forwarded []string
		want      string
	}{
		{"direct", "203.0.113.9:5555", nil, "203.0.113.9"},
		{"untrusted peer's header ignored", "203.0.113.9:5555", []string{"1.2.3.4"}, "203.0.113.9"},
		{"trusted proxy", "10.1.2.3:5555", []string{"198.51.100.7"}, "198.51.100.7"},
		{"client's own entry before the proxy's is not believed", "10.1.2.3:5555", []string{"6.6.6.6, 198.51.100.7"}, "198.51.100.7"},
		{"chain of trusted proxies", "10.1.2.3:5555", []string{"198.51.100.7, 10.9.9.9", "10.8.8.8"}, "198.51.100.7"},
		{"garbage stops at the last believed", "10.1.2.3:5555", []string{"nonsense, 10.9.9.9"}, "10.9.9.9"},
		{"only proxies", "10.1.2.3:5555", []string{"10.9.9.9"}, "10.9.9.9"},
		{"trusted without header", "10.1.2.3:5555", nil, "10.1.2.3"},
		{"ipv6 peer", "[::1]:5555", []string{"[2001:db8::1]:443"}, "2001:db8::1"},
		{"v4-mapped", "[::ffff:203.0.113.9]:5555", nil, "203.0.113.9"},
		{"not a TCP peer", "@", nil, "invalid IP"},
	}
	for _, tt := range tests {
		if got := clientAddr(tt.remote, tt.forwarded, trusted).String(); got != tt.want {
			t.Errorf("%s: client %s, want %s", tt.name, got, tt.want)
		}
	}
	if _, err := ParseTrustedProxies([]string{"10.0.0.0/33"}); err == nil {
		t.Error("a bad network was accepted")
	}
}

// FuzzClientAddr checks that no X-Forwarded-For or peer address panics the
// reader, and that the client it names is the peer, or came from the
// header only through a trusted peer.
func FuzzClientAddr(f *testing.F) {
	f.Add("10.1.2.3:5555", "198.51.100.7, 10.9.9.9")
	f.Add("[::1]:1", "[2001:db8::1]:443,,")
	f.Add("203.0.113.9:80", "")
	trusted, _ := ParseTrustedProxies([]string{"10.0.0.0/8", "::1"})
	f.Fuzz(func(t *testing.T, remote, xff string) {
		got := clientAddr(remote, []string{xff}, trusted)
		peer := parseHostAddr(remote)
		if got != peer && !isTrusted(peer, trusted) {
			t.Fatalf("client %v from an untrusted peer %v", got, peer)
		}
		if got.IsValid() && got.Zone() != "" {
			t.Fatalf("client %v has a zone", got)
		}
	})
}

// FuzzHosts checks that no host entry or Host header panics the checker.
func FuzzHosts(f *testing.F) {
	f.Add("*.example.com", "chat.example.com:443")
	f.Add("::1", "[::1]:4000")
	f.Add("localhost", "LOCALHOST.")
	f.Fuzz(func(t *testing.T, entry, host string) {
		h, err := newHostChecker([]string{entry})
		if err != nil {
			return
		}
		_ = h.allowedName(host)
	})
}

// Admit caps connections per address (an IPv6 /64 being one) and in all,
// and gives places back on release, once.
func TestAdmit(t *testing.T) {
	t.Parallel()
	c, err := New(Options{MaxConns: 4, MaxConnsPerAddr: 2, Metrics: metrics.New()})
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("203.0.113.9")
	v6a, v6b := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::ffff:2")
	var releases []func()
	admit := func(addr netip.Addr, want int) {
		t.Helper()
		rel, refused := c.Admit(addr)
		switch {
		case want == 0 && refused != nil:
			t.Fatalf("%v refused with %d", addr, refused.Status)
		case want != 0 && (refused == nil || refused.Status != want):
			t.Fatalf("%v: refusal %+v, want %d", addr, refused, want)
		case refused == nil:
			releases = append(releases, rel)
		}
	}
	admit(a, 0)
	admit(a, 0)
	admit(a, http.StatusTooManyRequests)
	admit(v6a, 0)
	admit(v6b, 0) // the same /64: the gateway is now full
	admit(netip.MustParseAddr("198.51.100.1"), http.StatusServiceUnavailable)
	releases[0]()
	releases[0]() // twice: counted once
	if total, ofA := c.Conns(a); total != 3 || ofA != 1 {
		t.Fatalf("after a release: %d in all, %d of %v", total, ofA, a)
	}
	admit(a, 0)
	admit(netip.MustParseAddr("2001:db8::3"), http.StatusServiceUnavailable)
}

func TestCheckRefusesUnknownHost(t *testing.T) {
	t.Parallel()
	c, err := New(Options{AllowAnonymous: true, Metrics: metrics.New()})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		host string
		want int // 0: admitted
	}{
		{"127.0.0.1:4000", 0},
		{"evil.test:4000", http.StatusForbidden},
	} {
		r := httptest.NewRequest("GET", "http://"+tt.host+"/socket/websocket?vsn=2.0.0", nil)
		r.Header.Set("Origin", "http://"+tt.host)
		client, refused := c.Check(r, r.URL.Query(), "", false)
		switch {
		case tt.want == 0 && refused != nil:
			t.Errorf("%s refused: %+v", tt.host, refused)
		case tt.want != 0 && (refused == nil || refused.Status != tt.want || refused.Reason != "host"):
			t.Errorf("%s: refusal %+v, want %d host", tt.host, refused, tt.want)
		case tt.want == 0 && client.Addr.String() != "192.0.2.1": // httptest's peer
			t.Errorf("client address %v", client.Addr)
		}
	}
}

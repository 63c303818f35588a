package connect

import (
	"net/http/httptest"
	"testing"
)

func TestOriginChecker(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rules  []string
		origin string
		host   string
		want   bool
	}{
		{nil, "", "example.com", true},
		{nil, "http://localhost:4000", "localhost:4000", true},
		{nil, "http://localhost:5000", "localhost:4000", true}, // Phoenix's default compares hosts only
		{nil, "http://127.0.0.1:4000", "localhost:4000", true}, // one of the gateway's hosts
		{nil, "http://evil.example", "localhost:4000", false},
		// DNS rebinding: the page's own name, which resolves to the
		// gateway, is not one of the gateway's hosts (its Host is refused
		// as well, by hostChecker).
		{nil, "http://evil.test:4000", "evil.test:4000", false},
		{nil, "null", "localhost:4000", false},
		{[]string{"*"}, "http://evil.example", "localhost:4000", true},
		{[]string{"false"}, "http://evil.example", "localhost:4000", true},
		{[]string{"https://example.com"}, "https://example.com", "x", true},
		{[]string{"https://example.com"}, "https://example.com:443", "x", true},
		{[]string{"https://example.com"}, "http://example.com", "x", false},
		{[]string{"https://example.com"}, "https://example.com:8443", "x", false},
		{[]string{"//example.com"}, "http://example.com:8080", "x", true},
		{[]string{"//*.example.com"}, "https://chat.example.com", "x", true},
		{[]string{"//*.example.com"}, "https://example.com", "x", true},
		{[]string{"//*.example.com"}, "https://badexample.com", "x", false},
		{[]string{"http://localhost:4000"}, "http://localhost:4000", "x", true},
		{[]string{"http://localhost:4000"}, "http://localhost:4001", "x", false},
	}
	hosts, err := newHostChecker(LoopbackHosts)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		c, err := newOriginChecker(tt.rules)
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest("GET", "http://"+tt.host+"/socket/websocket", nil)
		if tt.origin != "" {
			r.Header.Set("Origin", tt.origin)
		}
		if got := c.allowed(r, hosts); got != tt.want {
			t.Errorf("rules %v origin %q host %q: allowed = %v, want %v", tt.rules, tt.origin, tt.host, got, tt.want)
		}
	}
	for _, bad := range []string{"example.com/path", "http://", "::"} {
		if _, err := newOriginChecker([]string{bad}); err == nil {
			t.Errorf("rule %q accepted", bad)
		}
	}
}

// FuzzOriginRules checks that no configured rule or Origin header panics
// the checker.
func FuzzOriginRules(f *testing.F) {
	f.Add("//*.example.com", "https://chat.example.com", "localhost:4000")
	f.Add("https://example.com", "null", "x")
	f.Add("*", "", "")
	f.Fuzz(func(t *testing.T, rule, origin, host string) {
		c, err := newOriginChecker([]string{rule})
		if err != nil {
			return
		}
		r := httptest.NewRequest("GET", "http://localhost/socket/websocket", nil)
		r.Host = host
		r.Header.Set("Origin", origin)
		_ = c.allowed(r, hostChecker{any: true})
		_ = c.allowed(r, hostChecker{names: map[string]bool{"localhost": true}})
	})
}

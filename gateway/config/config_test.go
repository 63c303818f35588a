package config

import (
	"io"
	"strings"
	"testing"

	"github.com/phxnats/phxnats/svckit"
)

// The development login signs a token for any name: on an address beyond
// loopback it is refused unless forced.
func TestCheckDevLogin(t *testing.T) {
	for _, tt := range []struct {
		args []string
		addr string
		ok   bool
	}{
		{[]string{"--gateway-dev-login"}, "127.0.0.1:4000", true},
		{[]string{"--gateway-dev-login"}, "localhost:4000", true},
		{[]string{"--gateway-dev-login"}, "0.0.0.0:4000", false},
		{[]string{"--gateway-dev-login"}, ":4000", false},
		{[]string{"--gateway-dev-login"}, "10.1.2.3:4000", false},
		{[]string{"--gateway-dev-login", "--gateway-dev-login-public"}, "0.0.0.0:4000", true},
		{nil, "0.0.0.0:4000", true}, // off by default in a deployed gateway
	} {
		v, err := svckit.Load("gateway", tt.args, Settings(Defaults()), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		err = CheckDevLogin(v, tt.addr)
		if (err == nil) != tt.ok || err != nil && !strings.Contains(err.Error(), "--gateway-dev-login-public") {
			t.Errorf("%v on %s: %v, want ok %v", tt.args, tt.addr, err, tt.ok)
		}
	}
}

package connect

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// LoopbackHosts are the names of this machine, allowed by default when the
// gateway listens on a loopback address.
var LoopbackHosts = []string{"localhost", "127.0.0.1", "::1"}

// DefaultHosts are the Hosts a gateway listening on listenAddr answers to
// when none are configured: its loopback names when it listens on
// loopback (or listenAddr is ""), the listen address's host otherwise. A
// gateway listening on every interface (":4000", "0.0.0.0:4000") cannot
// tell which names are its own: it needs them configured, as a Phoenix
// endpoint its url host, and DefaultHosts returns an error.
func DefaultHosts(listenAddr string) ([]string, error) {
	if listenAddr == "" {
		return LoopbackHosts, nil
	}
	host, _, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return nil, fmt.Errorf("gateway: listen address %q: %w", listenAddr, err)
	}
	if host == "localhost" {
		return LoopbackHosts, nil
	}
	if host == "" {
		host = "0.0.0.0" // ":4000" listens on every interface
	}
	a, err := netip.ParseAddr(host)
	switch {
	case err != nil:
		return []string{host}, nil // a name
	case a.IsLoopback():
		return LoopbackHosts, nil
	case a.IsUnspecified():
		return nil, fmt.Errorf("gateway: listening on every interface (%s): set gateway.hosts to the names clients reach this gateway by "+
			"(e.g. chat.example.com; *.example.com for subdomains; * accepts any Host, which leaves local gateways open to DNS rebinding)", listenAddr)
	}
	return []string{a.Unmap().String()}, nil
}

// hostChecker refuses requests whose Host is not one of the gateway's
// names: a page on another name that resolves to the gateway (DNS
// rebinding) cannot reach it. Entries are names or addresses
// ("chat.example.com", "10.0.0.5", "::1"), "*.example.com" (its
// subdomains) or "*" (any Host). Ports are not compared.
type hostChecker struct {
	any     bool
	names   map[string]bool
	domains []string // ".example.com" for "*.example.com"
}

func newHostChecker(list []string) (hostChecker, error) {
	h := hostChecker{names: map[string]bool{}}
	for _, e := range list {
		e = strings.ToLower(strings.TrimSpace(e))
		switch {
		case e == "*":
			h.any = true
		case strings.HasPrefix(e, "*."):
			if len(e) < 3 || strings.ContainsAny(e[2:], "*:/ ") {
				return h, fmt.Errorf("gateway: host %q: want a name, *.domain or *", e)
			}
			h.domains = append(h.domains, e[1:])
		default:
			n := normHost(e)
			if n == "" || strings.ContainsAny(e, "*/ @?#") {
				return h, fmt.Errorf("gateway: host %q: want a name, *.domain or *", e)
			}
			h.names[n] = true
		}
	}
	if !h.any && len(h.names) == 0 && len(h.domains) == 0 {
		return h, fmt.Errorf("gateway: no hosts")
	}
	return h, nil
}

// normHost lowers a Host header's name, without its port, its IPv6
// brackets or a trailing dot; "" when it is not a Host.
func normHost(host string) string {
	host = strings.ToLower(host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().WithZone("").String()
	}
	return strings.TrimSuffix(host, ".")
}

// allowedName reports whether name (a Host or an Origin's host) is one of
// the gateway's.
func (h hostChecker) allowedName(name string) bool {
	if h.any {
		return true
	}
	n := normHost(name)
	if n == "" {
		return false
	}
	if h.names[n] {
		return true
	}
	for _, d := range h.domains {
		if strings.HasSuffix(n, d) || n == d[1:] {
			return true
		}
	}
	return false
}

// HostAllowed reports whether r's Host is one of the gateway's names
// (Options.Hosts).
func (c *Checker) HostAllowed(r *http.Request) bool { return c.hosts.allowedName(r.Host) }

package connect

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// ParseTrustedProxies reads the trusted-proxy setting: addresses ("10.0.0.1",
// "::1") and networks ("10.0.0.0/8", "fd00::/8") of the proxies whose
// X-Forwarded-For is believed.
func ParseTrustedProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("gateway: trusted proxy %q: want an address or a network (10.0.0.0/8)", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// clientAddr is the address of the client behind a request: the peer's
// address, unless the peer is a trusted proxy; then X-Forwarded-For is read
// from its end (the hop the proxy added) towards its start, past every
// trusted proxy, and the first address that is not one is the client's. An
// entry that does not parse stops the walk at the last address believed,
// so a client cannot slip a forged address past its own proxy. The zero
// Addr means the peer's address could not be read (not a TCP peer).
func clientAddr(remote string, forwarded []string, trusted []netip.Prefix) netip.Addr {
	addr := parseHostAddr(remote)
	if !addr.IsValid() || !isTrusted(addr, trusted) {
		return addr
	}
	for i := len(forwarded) - 1; i >= 0; i-- {
		hops := strings.Split(forwarded[i], ",")
		for j := len(hops) - 1; j >= 0; j-- {
			hop := parseHostAddr(strings.TrimSpace(hops[j]))
			if !hop.IsValid() {
				return addr
			}
			addr = hop
			if !isTrusted(addr, trusted) {
				return addr
			}
		}
	}
	return addr
}

// parseHostAddr reads "ip", "ip:port" or "[ipv6]:port".
func parseHostAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		return a.Unmap().WithZone("")
	}
	if h, _, err := net.SplitHostPort(s); err == nil {
		if a, err := netip.ParseAddr(h); err == nil {
			return a.Unmap().WithZone("")
		}
	}
	return netip.Addr{}
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientAddr is the address of the client behind r, reading
// X-Forwarded-For only when r comes from a trusted proxy
// (Options.TrustedProxies). The zero Addr: not a TCP peer.
func (c *Checker) ClientAddr(r *http.Request) netip.Addr {
	return clientAddr(r.RemoteAddr, r.Header.Values("X-Forwarded-For"), c.proxies)
}

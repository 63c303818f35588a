package connect

import (
	"net/http"
	"net/netip"
	"sync"
)

// connLimits count the open connections of a gateway, in all and by client
// address, against Options.MaxConns and Options.MaxConnsPerAddr.
type connLimits struct {
	maxTotal, maxPerAddr int // 0: no limit

	mu     sync.Mutex
	total  int
	byAddr map[netip.Addr]int
}

// addrKey is what the per-address cap counts by: the address itself for
// IPv4, its /64 for IPv6, the smallest network one host is given.
func addrKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// AddrKey is the client address that per-address limits (connection caps
// here, the frame budgets of package session) count by, as text: the
// address for IPv4, its /64 for IPv6; "" when unknown.
func AddrKey(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return addrKey(a).String()
}

// Admit takes one connection's place for a client at addr (ClientAddr), or
// refuses it, counted: 503 when the gateway holds Options.MaxConns
// connections (a client retries, elsewhere behind a balancer), 429 when
// the address holds Options.MaxConnsPerAddr. The transport calls release
// once the connection has ended (or was refused later); calling it more
// than once is harmless.
func (c *Checker) Admit(addr netip.Addr) (release func(), refused *Refusal) {
	l := &c.limits
	key := addrKey(addr)
	l.mu.Lock()
	switch {
	case l.maxTotal > 0 && l.total >= l.maxTotal:
		l.mu.Unlock()
		return nil, c.refuse("full", http.StatusServiceUnavailable)
	case l.maxPerAddr > 0 && addr.IsValid() && l.byAddr[key] >= l.maxPerAddr:
		l.mu.Unlock()
		return nil, c.refuse("address", http.StatusTooManyRequests)
	}
	l.total++
	if addr.IsValid() {
		l.byAddr[key]++
	}
	l.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			l.total--
			if addr.IsValid() {
				if n := l.byAddr[key] - 1; n > 0 {
					l.byAddr[key] = n
				} else {
					delete(l.byAddr, key)
				}
			}
			l.mu.Unlock()
		})
	}, nil
}

// Conns returns the connections admitted and not yet released: in all, and
// of addr's client.
func (c *Checker) Conns(addr netip.Addr) (total, ofAddr int) {
	c.limits.mu.Lock()
	defer c.limits.mu.Unlock()
	return c.limits.total, c.limits.byAddr[addrKey(addr)]
}

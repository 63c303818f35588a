package connect

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// originChecker applies Phoenix's check_origin rules to browser requests.
//
// With no rules the Origin's host must be one of the gateway's Hosts, as
// Phoenix's default compares it with the endpoint's url host (ports are
// not compared, as in Phoenix); with any Host allowed ("*"), it must equal
// the request's Host. Each rule is written as in
// Phoenix: "https://example.com" (scheme, host and the scheme's port),
// "//example.com" (any scheme and port), "//*.example.com" (the domain and
// its subdomains), "http://localhost:4000"; "*" (or "false", as Phoenix's
// check_origin: false) allows any origin.
// Requests without an Origin header (non-browser clients) always pass.
type originChecker struct {
	any   bool
	rules []originRule
}

type originRule struct {
	scheme, host, port string // "" matches anything
	subdomains         bool
}

func newOriginChecker(list []string) (originChecker, error) {
	var c originChecker
	for _, entry := range list {
		if entry == "*" || entry == "false" { // Phoenix: check_origin: false
			c.any = true
			continue
		}
		u, err := url.Parse(entry)
		if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return c, fmt.Errorf("gateway: check_origin entry %q: want scheme://host[:port], //host or //*.domain", entry)
		}
		r := originRule{scheme: strings.ToLower(u.Scheme), host: strings.ToLower(u.Hostname()), port: u.Port()}
		if r.port == "" && r.scheme != "" {
			r.port = defaultPort(r.scheme)
		}
		if h, ok := strings.CutPrefix(r.host, "*."); ok {
			r.host, r.subdomains = h, true
		}
		c.rules = append(c.rules, r)
	}
	return c, nil
}

func defaultPort(scheme string) string {
	switch scheme {
	case "http", "ws":
		return "80"
	case "https", "wss":
		return "443"
	}
	return ""
}

func (c originChecker) allowed(r *http.Request, hosts hostChecker) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || c.any {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	if port == "" {
		port = defaultPort(scheme)
	}
	if len(c.rules) == 0 && !hosts.any {
		return hosts.allowedName(host)
	}
	if len(c.rules) == 0 {
		reqHost := r.Host
		if h, _, err := net.SplitHostPort(reqHost); err == nil {
			reqHost = h
		}
		return host == strings.ToLower(reqHost)
	}
	for _, rule := range c.rules {
		if rule.scheme != "" && rule.scheme != scheme {
			continue
		}
		if rule.port != "" && rule.port != port {
			continue
		}
		if host == rule.host || rule.subdomains && strings.HasSuffix(host, "."+rule.host) {
			return true
		}
	}
	return false
}

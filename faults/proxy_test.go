package faults

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// proxy is a loopback TCP load balancer: each connection goes to the first
// backend that accepts it. cut stands for a network failure between its
// clients and its backends: it ends every connection and refuses new ones
// (accepted, then closed at once) until restore.
type proxy struct {
	ln       net.Listener
	backends []string

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	served  []int // connections per backend
	cutOff  bool
	closed  bool // refuse new connections, keep the others (refuse)
	refused int  // connections refused while cut off or closed
}

func startProxy(t testing.TB, backends ...string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, backends: backends, conns: map[net.Conn]struct{}{}, served: make([]int, len(backends))}
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

func (p *proxy) forward(c net.Conn) {
	p.mu.Lock()
	if p.cutOff || p.closed {
		p.refused++
		p.mu.Unlock()
		c.Close()
		return
	}
	p.mu.Unlock()
	var up net.Conn
	for i, b := range p.backends {
		var err error
		if up, err = net.DialTimeout("tcp", b, time.Second); err == nil {
			p.mu.Lock()
			p.served[i]++
			p.mu.Unlock()
			break
		}
	}
	if up == nil {
		c.Close()
		return
	}
	if !p.track(c, up) {
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done // either side ended: end both
	c.Close()
	up.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// track registers a connection pair; false (and both closed) once the
// proxy is closed.
func (p *proxy) track(c, up net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil || p.cutOff {
		c.Close()
		up.Close()
		return false
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	return true
}

func (p *proxy) counts() (int, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.served[0], p.served[1]
}

// cut ends every connection through the proxy and refuses new ones until
// restore.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutOff = true
	for c := range p.conns {
		c.Close()
	}
}

// restore lets connections through again after cut; it returns how many
// were refused meanwhile.
func (p *proxy) restore() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutOff = false
	n := p.refused
	p.refused = 0
	return n
}

// refuse(true) refuses new connections (accepted, then closed at once)
// and leaves the others as they are, until refuse(false), which returns how
// many were refused meanwhile.
func (p *proxy) refuse(on bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = on
	n := p.refused
	if !on {
		p.refused = 0
	}
	return n
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// lockedWriter collects a process's output for the test to print.
type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(b)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

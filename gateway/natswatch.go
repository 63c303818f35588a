package gateway

import (
	"net/http"
	"time"

	"github.com/phxnats/phxnats/gateway/session"
)

// watchNATS ends every socket once the gateway has been without NATS for
// Options.NATSGrace, and admits sockets again when NATS is back: cut off,
// it would answer heartbeats while pushes time out and broadcasts stop,
// so phoenix.js would never look for a gateway that works. It polls the
// connection's state, a few times per grace period.
func (g *Gateway) watchNATS() {
	g.stopWatch = func() {}
	grace := g.opts.NATSGrace
	if grace <= 0 {
		return
	}
	tick := time.NewTicker(min(max(grace/10, 10*time.Millisecond), time.Second))
	done := make(chan struct{})
	stopped := make(chan struct{})
	g.stopWatch = func() {
		select {
		case <-done:
		default:
			close(done)
			<-stopped
		}
	}
	go func() {
		defer close(stopped)
		defer tick.Stop()
		var since time.Time // when NATS was first seen gone; zero while connected
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			switch connected := g.opts.Conn.IsConnected(); {
			case connected && g.reg.IsCutOff():
				since = time.Time{}
				g.reg.Restore()
				g.log.Info("NATS is back: accepting sockets again")
			case connected:
				since = time.Time{}
			case since.IsZero():
				since = time.Now()
			case !g.reg.IsCutOff() && time.Since(since) >= grace:
				n := g.reg.CutOff(session.DisconnectNoNATS)
				g.log.Warn("NATS unavailable: sockets closed, new ones refused until it is back", "after", time.Since(since).Round(time.Millisecond), "sockets", n)
			}
		}
	}()
}

// refuseWithoutNATS answers 503 to new sockets while the gateway is cut
// off from NATS (watchNATS), so that clients retry elsewhere.
func (g *Gateway) refuseWithoutNATS(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.reg.IsCutOff() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	})
}

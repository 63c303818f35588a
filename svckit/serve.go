package svckit

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Probe reports why a service is not ready; nil means ready.
type Probe func(ctx context.Context) error

// Ops is a service's operations endpoint:
//
//	GET /healthz  200 while the process runs and NATS is connected
//	GET /readyz   200 when every probe passes (ready for traffic)
//	GET /metrics  Prometheus text: Go runtime, process and NATS client metrics
type Ops struct {
	// Conn is the service's NATS connection.
	Conn *nats.Conn
	// Ready are checked by /readyz besides the NATS connection.
	Ready []Probe
	// Registry collects the metrics; nil gets a fresh one.
	Registry *prometheus.Registry

	requests *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
}

// Instrument wraps a NATS request handler to count and time what it
// serves: phx_service_requests_total and phx_service_request_seconds, by
// subject. Pass it as the services' Options.Wrap before calling Handler.
func (o *Ops) Instrument(subject string, h nats.MsgHandler) nats.MsgHandler {
	o.init()
	count := o.requests.WithLabelValues(subject)
	timing := o.seconds.WithLabelValues(subject)
	return func(m *nats.Msg) {
		start := time.Now()
		h(m)
		timing.Observe(time.Since(start).Seconds())
		count.Inc()
	}
}

func (o *Ops) init() {
	if o.requests != nil {
		return
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	o.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "phx_service_requests_total", Help: "NATS requests handled, by subject."}, []string{"subject"})
	o.seconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "phx_service_request_seconds", Help: "Time to handle a NATS request, by subject.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}}, []string{"subject"})
	o.Registry.MustRegister(o.requests, o.seconds, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), natsCollector{o.Conn})
}

// Handler serves the operations endpoints.
func (o *Ops) Handler() http.Handler {
	o.init()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if !o.Conn.IsConnected() {
			writeStatus(w, http.StatusServiceUnavailable, "NATS is not connected: "+o.Conn.Status().String())
			return
		}
		writeStatus(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !o.Conn.IsConnected() {
			writeStatus(w, http.StatusServiceUnavailable, "NATS is not connected: "+o.Conn.Status().String())
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		for _, p := range o.Ready {
			if err := p(ctx); err != nil {
				writeStatus(w, http.StatusServiceUnavailable, err.Error())
				return
			}
		}
		writeStatus(w, http.StatusOK, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{}))
	return mux
}

// SplitOps splits a handler that serves a public endpoint and the Ops
// endpoints alike (the gateway's) in two: public serves all but /metrics,
// which tells how the service runs and stays off the internet; ops serves
// only /healthz, /readyz and /metrics, for an operations listener on
// loopback or a private network. Health and readiness stay public too, for
// load balancers that probe the public port.
func SplitOps(h http.Handler) (public, ops http.Handler) {
	public = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			http.NotFound(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
	ops = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz", "/readyz", "/metrics":
			h.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
	return public, ops
}

// Loopback reports whether a listen address (host:port, or a bare host)
// accepts connections from this machine only: localhost or a loopback IP.
// An empty host, 0.0.0.0 and :: listen on every interface.
func Loopback(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func writeStatus(w http.ResponseWriter, code int, status string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"status": status})
}

// natsCollector exports the client's own counters.
type natsCollector struct{ nc *nats.Conn }

var (
	natsMsgsDesc = prometheus.NewDesc("phx_nats_client_msgs_total", "Messages through the NATS connection.", []string{"direction"}, nil)
	natsRecDesc  = prometheus.NewDesc("phx_nats_client_reconnects_total", "NATS reconnections.", nil, nil)
	natsUpDesc   = prometheus.NewDesc("phx_nats_client_connected", "1 while the NATS connection is up.", nil, nil)
)

func (c natsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- natsMsgsDesc
	ch <- natsRecDesc
	ch <- natsUpDesc
}

func (c natsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.nc.Stats()
	ch <- prometheus.MustNewConstMetric(natsMsgsDesc, prometheus.CounterValue, float64(st.InMsgs), "in")
	ch <- prometheus.MustNewConstMetric(natsMsgsDesc, prometheus.CounterValue, float64(st.OutMsgs), "out")
	ch <- prometheus.MustNewConstMetric(natsRecDesc, prometheus.CounterValue, float64(st.Reconnects))
	up := 0.0
	if c.nc.IsConnected() {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(natsUpDesc, prometheus.GaugeValue, up)
}

// The timeouts of every HTTP server of the system (NewHTTPServer). A
// WebSocket, once upgraded, is no longer the server's (gorilla clears the
// deadlines at the upgrade); a long-poll GET, which waits up to its
// window, extends its own deadlines past it.
const (
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout = 10 * time.Second
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout = 30 * time.Second
	// WriteTimeout bounds a request from the end of its headers to the
	// end of its answer.
	WriteTimeout = 30 * time.Second
	// IdleTimeout closes a keep-alive connection idle for this long.
	IdleTimeout = 60 * time.Second
)

// NewHTTPServer is an http.Server for h with the system's timeouts.
func NewHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
	}
}

// ListenAndServe serves h on addr until ctx ends, then shuts the server
// down. It returns once the listener is open, with the bound address.
func ListenAndServe(ctx context.Context, addr string, h http.Handler, log *slog.Logger) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := NewHTTPServer(h)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "addr", addr, "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	return ln.Addr(), nil
}

// SignalContext is cancelled by SIGINT or SIGTERM: the start of a drain.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// DrainNATS drains nc (finishing what its subscriptions already received
// and flushing publishes) and waits until it is closed or timeout passes.
func DrainNATS(nc *nats.Conn, timeout time.Duration) error {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		if errors.Is(err, nats.ErrConnectionClosed) {
			return nil
		}
		return err
	}
	select {
	case <-closed:
		return nil
	case <-time.After(timeout):
		nc.Close()
		return errors.New("NATS drain timed out")
	}
}

// Package metrics holds the gateway's Prometheus metrics. Each gateway has
// its own registry, so that several gateways can run in one process (tests,
// the one-process default) without colliding.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the gateway's counters and gauges.
type Metrics struct {
	Registry *prometheus.Registry

	// Connections is the number of open sockets, by transport.
	Connections *prometheus.GaugeVec
	// ConnectsRefused counts refused upgrades, by reason.
	ConnectsRefused *prometheus.CounterVec
	// Joins counts phx_join results: ok, error, unmatched, unavailable.
	Joins *prometheus.CounterVec
	// FramesIn counts decoded client frames; FramesOut frames queued to sockets.
	FramesIn, FramesOut prometheus.Counter
	// MalformedFrames counts client frames that could not be decoded (the socket is closed).
	MalformedFrames prometheus.Counter
	// Broadcasts counts room messages received from NATS for rooms with
	// local sockets; Deliveries the frames they fanned out to.
	Broadcasts, Deliveries prometheus.Counter
	// BroadcastsDropped counts room messages that failed validation, by reason.
	BroadcastsDropped *prometheus.CounterVec
	// RateLimited counts client frames refused by the per-socket rate limit.
	RateLimited prometheus.Counter
	// SlowDisconnects counts sockets closed as slow consumers: their send
	// queue was full, or they read nothing for the write timeout.
	SlowDisconnects prometheus.Counter
	// Panics counts panics recovered in one socket's handling (the socket
	// was closed, 1011 where a close frame could still be sent).
	Panics prometheus.Counter
	// OverBudget counts sockets closed because their unfinished message
	// would have taken the bytes held in unfinished messages over the
	// gateway's budget.
	OverBudget prometheus.Counter
	// Rooms is the number of rooms with local sockets on this gateway.
	Rooms prometheus.Gauge
	// RoomConsumerErrors counts errors of the rooms' JetStream consumers
	// (missed heartbeats, a reconnect), after which they are recreated.
	RoomConsumerErrors prometheus.Counter
	// RoomGaps counts rooms whose unread broadcasts left the stream (after
	// a long NATS outage); their sockets got phx_error and rejoin.
	RoomGaps prometheus.Counter
	// RequestSeconds is the latency of NATS requests to services, by subject kind and outcome.
	RequestSeconds *prometheus.HistogramVec
}

// New creates the metrics on a fresh registry, with Go runtime and process collectors.
func New() *Metrics {
	r := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{
		Registry: r,
		Connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "phx_gateway_connections", Help: "Open sockets by transport."}, []string{"transport"}),
		ConnectsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phx_gateway_connects_refused_total", Help: "Refused socket connections by reason."}, []string{"reason"}),
		Joins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phx_gateway_joins_total", Help: "phx_join results."}, []string{"result"}),
		FramesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phx_gateway_frames_in_total", Help: "Client frames decoded."}),
		FramesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phx_gateway_frames_out_total", Help: "Frames queued to sockets, replies and broadcasts."}),
		MalformedFrames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phx_gateway_malformed_frames_total", Help: "Client frames that could not be decoded."}),
		Broadcasts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phx_gateway_broadcasts_total", Help: "Room broadcasts received from NATS for rooms with sockets on this gateway."}),
		Deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phx_gateway_broadcast_deliveries_total", Help: "Broadcast frames queued to local sockets (fan-out)."}),
		BroadcastsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phx_gateway_broadcasts_dropped_total", Help: "Room messages dropped as malformed."}, []string{"reason"}),
		RateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phx_gateway_rate_limited_total", Help: "Client frames refused by the per-socket rate limit."}),
		SlowDisconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phx_gateway_slow_consumer_disconnects_total", Help: "Sockets closed as slow consumers: a full send queue, or nothing read for the write timeout."}),
		Panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phx_gateway_panics_total", Help: "Panics recovered in one socket's handling; the socket was closed."}),
		OverBudget: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phx_gateway_unfinished_over_budget_total", Help: "Sockets closed (1009) because their unfinished message would have taken the bytes held in unfinished messages over the budget."}),
		Rooms: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "phx_gateway_rooms", Help: "Rooms with at least one socket on this gateway."}),
		RoomConsumerErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phx_gateway_room_consumer_errors_total", Help: "Room consumer errors (missed heartbeats, reconnects); the consumer is recreated after each."}),
		RoomGaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phx_gateway_room_gaps_total", Help: "Times unread broadcasts left the room stream before the gateway read them; every joined socket got phx_error."}),
		RequestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "phx_gateway_nats_request_seconds", Help: "Latency of NATS requests to services.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}},
			[]string{"kind", "outcome"}),
	}
	for _, c := range []prometheus.Collector{m.Connections, m.ConnectsRefused, m.Joins, m.FramesIn, m.FramesOut,
		m.MalformedFrames, m.Broadcasts, m.Deliveries, m.BroadcastsDropped, m.RateLimited, m.SlowDisconnects, m.Panics, m.OverBudget, m.Rooms, m.RoomConsumerErrors, m.RoomGaps, m.RequestSeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		f(c)
	}
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

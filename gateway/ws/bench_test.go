package ws

import (
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phxnats/phxnats/gateway/internal/gwtest"
	"github.com/phxnats/phxnats/gateway/session"
)

// BenchmarkDeliver100 queues one shared 100-byte frame to each of 100
// real sockets per iteration, through the write pool, while their clients
// read: the Deliver path and the writers as the fan-out drives them.
func BenchmarkDeliver100(b *testing.B) {
	e := gwtest.New(b)
	s := New(Config{Deps: e.Deps(), SendQueueLen: 1 << 16, WriteTimeout: 10 * time.Second, IdleTimeout: time.Hour, MaxFrameSize: 1 << 20})
	hs := httptest.NewServer(s)
	b.Cleanup(func() {
		hs.Close()
		s.Close()
	})
	url := "ws" + strings.TrimPrefix(hs.URL, "http") + "/socket/websocket?vsn=2.0.0&token=u:bench"
	const sockets = 100
	var read atomic.Int64
	for range sockets {
		ws, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = ws.Close() })
		go func() {
			for {
				if _, _, err := ws.NextReader(); err != nil {
					return
				}
				read.Add(1)
			}
		}()
	}
	var conns []*conn
	for _, ss := range e.WaitUser(b, "bench", sockets) {
		conns = append(conns, ss.Transport().(*conn))
	}
	f := session.Frame{Data: []byte(strings.Repeat("x", 100))}
	b.ReportAllocs()
	n := int64(0)
	for b.Loop() {
		for _, c := range conns {
			c.Deliver(f)
		}
		n += sockets
		if n%(sockets*256) == 0 {
			for read.Load() < n-sockets*256 {
				time.Sleep(50 * time.Microsecond)
			}
		}
	}
	for read.Load() < n {
		time.Sleep(50 * time.Microsecond)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "frames/s")
}

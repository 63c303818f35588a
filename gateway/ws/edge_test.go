package ws

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phxnats/phxnats/gateway/connect"
	"github.com/phxnats/phxnats/gateway/internal/gwtest"
	"github.com/phxnats/phxnats/gateway/metrics"
	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wsframe"
)

// edgeServer is testServer with cfg's limits and deps (nil: gwtest's).
func edgeServer(t *testing.T, e *gwtest.Env, cfg Config, deps *connect.Deps) (*Server, string) {
	t.Helper()
	cfg.Deps = e.Deps()
	if deps != nil {
		cfg.Deps = *deps
	}
	cfg.SendQueueLen = max(cfg.SendQueueLen, 1024)
	cfg.WriteTimeout = 10 * time.Second
	cfg.IdleTimeout = max(cfg.IdleTimeout, time.Minute)
	cfg.MaxFrameSize = max(cfg.MaxFrameSize, 1<<20)
	s := New(cfg)
	hs := httptest.NewServer(s)
	t.Cleanup(func() {
		hs.Close()
		s.Close()
	})
	return s, "ws" + strings.TrimPrefix(hs.URL, "http") + "/socket/websocket?vsn=2.0.0"
}

// expectClose reads until the server's close frame, within 10 seconds: its
// code must be want, and counted, once, by counter.
func expectClose(t *testing.T, ws *websocket.Conn, want int, counter prometheus.Counter) {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if code := readClose(t, ws); code != want {
		t.Fatalf("close %d, want %d", code, want)
	}
	if n := testutil.ToFloat64(counter); n != 1 {
		t.Fatalf("counted %v times, want once", n)
	}
}

// waitFor polls cond for 5 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Issue 13, point 1: what sockets hold of messages not yet complete is
// bounded, per socket by the frame limit and in all by MaxUnfinishedBytes;
// a socket that would pass the budget is closed with 1009, and a socket's
// share is given back when it ends.
func TestUnfinishedMessagesBudget(t *testing.T) {
	forEachReader(t, func(t *testing.T, goroutineReaders bool) {
		e := gwtest.New(t)
		const budget, part = 300 << 10, 100 << 10
		s, url := edgeServer(t, e, Config{MaxUnfinishedBytes: budget, GoroutineReaders: goroutineReaders}, nil)
		fragment := text(false, strings.Repeat("x", part))
		var clients []*websocket.Conn
		for i := range 2 {
			ws, _ := dial(t, e, url, "holder"+string(rune('a'+i)))
			writeRaw(t, ws.NetConn(), fragment)
			clients = append(clients, ws)
			waitFor(t, "the fragment to be held", func() bool { return s.unfinished.Load() >= int64(part*(i+1)) })
		}
		// The third would pass the budget: 1009.
		over, _ := dial(t, e, url, "over")
		writeRaw(t, over.NetConn(), fragment)
		expectClose(t, over, CloseOverBudget, e.Metrics.OverBudget)
		if n := s.unfinished.Load(); n > budget {
			t.Fatalf("%d bytes held, over the budget of %d", n, budget)
		}
		// A socket that goes away gives its share back.
		_ = clients[0].NetConn().Close()
		waitFor(t, "the share to be given back", func() bool { return s.unfinished.Load() < part*2 })
		// A message finished is no longer held, and is handled.
		c := clients[1]
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		writeRaw(t, c.NetConn(), cont(true, `"], [null,"1","phoenix","heartbeat",{}]`))
		// The fragments make a malformed message: the point is only that
		// it was read as one, released, and answered.
		if code := readClose(t, c); code != CloseMalformed {
			t.Fatalf("finished message: close %d, want %d", code, CloseMalformed)
		}
		waitFor(t, "nothing held", func() bool { return s.unfinished.Load() == 0 })
	})
}

// Issue 13, point 1: fragments count against the frame limit together.
func TestFragmentsCountAgainstFrameLimit(t *testing.T) {
	forEachReader(t, func(t *testing.T, goroutineReaders bool) {
		e := gwtest.New(t)
		s, url := edgeServer(t, e, Config{MaxFrameSize: 1 << 20, GoroutineReaders: goroutineReaders}, nil)
		ws, _ := dial(t, e, url, "big")
		half := strings.Repeat("x", 600<<10)
		writeRaw(t, ws.NetConn(), text(false, half), cont(true, half))
		if code := readClose(t, ws); code != websocket.CloseMessageTooBig {
			t.Fatalf("close %d, want 1009", code)
		}
		waitFor(t, "nothing held", func() bool { return s.unfinished.Load() == 0 })
	})
}

// Issue 13, point 1: only complete messages keep a socket open. A client
// that pings and leaves a message unfinished is closed as idle.
func TestIdlePingsAndFragmentsDoNotCount(t *testing.T) {
	forEachReader(t, func(t *testing.T, goroutineReaders bool) {
		e := gwtest.New(t)
		// edgeServer's IdleTimeout is a minute at least; this one is short.
		s := New(Config{Deps: e.Deps(), SendQueueLen: 1024, WriteTimeout: 10 * time.Second, IdleTimeout: 300 * time.Millisecond,
			MaxFrameSize: 1 << 20, GoroutineReaders: goroutineReaders})
		hs := httptest.NewServer(s)
		t.Cleanup(func() {
			hs.Close()
			s.Close()
		})
		start := time.Now() // before the dial: the idle clock starts at the upgrade
		ws, _ := dial(t, e, "ws"+strings.TrimPrefix(hs.URL, "http")+"/socket/websocket?vsn=2.0.0", "pinger")
		writeRaw(t, ws.NetConn(), text(false, `[null,"1","phoenix",`))
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
					if _, err := ws.NetConn().Write(clientFrame(true, wsframe.OpPing, []byte("p"), true)); err != nil {
						return
					}
				}
			}
		}()
		t.Cleanup(func() {
			close(stop)
			<-done
		})
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		if code := readClose(t, ws); code != CloseIdle {
			t.Fatalf("close %d, want %d (idle)", code, CloseIdle)
		}
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Fatalf("closed after %v, before the idle timeout", d)
		}
	})
}

// Issue 13, point 7: the idle timeout reads the Server's monotonic clock,
// never the wall clock. The real clock cannot be stepped in a test, so the
// Server's clock is replaced: while it stands still, wall time passing
// (three idle timeouts of it) closes nothing; once it moves past the idle
// timeout, the socket is closed. Code reading the wall clock (time.Now's
// UnixNano, as before) fails the first half.
func TestIdleReadsTheServersClock(t *testing.T) {
	forEachReader(t, func(t *testing.T, goroutineReaders bool) {
		e := gwtest.New(t)
		const idle = 200 * time.Millisecond
		s := New(Config{Deps: e.Deps(), SendQueueLen: 1024, WriteTimeout: 10 * time.Second, IdleTimeout: idle,
			MaxFrameSize: 1 << 20, GoroutineReaders: goroutineReaders})
		var mono atomic.Int64
		s.clock = func() time.Duration { return time.Duration(mono.Load()) }
		hs := httptest.NewServer(s)
		t.Cleanup(func() {
			hs.Close()
			s.Close()
		})
		ws, _ := dial(t, e, "ws"+strings.TrimPrefix(hs.URL, "http")+"/socket/websocket?vsn=2.0.0", "sleeper")
		_ = ws.SetReadDeadline(time.Now().Add(3 * idle))
		var ne net.Error
		if _, _, err := ws.ReadMessage(); !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("closed while the server's clock stood still: %v", err)
		}
		// A client reading past its deadline is done for (gorilla): the
		// closing is seen on the raw connection.
		mono.Add(int64(time.Minute))
		_ = ws.NetConn().SetReadDeadline(time.Now().Add(5 * time.Second))
		var buf bytes.Buffer
		b := make([]byte, 64)
		for {
			n, err := ws.NetConn().Read(b)
			buf.Write(b[:n])
			if err != nil || buf.Len() >= 4 {
				break
			}
		}
		got := buf.Bytes()
		if len(got) < 4 || got[0] != 0x80|wsframe.OpClose || int(got[2])<<8|int(got[3]) != CloseIdle {
			t.Fatalf("after the clock moved: % x, want a close frame with %d", got, CloseIdle)
		}
	})
}

// Issue 13, point 2: a socket's queue is bounded in bytes as well as in
// frames: a client that does not read is closed as a slow consumer long
// before its 1,024 frames are queued when they are large.
func TestSendQueueBytes(t *testing.T) {
	t.Parallel()
	e := gwtest.New(t)
	_, url := edgeServer(t, e, Config{SendQueueLen: 1024, SendQueueBytes: 1 << 20}, nil)
	ws, c := dial(t, e, url, "hoarder")
	big := session.Frame{Data: bytes.Repeat([]byte("y"), 64<<10)}
	for range 1000 { // 64 MB in 1,000 frames: within the frame bound
		c.Deliver(big)
	}
	expectClose(t, ws, CloseSlowConsumer, e.Metrics.SlowDisconnects)
}

// Issue 13, point 8: a panic in one socket's handling closes that socket
// with 1011 and is counted; the gateway and its other sockets go on. The
// panic comes from the session (a nil metric), on each path a message
// takes: a heartbeat handled on the reader (the poller's worker or the
// socket's goroutine), a join on a goroutine of its own.
func TestPanicClosesOnlyThatSocket(t *testing.T) {
	tests := []struct {
		name, frame string
	}{
		{"heartbeat on the reader", `[null,"1","phoenix","heartbeat",{}]`},
		{"join on its goroutine", `["1","1","rooms:lobby","phx_join",{}]`},
	}
	t.Parallel()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forEachReader(t, func(t *testing.T, goroutineReaders bool) {
				e := gwtest.New(t)
				broken := metrics.New()
				broken.FramesIn = nil // the session panics on the first message
				sc := &session.Config{
					Conn: e.Conn, Rooms: e.Hub, Metrics: broken, Logger: e.Logger, Registry: e.Registry,
					Routes: e.Session.Routes, Gateway: "gw", RequestTimeout: 5 * time.Second, MaxChannels: 100, RateLimit: session.Off,
				}
				deps := e.Deps()
				deps.Session = sc
				_, url := edgeServer(t, e, Config{GoroutineReaders: goroutineReaders}, &deps)
				victim, _ := dial(t, e, url, "victim")
				bystander, bc := dial(t, e, url, "bystander")
				if err := victim.WriteMessage(websocket.TextMessage, []byte(tt.frame)); err != nil {
					t.Fatal(err)
				}
				expectClose(t, victim, ClosePanic, e.Metrics.Panics)
				e.WaitUser(t, "victim", 0)
				bc.Deliver(session.Frame{Data: []byte("still here")})
				_ = bystander.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, b, err := bystander.ReadMessage(); err != nil || string(b) != "still here" {
					t.Fatalf("bystander: %q %v", b, err)
				}
				dial(t, e, url, "newcomer") // the gateway still accepts sockets
			})
		})
	}
}

// Issue 13, point 1: connections are capped per client address (429) and
// per gateway (503) before the upgrade, and a socket that ends gives its
// place back. A trusted proxy's X-Forwarded-For names the client.
func TestConnectionCaps(t *testing.T) {
	t.Parallel()
	e := gwtest.New(t)
	proxies, _ := connect.ParseTrustedProxies([]string{"127.0.0.9"})
	checker, err := connect.New(connect.Options{
		Conn: e.Conn, RequestTimeout: 5 * time.Second, Metrics: e.Metrics, Logger: e.Logger,
		MaxConns: 4, MaxConnsPerAddr: 2, TrustedProxies: proxies,
	})
	if err != nil {
		t.Fatal(err)
	}
	deps := e.Deps()
	deps.Connect = checker
	_, url := edgeServer(t, e, Config{}, &deps)
	n := 0
	connectFrom := func(src, forwarded string, want int) *websocket.Conn {
		t.Helper()
		n++
		d := websocket.Dialer{NetDialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}
		h := http.Header{}
		if forwarded != "" {
			h.Set("X-Forwarded-For", forwarded)
		}
		ws, res, err := d.DialContext(context.Background(), url+"&token=u:user"+string(rune('a'+n)), h)
		if want == http.StatusSwitchingProtocols {
			if err != nil {
				t.Fatalf("from %s (%s): %v", src, forwarded, err)
			}
			t.Cleanup(func() { _ = ws.Close() })
			return ws
		}
		if err == nil || res == nil || res.StatusCode != want {
			t.Fatalf("from %s (%s): %v, want %d", src, forwarded, err, want)
		}
		return nil
	}
	first := connectFrom("127.0.0.1", "", 101)
	connectFrom("127.0.0.1", "", 101)
	connectFrom("127.0.0.1", "", http.StatusTooManyRequests)
	// An untrusted peer's header changes nothing.
	connectFrom("127.0.0.1", "198.51.100.7", http.StatusTooManyRequests)
	// Through the trusted proxy, the client is the one it names.
	connectFrom("127.0.0.9", "127.0.0.1", http.StatusTooManyRequests)
	connectFrom("127.0.0.9", "198.51.100.7", 101)
	connectFrom("127.0.0.2", "", 101)
	connectFrom("127.0.0.3", "", http.StatusServiceUnavailable) // 4 in all
	_ = first.Close()
	waitFor(t, "the place to be given back", func() bool { total, _ := checker.Conns(netip.MustParseAddr("127.0.0.1")); return total == 3 })
	connectFrom("127.0.0.1", "", 101)
	refused := e.Metrics.ConnectsRefused
	if a, f := testutil.ToFloat64(refused.WithLabelValues("address")), testutil.ToFloat64(refused.WithLabelValues("full")); a != 3 || f != 1 {
		t.Fatalf("refusals counted: %v address, %v full", a, f)
	}
}

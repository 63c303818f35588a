package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phxnats/phxnats/gateway/wsframe"
	"github.com/phxnats/phxnats/loadtest/phx"
)

// attackCfg: honest clients chat in one room while attackers do what issue
// 13 lists (unfinished fragments, sockets that never read, an anonymous
// flood, a connection storm and a long-poll session storm from one
// address). It reports what the honest clients lost, their latency, the
// gateway's memory, and which of the gateway's limits fired.
type attackCfg struct {
	common
	Honest       int
	HonestRate   float64
	Duration     time.Duration
	AttackIP     string
	Fragments    int
	FragmentSize int
	Unread       int
	UnreadPing   int
	Flooders     int
	FloodBody    int
	Storm        int
	LongPolls    int
	MetricsURL   string
	Drain        time.Duration
}

func (a *attackCfg) flags(fs *flag.FlagSet) {
	a.common.register(fs)
	fs.IntVar(&a.Honest, "honest", 50, "honest sockets in the honest room (one of them also posts)")
	fs.Float64Var(&a.HonestRate, "honest-rate", 5, "honest messages per second")
	fs.DurationVar(&a.Duration, "duration", 20*time.Second, "how long the honest chat and the attacks run")
	fs.StringVar(&a.AttackIP, "attack-ip", "127.0.0.200", "the attackers' one source address (loopback)")
	fs.IntVar(&a.Fragments, "fragments", 300, "sockets that each send one unfinished fragment (FIN=0) and then only pings")
	fs.IntVar(&a.FragmentSize, "fragment-size", 1<<20, "bytes of each unfinished fragment")
	fs.IntVar(&a.Unread, "unread", 20, "sockets that join, never read, and push ping with --unread-ping bytes")
	fs.IntVar(&a.UnreadPing, "unread-ping", 100<<10, "payload bytes of each unread socket's pings")
	fs.IntVar(&a.Flooders, "flooders", 10, "anonymous sockets posting new_msg as fast as they can into a room of their own")
	fs.IntVar(&a.FloodBody, "flood-body", 4000, "characters of each flood body (escaped: control characters)")
	fs.IntVar(&a.Storm, "storm", 2000, "WebSocket connections opened from --attack-ip as fast as possible")
	fs.IntVar(&a.LongPolls, "longpolls", 2000, "long-poll sessions opened from --attack-ip")
	fs.StringVar(&a.MetricsURL, "metrics-url", "", "the gateway's Prometheus metrics (default: /metrics on --url's host)")
	fs.DurationVar(&a.Drain, "drain", 5*time.Second, "after the attacks, wait this long for honest messages still on their way")
}

// attackers counts what the attackers did and what the gateway answered.
type attackers struct {
	mu     sync.Mutex
	counts map[string]int64
	conns  []net.Conn
}

func (t *attackers) add(name string, n int64) {
	t.mu.Lock()
	t.counts[name] += n
	t.mu.Unlock()
}

func (t *attackers) keep(c net.Conn) {
	t.mu.Lock()
	t.conns = append(t.conns, c)
	t.mu.Unlock()
}

func (t *attackers) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.conns {
		_ = c.Close()
	}
	t.conns = nil
}

func runAttack(ctx context.Context, a *attackCfg, _ *coord) (*Result, error) {
	if a.Procs != 1 {
		return nil, fmt.Errorf("attack runs in one process (--procs 1)")
	}
	attackIP := net.ParseIP(a.AttackIP)
	if attackIP == nil || !attackIP.IsLoopback() {
		return nil, fmt.Errorf("--attack-ip must be a loopback address, got %q", a.AttackIP)
	}
	u, err := url.Parse(a.urlFor(0))
	if err != nil {
		return nil, err
	}
	if a.MetricsURL == "" {
		a.MetricsURL = "http://" + u.Host + "/metrics"
	}
	metrics0, err := scrapeCounters(ctx, a.MetricsURL)
	if err != nil {
		return nil, fmt.Errorf("--metrics-url: %w", err)
	}
	before, _ := sampleProc(a.PID)

	// The honest room: members count every message by its sequence.
	topic := a.Topic + "-honest-" + a.RunID
	part := newPart()
	stats := &phx.Stats{}
	lat := part.hist("latency")
	maxMsgs := int(a.HonestRate*(a.Duration.Seconds()+1)) + 1
	var latMu sync.Mutex
	counts := make([]atomic.Int32, maxMsgs)
	onMsg := func(_ *phx.Conn, fr *phx.Frame) {
		if !bytes.Equal(fr.Event, newMsgEvent) {
			return
		}
		sentAt, seq, ok := parseBody(fr.Payload)
		if !ok || seq < 0 || seq >= maxMsgs {
			return
		}
		counts[seq].Add(1)
		latMu.Lock()
		lat.Record(fr.At - sentAt)
		latMu.Unlock()
	}
	tokens := make([]string, a.Honest+1)
	a.logf("attack: %d honest sockets join %s", a.Honest, topic)
	members := a.dialJoin(ctx, part, stats, tokens, 0, a.Honest, func(int) string { return topic }, onMsg, nil)
	defer closeAll(members, 64)
	pub, err := phx.Dial(ctx, phx.Options{URL: a.urlFor(a.Honest), SrcIP: a.srcIP(a.Honest), Heartbeat: a.Heartbeat, Stats: stats})
	if err != nil {
		return nil, fmt.Errorf("honest publisher: %w", err)
	}
	defer pub.Close()
	pubRef, err := pub.Join(ctx, topic, nil)
	if err != nil {
		return nil, fmt.Errorf("honest publisher: %w", err)
	}

	at := &attackers{counts: map[string]int64{}}
	defer at.closeAll()
	actx, cancel := context.WithTimeout(ctx, a.Duration)
	defer cancel()
	var wg sync.WaitGroup
	run := func(name string, f func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.logf("attack: %s", name)
			f(actx)
		}()
	}
	run("unfinished fragments", func(ctx context.Context) { a.fragments(ctx, u, attackIP, at) })
	run("sockets that never read", func(ctx context.Context) { a.unread(ctx, u, attackIP, at) })
	run("anonymous flood", func(ctx context.Context) { a.flood(ctx, attackIP, at) })
	run("connection storm", func(ctx context.Context) { a.storm(ctx, u, attackIP, at) })
	run("long-poll session storm", func(ctx context.Context) { a.longPollStorm(ctx, u, attackIP, at) })

	// The honest chat, meanwhile.
	sent := 0
	start := time.Now()
	for sent < maxMsgs && actx.Err() == nil {
		due := start.Add(time.Duration(float64(sent) / a.HonestRate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-actx.Done():
			}
			if actx.Err() != nil {
				break
			}
		}
		if _, err := pub.Push(topic, "new_msg", makeBody(time.Now().UnixNano(), sent, 64), pubRef); err != nil {
			part.noteErr(fmt.Errorf("honest publisher: %w", err))
			break
		}
		sent++
	}
	peak, _ := sampleProc(a.PID)
	wg.Wait()
	at.closeAll()
	expected := int64(sent) * int64(countLive(members))
	deadline := time.Now().Add(a.Drain)
	var received int64
	for {
		received = 0
		for i := range sent {
			received += int64(min(int(counts[i].Load()), a.Honest))
		}
		if received >= expected || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // let the gateway settle before the last sample
	after, _ := sampleProc(a.PID)
	metrics1, err := scrapeCounters(ctx, a.MetricsURL)
	if err != nil {
		return nil, err
	}
	part.addStats(stats)

	r := &Result{Scenario: "attack", Target: a.Label, Params: map[string]any{
		"honest": a.Honest, "honest_rate": a.HonestRate, "duration_s": a.Duration.Seconds(),
		"fragments": a.Fragments, "fragment_size": a.FragmentSize, "unread": a.Unread, "unread_ping": a.UnreadPing,
		"flooders": a.Flooders, "flood_body": a.FloodBody, "storm": a.Storm, "longpolls": a.LongPolls,
	}}
	r.add("honest_joined", float64(countLive(members)), "")
	r.add("honest_sent", float64(sent), "")
	r.add("honest_expected", float64(expected), "")
	r.add("honest_lost", float64(expected-received), "")
	r.add("honest_disconnects", float64(part.get("disconnects")), "")
	r.addLatency("honest_latency", lat)
	if before.RSSKiB > 0 {
		r.add("server_rss_before", float64(before.RSSKiB)/1024, "MiB")
		r.add("server_rss_during", float64(peak.RSSKiB)/1024, "MiB")
		r.add("server_rss_after", float64(after.RSSKiB)/1024, "MiB")
		r.add("server_rss_peak", float64(after.HWMKiB)/1024, "MiB")
	}
	names := make([]string, 0, len(at.counts))
	for k := range at.counts {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		r.add("attack_"+k, float64(at.counts[k]), "")
	}
	for _, k := range counterDeltas(metrics0, metrics1) {
		r.add("fired "+k.name, k.delta, "")
	}
	r.Errors = part.Errors
	return r, nil
}

func countLive(conns []*phx.Conn) int {
	n := 0
	for _, c := range conns {
		if c != nil {
			n++
		}
	}
	return n
}

// rawUpgrade opens a WebSocket to u from src by hand, so that the caller
// controls every byte after the handshake (unfinished fragments, a socket
// that never reads). It returns the HTTP status when the upgrade is refused.
func rawUpgrade(ctx context.Context, u *url.URL, src net.IP, query string) (net.Conn, int, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, 0, err
	}
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	req := "GET " + u.Path + "?" + query + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
		base64.StdEncoding.EncodeToString(key) + "\r\n\r\n"
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		return nil, 0, err
	}
	res, err := http.ReadResponse(bufio.NewReaderSize(c, 256), nil)
	if err != nil {
		c.Close()
		return nil, 0, err
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusSwitchingProtocols {
		c.Close()
		return nil, res.StatusCode, nil
	}
	_ = c.SetDeadline(time.Time{})
	return c, res.StatusCode, nil
}

// maskedFrame is a client frame; fin false leaves its message unfinished.
func maskedFrame(op byte, payload []byte, fin bool) []byte {
	key := [4]byte{1, 2, 3, 4}
	b := wsframe.AppendMaskedHeader(make([]byte, 0, 14+len(payload)), op, len(payload), key)
	if !fin {
		b[0] &^= 0x80
	}
	start := len(b)
	b = append(b, payload...)
	wsframe.Mask(b[start:], key)
	return b
}

// fragments: each socket sends one unfinished text fragment, then a ping
// every few seconds to look alive.
func (a *attackCfg) fragments(ctx context.Context, u *url.URL, src net.IP, at *attackers) {
	frag := maskedFrame(wsframe.OpText, bytes.Repeat([]byte{'x'}, a.FragmentSize), false)
	ping := maskedFrame(wsframe.OpPing, []byte("hi"), true)
	var open []net.Conn
	for i := 0; i < a.Fragments && ctx.Err() == nil; i++ {
		c, status, err := rawUpgrade(ctx, u, src, "vsn=2.0.0")
		if err != nil || c == nil {
			at.add(fmt.Sprintf("fragments_refused_%d", status), 1)
			continue
		}
		at.keep(c)
		_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write(frag); err != nil {
			at.add("fragments_cut_off", 1)
			continue
		}
		at.add("fragments_sent", 1)
		open = append(open, c)
	}
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(3 * time.Second):
		}
		for _, c := range open {
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.Write(ping)
		}
	}
	for _, c := range open {
		if isClosed(c) {
			at.add("fragments_closed_by_gateway", 1)
		}
	}
}

// isClosed reports whether the gateway ended c (a read sees EOF, a reset
// or a close frame) rather than keeping it open.
func isClosed(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
		if n > 0 && buf[0]&0x0f == wsframe.OpClose {
			return true
		}
	}
}

// unread: sockets join a room, then push big pings and never read what
// comes back.
func (a *attackCfg) unread(ctx context.Context, u *url.URL, src net.IP, at *attackers) {
	topic := a.Topic + "-unread-" + a.RunID
	join := maskedFrame(wsframe.OpText, []byte(`["1","1","`+topic+`","phx_join",{}]`), true)
	body := `{"pad":"` + strings.Repeat("p", a.UnreadPing) + `"}`
	var wg sync.WaitGroup
	for i := 0; i < a.Unread && ctx.Err() == nil; i++ {
		c, status, err := rawUpgrade(ctx, u, src, "vsn=2.0.0")
		if err != nil || c == nil {
			at.add(fmt.Sprintf("unread_refused_%d", status), 1)
			continue
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4096) // the gateway's writes back up at once
		}
		at.keep(c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Write(join); err != nil {
				return
			}
			for ref := 2; ctx.Err() == nil; ref++ {
				ping := maskedFrame(wsframe.OpText, []byte(`["1","`+strconv.Itoa(ref)+`","`+topic+`","ping",`+body+`]`), true)
				_ = c.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := c.Write(ping); err != nil {
					at.add("unread_closed_by_gateway", 1)
					return
				}
				at.add("unread_pings", 1)
			}
		}()
	}
	wg.Wait()
}

// flood: anonymous sockets post as fast as they can into a room of their
// own, without waiting for replies.
func (a *attackCfg) flood(ctx context.Context, src net.IP, at *attackers) {
	topic := a.Topic + "-flood-" + a.RunID
	payload := []byte(`{"body":"` + strings.Repeat(`\u0001`, a.FloodBody) + `"}`)
	var wg sync.WaitGroup
	for i := 0; i < a.Flooders && ctx.Err() == nil; i++ {
		c, err := phx.Dial(ctx, phx.Options{URL: a.urlFor(0), SrcIP: src, Heartbeat: a.Heartbeat})
		if err != nil {
			at.add("flooders_refused", 1)
			continue
		}
		ref, err := c.Join(ctx, topic, nil)
		if err != nil {
			at.add("flooders_refused", 1)
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			for ctx.Err() == nil {
				if _, err := c.Push(topic, "new_msg", payload, ref); err != nil {
					at.add("flooders_closed_by_gateway", 1)
					return
				}
				at.add("flood_posts", 1)
			}
		}()
	}
	wg.Wait()
}

// storm: WebSocket upgrades from one address as fast as possible, kept
// open until the end.
func (a *attackCfg) storm(ctx context.Context, u *url.URL, src net.IP, at *attackers) {
	inParallel(ctx, a.Storm, 32, func() {
		c, status, err := rawUpgrade(ctx, u, src, "vsn=2.0.0")
		switch {
		case err != nil:
			at.add("storm_failed", 1)
		case c == nil:
			at.add(fmt.Sprintf("storm_refused_%d", status), 1)
		default:
			at.keep(c)
			at.add("storm_open", 1)
		}
	})
}

// inParallel calls f n times from workers goroutines, until ctx ends.
func inParallel(ctx context.Context, n, workers int, f func()) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for int(next.Add(1)) <= n && ctx.Err() == nil {
				f()
			}
		}()
	}
	wg.Wait()
}

// longPollStorm: long-poll sessions opened from one address.
func (a *attackCfg) longPollStorm(ctx context.Context, u *url.URL, src net.IP, at *attackers) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext:         (&net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}).DialContext,
		MaxIdleConnsPerHost: 32,
	}}
	defer client.CloseIdleConnections()
	lp := "http://" + u.Host + strings.TrimSuffix(u.Path, "/websocket") + "/longpoll?vsn=2.0.0"
	inParallel(ctx, a.LongPolls, 16, func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, lp, nil)
		res, err := client.Do(req)
		if err != nil {
			at.add("longpoll_failed", 1)
			return
		}
		body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
		_ = res.Body.Close()
		// Phoenix opens a session with HTTP 200 and {"status":410,"token":...}.
		if res.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"token"`)) {
			at.add("longpoll_sessions_opened", 1)
		} else {
			at.add(fmt.Sprintf("longpoll_refused_%d", res.StatusCode), 1)
		}
	})
}

// scrapeCounters reads the phx_gateway_* samples of a Prometheus text page,
// keyed by name and labels.
func scrapeCounters(ctx context.Context, u string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d", u, res.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(res.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "phx_gateway_") || strings.Contains(line, "_bucket{") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

type counterDelta struct {
	name  string
	delta float64
}

// counterDeltas lists the counters (names ending in _total) that grew.
func counterDeltas(before, after map[string]float64) []counterDelta {
	var out []counterDelta
	for k, v := range after {
		name := k
		if i := strings.IndexByte(k, '{'); i >= 0 {
			name = k[:i]
		}
		if !strings.HasSuffix(name, "_total") {
			continue
		}
		if d := v - before[k]; d > 0 {
			out = append(out, counterDelta{k, d})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/phxnats/phxnats/allinone/system"
	"github.com/phxnats/phxnats/loadtest/baseline"
	"github.com/phxnats/phxnats/loadtest/phx"
)

func startBaseline(t *testing.T) *baseline.Server {
	t.Helper()
	s, err := baseline.Start(baseline.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func testCommon(url string) common {
	c := common{URL: url, SrcIPs: 4, Procs: 1, Concurrency: 10, Timeout: 30 * time.Second,
		TokenMode: "none", Topic: "rooms:bench", Heartbeat: 30 * time.Second, Quiet: true, Label: "baseline"}
	return c
}

func metricsOf(t *testing.T, r *Result) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, x := range r.Metrics {
		m[x.Name] = x.Value
	}
	return m
}

// TestSmokeFanoutAndEcho drives the in-process baseline server: 20
// subscribers x 5 messages, then 2 echo clients for 1 s; nothing may be lost.
func TestSmokeFanoutAndEcho(t *testing.T) {
	s := startBaseline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	f := &fanoutCfg{common: testCommon(s.URL()), Subs: 20, Msgs: 5, Rate: 0, BodySize: 32, Drain: 5 * time.Second}
	if err := f.check(); err != nil {
		t.Fatal(err)
	}
	co, err := newCoord(&f.common, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := runFanout(ctx, f, co)
	if err != nil {
		t.Fatal(err)
	}
	m := metricsOf(t, r)
	if m["subscribers_joined"] != 20 || m["deliveries_expected"] != 100 || m["deliveries_received"] != 100 || m["deliveries_lost"] != 0 {
		t.Fatalf("fanout: %v errors %v", m, r.Errors)
	}
	if m["latency_p99"] <= 0 || m["latency_max"] < m["latency_p50"] {
		t.Fatalf("fanout latency: %v", m)
	}
	var out bytes.Buffer
	r.print(&out)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var js map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &js); err != nil || js["scenario"] != "fanout" {
		t.Fatalf("last line is not the JSON result: %v %q", err, lines[len(lines)-1])
	}

	e := &echoCfg{common: testCommon(s.URL()), Clients: 2, Duration: time.Second, Event: "new_msg", BodySize: 32, Wait: 2 * time.Second}
	if err := e.check(); err != nil {
		t.Fatal(err)
	}
	co, _ = newCoord(&e.common, nil)
	r, err = runEcho(ctx, e, co)
	if err != nil {
		t.Fatal(err)
	}
	m = metricsOf(t, r)
	if m["clients_joined"] != 2 || m["round_trips"] < 10 || m["timeouts"] != 0 || m["errors"] != 0 || m["disconnects"] != 0 {
		t.Fatalf("echo: %v errors %v", m, r.Errors)
	}
}

func TestSmokePingAndJoins(t *testing.T) {
	s := startBaseline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := &echoCfg{common: testCommon(s.URL()), Clients: 2, Duration: 300 * time.Millisecond, Event: "ping", BodySize: 16, Wait: 2 * time.Second}
	_ = e.check()
	co, _ := newCoord(&e.common, nil)
	r, err := runEcho(ctx, e, co)
	if err != nil {
		t.Fatal(err)
	}
	if m := metricsOf(t, r); m["round_trips"] < 10 || m["timeouts"] != 0 || m["errors"] != 0 {
		t.Fatalf("ping: %v %v", m, r.Errors)
	}
	j := &joinsCfg{common: testCommon(s.URL()), Conns: 30, Rooms: 3}
	_ = j.check()
	co, _ = newCoord(&j.common, nil)
	r, err = runJoins(ctx, j, co)
	if err != nil {
		t.Fatal(err)
	}
	if m := metricsOf(t, r); m["joined"] != 30 || m["join_errors"] != 0 || m["joins_per_s"] <= 0 {
		t.Fatalf("joins: %v %v", m, r.Errors)
	}
}

func TestBodyRoundTrip(t *testing.T) {
	b := makeBody(1234567890123, 42, 64)
	var p struct{ Body string }
	if err := json.Unmarshal(b, &p); err != nil || len(p.Body) != 64 {
		t.Fatalf("body %s: %v (len %d)", b, err, len(p.Body))
	}
	ts, seq, ok := parseBody(b)
	if !ok || ts != 1234567890123 || seq != 42 {
		t.Fatalf("parseBody = %d %d %v", ts, seq, ok)
	}
	if _, _, ok := parseBody([]byte(`{"body":"hello"}`)); ok {
		t.Fatal("parsed a foreign body")
	}
}

func TestParseFrame(t *testing.T) {
	var f phx.Frame
	in := []byte(`[null,"7","rooms:bench-x","phx_reply",{"response":{},"status":"ok"}]`)
	if err := phx.ParseFrame(in, &f); err != nil {
		t.Fatal(err)
	}
	if f.JoinRef != nil || string(f.Ref) != "7" || string(f.Topic) != "rooms:bench-x" || string(f.Event) != "phx_reply" ||
		string(f.Payload) != `{"response":{},"status":"ok"}` {
		t.Fatalf("%+v", f)
	}
	for _, bad := range []string{``, `{}`, `[null,null,"t"]`, `[1,null,"t","e",{}]`, `["a","b","t","e"]`} {
		if err := phx.ParseFrame([]byte(bad), &f); err == nil {
			t.Errorf("ParseFrame(%q) accepted", bad)
		}
	}
}

func TestShareCoversEverything(t *testing.T) {
	for _, procs := range []int{1, 2, 3, 7} {
		for _, total := range []int{0, 1, 5, 19000, 19001} {
			next := 0
			for i := 1; i <= procs; i++ {
				c := common{Procs: procs, child: i}
				first, n := c.share(total)
				if first != next {
					t.Fatalf("procs %d total %d: proc %d starts at %d, want %d", procs, total, i, first, next)
				}
				next = first + n
			}
			if next != total {
				t.Fatalf("procs %d total %d: shares end at %d", procs, total, next)
			}
		}
	}
}

func TestSummarize(t *testing.T) {
	mk := func(target string, v float64) resultLine {
		return resultLine{Scenario: "echo", Target: target, Params: map[string]any{"clients": 100},
			Metrics: map[string]float64{"round_trips_per_s": v}, Units: map[string]string{"round_trips_per_s": "/s"},
			Order: []string{"round_trips_per_s"}}
	}
	var b bytes.Buffer
	summarize(&b, []resultLine{mk("gateway", 5000), mk("baseline", 10000)})
	out := b.String()
	if !strings.Contains(out, "#### echo clients=100") || !strings.Contains(out, "| round_trips_per_s (/s) | 5,000 | 10,000 | 0.50 |") {
		t.Fatalf("summary:\n%s", out)
	}
}

// TestSmokeAttack runs the attack scenario, small, against the whole
// system with its defaults and small caps: the honest clients lose
// nothing while the caps and budgets fire.
func TestSmokeAttack(t *testing.T) {
	cfg := system.Defaults()
	cfg.HTTPAddr, cfg.OpsAddr, cfg.NATSPort, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", -1, t.TempDir()
	cfg.Rooms.PublicTopics = []string{"rooms:bench*"}
	cfg.Gateway.MaxConnsPerAddr = 10
	cfg.Gateway.LongPollMaxPerAddr = 5
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sys, err := system.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sys.Shutdown(context.Background()) })

	c := testCommon(strings.Replace(sys.URL(), "http://", "ws://", 1) + "/socket/websocket")
	a := &attackCfg{common: c, Honest: 5, HonestRate: 5, Duration: 3 * time.Second, AttackIP: "127.0.0.200",
		Fragments: 3, FragmentSize: 64 << 10, Unread: 2, UnreadPing: 1 << 10, Flooders: 2, FloodBody: 100,
		Storm: 20, LongPolls: 20, MetricsURL: sys.OpsURL() + "/metrics", Drain: 3 * time.Second}
	if err := a.check(); err != nil {
		t.Fatal(err)
	}
	r, err := runAttack(ctx, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := metricsOf(t, r)
	if m["honest_joined"] != 5 || m["honest_sent"] < 10 || m["honest_lost"] != 0 {
		t.Fatalf("honest clients: %v errors %v", m, r.Errors)
	}
	for _, fired := range []string{
		`fired phx_gateway_connects_refused_total{reason="address"}`,
		`fired phx_gateway_connects_refused_total{reason="longpoll_sessions"}`,
		"fired phx_gateway_rate_limited_total",
	} {
		if m[fired] <= 0 {
			t.Errorf("%s did not fire: %v", fired, m)
		}
	}
}

// TestPresView: presence_state and presence_diff applied as phoenix.js'
// Presence.syncState and syncDiff do.
func TestPresView(t *testing.T) {
	v := newPresView("u-", 4)
	check := func(what string, users, metas int) {
		t.Helper()
		if u, m := v.counts(); u != users || m != metas {
			t.Fatalf("%s: %d users, %d metas; want %d, %d", what, u, m, users, metas)
		}
	}
	meta := func(ref string) string { return `{"online_at":"1","phx_ref":"` + ref + `"}` }
	// A diff before the state waits for it.
	if err := v.applyDiff([]byte(`{"joins":{"u-3":{"metas":[` + meta("d") + `]}},"leaves":{}}`)); err != nil {
		t.Fatal(err)
	}
	check("diff before the state", 0, 0)
	if err := v.applyState([]byte(`{"u-0":{"metas":[` + meta("a") + `,` + meta("b") + `]},"bob":{"metas":[` + meta("c") + `]}}`)); err != nil {
		t.Fatal(err)
	}
	check("state, then the waiting diff", 3, 4)
	// A join of a ref already there changes nothing (the joiner's own meta
	// comes again in the diff after its state).
	_ = v.applyDiff([]byte(`{"joins":{"u-0":{"metas":[` + meta("a") + `]}},"leaves":{}}`))
	check("join of a known ref", 3, 4)
	_ = v.applyDiff([]byte(`{"joins":{"u-1":{"metas":[` + meta("e") + `]}},"leaves":{"u-0":{"metas":[` + meta("a") + `]},"bob":{"metas":[` + meta("c") + `]}}}`))
	check("a join and two leaves", 3, 3)
	_ = v.applyDiff([]byte(`{"joins":{},"leaves":{"u-0":{"metas":[` + meta("b") + `]},"u-2":{"metas":[` + meta("x") + `]}}}`))
	check("the last meta of a user, a leave of one never seen", 2, 2)
	// A new state replaces everything.
	_ = v.applyState([]byte(`{"u-2":{"metas":[` + meta("f") + `]}}`))
	check("a new state", 1, 1)
	if err := v.applyDiff([]byte(`{"joins":{"u-1":`)); err == nil {
		t.Fatal("a cut payload was accepted")
	}
}

// TestSmokePresence: 20 logged-in sockets with presence on the in-process
// system, 2 of them flapping for 2 s; every socket must see all 20, and
// every watcher exactly the 20 live ones after the flapping.
func TestSmokePresence(t *testing.T) {
	secret := strings.Repeat("s", 64)
	cfg := system.Defaults()
	cfg.HTTPAddr, cfg.OpsAddr, cfg.NATSPort, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", -1, t.TempDir()
	cfg.SecretKeyBases = []string{secret}
	cfg.Rooms.PublicTopics = []string{"rooms:bench*"}
	cfg.Gateway.PresenceInterval = 200 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sys, err := system.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sys.Shutdown(context.Background()) })

	c := testCommon(strings.Replace(sys.URL(), "http://", "ws://", 1) + "/socket/websocket")
	c.TokenMode, c.Secret, c.Salt = "sign", secret, "user socket"
	p := &presenceCfg{common: c, Conns: 20, Presence: true, Converge: 10 * time.Second, Hold: 500 * time.Millisecond,
		Flappers: 2, FlapFor: 2 * time.Second, FlapEvery: 500 * time.Millisecond, Settle: 5 * time.Second}
	if err := p.check(); err != nil {
		t.Fatal(err)
	}
	co, _ := newCoord(&p.common, nil)
	r, err := runPresence(ctx, p, co)
	if err != nil {
		t.Fatal(err)
	}
	m := metricsOf(t, r)
	if m["joined"] != 20 || m["complete"] != 20 || m["state_frames_per_socket"] != 1 || m["bad_presence_frames"] != 0 {
		t.Fatalf("convergence: %v %v", m, r.Errors)
	}
	if m["flaps"] < 4 || m["watchers"] != 18 || m["watchers_exact_after"] != 18 {
		t.Fatalf("flapping: %v %v", m, r.Errors)
	}
}

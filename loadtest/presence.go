package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/loadtest/phx"
)

// presenceCfg: N logged-in sockets join one room with {"presence": true}
// (spread over the gateways of --url), each applying presence_state and
// presence_diff as phoenix.js' Presence does (presView), until every one
// sees all N members; then the room is held idle, then M of the sockets
// flap (close and reconnect every --flap-every) while the others watch.
type presenceCfg struct {
	common
	Conns      int
	Presence   bool
	Converge   time.Duration
	Hold       time.Duration
	Flappers   int
	FlapFor    time.Duration
	FlapEvery  time.Duration
	Settle     time.Duration
	PIDs       string
	NATSURL    string
	pids       []int
	userPrefix string
}

func (c *presenceCfg) flags(fs *flag.FlagSet) {
	c.common.register(fs)
	fs.IntVar(&c.Conns, "conns", 1000, "logged-in sockets joining the room (tokens: --token-mode sign or fetch)")
	fs.BoolVar(&c.Presence, "presence", true, `join with {"presence": true} (false: the same room without presence, for the idle comparison)`)
	fs.DurationVar(&c.Converge, "converge", 3*time.Minute, "give up waiting for every socket's presence to be complete after this long")
	fs.DurationVar(&c.Hold, "hold", 60*time.Second, "hold the room idle this long, measuring the gateways' CPU and RSS (0: skip)")
	fs.IntVar(&c.Flappers, "flappers", 0, "sockets that close and reconnect every --flap-every for --flap-for while the others watch (0: skip)")
	fs.DurationVar(&c.FlapFor, "flap-for", 30*time.Second, "how long the flapping lasts")
	fs.DurationVar(&c.FlapEvery, "flap-every", time.Second, "each flapper reconnects this often")
	fs.DurationVar(&c.Settle, "settle", 20*time.Second, "after the flapping, wait at most this long for every watcher to hold exactly the live sockets")
	fs.StringVar(&c.PIDs, "pids", "", "comma-separated gateway PIDs: CPU and RSS of each from /proc (--pid takes one)")
	fs.StringVar(&c.NATSURL, "nats-url", "", "NATS URL (loopback): count the presence bucket's writes ($KV.phx_presence.>) while flapping")
}

// presSock is one socket of the run and what it saw.
type presSock struct {
	idx       int
	view      *presView
	conn      *phx.Conn
	joinedAt  int64 // unix nanos of the join reply
	complete  atomic.Int64
	watcher   bool
	stateN    atomic.Int64
	stateB    atomic.Int64
	diffN     atomic.Int64
	diffB     atomic.Int64
	badFrames atomic.Int64
}

var (
	presStateEvent = []byte("presence_state")
	presDiffEvent  = []byte("presence_diff")
)

func (c *presenceCfg) gatewayPIDs() []int {
	if c.pids != nil {
		return c.pids
	}
	for _, f := range strings.Split(c.PIDs, ",") {
		if p, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && p > 0 {
			c.pids = append(c.pids, p)
		}
	}
	if c.PID > 0 {
		c.pids = append(c.pids, c.PID)
	}
	return c.pids
}

func samplePIDs(pids []int) []procSample {
	out := make([]procSample, len(pids))
	for i, p := range pids {
		out[i], _ = sampleProc(p)
	}
	return out
}

// gwMetrics adds the gateways' CPU between a and b (seconds, and % of one
// core) and their RSS at b, each and summed.
func (r *Result) gwMetrics(prefix string, a, b []procSample) {
	if len(a) == 0 || len(a) != len(b) {
		return
	}
	var cpu float64
	var rss int64
	secs := b[0].At.Sub(a[0].At).Seconds()
	for i := range a {
		cpu += serverCPU(a[i], b[i])
		rss += b[i].RSSKiB
		if len(a) > 1 {
			r.add(fmt.Sprintf("%s_gw%d_cpu", prefix, i+1), serverCPU(a[i], b[i]), "s")
			r.add(fmt.Sprintf("%s_gw%d_rss", prefix, i+1), float64(b[i].RSSKiB)/1024, "MiB")
		}
	}
	r.add(prefix+"_gw_cpu", cpu, "s")
	if secs > 0 {
		r.add(prefix+"_gw_cpu_util", 100*cpu/secs, "% of one core")
	}
	r.add(prefix+"_gw_rss", float64(rss)/1024, "MiB")
}

func runPresence(ctx context.Context, c *presenceCfg, co *coord) (*Result, error) {
	if c.Conns < 1 || c.Flappers < 0 || c.Flappers >= c.Conns {
		return nil, fmt.Errorf("presence: --conns must be at least 1 and --flappers within 0..conns-1 (someone must watch)")
	}
	first, n := c.share(c.Conns)
	part := newPart()
	stats := &phx.Stats{}
	topic := fmt.Sprintf("%s-presence-%s", c.Topic, c.RunID)
	c.userPrefix = "presence-" + c.RunID + "-"
	var payload []byte
	if c.Presence {
		payload = []byte(`{"presence":true}`)
	}
	tokens, err := c.tokens(ctx, strings.TrimSuffix(c.userPrefix, "-"), first, n)
	if err != nil {
		return nil, err
	}
	if c.TokenMode == "none" && c.Presence {
		c.logf("presence: anonymous sockets are not tracked: the room's presence stays empty (use --token-mode sign)")
	}
	socks := make([]*presSock, n)
	for k := range socks {
		socks[k] = &presSock{idx: first + k}
	}
	// Which sockets flap: an even spread over the indexes (so over the
	// gateways and the load processes).
	isFlapper := func(i int) bool {
		return c.Flappers > 0 && int(int64(i+1)*int64(c.Flappers)/int64(c.Conns)) > int(int64(i)*int64(c.Flappers)/int64(c.Conns))
	}
	for _, s := range socks {
		s.watcher = !isFlapper(s.idx)
	}
	var stormStart int64
	expect := c.Conns
	dial := func(ctx context.Context, s *presSock) (*phx.Conn, error) {
		view := newPresView(c.userPrefix, c.Conns)
		onMsg := func(_ *phx.Conn, f *phx.Frame) {
			switch {
			case bytes.Equal(f.Event, presStateEvent):
				s.stateN.Add(1)
				s.stateB.Add(int64(len(f.Payload)))
				if view.applyState(f.Payload) != nil {
					s.badFrames.Add(1)
				}
			case bytes.Equal(f.Event, presDiffEvent):
				s.diffN.Add(1)
				s.diffB.Add(int64(len(f.Payload)))
				if view.applyDiff(f.Payload) != nil {
					s.badFrames.Add(1)
				}
			default:
				return
			}
			if s.complete.Load() == 0 {
				if u, m := view.counts(); u == expect && m == expect {
					s.complete.Store(f.At)
				}
			}
		}
		conn, err := phx.Dial(ctx, phx.Options{URL: c.urlFor(s.idx), Token: tokens[s.idx-first], SrcIP: c.srcIP(s.idx),
			Heartbeat: c.Heartbeat, OnMessage: onMsg, Stats: stats})
		if err != nil {
			return nil, err
		}
		jctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		if _, err := conn.Join(jctx, topic, payload); err != nil {
			conn.Abort()
			return nil, err
		}
		s.view = view
		return conn, nil
	}

	if err := co.barrier("ready"); err != nil {
		return nil, err
	}
	pids := c.gatewayPIDs()
	before := samplePIDs(pids)
	sys0, _ := sampleProc(0)
	cpu0 := selfCPU()

	// 1. The storm: every socket joins.
	start := time.Now()
	stormStart = start.UnixNano()
	joinH := part.hist("connect_join")
	var next, joined atomic.Int64
	var wg sync.WaitGroup
	stop := c.progress(func() string {
		done := 0
		for _, s := range socks {
			if s.complete.Load() != 0 {
				done++
			}
		}
		return fmt.Sprintf("joined %d/%d, presence complete at %d (errors %d)", joined.Load(), n, done, part.get("join_errors"))
	})
	for w := 0; w < min(c.Concurrency, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1) - 1)
				if k >= n || ctx.Err() != nil {
					return
				}
				s := socks[k]
				t0 := time.Now()
				// A room with presence wants every member: a failed
				// connect or join is tried again (3 times in all).
				conn, err := dial(ctx, s)
				for try := 1; err != nil && try < 3 && ctx.Err() == nil; try++ {
					part.add("join_retries", 1)
					part.noteErr(err)
					time.Sleep(time.Duration(try) * 500 * time.Millisecond)
					conn, err = dial(ctx, s)
				}
				if err != nil {
					part.add("join_errors", 1)
					part.noteErr(err)
					continue
				}
				s.conn = conn
				s.joinedAt = time.Now().UnixNano()
				joinH.RecordDuration(time.Since(t0))
				joined.Add(1)
			}
		}()
	}
	wg.Wait()
	stormEnd := time.Now()
	part.span("storm", start, stormEnd)
	part.add("joined", joined.Load())

	// 2. Convergence: every socket sees every member (only with presence).
	if c.Presence {
		deadline := time.Now().Add(c.Converge)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			all := true
			for _, s := range socks {
				if s.conn != nil && s.complete.Load() == 0 {
					all = false
					break
				}
			}
			if all {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		convH := part.hist("complete_after_start")
		ownH := part.hist("complete_after_own_join")
		var last int64
		for _, s := range socks {
			at := s.complete.Load()
			if s.conn == nil {
				continue
			}
			if at == 0 {
				part.add("never_complete", 1)
				u, m := s.view.counts()
				part.noteErr(fmt.Errorf("socket %d: presence incomplete after %v: %d users, %d metas of %d", s.idx, c.Converge, u, m, expect))
				continue
			}
			part.add("complete", 1)
			convH.Record(at - stormStart)
			ownH.Record(max(at-s.joinedAt, 0))
			last = max(last, at)
		}
		if last > 0 {
			part.span("converge", start, time.Unix(0, last))
		}
	}
	stop()
	part.add("load_cpu_join_ns", int64(selfCPU()-cpu0))
	var jN, jB, sN, sB int64
	for _, s := range socks {
		sN += s.stateN.Load()
		sB += s.stateB.Load()
		jN += s.diffN.Load()
		jB += s.diffB.Load()
	}
	part.add("join_state_frames", sN)
	part.add("join_state_bytes", sB)
	part.add("join_diff_frames", jN)
	part.add("join_diff_bytes", jB)
	if err := co.barrier("converged"); err != nil {
		closeAllPres(socks)
		return nil, err
	}
	converged := samplePIDs(pids)
	sys1, _ := sampleProc(0)

	// 3. The idle room.
	var heldA, heldB []procSample
	if c.Hold > 0 {
		if c.child == 0 {
			c.logf("presence: holding the room idle for %v", c.Hold)
		}
		time.Sleep(min(2*time.Second, c.Hold/10)) // the last diffs and writes
		d0 := sumDiffs(socks)
		heldA = samplePIDs(pids)
		select {
		case <-time.After(c.Hold):
		case <-ctx.Done():
		}
		heldB = samplePIDs(pids)
		part.add("idle_diff_frames", sumDiffs(socks)-d0)
		if err := co.barrier("held"); err != nil {
			closeAllPres(socks)
			return nil, err
		}
	}

	// 4. Flapping: the flappers reconnect every FlapEvery; the watchers count
	// what reaches them.
	var flapA, flapB []procSample
	var kvWrites, kvBytes atomic.Int64
	if c.Flappers > 0 && c.Presence {
		if err := co.barrier("flap"); err != nil {
			closeAllPres(socks)
			return nil, err
		}
		var sub *nats.Subscription
		var nc *nats.Conn
		if c.child == 0 && c.NATSURL != "" {
			if nc, err = nats.Connect(c.NATSURL, nats.Name("loadtest-presence")); err != nil {
				return nil, fmt.Errorf("--nats-url: %w", err)
			}
			defer nc.Close()
			sub, err = nc.Subscribe("$KV.phx_presence.>", func(m *nats.Msg) {
				kvWrites.Add(1)
				kvBytes.Add(int64(len(m.Data)))
			})
			if err != nil {
				return nil, err
			}
			_ = nc.Flush()
		}
		var wN, wB, fN, fB [2]int64
		count := func(i int) {
			for _, s := range socks {
				if s.watcher {
					wN[i] += s.diffN.Load()
					wB[i] += s.diffB.Load()
				} else {
					fN[i] += s.stateN.Load()
					fB[i] += s.stateB.Load()
				}
			}
		}
		count(0)
		flapA = samplePIDs(pids)
		flapStart := time.Now()
		end := flapStart.Add(c.FlapFor)
		var flaps, flapErrs atomic.Int64
		var fw sync.WaitGroup
		for _, s := range socks {
			if s.watcher || s.conn == nil {
				continue
			}
			fw.Add(1)
			go func(s *presSock) {
				defer fw.Done()
				// Spread the flappers' phases over the period.
				time.Sleep(time.Duration(s.idx%97) * c.FlapEvery / 97)
				for time.Now().Before(end) && ctx.Err() == nil {
					t0 := time.Now()
					s.conn.Close()
					conn, err := dial(ctx, s)
					if err != nil {
						flapErrs.Add(1)
						part.noteErr(fmt.Errorf("flap: %w", err))
						time.Sleep(c.FlapEvery)
						conn, err = dial(ctx, s)
						if err != nil {
							s.conn = nil
							return
						}
					}
					s.conn = conn
					flaps.Add(1)
					time.Sleep(time.Until(t0.Add(c.FlapEvery)))
				}
			}(s)
		}
		fw.Wait()
		flapEnd := time.Now()
		if err := co.barrier("flapped"); err != nil {
			closeAllPres(socks)
			return nil, err
		}
		flapB = samplePIDs(pids)
		count(1)
		if sub != nil {
			_ = nc.Flush()
			_ = sub.Unsubscribe()
		}
		part.span("flap", flapStart, flapEnd)
		part.add("flaps", flaps.Load())
		part.add("flap_errors", flapErrs.Load())
		part.add("flap_watcher_diff_frames", wN[1]-wN[0])
		part.add("flap_watcher_diff_bytes", wB[1]-wB[0])
		part.add("flap_rejoin_state_frames", fN[1]-fN[0])
		part.add("flap_rejoin_state_bytes", fB[1]-fB[0])
		part.add("kv_writes", kvWrites.Load())
		part.add("kv_bytes", kvBytes.Load())
		watchers := 0
		for _, s := range socks {
			if s.watcher && s.conn != nil {
				watchers++
			}
		}
		part.add("watchers", int64(watchers))

		// 5. Settle: every watcher holds exactly the live sockets again.
		settleStart := time.Now()
		deadline := settleStart.Add(c.Settle)
		var exact int
		for {
			exact = 0
			for _, s := range socks {
				if s.watcher && s.conn != nil {
					if u, m := s.view.counts(); u == expect && m == expect {
						exact++
					}
				}
			}
			if exact == watchers || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		part.span("settle", settleStart, time.Now())
		part.add("watchers_exact", int64(exact))
		for _, s := range socks {
			if s.watcher && s.conn != nil {
				if u, m := s.view.counts(); u != expect || m != expect {
					part.add("watchers_wrong", 1)
					part.noteErr(fmt.Errorf("after the flapping, socket %d sees %d users and %d metas, want %d of each", s.idx, u, m, expect))
				}
			}
		}
		// No process closes its sockets before every one has checked.
		if err := co.barrier("settled"); err != nil {
			closeAllPres(socks)
			return nil, err
		}
	}
	var bad int64
	for _, s := range socks {
		bad += s.badFrames.Load()
	}
	part.add("bad_presence_frames", bad)
	part.add("load_cpu_ns", int64(selfCPU()-cpu0))
	closeAllPres(socks)
	part.addStats(stats)
	if r := stats.DisconnectReason(); r != "" {
		c.logf("presence: %d sockets ended by the server or the network; the last: %s", stats.Disconnects.Load(), r)
	}
	all, err := co.finish(part)
	if err != nil || c.child > 0 {
		return nil, err
	}

	r := &Result{Scenario: "presence", Target: c.Label, Params: map[string]any{
		"conns": c.Conns, "presence": c.Presence, "procs": c.Procs, "gateways": len(c.urls), "token_mode": c.TokenMode,
		"hold_s": c.Hold.Seconds(), "flappers": c.Flappers, "flap_for_s": c.FlapFor.Seconds(), "flap_every_s": c.FlapEvery.Seconds(),
	}}
	jn := all.Counters["joined"]
	r.add("joined", float64(jn), "")
	r.add("join_retries", float64(all.Counters["join_retries"]), "")
	r.add("join_errors", float64(all.Counters["join_errors"]), "")
	r.add("storm", all.spanSeconds("storm"), "s")
	r.addLatency("connect_join", all.Hists["connect_join"])
	if c.Presence {
		r.add("complete", float64(all.Counters["complete"]), "")
		r.add("never_complete", float64(all.Counters["never_complete"]), "")
		r.add("converged_after_start", all.spanSeconds("converge"), "s")
		r.addLatency("complete_after_start", all.Hists["complete_after_start"])
		r.addLatency("complete_after_own_join", all.Hists["complete_after_own_join"])
		if jn > 0 {
			per := func(k string) float64 { return float64(all.Counters[k]) / float64(jn) }
			r.add("state_frames_per_socket", per("join_state_frames"), "")
			r.add("diff_frames_per_socket", per("join_diff_frames"), "")
			r.add("state_bytes_per_socket", per("join_state_bytes")/1024, "KiB")
			r.add("diff_bytes_per_socket", per("join_diff_bytes")/1024, "KiB")
			r.add("presence_bytes_per_member_seen", (per("join_state_bytes")+per("join_diff_bytes"))/float64(c.Conns), "B")
		}
	}
	r.gwMetrics("join", before, converged)
	r.add("load_cpu_join", float64(all.Counters["load_cpu_join_ns"])/1e9, "s")
	r.machineMetrics(sys0, sys1, float64(all.Counters["load_cpu_join_ns"])/1e9)
	if heldA != nil {
		r.gwMetrics("idle", heldA, heldB)
		r.add("idle_diff_frames", float64(all.Counters["idle_diff_frames"]), "")
		if len(before) > 0 {
			var rss0, rss1 int64
			for i := range before {
				rss0 += before[i].RSSKiB
				rss1 += heldB[i].RSSKiB
			}
			if jn > 0 {
				r.add("idle_rss_per_socket", float64(rss1-rss0)/float64(jn), "KiB")
			}
		}
	}
	if flapA != nil {
		secs := all.spanSeconds("flap")
		w := float64(all.Counters["watchers"])
		r.add("flaps", float64(all.Counters["flaps"]), "")
		r.add("flap_errors", float64(all.Counters["flap_errors"]), "")
		r.add("flap_s", secs, "s")
		if secs > 0 && w > 0 {
			r.add("flaps_per_s", float64(all.Counters["flaps"])/secs, "/s")
			r.add("watcher_diffs_per_s", float64(all.Counters["flap_watcher_diff_frames"])/w/secs, "/s")
			r.add("watcher_diff_bytes_per_s", float64(all.Counters["flap_watcher_diff_bytes"])/w/secs/1024, "KiB/s")
			if f := float64(all.Counters["flap_rejoin_state_frames"]); f > 0 {
				r.add("rejoin_state_size", float64(all.Counters["flap_rejoin_state_bytes"])/f/1024, "KiB")
			}
			if c.NATSURL != "" {
				r.add("kv_writes_per_s", float64(all.Counters["kv_writes"])/secs, "/s")
				r.add("kv_write_bytes_per_s", float64(all.Counters["kv_bytes"])/secs/1024, "KiB/s")
			}
		}
		r.gwMetrics("flap", flapA, flapB)
		r.add("watchers", w, "")
		r.add("watchers_exact_after", float64(all.Counters["watchers_exact"]), "")
		r.add("settle", all.spanSeconds("settle"), "s")
	}
	r.add("bad_presence_frames", float64(all.Counters["bad_presence_frames"]), "")
	r.add("disconnects", float64(all.Counters["disconnects"]), "")
	r.add("load_cpu", float64(all.Counters["load_cpu_ns"])/1e9, "s")
	r.Errors = all.Errors
	return r, nil
}

func sumDiffs(socks []*presSock) int64 {
	var t int64
	for _, s := range socks {
		t += s.diffN.Load()
	}
	return t
}

func closeAllPres(socks []*presSock) {
	conns := make([]*phx.Conn, 0, len(socks))
	for _, s := range socks {
		if s.conn != nil {
			conns = append(conns, s.conn)
		}
	}
	closeAll(conns, 64)
}

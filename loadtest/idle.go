package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/phxnats/phxnats/loadtest/phx"
)

type idleCfg struct {
	common
	Conns  int
	Rooms  int
	Hold   time.Duration
	Settle time.Duration
}

func (c *idleCfg) flags(fs *flag.FlagSet) {
	c.common.register(fs)
	fs.IntVar(&c.Conns, "conns", 5000, "joined connections to hold")
	fs.IntVar(&c.Rooms, "rooms", 1, "rooms they join, round robin (1: all the same room)")
	fs.DurationVar(&c.Hold, "hold", 60*time.Second, "how long to hold them (heartbeats every --heartbeat)")
	fs.DurationVar(&c.Settle, "settle", 2*time.Second, "wait before the first RSS reading")
}

// runIdle holds joined sockets and reads the server's RSS before and after.
// The "before" reading is taken before any load process connects.
func runIdle(ctx context.Context, c *idleCfg, co *coord, before procSample) (*Result, error) {
	first, n := c.share(c.Conns)
	part := newPart()
	stats := &phx.Stats{}
	rooms := max(c.Rooms, 1)
	topicOf := func(i int) string { return fmt.Sprintf("%s-idle-%s-%d", c.Topic, c.RunID, i%rooms) }
	tokens, err := c.tokens(ctx, "idle-"+c.RunID, first, n)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	conns := c.dialJoin(ctx, part, stats, tokens, first, n, topicOf, nil, nil)
	part.span("join", start, time.Now())
	if err := co.barrier("joined"); err != nil {
		closeAll(conns, 64)
		return nil, err
	}
	joinedAt, _ := sampleProc(c.PID)
	if c.child == 0 {
		c.logf("idle: all joined; holding for %v", c.Hold)
	}
	stop := c.progress(func() string {
		msg := fmt.Sprintf("holding; heartbeats %d sent / %d replies; disconnects %d",
			stats.HeartbeatsSent.Load(), stats.HeartbeatReplies.Load(), stats.Disconnects.Load())
		if s, err := sampleProc(c.PID); err == nil {
			msg += fmt.Sprintf("; server RSS %d MiB", s.RSSKiB/1024)
		}
		return msg
	})
	select {
	case <-time.After(c.Hold):
	case <-ctx.Done():
	}
	stop()
	if err := co.barrier("held"); err != nil {
		closeAll(conns, 64)
		return nil, err
	}
	held, _ := sampleProc(c.PID)
	alive := 0
	for _, cn := range conns {
		if cn != nil {
			select {
			case <-cn.Done():
			default:
				alive++
			}
		}
	}
	part.add("alive_at_end", int64(alive))
	closeAll(conns, 64)
	part.addStats(stats)
	all, err := co.finish(part)
	if err != nil || c.child > 0 {
		return nil, err
	}
	r := &Result{Scenario: "idle", Target: c.Label, Params: map[string]any{
		"conns": c.Conns, "rooms": rooms, "hold_s": c.Hold.Seconds(), "heartbeat_s": c.Heartbeat.Seconds(), "procs": c.Procs,
	}}
	joined := all.Counters["joined"]
	r.add("joined", float64(joined), "")
	if s := all.spanSeconds("join"); s > 0 {
		r.add("joins_per_s", float64(joined)/s, "/s")
	}
	r.add("alive_at_end", float64(all.Counters["alive_at_end"]), "")
	r.add("heartbeats_sent", float64(all.Counters["heartbeats_sent"]), "")
	r.add("heartbeat_replies", float64(all.Counters["heartbeat_replies"]), "")
	r.add("disconnects", float64(all.Counters["disconnects"]), "")
	r.addLatency("connect_join", all.Hists["connect_join"])
	if c.PID > 0 && joined > 0 {
		r.add("server_rss_before", float64(before.RSSKiB)/1024, "MiB")
		r.add("server_rss_joined", float64(joinedAt.RSSKiB)/1024, "MiB")
		r.add("server_rss_held", float64(held.RSSKiB)/1024, "MiB")
		r.add("server_rss_peak", float64(held.HWMKiB)/1024, "MiB")
		r.add("rss_per_conn_joined", float64(joinedAt.RSSKiB-before.RSSKiB)/float64(joined), "KiB")
		r.add("rss_per_conn_held", float64(held.RSSKiB-before.RSSKiB)/float64(joined), "KiB")
		r.add("server_threads", float64(held.Threads), "")
		r.add("server_cpu_idle_hold", serverCPU(joinedAt, held), "s")
	}
	r.Errors = all.Errors
	return r, nil
}

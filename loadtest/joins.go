package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/phxnats/phxnats/loadtest/phx"
)

type joinsCfg struct {
	common
	Conns int
	Rooms int
	Hold  time.Duration
}

func (j *joinsCfg) flags(fs *flag.FlagSet) {
	j.common.register(fs)
	fs.IntVar(&j.Conns, "conns", 5000, "connections in the storm (each: connect with its token, join)")
	fs.IntVar(&j.Rooms, "rooms", 1, "rooms the connections join, round robin (1: all the same room)")
	fs.DurationVar(&j.Hold, "hold", 0, "keep the connections this long after the storm")
}

func runJoins(ctx context.Context, j *joinsCfg, co *coord) (*Result, error) {
	first, n := j.share(j.Conns)
	part := newPart()
	stats := &phx.Stats{}
	rooms := max(j.Rooms, 1)
	topicOf := func(i int) string { return fmt.Sprintf("%s-joins-%s-%d", j.Topic, j.RunID, i%rooms) }
	t0 := time.Now()
	tokens, err := j.tokens(ctx, "joins-"+j.RunID, first, n)
	if err != nil {
		return nil, err
	}
	if j.TokenMode != "none" {
		j.logf("joins: %d tokens ready (%s) in %v, not counted in the storm", n, j.TokenMode, time.Since(t0).Round(time.Millisecond))
	}
	if err := co.barrier("ready"); err != nil {
		return nil, err
	}
	before, _ := sampleProc(j.PID)
	cpu0 := selfCPU()
	start := time.Now()
	conns := j.dialJoin(ctx, part, stats, tokens, first, n, topicOf, nil, nil)
	end := time.Now()
	part.span("storm", start, end)
	part.add("load_cpu_ns", int64(selfCPU()-cpu0))
	if err := co.barrier("stormed"); err != nil {
		return nil, err
	}
	after, _ := sampleProc(j.PID)
	if j.Hold > 0 {
		time.Sleep(j.Hold)
	}
	closeAll(conns, 64)
	part.addStats(stats)
	all, err := co.finish(part)
	if err != nil || j.child > 0 {
		return nil, err
	}
	r := &Result{Scenario: "joins", Target: j.Label, Params: map[string]any{
		"conns": j.Conns, "rooms": rooms, "concurrency": j.Concurrency, "token_mode": j.TokenMode, "procs": j.Procs,
	}}
	joined := all.Counters["joined"]
	secs := all.spanSeconds("storm")
	r.add("joined", float64(joined), "")
	r.add("connect_errors", float64(all.Counters["connect_errors"]), "")
	r.add("join_errors", float64(all.Counters["join_errors"]), "")
	r.add("storm", secs, "s")
	if secs > 0 {
		r.add("joins_per_s", float64(joined)/secs, "/s")
	}
	r.addLatency("connect", all.Hists["connect"])
	r.addLatency("join", all.Hists["join"])
	r.addLatency("connect_join", all.Hists["connect_join"])
	r.add("load_cpu", float64(all.Counters["load_cpu_ns"])/1e9, "s")
	r.serverMetrics(before, after, float64(joined), "join")
	r.machineMetrics(before, after, float64(all.Counters["load_cpu_ns"])/1e9)
	r.Errors = all.Errors
	return r, nil
}

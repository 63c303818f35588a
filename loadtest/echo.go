package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phxnats/phxnats/loadtest/phx"
)

type echoCfg struct {
	common
	Clients  int
	Duration time.Duration
	Event    string
	BodySize int
	Wait     time.Duration
}

func (e *echoCfg) flags(fs *flag.FlagSet) {
	e.common.register(fs)
	fs.IntVar(&e.Clients, "clients", 100, "clients, each in its own room, each with one message in flight")
	fs.DurationVar(&e.Duration, "duration", 20*time.Second, "how long the closed loop runs")
	fs.StringVar(&e.Event, "event", "new_msg", "new_msg: wait for the own broadcast back; ping: wait for the phx_reply")
	fs.IntVar(&e.BodySize, "body-size", 64, "bytes of the body")
	fs.DurationVar(&e.Wait, "wait", 5*time.Second, "give up on one round trip after this long")
}

func runEcho(ctx context.Context, e *echoCfg, co *coord) (*Result, error) {
	if e.Event != "new_msg" && e.Event != "ping" {
		return nil, fmt.Errorf("--event must be new_msg or ping")
	}
	first, n := e.share(e.Clients)
	part := newPart()
	stats := &phx.Stats{}
	lat := part.hist("latency")
	// Each client's broadcasts land here, keyed by the socket's index.
	inbox := make([]chan int, n)
	for i := range inbox {
		inbox[i] = make(chan int, 4)
	}
	onMsg := func(c *phx.Conn, fr *phx.Frame) {
		if !bytes.Equal(fr.Event, newMsgEvent) {
			return
		}
		_, seq, ok := parseBody(fr.Payload)
		if !ok {
			return
		}
		select {
		case inbox[c.Value.(int)-first] <- seq:
		default:
		}
	}
	topicOf := func(i int) string { return fmt.Sprintf("%s-echo-%s-%d", e.Topic, e.RunID, i) }
	tokens, err := e.tokens(ctx, "echo-"+e.RunID, first, n)
	if err != nil {
		return nil, err
	}
	e.logf("echo: joining %d clients", n)
	conns := e.dialJoin(ctx, part, stats, tokens, first, n, topicOf, onMsg, nil)
	defer closeAll(conns, 64)
	if err := co.barrier("joined"); err != nil {
		return nil, err
	}
	before, _ := sampleProc(e.PID)
	cpu0 := selfCPU()
	var rts, timeouts, errs atomic.Int64
	stop := e.progress(func() string { return fmt.Sprintf("round trips %d (timeouts %d)", rts.Load(), timeouts.Load()) })
	start := time.Now()
	deadline := start.Add(e.Duration)
	var wg sync.WaitGroup
	for k, c := range conns {
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := topicOf(first + k)
			joinRef := "1" // the join was the socket's first ref
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			for seq := 0; time.Now().Before(deadline) && ctx.Err() == nil; seq++ {
				t0 := time.Now()
				body := makeBody(t0.UnixNano(), seq, e.BodySize)
				if e.Event == "ping" {
					cctx, cancel := context.WithTimeout(ctx, e.Wait)
					rep, err := c.Call(cctx, topic, "ping", body, joinRef)
					cancel()
					switch {
					case err != nil:
						timeouts.Add(1)
						continue
					case rep.Status != "ok":
						errs.Add(1)
						part.noteErr(fmt.Errorf("ping reply %s %s", rep.Status, rep.Response))
						continue
					}
				} else {
					if _, err := c.Push(topic, "new_msg", body, joinRef); err != nil {
						errs.Add(1)
						return
					}
					timer.Reset(e.Wait)
				wait:
					for {
						select {
						case got := <-inbox[k]:
							if got == seq {
								break wait
							}
						case <-timer.C:
							timeouts.Add(1)
							break wait
						case <-c.Done():
							errs.Add(1)
							return
						}
					}
					if !timer.Stop() {
						select {
						case <-timer.C:
						default:
						}
					}
				}
				lat.RecordDuration(time.Since(t0))
				rts.Add(1)
			}
		}()
	}
	wg.Wait()
	end := time.Now()
	stop()
	part.span("loop", start, end)
	part.add("round_trips", rts.Load())
	part.add("timeouts", timeouts.Load())
	part.add("errors", errs.Load())
	part.add("load_cpu_ns", int64(selfCPU()-cpu0))
	if err := co.barrier("done"); err != nil {
		return nil, err
	}
	after, _ := sampleProc(e.PID)
	part.addStats(stats)
	all, err := co.finish(part)
	if err != nil || e.child > 0 {
		return nil, err
	}
	r := &Result{Scenario: "echo", Target: e.Label, Params: map[string]any{
		"clients": e.Clients, "duration_s": e.Duration.Seconds(), "event": e.Event, "body_size": e.BodySize, "procs": e.Procs,
	}}
	got := all.Counters["round_trips"]
	secs := all.spanSeconds("loop")
	r.add("clients_joined", float64(all.Counters["joined"]), "")
	r.add("round_trips", float64(got), "")
	if secs > 0 {
		r.add("round_trips_per_s", float64(got)/secs, "/s")
	}
	r.addLatency("latency", all.Hists["latency"])
	r.add("timeouts", float64(all.Counters["timeouts"]), "")
	r.add("errors", float64(all.Counters["errors"]), "")
	r.add("disconnects", float64(all.Counters["disconnects"]), "")
	r.add("load_cpu", float64(all.Counters["load_cpu_ns"])/1e9, "s")
	r.serverMetrics(before, after, float64(got), "round_trip")
	r.machineMetrics(before, after, float64(all.Counters["load_cpu_ns"])/1e9)
	r.Errors = all.Errors
	return r, nil
}

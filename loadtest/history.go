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

// historyCfg measures joins that ask for history ({"history": {"last":
// N}}) into one room while other rooms are busy: the cost that must not
// grow with the number of busy rooms (README, "History and resume").
type historyCfg struct {
	common
	BusyRooms int
	Prefill   int
	Joins     int
	Last      int
	BgRate    float64
}

func (h *historyCfg) flags(fs *flag.FlagSet) {
	h.common.register(fs)
	fs.IntVar(&h.BusyRooms, "busy-rooms", 10, "rooms with traffic; the joins go to the first")
	fs.IntVar(&h.Prefill, "prefill", 100, "messages posted into each busy room before the joins (their history)")
	fs.IntVar(&h.Joins, "joins", 500, "history joins measured, one after another, each followed by a leave")
	fs.IntVar(&h.Last, "last", 50, "N of {\"history\": {\"last\": N}}")
	fs.Float64Var(&h.BgRate, "bg-rate", 200, "messages per second posted round robin into the busy rooms while the joins run")
}

// roomsPerPublisher: each publishing socket posts into this many rooms,
// few enough that a round of posts stays within the gateway's bound on a
// socket's frames waiting for their turn (gateway.max_pending, 64).
const roomsPerPublisher = 10

func runHistory(ctx context.Context, h *historyCfg, co *coord) (*Result, error) {
	switch {
	case h.Procs != 1:
		return nil, fmt.Errorf("history: --procs must be 1")
	case h.BusyRooms < 1 || h.Prefill < 1 || h.Joins < 1 || h.Last < 1:
		return nil, fmt.Errorf("history: --busy-rooms, --prefill, --joins and --last must be at least 1")
	case h.BgRate < 0:
		return nil, fmt.Errorf("history: --bg-rate must not be negative")
	}
	part := newPart()
	stats := &phx.Stats{}
	topic := func(i int) string { return fmt.Sprintf("%s-hist-%s-%d", h.Topic, h.RunID, i) }

	// Publishers: sockets joined to the busy rooms (a push needs a joined
	// topic). They read their rooms' broadcasts and drop them.
	nPub := (h.BusyRooms + roomsPerPublisher - 1) / roomsPerPublisher
	pubs := make([]*phx.Conn, nPub)
	refs := make([]string, h.BusyRooms)
	for p := range pubs {
		c, err := phx.Dial(ctx, phx.Options{URL: h.urlFor(0), SrcIP: h.srcIP(p), Heartbeat: h.Heartbeat, Stats: stats})
		if err != nil {
			return nil, err
		}
		defer c.Close()
		pubs[p] = c
	}
	for i := range h.BusyRooms {
		ref, err := pubs[i/roomsPerPublisher].Join(ctx, topic(i), nil)
		if err != nil {
			return nil, err
		}
		refs[i] = ref
	}
	post := func(i, n int) error {
		_, err := pubs[i/roomsPerPublisher].Push(topic(i), "new_msg", fmt.Appendf(nil, `{"body":"m%d"}`, n), refs[i])
		return err
	}

	// Prefill, room by room in turns, so that the rooms interleave in the
	// stream as busy rooms do.
	t0 := time.Now()
	for n := range h.Prefill {
		for i := range h.BusyRooms {
			if err := post(i, n); err != nil {
				return nil, err
			}
		}
		time.Sleep(time.Duration(h.BusyRooms/roomsPerPublisher) * 100 * time.Microsecond) // let the round through
	}
	// History is complete once a join of the first and of the last room
	// see every message posted into them.
	probe, err := phx.Dial(ctx, phx.Options{URL: h.urlFor(0), Heartbeat: h.Heartbeat, Stats: stats})
	if err != nil {
		return nil, err
	}
	defer probe.Close()
	kept := min(h.Prefill, 100) // the default rooms.history_max_msgs_per_room
	for _, room := range []int{0, h.BusyRooms - 1} {
		for tries := 0; ; tries++ {
			rep, err := probe.Call(ctx, topic(room), "phx_join", fmt.Appendf(nil, `{"history":{"last":%d}}`, kept), "")
			if err != nil {
				return nil, err
			}
			if got := bytes.Count(rep.Response, []byte(`"event":`)); got >= kept {
				break
			} else if tries == 100 {
				return nil, fmt.Errorf("history: room %d holds %d of its %d messages: posts were refused (a budget of the server?)", room, got, kept)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	h.logf("history: %d rooms × %d messages posted and in history in %v", h.BusyRooms, h.Prefill, time.Since(t0).Round(time.Millisecond))

	// Background traffic while the joins run.
	stopBg := make(chan struct{})
	var bgWG sync.WaitGroup
	var bgSent atomic.Int64
	if h.BgRate > 0 {
		bgWG.Add(1)
		go func() {
			defer bgWG.Done()
			tick := time.NewTicker(time.Duration(float64(time.Second) / h.BgRate))
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-stopBg:
					return
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if post(n%h.BusyRooms, h.Prefill+n) == nil {
					bgSent.Add(1)
				}
			}
		}()
	}

	before, _ := sampleProc(h.PID)
	cpu0 := selfCPU()
	joinH := part.hist("join")
	params := fmt.Appendf(nil, `{"history":{"last":%d}}`, h.Last)
	c, err := phx.Dial(ctx, phx.Options{URL: h.urlFor(0), SrcIP: h.srcIP(1), Heartbeat: h.Heartbeat, Stats: stats})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	start := time.Now()
	var msgs int64
	for range h.Joins {
		t := time.Now()
		rep, err := c.Call(ctx, topic(0), "phx_join", params, "")
		if err != nil {
			return nil, err
		}
		joinH.RecordDuration(time.Since(t))
		if rep.Status != "ok" {
			part.add("join_errors", 1)
			part.noteErr(fmt.Errorf("join: %s %s", rep.Status, rep.Response))
			continue
		}
		msgs += int64(bytes.Count(rep.Response, []byte(`"event":`)))
		if _, err := c.Call(ctx, topic(0), "phx_leave", []byte(`{}`), ""); err != nil {
			return nil, err
		}
	}
	end := time.Now()
	close(stopBg)
	bgWG.Wait()
	after, _ := sampleProc(h.PID)
	part.span("joins", start, end)
	part.add("load_cpu_ns", int64(selfCPU()-cpu0))
	all, err := co.finish(part)
	if err != nil {
		return nil, err
	}
	r := &Result{Scenario: "history", Target: h.Label, Params: map[string]any{
		"busy_rooms": h.BusyRooms, "prefill": h.Prefill, "joins": h.Joins, "last": h.Last, "bg_rate": h.BgRate,
	}}
	secs := all.spanSeconds("joins")
	r.add("joins", float64(h.Joins), "")
	r.add("join_errors", float64(all.Counters["join_errors"]), "")
	if h.Joins > 0 {
		r.add("messages_per_join", float64(msgs)/float64(h.Joins), "")
	}
	if secs > 0 {
		r.add("joins_per_s", float64(h.Joins)/secs, "/s")
		r.add("background_per_s", float64(bgSent.Load())/secs, "/s")
	}
	r.addLatency("join", all.Hists["join"])
	r.add("load_cpu", float64(all.Counters["load_cpu_ns"])/1e9, "s")
	r.serverMetrics(before, after, float64(h.Joins), "join")
	r.machineMetrics(before, after, float64(all.Counters["load_cpu_ns"])/1e9)
	r.Errors = all.Errors
	return r, nil
}

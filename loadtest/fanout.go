package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/phxnats/phxnats/loadtest/hist"
	"github.com/phxnats/phxnats/loadtest/phx"
)

type fanoutCfg struct {
	common
	Subs      int
	Msgs      int
	Rate      float64
	Window    int
	BodySize  int
	Drain     time.Duration
	Readers   int
	ReadRound time.Duration
}

func (f *fanoutCfg) flags(fs *flag.FlagSet) {
	f.common.register(fs)
	fs.IntVar(&f.Subs, "subs", 1000, "subscribers joined to the room")
	fs.IntVar(&f.Msgs, "msgs", 100, "new_msg pushes by the publisher")
	fs.Float64Var(&f.Rate, "rate", 10, "messages per second; 0: as fast as the window allows (saturated)")
	fs.IntVar(&f.Window, "window", 0, "most messages not yet delivered to every local subscriber (0: 8 when --rate 0, unlimited otherwise)")
	fs.IntVar(&f.BodySize, "body-size", 64, "bytes of the body (send timestamp and sequence number, padded)")
	fs.IntVar(&f.Readers, "readers", runtime.NumCPU(), "goroutines reading the subscribers' sockets (epoll, one each)")
	fs.DurationVar(&f.ReadRound, "read-round", 5*time.Millisecond, "each reader reads a socket at most once per round, so frames pile up and share reads (adds up to this much latency)")
	fs.DurationVar(&f.Drain, "drain", 10*time.Second, "once all messages are sent, stop waiting when nothing arrived for this long (the rest counts as lost)")
}

// body is "<unix nanos>:<seq>:" padded with x to size.
func makeBody(sentAt int64, seq, size int) []byte {
	b := make([]byte, 0, max(size, 32)+16)
	b = append(b, `{"body":"`...)
	start := len(b)
	b = strconv.AppendInt(b, sentAt, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, ':')
	for len(b)-start < size {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

var bodyKey = []byte(`"body":"`)

// parseBody finds the send timestamp and sequence in a new_msg payload.
func parseBody(p []byte) (sentAt int64, seq int, ok bool) {
	if len(p) > 0 && p[0] == '{' && bytes.HasPrefix(p[1:], bodyKey) {
		p = p[1+len(bodyKey):] // as roomsvc and the baseline send it
	} else {
		i := bytes.Index(p, bodyKey)
		if i < 0 {
			return 0, 0, false
		}
		p = p[i+len(bodyKey):]
	}
	var n [2]int64
	for k := 0; k < 2; k++ {
		j := 0
		for j < len(p) && p[j] >= '0' && p[j] <= '9' {
			n[k] = n[k]*10 + int64(p[j]-'0')
			j++
		}
		if j == 0 || j >= len(p) || p[j] != ':' {
			return 0, 0, false
		}
		p = p[j+1:]
	}
	return n[0], int(n[1]), true
}

var newMsgEvent = []byte("new_msg")

func runFanout(ctx context.Context, f *fanoutCfg, co *coord) (*Result, error) {
	topic := f.Topic + "-fanout-" + f.RunID
	first, n := f.share(f.Subs)
	part := newPart()
	stats := &phx.Stats{}
	lat := part.hist("latency")
	count := make([]atomic.Int64, f.Msgs)
	firstAt := make([]atomic.Int64, f.Msgs)
	lastAt := make([]atomic.Int64, f.Msgs)
	var received, dups, foreign, completed atomic.Int64
	localSubs := int64(n)
	allLocal := make(chan struct{})
	expectLocal := int64(n) * int64(f.Msgs)

	// Each poller worker tallies what it reads and publishes the tallies
	// once per round of reads: shared counters touched per delivery would
	// bounce between cores millions of times a second.
	tallies := make([]*fanTally, max(f.Readers, 1))
	for i := range tallies {
		tallies[i] = &fanTally{count: make([]int64, f.Msgs), first: make([]int64, f.Msgs), last: make([]int64, f.Msgs), lat: hist.New()}
	}
	onMsg := func(_ *phx.Conn, fr *phx.Frame) {
		t := tallies[fr.Worker]
		if !bytes.Equal(fr.Event, newMsgEvent) {
			return
		}
		sentAt, seq, ok := parseBody(fr.Payload)
		if !ok || seq < 0 || seq >= f.Msgs {
			t.foreign++
			return
		}
		t.lat.Record(fr.At - sentAt)
		if t.count[seq] == 0 {
			t.touched = append(t.touched, seq)
			t.first[seq] = fr.At
		}
		t.count[seq]++
		t.last[seq] = fr.At
	}
	publish := func(w int) {
		t := tallies[w]
		for _, seq := range t.touched {
			k := t.count[seq]
			now := count[seq].Add(k)
			old := now - k
			accepted := min(now, localSubs) - min(old, localSubs)
			dups.Add(k - accepted)
			atomicMax(&lastAt[seq], t.last[seq])
			atomicMinNonZero(&firstAt[seq], t.first[seq])
			if old < localSubs && now >= localSubs {
				completed.Add(1)
			}
			if r := received.Add(accepted); accepted > 0 && r == expectLocal {
				close(allLocal)
			}
			t.count[seq] = 0
		}
		t.touched = t.touched[:0]
		if t.foreign > 0 {
			foreign.Add(t.foreign)
			t.foreign = 0
		}
	}
	poller, err := phx.NewPoller(len(tallies), f.ReadRound, publish)
	if err != nil {
		return nil, err
	}
	defer poller.Close()

	tokens, err := f.tokens(ctx, "fanout-"+f.RunID, first, n)
	if err != nil {
		return nil, err
	}
	f.logf("fanout: joining %d subscribers to %s", n, topic)
	t0 := time.Now()
	conns := f.dialJoin(ctx, part, stats, tokens, first, n, func(int) string { return topic }, onMsg, poller)
	part.span("join", t0, time.Now())
	defer closeAll(conns, 64)

	// The publisher is one more socket in the room (process 0 only); its
	// own copies of the broadcasts are not counted.
	var pub *phx.Conn
	var pubJoinRef string
	if f.child == 0 {
		// With tokens the publisher is a user too, so its broadcasts name
		// a sender (what --join-params '{"sender":true}' sockets see).
		pubTok, err := f.tokens(ctx, "fanout-"+f.RunID, f.Subs, 1)
		if err != nil {
			return nil, fmt.Errorf("publisher: %w", err)
		}
		pub, err = phx.Dial(ctx, phx.Options{URL: f.urlFor(f.Subs), Token: pubTok[0], SrcIP: f.srcIP(f.Subs), Heartbeat: f.Heartbeat, Stats: &phx.Stats{}})
		if err != nil {
			return nil, fmt.Errorf("publisher: %w", err)
		}
		defer pub.Close()
		if pubJoinRef, err = pub.Join(ctx, topic, nil); err != nil {
			return nil, fmt.Errorf("publisher: %w", err)
		}
	}
	if err := co.barrier("joined"); err != nil {
		return nil, err
	}
	before, _ := sampleProc(f.PID)
	cpu0 := selfCPU()

	window := f.Window
	if window == 0 && f.Rate == 0 {
		window = 8
	}
	sent := make([]int64, f.Msgs)
	stalled := false
	if f.child == 0 {
		f.logf("fanout: publishing %d messages (rate %v/s, window %d)", f.Msgs, f.Rate, window)
		stop := f.progress(func() string {
			return fmt.Sprintf("received %d/%d locally, completed %d msgs", received.Load(), expectLocal, completed.Load())
		})
		start := time.Now()
		for i := 0; i < f.Msgs && ctx.Err() == nil; i++ {
			if f.Rate > 0 {
				due := start.Add(time.Duration(float64(i) / f.Rate * float64(time.Second)))
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				}
			}
			if window > 0 && n > 0 {
				waitStart := time.Now()
				for int64(i)-completed.Load() >= int64(window) {
					if time.Since(waitStart) > f.Drain {
						stalled = true
						break
					}
					time.Sleep(50 * time.Microsecond)
				}
				if stalled {
					f.logf("fanout: publisher stalled: message %d not delivered everywhere within %v", i-window, f.Drain)
					break
				}
			}
			now := time.Now().UnixNano()
			sent[i] = now
			if _, err := pub.Push(topic, "new_msg", makeBody(now, i, f.BodySize), pubJoinRef); err != nil {
				return nil, fmt.Errorf("publish: %w", err)
			}
		}
		stop()
	}
	if err := co.barrier("published"); err != nil {
		return nil, err
	}
	// Wait for the rest: until everything arrived, or nothing arrived for
	// --drain (late deliveries still count; only silence ends the wait).
	tick := time.NewTicker(100 * time.Millisecond)
	last, lastChange := received.Load(), time.Now()
wait:
	for {
		select {
		case <-allLocal:
			break wait
		case <-ctx.Done():
			break wait
		case <-tick.C:
			if cur := received.Load(); cur != last {
				last, lastChange = cur, time.Now()
			} else if time.Since(lastChange) > f.Drain {
				f.logf("fanout: nothing arrived for %v: %d/%d deliveries", f.Drain, cur, expectLocal)
				break wait
			}
		}
	}
	tick.Stop()
	if err := co.barrier("drained"); err != nil {
		return nil, err
	}
	after, _ := sampleProc(f.PID)
	part.add("load_cpu_ns", int64(selfCPU()-cpu0))
	for _, t := range tallies {
		lat.Merge(t.lat)
	}
	part.add("received", received.Load())
	part.add("duplicates", dups.Load())
	part.add("foreign", foreign.Load())
	if stalled {
		part.add("publisher_stalled", 1)
	}
	part.MsgCount = make([]int64, f.Msgs)
	part.MsgFirst = make([]int64, f.Msgs)
	part.MsgLast = make([]int64, f.Msgs)
	for i := range count {
		part.MsgCount[i] = min(count[i].Load(), localSubs)
		part.MsgFirst[i] = firstAt[i].Load()
		part.MsgLast[i] = lastAt[i].Load()
	}
	if f.child == 0 {
		part.MsgSent = sent
	}
	part.addStats(stats)
	all, err := co.finish(part)
	if err != nil || f.child > 0 {
		return nil, err
	}

	r := &Result{Scenario: "fanout", Target: f.Label, Params: map[string]any{
		"subs": f.Subs, "msgs": f.Msgs, "rate": f.Rate, "window": window, "body_size": f.BodySize, "procs": f.Procs,
	}}
	joined := all.Counters["joined"]
	r.add("subscribers_joined", float64(joined), "")
	if s := all.spanSeconds("join"); s > 0 {
		r.add("joins_per_s", float64(joined)/s, "/s")
	}
	var nsent int64
	var firstSend, lastRecv int64
	compl := hist.New()
	for i, t := range all.MsgSent {
		if t == 0 {
			continue
		}
		nsent++
		if firstSend == 0 {
			firstSend = t
		}
		lastRecv = max(lastRecv, all.MsgLast[i])
		if all.MsgCount[i] == joined && all.MsgLast[i] > 0 {
			compl.Record(all.MsgLast[i] - t)
		}
	}
	expected := nsent * joined
	got := all.Counters["received"]
	r.add("messages_sent", float64(nsent), "")
	r.add("deliveries_expected", float64(expected), "")
	r.add("deliveries_received", float64(got), "")
	r.add("deliveries_lost", float64(expected-got), "")
	if expected > 0 {
		r.add("loss", 100*float64(expected-got)/float64(expected), "%")
	}
	if lastRecv > firstSend && firstSend > 0 {
		secs := float64(lastRecv-firstSend) / 1e9
		r.add("delivery_phase", secs, "s")
		r.add("deliveries_per_s", float64(got)/secs, "/s")
		r.add("messages_per_s", float64(nsent)/secs, "/s")
	}
	r.addLatency("latency", all.Hists["latency"])
	r.addLatency("fanout_completion", compl)
	r.add("disconnects", float64(all.Counters["disconnects"]), "")
	r.add("slow_consumer_closes", float64(all.Counters["slow_consumer_closes"]), "")
	if all.Counters["publisher_stalled"] > 0 {
		r.add("publisher_stalled", 1, "")
	}
	r.add("load_cpu", float64(all.Counters["load_cpu_ns"])/1e9, "s")
	r.serverMetrics(before, after, float64(got), "delivery")
	r.machineMetrics(before, after, float64(all.Counters["load_cpu_ns"])/1e9)
	r.Errors = all.Errors
	return r, nil
}

type fanTally struct {
	count, first, last []int64 // per message, not yet published
	touched            []int   // messages with a count
	foreign            int64
	lat                *hist.Hist
}

func atomicMax(a *atomic.Int64, v int64) {
	for {
		cur := a.Load()
		if cur >= v || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

func atomicMinNonZero(a *atomic.Int64, v int64) {
	for {
		cur := a.Load()
		if (cur != 0 && cur <= v) || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

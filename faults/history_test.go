package faults

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// The fault tests of room history and resume (issue 14): official
// phoenix.js clients (testdata/resume.mjs) keep the last position they
// have (the join reply's "seq", then each broadcast's ref) in their channel
// params, a function, so that every rejoin asks for {history: {since: P}};
// something between them and the room breaks while a poster goes on
// posting; once it is repaired, each must end with every message the
// poster got acknowledged, exactly once, in order, and every rejoin must
// say recovered: true.

// TestHistoryResumeAfterCut: a phoenix.js client's connection to its
// gateway (through a loopback TCP proxy) is cut for 30s: the proxy ends it
// and refuses new ones, so phoenix.js sees its socket close and retries
// with its own backoff. A poster on the gateway itself posts a message
// every 500ms throughout. When the proxy lets connections through again,
// phoenix.js reconnects and rejoins with since; the reply brings every
// message posted meanwhile.
func TestHistoryResumeAfterCut(t *testing.T) {
	const cutFor = 30 * time.Second
	node := phoenixJSNode(t)
	c := newCluster(t)
	startNATS(t, c, 1)
	c.startRoomsvc(c.seeds())
	c.startAuthsvc(c.seeds())
	gw := c.startGateway("gw-a", c.seeds())
	c.warmUp()
	px := startProxy(t, gw.addr)

	var cutAt, restoredAt time.Time
	var refused int
	res := runResume(t, node, 75*time.Second, func() {
		cutAt = time.Now()
		px.cut()
		time.Sleep(cutFor)
		refused = px.restore()
		restoredAt = time.Now()
	},
		"RESUMER_URL=http://"+px.addr(),
		"POSTER_URL="+gw.url(),
		"RESUMERS=2",
		"INTERVAL_MS=500",
	)
	t.Logf("proxy cut at READY for %v; it refused %d connection attempts meanwhile (phoenix.js' reconnect backoff)",
		restoredAt.Sub(cutAt).Round(time.Millisecond), refused)
	sum := checkResume(t, res, cutAt, restoredAt)
	for _, r := range res.Resumers {
		if len(r.Closes) == 0 {
			t.Errorf("%s: its socket was never closed by the cut", r.Name)
		} else {
			t.Logf("%s: socket closed (code %d) %.0fms after the cut; rejoined %.0fms after the proxy was restored",
				r.Name, r.Closes[0].Code, r.Closes[0].At-ms(cutAt), r.rejoinedAt(ms(cutAt))-ms(restoredAt))
		}
	}
	if sum.duringFault == 0 {
		t.Errorf("no message was acknowledged during the cut: the test proves nothing")
	}
}

// TestHistoryGatewayCutFromNATS: gateway A's NATS connection (through a
// loopback TCP proxy) is cut for longer than its catch-up window (PHX_ROOMS
// keeps broadcasts 3s here, rooms.stream_max_age) while a poster on
// gateway B posts every 150ms. Gateway A keeps its sockets (its NATS grace
// is longer than the cut), so phoenix.js sees nothing until A is back:
// then A's reader finds that the stream dropped broadcasts it owed, sends
// its channels phx_error, and the phoenix.js clients rejoin with since and
// get every message from PHX_HISTORY, which keeps them for 24h.
func TestHistoryGatewayCutFromNATS(t *testing.T) {
	const (
		maxAge = 3 * time.Second
		cutFor = 8 * time.Second
	)
	node := phoenixJSNode(t)
	c := newCluster(t)
	startNATS(t, c, 1)
	c.startRoomsvc(c.seeds(), "--rooms-stream-max-age", maxAge.String())
	c.startAuthsvc(c.seeds())
	natsPx := startProxy(t, strings.TrimPrefix(c.nats[0].url, "nats://"))
	// A single NATS node advertises no other URL, so gateway A only
	// ever reaches NATS through the proxy.
	gwA := c.startGateway("gw-a", "nats://"+natsPx.addr(), "--gateway-nats-grace", "60s")
	gwB := c.startGateway("gw-b", c.seeds())
	c.warmUp()
	nc := natsConn(t, c.seeds())

	var cutAt, restoredAt time.Time
	var refused int
	res := runResume(t, node, 60*time.Second, func() {
		cutAt = time.Now()
		natsPx.cut()
		time.Sleep(cutFor)
		refused = natsPx.restore()
		restoredAt = time.Now()
	},
		"RESUMER_URL="+gwA.url(),
		"POSTER_URL="+gwB.url(),
		"RESUMERS=2",
		"INTERVAL_MS=150",
	)
	t.Logf("gw-a's NATS connection cut at READY for %v (PHX_ROOMS max age %v); the proxy refused %d reconnect attempts meanwhile",
		restoredAt.Sub(cutAt).Round(time.Millisecond), maxAge, refused)
	sum := checkResume(t, res, cutAt, restoredAt)

	// Gateway A's side of it, from its log.
	if at, ok := logTime(gwA.proc, `"NATS disconnected"`); ok {
		t.Logf("gw-a logged NATS disconnected %v after the cut", at.Sub(cutAt).Round(time.Millisecond))
	}
	reconnected, ok := logTime(gwA.proc, `"NATS reconnected"`)
	if !ok {
		t.Errorf("gw-a never logged a NATS reconnect")
	} else {
		t.Logf("gw-a logged NATS reconnected %v after the proxy was restored", reconnected.Sub(restoredAt).Round(time.Millisecond))
	}
	gapLine, gap := gwA.proc.logLine(`"room broadcasts lost before they could be read`)
	if !gap {
		t.Errorf("gw-a's reader found no gap after the cut: the catch-up window was not exceeded, the phx_error path was not exercised")
	} else {
		t.Logf("gw-a: %s", gapLine)
		// The reader reports the gap once when the new consumer's first
		// message arrives before roomsvc's answer that made it (reader.receive,
		// then again from supervise, to rooms already left), and once only
		// when the answer came first: then a message after the gap may reach
		// the channels before their phx_error, and the clients' next since
		// would skip the gap (the checks above would see it lost).
		b, _ := os.ReadFile(gwA.proc.log)
		reports := strings.Count(string(b), `"room broadcasts lost before they could be read`)
		t.Logf("gw-a reported the gap %d times (2: the consumer's first message came before its creation's reply)", reports)
	}
	if line, ok := gwA.proc.logLine(`"NATS unavailable: sockets closed`); ok {
		t.Errorf("gw-a closed its sockets (1013) although its grace outlasts the cut: %s", line)
	}
	var phxErrors, closes int
	for _, r := range res.Resumers {
		phxErrors += len(r.PhxErrors)
		closes += len(r.Closes)
		if len(r.PhxErrors) == 0 {
			t.Errorf("%s: no phx_error from gw-a (socket closes: %v)", r.Name, r.Closes)
			continue
		}
		t.Logf("%s: phx_error %.0fms after the proxy was restored (%d in all), rejoined %.0fms after the first",
			r.Name, r.PhxErrors[0].At-ms(restoredAt), len(r.PhxErrors), r.rejoinedAt(r.PhxErrors[0].At)-r.PhxErrors[0].At)
	}
	t.Logf("path: %d phx_error frames, %d socket closes (1013 would be the other path)", phxErrors, closes)
	if closes > 0 {
		t.Errorf("the resumers' sockets were closed: %s", closeSummary(res.Resumers[0].Closes))
	}
	// How many of the messages the rejoins recovered PHX_ROOMS no longer
	// held when gw-a came back: only PHX_HISTORY had them.
	if !reconnected.IsZero() {
		expired := 0
		for _, p := range res.Posted {
			if p.Acked && p.At >= ms(cutAt) && p.At < ms(reconnected.Add(-maxAge)) {
				expired++
			}
		}
		t.Logf("%d acknowledged messages were posted during the cut more than %v before gw-a reconnected (gone from PHX_ROOMS by then, recovered from PHX_HISTORY)", expired, maxAge)
		if expired == 0 {
			t.Errorf("no message had left PHX_ROOMS when gw-a came back: the cut did not outlast the catch-up window")
		}
	}
	for _, st := range []string{"PHX_ROOMS", "PHX_HISTORY"} {
		if first, last, err := streamSeqs(nc, st); err == nil {
			t.Logf("%s at the end: first seq %d, last seq %d", st, first, last)
		}
	}
	if sum.duringFault == 0 {
		t.Errorf("no message was acknowledged during the cut: the test proves nothing")
	}
}

// resumeResult is the RESULT line of testdata/resume.mjs; times are
// milliseconds since the epoch.
type resumeResult struct {
	Error      string  `json:"error"`
	ReadyAt    float64 `json:"ready_at"`
	RestoredAt float64 `json:"restored_at"`
	AllBackAt  float64 `json:"all_back_at"`
	StoppedAt  float64 `json:"stopped_at"`
	Settled    bool    `json:"settled"`
	Posted     []struct {
		Body     string  `json:"body"`
		At       float64 `json:"at"`
		Acked    bool    `json:"acked"`
		Rejected string  `json:"rejected"`
	} `json:"posted"`
	PosterCloses []closeEvent    `json:"poster_closes"`
	Resumers     []resumerResult `json:"resumers"`
}

type closeEvent struct {
	Code int     `json:"code"`
	At   float64 `json:"at"`
}

type resumerResult struct {
	Name     string `json:"name"`
	Received []struct {
		Body string          `json:"body"`
		Seq  json.RawMessage `json:"seq"`
		Via  string          `json:"via"` // "history" (a join reply) or "live"
		At   float64         `json:"at"`
	} `json:"received"`
	Joins []struct {
		At     float64 `json:"at"`
		Params struct {
			History struct {
				Last  *int            `json:"last"`
				Since json.RawMessage `json:"since"`
			} `json:"history"`
		} `json:"params"`
		Recovered *bool           `json:"recovered"`
		Messages  int             `json:"messages"`
		Seq       json.RawMessage `json:"seq"`
	} `json:"joins"`
	JoinErrors []json.RawMessage `json:"join_errors"`
	Closes     []closeEvent      `json:"closes"`
	PhxErrors  []struct {
		At      float64 `json:"at"`
		JoinRef string  `json:"join_ref"`
	} `json:"phx_errors"`
	NoRef int `json:"no_ref"`
}

// closeSummary is "N socket closes (codes ...)".
func closeSummary(cs []closeEvent) string {
	if len(cs) == 0 {
		return "no socket close"
	}
	codes := map[int]int{}
	for _, c := range cs {
		codes[c.Code]++
	}
	return fmt.Sprintf("%d socket closes (codes %v)", len(cs), codes)
}

// rejoinedAt is the time of the first join reply after t (0: none).
func (r resumerResult) rejoinedAt(t float64) float64 {
	for _, j := range r.Joins {
		if j.At > t {
			return j.At
		}
	}
	return 0
}

func ms(t time.Time) float64 { return float64(t.UnixNano()) / 1e6 }

// position reads a position as the client got it (a decimal string).
func position(raw json.RawMessage) (uint64, bool) {
	s := strings.Trim(strings.TrimSpace(string(raw)), `"`)
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// runResume runs testdata/resume.mjs with env; at READY it calls fault
// (which breaks something, waits, and repairs it) and then tells the
// script RESTORED. It returns the script's RESULT.
func runResume(t *testing.T, node string, limit time.Duration, fault func(), env ...string) resumeResult {
	t.Helper()
	ns := startNode(t, node, "resume.mjs", env...)
	deadline := time.After(limit)
	faultDone := make(chan struct{})
	var res resumeResult
	var raw string
read:
	for {
		select {
		case line, ok := <-ns.lines:
			if !ok {
				break read
			}
			switch {
			case line == "JOINED":
			case line == "READY":
				go func() {
					defer close(faultDone)
					fault()
					_, _ = io.WriteString(ns.stdin, "RESTORED\n")
				}()
			case strings.HasPrefix(line, "RESULT "):
				raw = strings.TrimPrefix(line, "RESULT ")
				if err := json.Unmarshal([]byte(raw), &res); err != nil {
					t.Fatalf("bad RESULT line %q: %v", raw, err)
				}
			default:
				t.Logf("node: %s", line)
			}
		case <-deadline:
			t.Fatalf("the phoenix.js clients did not finish in %v; stderr:\n%s", limit, ns.stderr)
		}
	}
	err := ns.wait()
	select {
	case <-faultDone:
	case <-time.After(limit):
		t.Fatal("the fault did not end")
	}
	if err != nil || raw == "" || res.Error != "" {
		t.Fatalf("node %s: %v\n%s\nstderr:\n%s", ns.path, err, res.Error, ns.stderr)
	}
	return res
}

// resumeSummary is what checkResume counted.
type resumeSummary struct {
	duringFault int // acknowledged messages posted while the fault lasted
}

// checkResume checks the outcome at every resumer and prints what it
// measured: nothing acknowledged lost, nothing twice, the poster's order,
// positions rising, every rejoin with since and recovered: true.
func checkResume(t *testing.T, res resumeResult, faultAt, restoredAt time.Time) resumeSummary {
	t.Helper()
	var sum resumeSummary
	var acked []string
	isAcked := map[string]bool{}
	rejected := map[string]int{}
	silent := 0
	for _, p := range res.Posted {
		switch {
		case p.Acked:
			acked = append(acked, p.Body)
			isAcked[p.Body] = true
			if p.At >= ms(faultAt) && p.At <= ms(restoredAt) {
				sum.duringFault++
			}
		case p.Rejected != "":
			rejected[p.Rejected]++
		default:
			silent++
		}
	}
	t.Logf("poster: %d posted, %d acknowledged (%d of them during the fault), %d rejected %v, %d silent; settled: %v; poster: %s",
		len(res.Posted), len(acked), sum.duringFault, len(res.Posted)-len(acked)-silent, rejected, silent, res.Settled, closeSummary(res.PosterCloses))
	if len(res.Posted) != len(acked) {
		t.Errorf("the poster, never disconnected, has %d of its %d messages unacknowledged", len(res.Posted)-len(acked), len(res.Posted))
	}
	for _, r := range res.Resumers {
		var (
			order    []string // acknowledged bodies in arrival order
			extra    []string // received, not acknowledged to the poster
			dups     []string
			seen     = map[string]bool{}
			backward []string
			lastPos  uint64
			noPos    int
			history  int // messages from rejoin replies
		)
		firstJoin := 0.0
		if len(r.Joins) > 0 {
			firstJoin = r.Joins[0].At
		}
		for _, m := range r.Received {
			pos, ok := position(m.Seq)
			switch {
			case !ok:
				noPos++
			case pos <= lastPos:
				backward = append(backward, fmt.Sprintf("%s at %d after %d", m.Body, pos, lastPos))
			}
			if ok {
				lastPos = max(lastPos, pos)
			}
			if m.Via == "history" && m.At > firstJoin {
				history++
			}
			if seen[m.Body] {
				dups = append(dups, m.Body)
				continue
			}
			seen[m.Body] = true
			if isAcked[m.Body] {
				order = append(order, m.Body)
			} else {
				extra = append(extra, m.Body)
			}
		}
		var missing []string
		for _, b := range acked {
			if !seen[b] {
				missing = append(missing, b)
			}
		}
		inOrder := len(missing) == 0 && strings.Join(order, ",") == strings.Join(acked, ",")
		var rejoins []string
		for i, j := range r.Joins {
			since, hasSince := position(j.Params.History.Since)
			rec := j.Recovered != nil && *j.Recovered
			if i == 0 {
				continue
			}
			rejoins = append(rejoins, fmt.Sprintf("since %d: %d messages, seq %s, recovered %v, %.0fms after the restore",
				since, j.Messages, j.Seq, rec, j.At-ms(restoredAt)))
			if !hasSince {
				t.Errorf("%s: rejoin %d without since: %+v", r.Name, i, j.Params)
			}
			if !rec {
				t.Errorf("%s: rejoin %d (since %d) answered recovered: false", r.Name, i, since)
			}
		}
		t.Logf("%s: received %d (%d from rejoin replies, %d live), %d of %d acknowledged, %d missing, %d twice, %d not acknowledged, in the poster's order: %v; positions rising: %v; %d joins (%d errors); %s, %d phx_error",
			r.Name, len(r.Received), history, len(r.Received)-history-r.Joins[0].Messages, len(order), len(acked), len(missing), len(dups), len(extra),
			inOrder, len(backward) == 0 && noPos == 0, len(r.Joins), len(r.JoinErrors), closeSummary(r.Closes), len(r.PhxErrors))
		for _, s := range rejoins {
			t.Logf("%s: rejoin %s", r.Name, s)
		}
		if len(missing) > 0 {
			t.Errorf("%s: %d acknowledged messages lost: %v", r.Name, len(missing), first(missing, 20))
		}
		if len(dups) > 0 {
			t.Errorf("%s: %d messages received twice: %v", r.Name, len(dups), first(dups, 20))
		}
		if len(missing) == 0 && !inOrder {
			t.Errorf("%s: messages out of the poster's order: %v", r.Name, first(order, 200))
		}
		if len(backward) > 0 || noPos > 0 || r.NoRef > 0 {
			t.Errorf("%s: positions not rising: %v; %d without a position (%d live broadcasts without a ref)", r.Name, first(backward, 10), noPos, r.NoRef)
		}
		if len(r.Joins) < 2 {
			t.Errorf("%s: never rejoined", r.Name)
		}
		if len(r.JoinErrors) > 0 {
			t.Logf("%s: join errors (phoenix.js retried): %s", r.Name, r.JoinErrors)
		}
		if history == 0 {
			t.Errorf("%s: its rejoins brought no message: the fault missed nothing, the test proves nothing", r.Name)
		}
	}
	return sum
}

// streamSeqs returns a stream's first and last sequences.
func streamSeqs(nc *nats.Conn, stream string) (uint64, uint64, error) {
	m, err := nc.Request("$JS.API.STREAM.INFO."+stream, nil, 2*time.Second)
	if err != nil {
		return 0, 0, err
	}
	var info struct {
		State struct {
			FirstSeq uint64 `json:"first_seq"`
			LastSeq  uint64 `json:"last_seq"`
		} `json:"state"`
	}
	if err := json.Unmarshal(m.Data, &info); err != nil {
		return 0, 0, err
	}
	return info.State.FirstSeq, info.State.LastSeq, nil
}

// TestHistoryAcrossRestart: positions survive a restart of the
// one-process chat on its data folder. A phoenix.js client has the room's
// first messages; the chat stops (SIGTERM) and starts again on the same
// port and folder; two messages are posted before the client may
// reconnect (its transport dials nowhere until then); it rejoins with
// since, a position of the stopped process: its reply must hold exactly
// those two, recovered.
func TestHistoryAcrossRestart(t *testing.T) {
	node := phoenixJSNode(t)
	dataDir := t.TempDir()
	port := freePort(t)
	// start runs the chat and posts bodies into rooms:lobby once it is ready.
	start := func(run int, bodies ...string) (*proc, string) {
		p := startProc(t, fmt.Sprintf("chat-%d", run), chatBinary(t), []string{
			"--data-dir", dataDir, "--http-addr", fmt.Sprintf("127.0.0.1:%d", port), "--ops-addr", "127.0.0.1:0", "--nats-port", "-1",
		})
		url := logField(t, p, "chat is running", "url", 30*time.Second)
		seeds := logField(t, p, "chat is running", "nats", time.Second)
		waitHTTP(t, p, url+"/readyz", 10*time.Second)
		auth, err := nats.NkeyOptionFromSeed(filepath.Join(dataDir, "nats.nk"))
		if err != nil {
			t.Fatal(err)
		}
		nc := natsConn(t, seeds, auth)
		for _, b := range bodies {
			data, _ := json.Marshal(map[string]any{"event": "new_msg", "payload": map[string]string{"body": b}})
			if _, err := nc.Request("phx.room.rooms:lobby", data, 5*time.Second); err != nil { // the stream's acknowledgement
				t.Fatalf("post %s: %v", b, err)
			}
		}
		nc.Close()
		return p, url
	}
	first, url := start(1, "a", "b", "c")
	ns := startNode(t, node, "restart_resume.mjs", "URL="+url, "WANT_FIRST=a,b,c", "WANT_ALL=a,b,c,d,e", "LIMIT_MS=60000")
	next := func() string {
		select {
		case line, ok := <-ns.lines:
			if ok {
				return line
			}
		case <-time.After(90 * time.Second):
		}
		t.Fatalf("phoenix.js client ended or went quiet; stderr:\n%s", ns.stderr)
		return ""
	}
	ready := next()
	if !strings.HasPrefix(ready, "READY ") {
		t.Fatalf("client: %s\n%s", ready, ns.stderr)
	}
	first.stop(20 * time.Second) // SIGTERM, then the drain
	start(2, "d", "e")
	if _, err := io.WriteString(ns.stdin, "OPEN\n"); err != nil {
		t.Fatal(err)
	}

	var res struct {
		Got []struct {
			Body, From string
		}
		Joins []struct {
			Params    map[string]map[string]json.RawMessage
			Recovered bool
			Messages  int
		}
		TimedOut bool
	}
	result := next()
	if err := json.Unmarshal([]byte(strings.TrimPrefix(result, "RESULT ")), &res); err != nil {
		t.Fatalf("client result %q: %v", result, err)
	}
	var bodies, seen []string
	for _, g := range res.Got {
		bodies = append(bodies, g.Body)
		seen = append(seen, g.Body+" ("+g.From+")")
	}
	t.Logf("client at position %s before the stop; saw %s; joins %+v", strings.TrimPrefix(ready, "READY "), strings.Join(seen, ", "), res.Joins)
	if res.TimedOut {
		t.Fatal("the client did not get every message within 60s")
	}
	if got := strings.Join(bodies, ","); got != "a,b,c,d,e" {
		t.Fatalf("the client saw %s, want a,b,c,d,e once each, in order", got)
	}
	rejoin := res.Joins[len(res.Joins)-1]
	if _, since := rejoin.Params["history"]["since"]; len(res.Joins) < 2 || !since || !rejoin.Recovered || rejoin.Messages != 2 {
		t.Fatalf("the rejoin after the restart: %+v, want since a position from before, recovered, with d and e", res.Joins)
	}
}

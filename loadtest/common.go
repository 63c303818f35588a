package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/phxnats/phxnats/authsvc/phxtoken"
	"github.com/phxnats/phxnats/loadtest/hist"
	"github.com/phxnats/phxnats/loadtest/phx"
)

// common holds the flags every scenario shares.
type common struct {
	URL         string
	SrcIPs      int
	Procs       int
	PID         int
	Label       string
	Concurrency int
	Timeout     time.Duration
	TokenMode   string
	Secret      string
	SecretFile  string
	Salt        string
	Topic       string
	RunID       string
	Heartbeat   time.Duration
	Quiet       bool
	CPUProfile  string
	// JoinParams is the phx_join payload of a JoinShare of the sockets
	// (the others join with {}), e.g. {"sender":true} to measure what a
	// second encoding of each broadcast costs.
	JoinParams string
	JoinShare  float64
	child      int // >0 in a child process (1-based)
	noSpawn    bool
	urls       []string // URL split at commas
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.URL, "url", "ws://127.0.0.1:4000/socket/websocket", "socket endpoint (only 127.0.0.0/8 addresses are allowed); a comma-separated list spreads the connections over several gateways, connection i to the (i mod n)th")
	fs.IntVar(&c.SrcIPs, "src-ips", 16, "spread connections over source addresses 127.0.0.1..127.0.0.N")
	fs.IntVar(&c.Procs, "procs", 1, "load processes (each holds its share of the connections; use 2+ beyond ~19,000)")
	fs.IntVar(&c.PID, "pid", 0, "server PID: report its RSS and CPU from /proc")
	fs.StringVar(&c.Label, "label", "", "name of the target in the results (e.g. gateway, baseline)")
	fs.IntVar(&c.Concurrency, "concurrency", 200, "connections being dialed/joined at once")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Minute, "hard limit on the whole run")
	fs.StringVar(&c.TokenMode, "token-mode", "none", "none (anonymous), sign (--secret/--secret-file, before the run), fetch (GET /token before the run)")
	fs.StringVar(&c.Secret, "secret", "", "secret_key_base for --token-mode sign")
	fs.StringVar(&c.SecretFile, "secret-file", "", "file holding secret_key_base (the server's <data-dir>/secret_key_base)")
	fs.StringVar(&c.Salt, "salt", "user socket", "Phoenix.Token salt for --token-mode sign")
	fs.StringVar(&c.Topic, "topic", "rooms:bench", "topic prefix (the server must make it public: --rooms-public 'rooms:bench*')")
	fs.StringVar(&c.RunID, "run-id", "", "suffix that makes this run's topics unique (default random)")
	fs.DurationVar(&c.Heartbeat, "heartbeat", 30*time.Second, "heartbeat interval (phoenix.js: 30s)")
	fs.BoolVar(&c.Quiet, "quiet", false, "no progress lines")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile of this load process (the first one) to this file")
	fs.StringVar(&c.JoinParams, "join-params", "", `phx_join payload (a JSON object) of --join-share of the sockets, e.g. '{"sender":true}'; the others join with {}`)
	fs.Float64Var(&c.JoinShare, "join-share", 1, "share of the sockets (0..1, spread evenly by index) that join with --join-params")
	fs.IntVar(&c.child, "child-index", 0, "internal: index of a child load process")
}

// joinPayload is the phx_join payload of connection i: --join-params for
// an evenly spread --join-share of the connections, else nil ({}).
func (c *common) joinPayload(i int) []byte {
	if c.JoinParams == "" {
		return nil
	}
	if int(float64(i+1)*c.JoinShare) > int(float64(i)*c.JoinShare) {
		return []byte(c.JoinParams)
	}
	return nil
}

func (c *common) check() error {
	c.urls = strings.Split(c.URL, ",")
	for _, raw := range c.urls {
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("--url: %w", err)
		}
		host := u.Hostname()
		ip := net.ParseIP(host)
		if host == "localhost" {
			ip = net.IPv4(127, 0, 0, 1)
		}
		if ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("--url must point at a loopback address (127.0.0.0/8 or localhost), got %q", host)
		}
	}
	if c.SrcIPs < 1 || c.SrcIPs > 250 {
		return fmt.Errorf("--src-ips must be 1..250")
	}
	if c.Procs < 1 || c.Procs > 32 {
		return fmt.Errorf("--procs must be 1..32")
	}
	if c.Concurrency < 1 {
		c.Concurrency = 1
	}
	if c.JoinParams != "" && !isJSONObject(c.JoinParams) {
		return fmt.Errorf("--join-params must be a JSON object, got %q", c.JoinParams)
	}
	if c.JoinShare < 0 || c.JoinShare > 1 {
		return fmt.Errorf("--join-share must be within 0..1")
	}
	if c.RunID == "" {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		c.RunID = hex.EncodeToString(b)
	}
	return nil
}

// urlFor is the endpoint of connection i: the URLs in turn.
func (c *common) urlFor(i int) string {
	if len(c.urls) == 0 { // not checked (tests build common by hand)
		return c.URL
	}
	return c.urls[i%len(c.urls)]
}

// srcIP is the source address of connection i: 127.0.0.(1 + i mod N).
func (c *common) srcIP(i int) net.IP {
	if c.SrcIPs <= 1 {
		return nil
	}
	return net.IPv4(127, 0, 0, byte(1+i%c.SrcIPs))
}

func (c *common) procName() string { return fmt.Sprintf("p%d", max(c.child, 1)-1) }

func (c *common) logf(format string, args ...any) {
	if c.Quiet {
		return
	}
	fmt.Fprintf(os.Stderr, "[%s %s] %s\n", time.Now().Format("15:04:05.000"), c.procName(), fmt.Sprintf(format, args...))
}

// share splits total between the processes: this process handles
// [first, first+n).
func (c *common) share(total int) (first, n int) {
	idx := max(c.child, 1) - 1
	base, extra := total/c.Procs, total%c.Procs
	first = idx*base + min(idx, extra)
	n = base
	if idx < extra {
		n++
	}
	return first, n
}

// ---- tokens ----

// tokens returns one token per connection index in [first, first+n) ("" for anonymous).
func (c *common) tokens(ctx context.Context, prefix string, first, n int) ([]string, error) {
	out := make([]string, n)
	switch c.TokenMode {
	case "none", "":
		return out, nil
	case "sign":
		secret := c.Secret
		if secret == "" && c.SecretFile != "" {
			b, err := os.ReadFile(c.SecretFile)
			if err != nil {
				return nil, err
			}
			secret = strings.TrimSpace(string(b))
		}
		if secret == "" {
			return nil, fmt.Errorf("--token-mode sign needs --secret or --secret-file")
		}
		s, err := phxtoken.New(phxtoken.Options{SecretKeyBases: []string{secret}, Salt: c.Salt, MaxAge: 24 * time.Hour})
		if err != nil {
			return nil, err
		}
		for i := range out {
			if out[i], err = s.Sign(fmt.Sprintf("%s-%d", prefix, first+i)); err != nil {
				return nil, err
			}
		}
		return out, nil
	case "fetch":
		u, _ := url.Parse(c.urlFor(0))
		base := "http://" + u.Host + "/token?user_id="
		var next atomic.Int64
		var firstErr error
		var mu sync.Mutex
		var wg sync.WaitGroup
		client := &http.Client{Timeout: 10 * time.Second}
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					if i >= n || ctx.Err() != nil {
						return
					}
					tok, err := fetchToken(ctx, client, base+url.QueryEscape(fmt.Sprintf("%s-%d", prefix, first+i)))
					if err != nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
						return
					}
					out[i] = tok
				}
			}()
		}
		wg.Wait()
		return out, firstErr
	}
	return nil, fmt.Errorf("--token-mode must be none, sign or fetch")
}

func fetchToken(ctx context.Context, client *http.Client, u string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body struct {
		Token string `json:"token"`
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Token == "" {
		return "", fmt.Errorf("GET /token: HTTP %d %s %v", resp.StatusCode, body.Error, err)
	}
	return body.Token, nil
}

// ---- dialing ----

// dialJoin connects sockets [first, first+n) with c.Concurrency in flight,
// each joining topicOf(i). It records connect (upgrade) and join latencies
// in part. Sockets that fail are left nil and counted.
func (c *common) dialJoin(ctx context.Context, part *Part, stats *phx.Stats, tokens []string, first, n int,
	topicOf func(i int) string, onMsg func(*phx.Conn, *phx.Frame), poller *phx.Poller) []*phx.Conn {
	conns := make([]*phx.Conn, n)
	var next, done atomic.Int64
	connH, joinH, totalH := part.hist("connect"), part.hist("join"), part.hist("connect_join")
	var wg sync.WaitGroup
	stop := c.progress(func() string {
		return fmt.Sprintf("joined %d/%d (errors %d)", done.Load(), n, part.get("join_errors")+part.get("connect_errors"))
	})
	defer stop()
	for w := 0; w < min(c.Concurrency, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1) - 1)
				if k >= n || ctx.Err() != nil {
					return
				}
				i := first + k
				t0 := time.Now()
				conn, err := phx.Dial(ctx, phx.Options{
					URL: c.urlFor(i), Token: tokens[k], SrcIP: c.srcIP(i), Heartbeat: c.Heartbeat,
					OnMessage: onMsg, Stats: stats, Poller: poller,
				})
				if err != nil {
					part.add("connect_errors", 1)
					part.noteErr(err)
					continue
				}
				conn.Value = i
				t1 := time.Now()
				jctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				_, err = conn.Join(jctx, topicOf(i), c.joinPayload(i))
				cancel()
				t2 := time.Now()
				if err != nil {
					part.add("join_errors", 1)
					part.noteErr(err)
					conn.Abort()
					continue
				}
				connH.RecordDuration(t1.Sub(t0))
				joinH.RecordDuration(t2.Sub(t1))
				totalH.RecordDuration(t2.Sub(t0))
				conns[k] = conn
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	part.add("joined", done.Load())
	return conns
}

// closeAll closes sockets with bounded parallelism.
func closeAll(conns []*phx.Conn, parallel int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1) - 1)
				if k >= len(conns) {
					return
				}
				if conns[k] != nil {
					conns[k].Close()
				}
			}
		}()
	}
	wg.Wait()
}

// progress prints status() every 2 s until the returned func is called.
func (c *common) progress(status func() string) func() {
	if c.Quiet {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				c.logf("%s", status())
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// ---- partial results (one per process, merged by the parent) ----

// Part is what one load process measured.
type Part struct {
	mu       sync.Mutex
	Counters map[string]int64      `json:"counters"`
	Hists    map[string]*hist.Hist `json:"hists"`
	Spans    map[string][2]int64   `json:"spans"` // unix nanos [start, end]
	Errors   []string              `json:"errors,omitempty"`
	// Per fan-out message: receipts, first and last receipt (unix nanos).
	MsgCount []int64 `json:"msg_count,omitempty"`
	MsgFirst []int64 `json:"msg_first,omitempty"`
	MsgLast  []int64 `json:"msg_last,omitempty"`
	MsgSent  []int64 `json:"msg_sent,omitempty"`
}

func newPart() *Part {
	return &Part{Counters: map[string]int64{}, Hists: map[string]*hist.Hist{}, Spans: map[string][2]int64{}}
}

func (p *Part) hist(name string) *hist.Hist {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.Hists[name]
	if h == nil {
		h = hist.New()
		p.Hists[name] = h
	}
	return h
}

func (p *Part) add(name string, v int64) {
	p.mu.Lock()
	p.Counters[name] += v
	p.mu.Unlock()
}

func (p *Part) set(name string, v int64) {
	p.mu.Lock()
	p.Counters[name] = v
	p.mu.Unlock()
}

func (p *Part) get(name string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.Counters[name]
}

func (p *Part) span(name string, start, end time.Time) {
	p.mu.Lock()
	p.Spans[name] = [2]int64{start.UnixNano(), end.UnixNano()}
	p.mu.Unlock()
}

func (p *Part) spanSeconds(name string) float64 {
	s, ok := p.Spans[name]
	if !ok || s[1] <= s[0] {
		return 0
	}
	return float64(s[1]-s[0]) / 1e9
}

func (p *Part) noteErr(err error) {
	p.mu.Lock()
	if len(p.Errors) < 5 {
		p.Errors = append(p.Errors, err.Error())
	}
	p.mu.Unlock()
}

func (p *Part) addStats(s *phx.Stats) {
	p.add("heartbeats_sent", s.HeartbeatsSent.Load())
	p.add("heartbeat_replies", s.HeartbeatReplies.Load())
	p.add("disconnects", s.Disconnects.Load())
	p.add("slow_consumer_closes", s.SlowConsumerClose.Load())
	p.add("frames_in", s.FramesIn.Load())
	p.add("frames_out", s.FramesOut.Load())
	if r := s.DisconnectReason(); r != "" {
		p.noteErr(fmt.Errorf("disconnect: %s", r))
	}
}

// merge adds o into p.
func (p *Part) merge(o *Part) {
	for k, v := range o.Counters {
		p.Counters[k] += v
	}
	for k, h := range o.Hists {
		p.hist(k).Merge(h)
	}
	for k, s := range o.Spans {
		if cur, ok := p.Spans[k]; ok {
			p.Spans[k] = [2]int64{min(cur[0], s[0]), max(cur[1], s[1])}
		} else {
			p.Spans[k] = s
		}
	}
	p.Errors = append(p.Errors, o.Errors...)
	if len(o.MsgCount) > 0 {
		if len(p.MsgCount) < len(o.MsgCount) {
			p.MsgCount = append(p.MsgCount, make([]int64, len(o.MsgCount)-len(p.MsgCount))...)
			p.MsgFirst = append(p.MsgFirst, make([]int64, len(o.MsgCount)-len(p.MsgFirst))...)
			p.MsgLast = append(p.MsgLast, make([]int64, len(o.MsgCount)-len(p.MsgLast))...)
		}
		for i := range o.MsgCount {
			p.MsgCount[i] += o.MsgCount[i]
			if o.MsgFirst[i] != 0 && (p.MsgFirst[i] == 0 || o.MsgFirst[i] < p.MsgFirst[i]) {
				p.MsgFirst[i] = o.MsgFirst[i]
			}
			p.MsgLast[i] = max(p.MsgLast[i], o.MsgLast[i])
		}
	}
	if len(o.MsgSent) > 0 {
		p.MsgSent = o.MsgSent
	}
}

// ---- the server process ----

type procSample struct {
	At       time.Time
	RSSKiB   int64
	HWMKiB   int64
	CPUTicks int64 // utime+stime in clock ticks
	Threads  int64
	// The whole machine, from /proc/stat: busy and total ticks of all cores.
	SysBusy, SysTotal int64
}

const clockTicks = 100 // USER_HZ on Linux

func sampleProc(pid int) (procSample, error) {
	s := procSample{At: time.Now()}
	s.SysBusy, s.SysTotal = sampleSys()
	if pid <= 0 {
		return s, fmt.Errorf("no pid")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			s.RSSKiB = v
		case "VmHWM:":
			s.HWMKiB = v
		case "Threads:":
			s.Threads = v
		}
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the ")" that ends the command name; utime and stime are fields 14 and 15.
	rest := string(st[strings.LastIndexByte(string(st), ')')+2:])
	f := strings.Fields(rest)
	if len(f) > 13 {
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		stt, _ := strconv.ParseInt(f[12], 10, 64)
		s.CPUTicks = ut + stt
	}
	return s, nil
}

// sampleSys reads the machine's busy and total CPU ticks (all cores).
func sampleSys() (busy, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	for i, x := range f[1:] {
		v, _ := strconv.ParseInt(x, 10, 64)
		if i >= 8 { // guest time is already in user
			break
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

// serverCPU returns the server's CPU seconds between two samples.
func serverCPU(a, b procSample) float64 { return float64(b.CPUTicks-a.CPUTicks) / clockTicks }

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ---- processes ----

// coord synchronises the load processes of one run: the parent (process 0)
// starts the others as children of the same binary, with the same flags
// plus --child-index; they meet at named barriers over stdin/stdout and the
// children hand their Part to the parent at the end.
type coord struct {
	c        *common
	children []*childProc
	in       *bufio.Reader // child: commands from the parent
}

type childProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func newCoord(c *common, args []string) (*coord, error) {
	co := &coord{c: c}
	if c.child > 0 {
		co.in = bufio.NewReader(os.Stdin)
		return co, nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	for i := 2; i <= c.Procs; i++ {
		cargs := append(append([]string{}, args...), "--run-id", c.RunID, "--child-index", strconv.Itoa(i), "--pid", "0")
		cmd := exec.Command(self, cargs...)
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			co.kill()
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			co.kill()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			co.kill()
			return nil, err
		}
		co.children = append(co.children, &childProc{cmd: cmd, stdin: stdin, out: bufio.NewReaderSize(stdout, 1<<20)})
	}
	return co, nil
}

// barrier returns once every process has reached it.
func (co *coord) barrier(name string) error {
	if co.c.child > 0 {
		fmt.Fprintf(os.Stdout, "BARRIER %s\n", name)
		line, err := co.in.ReadString('\n')
		if err != nil {
			return fmt.Errorf("parent gone at barrier %s: %w", name, err)
		}
		if strings.TrimSpace(line) != "GO" {
			return fmt.Errorf("parent said %q at barrier %s", line, name)
		}
		return nil
	}
	for i, ch := range co.children {
		line, err := ch.out.ReadString('\n')
		if err != nil {
			return fmt.Errorf("load process %d died before barrier %s: %w", i+1, name, err)
		}
		if got := strings.TrimSpace(line); got != "BARRIER "+name {
			return fmt.Errorf("load process %d: expected barrier %s, got %q", i+1, name, got)
		}
	}
	for _, ch := range co.children {
		if _, err := io.WriteString(ch.stdin, "GO\n"); err != nil {
			return err
		}
	}
	return nil
}

// finish hands this process's part over (child) or collects and merges
// every child's (parent).
func (co *coord) finish(p *Part) (*Part, error) {
	if co.c.child > 0 {
		b, err := json.Marshal(p)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(os.Stdout, "RESULT %s\n", b)
		return p, nil
	}
	for i, ch := range co.children {
		line, err := ch.out.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("load process %d died before its result: %w", i+1, err)
		}
		raw, ok := strings.CutPrefix(strings.TrimSpace(line), "RESULT ")
		if !ok {
			return nil, fmt.Errorf("load process %d: expected RESULT, got %.80q", i+1, line)
		}
		o := newPart()
		if err := json.Unmarshal([]byte(raw), o); err != nil {
			return nil, fmt.Errorf("load process %d result: %w", i+1, err)
		}
		p.merge(o)
		_ = ch.stdin.Close()
		_ = ch.cmd.Wait()
	}
	co.children = nil
	return p, nil
}

// kill ends the children this process started (by their PID).
func (co *coord) kill() {
	for _, ch := range co.children {
		if ch.cmd.Process != nil {
			_ = ch.cmd.Process.Kill()
			_ = ch.cmd.Wait()
		}
	}
	co.children = nil
}

// ---- results ----

// Result is one scenario's report.
type Result struct {
	Scenario string         `json:"scenario"`
	Target   string         `json:"target"`
	Params   map[string]any `json:"params"`
	Metrics  []metric       `json:"-"`
	Errors   []string       `json:"errors,omitempty"`
}

type metric struct {
	Name  string
	Value float64
	Unit  string
}

func (r *Result) add(name string, v float64, unit string) {
	r.Metrics = append(r.Metrics, metric{name, v, unit})
}

func (r *Result) addLatency(prefix string, h *hist.Hist) {
	if h == nil || h.Count() == 0 {
		return
	}
	s := h.Summarize()
	r.add(prefix+"_p50", s.P50, "ms")
	r.add(prefix+"_p90", s.P90, "ms")
	r.add(prefix+"_p99", s.P99, "ms")
	r.add(prefix+"_max", s.Max, "ms")
}

// print writes the table and the JSON line to stdout.
func (r *Result) print(w io.Writer) {
	fmt.Fprintf(w, "\n%s against %s", r.Scenario, r.Target)
	for _, k := range sortedKeys(r.Params) {
		fmt.Fprintf(w, " %s=%v", k, r.Params[k])
	}
	fmt.Fprintf(w, "\n\n| metric | value | unit |\n|---|---:|---|\n")
	for _, m := range r.Metrics {
		fmt.Fprintf(w, "| %s | %s | %s |\n", m.Name, formatNum(m.Value), m.Unit)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "\nerror sample: %s", e)
	}
	fmt.Fprintln(w)
	out := map[string]any{"scenario": r.Scenario, "target": r.Target, "params": r.Params}
	ms := map[string]float64{}
	units := map[string]string{}
	order := []string{}
	for _, m := range r.Metrics {
		ms[m.Name] = m.Value
		units[m.Name] = m.Unit
		order = append(order, m.Name)
	}
	out["metrics"] = ms
	out["units"] = units
	out["order"] = order
	if len(r.Errors) > 0 {
		out["errors"] = r.Errors
	}
	b, _ := json.Marshal(out)
	fmt.Fprintf(w, "%s\n", b)
}

func formatNum(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "-"
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return commas(int64(v))
	case math.Abs(v) >= 1000:
		return commas(int64(math.Round(v)))
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

func commas(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

// serverMetrics adds the server's RSS and CPU between two samples.
func (r *Result) serverMetrics(a, b procSample, work float64, workUnit string) {
	if a.At.IsZero() || b.At.IsZero() || a.CPUTicks == 0 && b.CPUTicks == 0 {
		return
	}
	cpu := serverCPU(a, b)
	secs := b.At.Sub(a.At).Seconds()
	r.add("server_cpu", cpu, "s")
	if secs > 0 {
		r.add("server_cpu_util", 100*cpu/secs, "% of one core")
	}
	if work > 0 {
		r.add("server_cpu_per_"+workUnit, cpu/work*1e6, "µs")
	}
	r.add("server_rss_end", float64(b.RSSKiB)/1024, "MiB")
}

// machineMetrics reports how busy the whole machine was between two
// samples, and how much of that was neither the server nor the load
// processes (other programs on a shared machine skew every figure).
func (r *Result) machineMetrics(a, b procSample, loadCPU float64) {
	if b.SysTotal <= a.SysTotal {
		return
	}
	busy := float64(b.SysBusy-a.SysBusy) / clockTicks
	r.add("machine_busy", 100*float64(b.SysBusy-a.SysBusy)/float64(b.SysTotal-a.SysTotal), "% of all cores")
	other := busy - loadCPU
	if a.CPUTicks != 0 || b.CPUTicks != 0 {
		other -= serverCPU(a, b)
	}
	if secs := b.At.Sub(a.At).Seconds(); secs > 0 {
		r.add("other_processes_cpu", 100*max(other, 0)/secs, "% of one core")
	}
}

func isJSONObject(s string) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal([]byte(s), &m) == nil && m != nil
}

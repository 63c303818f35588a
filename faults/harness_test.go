package faults

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// repoRoot is the repository root seen from this package's folder.
var repoRoot, _ = filepath.Abs("..")

// The binaries under test are built once, by the first test that needs
// them (so `go test -list` or a benchmark run builds nothing), into a
// temporary folder TestMain removes; FAULTS_BIN=dir uses prebuilt ones
// (e.g. FAULTS_BIN=../bin after `make build`).
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
	tmpBinDir string
)

// The binaries, by import path; go build names each after the last element
// of its path (nats-server/v2 gives nats-server).
var binaries = []string{
	"github.com/phxnats/phxnats/gateway/cmd/gateway",
	"github.com/phxnats/phxnats/roomsvc/cmd/roomsvc",
	"github.com/phxnats/phxnats/authsvc/cmd/authsvc",
	"github.com/phxnats/phxnats/chatctl",
	"github.com/phxnats/phxnats/allinone",
	"github.com/nats-io/nats-server/v2",
}

func TestMain(m *testing.M) {
	code := m.Run()
	if tmpBinDir != "" {
		os.RemoveAll(tmpBinDir)
	}
	os.Exit(code)
}

func buildBinaries() {
	if dir := os.Getenv("FAULTS_BIN"); dir != "" {
		binDir, buildErr = filepath.Abs(dir)
		return
	}
	dir, err := os.MkdirTemp("", "phxnats-faults-bin-")
	if err != nil {
		buildErr = err
		return
	}
	tmpBinDir = dir
	// One go build for every binary, in the workspace at the repository
	// root, from the sources as they are now (never a stale bin/). No
	// symbol tables (-s -w): linking is most of the time here.
	start := time.Now()
	cmd := exec.Command("go", append([]string{"build", "-ldflags=-s -w", "-o", dir + string(filepath.Separator)}, binaries...)...)
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		buildErr = fmt.Errorf("go build of the binaries failed: %v\n%s", err, out)
		return
	}
	binDir = dir
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "faults: built %d binaries in %v\n", len(binaries), time.Since(start).Round(time.Millisecond))
	}
}

func binDirectory() (string, error) {
	buildOnce.Do(buildBinaries)
	return binDir, buildErr
}

// bin is the path of a binary under test.
func bin(t testing.TB, name string) string {
	t.Helper()
	dir, err := binDirectory()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name)
}

// Ports. Every process gets free loopback ports, never fixed ones, so the
// suite runs beside `make run` or `make cluster`. Services listen on :0 and
// the test reads the address from their "serving" log line; nats-server
// picks its client and monitoring ports (-1) and writes them to a ports
// file. Only the cluster route ports must be known before the nodes start:
// freePort finds one by listening on :0 (never handing out the same port
// twice), and startNATS starts over with new ports if a node could not
// bind its own (something took it in between).
var (
	portsMu sync.Mutex
	given   = map[int]bool{}
)

func freePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !given[port] {
			given[port] = true
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// proc is one process this test started.
type proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // exit error, once done is closed
}

// startProc starts a binary with args; its output goes to a log file in
// the test's temporary folder. The environment is the test's without any
// CHAT_* variable (a developer's settings must not leak in), plus env.
// t.Cleanup stops the process by its PID: SIGTERM, then SIGKILL after 5s.
func startProc(t testing.TB, name, binary string, args []string, env ...string) *proc {
	t.Helper()
	logDir := logDir(t)
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, args...)
	cmd.Dir = repoRoot
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(cleanEnv(), env...)
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{t: t, name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(5 * time.Second) })
	return p
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHAT_") {
			env = append(env, kv)
		}
	}
	return env
}

var logDirs sync.Map // testing.TB -> string

// logDir is the folder of the test's process logs (FAULTS_LOGS=dir keeps
// them in dir/<test>). When the test fails, the end of every log is printed.
func logDir(t testing.TB) string {
	if d, ok := logDirs.Load(t); ok {
		return d.(string)
	}
	d := t.TempDir()
	if keep := os.Getenv("FAULTS_LOGS"); keep != "" { // keep the logs there, one folder per test
		d = filepath.Join(keep, t.Name())
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	logDirs.Store(t, d)
	t.Cleanup(func() {
		logDirs.Delete(t)
		if !t.Failed() {
			return
		}
		files, _ := filepath.Glob(filepath.Join(d, "*.log"))
		for _, f := range files {
			t.Logf("--- end of %s:\n%s", filepath.Base(f), tail(f, 25))
		}
	})
	return d
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to this process only (by PID).
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if p.exited() {
		p.t.Fatalf("%s (pid %d) already exited: %v", p.name, p.pid(), p.err)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

// wait waits up to d for the process to exit and reports whether it did.
func (p *proc) wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// stop ends the process if it still runs: SIGTERM, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if p.wait(grace) {
		return
	}
	p.t.Logf("%s (pid %d) did not stop in %v after SIGTERM: SIGKILL", p.name, p.pid(), grace)
	_ = p.cmd.Process.Kill()
	<-p.done
}

// logLine returns the first line of the process's log that holds every
// one of parts, and whether there is one.
func (p *proc) logLine(parts ...string) (string, bool) {
	f, err := os.Open(p.log)
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
next:
	for sc.Scan() {
		for _, part := range parts {
			if !strings.Contains(sc.Text(), part) {
				continue next
			}
		}
		return sc.Text(), true
	}
	return "", false
}

// poll calls f every interval until it returns nil or d has passed; it
// returns how long that took and f's last error.
func poll(d, interval time.Duration, f func() error) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(d)
	for {
		err := f()
		if err == nil {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			return time.Since(start), err
		}
		time.Sleep(interval)
	}
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

// get returns the status and body of a GET.
func get(url string) (int, string, error) {
	res, err := httpClient.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), nil
}

// httpOK is nil when url answers 200.
func httpOK(url string) error {
	code, body, err := get(url)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("HTTP %d %s", code, strings.TrimSpace(body))
	}
	return nil
}

// logField waits up to d for p's first JSON log line with the message msg
// and returns the string field key of it (e.g. the address of "serving").
func logField(t testing.TB, p *proc, msg, key string, d time.Duration) string {
	t.Helper()
	var val string
	_, err := poll(d, 10*time.Millisecond, func() error {
		line, ok := p.logLine(`"msg":"` + msg + `"`)
		if !ok {
			if p.exited() {
				return fmt.Errorf("%s exited: %v", p.name, p.err)
			}
			return fmt.Errorf("no %q log line yet", msg)
		}
		var fields map[string]any
		if err := json.Unmarshal([]byte(line), &fields); err != nil {
			return err
		}
		val, _ = fields[key].(string)
		if val == "" {
			return fmt.Errorf("no %q in %s", key, line)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v\n%s", p.name, err, tail(p.log, 20))
	}
	return val
}

// waitHTTP polls url until it answers 200, failing the test after d (or
// as soon as p exits).
func waitHTTP(t testing.TB, p *proc, url string, d time.Duration) time.Duration {
	t.Helper()
	took, err := poll(d, 25*time.Millisecond, func() error {
		if p.exited() {
			return fmt.Errorf("%s exited: %v", p.name, p.err)
		}
		return httpOK(url)
	})
	if err != nil {
		t.Fatalf("%s not ready at %s after %v: %v\n%s", p.name, url, took.Round(time.Millisecond), err, tail(p.log, 20))
	}
	return took
}

// natsNode is one nats-server of a cluster.
type natsNode struct {
	name    string
	url     string // nats://127.0.0.1:port
	monitor string // http://127.0.0.1:port
	route   string
	proc    *proc
}

// service is a gateway, roomsvc or authsvc process and its HTTP address.
type service struct {
	name string
	addr string // host:port of http.addr
	proc *proc
}

func (s *service) url() string { return "http://" + s.addr }

// cluster is the split deployment: NATS nodes, roomsvc, authsvc, gateways.
type cluster struct {
	t        testing.TB
	nats     []*natsNode
	rooms    []*service
	auths    []*service
	gateways []*service
	secret   string
}

// startNATS starts n clustered nats-servers with JetStream and waits until
// each /healthz answers 200 (connected and JetStream current).
func startNATS(t testing.TB, c *cluster, n int) {
	t.Helper()
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		if err = tryStartNATS(t, c, n); err == nil {
			return
		}
		t.Logf("NATS cluster start, attempt %d: %v; again on other ports", attempt, err)
		for _, nd := range c.nats {
			nd.proc.stop(5 * time.Second)
		}
		c.nats = nil
	}
	t.Fatalf("NATS cluster did not start: %v", err)
}

func tryStartNATS(t testing.TB, c *cluster, n int) error {
	dir := t.TempDir()
	var routes []string
	for i := range n {
		c.nats = append(c.nats, &natsNode{name: fmt.Sprintf("n%d", i+1), route: fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))})
		routes = append(routes, c.nats[i].route)
	}
	for _, nd := range c.nats {
		args := []string{"--server_name", nd.name, "-a", "127.0.0.1", "-p", "-1", "-m", "-1",
			"--ports_file_dir", dir, "--js", "--sd", filepath.Join(dir, nd.name)}
		if n > 1 {
			args = append(args, "--cluster_name", "faults", "--cluster", nd.route, "--routes", strings.Join(routes, ","))
		}
		nd.proc = startProc(t, "nats-"+nd.name, bin(t, "nats-server"), args)
	}
	for _, nd := range c.nats {
		var ports struct{ Nats, Monitoring []string }
		_, err := poll(10*time.Second, 10*time.Millisecond, func() error {
			if nd.proc.exited() {
				return fmt.Errorf("%s exited: %v\n%s", nd.proc.name, nd.proc.err, tail(nd.proc.log, 5))
			}
			b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("nats-server_%d.ports", nd.proc.pid())))
			if err == nil {
				err = json.Unmarshal(b, &ports)
			}
			if err == nil && (len(ports.Nats) == 0 || len(ports.Monitoring) == 0) {
				err = fmt.Errorf("incomplete ports file %s", b)
			}
			return err
		})
		if err != nil {
			return err
		}
		nd.url, nd.monitor = ports.Nats[0], ports.Monitoring[0]
	}
	for _, nd := range c.nats {
		_, err := poll(20*time.Second, 25*time.Millisecond, func() error {
			if nd.proc.exited() {
				return fmt.Errorf("%s exited: %v\n%s", nd.proc.name, nd.proc.err, tail(nd.proc.log, 5))
			}
			return httpOK(nd.monitor + "/healthz")
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func portOf(u string) string { return u[strings.LastIndex(u, ":")+1:] }

// seeds is the comma-separated client URL list of the given nodes (all when none).
func (c *cluster) seeds(nodes ...*natsNode) string {
	if len(nodes) == 0 {
		nodes = c.nats
	}
	var urls []string
	for _, nd := range nodes {
		urls = append(urls, nd.url)
	}
	return strings.Join(urls, ",")
}

// startRoomsvc starts one roomsvc on seeds, with extra flags, and waits
// for its /readyz.
func (c *cluster) startRoomsvc(seeds string, extra ...string) *service {
	c.t.Helper()
	s := &service{name: fmt.Sprintf("roomsvc-%d", len(c.rooms)+1)}
	// The senders flood on purpose: no room budget.
	s.proc = startProc(c.t, s.name, bin(c.t, "roomsvc"), append([]string{"--http-addr", "127.0.0.1:0", "--nats-url", seeds,
		"--rooms-kv-replicas", fmt.Sprint(min(3, len(c.nats))), "--rooms-room-rate-limit", "-1", "--rooms-room-bytes-limit", "-1"}, extra...))
	s.addr = logField(c.t, s.proc, "serving", "addr", 45*time.Second)
	waitHTTP(c.t, s.proc, s.url()+"/readyz", 10*time.Second)
	c.rooms = append(c.rooms, s)
	return s
}

func (c *cluster) startAuthsvc(seeds string) *service {
	c.t.Helper()
	s := &service{name: fmt.Sprintf("authsvc-%d", len(c.auths)+1)}
	s.proc = startProc(c.t, s.name, bin(c.t, "authsvc"), []string{"serve", "--http-addr", "127.0.0.1:0", "--nats-url", seeds,
		"--auth-kv-replicas", fmt.Sprint(min(3, len(c.nats)))},
		"CHAT_AUTH_SECRET_KEY_BASE="+c.secret)
	s.addr = logField(c.t, s.proc, "serving", "addr", 20*time.Second)
	waitHTTP(c.t, s.proc, s.url()+"/readyz", 10*time.Second)
	c.auths = append(c.auths, s)
	return s
}

// startGateway starts a gateway named name (gw-a, gw-b) on seeds, with the
// development login and a 2s request timeout (a lost request becomes an
// error reply after 2s rather than 5s, which keeps the tests short).
func (c *cluster) startGateway(name, seeds string, extra ...string) *service {
	c.t.Helper()
	s := &service{name: name}
	s.proc = startProc(c.t, name, bin(c.t, "gateway"), append([]string{"--http-addr", "127.0.0.1:0", "--ops-addr", "127.0.0.1:0", "--nats-url", seeds,
		"--gateway-name", name, "--gateway-dev-login", "--gateway-request-timeout", "2s",
		// The senders send a message every few ms, all from one address.
		"--gateway-rate-limit", "-1", "--gateway-user-rate-limit", "-1", "--gateway-addr-rate-limit", "-1", "--gateway-max-pending", "-1",
		"--gateway-assets-dir", filepath.Join(repoRoot, "gateway", "web", "node_modules", "phoenix", "priv", "static")}, extra...))
	s.addr = logField(c.t, s.proc, "serving", "addr", 20*time.Second)
	waitHTTP(c.t, s.proc, s.url()+"/readyz", 10*time.Second)
	c.gateways = append(c.gateways, s)
	return s
}

// startCluster starts the topology of `make cluster` on free ports: 3 NATS
// nodes, 2 roomsvc (KV replicas 3), 2 authsvc (ban bucket replicas 3) sharing a generated secret,
// gateways gw-a and gw-b. The roomsvc start one after the other: two
// starting at once on a fresh cluster stall 10s per bucket (see the README
// of deployments/local).
func startCluster(t testing.TB) *cluster {
	t.Helper()
	c := newCluster(t)
	began := time.Now()
	startNATS(t, c, 3)
	natsUp := time.Since(began)
	c.startRoomsvc(c.seeds())
	c.startRoomsvc(c.seeds())
	roomsUp := time.Since(began)
	c.startAuthsvc(c.seeds())
	c.startAuthsvc(c.seeds())
	c.startGateway("gw-a", c.seeds())
	c.startGateway("gw-b", c.seeds())
	c.warmUp()
	c.t.Logf("start-up: cluster working %v after the first process started (NATS healthy at %v, both roomsvc ready at %v)",
		time.Since(began).Round(time.Millisecond), natsUp.Round(time.Millisecond), roomsUp.Round(time.Millisecond))
	return c
}

// warmUp waits until a logged-in user can join rooms:lobby through every
// gateway (auth sign and verify, roomsvc join, the ignore-list lookup).
// Every /readyz answers 200 before that works everywhere: a service's
// subscriptions take a moment to reach the other NATS nodes, and a fresh
// KV bucket a moment to answer reads ("service unavailable", "ignore store
// unavailable" for the first joins). The tests measure faults, not that
// start-up window, so they wait it out here and print how long it was.
func (c *cluster) warmUp() {
	c.t.Helper()
	for _, gw := range c.gateways {
		m := measure(15*time.Second, 20*time.Millisecond, time.Now(), func() error {
			tok, err := devToken(gw.url(), "warmup")
			if err != nil {
				return err
			}
			cl, err := dial(c.t, "warmup@"+gw.name, gw.url(), tok)
			if err != nil {
				return err
			}
			defer cl.close()
			return cl.join(lobby, 3*time.Second)
		})
		m.wait()
		if m.err != nil {
			c.t.Fatalf("%s: no logged-in join after every /readyz said ready: %v", gw.name, m)
		}
		if m.tries > 1 {
			c.t.Logf("start-up: %s admitted a logged-in join %v after every /readyz was 200", gw.name, m)
		}
	}
}

func newCluster(t testing.TB) *cluster {
	bin(t, "nats-server") // the first test builds the binaries here
	buf := make([]byte, 48)
	_, _ = rand.Read(buf)
	return &cluster{t: t, secret: base64.RawURLEncoding.EncodeToString(buf)}
}

// roomReady waits until a broadcast published on any NATS node reaches
// every client: publishing a probe on topic's subject from each node, again
// every 50ms, until every client has one from each node. A join is answered
// once the gateway's own NATS server has the room's subscription; the other
// nodes learn of it a moment later (TestJoinThenBroadcast measures that
// race), and the tests measure faults, not that race.
func (c *cluster) roomReady(topic string, clients ...*client) {
	c.t.Helper()
	var conns []*nats.Conn
	for _, nd := range c.nats {
		if !nd.proc.exited() {
			nc := natsConn(c.t, nd.url)
			defer nc.Close()
			conns = append(conns, nc)
		}
	}
	subject := "phx.room." + topic
	round := 0
	_, err := poll(10*time.Second, 50*time.Millisecond, func() error {
		round++
		for i, nc := range conns {
			body := fmt.Sprintf("probe-%d-%d", i, round)
			_ = nc.Publish(subject, []byte(`{"event":"new_msg","payload":{"body":"`+body+`"}}`))
			_ = nc.Flush()
		}
		time.Sleep(20 * time.Millisecond)
		for _, cl := range clients {
			for i := range conns {
				seen := false
				for r := 1; r <= round && !seen; r++ {
					_, seen = cl.has(fmt.Sprintf("probe-%d-%d", i, r))
				}
				if !seen {
					return fmt.Errorf("%s has no broadcast from NATS node %d", cl.name, i+1)
				}
			}
		}
		return nil
	})
	if err != nil {
		c.t.Fatalf("room %s not reachable from every NATS node: %v", topic, err)
	}
}

// natsConn connects the test itself to the cluster, as an operator tool would.
func natsConn(t testing.TB, seeds string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(seeds, append([]nats.Option{nats.Name("faults-test"), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// chatctl runs the chatctl binary against seeds and returns its output.
func chatctl(seeds string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dir, err := binDirectory()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "chatctl"), append([]string{"--nats-url", seeds, "--timeout", "3s"}, args...)...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("chatctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// devToken gets a token from a gateway's development login.
func devToken(base, user string) (string, error) {
	code, body, err := get(base + "/token?user_id=" + user)
	if err != nil {
		return "", err
	}
	var b struct{ Token, Error string }
	if err := json.Unmarshal([]byte(body), &b); err != nil || code != http.StatusOK || b.Token == "" {
		return "", fmt.Errorf("GET /token?user_id=%s: HTTP %d %s", user, code, strings.TrimSpace(body))
	}
	return b.Token, nil
}

func mustToken(t testing.TB, base, user string) string {
	t.Helper()
	tok, err := devToken(base, user)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// streamLeader asks JetStream which server leads a stream.
func streamLeader(nc *nats.Conn, stream string) (string, error) {
	m, err := nc.Request("$JS.API.STREAM.INFO."+stream, nil, 500*time.Millisecond)
	if err != nil {
		return "", err
	}
	var info struct {
		Cluster struct {
			Leader   string `json:"leader"`
			Replicas []struct {
				Name    string `json:"name"`
				Current bool   `json:"current"`
			} `json:"replicas"`
		} `json:"cluster"`
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &info); err != nil {
		return "", err
	}
	if info.Error != nil {
		return "", errors.New(info.Error.Description)
	}
	if info.Cluster.Leader == "" {
		return "", errors.New("no leader")
	}
	return info.Cluster.Leader, nil
}

// phoenixJSNode checks that the phoenix.js clients of testdata can run
// (e2e/node_modules holds phoenix and ws) and returns node. Tests call it
// first, before starting anything.
func phoenixJSNode(t *testing.T) string {
	t.Helper()
	e2e := filepath.Join(repoRoot, "e2e")
	for _, pkg := range []string{"phoenix", "ws"} {
		if _, err := os.Stat(filepath.Join(e2e, "node_modules", pkg)); err != nil {
			t.Fatalf("%s is not installed in e2e/node_modules: run `make e2e-deps` (make test and make faults do): %v", pkg, err)
		}
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is required for the phoenix.js fault tests: %v", err)
	}
	return node
}

// nodeScript is a script of testdata run with node: phoenix.js clients
// that talk to the test a line at a time.
type nodeScript struct {
	path   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *lockedWriter
	lines  chan string   // its stdout, a line each; closed at the end
	done   chan struct{} // closed once it has exited; err is then Wait's
	err    error
}

// startNode runs testdata/name with node and env, E2E_DIR naming the
// folder whose node_modules it loads. The test's cleanup kills it if it
// still runs.
func startNode(t *testing.T, node, name string, env ...string) *nodeScript {
	t.Helper()
	path, _ := filepath.Abs(filepath.Join("testdata", name))
	ns := &nodeScript{path: path, stderr: &lockedWriter{}, lines: make(chan string), done: make(chan struct{})}
	ns.cmd = exec.Command(node, path)
	ns.cmd.Env = append(append(cleanEnv(), "E2E_DIR="+filepath.Join(repoRoot, "e2e")), env...)
	ns.cmd.Stderr = ns.stderr
	ns.cmd.SysProcAttr = sysProcAttr()
	stdout, err := ns.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if ns.stdin, err = ns.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := ns.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			ns.lines <- sc.Text()
		}
		close(ns.lines)
		ns.err = ns.cmd.Wait() // once stdout is read: Wait closes it
		close(ns.done)
	}()
	t.Cleanup(ns.stop)
	return ns
}

// wait returns once the script has exited, with how it ended.
func (ns *nodeScript) wait() error {
	<-ns.done
	return ns.err
}

// stop kills the script unless it has ended, and waits for it.
func (ns *nodeScript) stop() {
	select {
	case <-ns.done:
		return
	default:
	}
	_ = ns.cmd.Process.Kill()
	go func() {
		for range ns.lines { // what nobody reads any more
		}
	}()
	select {
	case <-ns.done:
	case <-time.After(10 * time.Second):
	}
}

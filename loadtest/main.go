// Command loadtest drives the gateway (or the baseline server) with Phoenix
// V2 sockets, as phoenix.js does, and reports throughput and latency.
//
//	loadtest fanout  --subs 10000 --msgs 200 --rate 10   one room, one publisher, C subscribers
//	loadtest idle    --conns 19000 --hold 60s --pid P    joined sockets held; server RSS per socket
//	loadtest echo    --clients 100 --duration 20s        closed loop: push, wait for the own broadcast
//	loadtest joins   --conns 10000 --token-mode sign     connect+token+join storm
//	loadtest presence --conns 10000 --token-mode sign    one room with presence: convergence, idle cost, flapping
//	loadtest attack  --pid P                             honest chat under attack: losses, latency, RSS, limits fired
//	loadtest baseline-server --addr 127.0.0.1:4700       bare gorilla/websocket Phoenix fan-out server
//	loadtest serve   --pprof 127.0.0.1:6060 ...          the whole system in-process, for profiling
//	loadtest summarize results.jsonl                     markdown comparison of JSON result lines
//
// Every run is bounded (counts, durations, --timeout) and ends by itself.
// Progress goes to stderr; the results table and one JSON line to stdout.
// The target must be on 127.0.0.0/8; connections come from 127.0.0.1..N
// (--src-ips) so that ephemeral ports do not run out, and --procs spreads
// them over several processes when one would pass its open-files limit.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const usage = `loadtest: load generator for the Phoenix-on-NATS gateway

Usage: loadtest <command> [flags]   (loadtest <command> -h lists the flags)

Scenarios (against --url, default ws://127.0.0.1:4000/socket/websocket):
  fanout           C subscribers in one room, a publisher pushes M new_msg at R/s (0: saturated)
  idle             C joined sockets held D seconds with heartbeats; server RSS per socket (--pid)
  echo             K clients in a closed loop: push new_msg (or ping), wait for it to come back
  joins            a storm of connect + token + join
  history          joins asking for {"history": {"last": N}} into one room while B rooms are busy
  presence         N logged-in sockets join one room with presence (over the gateways of --url):
                   time until every socket sees all N, presence frames and bytes per socket,
                   gateway CPU (--pids), the idle room, and --flappers reconnecting every second
  attack           honest clients chat while attackers hold fragments, never read, flood,
                   storm connections and long-poll sessions from one address (issue 13)

Servers:
  baseline-server  bare gorilla/websocket Phoenix V2 fan-out server (no NATS, no auth)
  serve            the whole chat system in this process, with --pprof / --cpuprofile

Tools:
  summarize        markdown tables from result JSON lines (files or stdin)

The server must make the bench topics public: run it with --rooms-public 'rooms:bench*'
(and --gateway-rate-limit -1 for saturated runs).
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	var code int
	switch cmd {
	case "fanout", "idle", "echo", "joins", "attack", "history", "presence":
		code = scenarioMain(cmd, args)
	case "baseline-server":
		code = baselineMain(args)
	case "serve":
		code = serveMain(args)
	case "summarize":
		code = summarizeMain(args)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "loadtest: unknown command %q\n\n%s", cmd, usage)
		code = 2
	}
	os.Exit(code)
}

func scenarioMain(name string, args []string) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var c *common
	var run func(ctx context.Context, co *coord) (*Result, error)
	var before procSample
	switch name {
	case "fanout":
		f := &fanoutCfg{}
		f.flags(fs)
		c = &f.common
		run = func(ctx context.Context, co *coord) (*Result, error) { return runFanout(ctx, f, co) }
	case "echo":
		e := &echoCfg{}
		e.flags(fs)
		c = &e.common
		run = func(ctx context.Context, co *coord) (*Result, error) { return runEcho(ctx, e, co) }
	case "attack":
		a := &attackCfg{}
		a.flags(fs)
		c = &a.common
		run = func(ctx context.Context, co *coord) (*Result, error) { return runAttack(ctx, a, co) }
	case "history":
		h := &historyCfg{}
		h.flags(fs)
		c = &h.common
		run = func(ctx context.Context, co *coord) (*Result, error) { return runHistory(ctx, h, co) }
	case "joins":
		j := &joinsCfg{}
		j.flags(fs)
		c = &j.common
		run = func(ctx context.Context, co *coord) (*Result, error) { return runJoins(ctx, j, co) }
	case "presence":
		p := &presenceCfg{}
		p.flags(fs)
		c = &p.common
		run = func(ctx context.Context, co *coord) (*Result, error) { return runPresence(ctx, p, co) }
	case "idle":
		i := &idleCfg{}
		i.flags(fs)
		c = &i.common
		run = func(ctx context.Context, co *coord) (*Result, error) {
			return runIdle(ctx, i, co, before)
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := c.check(); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	if c.PID > 0 {
		var err error
		if before, err = sampleProc(c.PID); err != nil {
			fmt.Fprintln(os.Stderr, "loadtest: --pid:", err)
			return 2
		}
	}
	if c.child == 0 {
		stopProfile, err := startCPUProfile(c.CPUProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadtest:", err)
			return 1
		}
		defer stopProfile()
	}
	co, err := newCoord(c, append([]string{name}, args...))
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		return 1
	}
	defer co.kill()
	r, err := run(ctx, co)
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadtest %s (%s): %v\n", name, c.procName(), err)
		return 1
	}
	if c.child > 0 {
		return 0
	}
	if r.Target == "" {
		r.Target = c.URL
	}
	r.print(os.Stdout)
	return 0
}

#!/usr/bin/env bash
# Quick load suite for `make bench`: builds the allinone binary and the load
# tool into a temporary folder, starts the whole system (fresh data dir, free
# ports) and the baseline server, runs idle, joins, fanout and echo against
# both, stops both servers by PID and prints a markdown comparison.
#
# Sizes are small so that the suite takes a few minutes on 2 cores; override
# them with the variables below (see BENCHMARKS.md for the full-size runs).
# BENCH_OUT=file also writes the markdown there.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
IDLE_CONNS=${IDLE_CONNS:-5000}
IDLE_HOLD=${IDLE_HOLD:-35s}
IDLE_PROCS=${IDLE_PROCS:-1}
JOINS=${JOINS:-5000}
FANOUT_SUBS=${FANOUT_SUBS:-2000}
FANOUT_MSGS=${FANOUT_MSGS:-100}
FANOUT_SAT_MSGS=${FANOUT_SAT_MSGS:-300}
ECHO_CLIENTS=${ECHO_CLIENTS:-100}
ECHO_DURATION=${ECHO_DURATION:-20s}
ECHO_EVENTS=${ECHO_EVENTS:-new_msg} # "new_msg ping" also measures push/reply
FANOUT_WINDOW=${FANOUT_WINDOW:-0}     # saturated run's window; 0: the tool's default
# BENCH_KEEP=dir keeps the JSON lines and the per-run tables there.

tmp=$(mktemp -d "${TMPDIR:-/tmp}/phxnats-bench.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT

echo "== building into $tmp" >&2
$GO build -o "$tmp/chat" ./allinone
$GO build -o "$tmp/loadtest" ./loadtest
LT="$tmp/loadtest"

# wait_for FILE PATTERN: until the server printed its address (15 s at most).
wait_for() {
	for _ in $(seq 150); do
		if grep -qE "$2" "$1" 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "server did not start; its output:" >&2
	cat "$1" >&2
	return 1
}

secret=$(head -c 48 /dev/urandom | base64 | tr -d '/+=\n')
chat_flags=(--http-addr 127.0.0.1:0 --nats-port -1 --data-dir "$tmp/data"
	--rooms-public 'rooms:bench*' --log-level warn --gateway-rate-limit -1
	--auth-secret-key-base "$secret")
# Every budget off: the load comes from one address on purpose.
for f in --gateway-user-rate-limit --gateway-addr-rate-limit --gateway-max-pending \
	--gateway-longpoll-max-sessions --gateway-longpoll-max-per-addr \
	--rooms-room-rate-limit --rooms-room-bytes-limit; do
	if "$tmp/chat" --help 2>&1 | grep -q -- "$f"; then
		chat_flags+=("$f" -1)
	fi
done
# A logged-in join announces user_joined to the room; a storm into one room
# would then measure N^2 broadcasts, not joins.
if "$tmp/chat" --help 2>&1 | grep -q -- '--rooms-announce-joins'; then
	chat_flags+=(--rooms-announce-joins=false)
fi
# The load comes from 16 source addresses: IDLE_CONNS above 16,000 would
# pass the default per-address cap; the bench measures, it does not defend.
if "$tmp/chat" --help 2>&1 | grep -q -- '--gateway-max-conns-per-address'; then
	chat_flags+=(--gateway-max-conns-per-address 0)
fi
"$tmp/chat" "${chat_flags[@]}" >"$tmp/chat.out" 2>"$tmp/chat.err" &
chat_pid=$!
pids+=("$chat_pid")
wait_for "$tmp/chat.err" 'Chat: http://'
gw_addr=$(grep -oE 'Chat: http://[0-9.:]+' "$tmp/chat.err" | head -1 | sed 's|Chat: http://||')

"$LT" baseline-server --addr 127.0.0.1:0 >"$tmp/baseline.out" 2>"$tmp/baseline.err" &
base_pid=$!
pids+=("$base_pid")
wait_for "$tmp/baseline.out" '^LISTEN '
base_addr=$(awk '/^LISTEN /{print $2; exit}' "$tmp/baseline.out")
echo "== gateway ws://$gw_addr (pid $chat_pid), baseline ws://$base_addr (pid $base_pid)" >&2

results="$tmp/results.jsonl"
run() { # run LABEL ADDR PID SCENARIO FLAGS...
	local label=$1 addr=$2 pid=$3 scenario=$4
	shift 4
	echo "== $scenario $* against $label" >&2
	"$LT" "$scenario" --url "ws://$addr/socket/websocket" --pid "$pid" --label "$label" --quiet "$@" |
		tee -a "$tmp/tables.txt" | grep '^{' >>"$results"
}
both() { # both SCENARIO FLAGS...: gateway then baseline
	run gateway "$gw_addr" "$chat_pid" "$@"
	run baseline "$base_addr" "$base_pid" "$@"
}

# Idle first, while both servers are fresh.
both idle --conns "$IDLE_CONNS" --hold "$IDLE_HOLD" --procs "$IDLE_PROCS"
run gateway "$gw_addr" "$chat_pid" joins --conns "$JOINS" --token-mode sign --secret "$secret"
run baseline "$base_addr" "$base_pid" joins --conns "$JOINS" --token-mode sign --secret "$secret" # ignored by the baseline
both fanout --subs "$FANOUT_SUBS" --msgs "$FANOUT_MSGS" --rate 10
both fanout --subs "$FANOUT_SUBS" --msgs "$FANOUT_SAT_MSGS" --rate 0 --window "$FANOUT_WINDOW"
for ev in $ECHO_EVENTS; do
	both echo --clients "$ECHO_CLIENTS" --duration "$ECHO_DURATION" --event "$ev"
done
if [ -n "${BENCH_KEEP:-}" ]; then
	mkdir -p "$BENCH_KEEP"
	cp "$results" "$tmp/tables.txt" "$BENCH_KEEP/"
fi

{
	echo "### Quick load suite ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(go version | awk '{print $3}'))"
	echo
	echo "gateway = allinone (NATS + authsvc + roomsvc + gateway in one process); baseline = loadtest baseline-server."
	echo "The load generator shares the machine's cores with the server: see BENCHMARKS.md."
	"$LT" summarize "$results"
} | tee "${BENCH_OUT:-/dev/null}"

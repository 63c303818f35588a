#!/usr/bin/env bash
# Scale-out on one machine: one nats-server (JetStream), authsvc, roomsvc and
# GATEWAYS gateway processes, each its own process as in a deployment, then
# SUBS sockets joined to one room, spread over the gateways by LOAD_PROCS
# load processes (one process may hold at most 20,000 open files, so 50,000
# sockets need three of each), and a publisher pushing MSGS new_msg at RATE
# per second (0: saturated, WINDOW messages in flight).
#
# Prints the load tool's table and, per gateway, its peak RSS, its CPU during
# the run and the deliveries its /metrics counted. Everything runs on 127.0.0.1 on free
# ports, in a temporary folder, and is stopped by PID at the end.
#
#   bash loadtest/scaleout.sh                      # 50,000 sockets, 3 gateways, 20 messages at 1/s
#   SUBS=30000 RATE=0 MSGS=200 WINDOW=64 bash loadtest/scaleout.sh
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
GATEWAYS=${GATEWAYS:-3}
SUBS=${SUBS:-50000}
LOAD_PROCS=${LOAD_PROCS:-3}
MSGS=${MSGS:-20}
RATE=${RATE:-1}
WINDOW=${WINDOW:-0}

ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/phxnats-scaleout.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT

echo "== building into $tmp" >&2
(cd gateway && $GO build -o "$tmp/gateway" ./cmd/gateway)
(cd roomsvc && $GO build -o "$tmp/roomsvc" ./cmd/roomsvc)
(cd authsvc && $GO build -o "$tmp/authsvc" ./cmd/authsvc)
(cd allinone && $GO build -o "$tmp/nats-server" github.com/nats-io/nats-server/v2)
(cd loadtest && $GO build -o "$tmp/loadtest" .)

# addr_of LOG PATTERN: the first host:port after PATTERN in LOG (15 s at most).
addr_of() {
	for _ in $(seq 150); do
		a=$(grep -oE "$2[^0-9]*127\.0\.0\.1:[0-9]+" "$1" 2>/dev/null | head -1 | grep -oE '127\.0\.0\.1:[0-9]+' || true)
		if [ -n "$a" ]; then
			echo "$a"
			return 0
		fi
		sleep 0.1
	done
	echo "no address in $1:" >&2
	tail -20 "$1" >&2
	return 1
}

# ready URL: until it answers 200 (30 s at most).
ready() {
	for _ in $(seq 300); do
		if curl -fs -o /dev/null "$1"; then return 0; fi
		sleep 0.1
	done
	echo "not ready: $1" >&2
	return 1
}

"$tmp/nats-server" -a 127.0.0.1 -p -1 --js --sd "$tmp/nats" -l "$tmp/nats.log" &
pids+=($!)
nats="nats://$(addr_of "$tmp/nats.log" "client connections on")"
export CHAT_NATS_URL=$nats CHAT_LOG_FORMAT=json
export CHAT_AUTH_SECRET_KEY_BASE
CHAT_AUTH_SECRET_KEY_BASE=$(head -c 48 /dev/urandom | base64 | tr -d '/+=\n')

"$tmp/authsvc" serve --http-addr 127.0.0.1:0 >"$tmp/authsvc.log" 2>&1 &
pids+=($!)
"$tmp/roomsvc" --http-addr 127.0.0.1:0 --rooms-public 'rooms:bench*' --rooms-announce-joins=false --rooms-room-rate-limit -1 --rooms-room-bytes-limit -1 >"$tmp/roomsvc.log" 2>&1 &
pids+=($!)
ready "http://$(addr_of "$tmp/authsvc.log" '"serving"')/readyz"
ready "http://$(addr_of "$tmp/roomsvc.log" '"serving"')/readyz"

urls=()
gw_pids=()
ops=()
for i in $(seq "$GATEWAYS"); do
	"$tmp/gateway" --http-addr 127.0.0.1:0 --ops-addr 127.0.0.1:0 --gateway-name "gw-$i" --gateway-rate-limit -1 --gateway-user-rate-limit -1 --gateway-addr-rate-limit -1 --gateway-max-pending -1 >"$tmp/gw-$i.log" 2>&1 &
	pids+=($!)
	gw_pids+=($!)
	a=$(addr_of "$tmp/gw-$i.log" '"serving"')
	ops+=("$(addr_of "$tmp/gw-$i.log" '"ops_addr"')") # /metrics is there, not on the public port
	ready "http://$a/readyz"
	urls+=("ws://$a/socket/websocket")
done
echo "== nats $nats; gateways ${urls[*]} (pids ${gw_pids[*]})" >&2

# cpu_s PID: user+system CPU seconds of a process.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
declare -A cpu0
for p in "${gw_pids[@]}"; do cpu0[$p]=$(cpu_s "$p"); done

"$tmp/loadtest" fanout --url "$(IFS=,; echo "${urls[*]}")" --subs "$SUBS" --procs "$LOAD_PROCS" \
	--msgs "$MSGS" --rate "$RATE" --window "$WINDOW" --timeout 15m

echo
echo "| gateway | peak RSS (MiB) | CPU (s) during the run | deliveries (its /metrics) |"
echo "|---|---:|---:|---:|"
for i in $(seq "$GATEWAYS"); do
	p=${gw_pids[$((i - 1))]}
	m=$(curl -fs "http://${ops[$((i - 1))]}/metrics")
	rss=$(awk '/VmHWM/{printf "%.0f", $2 / 1024}' "/proc/$p/status")
	cpu=$(awk -v a="${cpu0[$p]}" -v b="$(cpu_s "$p")" 'BEGIN{printf "%.1f", b - a}')
	del=$(echo "$m" | awk '/^phx_gateway_broadcast_deliveries_total/{printf "%d", $2}')
	echo "| gw-$i | $rss | $cpu | $del |"
done

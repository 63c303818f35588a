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

GATEWAYS=${GATEWAYS:-3}
SUBS=${SUBS:-50000}
LOAD_PROCS=${LOAD_PROCS:-3}
MSGS=${MSGS:-20}
RATE=${RATE:-1}
WINDOW=${WINDOW:-0}

# shellcheck source=loadtest/split.sh
. loadtest/split.sh
split_start scaleout
split_services
split_gateways "$GATEWAYS"

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

#!/usr/bin/env bash
# Presence at scale (issue 15): one nats-server (JetStream), authsvc, roomsvc
# and GATEWAYS gateway processes, as in a deployment; then `loadtest
# presence`: CONNS logged-in sockets (tokens signed with the cluster's
# secret, so that they are tracked) join one room with {"presence": true},
# spread over the gateways by LOAD_PROCS load processes (one process may
# hold at most 20,000 open files); each applies presence_state and
# presence_diff as phoenix.js' Presence does until it sees all CONNS
# members. Then the room is held idle HOLD, then FLAPPERS of the sockets
# reconnect every second for FLAP_FOR while the others watch (and the
# bucket's writes are counted on NATS).
#
# PRESENCE=false runs the same room without presence (the idle comparison).
# KEEP_LOGS=DIR keeps the processes' logs and the gateways' final metrics.
# Everything runs on 127.0.0.1 on free ports, in a temporary folder, and is
# stopped by PID at the end.
#
#   bash loadtest/presence.sh                         # 10,000 sockets, 2 gateways
#   CONNS=10000 PRESENCE=false FLAPPERS=0 bash loadtest/presence.sh
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
GATEWAYS=${GATEWAYS:-2}
CONNS=${CONNS:-10000}
LOAD_PROCS=${LOAD_PROCS:-2}
PRESENCE=${PRESENCE:-true}
HOLD=${HOLD:-60s}
FLAPPERS=${FLAPPERS:-100}
FLAP_FOR=${FLAP_FOR:-30s}
INTERVAL=${INTERVAL:-1.5s}
TTL=${TTL:-12s}
TIMEOUT=${TIMEOUT:-12m}

ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/phxnats-presence.XXXXXX")
pids=()
cleanup() {
	if [ -n "${KEEP_LOGS:-}" ]; then
		# the logs, and each gateway's metrics at the end (its ops port)
		mkdir -p "$KEEP_LOGS"
		cp "$tmp"/*.log "$KEEP_LOGS"/ 2>/dev/null || true
		for l in "$tmp"/gw-*.log; do
			a=$(grep -oE '"ops_addr":"127\.0\.0\.1:[0-9]+' "$l" | head -1 | grep -oE '127\.0\.0\.1:[0-9]+' || true)
			[ -n "$a" ] && curl -fs "http://$a/metrics" >"$KEEP_LOGS/$(basename "$l" .log).metrics" || true
		done
	fi
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
for i in $(seq "$GATEWAYS"); do
	"$tmp/gateway" --http-addr 127.0.0.1:0 --ops-addr 127.0.0.1:0 --gateway-name "gw-$i" --gateway-rate-limit -1 --gateway-user-rate-limit -1 --gateway-addr-rate-limit -1 --gateway-max-pending -1 \
		--gateway-max-conns-per-address -1 --gateway-presence-interval "$INTERVAL" --gateway-presence-ttl "$TTL" >"$tmp/gw-$i.log" 2>&1 &
	pids+=($!)
	gw_pids+=($!)
	a=$(addr_of "$tmp/gw-$i.log" '"serving"')
	ready "http://$a/readyz"
	urls+=("ws://$a/socket/websocket")
done
echo "== nats $nats; gateways ${urls[*]} (pids ${gw_pids[*]})" >&2

"$tmp/loadtest" presence --url "$(IFS=,; echo "${urls[*]}")" --pids "$(IFS=,; echo "${gw_pids[*]}")" --nats-url "$nats" \
	--conns "$CONNS" --procs "$LOAD_PROCS" --token-mode sign --secret "$CHAT_AUTH_SECRET_KEY_BASE" \
	--presence="$PRESENCE" --hold "$HOLD" --flappers "$FLAPPERS" --flap-for "$FLAP_FOR" --timeout "$TIMEOUT" --label "$GATEWAYS gateways"

echo
echo "| gateway | peak RSS (MiB) | warnings in its log |"
echo "|---|---:|---:|"
for i in $(seq "$GATEWAYS"); do
	p=${gw_pids[$((i - 1))]}
	rss=$(awk '/VmHWM/{printf "%.0f", $2 / 1024}' "/proc/$p/status")
	w=$(grep -c '"level":"WARN"' "$tmp/gw-$i.log" || true)
	echo "| gw-$i | $rss | $w |"
	grep '"level":"WARN"' "$tmp/gw-$i.log" | head -3 >&2 || true
done

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
# KEEP_LOGS=DIR keeps the processes' logs and the gateways' final metrics (split.sh).
# Everything runs on 127.0.0.1 on free ports, in a temporary folder, and is
# stopped by PID at the end.
#
#   bash loadtest/presence.sh                         # 10,000 sockets, 2 gateways
#   CONNS=10000 PRESENCE=false FLAPPERS=0 bash loadtest/presence.sh
set -euo pipefail
cd "$(dirname "$0")/.."

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

# shellcheck source=loadtest/split.sh
. loadtest/split.sh
split_start presence
split_services
split_gateways "$GATEWAYS" --gateway-max-conns-per-address -1 --gateway-presence-interval "$INTERVAL" --gateway-presence-ttl "$TTL"

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

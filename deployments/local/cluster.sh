#!/usr/bin/env bash
# cluster.sh: the split deployment as real, separate processes on this machine
# (`make cluster`): a 3-node NATS cluster with JetStream, 2 gateways, 2 roomsvc
# (memberships in KV with 3 replicas) and 2 authsvc sharing one development
# secret. It waits until every process is ready, prints the URLs and PIDs,
# stays in the foreground, and on Ctrl-C or SIGTERM stops everything it
# started (by PID: gateways first so sockets drain, then services, then NATS).
#
# Kill a process by its PID to watch the rest carry on (kill -9 a NATS node,
# kill a roomsvc, kill -TERM a gateway and watch the browser reconnect).
#
# Settings (environment variables; defaults in brackets):
#   BIN                 binaries from `make build`              [./bin]
#   RUN_DIR             JetStream data, secret, logs            [./data/cluster]
#   NATS_PORTS          client ports of the 3 nodes             [4222 4223 4224]
#   ROUTE_PORTS         cluster (route) ports                   [6222 6223 6224]
#   MONITOR_PORTS       NATS monitoring ports                   [8222 8223 8224]
#   GATEWAY_ADDRS       gateway A and B                         [127.0.0.1:4001 127.0.0.1:4002]
#   GATEWAY_OPS_ADDRS   their ops endpoints (/metrics)          [127.0.0.1:4101 127.0.0.1:4102]
#   ROOMSVC_ADDRS       roomsvc ops endpoints                   [127.0.0.1:4011 127.0.0.1:4021]
#   AUTHSVC_ADDRS       authsvc ops endpoints                   [127.0.0.1:4012 127.0.0.1:4022]
#   READY_TIMEOUT       seconds to wait for each /readyz        [30]
#   CHAT_AUTH_SECRET_KEY_BASE  token secret; default: generated once into RUN_DIR/secret_key_base
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${BIN:-$ROOT/bin}
RUN_DIR=${RUN_DIR:-$ROOT/data/cluster}
read -r -a NATS_PORTS <<<"${NATS_PORTS:-4222 4223 4224}"
read -r -a ROUTE_PORTS <<<"${ROUTE_PORTS:-6222 6223 6224}"
read -r -a MONITOR_PORTS <<<"${MONITOR_PORTS:-8222 8223 8224}"
read -r -a GATEWAY_ADDRS <<<"${GATEWAY_ADDRS:-127.0.0.1:4001 127.0.0.1:4002}"
read -r -a GATEWAY_OPS_ADDRS <<<"${GATEWAY_OPS_ADDRS:-127.0.0.1:4101 127.0.0.1:4102}"
read -r -a ROOMSVC_ADDRS <<<"${ROOMSVC_ADDRS:-127.0.0.1:4011 127.0.0.1:4021}"
read -r -a AUTHSVC_ADDRS <<<"${AUTHSVC_ADDRS:-127.0.0.1:4012 127.0.0.1:4022}"
READY_TIMEOUT=${READY_TIMEOUT:-30}
ASSETS=$ROOT/gateway/web/node_modules/phoenix/priv/static
HOST=127.0.0.1

die() {
	echo "cluster: $*" >&2
	exit 1
}

[ ${#NATS_PORTS[@]} -eq 3 ] && [ ${#ROUTE_PORTS[@]} -eq 3 ] && [ ${#MONITOR_PORTS[@]} -eq 3 ] ||
	die "NATS_PORTS, ROUTE_PORTS and MONITOR_PORTS need 3 ports each"
[ ${#GATEWAY_ADDRS[@]} -eq 2 ] && [ ${#GATEWAY_OPS_ADDRS[@]} -eq 2 ] && [ ${#ROOMSVC_ADDRS[@]} -eq 2 ] && [ ${#AUTHSVC_ADDRS[@]} -eq 2 ] ||
	die "GATEWAY_ADDRS, GATEWAY_OPS_ADDRS, ROOMSVC_ADDRS and AUTHSVC_ADDRS need 2 addresses each"
command -v curl >/dev/null || die "curl is needed to wait for the /readyz endpoints"

# Every binary must be there before anything starts.
for b in nats-server gateway roomsvc authsvc; do
	[ -x "$BIN/$b" ] || die "missing binary $BIN/$b: run \`make build\` (or \`make cluster\`, which builds first)"
done
[ -f "$ASSETS/phoenix.min.js" ] || echo "cluster: note: $ASSETS/phoenix.min.js is missing (run \`make assets\`): the chat page will not load phoenix.js" >&2

# Every port must be free: a listener there (e.g. `make run` on 4222) is an error now,
# not a confusing failure later.
port_taken() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
taken=()
for p in "${NATS_PORTS[@]}" "${ROUTE_PORTS[@]}" "${MONITOR_PORTS[@]}"; do
	if port_taken "$HOST" "$p"; then taken+=("$HOST:$p"); fi
done
for a in "${GATEWAY_ADDRS[@]}" "${GATEWAY_OPS_ADDRS[@]}" "${ROOMSVC_ADDRS[@]}" "${AUTHSVC_ADDRS[@]}"; do
	if port_taken "${a%:*}" "${a##*:}"; then taken+=("$a"); fi
done
[ ${#taken[@]} -eq 0 ] || die "already in use: ${taken[*]} (is \`make run\` or another cluster running? the *_PORTS / *_ADDRS variables move them)"

mkdir -p "$RUN_DIR/logs"
LOGS=$RUN_DIR/logs

# One development secret for both authsvc, kept in RUN_DIR like `make run`
# keeps its own, so tokens survive a restart of the cluster.
SECRET_NOTE="from CHAT_AUTH_SECRET_KEY_BASE"
if [ -z "${CHAT_AUTH_SECRET_KEY_BASE:-}" ]; then
	if [ ! -s "$RUN_DIR/secret_key_base" ]; then
		(umask 077 && head -c 48 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$RUN_DIR/secret_key_base")
	fi
	CHAT_AUTH_SECRET_KEY_BASE=$(cat "$RUN_DIR/secret_key_base")
	SECRET_NOTE="generated development secret, kept in $RUN_DIR/secret_key_base"
fi
export CHAT_AUTH_SECRET_KEY_BASE # in the environment, not on a command line `ps` shows

PIDS=() # in start order
NAMES=()
stopping=0
stop_all() {
	[ "$stopping" = 1 ] && return
	stopping=1
	[ ${#PIDS[@]} -gt 0 ] || return 0
	trap - INT TERM
	echo
	echo "cluster: stopping"
	# Reverse start order: gateways drain their sockets (close 1012) while the
	# services and NATS are still up; NATS goes last.
	local i pid deadline
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		pid=${PIDS[i]}
		kill -0 "$pid" 2>/dev/null || continue
		kill -TERM "$pid" 2>/dev/null || true
		deadline=$((SECONDS + 20))
		while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
		if kill -0 "$pid" 2>/dev/null; then
			echo "cluster: ${NAMES[i]} (pid $pid) did not stop in 20s: SIGKILL" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
		echo "cluster: stopped ${NAMES[i]} (pid $pid)"
	done
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all' EXIT

# start NAME CMD...: runs CMD in the background, its output in LOGS/NAME.log.
# setsid keeps the terminal's Ctrl-C away from the children (it reaches this
# script only, which then stops them in order); it execs, so $! is CMD's PID.
SETSID=()
command -v setsid >/dev/null && SETSID=(setsid)
start() {
	local name=$1
	shift
	"${SETSID[@]}" "$@" </dev/null >"$LOGS/$name.log" 2>&1 &
	PIDS+=($!)
	NAMES+=("$name")
}

# wait_http NAME URL: polls URL until it answers 200, for at most READY_TIMEOUT
# seconds; fails early with the log if the process exited.
wait_http() {
	local name=$1 url=$2 i pid
	for i in "${!NAMES[@]}"; do [ "${NAMES[i]}" = "$name" ] && pid=${PIDS[i]}; done
	local deadline=$((SECONDS + READY_TIMEOUT))
	until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "cluster: $name exited before it was ready; the end of $LOGS/$name.log:" >&2
			tail -n 20 "$LOGS/$name.log" >&2
			exit 1
		fi
		if [ $SECONDS -ge $deadline ]; then
			echo "cluster: $name not ready at $url after ${READY_TIMEOUT}s; the end of $LOGS/$name.log:" >&2
			tail -n 20 "$LOGS/$name.log" >&2
			exit 1
		fi
		sleep 0.1
	done
}

routes=""
for p in "${ROUTE_PORTS[@]}"; do routes+="${routes:+,}nats://$HOST:$p"; done
SEEDS=""
for p in "${NATS_PORTS[@]}"; do SEEDS+="${SEEDS:+,}nats://$HOST:$p"; done

echo "cluster: starting in $RUN_DIR (logs in $LOGS)"
for i in 0 1 2; do
	n=$((i + 1))
	mkdir -p "$RUN_DIR/nats/n$n"
	start "nats-$n" "$BIN/nats-server" --server_name "n$n" -a "$HOST" -p "${NATS_PORTS[i]}" -m "${MONITOR_PORTS[i]}" \
		--js --sd "$RUN_DIR/nats/n$n" \
		--cluster_name phxnats --cluster "nats://$HOST:${ROUTE_PORTS[i]}" --routes "$routes"
done
# /healthz of a clustered node is 200 once it is connected and JetStream is current.
for i in 0 1 2; do wait_http "nats-$((i + 1))" "http://$HOST:${MONITOR_PORTS[i]}/healthz"; done

export CHAT_NATS_URL=$SEEDS CHAT_LOG_FORMAT=${CHAT_LOG_FORMAT:-json}
# authsvc-2 starts once authsvc-1 is ready, for the same reason as roomsvc
# below: authsvc creates the ban bucket phx_user_bans.
start authsvc-1 "$BIN/authsvc" serve --http-addr "${AUTHSVC_ADDRS[0]}" --auth-kv-replicas 3
wait_http authsvc-1 "http://${AUTHSVC_ADDRS[0]}/readyz"
start authsvc-2 "$BIN/authsvc" serve --http-addr "${AUTHSVC_ADDRS[1]}" --auth-kv-replicas 3
# roomsvc-2 starts once roomsvc-1 is ready: two roomsvc creating the same
# new KV bucket at once on a fresh cluster both get no answer and retry
# after 10s, per bucket (see README.md here).
start roomsvc-1 "$BIN/roomsvc" --http-addr "${ROOMSVC_ADDRS[0]}" --rooms-kv-replicas 3
wait_http roomsvc-1 "http://${ROOMSVC_ADDRS[0]}/readyz"
start roomsvc-2 "$BIN/roomsvc" --http-addr "${ROOMSVC_ADDRS[1]}" --rooms-kv-replicas 3
start gateway-a "$BIN/gateway" --http-addr "${GATEWAY_ADDRS[0]}" --ops-addr "${GATEWAY_OPS_ADDRS[0]}" --gateway-name gw-a --gateway-dev-login --gateway-assets-dir "$ASSETS"
start gateway-b "$BIN/gateway" --http-addr "${GATEWAY_ADDRS[1]}" --ops-addr "${GATEWAY_OPS_ADDRS[1]}" --gateway-name gw-b --gateway-dev-login --gateway-assets-dir "$ASSETS"
wait_http roomsvc-2 "http://${ROOMSVC_ADDRS[1]}/readyz"
wait_http authsvc-1 "http://${AUTHSVC_ADDRS[0]}/readyz"
wait_http authsvc-2 "http://${AUTHSVC_ADDRS[1]}/readyz"
wait_http gateway-a "http://${GATEWAY_ADDRS[0]}/readyz"
wait_http gateway-b "http://${GATEWAY_ADDRS[1]}/readyz"

cat <<EOF

  Chat, gateway A:  http://${GATEWAY_ADDRS[0]}     (dev login on)
  Chat, gateway B:  http://${GATEWAY_ADDRS[1]}
  gateway ops:      http://${GATEWAY_OPS_ADDRS[0]}/metrics  http://${GATEWAY_OPS_ADDRS[1]}/metrics
  NATS seed list:   $SEEDS
  NATS monitoring:  http://$HOST:${MONITOR_PORTS[0]}  http://$HOST:${MONITOR_PORTS[1]}  http://$HOST:${MONITOR_PORTS[2]}
  roomsvc ops:      http://${ROOMSVC_ADDRS[0]}/readyz  http://${ROOMSVC_ADDRS[1]}/readyz   (KV replicas 3)
  authsvc ops:      http://${AUTHSVC_ADDRS[0]}/readyz  http://${AUTHSVC_ADDRS[1]}/readyz
  auth secret:      $SECRET_NOTE
  operator tool:    $BIN/chatctl --nats-url $SEEDS rooms grant rooms:ops alice

  PIDs (kill one to try a fault):
EOF
for i in "${!NAMES[@]}"; do printf '    %-10s %s\n' "${NAMES[i]}" "${PIDS[i]}"; done
echo
echo "  Logs: $LOGS/*.log     Ctrl-C stops everything."
echo

# Stay in the foreground; say once when a process ends (a fault you caused,
# or a crash: its log says which).
declare -A reported=()
while true; do
	for i in "${!PIDS[@]}"; do
		pid=${PIDS[i]}
		if [ -z "${reported[$pid]:-}" ] && ! kill -0 "$pid" 2>/dev/null; then
			reported[$pid]=1
			rc=0
			wait "$pid" 2>/dev/null || rc=$?
			echo "cluster: ${NAMES[i]} (pid $pid) exited with status $rc; see $LOGS/${NAMES[i]}.log" >&2
		fi
	done
	sleep 1 &
	wait $! || true
done

# loadtest/split.sh, sourced by scaleout.sh and presence.sh: the split
# deployment as real processes on loopback, free ports and a temporary
# folder (one nats-server with JetStream, authsvc, roomsvc, N gateways),
# stopped by PID when the script exits. KEEP_LOGS=DIR keeps the processes'
# logs and each gateway's final /metrics there.
#
#   split_start NAME          build every binary into $tmp (phxnats-NAME.*)
#   split_services            nats ($nats), authsvc, roomsvc; exports
#                             CHAT_NATS_URL and a fresh CHAT_AUTH_SECRET_KEY_BASE
#   split_gateways N FLAGS... N gateways with the load-test limits off and
#                             FLAGS: $urls (ws://.../socket/websocket),
#                             $gw_pids, $ops (each one's ops address)

ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
GO=${GO:-go}
pids=() ops=()

split_start() {
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/phxnats-$1.XXXXXX")
	trap split_cleanup EXIT
	echo "== building into $tmp" >&2
	(cd gateway && $GO build -o "$tmp/gateway" ./cmd/gateway)
	(cd roomsvc && $GO build -o "$tmp/roomsvc" ./cmd/roomsvc)
	(cd authsvc && $GO build -o "$tmp/authsvc" ./cmd/authsvc)
	(cd allinone && $GO build -o "$tmp/nats-server" github.com/nats-io/nats-server/v2)
	(cd loadtest && $GO build -o "$tmp/loadtest" .)
}

split_cleanup() {
	if [ -n "${KEEP_LOGS:-}" ]; then
		mkdir -p "$KEEP_LOGS"
		cp "$tmp"/*.log "$KEEP_LOGS"/ 2>/dev/null || true
		for i in "${!ops[@]}"; do
			curl -fs "http://${ops[$i]}/metrics" >"$KEEP_LOGS/gw-$((i + 1)).metrics" || true
		done
	fi
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}

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

split_services() {
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
}

split_gateways() {
	local n=$1
	shift
	urls=() gw_pids=() ops=()
	for i in $(seq "$n"); do
		"$tmp/gateway" --http-addr 127.0.0.1:0 --ops-addr 127.0.0.1:0 --gateway-name "gw-$i" --gateway-rate-limit -1 \
			--gateway-user-rate-limit -1 --gateway-addr-rate-limit -1 --gateway-max-pending -1 "$@" >"$tmp/gw-$i.log" 2>&1 &
		pids+=($!)
		gw_pids+=($!)
		local a
		a=$(addr_of "$tmp/gw-$i.log" '"serving"')
		ops+=("$(addr_of "$tmp/gw-$i.log" '"ops_addr"')") # /metrics is there, not on the public port
		ready "http://$a/readyz"
		urls+=("ws://$a/socket/websocket")
	done
	echo "== nats $nats; gateways ${urls[*]} (pids ${gw_pids[*]})" >&2
}

#!/usr/bin/env bash
# A/B of one load scenario between git revisions, on one machine in one go.
#
#   loadtest/ab.sh [-n ROUNDS] REV_A REV_B [REV...] -- SCENARIO FLAGS...
#   loadtest/ab.sh -n 2 2f3e06e HEAD -- fanout --subs 10000 --msgs 3000 --rate 0 --window 256
#
# It builds `loadtest` of every revision (from `git archive`, into a
# temporary folder) and then, ROUNDS times, for each revision in turn:
# starts a fresh `loadtest serve` of that revision (the whole system in one
# process, as `make run`), runs the scenario against it with the load tool
# of this checkout (the same client for every revision), and stops the
# server by its PID. Revisions alternate so that a drift of the machine
# shows in both. The label of each run is the revision's short hash (and
# the round); the tables go to stderr, the result JSON lines to stdout, and
# `loadtest summarize` turns them into markdown.
#
# Loopback only, every run bounded (the load tool's --timeout; the server's
# --max-lifetime). AB_SERVE_FLAGS adds flags to every server (e.g.
# --rooms-announce-joins=true); the secret is generated, and given to the
# load tool as $AB_SECRET for --token-mode sign: write --secret @ and it
# becomes the secret.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
rounds=1
if [ "${1:-}" = "-n" ]; then
	rounds=$2
	shift 2
fi
revs=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
	revs+=("$1")
	shift
done
if [ $# -eq 0 ] || [ ${#revs[@]} -lt 1 ]; then
	echo "usage: loadtest/ab.sh [-n ROUNDS] REV_A [REV_B ...] -- SCENARIO FLAGS..." >&2
	exit 2
fi
shift # --
scenario=$1
shift

tmp=$(mktemp -d "${TMPDIR:-/tmp}/phxnats-ab.XXXXXX")
server_pid=""
cleanup() {
	if [ -n "$server_pid" ]; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

echo "== building the load tool of this checkout" >&2
$GO build -o "$tmp/loadtest" ./loadtest
labels=()
for rev in "${revs[@]}"; do
	short=$(git rev-parse --short "$rev")
	echo "== building loadtest serve of $rev ($short)" >&2
	mkdir -p "$tmp/src-$short"
	git archive "$rev" | tar -x -C "$tmp/src-$short"
	(cd "$tmp/src-$short" && $GO build -o "$tmp/serve-$short" ./loadtest)
	labels+=("$short")
done

secret=$(head -c 48 /dev/urandom | base64 | tr -d '/+=\n')
args=()
for a in "$@"; do
	if [ "$a" = "@" ]; then a=$secret; fi
	args+=("$a")
done

for round in $(seq "$rounds"); do
	for short in "${labels[@]}"; do
		out="$tmp/serve-$short-$round.out"
		"$tmp/serve-$short" serve --http-addr 127.0.0.1:0 --secret "$secret" --max-lifetime 30m \
			${AB_SERVE_FLAGS:-} >"$out" 2>"$tmp/serve-$short-$round.err" &
		server_pid=$!
		for _ in $(seq 300); do
			grep -q '^LISTEN ' "$out" 2>/dev/null && break
			sleep 0.1
		done
		addr=$(awk '/^LISTEN /{print $2; exit}' "$out")
		if [ -z "$addr" ]; then
			echo "server $short did not start:" >&2
			cat "$tmp/serve-$short-$round.err" >&2
			exit 1
		fi
		echo "== round $round: $scenario $* against $short (pid $server_pid)" >&2
		"$tmp/loadtest" "$scenario" --url "ws://$addr/socket/websocket" --pid "$server_pid" \
			--label "$short#$round" --quiet "${args[@]}" | tee /dev/stderr | grep '^{'
		kill "$server_pid"
		wait "$server_pid" 2>/dev/null || true
		server_pid=""
	done
done

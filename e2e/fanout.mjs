#!/usr/bin/env node
// Fan-out measurement with the official phoenix.js client (not a test; run
// it by hand against a running system, e.g. `make run`):
//
//   PHX_URL=http://127.0.0.1:4000 node fanout.mjs [clients=1000] [--room rooms:lobby]
//       [--user NAME] [--messages 20] [--concurrency 100]
//
// It opens `clients` sockets in this one process and joins them all to the
// room, then one extra socket pushes ONE new_msg and the script measures the
// time from the push until every client got it (the last one, and p50/p99 per
// client). Then it pushes --messages more, one at a time (each after the
// previous reached every client), and reports the median completion time.
// With --user every socket connects with a development token for NAME
// (needed for a room other than rooms:lobby).
//
// Human-readable progress goes to stderr; the last line on stdout is a JSON
// summary. Exit status: 0 if every client got every message exactly once
// within 10 s of its push; 1 if a delivery was missing or duplicated, or a
// socket failed to connect or join; 2 on the 60 s overall timeout.
import { performance } from "node:perf_hooks";
import { PHX_URL, Sockets, joinOk, marker, percentile, token, waitFor } from "./lib.mjs";

const HARD_TIMEOUT_MS = 60000;
const DELIVERY_TIMEOUT_MS = 10000;

function parseArgs(argv) {
  const opts = { clients: 1000, room: "rooms:lobby", user: null, messages: 20, concurrency: 100 };
  const rest = [...argv];
  while (rest.length > 0) {
    const a = rest.shift();
    const [flag, inline] = a.startsWith("--") && a.includes("=") ? a.split(/=(.*)/s, 2) : [a, undefined];
    const value = () => {
      const v = inline ?? rest.shift();
      if (v === undefined) usage(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case "--room": opts.room = value(); break;
      case "--user": opts.user = value(); break;
      case "--messages": opts.messages = int(value(), flag, 0); break;
      case "--concurrency": opts.concurrency = int(value(), flag, 1); break;
      case "--clients": opts.clients = int(value(), flag, 1); break;
      case "-h": case "--help": usage(); break;
      default:
        if (flag.startsWith("-")) usage(`unknown flag ${flag}`);
        opts.clients = int(flag, "clients", 1);
    }
  }
  return opts;
}

function int(s, what, min) {
  const n = Number(s);
  if (!Number.isInteger(n) || n < min) usage(`${what}: want an integer >= ${min}, got ${s}`);
  return n;
}

function usage(err) {
  if (err) console.error(`fanout: ${err}`);
  console.error("usage: PHX_URL=http://host:port node fanout.mjs [clients=1000] [--room R] [--user NAME] [--messages 20] [--concurrency 100]");
  process.exit(err ? 1 : 0);
}

const log = (...a) => console.error(...a);
const round = (x) => Math.round(x * 100) / 100;

const opts = parseArgs(process.argv.slice(2));
const sockets = new Sockets();
const summary = {
  url: PHX_URL, room: opts.room, clients: opts.clients, ok: false,
};

const hardTimer = setTimeout(() => {
  summary.error = `overall timeout of ${HARD_TIMEOUT_MS} ms`;
  finish(2);
}, HARD_TIMEOUT_MS);

let finished = false;
function finish(code) {
  if (finished) return;
  finished = true;
  clearTimeout(hardTimer);
  console.log(JSON.stringify(summary));
  sockets.disconnectAll();
  // Give the close frames a moment to go out, then leave whatever timers
  // phoenix.js still has (push timeouts) behind.
  process.exitCode = code;
  setTimeout(() => process.exit(code), 300).unref();
}

// current is the message being waited for: each client records its arrival.
let current = null;

async function openClient(i, tok) {
  const socket = await sockets.connect(tok ? { token: tok } : {}, 10000);
  const channel = socket.channel(opts.room);
  channel.on("new_msg", (p) => {
    const c = current;
    if (!c || p?.body !== c.body) return;
    const t = performance.now();
    if (c.arrival[i] === undefined) {
      c.arrival[i] = t;
      c.received++;
    } else {
      c.duplicates++;
    }
  });
  await joinOk(channel, 10000);
  return { socket, channel };
}

/** Pushes one message and waits until every client has it (or 10 s pass). */
async function fanOut(sender, n, seq) {
  const body = JSON.stringify({ fanout: summary.marker, seq, sentAt: Date.now() });
  const c = { body, arrival: new Array(n), received: 0, duplicates: 0, sentAt: 0 };
  current = c;
  c.sentAt = performance.now();
  sender.push("new_msg", { body }, 2000);
  try {
    await waitFor(() => c.received >= n, DELIVERY_TIMEOUT_MS, `message ${seq} at all ${n} clients`);
  } catch {
    // reported below as missing
  }
  current = null;
  const lat = c.arrival.filter((t) => t !== undefined).map((t) => t - c.sentAt);
  return {
    seq,
    received: c.received,
    missing: n - c.received,
    duplicates: c.duplicates,
    lastMs: lat.length ? round(Math.max(...lat)) : null,
    p50Ms: round(percentile(lat, 50)),
    p99Ms: round(percentile(lat, 99)),
  };
}

async function main() {
  summary.marker = marker("fanout");
  const n = opts.clients;
  log(`fanout: ${n} clients on ${opts.room} at ${PHX_URL} (concurrency ${opts.concurrency})`);
  const tok = opts.user ? await token(opts.user) : null;

  // Connect and join all N, at most `concurrency` in flight.
  const t0 = performance.now();
  const clients = new Array(n);
  let next = 0;
  const failures = [];
  const worker = async () => {
    while (next < n) {
      const i = next++;
      try {
        clients[i] = await openClient(i, tok);
      } catch (e) {
        failures.push(`client ${i}: ${e.message}`);
        if (failures.length >= 5) throw new Error(failures.join("; "));
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(opts.concurrency, n) }, worker));
  } catch {
    // collected in failures
  }
  summary.connectJoinMs = round(performance.now() - t0);
  if (failures.length > 0) {
    summary.error = `connect/join failed: ${failures.slice(0, 5).join("; ")}`;
    return 1;
  }
  log(`fanout: connected and joined ${n} clients in ${summary.connectJoinMs} ms`);

  const senderSocket = await sockets.connect(tok ? { token: tok } : {}, 10000);
  const sender = senderSocket.channel(opts.room);
  await joinOk(sender, 10000);

  let failed = false;
  const first = await fanOut(sender, n, 0);
  summary.first = first;
  log(`fanout: first message: last client after ${first.lastMs} ms, p50 ${first.p50Ms} ms, p99 ${first.p99Ms} ms` +
    (first.missing || first.duplicates ? ` (MISSING ${first.missing}, DUPLICATES ${first.duplicates})` : ""));
  if (first.missing || first.duplicates) failed = true;

  const runs = [];
  for (let seq = 1; seq <= opts.messages && !failed; seq++) {
    const r = await fanOut(sender, n, seq);
    runs.push(r);
    if (r.missing || r.duplicates) {
      failed = true;
      log(`fanout: message ${seq}: MISSING ${r.missing}, DUPLICATES ${r.duplicates}`);
    }
  }
  if (runs.length > 0) {
    const lasts = runs.map((r) => r.lastMs).filter((x) => x !== null);
    summary.repeat = {
      messages: runs.length,
      medianLastMs: round(percentile(lasts, 50)),
      minLastMs: round(Math.min(...lasts)),
      maxLastMs: round(Math.max(...lasts)),
      medianP50Ms: round(percentile(runs.map((r) => r.p50Ms), 50)),
      medianP99Ms: round(percentile(runs.map((r) => r.p99Ms), 50)),
      missing: runs.reduce((s, r) => s + r.missing, 0),
      duplicates: runs.reduce((s, r) => s + r.duplicates, 0),
    };
    log(`fanout: ${runs.length} more messages one by one: median completion ${summary.repeat.medianLastMs} ms ` +
      `(min ${summary.repeat.minLastMs}, max ${summary.repeat.maxLastMs})`);
  }
  if (failed) {
    summary.error = "a delivery was missing or duplicated";
    return 1;
  }
  summary.ok = true;
  return 0;
}

main().then(finish, (e) => {
  summary.error = e && e.message ? e.message : String(e);
  finish(1);
});

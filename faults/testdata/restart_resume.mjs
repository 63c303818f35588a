// restart_resume.mjs: the phoenix.js side of TestHistoryAcrossRestart
// (faults/history_test.go). One official, unmodified phoenix.js client
// joins TOPIC at URL with its params as a function, as the README tells
// apps to: {history: {last: 10}} first, {history: {since: P}} on every
// rejoin, P being the last position it has (the join reply's "seq", then
// each broadcast's ref). It prints READY once it has the bodies of WANT_FIRST
// (comma-separated) and from then on cannot reconnect until the test
// writes OPEN on stdin (so that what is posted meanwhile comes in the
// rejoin's history, not live); once it has every body of WANT_ALL, it
// prints RESULT with everything it saw, and exits.
import { createRequire } from "node:module";
import path from "node:path";
import readline from "node:readline";

const require = createRequire(path.join(process.env.E2E_DIR, "package.json"));
const { Socket } = require("phoenix");
const WebSocket = require("ws");

const URL = process.env.URL;
const TOPIC = process.env.TOPIC || "rooms:lobby";
const WANT_FIRST = process.env.WANT_FIRST.split(",");
const WANT_ALL = process.env.WANT_ALL.split(",");
const LIMIT_MS = Number(process.env.LIMIT_MS || 60000);

const got = []; // {body, seq, from: "history"|"live"}
const joins = []; // {params, recovered, messages}
let last = null;
let ready = false;

// phoenix.js itself is unchanged: its transport, while the gate is shut,
// dials a port where nothing listens, and phoenix.js retries as usual.
let gateOpen = true;
class GatedWebSocket extends WebSocket {
  constructor(url, protocols) {
    super(gateOpen ? url : "ws://127.0.0.1:9/gated", protocols);
  }
}
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim() === "OPEN") gateOpen = true;
});

const socket = new Socket(URL + "/socket", { transport: GatedWebSocket, heartbeatIntervalMs: 1000 });
socket.connect();
const sent = []; // the params of every join, as phoenix.js asked for them
const channel = socket.channel(TOPIC, () => {
  const params = last ? { history: { since: last } } : { history: { last: 10 } };
  sent.push(params);
  return params;
});
channel.on("new_msg", (msg, pos) => {
  got.push({ body: msg.body, seq: pos, from: "live" });
  last = pos;
  check();
});
channel.join().receive("ok", (rep) => onJoin(rep));
// phoenix.js rejoins with the same push: each ok reply comes here too.
function onJoin({ messages, seq, recovered }) {
  joins.push({ params: sent[sent.length - 1], recovered, messages: messages.length });
  for (const m of messages) got.push({ body: m.payload.body, seq: m.seq, from: "history" });
  last = seq;
  check();
}

function check() {
  const bodies = new Set(got.map((g) => g.body));
  if (!ready && WANT_FIRST.every((b) => bodies.has(b))) {
    ready = true;
    gateOpen = false;
    console.log("READY " + last);
  }
  if (WANT_ALL.every((b) => bodies.has(b))) {
    console.log("RESULT " + JSON.stringify({ got, joins }));
    process.exit(0);
  }
}
setTimeout(() => {
  console.log("RESULT " + JSON.stringify({ got, joins, timedOut: true }));
  process.exit(0);
}, LIMIT_MS);

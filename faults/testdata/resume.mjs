// resume.mjs: the phoenix.js side of the history fault tests
// (faults/history_test.go: TestCutClientResumes, TestGatewayCutFromNATSResumes).
//
// RESUMERS official, unmodified phoenix.js clients connect to
// RESUMER_URL (the test puts something it can break between them and the
// room: a TCP proxy before the gateway, or one between the gateway and
// NATS) and join TOPIC with their params as a function, as the README
// tells apps to: the first join asks for {history: {last: LAST}}, every
// rejoin for {history: {since: P}}, P being the last position the client
// has: the join reply's "seq", then each broadcast's ref (the 2nd argument
// of channel.on callbacks). A POSTER, connected straight to POSTER_URL,
// posts "<PREFIX>-<n>" every INTERVAL_MS.
//
// Protocol with the Go test, one line each way:
//   stdout JOINED   every client has joined
//   stdout READY    every resumer has live messages: the test breaks things now
//   stdin  RESTORED the test has repaired them
//   stdout RESULT {json}, once every resumer has been disconnected or sent
//          phx_error, has rejoined after RESTORED, and has chatted on for a
//          while, then everything settled (every message acknowledged or
//          rejected, every acknowledged one delivered, or SETTLE_MS gone).
// The Go test does the checking: RESULT holds what was posted and, for
// each resumer, everything it received (history and live, in order, with
// positions), each join reply, socket close and phx_error frame.
//
// "Acknowledged" (the only proof phoenix.js gets, since roomsvc answers
// new_msg with no reply): the poster received its own broadcast back.
import { createRequire } from "node:module";
import path from "node:path";
import readline from "node:readline";

const require = createRequire(path.join(process.env.E2E_DIR, "package.json"));
const { Socket } = require("phoenix");
const WebSocket = require("ws");

const TOPIC = process.env.TOPIC || "rooms:lobby";
const RESUMER_URL = process.env.RESUMER_URL;
const POSTER_URL = process.env.POSTER_URL;
const RESUMERS = Number(process.env.RESUMERS || 1);
const INTERVAL = Number(process.env.INTERVAL_MS || 200);
const LAST = Number(process.env.LAST || 20);
const PREFIX = process.env.PREFIX || "m";
const AFTER_MS = Number(process.env.AFTER_MS || 1000); // chat on after every resumer is back
const BACK_MS = Number(process.env.BACK_MS || 30000); // wait at most this long for them after RESTORED
const SETTLE_MS = Number(process.env.SETTLE_MS || 5000);
const now = () => performance.timeOrigin + performance.now(); // ms since the epoch
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(pred, ms, label) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${label}`);
    await sleep(5);
  }
}

async function token(base, user) {
  const res = await fetch(`${base}/token?user_id=${encodeURIComponent(user)}`);
  if (res.status !== 200) throw new Error(`GET /token for ${user}: HTTP ${res.status} ${await res.text()}`);
  return (await res.json()).token;
}

// A resumer keeps the last position it has and asks for what follows it
// on every rejoin.
class Resumer {
  constructor(name, base, tok) {
    this.name = name;
    this.last = null; // the position to resume from
    this.sentParams = null; // the params of the last join sent
    this.received = []; // {body, seq, via: "history"|"live", at}
    this.joins = []; // {at, params, recovered, messages, seq}
    this.joinErrors = [];
    this.closes = []; // {code, at}
    this.phxErrors = []; // {at, join_ref}: phx_error frames from the gateway
    this.noRef = 0; // live broadcasts without a position
    this.socket = new Socket(`${base}/socket`, { transport: WebSocket, params: { token: tok } });
    this.socket.onClose((ev) => this.closes.push({ code: ev && ev.code, at: now() }));
    this.socket.onMessage((m) => {
      if (m.topic === TOPIC && m.event === "phx_error") this.phxErrors.push({ at: now(), join_ref: m.join_ref });
    });
    // A function: phoenix.js calls it for every join it sends.
    this.channel = this.socket.channel(TOPIC, () => {
      this.sentParams = this.last === null ? { history: { last: LAST } } : { history: { since: this.last } };
      return this.sentParams;
    });
    this.channel.on("new_msg", (p, ref) => {
      if (ref === null || ref === undefined) this.noRef++;
      this.record(p, ref, "live");
      if (ref !== null && ref !== undefined) this.last = ref;
    });
  }

  record(p, seq, via) {
    if (!p || typeof p.body !== "string") return;
    this.received.push({ body: p.body, seq: seq === undefined ? null : seq, via, at: now() });
  }

  start() {
    this.socket.connect();
    // The join push is resent on every rejoin; its hooks stay.
    this.channel
      .join()
      .receive("ok", (resp) => {
        const at = now();
        const msgs = (resp && resp.messages) || [];
        for (const m of msgs) if (m.event === "new_msg") this.record(m.payload, m.seq, "history");
        this.joins.push({ at, params: this.sentParams, recovered: resp && resp.recovered, messages: msgs.length, seq: resp && resp.seq });
        if (resp && resp.seq !== undefined && resp.seq !== null) this.last = resp.seq;
      })
      .receive("error", (r) => this.joinErrors.push({ at: now(), reason: r }))
      .receive("timeout", () => this.joinErrors.push({ at: now(), reason: "timeout" }));
  }

  // faults are socket closes and phx_error frames; back() is true once
  // the channel has been joined again after the last of them, after t.
  faultCount() {
    return this.closes.length + this.phxErrors.length;
  }
  back(t) {
    const lastFault = Math.max(0, ...this.closes.map((c) => c.at), ...this.phxErrors.map((e) => e.at));
    const lastJoin = this.joins.length ? this.joins[this.joins.length - 1].at : 0;
    return this.faultCount() > 0 && lastJoin > lastFault && lastJoin > t && this.channel.state === "joined";
  }
}

class Poster {
  constructor(base, tok) {
    this.got = new Set();
    this.sent = []; // {body, at}
    this.rejected = new Map();
    this.closes = [];
    this.joined = false;
    this.socket = new Socket(`${base}/socket`, { transport: WebSocket, params: { token: tok } });
    this.socket.onClose((ev) => this.closes.push({ code: ev && ev.code, at: now() }));
    this.channel = this.socket.channel(TOPIC, {});
    this.channel.on("new_msg", (p) => p && typeof p.body === "string" && this.got.add(p.body));
  }
  start() {
    this.socket.connect();
    this.channel.join().receive("ok", () => (this.joined = true));
  }
  say(body) {
    this.sent.push({ body, at: now() });
    this.channel.push("new_msg", { body }, 10000).receive("error", (r) => this.rejected.set(body, (r && r.reason) || "error"));
  }
}

let restoredAt = 0;
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim() === "RESTORED") restoredAt = now();
});

async function main() {
  const poster = new Poster(POSTER_URL, await token(POSTER_URL, "poster"));
  const resumers = [];
  for (let i = 0; i < RESUMERS; i++) resumers.push(new Resumer(`resumer${i}`, RESUMER_URL, await token(RESUMER_URL, `resumer${i}`)));
  poster.start();
  resumers.forEach((r) => r.start());
  await waitUntil(() => poster.joined && resumers.every((r) => r.joins.length === 1), 10000, "every client to join");
  console.log("JOINED");

  let sending = true;
  const loop = (async () => {
    for (let n = 1; sending; n++) {
      poster.say(`${PREFIX}-${n}`);
      await sleep(INTERVAL);
    }
  })();
  await waitUntil(() => resumers.every((r) => r.received.filter((m) => m.via === "live").length >= 3), 10000, "live messages at every resumer");
  const readyAt = now();
  console.log("READY");

  await waitUntil(() => restoredAt > 0, 120000, "RESTORED from the Go test");
  await waitUntil(() => resumers.every((r) => r.back(restoredAt)), BACK_MS, "every resumer to rejoin after the fault");
  const allBackAt = now();
  await sleep(AFTER_MS);
  // A second phx_error or close meanwhile: wait for that rejoin too.
  await waitUntil(() => resumers.every((r) => r.back(restoredAt)), BACK_MS, "every resumer to be joined at the end");
  sending = false;
  await loop;
  const stoppedAt = now();

  // Settle: every post acknowledged or rejected, every acknowledged one at
  // every resumer.
  const settled = () =>
    poster.sent.every((m) => poster.got.has(m.body) || poster.rejected.has(m.body)) &&
    resumers.every((r) => {
      const have = new Set(r.received.map((m) => m.body));
      return poster.sent.every((m) => !poster.got.has(m.body) || have.has(m.body));
    });
  const settleEnd = Date.now() + SETTLE_MS;
  while (!settled() && Date.now() < settleEnd) await sleep(20);

  const out = {
    ready_at: readyAt,
    restored_at: restoredAt,
    all_back_at: allBackAt,
    stopped_at: stoppedAt,
    settled: settled(),
    posted: poster.sent.map((m) => ({ body: m.body, at: m.at, acked: poster.got.has(m.body), rejected: poster.rejected.get(m.body) || "" })),
    poster_closes: poster.closes,
    resumers: resumers.map((r) => ({
      name: r.name,
      received: r.received,
      joins: r.joins,
      join_errors: r.joinErrors,
      closes: r.closes,
      phx_errors: r.phxErrors,
      no_ref: r.noRef,
    })),
  };
  console.log("RESULT " + JSON.stringify(out));
  poster.socket.disconnect();
  resumers.forEach((r) => r.socket.disconnect());
  process.exit(0);
}

main().catch((e) => {
  console.log("RESULT " + JSON.stringify({ error: String(e && e.stack ? e.stack : e) }));
  process.exit(1);
});

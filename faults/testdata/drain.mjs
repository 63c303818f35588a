// drain.mjs: the phoenix.js side of TestGatewayDrainPhoenixJS (faults/).
//
// MOVERS official, unmodified phoenix.js clients connect through LB_URL (a
// TCP proxy standing in for a load balancer: gateway A while it accepts,
// then gateway B) and OBSERVERS connect straight to gateway B. All join
// rooms:lobby (then JOINED: the Go test publishes probes until the room is
// reachable from every NATS node) and chat. When everyone chats, this prints
// READY; the Go test
// then sends SIGTERM to gateway A, which closes its sockets with 1012. The
// movers reconnect (phoenix.js' own backoff) through the proxy, now to B,
// and rejoin; they chat on a while, then everything settles and this prints
// RESULT {json} and exits 0 (the Go test checks and prints it).
//
// "Acknowledged" (the only proof phoenix.js gets, since roomsvc answers
// new_msg with no reply): the sender received its own broadcast back.
// Checked: every acknowledged message reached every observer (they stay
// connected throughout); every message acknowledged after all movers had
// rejoined reached every mover; nobody received a message twice; every
// mover saw close code 1012 and rejoined.
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.env.E2E_DIR, "package.json"));
const { Socket } = require("phoenix");
const WebSocket = require("ws");

const LB = process.env.LB_URL;
const B = process.env.B_URL;
const MOVERS = Number(process.env.MOVERS || 4);
const OBSERVERS = Number(process.env.OBSERVERS || 2);
const TOPIC = "rooms:lobby";
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

class Client {
  constructor(name, base, tok) {
    this.name = name;
    this.got = new Map(); // new_msg body -> arrival time
    this.dups = 0;
    this.sent = []; // {body, at}
    this.rejected = new Map(); // body -> reason of an error reply
    this.closes = []; // {code, at}
    this.joins = []; // times of join replies "ok" (first join and rejoins)
    this.joinErrors = [];
    this.socket = new Socket(`${base}/socket`, { transport: WebSocket, params: { token: tok } });
    this.socket.onClose((ev) => this.closes.push({ code: ev && ev.code, at: now() }));
    this.channel = this.socket.channel(TOPIC, {});
    this.channel.on("new_msg", (p) => {
      if (!p || typeof p.body !== "string") return;
      if (this.got.has(p.body)) this.dups++;
      else this.got.set(p.body, now());
    });
  }

  start() {
    this.socket.connect();
    // The join push is resent on every rejoin; its hooks stay.
    this.channel
      .join()
      .receive("ok", () => this.joins.push(now()))
      .receive("error", (r) => this.joinErrors.push(r));
  }

  say(body) {
    this.sent.push({ body, at: now() });
    this.channel.push("new_msg", { body }, 10000).receive("error", (r) => this.rejected.set(body, (r && r.reason) || "error"));
  }
}

async function main() {
  const movers = [];
  const observers = [];
  for (let i = 0; i < MOVERS; i++) movers.push(new Client(`mover${i}`, LB, await token(LB, `mover${i}`)));
  for (let i = 0; i < OBSERVERS; i++) observers.push(new Client(`observer${i}`, B, await token(B, `observer${i}`)));
  const everyone = [...movers, ...observers];
  everyone.forEach((c) => c.start());
  await waitUntil(() => everyone.every((c) => c.joins.length === 1), 10000, "every client to join");
  // A join is answered before the room's subscription has crossed the NATS
  // cluster (TestJoinThenBroadcast): the Go test now publishes probes
  // "probe-<node>-<n>" from every NATS node until every client has one from
  // each, so that the chat below starts on a room every node delivers to.
  console.log("JOINED");
  const nodes = Number(process.env.NATS_NODES || 1);
  const warm = (c) => {
    const seen = new Set([...c.got.keys()].filter((b) => b.startsWith("probe-")).map((b) => b.split("-")[1]));
    return seen.size >= nodes;
  };
  await waitUntil(() => everyone.every(warm), 10000, "probes from every NATS node at every client");

  let sending = true;
  const loops = everyone.map(async (c) => {
    const interval = c.name.startsWith("mover") ? 20 : 50;
    for (let n = 1; sending; n++) {
      c.say(`${c.name}-${n}`);
      await sleep(interval);
    }
  });
  await sleep(300);
  console.log("READY"); // the Go test sends SIGTERM to gateway A now
  const drainSeen = now();

  // Every mover sees its socket closed by gateway A and rejoins through the proxy.
  await waitUntil(
    () => movers.every((m) => m.closes.length >= 1 && m.joins.length >= 2),
    20000,
    "every mover to be closed by gateway A and rejoin",
  );
  const allRejoined = Math.max(...movers.map((m) => m.joins[m.joins.length - 1]));
  await sleep(500); // chat on, everyone on gateway B now
  sending = false;
  await Promise.all(loops);

  // Settle: every message acknowledged or rejected, every acknowledged one
  // delivered where it must be; at most 4s (after the gateway's request
  // timeout, a push stuck on a lost request gets its error reply).
  const check = () => {
    const r = { sent: 0, acked: 0, rejected: 0, silent: 0, notAckedDelivered: 0, lost: [], missedWhileMoving: 0, silentExamples: [] };
    for (const c of everyone) {
      for (const m of c.sent) {
        r.sent++;
        if (!c.got.has(m.body)) {
          if (c.rejected.has(m.body)) r.rejected++;
          else {
            r.silent++;
            const close = c.closes.length > 0 ? `, ${Math.round(c.closes[0].at - m.at)} ms before its socket was closed` : "";
            r.silentExamples.push(`${m.body}${close}`);
          }
          if (everyone.some((o) => o !== c && o.got.has(m.body))) r.notAckedDelivered++;
          continue;
        }
        r.acked++;
        for (const o of observers) {
          if (!o.got.has(m.body)) r.lost.push(`${m.body} missing at ${o.name}`);
        }
        for (const mv of movers) {
          if (mv.got.has(m.body)) continue;
          if (m.at > allRejoined) r.lost.push(`${m.body} (sent after every mover rejoined) missing at ${mv.name}`);
          else r.missedWhileMoving++;
        }
      }
    }
    return r;
  };
  let res = check();
  const settleEnd = Date.now() + 4000;
  while ((res.silent > 0 || res.lost.length > 0) && Date.now() < settleEnd) {
    await sleep(20);
    res = check();
  }

  const failures = [];
  if (res.lost.length > 0) failures.push(`${res.lost.length} acknowledged deliveries lost: ${res.lost.slice(0, 10).join("; ")}`);
  for (const m of movers) {
    if (m.closes[0].code !== 1012) failures.push(`${m.name}: first close code ${m.closes[0].code}, want 1012`);
  }
  for (const o of observers) {
    if (o.closes.length > 0) failures.push(`${o.name} (on gateway B) was disconnected: ${JSON.stringify(o.closes)}`);
  }
  for (const c of everyone) {
    if (c.dups > 0) failures.push(`${c.name} received ${c.dups} messages twice`);
    if (c.joinErrors.length > 0) failures.push(`${c.name}: join errors ${JSON.stringify(c.joinErrors)}`);
  }
  const round = (x) => Math.round(x);
  const moves = movers.map((m) => ({
    name: m.name,
    close_code: m.closes[0].code,
    closes: m.closes.length,
    closed_after_ms: round(m.closes[0].at - drainSeen),
    rejoined_after_close_ms: round(m.joins[m.joins.length - 1] - m.closes[0].at),
    join_replies: m.joins.length,
  }));
  const out = {
    ok: failures.length === 0,
    failures,
    movers: moves,
    all_rejoined_after_ready_ms: round(allRejoined - drainSeen),
    ...res,
    silentExamples: undefined,
    lost: res.lost.length,
    lost_examples: res.lost.slice(0, 10),
    silent_examples: res.silentExamples.slice(0, 10),
  };
  console.log("RESULT " + JSON.stringify(out));
  for (const c of everyone) c.socket.disconnect();
  process.exit(0);
}

main().catch((e) => {
  console.log("RESULT " + JSON.stringify({ ok: false, failures: [String(e && e.stack ? e.stack : e)] }));
  process.exit(1);
});

// End-to-end tests of room history and gap-free resume (proto/history.go),
// driven by the official, unmodified phoenix.js client. Run by the Go test
// allinone/system TestPhoenixJS, which sets PHX_URL and PHX_PUBLIC_PREFIX:
// topics starting with it are public rooms, so each test has a room of its
// own, empty when it starts (rooms:lobby is shared by every test file).
// Against `make run`, start it with --rooms-public 'rooms:e2e-*'.
//
// What a client does, and what these tests do with phoenix.js:
//
//   let last = null; // the position reached
//   const channel = socket.channel(topic, () => ({
//     history: last ? { since: last } : { last: 50 },
//   }));
//   channel.on("new_msg", (msg, pos) => { last = pos; show(msg); });
//   channel.join().receive("ok", ({ messages, seq, recovered }) => {
//     messages.forEach((m) => show(m.payload));
//     last = seq;
//   });
import { after, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import {
  Sockets, collect, joinOk, lifecycle, marker, send, sleep, token, waitFor,
} from "./lib.mjs";

const PREFIX = process.env.PHX_PUBLIC_PREFIX || "rooms:e2e-";
const T = { timeout: 30000 };

const sockets = new Sockets();
after(() => sockets.disconnectAll());

/** room is a new public room for one test. */
const room = (what) => PREFIX + marker(what);

/**
 * publisher connects a logged-in socket joined to topic without history.
 * post(bodies) sends them in order and resolves once all came back on its
 * own channel (so they are in the room's stream).
 */
async function publisher(topic, user = "hist-pub") {
  const socket = await sockets.connect({ token: await token(user) });
  const channel = socket.channel(topic);
  await joinOk(channel);
  const echoed = collect(channel, "new_msg");
  const post = async (bodies) => {
    const want = new Set(bodies);
    const before = echoed.length;
    for (const body of bodies) send(channel, "new_msg", { body });
    await waitFor(() => echoed.slice(before).filter((p) => want.has(p.body)).length >= bodies.length, 10000,
      `${bodies.length} messages posted to ${topic} (echoed ${echoed.length - before})`);
  };
  return { socket, channel, post };
}

/**
 * historian joins topic on socket as the page does: params as a function
 * of the last position, every reply and every live new_msg recorded in
 * order. extra are further join params (sender, ...).
 */
function historian(socket, topic, first, extra = {}) {
  const h = { last: null, replies: [], shown: [], positions: [], refs: [] };
  h.channel = socket.channel(topic, () => ({
    ...extra,
    history: h.last ? { since: h.last } : first,
  }));
  h.channel.on("new_msg", (payload, pos) => {
    h.refs.push(pos);
    h.shown.push(payload.body);
    h.positions.push(pos);
    h.last = pos;
  });
  h.joined = new Promise((resolve, reject) => {
    h.channel.join()
      .receive("ok", (resp) => {
        h.replies.push(resp);
        for (const m of resp.messages) {
          h.shown.push(m.payload.body);
          h.positions.push(m.seq);
        }
        h.last = resp.seq;
        resolve(resp);
      })
      .receive("error", (resp) => reject(new Error(`join ${topic}: ${JSON.stringify(resp)}`)));
  });
  return h;
}

const range = (prefix, from, to) => Array.from({ length: to - from + 1 }, (_, i) => `${prefix}${from + i}`);

test("history last N: the last N messages oldest first, then live ones with their position", T, async () => {
  const topic = room("last");
  const pub = await publisher(topic);
  const m = marker("m");
  await pub.post(range(m, 1, 8));

  const s = await sockets.connect();
  const h = historian(s, topic, { last: 5 }, { sender: true });
  const rep = await waitFor(h.joined, 5000, "the history join's reply");
  assert.deepEqual(Object.keys(rep).sort(), ["messages", "recovered", "seq"], JSON.stringify(rep));
  assert.deepEqual(rep.messages.map((x) => x.payload.body), range(m, 4, 8), "the last 5, oldest first");
  for (const x of rep.messages) {
    assert.equal(x.event, "new_msg");
    assert.deepEqual(x.payload, { body: x.payload.body, user_id: "hist-pub" }, "sender applies to history");
    assert.equal(typeof x.seq, "string", "a position is a string");
  }
  assert.equal(new Set(rep.messages.map((x) => x.seq)).size, 5, "distinct positions");
  assert.equal(typeof rep.seq, "string");
  assert.equal(rep.recovered, true);

  const live = collect(h.channel, "new_msg");
  await pub.post([`${m}9`, `${m}10`]);
  await waitFor(() => live.length >= 2, 5000, "2 live messages");
  await sleep(200);
  assert.deepEqual(h.shown, range(m, 4, 10), "history then live, no gap, no duplicate");
  assert.deepEqual(live, [{ body: `${m}9`, user_id: "hist-pub" }, { body: `${m}10`, user_id: "hist-pub" }]);
  const [p9, p10] = h.refs;
  assert.ok(typeof p9 === "string" && typeof p10 === "string" && p9 !== p10, `live positions ${p9}, ${p10}`);

  // A live position is the one history gives the same message.
  const s2 = await sockets.connect();
  const again = historian(s2, topic, { since: rep.messages[4].seq });
  const rep2 = await waitFor(again.joined, 5000, "the since join's reply");
  assert.deepEqual(rep2.messages.map((x) => [x.payload, x.seq]), [[{ body: `${m}9` }, p9], [{ body: `${m}10` }, p10]],
    "since the 8th: the 9th and 10th at the positions live broadcasts carried; no user_id without sender");
  assert.equal(rep2.recovered, true);
  assert.equal(rep2.seq, p10, "resume from the last message");

  for (const x of [pub.socket, s, s2]) sockets.disconnect(x);
});

test("since after a dropped connection: phoenix.js rejoins with the last position and gets exactly the missed messages", T, async () => {
  const topic = room("since");
  const pub = await publisher(topic);
  const m = marker("d");
  await pub.post([`${m}a1`, `${m}a2`]);

  // The network goes away: the connection drops without a close frame, and
  // reconnecting fails (connection refused) until it is back. The
  // WebSocket class below is the app's, handed to phoenix.js as its
  // transport; phoenix.js itself reconnects and rejoins as it always does.
  let offline = false;
  class Network extends WebSocket {
    constructor(url, protocols) {
      super(offline ? url.replace(/\/\/[^/]+/, "//127.0.0.1:1") : url, protocols);
    }
  }
  const s = sockets.newSocket({ transport: Network });
  const life = lifecycle(s);
  await sockets.open(s);
  const h = historian(s, topic, { last: 50 });
  await waitFor(h.joined, 5000, "the first join's reply");
  assert.deepEqual(h.shown, [`${m}a1`, `${m}a2`], "last 50 of a new room: all of it");
  await pub.post([`${m}a3`]);
  await waitFor(() => h.shown.length === 3, 5000, "a3 live");
  const before = h.last;
  assert.equal(before, h.refs[0], "the last position is a3's");

  offline = true;
  s.conn.terminate(); // the TCP connection goes, no close frame
  await waitFor(() => life.problems.length > 1, 5000, "phoenix.js to see the drop and fail to reconnect");
  const missed = range(`${m}b`, 1, 5);
  await pub.post(missed);
  assert.equal(life.opens, 1, "the messages were posted while the socket was down");
  offline = false;

  await waitFor(() => h.replies.length === 2, 10000, "phoenix.js to reconnect and rejoin by itself");
  assert.equal(life.opens, 2);
  const rejoin = h.replies[1];
  assert.deepEqual(rejoin.messages.map((x) => x.payload), missed.map((body) => ({ body })),
    "the rejoin reply holds exactly the missed messages");
  assert.equal(rejoin.recovered, true);
  assert.notEqual(rejoin.seq, before);

  await pub.post([`${m}c1`]);
  await waitFor(() => h.shown.includes(`${m}c1`), 5000, "c1 live after the rejoin");
  await sleep(300);
  assert.deepEqual(h.shown, [`${m}a1`, `${m}a2`, `${m}a3`, ...missed, `${m}c1`], "every message once, in order");
  assert.equal(new Set(h.positions).size, h.positions.length, "no position twice");

  sockets.disconnect(pub.socket);
  sockets.disconnect(s);
});

test("no gap and no duplicate between history and live: clients join while a publisher posts a numbered sequence", T, async () => {
  const topic = room("load");
  const pub = await publisher(topic);
  // The publisher's channel asks for history too, to learn positions.
  const ps = await sockets.connect();
  const pos = new Map(); // number -> position
  const seer = historian(ps, topic, { last: 1 });
  await waitFor(seer.joined, 5000, "the position watcher's join");
  seer.channel.on("new_msg", (p, at) => pos.set(Number(p.body), at));

  // The publisher posts until every client has joined, then 50 more.
  const clients = [];
  let sent = 0;
  let stopAt = Infinity;
  const posting = new Promise((resolve) => {
    const tick = setInterval(() => {
      for (let k = 0; k < 2 && sent < stopAt; k++) send(pub.channel, "new_msg", { body: String(++sent) });
      if (sent >= stopAt) { clearInterval(tick); resolve(); }
    }, 5);
  });
  await waitFor(() => pos.size >= 5, 5000, "the first messages");
  // Eight clients join during the burst: with "last" or with "since" a
  // position a few messages back.
  for (let i = 0; i < 8; i++) {
    const s = await sockets.connect();
    let first = { last: 20 };
    let since = null;
    if (i % 2 === 1) {
      since = Math.max(...pos.keys()) - 5;
      first = { since: pos.get(since) };
    }
    clients.push({ h: historian(s, topic, first), since, socket: s });
    await sleep(60);
  }
  await waitFor(Promise.all(clients.map((c) => c.h.joined)), 10000, "every client's join");
  stopAt = sent + 50;
  await posting;
  const N = sent;
  for (const [i, c] of clients.entries()) {
    await waitFor(() => c.h.shown.at(-1) === String(N), 15000,
      `client ${i} to reach ${N} (at ${c.h.shown.at(-1)})`);
  }
  await sleep(300);
  for (const [i, c] of clients.entries()) {
    const got = c.h.shown.map(Number);
    const from = got[0];
    const want = Array.from({ length: N - from + 1 }, (_, k) => from + k);
    assert.deepEqual(got, want, `client ${i}: contiguous from ${from} to ${N}, each once`);
    if (c.since !== null) assert.equal(from, c.since + 1, `client ${i} (since ${c.since}) starts right after it`);
    assert.equal(new Set(c.h.positions).size, c.h.positions.length, `client ${i}: no position twice`);
    const rep = c.h.replies[0];
    assert.equal(rep.recovered, true, `client ${i}: recovered`);
    assert.ok(rep.messages.length > 0 && c.h.refs.length > 0,
      `client ${i} joined mid-burst: ${rep.messages.length} from history, ${c.h.refs.length} live`);
  }

  sockets.disconnect(pub.socket);
  sockets.disconnect(ps);
  for (const c of clients) sockets.disconnect(c.socket);
});

test("recovered is false when retention dropped messages after since", T, async () => {
  const topic = room("lost");
  const pub = await publisher(topic);
  const m = marker("r");
  await pub.post([`${m}0`]);
  const s = await sockets.connect();
  const h = historian(s, topic, { last: 1 });
  const rep = await waitFor(h.joined, 5000, "the first join's reply");
  const p0 = rep.messages[0].seq;
  sockets.disconnect(s);

  // A room keeps its last 100 (rooms.history_max_msgs_per_room).
  const N = 130;
  await pub.post(range(m, 1, N));
  const s2 = await sockets.connect();
  const h2 = historian(s2, topic, { since: p0 });
  const rep2 = await waitFor(h2.joined, 5000, "the since join's reply");
  assert.equal(rep2.recovered, false, "messages after since were dropped: recovered false");
  const bodies = rep2.messages.map((x) => x.payload.body);
  assert.ok(bodies.length > 0 && bodies.length < N, `some kept, not all: ${bodies.length}`);
  assert.deepEqual(bodies, range(m, N - bodies.length + 1, N), "every message the room still has, in order");

  // From a position the room still has: recovered.
  const s3 = await sockets.connect();
  const h3 = historian(s3, topic, { since: rep2.messages[0].seq });
  const rep3 = await waitFor(h3.joined, 5000, "the second since join's reply");
  assert.equal(rep3.recovered, true);
  assert.deepEqual(rep3.messages.map((x) => x.payload.body), bodies.slice(1));

  for (const x of [pub.socket, s2, s3]) sockets.disconnect(x);
});

test("a join without history is the guide's: reply {}, new_msg {body} with ref null, beside a history channel", T, async () => {
  const topic = room("plain");
  const pub = await publisher(topic);
  await pub.post([marker("before")]);

  const plain = await sockets.connect();
  const frames = [];
  plain.onMessage((msg) => { if (msg.topic === topic) frames.push(msg); });
  const ch = plain.channel(topic);
  const got = [];
  ch.on("new_msg", (payload, ref) => got.push([payload, ref]));
  assert.deepEqual(await joinOk(ch), {}, "the join reply is {}");

  const hs = await sockets.connect();
  const h = historian(hs, topic, { last: 10 });
  await waitFor(h.joined, 5000, "the history channel's join");

  const body = marker("live");
  await pub.post([body]);
  await waitFor(() => got.length >= 1 && h.refs.length >= 1, 5000, "the live message at both");
  await sleep(300);
  assert.deepEqual(got, [[{ body }, null]], "{body} with ref null");
  assert.deepEqual(frames.filter((f) => f.event === "new_msg"),
    [{ join_ref: null, ref: null, topic, event: "new_msg", payload: { body } }], "the frame exactly as Phoenix sends it");
  assert.equal(typeof h.refs[0], "string", "the history channel gets a position for the same broadcast");

  for (const x of [pub.socket, plain, hs]) sockets.disconnect(x);
});

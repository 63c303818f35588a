// The lobby scenario with every minor line of the official phoenix.js since
// 1.4, as apps that pin an old client run it: each release is installed from
// npm under an alias (package.json "phx14": "npm:phoenix@1.4.18", ...) and
// used unmodified. Run by the Go test allinone/system TestPhoenixJS (env
// PHX_URL, PHX_PRIVATE_ROOM).
//
// Matrix (the latest patch of each minor line):
//
//   phoenix.js  WebSocket  LongPoll
//   1.4.18      yes (+V1)  no: cannot run in Node (below)
//   1.5.14      yes        no: cannot run in Node
//   1.6.16      yes        no: cannot run in Node
//   1.7.23      yes        no: cannot run in Node
//   1.8.16      yes        yes
//
// Every release since 1.4 speaks V2 (vsn=2.0.0, array frames) by default;
// "+V1" is 1.4.18 made to speak V1 (vsn=1.0.0, object frames), the protocol
// of the clients before it.
//
// Why LongPoll runs only with 1.8: before 1.8, phoenix.js's Ajax (the HTTP
// requests of LongPoll) knows only XDomainRequest and XMLHttpRequest, which
// Node does not have, and reaches them through the browser's global object,
// which it finds as `self` or `window` and so is undefined in Node:
// `new Socket(url, {transport: LongPoll}).connect()` throws "Cannot read
// properties of undefined (reading 'XDomainRequest')" (1.4-1.6 at once, 1.7
// on its first poll, an uncaught error). Running them would take fake
// browser globals and an XMLHttpRequest polyfill, a client that is no longer
// the one apps run. 1.8 falls back to globalThis and fetch.
//
// Scenario, per release and transport, with anonymous sockets (no token):
//   1. join rooms:lobby: ok, response {};
//   2. join the private room: error {reason: "unauthorized"};
//   3. new_msg {body} reaches the sender and a member, exactly {body};
//   4. 100 pushes reach the member (and the sender) in order;
//   5. after leave() is acknowledged, the member's message does not reach
//      the sender;
//   6. a socket heartbeating every 500 ms stays open 3 s, its heartbeats
//      answered (LongPoll sends none: phoenix.js skips them there), and no
//      socket of the scenario reconnects.
// The releases run concurrently; rooms:lobby is shared with the other test
// files, so bodies carry a unique marker.
//
// Timers the old releases leave behind after disconnect() (harmless in a
// page, but they keep Node running): 1.4's heartbeat interval (lib.mjs
// Sockets.disconnect clears it) and 1.5's first heartbeat timer (below).
import { readFileSync } from "node:fs";
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import phx14 from "phx14";
import phx15 from "phx15";
import * as phx16 from "phx16";
import * as phx17 from "phx17";
import * as phx18 from "phx18";
import {
  Sockets, V1_JSON, assertJoinRefused, collect, hasPrefix, joinOk, leave, lifecycle,
  marker, send, sleep, waitFor,
} from "./lib.mjs";

const PRIVATE_ROOM = process.env.PHX_PRIVATE_ROOM || "rooms:ops";
const LOBBY = "rooms:lobby";
const T = { timeout: 30000 };
const N = 100;
// phoenix.js reconnects when a heartbeat's reply has not come by the next
// one: 500 ms leaves a loaded machine room to answer (250 ms failed with
// other test suites running beside this one).
const HEARTBEAT_MS = 500;
// phoenix.js 1.5 starts its first heartbeat with a timer it does not keep,
// so a socket it disconnected holds Node up to twice the heartbeat interval
// (30 s by default): the other sockets of the scenario heartbeat every second.
const SLOW_HEARTBEAT_MS = 1000;
const STAY_OPEN_MS = 3000;
const NO_LONGPOLL = "phoenix.js before 1.8 cannot long-poll in Node: its Ajax needs a browser global "
  + "(self or window) with XMLHttpRequest (see the top of this file)";

const RELEASES = [
  { alias: "phx14", version: "1.4.18", phoenix: phx14, longPoll: NO_LONGPOLL, v1: true },
  { alias: "phx15", version: "1.5.14", phoenix: phx15, longPoll: NO_LONGPOLL },
  { alias: "phx16", version: "1.6.16", phoenix: phx16, longPoll: NO_LONGPOLL },
  { alias: "phx17", version: "1.7.23", phoenix: phx17, longPoll: NO_LONGPOLL },
  { alias: "phx18", version: "1.8.16", phoenix: phx18, longPoll: true },
];

const registries = [];
after(() => registries.forEach((r) => r.disconnectAll()));

/** installedVersion is the version npm installed under alias. */
function installedVersion(alias) {
  const url = new URL(`./node_modules/${alias}/package.json`, import.meta.url);
  return JSON.parse(readFileSync(url, "utf8")).version;
}

/**
 * scenario runs the lobby scenario with sockets made with opts; heartbeats
 * says whether the transport sends any (LongPoll does not).
 */
async function scenario(sockets, opts, heartbeats) {
  const newSocket = (more = {}) => {
    const s = sockets.newSocket({ heartbeatIntervalMs: SLOW_HEARTBEAT_MS, ...opts, ...more });
    return { s, life: lifecycle(s) };
  };
  // 6 starts first and runs alongside the rest.
  const beat = newSocket({ heartbeatIntervalMs: HEARTBEAT_MS });
  const beatOpen = sockets.open(beat.s);
  const beatStart = Date.now();

  const sender = newSocket();
  const member = newSocket();
  await Promise.all([sockets.open(sender.s), sockets.open(member.s), beatOpen]);

  // 1, 2
  const lobby = sender.s.channel(LOBBY);
  assert.deepEqual(await joinOk(lobby), {}, "join rooms:lobby replies ok {}");
  await assertJoinRefused(sender.s.channel(PRIVATE_ROOM), { reason: "unauthorized" });

  // 3
  const memberLobby = member.s.channel(LOBBY);
  await joinOk(memberLobby);
  const body = marker("versions");
  const atSender = collect(lobby, "new_msg", (p) => p?.body === body);
  const atMember = collect(memberLobby, "new_msg", (p) => p?.body === body);
  send(lobby, "new_msg", { body });
  await waitFor(() => atSender.length >= 1 && atMember.length >= 1, 5000,
    `new_msg at sender (${atSender.length}) and member (${atMember.length})`);

  // 4
  const prefix = `${marker("versions-burst")}-m-`;
  const burstAtSender = collect(lobby, "new_msg", hasPrefix(prefix));
  const burstAtMember = collect(memberLobby, "new_msg", hasPrefix(prefix));
  for (let i = 0; i < N; i++) send(lobby, "new_msg", { body: prefix + i });
  await waitFor(() => burstAtSender.length >= N && burstAtMember.length >= N, 10000,
    `${N} messages at sender (${burstAtSender.length}) and member (${burstAtMember.length})`);
  await sleep(300); // room for duplicates of 3 and 4 to show up
  assert.deepEqual(atSender, [{ body }], "the sender gets its new_msg once, exactly {body}");
  assert.deepEqual(atMember, [{ body }], "the member gets the new_msg once, exactly {body}");
  const want = Array.from({ length: N }, (_, i) => prefix + i);
  assert.deepEqual(burstAtMember.map((p) => p.body), want, `member: all ${N}, in order, once each`);
  assert.deepEqual(burstAtSender.map((p) => p.body), want, `sender: all ${N}, in order, once each`);

  // 5
  await leave(sender.s, lobby);
  const late = marker("versions-after-leave");
  const lateAtMember = collect(memberLobby, "new_msg", (p) => p?.body === late);
  const lateAtSender = collect(lobby, "new_msg", (p) => p?.body === late);
  // phoenix.js drops frames of channels it left, so watch the raw frames too.
  const rawAtSender = [];
  sender.s.onMessage((m) => {
    if (JSON.stringify(m.payload ?? null).includes(late)) rawAtSender.push(m);
  });
  send(memberLobby, "new_msg", { body: late });
  await waitFor(() => lateAtMember.length === 1, 5000, "the member's own message after the sender left");
  await sleep(300);
  assert.deepEqual(lateAtSender, [], "the left channel gets nothing");
  assert.deepEqual(rawAtSender, [], "no frame with the message reaches the sender's socket after leaving");

  // 6
  await sleep(STAY_OPEN_MS - (Date.now() - beatStart));
  for (const [who, { s, life }] of Object.entries({ heartbeating: beat, sender, member })) {
    assert.deepEqual(life.problems, [], `${who} socket: no error or close`);
    assert.equal(life.opens, 1, `${who} socket opened once (no reconnect)`);
    assert.equal(s.isConnected(), true, `${who} socket is connected`);
  }
  if (heartbeats) {
    assert.ok(beat.life.heartbeatReplies >= 4,
      `heartbeat replies in ${STAY_OPEN_MS} ms every ${HEARTBEAT_MS} ms: want >= 4, got ${beat.life.heartbeatReplies}`);
  }
  [beat, sender, member].forEach(({ s }) => sockets.disconnect(s));
}

describe("phoenix.js releases since 1.4", { concurrency: true }, () => {
  for (const { alias, version, phoenix, longPoll, v1 } of RELEASES) {
    const sockets = new Sockets(phoenix.Socket);
    registries.push(sockets);
    const run = (opts) => async () => {
      assert.equal(installedVersion(alias), version, `npm installed ${alias} at the version of the matrix`);
      await scenario(sockets, opts, opts.transport !== phoenix.LongPoll);
    };
    test(`phoenix.js ${version} over WebSocket`, T, run({}));
    if (v1) test(`phoenix.js ${version} over WebSocket, V1 (vsn 1.0.0)`, T, run(V1_JSON));
    if (longPoll === true) {
      test(`phoenix.js ${version} over LongPoll`, T, run({ transport: phoenix.LongPoll }));
    } else {
      test(`phoenix.js ${version} over LongPoll`, { skip: longPoll });
    }
  }
});

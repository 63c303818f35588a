// End-to-end tests of the chat of the Phoenix channels guide, driven by the
// official phoenix.js client against the whole system (gateway + authsvc +
// roomsvc on NATS). Run by the Go test allinone/system TestPhoenixJS, which
// sets PHX_URL, PHX_MEMBER and PHX_PRIVATE_ROOM.
//
// rooms:lobby is shared, so every test tags its bodies with a unique marker and
// ignores messages that do not carry it.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import {
  Sockets, assertJoinRefused, collect, errorText, hasPrefix, joinOk, leave, lifecycle, marker, push,
  send, sleep, token, waitFor,
} from "./lib.mjs";

const MEMBER = process.env.PHX_MEMBER || "alice";
const PRIVATE_ROOM = process.env.PHX_PRIVATE_ROOM || "rooms:ops";
const LOBBY = "rooms:lobby";
// Every test is bounded; waits inside are shorter still.
const T = { timeout: 20000 };

const sockets = new Sockets();
after(() => sockets.disconnectAll());

test("guide scenario: two clients in rooms:lobby both get a new_msg exactly once", T, async () => {
  const bob = await sockets.connect({ token: await token("bob") });
  const anon = await sockets.connect();
  const bobLobby = bob.channel(LOBBY);
  const anonLobby = anon.channel(LOBBY);
  await joinOk(bobLobby);
  await joinOk(anonLobby);

  const body = `${marker("guide")} hello from bob`;
  const atBob = collect(bobLobby, "new_msg", (p) => p.body === body);
  const atAnon = collect(anonLobby, "new_msg", (p) => p.body === body);
  send(bobLobby, "new_msg", { body });

  await waitFor(() => atBob.length >= 1 && atAnon.length >= 1, 5000,
    `new_msg at both clients (bob got ${atBob.length}, anonymous got ${atAnon.length})`);
  await sleep(300); // room for a duplicate to show up
  // Messages of logged-in users name their sender (rooms.include_sender).
  assert.deepEqual(atBob, [{ body, user_id: "bob" }], "sender (bob) receives its message once");
  assert.deepEqual(atAnon, [{ body, user_id: "bob" }], "anonymous client receives bob's message once");

  sockets.disconnect(bob);
  sockets.disconnect(anon);
});

test("private room: a non-member and an anonymous socket are refused with unauthorized", T, async () => {
  const mallory = await sockets.connect({ token: await token("mallory") });
  await assertJoinRefused(mallory.channel(PRIVATE_ROOM), { reason: "unauthorized" });

  const anon = await sockets.connect();
  await assertJoinRefused(anon.channel(PRIVATE_ROOM), { reason: "unauthorized" });

  sockets.disconnect(mallory);
  sockets.disconnect(anon);
});

test("private room: the member is admitted and gets its messages, a lobby client does not", T, async () => {
  const alice = await sockets.connect({ token: await token(MEMBER) });
  const lobbyOnly = await sockets.connect();
  const room = alice.channel(PRIVATE_ROOM);
  await joinOk(room);
  const lobby = lobbyOnly.channel(LOBBY);
  await joinOk(lobby);

  const body = marker("private");
  const atAlice = collect(room, "new_msg", (p) => p.body === body);
  const atLobby = collect(lobby, "new_msg", (p) => p.body === body);
  // Anything carrying the marker on the lobby client's socket, whatever the topic.
  const rawAtLobby = [];
  lobbyOnly.onMessage((m) => {
    if (JSON.stringify(m.payload ?? null).includes(body)) rawAtLobby.push(m);
  });
  send(room, "new_msg", { body });

  await waitFor(() => atAlice.length >= 1, 5000, `new_msg in ${PRIVATE_ROOM} at ${MEMBER}`);
  await sleep(300);
  assert.deepEqual(atAlice, [{ body, user_id: MEMBER }]);
  assert.deepEqual(atLobby, [], "lobby-only client must not get the private room's message");
  assert.deepEqual(rawAtLobby, [], "no frame with the private message reaches the lobby-only socket");

  sockets.disconnect(alice);
  sockets.disconnect(lobbyOnly);
});

test("unmatched topic: joining nosuch:topic is refused with unmatched topic", T, async () => {
  const s = await sockets.connect();
  await assertJoinRefused(s.channel("nosuch:topic"), { reason: "unmatched topic" });
  sockets.disconnect(s);
});

test("leave stops delivery", T, async () => {
  const a = await sockets.connect({ token: await token("leave-a") });
  const b = await sockets.connect();
  const aLobby = a.channel(LOBBY);
  const bLobby = b.channel(LOBBY);
  await joinOk(aLobby);
  await joinOk(bLobby);

  // Delivery works before the leave.
  const before = marker("before-leave");
  const bBefore = collect(bLobby, "new_msg", (p) => p.body === before);
  send(aLobby, "new_msg", { body: before });
  await waitFor(() => bBefore.length === 1, 5000, "B to get a message before leaving");

  await leave(b, bLobby);

  const body = marker("after-leave");
  const atA = collect(aLobby, "new_msg", (p) => p.body === body);
  const atB = collect(bLobby, "new_msg", (p) => p.body === body);
  // phoenix.js drops frames for channels it no longer has, so watch B's raw frames too.
  const rawAtB = [];
  b.onMessage((m) => {
    if (m.event === "new_msg" && m.payload?.body === body) rawAtB.push(m);
  });
  send(aLobby, "new_msg", { body });

  await waitFor(() => atA.length === 1, 5000, "A to get its own message after B left");
  await sleep(500);
  assert.deepEqual(atB, [], "B's handler gets nothing after leaving");
  assert.deepEqual(rawAtB, [], "no new_msg frame reaches B's socket after leaving");
  assert.deepEqual(atA, [{ body, user_id: "leave-a" }]);

  sockets.disconnect(a);
  sockets.disconnect(b);
});

test("200 messages arrive in order, none lost or duplicated", T, async () => {
  const N = 200;
  const sender = await sockets.connect({ token: await token("burst") });
  const receiver = await sockets.connect();
  const sLobby = sender.channel(LOBBY);
  const rLobby = receiver.channel(LOBBY);
  await joinOk(sLobby);
  await joinOk(rLobby);

  const prefix = `${marker("burst")}-m-`;
  const atSender = collect(sLobby, "new_msg", hasPrefix(prefix));
  const atReceiver = collect(rLobby, "new_msg", hasPrefix(prefix));
  for (let i = 0; i < N; i++) send(sLobby, "new_msg", { body: prefix + i });

  await waitFor(() => atSender.length >= N && atReceiver.length >= N, 10000,
    `${N} messages at both (sender ${atSender.length}, receiver ${atReceiver.length})`);
  await sleep(300); // duplicates would show up as extra messages
  const want = Array.from({ length: N }, (_, i) => prefix + i);
  assert.deepEqual(atReceiver.map((p) => p.body), want, "receiver: all 200, in order, once each");
  assert.deepEqual(atSender.map((p) => p.body), want, "sender: all 200, in order, once each");

  sockets.disconnect(sender);
  sockets.disconnect(receiver);
});

test("invalid new_msg bodies and unknown events get an error reply", T, async () => {
  const s = await sockets.connect({ token: await token("sloppy") });
  const lobby = s.channel(LOBBY);
  await joinOk(lobby);
  const m = marker("invalid");
  const echoed = collect(lobby, "new_msg", (p) => JSON.stringify(p).includes(m));

  const cases = [
    ["empty body", "new_msg", { body: "" }],
    ["non-string body", "new_msg", { body: 42, tag: m }],
    ["missing body", "new_msg", { tag: m }],
    ["too long body", "new_msg", { body: m + "x".repeat(4001) }],
    ["unknown event", "no_such_event", { body: m }],
  ];
  for (const [what, event, payload] of cases) {
    const r = await push(lobby, event, payload, 3000);
    assert.equal(r.status, "error", `${what}: want an error reply, got ${r.status} ${JSON.stringify(r.response)}`);
    assert.equal(typeof r.response?.reason, "string", `${what}: error reply has a reason: ${JSON.stringify(r.response)}`);
    assert.notEqual(r.response.reason, "", `${what}: reason is not empty`);
  }
  // A body of exactly 4000 characters is fine (no reply, broadcast).
  const max = m + "y".repeat(4000 - m.length);
  send(lobby, "new_msg", { body: max });
  await waitFor(() => echoed.some((p) => p.body === max), 5000, "the 4000-character body to be broadcast");
  assert.deepEqual(echoed.map((p) => p.body), [max], "no invalid body was broadcast");

  sockets.disconnect(s);
});

test("a forged token is refused at the upgrade (HTTP 403)", T, async () => {
  const s = sockets.newSocket({ token: "forged" });
  const errors = [];
  let opened = false;
  s.onError((err) => errors.push(errorText(err)));
  s.onOpen(() => { opened = true; });
  s.connect();
  try {
    await waitFor(() => errors.length > 0 || opened, 5000, "onError for the forged token");
    assert.equal(opened, false, "socket with a forged token must not open");
    assert.match(errors[0], /403/, `error mentions HTTP 403: ${errors[0]}`);
  } finally {
    sockets.disconnect(s);
  }
});

test("heartbeats keep the socket open", T, async () => {
  const s = sockets.newSocket({ heartbeatIntervalMs: 100 });
  const life = lifecycle(s);
  await sockets.open(s);

  await sleep(1000);
  assert.deepEqual(life.problems, [], "no error or close while heartbeating every 100 ms");
  assert.equal(life.opens, 1, "opened once (no reconnect)");
  assert.equal(s.isConnected(), true);
  assert.ok(life.heartbeatReplies >= 5, `heartbeat replies in 1 s: want >= 5, got ${life.heartbeatReplies}`);
  sockets.disconnect(s);
});

test("ping round trip echoes the payload", T, async () => {
  const s = await sockets.connect();
  const lobby = s.channel(LOBBY);
  await joinOk(lobby);
  const r = await push(lobby, "ping", { n: 1 });
  assert.deepEqual(r, { status: "ok", response: { n: 1 } });
  sockets.disconnect(s);
});

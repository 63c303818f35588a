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
  // Joined without parameters: the guide's payload, exactly.
  assert.deepEqual(atBob, [{ body }], "sender (bob) receives its message once");
  assert.deepEqual(atAnon, [{ body }], "anonymous client receives bob's message once");

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
  assert.deepEqual(atAlice, [{ body }]);
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
  assert.deepEqual(atA, [{ body }]);

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

test("invalid new_msg payloads and unknown events get an error reply", T, async () => {
  const s = await sockets.connect({ token: await token("sloppy") });
  const lobby = s.channel(LOBBY);
  await joinOk(lobby);
  const m = marker("invalid");
  const echoed = collect(lobby, "new_msg", (p) => JSON.stringify(p).includes(m));

  // Where the guide's RoomChannel would crash (no string body) the client
  // gets an error reply instead; a body over the limit says the limit.
  const cases = [
    ["non-string body", "new_msg", { body: 42, tag: m }, /must be a string/],
    ["missing body", "new_msg", { tag: m }, /needs a payload/],
    ["too long body", "new_msg", { body: m + "x".repeat(65536) }, /the limit is 65536 bytes/],
    ["unknown event", "no_such_event", { body: m }, /unknown event/],
  ];
  for (const [what, event, payload, reason] of cases) {
    const r = await push(lobby, event, payload, 3000);
    assert.equal(r.status, "error", `${what}: want an error reply, got ${r.status} ${JSON.stringify(r.response)}`);
    assert.match(r.response?.reason ?? "", reason, `${what}: reason ${JSON.stringify(r.response)}`);
  }
  // A body of exactly 64 KiB of UTF-8 is fine (no reply, broadcast).
  const max = m + "y".repeat(65536 - m.length);
  send(lobby, "new_msg", { body: max });
  await waitFor(() => echoed.some((p) => p.body === max), 5000, "the 64 KiB body to be broadcast");
  assert.deepEqual(echoed.map((p) => p.body), [max], "no invalid body was broadcast");

  sockets.disconnect(s);
});

test("guide-exact: a logged-in socket joined without parameters gets the guide's frames and no others", T, async () => {
  const carol = await sockets.connect({ token: await token("carol") });
  const lobby = carol.channel(LOBBY);
  const frames = []; // every frame on the lobby topic after the join reply
  let joined = false;
  carol.onMessage((msg) => {
    if (joined && msg.topic === LOBBY) frames.push(msg);
  });
  assert.deepEqual(await joinOk(lobby), {}, "the join reply is {}");
  joined = true;
  // Another logged-in user joins: the guide sends nothing for it.
  const dave = await sockets.connect({ token: await token("dave") });
  const daveLobby = dave.channel(LOBBY);
  await joinOk(daveLobby);

  const m = marker("exact");
  // Two bytes to four per character, about 60 KB in all.
  const big = m + "é€😀".repeat(6700);
  const bodies = ["", " ", "\n\t", m, big];
  const got = [];
  lobby.on("new_msg", (p) => got.push(p));
  for (const body of bodies) send(daveLobby, "new_msg", { body });
  await waitFor(() => got.some((p) => p.body === big), 10000, "the 60 KB body");
  await sleep(300);
  const mine = got.filter((p) => bodies.includes(p.body));
  assert.deepEqual(mine, bodies.map((body) => ({ body })), "every body intact, exactly {body}, in order");
  assert.ok(Buffer.byteLength(big) > 60000, `the big body is ${Buffer.byteLength(big)} bytes`);
  // Others share the lobby: anything here is a new_msg or a reply to carol.
  const foreign = frames.filter((f) => f.event !== "new_msg" && f.event !== "phx_reply");
  assert.deepEqual(foreign, [], "no event the guide would not send (user_joined, ...)");
  assert.ok(frames.filter((f) => f.event === "new_msg").every((f) => Object.keys(f.payload).join() === "body"),
    "every new_msg payload is {body} alone");

  sockets.disconnect(carol);
  sockets.disconnect(dave);
});

test("join parameters: sender, joins and ignore reach only the channels that asked, at the same time as guide-exact ones", T, async () => {
  const [plainTok, richTok, erinTok, frankTok] = await Promise.all(
    ["plain-p", "rich-r", "erin-e", "frank-f"].map((u) => token(u)));
  const plain = await sockets.connect({ token: plainTok });
  const rich = await sockets.connect({ token: richTok });
  const plainLobby = plain.channel(LOBBY);
  const richLobby = rich.channel(LOBBY, { sender: true, joins: true, ignore: true });
  await joinOk(plainLobby);
  await joinOk(richLobby);
  const joinsAt = (ch) => collect(ch, "user_joined", (p) => p.user_id === "erin-e" || p.user_id === "frank-f");
  const plainJoins = joinsAt(plainLobby);
  const richJoins = joinsAt(richLobby);
  const m = marker("params");
  const plainMsgs = collect(plainLobby, "new_msg", hasPrefix(m));
  const richMsgs = collect(richLobby, "new_msg", hasPrefix(m));

  // rich ignores frank: frank's messages skip rich's channel (asked with
  // ignore), not plain's.
  const ign = await push(richLobby, "ignore", { user_id: "frank-f" });
  assert.equal(ign.status, "ok", JSON.stringify(ign));

  const erin = await sockets.connect({ token: erinTok });
  const erinLobby = erin.channel(LOBBY);
  await joinOk(erinLobby);
  const frank = await sockets.connect({ token: frankTok });
  const frankLobby = frank.channel(LOBBY);
  await joinOk(frankLobby);
  send(erinLobby, "new_msg", { body: m + " from erin" });
  send(frankLobby, "new_msg", { body: m + " from frank" });
  await waitFor(() => plainMsgs.length >= 2 && richMsgs.length >= 1, 5000,
    `messages (plain ${plainMsgs.length}, rich ${richMsgs.length})`);
  await waitFor(() => richJoins.length >= 1, 5000, "user_joined at the channel that asked");
  await sleep(300);

  // Two senders: their messages may arrive in either order.
  const byBody = (a, b) => a.body.localeCompare(b.body);
  assert.deepEqual(plainMsgs.sort(byBody), [{ body: m + " from erin" }, { body: m + " from frank" }]);
  assert.deepEqual(richMsgs, [{ body: m + " from erin", user_id: "erin-e" }], "sender named; frank ignored");
  assert.deepEqual(plainJoins, [], "no user_joined without joins: true");
  assert.deepEqual(richJoins, [{ user_id: "erin-e" }], "erin announced; frank ignored");

  for (const s of [plain, rich, erin, frank]) sockets.disconnect(s);
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

// End-to-end tests of Presence (README "## Presence") across two gateways,
// with the official, unmodified phoenix.js `Presence` class:
//
//   const channel = socket.channel(topic, { presence: true });
//   const presence = new Presence(channel);
//   presence.onJoin((id, current, joined) => ...);
//   presence.onLeave((id, current, left) => ...);
//   presence.onSync(() => render(presence.list((id, { metas }) => ...)));
//
// Run by the Go test allinone/system TestPhoenixJS, which sets
//   PHX_URL, PHX_URL_B         two gateways of one system
//   PHX_PUBLIC_PREFIX          topics starting with it are public rooms: each
//                              test has a room of its own
//   PHX_MEMBERS_URL            POST /grant and /revoke {"topic", "user_id"}
//                              (roomsvc's membership API, for the kick)
//   PHX_PRESENCE_INTERVAL_MS   the gateways' presence interval
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { Presence } from "phoenix";
import {
  SOCKET_URL, SOCKET_URL_B, Sockets, joinOk, leave, marker, sleep, token, waitFor,
} from "./lib.mjs";

const PREFIX = process.env.PHX_PUBLIC_PREFIX || "rooms:e2e-";
const MEMBERS_URL = process.env.PHX_MEMBERS_URL;
const INTERVAL = Number(process.env.PHX_PRESENCE_INTERVAL_MS || 1500);
// "At once": a leave, a close or a kick reaches the others within a few
// intervals, far below the 12 s a dead gateway's presences may take.
const AT_ONCE_MS = Math.max(2000, 10 * INTERVAL);
const T = { timeout: 30000 };

const sockets = new Sockets();
after(() => sockets.disconnectAll());

/** room is a new public room for one test. */
const room = (what) => PREFIX + marker(what);

/** connect opens a socket of user (anonymous if null) on gateway endpoint. */
async function connect(user, endpoint = SOCKET_URL) {
  return sockets.connect(user === null ? { endpoint } : { endpoint, token: await token(user) });
}

/**
 * present joins topic on socket with presence and follows it with
 * phoenix.js' Presence, recording every onJoin and onLeave (copied: Presence
 * changes its objects afterwards).
 */
async function present(socket, topic) {
  const channel = socket.channel(topic, { presence: true });
  const presence = new Presence(channel);
  const p = { socket, channel, presence, joins: [], leaves: [], syncs: 0 };
  presence.onJoin((id, current, joined) => p.joins.push(structuredClone({ id, current, joined })));
  presence.onLeave((id, current, left) => p.leaves.push(structuredClone({ id, current, left })));
  presence.onSync(() => { p.syncs++; });
  await joinOk(channel);
  return p;
}

/** counts is a Presence's list as {user: number of metas}, sorted by user. */
function counts(p) {
  const list = p.presence.list((id, { metas }) => [id, metas.length]);
  return Object.fromEntries(list.sort(([a], [b]) => (a < b ? -1 : 1)));
}

/** waitCounts waits until p lists exactly want ({user: metas}). */
async function waitCounts(p, want, label, ms = 5000) {
  const w = JSON.stringify(Object.fromEntries(Object.entries(want).sort(([a], [b]) => (a < b ? -1 : 1))));
  try {
    await waitFor(() => JSON.stringify(counts(p)) === w, ms, label);
  } catch (e) {
    throw new Error(`${e.message}: lists ${JSON.stringify(counts(p))}, want ${w}`);
  }
}

/** refs are the phx_refs of user's metas in p's state. */
function refs(p, user) {
  const [metas] = p.presence.list((id, { metas }) => (id === user ? metas : null)).filter(Boolean);
  return (metas || []).map((m) => m.phx_ref).sort();
}

/** frames records the frames socket receives for topic (raw, before any channel). */
function frames(socket, topic) {
  const got = [];
  socket.onMessage((m) => { if (m.topic === topic) got.push(m); });
  return got;
}

const PRESENCE_EVENTS = ["presence_state", "presence_diff"];

/** members grants or revokes a membership of a private room (roomsvc over NATS). */
async function members(action, topic, user) {
  assert.ok(MEMBERS_URL, "PHX_MEMBERS_URL is not set (TestPhoenixJS sets it)");
  const res = await fetch(`${MEMBERS_URL}/${action}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ topic, user_id: user }),
  });
  const body = await res.text();
  assert.equal(res.status, 200, `${action} ${topic} ${user}: HTTP ${res.status} ${body}`);
  assert.ok(!JSON.parse(body).error, `${action} ${topic} ${user}: ${body}`);
}

test("alice on gateway A and bob on gateway B see each other", T, async () => {
  const topic = room("pres-ab");
  const aliceSocket = await connect("alice", SOCKET_URL);
  const seen = frames(aliceSocket, topic);
  const alice = await present(aliceSocket, topic);
  await waitCounts(alice, { alice: 1 }, "alice to list herself");

  // The presence_state comes right after the join reply, with its join_ref.
  const joinRef = alice.channel.joinRef();
  const reply = seen.findIndex((m) => m.event === "phx_reply" && m.ref === joinRef);
  const state = seen.findIndex((m) => m.event === "presence_state");
  assert.ok(reply >= 0 && state === reply + 1, `presence_state right after the join reply: ${JSON.stringify(seen)}`);
  assert.equal(seen[state].join_ref, joinRef, "presence_state carries the channel's join_ref");
  const [meta] = seen[state].payload.alice.metas;
  assert.match(meta.phx_ref, /^[A-Za-z0-9_-]{16}$/);
  assert.match(meta.online_at, /^[0-9]{10}$/);

  const bob = await present(await connect("bob", SOCKET_URL_B), topic);
  await waitCounts(bob, { alice: 1, bob: 1 }, "bob (gateway B) to list alice and himself");
  await waitCounts(alice, { alice: 1, bob: 1 }, "alice (gateway A) to list bob");
  assert.deepEqual(refs(bob, "alice"), [meta.phx_ref], "bob sees alice's meta under its phx_ref");
  assert.deepEqual(refs(bob, "bob"), refs(alice, "bob"), "both see bob's meta under one phx_ref");

  const bobJoined = alice.joins.filter((j) => j.id === "bob");
  assert.ok(bobJoined.length >= 1, "alice's onJoin fired for bob");
  assert.equal(bobJoined[0].current, undefined, "bob was new to alice");
  assert.equal(bobJoined[0].joined.metas.length, 1);
  assert.ok(bob.joins.some((j) => j.id === "alice"), "bob's onJoin fired for alice (from the state)");
  assert.ok(alice.syncs >= 2 && bob.syncs >= 1, "onSync fired");
});

test("a second device of alice: two metas, closing one leaves one, closing both removes alice", T, async () => {
  const topic = room("pres-devices");
  const bob = await present(await connect("bob", SOCKET_URL), topic);
  const phone = await present(await connect("alice", SOCKET_URL), topic);
  await waitCounts(bob, { alice: 1, bob: 1 }, "bob to list alice's first socket");
  const [first] = refs(bob, "alice");

  const laptop = await present(await connect("alice", SOCKET_URL_B), topic);
  await waitCounts(bob, { alice: 2, bob: 1 }, "bob to list alice's two sockets");
  await waitCounts(phone, { alice: 2, bob: 1 }, "alice's first socket to list her second");
  await waitCounts(laptop, { alice: 2, bob: 1 }, "alice's second socket (gateway B) to list both");
  const [second] = refs(bob, "alice").filter((r) => r !== first);
  assert.ok(second, "the second socket has a phx_ref of its own");
  const added = bob.joins.find((j) => j.id === "alice" && j.joined.metas.some((m) => m.phx_ref === second));
  assert.ok(added, `bob's onJoin fired with the new meta: ${JSON.stringify(bob.joins)}`);
  assert.deepEqual(added.joined.metas.map((m) => m.phx_ref), [second], "onJoin's new presence is the new meta only");
  assert.deepEqual(added.current.metas.map((m) => m.phx_ref), [first], "onJoin's current presence is the first socket");

  // The second socket closes: one meta goes, alice stays.
  let t0 = Date.now();
  sockets.disconnect(laptop.socket);
  await waitCounts(bob, { alice: 1, bob: 1 }, "alice's closed socket to leave bob's list", AT_ONCE_MS);
  assert.deepEqual(refs(bob, "alice"), [first]);
  let left = bob.leaves.find((l) => l.id === "alice");
  assert.ok(left, "bob's onLeave fired for alice");
  assert.deepEqual(left.left.metas.map((m) => m.phx_ref), [second], "onLeave's left presence is the closed socket");
  assert.deepEqual(left.current.metas.map((m) => m.phx_ref), [first], "onLeave's current presence keeps the other");
  console.log(`# a closed socket left the others' lists in ${Date.now() - t0} ms`);

  // The first closes too: alice is gone.
  t0 = Date.now();
  sockets.disconnect(phone.socket);
  await waitCounts(bob, { bob: 1 }, "alice to leave bob's list", AT_ONCE_MS);
  left = bob.leaves.filter((l) => l.id === "alice").at(-1);
  assert.deepEqual(left.left.metas.map((m) => m.phx_ref), [first]);
  assert.equal(left.current.metas.length, 0, "onLeave's current presence has no meta left");
  console.log(`# the last socket left in ${Date.now() - t0} ms`);
});

test("a leave removes the presence at once", T, async () => {
  const topic = room("pres-leave");
  const alice = await present(await connect("alice", SOCKET_URL), topic);
  const bobSocket = await connect("bob", SOCKET_URL_B);
  const bob = await present(bobSocket, topic);
  await waitCounts(alice, { alice: 1, bob: 1 }, "alice to list bob");
  await waitCounts(bob, { alice: 1, bob: 1 }, "bob to list alice");

  const t0 = Date.now();
  await leave(bobSocket, bob.channel);
  await waitCounts(alice, { alice: 1 }, "bob to leave alice's list after channel.leave()", AT_ONCE_MS);
  const took = Date.now() - t0;
  const left = alice.leaves.find((l) => l.id === "bob");
  assert.ok(left && left.left.metas.length === 1, "alice's onLeave fired for bob");
  assert.ok(bobSocket.isConnected(), "bob's socket is still open: the leave alone did it");
  console.log(`# a leave left the others' lists in ${took} ms (interval ${INTERVAL} ms)`);
});

test("a kicked user (membership revoked) leaves the others' lists", T, async () => {
  const topic = `rooms:pres-kick-${marker("k")}`; // private: not under PREFIX
  await members("grant", topic, "alice");
  await members("grant", topic, "bob");
  const alice = await present(await connect("alice", SOCKET_URL), topic);
  const bob = await present(await connect("bob", SOCKET_URL_B), topic);
  await waitCounts(alice, { alice: 1, bob: 1 }, "alice to list bob in the private room");
  let closed = false;
  bob.channel.onClose(() => { closed = true; });

  const t0 = Date.now();
  await members("revoke", topic, "bob");
  await waitFor(() => closed, 5000, "bob's channel to be closed by the kick");
  await waitCounts(alice, { alice: 1 }, "the kicked bob to leave alice's list", AT_ONCE_MS);
  assert.ok(alice.leaves.some((l) => l.id === "bob"), "alice's onLeave fired for bob");
  assert.ok(bob.socket.isConnected(), "bob's socket stays open: only the channel was closed");
  console.log(`# a kick left the others' lists in ${Date.now() - t0} ms`);
});

test("a join without presence gets no presence frame", T, async () => {
  const topic = room("pres-none");
  // Two sockets that do not ask for presence, one per gateway, one saying
  // presence: false; their raw frames are recorded.
  const plainA = await connect("paul", SOCKET_URL);
  const plainB = await connect("pia", SOCKET_URL_B);
  const gotA = frames(plainA, topic);
  const gotB = frames(plainB, topic);
  await joinOk(plainA.channel(topic));
  await joinOk(plainB.channel(topic, { presence: false, sender: true }));

  // Presence changes on both gateways, seen by a presence socket on each.
  const alice = await present(await connect("alice", SOCKET_URL), topic);
  const bobSocket = await connect("bob", SOCKET_URL_B);
  const bob = await present(bobSocket, topic);
  await waitFor(() => counts(alice).bob && counts(bob).alice, 5000, "alice and bob to list each other");
  await leave(bobSocket, bob.channel);
  await waitFor(() => !counts(alice).bob, 5000, "bob to leave alice's list");
  await sleep(3 * INTERVAL); // any diff for the others would be out by now

  for (const [name, got] of [["paul (gateway A)", gotA], ["pia (gateway B)", gotB]]) {
    assert.ok(got.some((m) => m.event === "phx_reply"), `${name}: the hook saw the join reply`);
    const presence = got.filter((m) => PRESENCE_EVENTS.includes(m.event));
    assert.deepEqual(presence, [], `${name} joined without presence and got presence frames`);
  }
  assert.deepEqual(Object.keys(counts(alice)), ["alice"], "paul and pia are not tracked");
});

test("an anonymous socket sees the list but is not in it", T, async () => {
  const topic = room("pres-anon");
  const alice = await present(await connect("alice", SOCKET_URL), topic);
  await waitCounts(alice, { alice: 1 }, "alice to list herself");
  const anon = await present(await connect(null, SOCKET_URL_B), topic);
  await waitCounts(anon, { alice: 1 }, "the anonymous socket (gateway B) to list alice");

  // bob joins on the anonymous socket's gateway after it: a diff that
  // tracked the anonymous socket would reach alice no later than bob's.
  const bob = await present(await connect("bob", SOCKET_URL_B), topic);
  await waitCounts(alice, { alice: 1, bob: 1 }, "alice to list bob");
  await waitCounts(anon, { alice: 1, bob: 1 }, "the anonymous socket to list bob");
  await waitCounts(bob, { alice: 1, bob: 1 }, "bob to list alice and himself only");
  await sleep(2 * INTERVAL);
  assert.deepEqual(counts(alice), { alice: 1, bob: 1 }, "the anonymous socket is not listed");
  assert.deepEqual([...new Set(alice.joins.map((j) => j.id))].sort(), ["alice", "bob"], "no onJoin but alice's and bob's");
});

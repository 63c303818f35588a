// End-to-end tests of the long-poll transport (/socket/longpoll) with the
// official phoenix.js client: `transport: LongPoll`, and the automatic
// fallback from a WebSocket that cannot connect. In Node 20 phoenix.js's
// Ajax uses the global fetch, so no XMLHttpRequest polyfill is needed.
// Run by the Go test allinone/system TestPhoenixJS (env PHX_URL, PHX_MEMBER,
// PHX_PRIVATE_ROOM).
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { LongPoll } from "phoenix";
import WebSocket from "ws";
import {
  Sockets, assertJoinRefused, collect, errorText, hasPrefix, joinOk, leave, marker, push, send, sleep,
  token, waitFor,
} from "./lib.mjs";

const MEMBER = process.env.PHX_MEMBER || "alice";
const PRIVATE_ROOM = process.env.PHX_PRIVATE_ROOM || "rooms:ops";
const LOBBY = "rooms:lobby";
const T = { timeout: 20000 };

const sockets = new Sockets();
after(() => sockets.disconnectAll());

const longPoll = (opts = {}) => sockets.connect({ transport: LongPoll, ...opts });

test("long-poll: a LongPoll and a WebSocket client in rooms:lobby both get a new_msg exactly once", T, async () => {
  const lp = await longPoll({ token: await token("lp-bob") });
  assert.equal(lp.transport, LongPoll, "the socket uses the LongPoll transport");
  const ws = await sockets.connect();
  // The long-poll client asks for senders; the WebSocket one does not.
  const lpLobby = lp.channel(LOBBY, { sender: true });
  const wsLobby = ws.channel(LOBBY);
  await joinOk(lpLobby);
  await joinOk(wsLobby);

  // From the long-poll client ...
  const body = `${marker("lp")} hello from long-poll`;
  const atLp = collect(lpLobby, "new_msg", (p) => p.body === body);
  const atWs = collect(wsLobby, "new_msg", (p) => p.body === body);
  send(lpLobby, "new_msg", { body });
  await waitFor(() => atLp.length >= 1 && atWs.length >= 1, 5000,
    `new_msg at both clients (long-poll got ${atLp.length}, websocket got ${atWs.length})`);

  // ... and from the WebSocket client.
  const back = `${marker("ws")} hello from websocket`;
  const backAtLp = collect(lpLobby, "new_msg", (p) => p.body === back);
  send(wsLobby, "new_msg", { body: back });
  await waitFor(() => backAtLp.length >= 1, 5000, "the WebSocket client's new_msg at the long-poll client");

  await sleep(300); // room for a duplicate to show up
  assert.deepEqual(atLp, [{ body, user_id: "lp-bob" }], "sender (long-poll) receives its message once");
  assert.deepEqual(atWs, [{ body }], "WebSocket client receives it once, as the guide sends it");
  assert.deepEqual(backAtLp, [{ body: back }], "long-poll client receives the WebSocket client's message once");

  // Replies travel too.
  assert.deepEqual(await push(lpLobby, "ping", { n: 7 }), { status: "ok", response: { n: 7 } });
  sockets.disconnect(lp);
  sockets.disconnect(ws);
});

test("long-poll: 150 pushes in one tick arrive in order (ndjson batches of 100)", T, async () => {
  const N = 150; // more than one batch of MAX_LONGPOLL_BATCH_SIZE (100)
  const lp = await longPoll({ token: await token("lp-burst") });
  const lobby = lp.channel(LOBBY);
  await joinOk(lobby);
  const prefix = `${marker("lp-burst")}-m-`;
  const got = collect(lobby, "new_msg", hasPrefix(prefix));
  for (let i = 0; i < N; i++) send(lobby, "new_msg", { body: prefix + i });
  await waitFor(() => got.length >= N, 10000, `${N} messages back (got ${got.length})`);
  await sleep(300);
  assert.deepEqual(got.map((p) => p.body), Array.from({ length: N }, (_, i) => prefix + i));
  sockets.disconnect(lp);
});

test("long-poll: private room refuses a non-member and admits the member (authToken header)", T, async () => {
  const mallory = await longPoll({ token: await token("lp-mallory") });
  await assertJoinRefused(mallory.channel(PRIVATE_ROOM), { reason: "unauthorized" });

  // authToken travels in X-Phoenix-AuthToken over long-poll.
  const member = await longPoll({ authToken: await token(MEMBER) });
  await joinOk(member.channel(PRIVATE_ROOM));

  sockets.disconnect(mallory);
  sockets.disconnect(member);
});

test("long-poll: leave is acknowledged and stops delivery", T, async () => {
  const lp = await longPoll();
  const ws = await sockets.connect();
  const lpLobby = lp.channel(LOBBY);
  const wsLobby = ws.channel(LOBBY);
  await joinOk(lpLobby);
  await joinOk(wsLobby);

  // phoenix.js resolves leave() "ok" locally at once; over long-poll the
  // phx_leave is still on its way in a POST, so leave also waits for the
  // server's phx_close (sent after its ok reply) before testing delivery.
  await leave(lp, lpLobby);

  const body = marker("lp-after-leave");
  const raw = [];
  lp.onMessage((m) => {
    if (m.event === "new_msg" && m.payload?.body === body) raw.push(m);
  });
  const atWs = collect(wsLobby, "new_msg", (p) => p.body === body);
  send(wsLobby, "new_msg", { body });
  await waitFor(() => atWs.length === 1, 5000, "the WebSocket client's own message");
  await sleep(500);
  assert.deepEqual(raw, [], "no new_msg reaches the long-poll socket after leaving");
  sockets.disconnect(lp);
  sockets.disconnect(ws);
});

test("long-poll: a forged token fails to connect (status 403)", T, async () => {
  const s = sockets.newSocket({ token: "forged", transport: LongPoll });
  const errors = [];
  let opened = false;
  s.onError((err) => errors.push(errorText(err)));
  s.onOpen(() => { opened = true; });
  s.connect();
  try {
    await waitFor(() => errors.length > 0 || opened, 5000, "onError for the forged token");
    assert.equal(opened, false, "long-poll socket with a forged token must not open");
    assert.match(errors[0], /403/, `error is the 403 status: ${errors[0]}`);
  } finally {
    sockets.disconnect(s);
  }
});

// A WebSocket that cannot reach the server (a proxy that refuses upgrades):
// the upgrade is sent to a path that answers 404.
class BlockedWebSocket extends WebSocket {
  constructor(url, protocols) {
    super(url.replace("/socket/websocket", "/socket/blocked"), protocols);
  }
}

test("fallback: longPollFallbackMs switches to LongPoll when the WebSocket fails", T, async () => {
  const s = sockets.newSocket({ token: await token("lp-fallback"), transport: BlockedWebSocket, longPollFallbackMs: 500 });
  const opened = new Promise((resolve) => s.onOpen(resolve));
  s.connect();
  await waitFor(opened, 8000, "the socket to open over the fallback");
  assert.equal(s.transport, LongPoll, "phoenix.js fell back to LongPoll");
  const lobby = s.channel(LOBBY);
  await joinOk(lobby);
  assert.deepEqual(await push(lobby, "ping", { fallback: true }), { status: "ok", response: { fallback: true } });
  sockets.disconnect(s);
});

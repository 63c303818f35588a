// Binary payloads with the official phoenix.js client: an ArrayBuffer pushed
// by phoenix.js travels as a V2 binary frame, through roomsvc, and comes back
// to every V2 socket in the room as an ArrayBuffer; V1 sockets get a clear
// error in its place. Run by the Go test allinone/system TestPhoenixJS.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { Sockets, V1_JSON, collect, joinOk, push, waitFor } from "./lib.mjs";

const LOBBY = "rooms:lobby";
const T = { timeout: 20000 };
const sockets = new Sockets();
after(() => sockets.disconnectAll());

const bytes = (...b) => new Uint8Array(b).buffer;
const asArray = (buf) => Array.from(new Uint8Array(buf));

test("ping with an ArrayBuffer gets a binary reply", T, async () => {
  const socket = await sockets.connect();
  const channel = socket.channel(LOBBY);
  await joinOk(channel);
  const r = await push(channel, "ping", bytes(1, 2, 3, 0xfe, 0xff));
  assert.equal(r.status, "ok");
  assert.ok(r.response instanceof ArrayBuffer, `reply is ${Object.prototype.toString.call(r.response)}`);
  assert.deepEqual(asArray(r.response), [1, 2, 3, 0xfe, 0xff]);
});

test("a binary new_msg reaches V2 sockets as an ArrayBuffer and V1 sockets as an error", T, async () => {
  const sender = await sockets.connect();
  const v2 = await sockets.connect();
  // phoenix.js speaks V1 when given vsn 1.0.0 and the JSON object codec.
  const v1 = await sockets.connect(V1_JSON);
  const [cs, c2, c1] = [sender, v2, v1].map((s) => s.channel(LOBBY));
  await Promise.all([joinOk(cs), joinOk(c2), joinOk(c1)]);
  // A random signature keeps other tests' binary messages apart.
  const sig = Array.from({ length: 8 }, () => Math.floor(Math.random() * 256));
  const mine = (p) => p instanceof ArrayBuffer && asArray(p).slice(0, 8).join() === sig.join();
  const got2 = collect(c2, "new_msg", mine);
  const gotSelf = collect(cs, "new_msg", mine);
  const got1 = collect(c1, "new_msg", (p) => p && typeof p.error === "string");
  cs.push("new_msg", new Uint8Array([...sig, 42]).buffer, 2000);
  await waitFor(() => got2.length === 1 && gotSelf.length === 1, 5000, "the binary broadcast on V2 sockets");
  assert.deepEqual(asArray(got2[0]), [...sig, 42]);
  await waitFor(() => got1.length >= 1, 5000, "the error on the V1 socket");
  assert.match(got1[0].error, /V2 serializer/);
});

// Helpers shared by the end-to-end tests and fanout.mjs. They drive the
// official, unmodified phoenix.js client (npm "phoenix", or an older release
// under an alias such as "phx14") over the "ws" WebSocket implementation, as
// a browser would drive it.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Socket } from "phoenix";
import WebSocket from "ws";

/** Base URL of the gateway, e.g. http://127.0.0.1:4000 (env PHX_URL). */
export const PHX_URL = (process.env.PHX_URL || "http://127.0.0.1:4000").replace(/\/+$/, "");
/** The socket endpoint phoenix.js appends "/websocket" to. */
export const SOCKET_URL = PHX_URL + "/socket";
/**
 * Base URL of a second gateway of the same system (env PHX_URL_B; PHX_URL
 * if unset), and its socket endpoint: for tests across two gateways.
 */
export const PHX_URL_B = (process.env.PHX_URL_B || PHX_URL).replace(/\/+$/, "");
export const SOCKET_URL_B = PHX_URL_B + "/socket";

/** A short random marker, unique per call, to tell our messages from others'. */
export function marker(prefix = "t") {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(4).toString("hex")}`;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * waitFor resolves when `what` is satisfied, or rejects after `ms` with a
 * message naming `label`.
 *   - a promise (thenable): resolves with its value;
 *   - a function: polled every 5 ms until it returns a truthy value, which is
 *     returned (a thrown error rejects at once).
 */
export function waitFor(what, ms, label) {
  return new Promise((resolve, reject) => {
    let done = false;
    let poll = null;
    const finish = (fn, v) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (poll) clearInterval(poll);
      fn(v);
    };
    const timer = setTimeout(
      () => finish(reject, new Error(`timed out after ${ms} ms waiting for ${label}`)),
      ms,
    );
    if (what && typeof what.then === "function") {
      what.then((v) => finish(resolve, v), (e) => finish(reject, e));
      return;
    }
    if (typeof what !== "function") {
      finish(reject, new TypeError("waitFor needs a promise or a predicate"));
      return;
    }
    const check = () => {
      try {
        const v = what();
        if (v) finish(resolve, v);
      } catch (e) {
        finish(reject, e);
      }
    };
    poll = setInterval(check, 5);
    check();
  });
}

/** Fetches a development token for userId from GET /token?user_id=. */
export async function token(userId) {
  const res = await waitFor(
    fetch(`${PHX_URL}/token?user_id=${encodeURIComponent(userId)}`),
    5000,
    `GET /token for ${userId}`,
  );
  if (res.status !== 200) {
    throw new Error(`GET /token?user_id=${userId}: HTTP ${res.status}: ${await res.text()}`);
  }
  const body = await res.json();
  if (typeof body.token !== "string" || body.token === "") {
    throw new Error(`GET /token?user_id=${userId}: no token in ${JSON.stringify(body)}`);
  }
  return body.token;
}

/**
 * A registry of sockets, so a test file can disconnect every socket it opened
 * in an after() hook even when a test failed half-way.
 */
export class Sockets {
  /**
   * SocketClass is the Socket of the phoenix.js to drive: by default the
   * "phoenix" package, or that of an older release (versions.test.mjs).
   */
  constructor(SocketClass = Socket) {
    this.Socket = SocketClass;
    this.all = new Set();
  }

  /**
   * newSocket builds a phoenix.js Socket (not yet connected). opts are passed
   * to phoenix.js; `token` (if given) becomes params.token, and `endpoint`
   * (default SOCKET_URL) is the socket endpoint, e.g. SOCKET_URL_B.
   */
  newSocket({ token: tok, endpoint = SOCKET_URL, ...opts } = {}) {
    const params = tok === undefined ? {} : { token: tok };
    const socket = new this.Socket(endpoint, { transport: WebSocket, params, ...opts });
    this.all.add(socket);
    return socket;
  }

  /**
   * connect opens a socket and resolves once it is open. It rejects (and
   * disconnects the socket) if phoenix.js reports an error first, or after ms.
   */
  connect(opts = {}, ms = 5000) {
    return this.open(this.newSocket(opts), ms);
  }

  /** open connects a socket made by newSocket, as connect does. */
  async open(socket, ms = 5000) {
    const opened = new Promise((resolve, reject) => {
      const refs = [];
      const off = () => socket.off(refs);
      refs.push(socket.onOpen(() => { off(); resolve(socket); }));
      refs.push(socket.onError((err) => {
        off();
        reject(new Error(`socket error before open: ${errorText(err)}`));
      }));
    });
    socket.connect();
    try {
      return await waitFor(opened, ms, `socket ${socket.endPoint} to open`);
    } catch (e) {
      this.disconnect(socket);
      throw e;
    }
  }

  disconnect(socket) {
    this.all.delete(socket);
    try {
      socket.disconnect();
    } catch {
      // already gone
    }
    // phoenix.js 1.4 unhooks the WebSocket's onclose before closing it, so
    // the handler that stops its heartbeat interval never runs, and the
    // interval would keep Node running forever.
    clearInterval(socket.heartbeatTimer);
  }

  disconnectAll() {
    for (const s of [...this.all]) this.disconnect(s);
  }
}

/** Text of a phoenix.js onError argument (a ws ErrorEvent, an Error, ...). */
export function errorText(err) {
  if (err == null) return String(err);
  if (typeof err === "string") return err;
  return err.message || (err.error && err.error.message) || err.type || String(err);
}

/**
 * reply waits for a Push's reply: resolves {status, response} with status
 * "ok", "error" or "timeout" (phoenix.js' own timeout, push.timeout).
 */
export function reply(push, ms, label) {
  const p = new Promise((resolve) => {
    push
      .receive("ok", (response) => resolve({ status: "ok", response }))
      .receive("error", (response) => resolve({ status: "error", response }))
      .receive("timeout", () => resolve({ status: "timeout", response: undefined }));
  });
  return waitFor(p, ms, label);
}

/** join joins channel and resolves its reply {status, response}. */
export function join(channel, ms = 5000) {
  return reply(channel.join(), ms, `reply to join ${channel.topic}`);
}

/**
 * joinOk joins channel and asserts the join succeeded; it resolves the
 * response of the reply.
 */
export async function joinOk(channel, ms = 5000) {
  const r = await join(channel, ms);
  if (r.status !== "ok") {
    channel.leave();
    throw new Error(`join ${channel.topic}: want ok, got ${r.status} ${JSON.stringify(r.response)}`);
  }
  return r.response;
}

/** push pushes event and resolves its reply {status, response}. */
export function push(channel, event, payload, ms = 5000) {
  return reply(channel.push(event, payload, ms), ms + 1000, `reply to ${event} on ${channel.topic}`);
}

/**
 * collect records the payloads of `event` on channel whose body passes
 * filter (default: any). Returns the array it fills.
 */
export function collect(channel, event, filter = () => true) {
  const got = [];
  channel.on(event, (payload) => {
    if (filter(payload)) got.push(payload);
  });
  return got;
}

/**
 * new_msg gets no reply (like {:noreply}); a short push timeout keeps
 * phoenix.js' per-push timers from holding the process open for 10 s.
 */
export const NOREPLY_TIMEOUT = 2000;

/** send pushes an event that expects no reply. */
export function send(channel, event, payload) {
  channel.push(event, payload, NOREPLY_TIMEOUT);
}

/** hasPrefix is a new_msg filter for bodies starting with prefix. */
export const hasPrefix = (prefix) => (p) => typeof p?.body === "string" && p.body.startsWith(prefix);

/** Asserts a join is refused with exactly `response`, then stops phoenix.js' rejoins. */
export async function assertJoinRefused(channel, response) {
  const r = await join(channel);
  channel.leave(); // a refused join makes phoenix.js rejoin forever
  assert.equal(r.status, "error", `join ${channel.topic}: want error, got ${r.status} ${JSON.stringify(r.response)}`);
  assert.deepEqual(r.response, response);
}

/**
 * leave leaves channel (of socket) and resolves once phx_leave is answered
 * ok and the server's phx_close for the topic has arrived. phoenix.js may
 * resolve leave() before the server has the phx_leave (over long-poll it is
 * still on its way in a POST); the phx_close comes after the server's ok.
 */
export async function leave(socket, channel, ms = 5000) {
  const closed = new Promise((resolve) => {
    const ref = socket.onMessage((m) => {
      if (m.topic === channel.topic && m.event === "phx_close") {
        socket.off([ref]);
        resolve();
      }
    });
  });
  const left = await waitFor(new Promise((resolve) => {
    channel.leave(3000)
      .receive("ok", () => resolve("ok"))
      .receive("timeout", () => resolve("timeout"));
  }), ms, `reply to phx_leave on ${channel.topic}`);
  assert.equal(left, "ok", "phx_leave is acknowledged ok");
  await waitFor(closed, ms, `the server's phx_close for ${channel.topic} after phx_leave`);
}

/**
 * lifecycle records what happens to a socket: opens, errors and closes
 * (problems), and ok replies to heartbeats (the only pushes on the
 * "phoenix" topic). Call it before connecting.
 */
export function lifecycle(socket) {
  const life = { opens: 0, problems: [], heartbeatReplies: 0 };
  socket.onOpen(() => { life.opens++; });
  socket.onError((err) => life.problems.push(`error: ${errorText(err)}`));
  socket.onClose((ev) => life.problems.push(`close: code ${ev?.code} ${ev?.reason ?? ""}`));
  socket.onMessage((m) => {
    if (m.topic === "phoenix" && m.event === "phx_reply" && m.payload?.status === "ok") life.heartbeatReplies++;
  });
  return life;
}

/** Socket options that make phoenix.js speak V1 (vsn 1.0.0, JSON object frames). */
export const V1_JSON = {
  vsn: "1.0.0",
  encode: (msg, cb) => cb(JSON.stringify(msg)),
  decode: (raw, cb) => cb(JSON.parse(raw)),
};

/** Percentile (0..100) of a numeric array, nearest rank. */
export function percentile(values, p) {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

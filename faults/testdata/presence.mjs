// presence.mjs: the phoenix.js side of TestPresenceGatewayKilled (faults/).
//
// Official, unmodified phoenix.js clients, each with `new Presence(channel)`
// on rooms:lobby joined with {presence: true}, logged in through the
// gateways' development login. MOVERS ("mover<i>") and one socket of the
// user "dual" connect through LB_URL (a TCP proxy standing in for a load
// balancer: gateway A while it accepts, else gateway B); OBSERVERS
// ("observer<i>") and the second socket of "dual" connect straight to
// gateway B.
//
// This script only reports; the Go test decides. Every line on stdout:
//   SYNC <client> <ms since the epoch> <{"user": ["phx_ref", ...], ...}>
//       at every Presence.onSync of a client: its whole list()
//   OPEN <client> <ms> / CLOSE <client> <ms> <code> / JOINED <client> <ms>
//   BYE when it stopped on QUIT
// and on stdin it takes:
//   LATE <name> <user> <base URL>   a new client (as above) on that URL
//   QUIT                            disconnect everyone and exit
import { createRequire } from "node:module";
import path from "node:path";
import readline from "node:readline";

const require = createRequire(path.join(process.env.E2E_DIR, "package.json"));
const { Socket, Presence } = require("phoenix");
const WebSocket = require("ws");

const LB = process.env.LB_URL;
const B = process.env.B_URL;
const MOVERS = Number(process.env.MOVERS || 3);
const OBSERVERS = Number(process.env.OBSERVERS || 2);
const TOPIC = "rooms:lobby";
const now = () => Math.round(performance.timeOrigin + performance.now()); // ms since the epoch
const out = (line) => process.stdout.write(line + "\n");

async function token(base, user) {
  const res = await fetch(`${base}/token?user_id=${encodeURIComponent(user)}`);
  if (res.status !== 200) throw new Error(`GET /token for ${user}: HTTP ${res.status} ${await res.text()}`);
  return (await res.json()).token;
}

const clients = [];

async function client(name, user, base) {
  const tok = await token(base, user);
  const socket = new Socket(`${base}/socket`, { transport: WebSocket, params: { token: tok } });
  socket.onOpen(() => out(`OPEN ${name} ${now()}`));
  socket.onClose((ev) => out(`CLOSE ${name} ${now()} ${ev && ev.code}`));
  const channel = socket.channel(TOPIC, { presence: true });
  const presence = new Presence(channel);
  presence.onSync(() => {
    const list = {};
    presence.list((id, { metas }) => {
      list[id] = metas.map((m) => m.phx_ref);
    });
    out(`SYNC ${name} ${now()} ${JSON.stringify(list)}`);
  });
  socket.connect();
  channel
    .join()
    .receive("ok", () => out(`JOINED ${name} ${now()}`))
    .receive("error", (r) => out(`JOINERROR ${name} ${now()} ${JSON.stringify(r)}`));
  clients.push(socket);
}

async function main() {
  for (let i = 0; i < MOVERS; i++) await client(`mover${i}`, `mover${i}`, LB);
  await client("dual-a", "dual", LB);
  await client("dual-b", "dual", B);
  for (let i = 0; i < OBSERVERS; i++) await client(`observer${i}`, `observer${i}`, B);
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const [cmd, ...args] = line.trim().split(" ");
    if (cmd === "LATE") await client(args[0], args[1], args[2]);
    if (cmd === "QUIT") break;
  }
  for (const s of clients) s.disconnect();
  out("BYE");
  process.exit(0);
}

main().catch((e) => {
  out("FAILED " + String(e && e.stack ? e.stack : e).replace(/\n/g, " | "));
  process.exit(1);
});

// End-to-end test of the chat page in a real headless Chromium: two pages
// show the room's history when they join and chat through the system, list
// each other as online (a second device counted, an anonymous page not
// listed) and one closing leaves the other's list, a third is refused a
// private room, and a fourth, behind a TCP proxy this script cuts, resumes
// after the outage with every message it missed. Run by
// the Go test allinone/system TestBrowserChat, which starts the system and sets
//   PHX_URL  base URL of the gateway (default http://127.0.0.1:4000)
//   PHX_OUT  folder for the screenshots a.png, b.png, c.png, d.png (default: cwd)
//   CHROMIUM the browser binary (default /usr/bin/chromium, Debian's package)
// It uses playwright-core only to drive that installed browser; it never
// downloads one. Exits non-zero with a message on the first failed check.
import { mkdirSync } from "node:fs";
import { createServer, connect } from "node:net";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { PHX_URL, Sockets, collect, joinOk, marker, send, token, waitFor } from "./lib.mjs";

const OUT = process.env.PHX_OUT || ".";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const HARD_TIMEOUT_MS = 60_000;
const STEP_MS = 15_000;

let browser = null;
const pages = {}; // name -> page, for screenshots on failure
const pageErrors = [];
const sockets = new Sockets(); // phoenix.js in Node, posting as another user
// Pages whose connection this script cut: their failed reconnects are expected.
const cut = new Set();

function check(what) {
  console.log(`ok - ${what}`);
}

async function closeBrowser() {
  sockets.disconnectAll();
  if (!browser) return;
  const b = browser;
  browser = null;
  await Promise.race([b.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
}

async function fail(err) {
  console.error(`FAIL - ${err && err.stack ? err.stack : err}`);
  for (const [name, page] of Object.entries(pages)) {
    const file = join(OUT, `${name}-failure.png`);
    await page.screenshot({ path: file, timeout: 3000 }).then(
      () => console.error(`  screenshot of page ${name}: ${file}`),
      () => {},
    );
  }
  await closeBrowser();
  process.exit(1);
}

const hardTimer = setTimeout(
  () => fail(new Error(`browser test did not finish in ${HARD_TIMEOUT_MS / 1000} s`)),
  HARD_TIMEOUT_MS,
);

/**
 * open loads the chat page for user (and room) in a fresh browser context,
 * from base (default PHX_URL).
 */
async function open(name, query, base = PHX_URL) {
  const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on("pageerror", (err) => pageErrors.push(`page ${name}: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    if (cut.has(name) && /WebSocket connection to .* failed/.test(msg.text())) return;
    pageErrors.push(`page ${name} console: ${msg.text()}`);
  });
  page.on("response", (res) => {
    if (res.status() >= 400) pageErrors.push(`page ${name}: GET ${res.url()}: HTTP ${res.status()}`);
  });
  page.on("requestfailed", (req) => {
    pageErrors.push(`page ${name}: ${req.method()} ${req.url()} failed: ${req.failure()?.errorText}`);
  });
  pages[name] = page;
  const url = `${base}/?${new URLSearchParams(query)}`;
  const res = await page.goto(url);
  if (!res || !res.ok()) throw new Error(`GET ${url}: HTTP ${res && res.status()}`);
  return page;
}

/** waitText waits until some element matching selector contains text. */
async function waitText(page, selector, text, label) {
  try {
    await page.locator(selector, { hasText: text }).first().waitFor({ state: "visible" });
  } catch (e) {
    const shown = await page.locator("#messages").innerText().catch(() => "?");
    throw new Error(`${label}: no ${selector} containing ${JSON.stringify(text)}; #messages shows:\n${shown}`);
  }
}

/** waitConnected waits for the status line to say "connected". */
async function waitConnected(page, name) {
  try {
    await page.waitForFunction(() => document.getElementById("status").textContent.trim() === "connected");
  } catch (e) {
    const status = await page.locator("#status").innerText().catch(() => "?");
    throw new Error(`page ${name}: #status never said "connected" (it says ${JSON.stringify(status)})`);
  }
}

/**
 * messageLine checks page shows body exactly once, as
 * <p><time>..</time><b class="from">from</b>body</p>: a live message with
 * the time it arrived, or (earlier) one of the room's history, whose time
 * says "earlier".
 */
async function messageLine(page, name, body, { earlier = false, from = null } = {}) {
  await waitText(page, "#messages p", body, `page ${name}`);
  const lines = await page.locator("#messages p", { hasText: body }).evaluateAll((ps) =>
    ps.map((p) => {
      const time = p.querySelector("time");
      return {
        cls: p.className,
        time: time ? time.textContent : null,
        dateTime: time ? time.dateTime : null,
        from: p.querySelector(".from")?.textContent ?? null,
        text: [...p.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.textContent).join(""),
      };
    }),
  );
  if (lines.length !== 1) throw new Error(`page ${name}: message shown ${lines.length} times, want 1`);
  const [line] = lines;
  if (line.text !== body) throw new Error(`page ${name}: message text is ${JSON.stringify(line.text)}, want ${JSON.stringify(body)}`);
  if (line.cls.includes("notice")) throw new Error(`page ${name}: message is styled as a notice`);
  if (from !== null && line.from !== from) throw new Error(`page ${name}: message from ${JSON.stringify(line.from)}, want ${from}`);
  if (earlier) {
    if (!line.cls.split(" ").includes("history") || line.time !== "earlier") {
      throw new Error(`page ${name}: message is not shown as history (${JSON.stringify(line)})`);
    }
    check(`page ${name} shows the message once, from the room's history ("earlier")`);
    return;
  }
  if (line.cls.includes("history")) throw new Error(`page ${name}: live message styled as history`);
  if (!line.time || !line.dateTime || Number.isNaN(Date.parse(line.dateTime))) {
    throw new Error(`page ${name}: message has no valid <time> (${JSON.stringify(line)})`);
  }
  check(`page ${name} shows the message once, at ${line.time} (${line.dateTime})`);
}

/** inOrder checks page shows the lines containing texts in that order. */
async function inOrder(page, name, texts) {
  const shown = await page.locator("#messages p").allInnerTexts();
  const at = texts.map((t) => shown.findIndex((line) => line.includes(t)));
  if (at.some((i, k) => i < 0 || (k > 0 && i <= at[k - 1]))) {
    throw new Error(`page ${name}: want in order ${JSON.stringify(texts)}; #messages shows:\n${shown.join("\n")}`);
  }
}

/** waitStatus waits for the status line to say text. */
async function waitStatus(page, name, text) {
  try {
    await page.waitForFunction((t) => document.getElementById("status").textContent.includes(t), text);
  } catch (e) {
    const status = await page.locator("#status").innerText().catch(() => "?");
    throw new Error(`page ${name}: #status never said ${JSON.stringify(text)} (it says ${JSON.stringify(status)})`);
  }
}

/**
 * waitOnline waits until page's online list is exactly want ({user:
 * devices}), and returns how long it took.
 */
async function waitOnline(page, name, want) {
  const t0 = Date.now();
  const expected = Object.keys(want).sort().map((u) => `${u} ${want[u]} device${want[u] === 1 ? "" : "s"}`);
  try {
    await page.waitForFunction((exp) => {
      const shown = [...document.querySelectorAll("#online li")].map((li) => li.textContent.trim());
      return JSON.stringify(shown) === JSON.stringify(exp);
    }, expected);
  } catch (e) {
    const shown = await page.locator("#online li").allInnerTexts().catch(() => "?");
    throw new Error(`page ${name}: #online lists ${JSON.stringify(shown)}, want ${JSON.stringify(expected)}`);
  }
  return Date.now() - t0;
}

/** closePage closes a page (its browser context) as a user closing the tab. */
async function closePage(page, name) {
  await page.context().close();
  delete pages[name];
}

/** say sends body from page with the chat input and Enter. */
async function say(page, body) {
  await page.locator("#chat-input").fill(body);
  await page.locator("#chat-input").press("Enter");
}

/**
 * tcpProxy forwards TCP connections on a port of its own to the gateway.
 * cut() drops every connection and refuses new ones (closes them at once),
 * as a network outage would; restore() ends the outage.
 */
async function tcpProxy() {
  const target = new URL(PHX_URL);
  const conns = new Set();
  let up = true;
  const server = createServer((client) => {
    if (!up) {
      client.destroy();
      return;
    }
    const upstream = connect(Number(target.port), target.hostname);
    conns.add(client);
    conns.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      conns.delete(client);
      conns.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    cut() {
      up = false;
      for (const c of conns) c.destroy();
    },
    restore() {
      up = true;
    },
    close() {
      this.cut();
      server.close();
    },
  };
}

/**
 * post sends bodies to rooms:lobby from the Node socket pat, in order, and
 * resolves once they came back (they are in the room's stream).
 */
async function post(lobby, echoed, bodies) {
  for (const body of bodies) send(lobby, "new_msg", { body });
  await waitFor(() => bodies.every((b) => echoed.some((p) => p.body === b)), 5000, `${bodies.length} messages from pat`);
}

async function main() {
  mkdirSync(OUT, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout: 30_000,
  });
  check(`launched ${CHROMIUM} (Chromium ${browser.version()})`);

  // History: messages posted before the pages open appear when they join.
  const pat = await sockets.connect({ token: await token("pat") });
  const patLobby = pat.channel("rooms:lobby");
  await joinOk(patLobby);
  const echoed = collect(patLobby, "new_msg");
  const earlier = [1, 2, 3].map((i) => `before the pages opened #${i} ${marker("earlier")}`);
  await post(patLobby, echoed, earlier);
  check("pat (phoenix.js in Node) posted 3 messages to rooms:lobby");

  const a = await open("a", { user: "ann" });
  const b = await open("b", { user: "ben" });
  for (const [name, page, user] of [["a", a, "ann"], ["b", b, "ben"]]) {
    await waitText(page, "#messages p.notice", `joined rooms:lobby as ${user}`, `page ${name}`);
    await waitConnected(page, name);
    check(`page ${name} joined rooms:lobby as ${user} and says connected`);
    for (const m of earlier) await messageLine(page, name, m, { earlier: true, from: "pat" });
    await inOrder(page, name, [...earlier, `joined rooms:lobby as ${user}`]);
    check(`page ${name} shows the room's history oldest first, then that it joined`);
  }

  const body = `hello ben, ann here ${marker("browser")}`;
  await say(a, body);
  check(`page a sent ${JSON.stringify(body)} with Enter`);
  await messageLine(b, "b", body);
  await messageLine(a, "a", body);
  const left = await a.locator("#chat-input").inputValue();
  if (left !== "") throw new Error(`page a: #chat-input not cleared after sending (holds ${JSON.stringify(left)})`);
  check("page a cleared #chat-input after sending");

  // Presence: each page lists who is online in the room; pat's socket
  // joined without presence, so it is not listed.
  await waitOnline(a, "a", { ann: 1, ben: 1 });
  await waitOnline(b, "b", { ann: 1, ben: 1 });
  check("pages a and b list each other online: ann and ben, 1 device each");
  const a2 = await open("a2", { user: "ann" });
  await waitOnline(b, "b", { ann: 2, ben: 1 });
  await waitOnline(a2, "a2", { ann: 2, ben: 1 });
  await closePage(a2, "a2");
  await waitOnline(b, "b", { ann: 1, ben: 1 });
  check("a second page of ann counts as her second device, and goes when it closes");
  const anon = await open("anon", {});
  await waitText(anon, "#messages p.notice", "joined rooms:lobby anonymously", "page anon");
  await waitOnline(anon, "anon", { ann: 1, ben: 1 });
  await new Promise((r) => setTimeout(r, 1000)); // a few presence intervals
  await waitOnline(a, "a", { ann: 1, ben: 1 });
  await closePage(anon, "anon");
  check("an anonymous page sees who is online and is not listed");
  await b.screenshot({ path: join(OUT, "b.png"), fullPage: true });
  check(`screenshot of page b: ${join(OUT, "b.png")}`);
  await closePage(b, "b");
  const gone = await waitOnline(a, "a", { ann: 1 });
  check(`page b closed: ben left page a's online list in ${gone} ms`);

  const c = await open("c", { user: "eve", room: "secret" });
  await waitText(c, "#messages p.notice", "cannot join rooms:secret: unauthorized", "page c");
  const leaked = await c.locator("#messages p", { hasText: body }).count();
  if (leaked !== 0) throw new Error("page c: shows a rooms:lobby message");
  check("page c (eve) was refused rooms:secret: unauthorized");
  try {
    await c.waitForFunction(() => document.getElementById("chat-input").disabled, null, { timeout: 5000 });
  } catch (e) {
    throw new Error("page c: #chat-input still takes messages after the refused join");
  }
  check(`page c disabled #chat-input ("${await c.locator("#chat-input").getAttribute("placeholder")}")`);

  // Resume: page d reaches the gateway through a TCP proxy, which cuts it
  // off while ann sends; when the network is back, phoenix.js reconnects by
  // itself and the page's rejoin asks for what followed its last message.
  const proxy = await tcpProxy();
  const d = await open("d", { user: "dan" }, proxy.url);
  await waitText(d, "#messages p.notice", "joined rooms:lobby as dan", "page d");
  await waitConnected(d, "d");
  await messageLine(d, "d", body, { earlier: true, from: "ann" });
  check("page d (through the proxy) joined rooms:lobby as dan with the history");
  await waitOnline(a, "a", { ann: 1, dan: 1 });
  await waitOnline(d, "d", { ann: 1, dan: 1 });
  check("pages a and d list ann and dan online");

  cut.add("d");
  proxy.cut();
  await waitStatus(d, "d", "connection lost");
  check("page d lost its connection (the proxy cut it) and says so");
  await waitOnline(a, "a", { ann: 1 });
  check("dan, cut off, left page a's online list");
  const missed = [1, 2, 3].map((i) => `sent while dan was away #${i} ${marker("missed")}`);
  for (const m of missed) await say(a, m);
  for (const m of missed) await messageLine(a, "a", m);
  if (await d.locator("#messages p", { hasText: missed[0] }).count() !== 0) {
    throw new Error("page d: shows a message sent while it was cut off");
  }
  proxy.restore();
  await waitText(d, "#messages p.notice", "rejoined rooms:lobby, 3 missed messages", "page d");
  await waitConnected(d, "d");
  for (const m of missed) await messageLine(d, "d", m, { earlier: true, from: "ann" });
  await inOrder(d, "d", [body, ...missed, "rejoined rooms:lobby"]);
  for (const m of [...earlier, body]) await messageLine(d, "d", m, { earlier: true });
  check("page d reconnected and shows the 3 missed messages once each, in order, and nothing twice");
  await waitOnline(a, "a", { ann: 1, dan: 1 });
  await waitOnline(d, "d", { ann: 1, dan: 1 });
  check("dan, back, is online again on pages a and d");
  const after = `back again ${marker("after")}`;
  await say(a, after);
  await messageLine(d, "d", after, { from: "ann" });
  if (await d.locator("#messages p", { hasText: "could not be recovered" }).count() !== 0) {
    throw new Error("page d: says messages could not be recovered, but none were lost");
  }
  check("page d gets live messages after the resume, and lost nothing");

  // Past the room's retention (TestBrowserChat keeps 12 messages per
  // room), the page says it missed some.
  proxy.cut();
  await waitStatus(d, "d", "connection lost");
  const flood = Array.from({ length: 15 }, (_, i) => `flood #${i + 1} ${marker("flood")}`);
  await post(patLobby, echoed, flood);
  proxy.restore();
  await waitText(d, "#messages p.notice", "some messages could not be recovered", "page d");
  await waitConnected(d, "d");
  await messageLine(d, "d", flood[14], { earlier: true, from: "pat" });
  if (await d.locator("#messages p", { hasText: flood[0] }).count() !== 0) {
    throw new Error("page d: shows a message the room no longer keeps");
  }
  check("page d, resuming past the room's retention, says some messages could not be recovered");

  if (pageErrors.length) throw new Error(`errors in the pages:\n  ${pageErrors.join("\n  ")}`);
  check("no script errors in the pages");

  for (const [name, page] of [["a", a], ["c", c], ["d", d]]) {
    const file = join(OUT, `${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    check(`screenshot of page ${name}: ${file}`);
  }
  await closeBrowser();
  proxy.close();
  clearTimeout(hardTimer);
  console.log("browser chat: all checks passed");
}

main().catch(fail);

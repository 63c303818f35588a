// End-to-end test of the chat page in a real headless Chromium: two pages
// chat through the system, and a third is refused a private room. Run by the
// Go test allinone/system TestBrowserChat, which starts the system and sets
//   PHX_URL  base URL of the gateway (default http://127.0.0.1:4000)
//   PHX_OUT  folder for the screenshots a.png, b.png, c.png (default: cwd)
//   CHROMIUM the browser binary (default /usr/bin/chromium, Debian's package)
// It uses playwright-core only to drive that installed browser; it never
// downloads one. Exits non-zero with a message on the first failed check.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { PHX_URL, marker } from "./lib.mjs";

const OUT = process.env.PHX_OUT || ".";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const HARD_TIMEOUT_MS = 60_000;
const STEP_MS = 15_000;

let browser = null;
const pages = {}; // name -> page, for screenshots on failure
const pageErrors = [];

function check(what) {
  console.log(`ok - ${what}`);
}

async function closeBrowser() {
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

/** open loads the chat page for user (and room) in a fresh browser context. */
async function open(name, query) {
  const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on("pageerror", (err) => pageErrors.push(`page ${name}: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") pageErrors.push(`page ${name} console: ${msg.text()}`);
  });
  page.on("response", (res) => {
    if (res.status() >= 400) pageErrors.push(`page ${name}: GET ${res.url()}: HTTP ${res.status()}`);
  });
  page.on("requestfailed", (req) => {
    pageErrors.push(`page ${name}: ${req.method()} ${req.url()} failed: ${req.failure()?.errorText}`);
  });
  pages[name] = page;
  const url = `${PHX_URL}/?${new URLSearchParams(query)}`;
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

/** messageLine checks page shows body exactly once, as <p><time>..</time>body</p>. */
async function messageLine(page, name, body) {
  await waitText(page, "#messages p", body, `page ${name}`);
  const lines = await page.locator("#messages p", { hasText: body }).evaluateAll((ps) =>
    ps.map((p) => {
      const time = p.querySelector("time");
      return {
        cls: p.className,
        time: time ? time.textContent : null,
        dateTime: time ? time.dateTime : null,
        text: [...p.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.textContent).join(""),
      };
    }),
  );
  if (lines.length !== 1) throw new Error(`page ${name}: message shown ${lines.length} times, want 1`);
  const [line] = lines;
  if (line.text !== body) throw new Error(`page ${name}: message text is ${JSON.stringify(line.text)}, want ${JSON.stringify(body)}`);
  if (!line.time || !line.dateTime || Number.isNaN(Date.parse(line.dateTime))) {
    throw new Error(`page ${name}: message has no valid <time> (${JSON.stringify(line)})`);
  }
  if (line.cls.includes("notice")) throw new Error(`page ${name}: message is styled as a notice`);
  check(`page ${name} shows the message once, at ${line.time} (${line.dateTime})`);
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

  const a = await open("a", { user: "ann" });
  const b = await open("b", { user: "ben" });
  for (const [name, page, user] of [["a", a, "ann"], ["b", b, "ben"]]) {
    await waitText(page, "#messages p.notice", `joined rooms:lobby as ${user}`, `page ${name}`);
    await waitConnected(page, name);
    check(`page ${name} joined rooms:lobby as ${user} and says connected`);
  }

  const body = `hello ben, ann here ${marker("browser")}`;
  await a.locator("#chat-input").fill(body);
  await a.locator("#chat-input").press("Enter");
  check(`page a sent ${JSON.stringify(body)} with Enter`);
  await messageLine(b, "b", body);
  await messageLine(a, "a", body);
  const left = await a.locator("#chat-input").inputValue();
  if (left !== "") throw new Error(`page a: #chat-input not cleared after sending (holds ${JSON.stringify(left)})`);
  check("page a cleared #chat-input after sending");

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

  if (pageErrors.length) throw new Error(`errors in the pages:\n  ${pageErrors.join("\n  ")}`);
  check("no script errors in the pages");

  for (const [name, page] of [["a", a], ["b", b], ["c", c]]) {
    const file = join(OUT, `${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    check(`screenshot of page ${name}: ${file}`);
  }
  await closeBrowser();
  clearTimeout(hardTimer);
  console.log("browser chat: all checks passed");
}

main().catch(fail);

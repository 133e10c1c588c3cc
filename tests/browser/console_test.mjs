// The agent console in a real browser: playwright-core driving Debian's
// Chromium (headless), run by tests/e2e/test_browser.py, which starts the
// system (MariaDB, Redis, proxy, two gateways, consumer) and does what a
// browser cannot: publishing work orders through Redis and killing node 1.
//
//   node console_test.mjs '<json config>'
//
// config: {url_a, url_b (console URLs with ?token=&nodes=), uuid_a, uuid_b,
//          node1, node2 (internal addresses shown in #node), shots (folder),
//          timeout_ms (bound of every wait), chromium (executable)}
//
// Talking to the test (harness.mjs): a line "@@ {json}" on stdout asks it
// for an action
// ({"do":"publish","uuid":..,"infos":..} or {"do":"kill_node1"}); it answers
// with one JSON line on stdin ({"ok":true} or {"ok":false,"error":..}).
// Every other line is a log.  Exit code 0: every step passed.
import { join } from "node:path";
import { ask, launch, log } from "./harness.mjs";

const cfg = JSON.parse(process.argv[2]);
const T = cfg.timeout_ms || 20000;

// ---- the pages
const browser = await launch(cfg, T);
const pages = {};
const missing = [];   // requests of the console that failed: every file it asks for must exist
let shotNo = 0;

async function shots(step) {
  shotNo++;
  for (const [name, page] of Object.entries(pages)) {
    const path = join(cfg.shots, `${String(shotNo).padStart(2, "0")}-${step}-${name}.png`);
    await page.screenshot({ path, fullPage: true, timeout: T }).catch((e) => log(`screenshot ${path}: ${e}`));
  }
}

async function open(name, url) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 650 } });
  const page = await context.newPage();
  page.setDefaultTimeout(T);
  page.on("console", (m) => {
    log(`${name} console.${m.type()}: ${m.text()} (${m.location().url})`);
    // the browser's own requests (the favicon) are not page responses: this is how they show
    if (m.type() === "error" && m.text().startsWith("Failed to load resource"))
      missing.push(`${name}: ${m.text()} (${m.location().url})`);
  });
  page.on("pageerror", (e) => log(`${name} page error: ${e}`));
  page.on("response", (r) => {
    if (r.status() < 400) return;
    log(`${name} HTTP ${r.status()} ${r.url()}`);
    missing.push(`${name}: HTTP ${r.status()} ${r.url()}`);
  });
  await page.goto(url, { timeout: T });
  pages[name] = page;
  return page;
}

const text = (page, sel) => page.locator(sel).first().textContent({ timeout: T });

async function expectText(page, sel, want, what) {
  try {
    await page.waitForFunction(([s, w]) => {
      const el = document.querySelector(s);
      return el && el.textContent.includes(w);
    }, [sel, want], { timeout: T, polling: 100 });
  } catch (e) {
    const has = await page.evaluate((s) => document.querySelector(s)?.textContent, sel).catch(() => "?");
    throw new Error(`${what}: ${sel} does not show "${want}" within ${T} ms (it shows "${has}")`);
  }
}

// a <li> of list sel containing want
async function expectItem(page, sel, want, what) {
  try {
    await page.locator(`${sel} li`, { hasText: want }).first().waitFor({ state: "visible", timeout: T });
  } catch (e) {
    const items = await page.locator(`${sel} li`).allTextContents().catch(() => []);
    throw new Error(`${what}: no ${sel} item with "${want}" within ${T} ms (items: ${JSON.stringify(items)})`);
  }
}

let failed = null;
try {
  const run = Date.now().toString(36);
  const a = await open("agent-A", cfg.url_a);
  const b = await open("agent-B", cfg.url_b);
  // every state the client goes through, from now on
  for (const p of [a, b]) {
    await p.evaluate(() => {
      window.__states = [];
      window.pushgate.on("state", (s) => window.__states.push(s));
    });
  }
  await expectText(a, "#state", "online", "A connects");
  await expectText(b, "#state", "online", "B connects");
  await expectText(a, "#node", `node ${cfg.node1}`, "A is on node 1");
  await expectText(b, "#node", `node ${cfg.node2}`, "B is on node 2");
  await expectText(a, "#who", cfg.uuid_a, "A's uuid");
  log(`A online at ${await text(a, "#node")}, B online at ${await text(b, "#node")}`);
  await shots("online");

  // 1. a work order for A published through Redis
  const first = `browser order one ${run}`;
  await ask({ do: "publish", uuid: cfg.uuid_a, infos: first });
  await expectItem(a, "#orders", first, "the work order for A");
  log(`A shows work order "${first}"`);
  await expectText(a, "#unread", "1 unread", "A's unread marker");
  await shots("order-for-A");

  // 2. a chat from A (node 1) to B (node 2): crosses the proxy
  const chat = `hello B from A ${run}`;
  await a.fill("#to", cfg.uuid_b);
  await a.fill("#msg", chat);
  await a.click("#chatform button");
  await expectItem(b, "#chat", chat, "A's chat at B");
  await expectItem(b, "#chat", `from ${cfg.uuid_a}`, "the sender shown at B");
  log(`B shows chat "${chat}"`);
  await shots("chat-A-to-B");

  // 3. node 1 killed: A moves to node 2 and gets what was published meanwhile
  await ask({ do: "kill_node1" });
  const second = `browser order two ${run}`;
  await ask({ do: "publish", uuid: cfg.uuid_a, infos: second });
  await expectText(a, "#node", `node ${cfg.node2}`, "A reconnects to node 2");
  await expectText(a, "#state", "online", "A is online again");
  const states = await a.evaluate(() => window.__states);
  log(`A's states since the start: ${states.join(" -> ")}`);
  if (!states.includes("offline")) throw new Error(`A never went offline: ${states}`);
  await shots("A-on-node-2");
  await expectItem(a, "#orders", second, "the work order published while node 1 was down");
  log(`A shows work order "${second}" on ${await text(a, "#node")}`);
  const firsts = await a.locator("#orders li", { hasText: first }).count();
  if (firsts !== 1) throw new Error(`the first work order is shown ${firsts} times`);
  const bStates = await b.evaluate(() => window.__states);
  if (bStates.includes("offline")) throw new Error(`B (on node 2) went offline: ${bStates}`);
  await shots("order-after-failover");
  if (missing.length) throw new Error(`the console asked for what is not there: ${missing.join("; ")}`);
  log("every request of the pages was answered");
} catch (e) {
  failed = e;
  log(`FAILED: ${e.message}`);
  await shots("failure").catch(() => {});
} finally {
  await browser.close().catch(() => {});
}
log(failed ? "FAIL" : "PASS");
process.exit(failed ? 1 : 0);

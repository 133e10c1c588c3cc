// The cluster console (gateway/www/admin.html) in a real browser:
// playwright-core driving Debian's Chromium (headless), run by
// tests/e2e/test_admin_console.py, which starts the system (MariaDB, Redis,
// proxy, two gateways with admin_secret, a consumer, WebSocket browsers that
// ACK) and does what a browser cannot: publishing orders and a malformed
// stream entry through Redis.
//
//   node admin_test.mjs '<json config>'
//
// config: {url_token (admin.html?token=<admin_secret> on a public port),
//          url_plain (admin.html on a public port, no token),
//          url_admin (admin.html on an admin listener, or null),
//          node1, node2 (node ids), conns1, conns2 (WebSocket browsers on each),
//          consumer (the consumer's name), proxy_port, browser_token (a JWT
//          without the admin claim), admin_jwt (one with it), shots (folder),
//          timeout_ms (bound of every wait), chromium (executable)}
//
// Talking to the test (harness.mjs): a line "@@ {json}" on stdout asks for
// an action ({"do":"publish"}: orders to the browsers, answered at
// once while they go out; {"do":"delivered"}: answered when every browser got
// them; {"do":"malformed"}: answered with {"ids":[entry id, dead letter id]});
// the answer is one JSON line on stdin ({"ok":true,...} or {"ok":false,"error":..}).
// Every other line is a log.  Exit code 0: every step passed.
import { join } from "node:path";
import { ask, launch, log } from "./harness.mjs";

const cfg = JSON.parse(process.argv[2]);
const T = cfg.timeout_ms || 20000;

// ---- the pages
const browser = await launch(cfg, T);
const pages = {};
const problems = [];   // failed requests (but the 401/403 a page expects) and script errors
let shotNo = 0;

async function shot(step, name) {
  shotNo++;
  const path = join(cfg.shots, `${String(shotNo).padStart(2, "0")}-${step}-${name}.png`);
  await pages[name].screenshot({ path, fullPage: true, timeout: T }).catch((e) => log(`screenshot ${path}: ${e}`));
}

// authOk: this page may get 401/403 from admin/cluster (it is how it learns it needs a token)
async function open(name, url, authOk) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(T);
  const expected = (status, u) => authOk && (status === 401 || status === 403) && u.endsWith("/admin/cluster");
  page.on("console", (m) => {
    log(`${name} console.${m.type()}: ${m.text()} (${m.location().url})`);
    const status = Number((m.text().match(/status of (\d+)/) || [])[1]);
    if (m.type() === "error" && m.text().startsWith("Failed to load resource") && !expected(status, m.location().url))
      problems.push(`${name}: ${m.text()} (${m.location().url})`);
  });
  page.on("pageerror", (e) => { log(`${name} page error: ${e}`); problems.push(`${name}: page error ${e}`); });
  page.on("response", (r) => {
    if (r.status() < 400) return;
    log(`${name} HTTP ${r.status()} ${r.url()}`);
    if (!expected(r.status(), r.url())) problems.push(`${name}: HTTP ${r.status()} ${r.url()}`);
  });
  await page.goto(url, { timeout: T });
  pages[name] = page;
  return page;
}

// waits until fn(arg) is true in the page; on timeout the error shows describe(arg)
async function until(page, what, fn, arg, describe) {
  try {
    await page.waitForFunction(fn, arg, { timeout: T, polling: 100 });
  } catch (e) {
    const seen = await page.evaluate(describe || (() => document.querySelector("#status")?.textContent), arg)
      .catch((err) => `? (${err.message})`);
    throw new Error(`${what}: not within ${T} ms (the page shows ${JSON.stringify(seen)})`);
  }
}

const nodeRows = () => [...document.querySelectorAll("#nodes tr.node")].map((tr) =>
  ({ node: tr.dataset.node, state: tr.dataset.state, connections: tr.dataset.connections, text: tr.textContent }));
const charts = () => [...document.querySelectorAll("#rates [data-series]")].map((c) =>
  ({ series: c.dataset.series, last: c.dataset.last, max: c.dataset.max, total: c.dataset.total }));
const latencyRows = () => [...document.querySelectorAll("#latency [data-hist]")].map((r) =>
  ({ hist: r.dataset.hist, count: r.dataset.count, p50: r.dataset.p50, p90: r.dataset.p90, p99: r.dataset.p99 }));
const deadRows = () => [...document.querySelectorAll("#dead-letters tr.dead-letter")].map((r) =>
  ({ id: r.dataset.id, reason: r.dataset.reason }));

// both nodes up, each with at least its browsers as connections
async function expectNodes(page) {
  for (const [node, conns] of [[cfg.node1, cfg.conns1], [cfg.node2, cfg.conns2]]) {
    await until(page, `node ${node} up with ${conns}+ connections in #nodes`, ([n, c]) => {
      const tr = document.querySelector(`#nodes tr.node[data-node="${n}"]`);
      return tr && tr.dataset.state === "up" && Number(tr.dataset.connections) >= c;
    }, [node, conns], nodeRows);
  }
}

async function expectUpdated(page) {
  await until(page, "#status says updated HH:MM:SS",
              () => /^updated \d\d:\d\d:\d\d$/.test(document.querySelector("#status").textContent));
}

let failed = null;
try {
  // 1. the token from the URL: nodes, consumer, proxy, health
  const c = await open("console", cfg.url_token, false);
  await expectUpdated(c);
  if (new URL(c.url()).searchParams.has("token")) throw new Error(`the token stays in the address bar: ${c.url()}`);
  const stored = await c.evaluate(() => sessionStorage.getItem("pushgate.adminToken"));
  if (!stored) throw new Error("the token from the URL is not kept in sessionStorage");
  await expectNodes(c);
  log(`nodes: ${JSON.stringify(await c.evaluate(nodeRows))}`);
  await until(c, `the consumer "${cfg.consumer}" in #consumers`,
              (name) => !!document.querySelector(`#consumers .consumer[data-name="${name}"]`), cfg.consumer,
              () => document.querySelector("#consumers").textContent);
  await until(c, `the proxy on port ${cfg.proxy_port} in #proxies`,
              (port) => [...document.querySelectorAll("#proxies .proxy")].some((p) => p.dataset.daemon.endsWith(":" + port)),
              cfg.proxy_port, () => document.querySelector("#proxies").textContent);
  await until(c, "both nodes and the serving gateway in #health", ([a, b]) => {
    const rows = [...document.querySelectorAll("#health tr.health")].map((r) => r.dataset.daemon);
    return rows.includes("gateway " + a) && rows.includes("gateway " + b) &&
      document.querySelector("#health tr.serving")?.dataset.mysql === "ok";
  }, [cfg.node1, cfg.node2], () => document.querySelector("#health").textContent);
  log(`status: ${await c.textContent("#status")}; ${await c.textContent("#served")}`);
  await shot("cluster", "console");

  // 2. orders: the rates move, then latency percentiles appear
  await ask({ do: "publish" });
  await until(c, "a rate above 0 for in or pushed in #rates", () =>
    ["in", "pushed"].some((s) => Number(document.querySelector(`#rates [data-series="${s}"]`)?.dataset.last) > 0),
    null, charts);
  log(`rates while publishing: ${JSON.stringify(await c.evaluate(charts))}`);
  await shot("rates", "console");
  const got = await ask({ do: "delivered" });
  log(`the browsers got ${got.received} orders`);
  for (const hist of ["intake_to_push", "push_to_ack"]) {
    await until(c, `a p50 of ${hist} in #latency`, (h) => {
      const r = document.querySelector(`#latency [data-hist="${h}"]`);
      return r && Number(r.dataset.count) > 0 && !!r.dataset.p50 && !!r.dataset.p99;
    }, hist, latencyRows);
  }
  log(`latency: ${JSON.stringify(await c.evaluate(latencyRows))}`);
  await until(c, "the acked total in #rates", () =>
    Number(document.querySelector('#rates [data-series="acked"]')?.dataset.total) > 0, null, charts);
  await shot("latency", "console");

  // 3. a malformed stream entry: a dead letter with its reason
  const { ids } = await ask({ do: "malformed" });
  await until(c, `dead letter ${ids.join(" or ")} (malformed) in #dead-letters`, (want) =>
    [...document.querySelectorAll("#dead-letters tr.dead-letter")].some((r) =>
      want.includes(r.dataset.id) && r.dataset.reason.startsWith("malformed") && r.textContent.includes("malformed")),
    ids, deadRows);
  await until(c, "malformed counted in the consumer's dead letters by reason", (name) =>
    /malformed [1-9]/.test(document.querySelector(`#consumers .consumer[data-name="${name}"] [data-key="dead_by_reason"]`)
      ?.textContent || ""), cfg.consumer, () => document.querySelector("#consumers").textContent);
  log(`dead letters: ${JSON.stringify(await c.evaluate(deadRows))}`);
  await shot("dead-letter", "console");

  // 4. no token: the page asks for one (401); a browser token is refused (403);
  //    an admin JWT signs in
  const p = await open("no-token", cfg.url_plain, true);
  const asking = () => ({ signin: !document.querySelector("#signin").hidden, app: !document.querySelector("#app").hidden,
                          why: document.querySelector("#signin-why").textContent,
                          status: document.querySelector("#status").textContent });
  await until(p, "the token field and a 401 message", () =>
    !document.querySelector("#signin").hidden && document.querySelector("#app").hidden &&
    document.querySelector("#signin-why").textContent.includes("401"), null, asking);
  log(`without a token: ${JSON.stringify(await p.evaluate(asking))}`);
  await shot("asks-for-token", "no-token");
  await p.fill("#tokeninput", cfg.browser_token);
  await p.click("#tokenform button");
  await until(p, "a 403 message for a token without the admin claim", () =>
    !document.querySelector("#signin").hidden && document.querySelector("#signin-why").textContent.includes("403"),
    null, asking);
  log(`with a browser token: ${JSON.stringify(await p.evaluate(asking))}`);
  await shot("not-an-operator", "no-token");
  await p.fill("#tokeninput", cfg.admin_jwt);
  await p.click("#tokenform button");
  await expectUpdated(p);
  await expectNodes(p);
  if (!await p.evaluate(() => document.querySelector("#signin").hidden)) throw new Error("the token field stays after signing in");
  log("an admin JWT signs in");
  await shot("signed-in", "no-token");

  // 5. the admin listener: no token asked
  if (cfg.url_admin) {
    const a = await open("admin-listener", cfg.url_admin, false);
    await expectUpdated(a);
    await expectNodes(a);
    if (!await a.evaluate(() => document.querySelector("#signin").hidden)) throw new Error("the admin listener asks for a token");
    log("the admin listener shows the cluster without a token");
    await shot("admin-listener", "admin-listener");
  }
  if (problems.length) throw new Error(`unexpected failures in the pages: ${problems.join("; ")}`);
  log("every request of the pages was answered as expected");
} catch (e) {
  failed = e;
  log(`FAILED: ${e.message}`);
  for (const name of Object.keys(pages)) await shot("failure", name).catch(() => {});
} finally {
  await browser.close().catch(() => {});
}
log(failed ? "FAIL" : "PASS");
process.exit(failed ? 1 : 0);

// harness.mjs - what the browser scripts (console_test.mjs, admin_test.mjs)
// share: talking to the Python test that runs them, and Chromium's launch.
//
// Talking to the test: a line "@@ {json}" on stdout asks it for an action;
// it answers with one JSON line on stdin ({"ok":true,...} or
// {"ok":false,"error":..}).  Every other line is a log.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";

export const log = (s) => console.log(`[browser] ${s}`);

const answers = [];
const waiters = [];
createInterface({ input: process.stdin }).on("line", (line) => {
  const w = waiters.shift();
  if (w) w(line); else answers.push(line);
});

function nextAnswer() {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no answer from the test")), 60000);
    const done = (line) => { clearTimeout(timer); resolve(line); };
    if (answers.length) done(answers.shift()); else waiters.push(done);
  });
}

// Asks the test for request ({"do": ...}); its answer, or an error.
export async function ask(request) {
  console.log("@@ " + JSON.stringify(request));
  const a = JSON.parse(await nextAnswer());
  if (!a.ok) throw new Error(`the test could not ${request.do}: ${a.error}`);
  return a;
}

// Headless Chromium with a fresh profile in a temporary folder of its own
// (launch() makes one); cfg.shots is made for the screenshots.
export async function launch(cfg, timeoutMs) {
  mkdirSync(cfg.shots, { recursive: true });
  return chromium.launch({
    executablePath: cfg.chromium || "/usr/bin/chromium",
    headless: true,
    timeout: timeoutMs,
    args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

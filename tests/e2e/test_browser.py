"""The agent console (gateway/www) in a real browser.

tests/browser/console_test.mjs drives Debian's Chromium (headless, through
playwright-core from npm) with two agent consoles: agent A on node 1 (node
list node1,node2) and agent B on node 2 (node list node2,node1: pushgate.js
connects to the first node of its list).  This test starts
the system against the `stack` fixture's MariaDB and Redis (proxy, two
gateways serving gateway/www, a consumer reading pushgate:worksheets) and
does for the script what a browser cannot: it publishes work orders with
XADD and kills node 1 (SIGKILL of its master; its workers die with it).

1. a work order for A published through Redis appears in A's page
2. a chat from A appears in B's page (across the proxy)
3. node 1 is killed, A's page reconnects to node 2 and shows a work order
   published meanwhile
4. no request of either page failed: every file the console asks for
   (the browser's own favicon request included) is there

Screenshots of both pages at each step are saved under the test's tmp dir
(the path is printed).  Needs /usr/bin/chromium, node and
tests/browser/node_modules (scripts/install-deps installs them); skipped
with the reason when one is missing."""
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid as uuidlib

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import HOST, free_port, start_server, wait_until  # noqa: E402
from test_consumer import Consumer  # noqa: E402
from ws_client import make_token  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
SCRIPT = os.path.join(BROWSER_DIR, "console_test.mjs")
WWW = os.path.join(ROOT, "gateway", "www")
CHROMIUM = "/usr/bin/chromium"
SECRET = "browser-e2e-secret-0123456789"
APP_TOKEN = "browser-e2e-app-token"
STREAM = "pushgate:worksheets"
WAIT_MS = 20000                      # every wait of the browser script
SCRIPT_TIMEOUT = 180                 # the whole script


def missing_tools():
    node = shutil.which("node")
    if not node:
        return "node is not installed (scripts/install-deps)"
    if not os.path.exists(CHROMIUM):
        return "%s is not installed (scripts/install-deps)" % CHROMIUM
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        return "tests/browser/node_modules is missing (scripts/install-deps runs npm ci)"
    return None


def order_json(uuid, infos):
    return json.dumps({"url": "/worksheet/send-message", "chat_token": APP_TOKEN,
                       "data": [{"uuid": uuid, "data": {"type": "new_worksheet_to_deal",
                                                        "infos": infos}}]},
                      ensure_ascii=False)


class System:
    """Proxy, gateways 1 and 2 (serving gateway/www) and a consumer."""

    def __init__(self, bin_dir, stack, tmp_path, gateway_settings=dict):
        """gateway_settings(): more settings of each gateway.  What was
        started is stopped when the start fails."""
        self.bin_dir, self.stack, self.tmp_path = bin_dir, stack, tmp_path
        self.gateway_settings = gateway_settings
        self.servers, self.consumer = [], None
        try:
            self.start_all()
        except BaseException:
            try:
                self.stop()
            except AssertionError as e:
                print("[test] stopping after a failed start: %s" % e, flush=True)
            raise

    def start_all(self):
        bin_dir, stack, tmp_path = self.bin_dir, self.stack, self.tmp_path
        self.proxy_port = free_port()
        self.proxy = self.start(start_server(
            bin_dir, "pushgate-proxy", tmp_path, host=HOST, port=self.proxy_port,
            worker_num=2, task_worker_num=1, reactor_num=1, nodes_refresh_ms=200))
        self.g1 = self.start_gateway()
        self.g2 = self.start_gateway()
        self.consumer = Consumer(bin_dir, tmp_path, stack, consumer="browser",
                                 nodes_refresh_ms=300, block_ms=500)
        self.consumer.wait_started()
        for g in (self.g1, self.g2):
            wait_until(lambda: "gateway %s joined" % g.node_id in self.consumer.log(), 10,
                       what="the consumer to find %s" % g.node_id)

    def start(self, server):
        self.servers.append(server)
        return server

    def start_gateway(self):
        g = self.start(start_server(
            self.bin_dir, "pushgate-gateway", self.tmp_path, host=HOST, internal_host=HOST,
            internal_port=free_port(), advertised_ip=HOST, worker_num=2, task_worker_num=1,
            reactor_num=1, jwt_secret=SECRET, node_heartbeat_interval=1, node_dead_after=3,
            proxy="%s:%d" % (HOST, self.proxy_port), chat_token=APP_TOKEN, static_dir=WWW,
            **self.gateway_settings()))
        g.node_id = "%s:%s" % (HOST, g.settings["internal_port"])
        wait_until(lambda: g.log().count("proxy: connected to proxy") >= 2, 10,
                   what="the workers of %s to connect to the proxy" % g.node_id)
        return g

    def kill_node1(self):
        g = self.g1
        g.snapshot()
        g.send_signal(signal.SIGKILL)
        g.killed(timeout=10)
        left = g.left_behind(timeout=10)
        assert not left, "processes of node 1 alive 10 s after SIGKILL of its master: %s" % left

    def stop(self):
        errors = []
        if self.consumer is not None:
            try:
                self.consumer.stop()
            except AssertionError as e:
                errors.append(str(e))
            finally:
                self.consumer.kill()
        for s in reversed(self.servers):
            try:
                if not s.stopped:
                    s.stop()
                s.check_clean()
            except AssertionError as e:
                errors.append(str(e))
                s.kill_all()
        assert not errors, "\n\n".join(errors)


def drive(proc, act):
    """Relays a browser script's output and answers its "@@" requests with
    act(request) (a dict, or an exception reported to the script); its output."""
    output = []
    deadline = time.monotonic() + SCRIPT_TIMEOUT
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "the browser script did not end within %d s:\n%s" % (
            SCRIPT_TIMEOUT, "".join(output))
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 1))
        if not ready:
            continue
        line = proc.stdout.readline()
        if not line:
            return "".join(output)
        output.append(line)
        print(line, end="", flush=True)
        if line.startswith("@@ "):
            try:
                answer = dict(act(json.loads(line[3:])), ok=True)
            except Exception as e:  # noqa: BLE001 - reported to the script, which fails
                answer = {"ok": False, "error": repr(e)}
            proc.stdin.write(json.dumps(answer) + "\n")
            proc.stdin.flush()


def run_script(script, cfg, act, t0):
    """Runs a browser script of tests/browser with cfg, answering with act;
    asserts that it passed (every step, exit code 0)."""
    proc = subprocess.Popen(["node", script, json.dumps(cfg)], cwd=BROWSER_DIR,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True)
    try:
        output = drive(proc, act)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    shots = cfg["shots"]
    print("[browser] script ended with %d after %.1f s; screenshots: %s (%d files)" % (
        code, time.monotonic() - t0, shots, len(os.listdir(shots))), flush=True)
    assert code == 0, "the browser script failed (screenshots in %s):\n%s" % (
        shots, output[-6000:])
    assert "[browser] PASS" in output


def prepare(stack, tmp_path, monkeypatch):
    """What a browser test needs first (skipped without the tools): the
    stack's settings in the environment, the app token, Redis, a run id
    for unique names, and the screenshots' folder."""
    why = missing_tools()
    if why:
        pytest.skip(why)
    for k, v in stack.env().items():
        monkeypatch.setenv(k, v)
    stack.add_app(APP_TOKEN)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print("\n[browser] screenshots: %s" % shots, flush=True)
    return stack.redis(), uuidlib.uuid4().hex[:8], shots


def test_agent_console_in_chromium(bin_dir, stack, tmp_path, monkeypatch):
    r, run, shots = prepare(stack, tmp_path, monkeypatch)
    uuid_a, uuid_b = "agent-a-" + run, "agent-b-" + run

    t0 = time.monotonic()
    system = System(bin_dir, stack, tmp_path)
    try:
        ws1, ws2 = ("ws://%s:%d/ws" % (HOST, g.port) for g in (system.g1, system.g2))

        def url(g, uuid, nodes):
            token = make_token({"sub": uuid, "exp": int(time.time()) + 3600}, SECRET)
            return "http://%s:%d/?token=%s&nodes=%s" % (HOST, g.port, token, ",".join(nodes))
        # pushgate.js connects to the first node of its list: B lists node 2 first
        cfg = dict(url_a=url(system.g1, uuid_a, [ws1, ws2]),
                   url_b=url(system.g2, uuid_b, [ws2, ws1]),
                   uuid_a=uuid_a, uuid_b=uuid_b, node1=system.g1.node_id,
                   node2=system.g2.node_id, shots=str(shots), timeout_ms=WAIT_MS,
                   chromium=CHROMIUM)
        def act(req):
            if req["do"] == "publish":
                entry = r.xadd(STREAM, {"msg": order_json(req["uuid"], req["infos"])})
                print("[test] published %s for %s" % (entry, req["uuid"]), flush=True)
            elif req["do"] == "kill_node1":
                system.kill_node1()
                print("[test] node 1 (%s) killed" % system.g1.node_id, flush=True)
            else:
                raise ValueError("unknown request %r" % req)
            return {}
        run_script(SCRIPT, cfg, act, t0)
    finally:
        try:
            system.stop()
        finally:
            r.delete(STREAM, STREAM + ":dead")

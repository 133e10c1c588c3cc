"""The cluster console (gateway/www/admin.html) in a real browser.

tests/browser/admin_test.mjs drives Debian's Chromium (headless, through
playwright-core) against the system test_browser.py starts (the `stack`
fixture's MariaDB and Redis, the proxy, two gateways serving gateway/www, a
consumer), here with admin_secret and an admin listener on the gateways, and
WebSocket browsers on both nodes that ACK what they get.  This test does for
the script what a browser cannot: publishing orders and a malformed entry.

1. admin.html?token=<admin_secret>: the token leaves the address bar; both
   nodes are up in #nodes with at least their browsers as connections; the
   consumer, the proxy and both nodes' health are shown
2. 200 orders over 4 s to the browsers: some rate of "in" or "pushed" goes
   above 0; once every browser has them, p50/p99 of intake_to_push and
   push_to_ack are shown
3. a malformed stream entry shows up in #dead-letters, reason "malformed..."
4. admin.html without a token asks for one (401); a browser JWT is refused
   (403); a JWT with the admin claim signs in
5. admin.html on the admin listener shows the cluster without a token
6. no request of any page failed but the 401/403 that step 4 expects

Screenshots of every step are saved under the test's tmp dir (the path is
printed).  Skipped exactly where test_browser.py is (no node, Chromium or
tests/browser/node_modules)."""
import asyncio
import json
import os
import sys
import threading
import time

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import HOST, free_port  # noqa: E402
from test_browser import (BROWSER_DIR, CHROMIUM, SECRET, STREAM, System,  # noqa: E402
                          order_json, prepare, run_script)
from ws_client import make_token  # noqa: E402

SCRIPT = os.path.join(BROWSER_DIR, "admin_test.mjs")
ADMIN_SECRET = "admin-console-e2e-secret-0123456789"
BROWSERS_PER_NODE = 3
ORDERS, PUBLISH_SECONDS = 200, 4.0
WAIT_MS = 20000                      # every wait of the browser script
DELIVERY_TIMEOUT = 30


class Browsers:
    """WebSocket browsers (agents) on the gateways, on an asyncio loop in a
    thread of their own: each ACKs every WorksheetMsg at once and records its id."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sockets = []
        self.received = {}               # uuid -> ids of the WorksheetMsg it got

    def call(self, coro, timeout=15):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def connect(self, port, uuid):
        self.call(self._connect(port, uuid))

    async def _connect(self, port, uuid):
        token = make_token({"sub": uuid, "exp": int(time.time()) + 3600}, SECRET)
        ws = await websockets.connect("ws://%s:%d/ws?token=%s" % (HOST, port, token), open_timeout=10,
                                      close_timeout=2, ping_interval=None, max_queue=None)
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert first.get("event") == "ONLINE", first
        self.sockets.append(ws)
        self.received[uuid] = set()
        self.loop.create_task(self._read(ws, uuid))

    async def _read(self, ws, uuid):
        try:
            async for raw in ws:
                m = json.loads(raw)
                if m.get("event") == "WorksheetMsg" and m.get("id"):
                    await ws.send(json.dumps({"event": "ACK", "data": {"id": m["id"]}}))
                    self.received[uuid].add(m["id"])
        except websockets.ConnectionClosed:
            pass

    async def _close(self):
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)

    def missing(self, sent):
        """The (uuid, entry id) of sent that did not arrive."""
        return self.call(self._missing(sent))

    async def _missing(self, sent):
        return [(u, i) for u, i in sent if i not in self.received[u]]

    def close(self):
        try:
            self.call(self._close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


class Actions:
    """What the browser script asks for (see admin_test.mjs)."""

    def __init__(self, redis, browsers, uuids, run):
        self.r, self.browsers, self.uuids, self.run = redis, browsers, uuids, run
        self.sent = []                    # (uuid, entry id)
        self.publisher = None

    def publish(self, req):
        """ORDERS orders, one every PUBLISH_SECONDS / ORDERS s, round robin over
        the browsers; answered at once, so the page is watched meanwhile."""
        def go():
            t0 = time.monotonic()
            for i in range(ORDERS):
                uuid = self.uuids[i % len(self.uuids)]
                entry = self.r.xadd(STREAM, {"msg": order_json(uuid, "admin order %d %s" % (i, self.run))})
                self.sent.append((uuid, entry))
                time.sleep(max(0.0, t0 + (i + 1) * PUBLISH_SECONDS / ORDERS - time.monotonic()))
        self.publisher = threading.Thread(target=go, daemon=True)
        self.publisher.start()
        print("[test] publishing %d orders over %.0f s" % (ORDERS, PUBLISH_SECONDS), flush=True)
        return {}

    def delivered(self, req):
        self.publisher.join(PUBLISH_SECONDS + 30)
        assert not self.publisher.is_alive(), "publishing did not end"
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while self.browsers.missing(self.sent):
            assert time.monotonic() < deadline, "orders not delivered in %d s: %s" % (
                DELIVERY_TIMEOUT, self.browsers.missing(self.sent)[:10])
            time.sleep(0.1)
        print("[test] all %d orders delivered and ACKed" % len(self.sent), flush=True)
        return {"received": len(self.sent)}

    def malformed(self, req):
        """An entry whose msg is not JSON; answers its id and its dead letter's."""
        entry = self.r.xadd(STREAM, {"msg": "this is not json " + self.run})
        deadline = time.monotonic() + 15
        while True:
            dead = [i for i, f in self.r.xrange(STREAM + ":dead") if f.get("source_id") == entry]
            if dead:
                break
            assert time.monotonic() < deadline, "no dead letter for %s in %s:dead" % (entry, STREAM)
            time.sleep(0.1)
        print("[test] malformed entry %s, dead letter %s" % (entry, dead[0]), flush=True)
        return {"ids": [entry, dead[0]]}


def act(actions, req):
    return {"publish": actions.publish, "delivered": actions.delivered,
            "malformed": actions.malformed}[req["do"]](req)


def test_cluster_console_in_chromium(bin_dir, stack, tmp_path, monkeypatch):
    r, run, shots = prepare(stack, tmp_path, monkeypatch)

    t0 = time.monotonic()
    system = System(bin_dir, stack, tmp_path, lambda: dict(admin_secret=ADMIN_SECRET,
                                                          admin_port=free_port()))
    browsers = Browsers()
    try:
        g1, g2 = system.g1, system.g2
        uuids = {g: ["admin-%s-%d-%s" % (n, i, run) for i in range(BROWSERS_PER_NODE)]
                 for g, n in ((g1, "a"), (g2, "b"))}
        for g in (g1, g2):
            for u in uuids[g]:
                browsers.connect(g.port, u)
        page = "http://%s:%d/admin.html" % (HOST, g1.port)
        exp = int(time.time()) + 3600
        cfg = dict(url_token=page + "?token=" + ADMIN_SECRET, url_plain=page,
                   url_admin="http://%s:%s/admin.html" % (HOST, g2.settings["admin_port"]),
                   node1=g1.node_id, node2=g2.node_id, conns1=BROWSERS_PER_NODE,
                   conns2=BROWSERS_PER_NODE, consumer="browser", proxy_port=system.proxy_port,
                   browser_token=make_token({"sub": "agent-" + run, "exp": exp}, SECRET),
                   admin_jwt=make_token({"sub": "operator-" + run, "admin": True, "exp": exp}, SECRET),
                   shots=str(shots), timeout_ms=WAIT_MS, chromium=CHROMIUM)
        actions = Actions(r, browsers, uuids[g1] + uuids[g2], run)
        run_script(SCRIPT, cfg, lambda req: act(actions, req), t0)
    finally:
        try:
            browsers.close()
        finally:
            try:
                system.stop()
            finally:
                r.delete(STREAM, STREAM + ":dead")

"""What the whole-system tests share (tests/e2e/test_stack.py, and the fault
harness in tests/faults/): WebSocket browsers in an asyncio loop on a thread
of their own (Tab, Fleet), work orders with a marker each (Orders), a
producer thread publishing them at a rate (Producer), what the browsers got
against what was published (Tally), Redis and MySQL probes, and a Cluster of
pushgate-proxy, gateways A and B and a pushgate-consumer against the
throw-away MariaDB + Redis of tests/fixture.py.

Every wait here is bounded, and only processes started here are stopped."""
import asyncio
import base64
import collections
import contextlib
import hashlib
import hmac
import json
import os
import random
import sys
import threading
import time
import uuid as uuidlib

import pytest
import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import HOST, Client, free_port, start_server, stop_all, wait_until  # noqa: E402,F401
from gateway_util import ADMIN_SECRET, db_rows, node_stats  # noqa: E402
from test_consumer import Consumer, pending as consumer_pending  # noqa: E402

SECRET = "stack-e2e-secret-0123456789"
APP_TOKEN = "stack-e2e-app-token"
STREAM = "pushgate:worksheets"      # the consumer's default: no stream setting
GROUP = "pushgate"
GATEWAY_WORKERS = 2
RUN = uuidlib.uuid4().hex[:8]       # in every uuid and marker of this process
# PG_TEST_GATEWAY_SET / PG_TEST_PROXY_SET="key=value,...": settings every
# gateway / the proxy of a Cluster gets on top of its own, to run the
# whole-system tests and the fault harness against a tuning
# (e.g. PG_TEST_PROXY_SET=workers_accept=true).
GATEWAY_SET = dict(kv.split("=", 1) for kv in
                   os.environ.get("PG_TEST_GATEWAY_SET", "").split(",") if "=" in kv)
PROXY_SET = dict(kv.split("=", 1) for kv in
                 os.environ.get("PG_TEST_PROXY_SET", "").split(",") if "=" in kv)
# The consumer sends round robin here (route_hints=0), so that about half of
# the orders cross the proxy, the path these tests and the fault harness
# are about; test_route_hints.py runs it with its hints, the default.
# PG_TEST_CONSUMER_SET="route_hints=65536" runs them all with hints.
CONSUMER_SET = dict(kv.split("=", 1) for kv in
                    os.environ.get("PG_TEST_CONSUMER_SET", "route_hints=0").split(",")
                    if "=" in kv)


def say(text):
    """Measurements: visible with -s (and in the report of a failure)."""
    print("\n[stack] " + text, flush=True)


# ---- browsers ----

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_for(uuid):
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps({"sub": uuid, "exp": int(time.time()) + 3600}).encode())
    sig = b64url(hmac.new(SECRET.encode(), ("%s.%s" % (header, body)).encode(),
                          hashlib.sha256).digest())
    return "%s.%s.%s" % (header, body, sig)


class Tab:
    """One browser tab of one agent: connects with ?token=, reads ONLINE,
    then ACKs every WorksheetMsg.  Closed by the server with 1001 (the node
    is stopping) or dropped without a close frame (1006) it reconnects to
    `fallback` when one is set, as pushgate.js would; any other close is
    recorded and ends it.  Lives in the fleet's loop; the test
    thread only reads its lists (copies).

    A subclass changes what a message does (_on_message) and what a close
    does (_reconnect: True when connected again)."""

    def __init__(self, fleet, uuid, port, fallback=None, ack_delay=0):
        self.fleet = fleet
        self.uuid = uuid
        self.port = port
        self.fallback = fallback
        self.ack_delay = ack_delay   # seconds before each ACK (a slow browser)
        self.got = []          # (marker, id) of every WorksheetMsg, in arrival order
        # (marker, id, time.monotonic(), connection number) of every
        # WorksheetMsg; connection n is the one of onlines[n]
        self.receipts = []
        self.online_times = []  # time.monotonic() of each registration (as onlines)
        self.onlines = []      # (port, ONLINE data) of every registration
        self.closes = []       # (port, close code) of every close by the server
        self.errors = []       # failed reconnect attempts
        self.ws = None
        self.task = None
        self.stopping = False
        self.connected = False

    host = HOST
    connect_options = dict(open_timeout=10, close_timeout=2, ping_interval=None, max_queue=None,
                           max_size=None)
    # What the node pushes while the registration is answered may come
    # before ONLINE (pushgate.js allows it, for a browser with orders
    # stored): True takes it, False holds ONLINE must come first.
    pushes_before_online = False

    def _where(self):
        """Where the tab is connected, as onlines records it."""
        return self.port

    async def _connect(self):
        url = "ws://%s:%d/ws?token=%s" % (self.host, self.port, token_for(self.uuid))
        ws = await websockets.connect(url, **self.connect_options)
        self.ws = ws
        try:
            deadline = time.monotonic() + 10
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
                if m.get("event") == "ONLINE" and m["data"].get("uuid") == self.uuid:
                    break
                if not self.pushes_before_online:
                    raise AssertionError("%s: first event on %d is not ONLINE: %s" % (
                        self.uuid, self.port, m))
                await self._on_message(ws, m)
        except BaseException:
            await ws.close()
            raise
        self.onlines.append((self._where(), m["data"]))
        self.online_times.append(time.monotonic())
        self.connected = True

    async def open(self):
        self.stopping = False
        await self._connect()
        self.task = asyncio.ensure_future(self._read())
        return self

    async def _read(self):
        while True:
            ws = self.ws
            try:
                async for raw in ws:
                    await self._on_message(ws, json.loads(raw))
            except websockets.ConnectionClosed:
                pass
            self.connected = False
            if self.stopping:
                return
            self.closes.append((self.port, ws.close_code))
            if not await self._reconnect(ws.close_code):
                return

    async def _on_message(self, ws, m):
        """Records a WorksheetMsg and ACKs it (after ack_delay)."""
        if m.get("event") == "WorksheetMsg":
            self.got.append((m["response"].get("marker"), m["id"]))
            self.receipts.append((m["response"].get("marker"), m["id"], time.monotonic(),
                                  len(self.onlines) - 1))
            if self.ack_delay:
                asyncio.get_running_loop().call_later(
                    self.ack_delay,
                    lambda ws=ws, i=m["id"]: asyncio.ensure_future(self._ack(ws, i)))
            else:
                await self._ack(ws, m["id"])

    async def _reconnect(self, code):
        """After a close by the server: 1001 or 1006 moves to `fallback`."""
        if code not in (1001, 1006) or not self.fallback:
            return False
        self.port = self.fallback
        for attempt in range(40):           # bounded: about 20 s
            try:
                await self._connect()
                return True
            except Exception as e:  # noqa: BLE001 - recorded, retried
                self.errors.append(repr(e))
                await asyncio.sleep(0.1 + 0.02 * attempt)
        return False

    @staticmethod
    async def _ack(ws, msg_id):
        try:
            await ws.send(json.dumps({"event": "ACK", "data": {"id": msg_id}}))
        except websockets.ConnectionClosed:
            pass    # not acknowledged: the node stores it again

    async def close(self):
        self.stopping = True
        if self.ws is not None:
            await self.ws.close()
        if self.task is not None:
            try:
                await asyncio.wait_for(self.task, 10)
            except asyncio.TimeoutError:
                self.task.cancel()
        self.connected = False

    async def reopen(self, port):
        await self.close()
        self.port = port
        return await self.open()


class Fleet:
    """An asyncio loop on its own thread holding the tabs."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fleet", daemon=True)
        self.thread.start()
        self.tabs = []

    def call(self, coro, timeout=120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def open(self, users, port, fallback=None, ack_delay=0, parallel=50, cls=None, **kw):
        """A tab for each uuid on port, connected and registered (cls: a
        subclass of Tab, given **kw)."""
        tabs = [(cls or Tab)(self, u, port, fallback, ack_delay, **kw) for u in users]

        async def go():
            sem = asyncio.Semaphore(parallel)

            async def one(t):
                async with sem:
                    await t.open()
            await asyncio.gather(*(one(t) for t in tabs))
        self.call(go())
        self.tabs += tabs
        return tabs

    def reopen(self, tabs, port, parallel=50):
        """Closes each tab and connects it again, on port (None: the port
        it is on)."""
        async def go():
            sem = asyncio.Semaphore(parallel)

            async def one(t):
                async with sem:
                    await t.reopen(t.port if port is None else port)
            await asyncio.gather(*(one(t) for t in tabs))
        self.call(go())

    def close_tabs(self, tabs):
        async def go():
            await asyncio.gather(*(t.close() for t in tabs), return_exceptions=True)
        self.call(go())

    def stop(self):
        try:
            self.close_tabs(self.tabs)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


# ---- work orders ----

def users(tag, n):
    return ["%s-%s-%04d" % (tag, RUN, i) for i in range(n)]


def order_json(uuid, marker):
    """The seed producer's format (message format 1), with a marker to count by."""
    return json.dumps({"url": "/worksheet/send-message", "chat_token": APP_TOKEN,
                       "data": [{"uuid": uuid, "data": {"type": "new_worksheet_to_deal",
                                                        "infos": "你有一条新工单待处理",
                                                        "marker": marker}}]})


class Orders:
    """Work orders of one run: marker -> uuid, marker -> stream entry id,
    marker -> time.monotonic() when Redis confirmed the XADD."""

    def __init__(self, tag):
        self.tag = tag
        self.n = 0
        self.uuid_of = {}
        self.id_of = {}
        self.t_pub = {}
        self.lock = threading.Lock()

    def make(self, targets):
        out = []
        for u in targets:
            marker = "%s-%s-%d" % (self.tag, RUN, self.n)
            self.n += 1
            self.uuid_of[marker] = u
            out.append((marker, u))
        return out

    def publish(self, r, targets, chunk=1000):
        """Pipelined XADDs of one order for each uuid in targets."""
        made = self.make(targets)
        for i in range(0, len(made), chunk):
            part = made[i:i + chunk]
            pipe = r.pipeline(transaction=False)
            for marker, u in part:
                pipe.xadd(STREAM, {"msg": order_json(u, marker)})
            ids = pipe.execute()
            now = time.monotonic()
            with self.lock:
                for (marker, _), entry_id in zip(part, ids):
                    self.id_of[marker] = entry_id
                    self.t_pub[marker] = now
        return [m for m, _ in made]


class Producer(threading.Thread):
    """Publishes orders for random users in chunks at about `rate` per
    second, so that a run is still going when the test disturbs it."""

    def __init__(self, r, orders, targets, total, rate, chunk=100, seed=1):
        super().__init__(name="producer", daemon=True)
        self.rnd = random.Random(seed)
        self.r, self.orders, self.targets = r, orders, targets
        self.total, self.rate, self.chunk = total, rate, chunk
        self.published = 0
        self.error = None
        self.t0 = None          # time.monotonic() of the start and of the last XADD
        self.t_end = None

    def run(self):
        t0 = self.t0 = time.monotonic()
        try:
            while self.published < self.total:
                n = min(self.chunk, self.total - self.published)
                self.orders.publish(self.r, [self.rnd.choice(self.targets) for _ in range(n)])
                self.published += n
                pause = t0 + self.published / self.rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
        except Exception as e:  # noqa: BLE001 - reported by finish()
            self.error = e
        self.t_end = time.monotonic()

    def finish(self, timeout=60):
        self.join(timeout)
        assert not self.is_alive(), "the producer did not finish"
        assert self.error is None, "the producer failed: %r" % self.error


class Tally:
    """What the tabs got, against what was published."""

    def __init__(self, orders, tabs):
        self.orders = orders
        self.tabs = tabs
        self.duplicated = set()

    def snapshot(self):
        return [(t.uuid, list(t.got)) for t in self.tabs]

    def delivered(self):
        """Markers of this run that reached (some tab of) their user."""
        have = set()
        for uuid, got in self.snapshot():
            for marker, _ in got:
                if self.orders.uuid_of.get(marker) == uuid:
                    have.add(marker)
        return have

    def count(self):
        return len(self.delivered())

    def check(self, per_tab=False):
        """Asserts every order reached its user (with per_tab: every tab of
        its user), each with its stream entry id and nobody else's; returns
        (receipts, duplicates); the markers received more than once by one
        tab are left in self.duplicated."""
        snap = self.snapshot()
        uuids = {u for u, _ in snap}
        wrong, bad_id, receipts, dups = [], [], 0, 0
        seen_by_user = collections.defaultdict(set)
        for uuid, got in snap:
            markers = collections.Counter(m for m, _ in got if m in self.orders.uuid_of)
            receipts += sum(markers.values())
            dups += sum(c - 1 for c in markers.values())
            self.duplicated.update(m for m, c in markers.items() if c > 1)
            for marker, msg_id in got:
                if marker not in self.orders.uuid_of:
                    continue          # another run's: not ours to count
                if self.orders.uuid_of[marker] != uuid:
                    wrong.append((uuid, marker))
                elif msg_id != self.orders.id_of.get(marker):
                    bad_id.append((marker, msg_id, self.orders.id_of.get(marker)))
                seen_by_user[uuid].add(marker)
            if per_tab:
                mine = {m for m, u in self.orders.uuid_of.items() if u == uuid}
                missing = mine - set(markers)
                assert not missing, "tab of %s missed %d: %s" % (uuid, len(missing),
                                                               sorted(missing)[:5])
        assert not wrong, "work orders at the wrong user: %s" % wrong[:5]
        assert not bad_id, "id is not the stream entry id: %s" % bad_id[:5]
        lost = [m for m, u in self.orders.uuid_of.items()
                if u in uuids and m not in seen_by_user[u]]
        assert not lost, "%d of %d work orders lost, e.g. %s" % (
            len(lost), len(self.orders.uuid_of), [(m, self.orders.uuid_of[m],
                                                    self.orders.id_of.get(m)) for m in lost[:5]])
        return receipts, dups


# ---- Redis and MySQL ----

def pending(r):
    return consumer_pending(r, STREAM, GROUP)


def dead_letters(r):
    return r.xrange(STREAM + ":dead")



def stored_for(stack, prefix):
    """offline_messages rows of this module's users whose uuid starts with prefix."""
    return db_rows(stack, "SELECT uuid, msg_id FROM offline_messages WHERE uuid LIKE %s",
                   (prefix + "%",))[:]


def wait_drained(stack, r, prefix, timeout=30):
    """Every entry XACKed, no dead letter, nothing of prefix's users stored."""
    wait_until(lambda: pending(r) == 0, timeout, what="XPENDING to be empty")
    assert dead_letters(r) == [], dead_letters(r)[:3]
    wait_until(lambda: not stored_for(stack, prefix), timeout,
               what="offline_messages of %s* to be empty (left: %s)" % (
                   prefix, stored_for(stack, prefix)[:5]))


def internal_order(port, msg_id, uuid, marker):
    with Client(port, ("length",), timeout=10) as cl:
        req = json.loads(order_json(uuid, marker))
        req["msg_id"] = msg_id
        return json.loads(cl.call(json.dumps(req).encode()))


async def chatter(ws, every=0.01):
    """Keeps sending HEART_BEAT (as a browser ACKing a stream of pushes would)."""
    try:
        while True:
            await ws.send(json.dumps({"event": "HEART_BEAT"}))
            await asyncio.sleep(every)
    except websockets.ConnectionClosed:
        pass


def gateway_stat(g, key):
    return node_stats(g.port)["messages"][key]


# ---- the cluster ----

def proxy_stats(port):
    with Client(port, ("length",), timeout=5) as c:
        r = json.loads(c.call(json.dumps({"url": "/stats"}).encode()))
    assert r["code"] == 0, r
    return r


@contextlib.contextmanager
def running_cluster(bin_dir, stack, tmp_path, stream=STREAM, cls=None, **settings):
    """A Cluster (or cls) for a with block, a module fixture's yield: the
    stack's settings in the environment, the app token in MySQL, the stream
    and its dead letters emptied before (what earlier tests left is not
    ours) and after (no entries or group left behind)."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in stack.env().items():
            mp.setenv(k, v)
        stack.add_app(APP_TOKEN)
        r = stack.redis()
        r.delete(stream, stream + ":dead")
        c = (cls or Cluster)(bin_dir, stack, tmp_path, **settings)
        try:
            yield c
        finally:
            try:
                c.stop()
            finally:
                r.delete(stream, stream + ":dead")


class Cluster:
    """Proxy, gateways A and B and a consumer, all with the stack's
    environment (PUSHGATE_MYSQL_*, PUSHGATE_REDIS_*).  gateway_settings and
    consumer_settings are added to (or override) every gateway's and
    consumer's settings."""

    def __init__(self, bin_dir, stack, tmp_path, gateway_settings=None, consumer_settings=None):
        self.bin_dir, self.stack, self.tmp_path = bin_dir, stack, tmp_path
        self.gateway_settings = dict(gateway_settings or {})
        self.consumer_settings = dict(consumer_settings or {})
        self.servers = []
        self.consumers = []
        self.proxy_port = free_port()
        try:
            self.proxy = self.start_proxy()
            self.a = self.start_gateway()
            self.b = self.start_gateway()
            self.consumer = self.start_consumer("c1")
        except BaseException:
            # a part that did not start: what did start is not left running
            for c in self.consumers:
                c.kill()
            for srv in self.servers:
                if not srv.stopped:
                    srv.snapshot()
                srv.kill_all()
            raise

    # -- parts

    def start_proxy(self):
        p = start_server(self.bin_dir, "pushgate-proxy", self.tmp_path, host=HOST,
                         port=self.proxy_port, worker_num=2, task_worker_num=1, reactor_num=1,
                         nodes_refresh_ms=200, stats_interval=5, **PROXY_SET)
        self.servers.append(p)
        return p

    def start_gateway(self, **overrides):
        """A gateway on free ports (overrides: e.g. the port and internal_port
        of a node that died, to start it again at the same address)."""
        settings = dict(host=HOST, internal_host=HOST, internal_port=free_port(),
                        advertised_ip=HOST, worker_num=GATEWAY_WORKERS, task_worker_num=2,
                        reactor_num=2, jwt_secret=SECRET, admin_secret=ADMIN_SECRET,
                        ack_timeout=10,
                        node_heartbeat_interval=1, node_dead_after=10,
                        proxy="%s:%d" % (HOST, self.proxy_port), chat_token=APP_TOKEN)
        settings.update(GATEWAY_SET)
        settings.update(self.gateway_settings)
        settings.update(overrides)
        g = start_server(self.bin_dir, "pushgate-gateway", self.tmp_path, **settings)
        g.internal_port = int(g.settings["internal_port"])
        g.node_id = "%s:%d" % (HOST, g.internal_port)
        self.servers.append(g)
        wait_until(lambda: proxy_stats(self.proxy_port)["nodes"].get(g.node_id) == "up", 10,
                   what="the proxy to learn node %s" % g.node_id)
        wait_until(lambda: self.proxy_links(g) >= GATEWAY_WORKERS, 10,
                   what="the workers of %s to connect to the proxy" % g.node_id)
        return g

    def start_consumer(self, name, **settings):
        s = dict(consumer=name, nodes_refresh_ms=300, block_ms=500)
        s.update(CONSUMER_SET)
        s.update(self.consumer_settings)
        s.update(settings)
        c = Consumer(self.bin_dir, self.tmp_path, self.stack, **s)
        c.name = name
        self.consumers.append(c)
        c.wait_started()
        for g in self.gateways():
            wait_until(lambda: "gateway %s joined" % g.node_id in c.log(), 10,
                       what="the consumer to find %s" % g.node_id)
        return c

    def gateways(self):
        return [g for g in (self.a, self.b) if not g.stopped]

    @staticmethod
    def proxy_links(g):
        return g.log().count("proxy: connected to proxy")

    def crossed(self):
        """Pushes the proxy got delivered by the target node."""
        return proxy_stats(self.proxy_port)["stats"]["delivered"]

    def heal(self):
        """What an earlier test stopped is running again."""
        if self.proxy.stopped:
            self.proxy = self.start_proxy()
        if self.b.stopped:
            self.b = self.start_gateway()
        if self.consumer.proc.poll() is not None:
            self.consumer = self.start_consumer("c%d" % (len(self.consumers) + 1))

    def stop(self):
        errors = []
        for c in reversed(self.consumers):
            try:
                if c.proc.poll() is None or c.proc.returncode == 0:
                    c.stop()
            except Exception as e:  # noqa: BLE001 - e.g. no exit in time: the servers still stop
                errors.append("%s: %s" % (type(e).__name__, e))
            finally:
                c.kill()
        stop_all(self.servers, errors)

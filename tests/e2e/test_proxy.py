"""pushgate-proxy end to end: two real gateways (A and B) and the proxy on
loopback, against the throw-away MariaDB of the `stack` fixture.

A work order or a chat message reaching gateway A for a browser on gateway
B goes A -> proxy -> B's internal port; what cannot be delivered (stale
client_id, unknown or dead node, proxy down, silent node) comes back as an
error, and A stores it offline, so nothing is lost.  Every wait is bounded,
and every process started here is stopped and checked for sanitizer
reports (engine_util.Server.check_clean)."""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid as uuidlib

import pytest
import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import ADMIN_SECRET, HOST, Client, free_port, start_server, stop_all, wait_until  # noqa: E402
from gateway_util import node_stats  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SECRET = "proxy-e2e-secret-0123456789"
APP_TOKEN = "proxy-e2e-app-token"
IO_TIMEOUT = 5.0
GATEWAY_WORKERS = 2
PROXY_WORKERS = 2


def uid(tag="u"):
    return "%s-%s" % (tag, uuidlib.uuid4().hex[:16])


# ---- browser side ----

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_for(uuid):
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps({"sub": uuid, "exp": int(time.time()) + 3600}).encode())
    signing = ("%s.%s" % (header, body)).encode()
    sig = b64url(hmac.new(SECRET.encode(), signing, hashlib.sha256).digest())
    return "%s.%s.%s" % (header, body, sig)


def client_id_of(ip, port, session):
    return base64.b64encode(("%s_%d_%d" % (ip, port, session)).encode()).decode()


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def recv_json(ws, timeout=IO_TIMEOUT):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def send_json(ws, obj):
    await ws.send(json.dumps(obj))


async def online(gateway, uuid):
    """A browser of uuid on gateway, registered (ONLINE received); returns
    (ws, ONLINE data)."""
    url = "ws://%s:%d/ws?token=%s" % (HOST, gateway.port, token_for(uuid))
    ws = await websockets.connect(url, open_timeout=IO_TIMEOUT, close_timeout=2,
                                  ping_interval=None)
    ev = await recv_json(ws)
    assert ev["event"] == "ONLINE" and ev["data"]["uuid"] == uuid, ev
    return ws, ev["data"]


async def ack(ws, msg_id):
    await send_json(ws, {"event": "ACK", "data": {"id": msg_id}})


async def quiet(ws, seconds):
    try:
        msg = await asyncio.wait_for(ws.recv(), seconds)
    except asyncio.TimeoutError:
        return
    raise AssertionError("unexpected message: %s" % msg)


# ---- internal ports (gateways and proxy) ----

class Framed:
    """A length-prefixed JSON client: one reply frame per request."""

    def __init__(self, port, timeout=10.0):
        self.c = Client(port, ("length",), timeout=timeout)

    def send(self, obj):
        self.c.send(obj if isinstance(obj, bytes) else json.dumps(obj).encode())

    def recv(self, timeout=None):
        return json.loads(self.c.recv(timeout))

    def call(self, obj, timeout=None):
        self.send(obj)
        return self.recv(timeout)

    def close(self):
        self.c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def work_order(msg_id, uuid, data):
    return {"url": "/worksheet/send-message", "chat_token": APP_TOKEN, "msg_id": msg_id,
            "data": [{"uuid": uuid, "data": data}]}


async def order(gateway, msg_id, uuid, data):
    """Sends a work order to gateway's internal port; its reply."""
    def call():
        with Framed(gateway.internal_port) as c:
            return c.call(work_order(msg_id, uuid, data))
    return await asyncio.to_thread(call)


def push_request(target_port, client_id, uuid, msg_id, req_id, ip=HOST):
    """What a gateway sends the proxy (DESIGN.md format 4, plus uuid and req_id)."""
    return {"url": "/chat/push-local", "chat_token": APP_TOKEN,
            "proxy_info": {"ip": ip, "port": target_port}, "client_id": client_id,
            "uuid": uuid, "msg_id": msg_id, "req_id": req_id,
            "remote_data": {"event": "WorksheetMsg", "response": {"n": msg_id}, "id": msg_id}}


# ---- MySQL ----

def db_exec(stack, sql, args=()):
    conn = stack.mysql()
    try:
        with conn.cursor() as c:
            return c.execute(sql, args)
    finally:
        conn.close()


def db_rows(stack, sql, args=()):
    conn = stack.mysql()
    try:
        with conn.cursor() as c:
            c.execute(sql, args)
            return c.fetchall()
    finally:
        conn.close()


def offline_ids(stack, uuid):
    return [r[0] for r in db_rows(stack, "SELECT msg_id FROM offline_messages WHERE uuid = %s "
                                         "ORDER BY id", (uuid,))]


def add_online_row(stack, client_id, uuid, node_port, session):
    db_exec(stack, "REPLACE INTO online_clients (client_id, uuid, node_ip, node_port, session_id) "
                   "VALUES (%s,%s,%s,%s,%s)", (client_id, uuid, HOST, node_port, session))


def add_node_row(stack, port, state="up"):
    db_exec(stack, "REPLACE INTO gateway_nodes (node_id, ip, ws_port, internal_port, "
                   "boot_generation, state) VALUES (%s,%s,0,%s,1,%s)",
            ("%s:%d" % (HOST, port), HOST, port, state))


def remove_node_row(stack, port):
    db_exec(stack, "DELETE FROM gateway_nodes WHERE node_id = %s", ("%s:%d" % (HOST, port),))


# ---- the cluster ----

def proxy_stats(proxy):
    with Framed(proxy.port) as c:
        r = c.call({"url": "/stats"})
    assert r["code"] == 0, r
    return r


def proxy_knows(proxy, port, state="up"):
    return proxy_stats(proxy)["nodes"].get("%s:%d" % (HOST, port)) == state


class Cluster:
    """The proxy and gateways A and B, started with the stack's MySQL
    settings in the environment (PUSHGATE_MYSQL_*)."""

    def __init__(self, bin_dir, stack, tmp_path, gateway_settings=None, **proxy_settings):
        self.bin_dir, self.stack, self.tmp_path = bin_dir, stack, tmp_path
        self.gateway_settings = gateway_settings or {}
        self.proxy_settings = dict(host=HOST, port=free_port(), worker_num=PROXY_WORKERS,
                                   task_worker_num=1, reactor_num=1, nodes_refresh_ms=200,
                                   stats_interval=1, package_max_length="64K")
        self.proxy_settings.update(proxy_settings)
        self.servers = []
        try:
            self._start()
        except BaseException:
            self.stop()   # what started does not outlive a failed start
            raise

    def _start(self):
        self.proxy = self.start_proxy()
        self.a = self.start_gateway()
        self.b = self.start_gateway()
        for g in (self.a, self.b):
            wait_until(lambda: proxy_knows(self.proxy, g.internal_port), 10,
                       what="the proxy to learn node %d" % g.internal_port)
        time.sleep(0.5)   # every proxy worker has refreshed its list by now
        for g in (self.a, self.b):
            wait_until(lambda: self.proxy_links(g) >= GATEWAY_WORKERS, 10,
                       what="the gateway's workers to connect to the proxy")

    def start_proxy(self):
        p = start_server(self.bin_dir, "pushgate-proxy", self.tmp_path, **self.proxy_settings)
        self.servers.append(p)
        return p

    def start_gateway(self):
        settings = dict(host=HOST, internal_host=HOST, internal_port=free_port(),
                        advertised_ip=HOST, worker_num=GATEWAY_WORKERS, task_worker_num=2,
                        reactor_num=1, jwt_secret=SECRET, admin_secret=ADMIN_SECRET, node_heartbeat_interval=1,
                        node_dead_after=30, package_max_length="64K", chat_token=APP_TOKEN,
                        proxy="%s:%d" % (HOST, self.proxy_settings["port"]))
        settings.update(self.gateway_settings)
        g = start_server(self.bin_dir, "pushgate-gateway", self.tmp_path, **settings)
        g.internal_port = int(g.settings["internal_port"])
        self.servers.append(g)
        return g

    @staticmethod
    def proxy_links(gateway):
        return gateway.log().count("proxy: connected to proxy")

    def stop(self):
        stop_all(self.servers)


@pytest.fixture(scope="module")
def mysql_env(stack):
    with pytest.MonkeyPatch.context() as mp:
        for k, v in stack.env().items():
            mp.setenv(k, v)
        stack.add_app(APP_TOKEN)
        yield stack


# Every test of the shared cluster runs twice: with the gateways' links held
# by the proxy's reactor thread, and held by its workers (workers_accept).
@pytest.fixture(scope="module", params=["reactor-links", "worker-links"])
def cluster(bin_dir, mysql_env, tmp_path_factory, request):
    c = Cluster(bin_dir, mysql_env, tmp_path_factory.mktemp("proxy"),
                workers_accept=str(request.param == "worker-links").lower())
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def own_cluster(bin_dir, mysql_env, tmp_path):
    """A cluster of the test's own (it stops or kills parts of it)."""
    made = []

    def make(**proxy_settings):
        made.append(Cluster(bin_dir, mysql_env, tmp_path, **proxy_settings))
        return made[-1]
    yield make
    for c in made:
        c.stop()


# ---- 1. work orders ----

def test_work_order_reaches_user_on_other_node(cluster, stack):
    a, b = cluster.a, cluster.b
    u = uid("w")
    data = {"type": "new_worksheet_to_deal", "infos": "你有一条新工单待处理"}

    async def go():
        ws_b, _ = await online(b, u)
        r = await order(a, "w1-" + u, u, data)
        assert (r["code"], r["msg_id"], r["delivered"], r["forwarded"], r["stored"]) == \
            (0, "w1-" + u, 0, 1, 0), r
        assert await recv_json(ws_b) == {"event": "WorksheetMsg", "response": data,
                                         "id": "w1-" + u}
        await ack(ws_b, "w1-" + u)

        ws_a, _ = await online(a, u)      # a second tab, on A
        r = await order(a, "w2-" + u, u, data)
        assert (r["code"], r["delivered"], r["forwarded"], r["stored"]) == (0, 1, 1, 0), r
        for ws in (ws_a, ws_b):
            ev = await recv_json(ws)
            assert ev == {"event": "WorksheetMsg", "response": data, "id": "w2-" + u}, ev
            await ack(ws, "w2-" + u)
            await quiet(ws, 0.3)
            await ws.close()
    run(go())
    assert offline_ids(stack, u) == []
    st = proxy_stats(cluster.proxy)["stats"]
    assert st["forwarded"] >= 2 and st["delivered"] >= 2, st


# ---- 2. chat ----

# Gateway B refuses a relayed chat message: gateway/internal.c push_local()
# wants remote_data.id, and a chat event carries its id in remote_data.data.id
# (NEW_MSG {"event":"NEW_MSG","data":{"from","msg","id"}}).  See the report
# of the proxy work; remove this mark once the gateway takes that id.
def test_chat_message_to_user_on_other_node(cluster):
    x, y = uid("x"), uid("y")

    async def go():
        ws_x, _ = await online(cluster.a, x)
        ws_y, _ = await online(cluster.b, y)
        await send_json(ws_x, {"event": "NEW_MSG", "data": {"to": y, "msg": "hello over the proxy"}})
        ev = await recv_json(ws_y)
        assert ev["event"] == "NEW_MSG", ev
        assert (ev["data"]["from"], ev["data"]["msg"]) == (x, "hello over the proxy"), ev
        status = await recv_json(ws_x)
        assert status["event"] == "NEW_MSG_STATUS", status
        assert (status["data"]["status"], status["data"]["id"], status["data"]["to"]) == \
            ("forwarded", ev["data"]["id"], y), status
        await ack(ws_y, ev["data"]["id"])
        await quiet(ws_y, 0.3)
        await ws_x.close()
        await ws_y.close()
    run(go())


# ---- 3. stale client_id ----

def test_stale_client_id_is_gone_and_stored(cluster, stack):
    a, b = cluster.a, cluster.b
    u = uid("s")
    data = {"type": "t", "infos": "while you were away"}

    async def go():
        ws, info = await online(b, u)
        await ws.close()
        wait_until(lambda: not db_rows(stack, "SELECT 1 FROM online_clients WHERE uuid = %s",
                                       (u,)), 5, what="the closed session's row to go")
        # the row of a session that closed, as a lost DELETE would leave it
        ip, port, session = base64.b64decode(info["client_id"]).decode().rsplit("_", 2)
        add_online_row(stack, info["client_id"], u, int(port), int(session))
        gone_before = proxy_stats(cluster.proxy)["stats"]["gone"]
        r = await order(a, "s1-" + u, u, data)
        assert (r["code"], r["delivered"], r["forwarded"], r["stored"]) == (0, 0, 0, 1), r
        assert offline_ids(stack, u) == ["s1-" + u]
        assert proxy_stats(cluster.proxy)["stats"]["gone"] >= gone_before + 1
        db_exec(stack, "DELETE FROM online_clients WHERE uuid = %s", (u,))

        ws, info = await online(b, u)     # next connect: the message is there
        assert info["offline"] == 1, info
        assert await recv_json(ws) == {"event": "WorksheetMsg", "response": data, "id": "s1-" + u}
        await ack(ws, "s1-" + u)
        await ws.close()
    run(go())
    wait_until(lambda: offline_ids(stack, u) == [], 5, what="the ACK to remove the stored message")


# ---- 4. proxy down, then back ----

def test_proxy_down_stores_and_restart_resumes(own_cluster, stack):
    c = own_cluster()
    a, b = c.a, c.b
    u = uid("p")
    data = {"type": "t", "infos": "proxy"}

    async def go():
        ws, _ = await online(b, u)
        c.proxy.stop()
        c.proxy.check_clean()
        wait_until(lambda: a.log().count("proxy: connection closed") >= GATEWAY_WORKERS, 10,
                   what="A to notice the proxy is gone")
        for i in range(3):
            r = await order(a, "down%d-%s" % (i, u), u, data)
            assert (r["code"], r["forwarded"], r["stored"]) == (0, 0, 1), r
        # stored; B hears of it (redeliveries) and sends it to the open tab
        got = sorted([(await recv_json(ws, timeout=10))["id"] for _ in range(3)])
        assert got == ["down%d-%s" % (i, u) for i in range(3)]
        for m in got:
            await ack(ws, m)
        await quiet(ws, 0.3)

        links_before = c.proxy_links(a)
        c.proxy = c.start_proxy()            # same port
        wait_until(lambda: c.proxy_links(a) >= links_before + GATEWAY_WORKERS, 20,
                   what="A's proxy links to reconnect (backoff)")
        r = await order(a, "up-" + u, u, data)
        assert (r["code"], r["forwarded"], r["stored"]) == (0, 1, 0), r
        assert await recv_json(ws) == {"event": "WorksheetMsg", "response": data, "id": "up-" + u}
        await ack(ws, "up-" + u)
        await quiet(ws, 0.3)
        await ws.close()

        # the stored copies went with the ACKs
        wait_until(lambda: offline_ids(stack, u) == [], 10, what="the stored copies deleted")
    run(go())


def test_proxy_worker_killed_with_worker_links_loses_nothing(own_cluster, stack):
    """With workers_accept, a proxy worker holds gateways' links itself: kill
    -9 of it closes them, the gateways link again, and every order that was
    on the way is delivered or stored (then sent by its node), none lost."""
    c = own_cluster(workers_accept="true")
    a, b = c.a, c.b
    users = [uid("k%d" % i) for i in range(8)]
    data = {"type": "t", "infos": "worker links"}

    async def go():
        tabs = [(await online(b, u))[0] for u in users]
        got = {u: set() for u in users}

        async def drain(ws, u, seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    ev = await recv_json(ws, timeout=max(0.05, end - time.monotonic()))
                except (asyncio.TimeoutError, TimeoutError):
                    return
                got[u].add(ev["id"])
                await ack(ws, ev["id"])

        links = c.proxy_links(a)
        victim = c.proxy.worker_pids()["worker 0"]
        sent = []
        for n in range(60):
            u = users[n % len(users)]
            msg_id = "k%d-%s" % (n, u)
            r = await order(a, msg_id, u, data)
            assert r["code"] == 0 and r["forwarded"] + r["stored"] == 1, r
            sent.append((u, msg_id))
            if n == 20:
                os.kill(victim, signal.SIGKILL)
            await asyncio.sleep(0.02)
        wait_until(lambda: c.proxy_links(a) > links or
                   all(pid != victim for pid in c.proxy.worker_pids().values()), 20,
                   what="the proxy's worker 0 to be respawned")
        await asyncio.gather(*(drain(ws, u, 12) for ws, u in zip(tabs, users)))
        missing = [m for u, m in sent if m not in got[u]]
        assert not missing, "%d of %d orders never arrived: %s" % (len(missing), len(sent),
                                                                  missing[:5])
        for ws in tabs:
            await ws.close()
    run(go())
    assert "died: signal 9" in c.proxy.log()


# ---- 5. unreachable targets ----

def test_unregistered_node_is_unreachable_and_stored(cluster, stack):
    a = cluster.a
    u = uid("n")
    ghost = free_port()                       # no node there, none registered
    client_id = client_id_of(HOST, ghost, 12345)
    add_online_row(stack, client_id, u, ghost, 12345)
    try:
        before = proxy_stats(cluster.proxy)["stats"]["unreachable"]
        r = run(order(a, "n1-" + u, u, {"infos": "x"}))
        assert (r["code"], r["forwarded"], r["stored"]) == (0, 0, 1), r
        assert offline_ids(stack, u) == ["n1-" + u]
        assert proxy_stats(cluster.proxy)["stats"]["unreachable"] >= before + 1

        with Framed(cluster.proxy.port) as p:   # straight to the proxy: at once
            t0 = time.monotonic()
            r = p.call(push_request(ghost, client_id, u, "n2", "req-n2"))
            assert (r["code"], r["msg_id"], r["req_id"]) == (10204, "n2", "req-n2"), r
            assert time.monotonic() - t0 < 1.0
            # a node that is draining takes nothing new either
            add_node_row(stack, ghost, "draining")
            wait_until(lambda: proxy_knows(cluster.proxy, ghost, "draining"), 5,
                       what="the proxy to see the draining node")
            time.sleep(0.5)
            r = p.call(push_request(ghost, client_id, u, "n3", 3))
            assert (r["code"], r["req_id"]) == (10204, 3), r
    finally:
        remove_node_row(stack, ghost)
        db_exec(stack, "DELETE FROM online_clients WHERE uuid = %s", (u,))


def test_killed_node_is_unreachable_within_timeout(own_cluster, stack):
    c = own_cluster(reply_timeout_ms=2000)
    a, b = c.a, c.b
    u = uid("k")

    async def go():
        ws, info = await online(b, u)
        r = await order(a, "k0-" + u, u, {"infos": "before"})
        assert r["forwarded"] == 1, r          # the proxy has a connection to B now
        assert (await recv_json(ws))["id"] == "k0-" + u
        b.snapshot()
        os.killpg(b.master_pid, signal.SIGKILL)  # master, manager, workers
        b.killed()
        assert db_rows(stack, "SELECT 1 FROM online_clients WHERE uuid = %s", (u,))
        t0 = time.monotonic()
        r = await order(a, "k1-" + u, u, {"infos": "after"})
        assert (r["code"], r["forwarded"], r["stored"]) == (0, 0, 1), r
        assert time.monotonic() - t0 < 2.0 + 1.5, "not within reply_timeout"
        assert offline_ids(stack, u) == ["k1-" + u]
        # and straight to the proxy, a second time (B now refuses connections)
        with Framed(c.proxy.port) as p:
            t0 = time.monotonic()
            r = p.call(push_request(b.internal_port, info["client_id"], u, "k2", 7))
            assert (r["code"], r["req_id"]) == (10204, 7), r
            assert time.monotonic() - t0 < 2.0 + 0.5
    run(go())
    db_exec(stack, "DELETE FROM online_clients WHERE uuid = %s", (u,))
    db_exec(stack, "DELETE FROM gateway_nodes WHERE node_id = %s",
            ("%s:%d" % (HOST, b.internal_port),))


class SilentNode:
    """A TCP server that accepts and reads but never answers (a hung node)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.received = b""
        self.conns = []
        self.running = True
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
                conn.settimeout(0.05)
                self.conns.append(conn)
                self.accepted += 1
            except socket.timeout:
                pass
            for conn in list(self.conns):
                try:
                    self.received += conn.recv(65536)
                except (socket.timeout, OSError):
                    pass

    def close(self):
        self.running = False
        self.thread.join(5)
        for conn in self.conns:
            conn.close()
        self.sock.close()


def test_silent_node_times_out_and_in_flight_is_bounded(bin_dir, mysql_env, tmp_path):
    stack = mysql_env
    node = SilentNode()
    add_node_row(stack, node.port)
    proxy = start_server(bin_dir, "pushgate-proxy", tmp_path, host=HOST, worker_num=1,
                         task_worker_num=1, reactor_num=1, nodes_refresh_ms=200,
                         reply_timeout_ms=1000, max_in_flight=5)
    try:
        wait_until(lambda: proxy_knows(proxy, node.port), 5, what="the proxy to learn the node")
        cid = client_id_of(HOST, node.port, 1)
        with Framed(proxy.port) as p:
            t0 = time.monotonic()
            for i in range(7):
                p.send(push_request(node.port, cid, "someone", "m%d" % i, i))
            # two over max_in_flight: busy at once; the five others after the timeout
            first = [p.recv(timeout=1.0) for _ in range(2)]
            assert [(r["code"], r["req_id"]) for r in first] == [(10205, 5), (10205, 6)], first
            assert time.monotonic() - t0 < 0.9
            rest = [p.recv(timeout=5.0) for _ in range(5)]
            waited = time.monotonic() - t0
            assert sorted((r["code"], r["req_id"], r["msg_id"]) for r in rest) == \
                [(10204, i, "m%d" % i) for i in range(5)], rest
            assert 0.9 <= waited < 2.5, waited
            assert node.accepted == 1
            assert node.received.count(b"/chat/push-local") == 5
            st = proxy_stats(proxy)["stats"]
            assert (st["busy"], st["unreachable"], st["forwarded"]) == (2, 5, 5), st
            # the silent connection was dropped; the next push is refused at
            # once (backoff) or tried on a new connection: unreachable either way
            r = p.call(push_request(node.port, cid, "someone", "m7", 7), timeout=5.0)
            assert (r["code"], r["req_id"]) == (10204, 7), r
        proxy.stop()
        proxy.check_clean()
    except BaseException:
        proxy.kill_all()
        raise
    finally:
        node.close()
        remove_node_row(stack, node.port)


# ---- 6. robustness and the single connection ----

def tcp_inodes(pid):
    out = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            link = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", link)
        if m:
            out.add(m.group(1))
    return out


def connections_to(port, pids):
    """{pid: established TCP connections from pid to loopback port}."""
    rows = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(path) as f:
            rows += [line.split() for line in f.readlines()[1:]]
    established = {r[9] for r in rows if r[3] == "01" and int(r[2].split(":")[1], 16) == port}
    return {pid: len(tcp_inodes(pid) & established) for pid in pids}


def gateway_stats(gateway):
    return node_stats(gateway.port)


def test_malformed_requests_get_errors_and_the_connection_survives(cluster):
    u = uid("m")

    async def go():
        ws, info = await online(cluster.b, u)
        with Framed(cluster.proxy.port) as p:
            r = p.call(b"{not json")
            assert r["code"] == 10102 and r["data"] == [], r
            r = p.call(b"[1,2]")
            assert r["code"] == 10102, r
            bad = push_request(cluster.b.internal_port, info["client_id"], u, "m0", "r0")
            del bad["proxy_info"]
            r = p.call(bad)
            assert (r["code"], r["msg_id"], r["req_id"]) == (10104, "m0", "r0"), r
            bad = push_request(cluster.b.internal_port, info["client_id"], u, "m0", "r1")
            del bad["remote_data"]
            assert p.call(bad)["code"] == 10104
            r = p.call({"url": "/nope", "req_id": 9})
            assert (r["code"], r["req_id"]) == (10202, 9), r
            # the same connection still works, and req_ids of any type come back
            for req_id in ("r2", 42):
                r = p.call(push_request(cluster.b.internal_port, info["client_id"], u,
                                        "ok-%s" % req_id, req_id))
                assert (r["code"], r["req_id"], r["msg_id"]) == (0, req_id, "ok-%s" % req_id), r
                assert (await recv_json(ws))["id"] == "ok-%s" % req_id
                await ack(ws, "ok-%s" % req_id)
        # a frame over package_max_length closes that connection only
        with Framed(cluster.proxy.port) as big, Framed(cluster.proxy.port) as other:
            big.c.send_raw(struct.pack(">I", 1 << 20) + b"{")
            assert big.c.wait_closed(5)
            assert other.call({"url": "/stats"})["code"] == 0
        await ws.close()
    run(go())


def test_many_pushes_to_one_node_share_one_connection(cluster):
    b = cluster.b
    u = uid("c")
    n = 200

    async def go():
        ws, info = await online(b, u)
        workers = list(cluster.proxy.worker_pids().values())
        with Framed(cluster.proxy.port) as p:
            r = p.call(push_request(b.internal_port, info["client_id"], u, "warm", 0))
            assert r["code"] == 0, r
            assert (await recv_json(ws))["id"] == "warm"
            before = connections_to(b.internal_port, workers)
            accepted = gateway_stats(b)["accepted"]

            def pipeline():
                for i in range(n):
                    p.send(push_request(b.internal_port, info["client_id"], u, "c%d" % i, i + 1))
                return [p.recv(timeout=10) for _ in range(n)]
            replies = await asyncio.to_thread(pipeline)
            assert sorted(r["req_id"] for r in replies) == list(range(1, n + 1))
            assert all(r["code"] == 0 and r["msg"] == "delivered" for r in replies), replies[:3]
            got = [(await recv_json(ws))["id"] for _ in range(n)]
            assert sorted(got) == sorted("c%d" % i for i in range(n))
            after = connections_to(b.internal_port, workers)
            assert after == before, (before, after)
            assert all(v <= 1 for v in after.values()) and sum(after.values()) >= 1, after
            # one new connection: the /stats request itself
            assert gateway_stats(b)["accepted"] == accepted + 1
        await ws.close()
    run(go())


def test_idle_connection_closed_by_the_node_is_reopened(own_cluster):
    # B closes connections silent for a second (its heartbeat check)
    c = own_cluster(gateway_settings=dict(heartbeat_check_interval=1, heartbeat_idle_time=1))
    b = c.b
    cid = client_id_of(HOST, b.internal_port, 1)    # no such session: B answers gone
    with Framed(c.proxy.port) as p:
        r = p.call(push_request(b.internal_port, cid, "nobody", "i1", 1))
        assert (r["code"], r["req_id"]) == (10203, 1), r
        wait_until(lambda: "idle connection closed by the node" in c.proxy.log(), 10,
                   what="B to close the idle connection")
        r = p.call(push_request(b.internal_port, cid, "nobody", "i2", 2))
        assert (r["code"], r["req_id"]) == (10203, 2), r
    assert "connection lost" not in c.proxy.log()


# ---- operating it ----

def test_stats_line_in_the_log(cluster):
    wait_until(lambda: re.search(r"stats: requests \d+ forwarded \d+ delivered \d+ gone \d+",
                                 cluster.proxy.log()), 5, what="a stats line")


def test_example_config_lists_every_setting_and_starts(bin_dir, mysql_env, tmp_path):
    out = subprocess.run([os.path.join(bin_dir, "pushgate-proxy"), "--help"], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    known = re.findall(r"^  ([a-z_]+) = ", out, re.M)
    path = os.path.join(ROOT, "config", "proxy.ini")
    in_file = re.findall(r"^([a-z_]+) = ", open(path).read(), re.M)
    for key in ("nodes_refresh_ms", "reply_timeout_ms", "max_in_flight", "mysql_socket"):
        assert key in known
    assert sorted(in_file) == sorted(known)
    proxy = start_server(bin_dir, "pushgate-proxy", tmp_path, extra_args=("-c", path))
    proxy.stop()
    proxy.check_clean()


def test_mysql_unreachable_is_a_clear_start_up_error(bin_dir, tmp_path):
    r = subprocess.run([os.path.join(bin_dir, "pushgate-proxy"), "--set", "port=%d" % free_port(),
                        "--set", "mysql_host=127.0.0.1", "--set", "mysql_port=%d" % free_port()],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                       env={k: v for k, v in os.environ.items()
                            if not k.startswith("PUSHGATE_")})
    assert r.returncode != 0
    assert "MySQL" in r.stderr, r.stderr


# ---- a gateway lists several proxies ----

def test_gateway_fails_over_to_the_next_proxy(bin_dir, mysql_env, tmp_path):
    """proxy = a dead address first, then the live proxy: the gateway's
    links move on to the second and cross-node orders are forwarded."""
    dead = free_port()   # nothing listens here

    class Listed(Cluster):
        def start_gateway(self):
            port = self.proxy_settings["port"]
            self.gateway_settings["proxy"] = "%s:%d,%s:%d" % (HOST, dead, HOST, port)
            return super().start_gateway()

    c = Listed(bin_dir, mysql_env, tmp_path)
    try:
        u = uid("fo")
        data = {"type": "t", "infos": "failover"}

        async def go():
            ws, _ = await online(c.b, u)
            r = await order(c.a, "fo-" + u, u, data)
            assert (r["code"], r["forwarded"], r["stored"]) == (0, 1, 0), r
            assert await recv_json(ws) == {"event": "WorksheetMsg", "response": data,
                                           "id": "fo-" + u}
            await ack(ws, "fo-" + u)
            await ws.close()
        run(go())
        assert "proxy: connected to proxy 1 of the list" in c.a.log()
    finally:
        c.stop()

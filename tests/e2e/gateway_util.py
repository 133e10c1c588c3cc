"""Helpers for the gateway's end-to-end tests (test_gateway.py): starting a
pushgate-gateway against the throw-away MariaDB of the `stack` fixture,
minting browser tokens, an internal-port client, a raw WebSocket client for
frames python3-websockets will not send, asyncio WebSocket helpers, and
small MySQL helpers.

Every wait here is bounded: a test may fail, never hang."""
import asyncio
import base64
import contextlib
import json
import os
import sys
import time
import uuid as uuidlib

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import ADMIN_SECRET, HOST, Client, free_port, start_server, wait_until  # noqa: E402,F401
import ws_client  # noqa: E402
from ws_client import ACCEPT, KEY, Raw, b64url, frame, upgrade_request  # noqa: E402,F401

SECRET = "gateway-e2e-secret-0123456789"
IO_TIMEOUT = 5.0


def uid(tag="u"):
    """A uuid no other test uses ([A-Za-z0-9_.:@-], under 64 characters)."""
    return "%s-%s" % (tag, uuidlib.uuid4().hex[:16])


# ---- tokens ----

def make_token(payload, secret=SECRET, alg="HS256"):
    return ws_client.make_token(payload, secret, alg)


def token_for(uuid, ttl=3600, **kw):
    return make_token({"sub": uuid, "exp": int(time.time()) + ttl}, **kw)


def decode_client_id(client_id):
    """(ip, port, session id) of a client_id: base64("ip_port_session")."""
    raw = base64.b64decode(client_id, validate=True).decode()
    ip, port, session = raw.rsplit("_", 2)
    return ip, int(port), int(session)


def home_worker(client_id, workers=2):
    """The worker that owns a session (common/server_internal.h
    pg_session_home_worker): it pushes to the tab, takes its ACKs and is
    handed the internal requests for it."""
    x = (decode_client_id(client_id)[2] * 0x9E3779B97F4A7C15) & (2 ** 64 - 1)
    return (x >> 32) % workers


def make_client_id(ip, port, session):
    return base64.b64encode(("%s_%d_%d" % (ip, port, session)).encode()).decode()


# ---- the gateway ----

def gateway_settings(stack, **overrides):
    settings = dict(
        host=HOST, internal_host=HOST, internal_port=free_port(), advertised_ip=HOST,
        worker_num=2, task_worker_num=2, reactor_num=2, jwt_secret=SECRET, admin_secret=ADMIN_SECRET,
        ack_timeout=2, auth_timeout_ms=500, header_timeout_ms=500,
        node_heartbeat_interval=1, node_dead_after=10, package_max_length="64K",
        mysql_host=stack.mysql_host, mysql_port=stack.mysql_port,
        mysql_user=stack.mysql_user, mysql_password=stack.mysql_password,
        mysql_database=stack.mysql_db)
    settings.update(overrides)
    return settings


def start_gateway(bin_dir, stack, tmp_path, wait=True, **overrides):
    """Starts pushgate-gateway (ASan build) on free loopback ports against the
    stack's MariaDB; .port is the public port, .internal_port the internal one.
    A port taken by someone else between free_port() and the start is retried
    with other ports (only ports this function picked)."""
    for attempt in range(3):
        settings = gateway_settings(stack, **overrides)
        settings.setdefault("port", free_port())
        try:
            g = start_server(bin_dir, "pushgate-gateway", tmp_path, wait=wait, **settings)
        except AssertionError as e:
            picked_both = "port" not in overrides and "internal_port" not in overrides
            if "Address already in use" in str(e) and picked_both and attempt < 2:
                continue
            raise
        g.internal_port = int(g.settings["internal_port"])
        g.node_id = "%s:%d" % (HOST, g.internal_port)
        return g


class Internal:
    """A client of the internal port: JSON requests, one JSON reply each."""

    def __init__(self, port, eof=False, timeout=10.0):
        framing = ("eof", b"\r\n\r\n") if eof else ("length",)
        self.c = Client(port, framing, timeout=timeout)

    def call(self, obj, timeout=None):
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        return json.loads(self.c.call(data, timeout))

    def close(self):
        self.c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextlib.contextmanager
def running_gateway(bin_dir, stack, tmp_path, **overrides):
    """start_gateway for a with block (or a fixture's yield): stopped and
    checked clean (exit code, sanitizers) at its end, killed if that fails."""
    g = start_gateway(bin_dir, stack, tmp_path, **overrides)
    try:
        yield g
        g.stop()
        g.check_clean()
    finally:
        g.kill_all()


def work_order(msg_id, targets, token):
    """targets: [(uuid, data), ...]"""
    return {"url": "/worksheet/send-message", "chat_token": token, "msg_id": msg_id,
            "data": [{"uuid": u, "data": d} for u, d in targets]}


def worksheet_event(data, msg_id):
    return {"event": "WorksheetMsg", "response": data, "id": msg_id}


# ---- MySQL ----

def db_rows(stack, sql, args=()):
    conn = stack.mysql()
    try:
        with conn.cursor() as c:
            c.execute(sql, args)
            return c.fetchall()
    finally:
        conn.close()


def db_exec(stack, sql, args=()):
    conn = stack.mysql()
    try:
        with conn.cursor() as c:
            return c.execute(sql, args)
    finally:
        conn.close()


def offline_rows(stack, uuid):
    """[(msg_id, payload dict, delivered_at)] of uuid, oldest first."""
    return [(m, json.loads(p), d) for m, p, d in db_rows(
        stack, "SELECT msg_id, payload, delivered_at FROM offline_messages WHERE uuid = %s "
               "ORDER BY id", (uuid,))]


def online_rows(stack, uuid):
    return db_rows(stack, "SELECT client_id, uuid, node_ip, node_port, session_id "
                          "FROM online_clients WHERE uuid = %s ORDER BY connected_at", (uuid,))


def http_get(port, path, timeout=IO_TIMEOUT, token=ADMIN_SECRET):
    """(status, headers, body) of GET path on a fresh connection, with the
    operator token (token=None: without)."""
    auth = "Authorization: Bearer %s\r\n" % token if token else ""
    r = Raw(port, timeout)
    try:
        r.send(("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path, HOST, auth)).encode())
        return r.read_response(timeout)
    finally:
        r.close()


def node_stats(port):
    """A gateway's /stats."""
    status, _, body = http_get(port, "/stats")
    assert status == 200, (status, body)
    return json.loads(body)


# ---- asyncio WebSocket helpers ----

def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ws_url(port, token=None):
    return "ws://%s:%d/ws" % (HOST, port) + ("?token=" + token if token is not None else "")


async def ws_connect(port, token=None):
    return await websockets.connect(ws_url(port, token), open_timeout=IO_TIMEOUT,
                                    close_timeout=2, ping_interval=None, max_size=None)


async def recv_json(ws, timeout=IO_TIMEOUT):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def send_json(ws, obj):
    await ws.send(json.dumps(obj))


async def online(port, uuid):
    """A WebSocket authenticated through ?token= and its ONLINE data."""
    ws = await ws_connect(port, token_for(uuid))
    ev = await recv_json(ws)
    assert ev["event"] == "ONLINE", ev
    assert ev["data"]["uuid"] == uuid, ev
    return ws, ev["data"]


async def quiet(ws, seconds):
    """Asserts nothing arrives on ws for seconds."""
    try:
        msg = await asyncio.wait_for(ws.recv(), seconds)
    except asyncio.TimeoutError:
        return
    raise AssertionError("unexpected message: %s" % msg)


async def closed_with(ws, timeout=IO_TIMEOUT):
    """Reads until the server closes; the close code (frames before it are returned too)."""
    got = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("not closed within %s s; got %s" % (timeout, got))
            got.append(await asyncio.wait_for(ws.recv(), left))
    except websockets.ConnectionClosed:
        pass
    return ws.close_code, got


async def call(internal, obj):
    """An internal request from a coroutine, without blocking the loop."""
    return await asyncio.to_thread(internal.call, obj)

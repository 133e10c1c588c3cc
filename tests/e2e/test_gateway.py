"""End-to-end tests of pushgate-gateway (ASan + UBSan build) against the
throw-away MariaDB of the `stack` fixture, with real WebSocket clients
(python3-websockets 10.4), raw sockets for what a well-behaved client will
not send, and the internal port's length-prefixed (or EOF-terminated) JSON
frames.

One gateway serves the module (`node`); tests that need other settings, a
restart or a stop start their own.  After every test on the module node it
must still be running and serve a new browser; every gateway stopped must
exit 0 with no sanitizer report and no process left behind.  Every uuid is
fresh, so tests do not see each other's rows.  Every wait is bounded.
Helpers: gateway_util.py, engine_util.py."""
import asyncio
import json
import os
import signal
import socket
import struct
import sys
import time

import pytest
import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gateway_util import (HOST, IO_TIMEOUT, Internal, Raw, call, closed_with,  # noqa: E402
                          db_exec, db_rows, decode_client_id, frame, free_port, home_worker,
                          http_get, make_client_id, make_token, node_stats, offline_rows, online,
                          online_rows, quiet, recv_json, run, send_json, start_gateway, token_for, uid,
                          upgrade_request, wait_until, work_order, worksheet_event, ws_connect)

APP_TOKEN = uid("app")
INDEX_HTML = b"<!doctype html><title>pushgate console</title><p>agent console</p>\n"

# The module node's settings that tests rely on
ACK_TIMEOUT = 2
AUTH_TIMEOUT_MS = 500
HEADER_TIMEOUT_MS = 500
PACKAGE_MAX = 64 * 1024


# ---- fixtures ----

@pytest.fixture(scope="module")
def app(stack):
    """APP_TOKEN is an enabled app in `apps`."""
    stack.add_app(APP_TOKEN, name="e2e")
    return APP_TOKEN


@pytest.fixture(scope="module")
def node(bin_dir, stack, app, tmp_path_factory):
    static = tmp_path_factory.mktemp("static")
    (static / "index.html").write_bytes(INDEX_HTML)
    g = start_gateway(bin_dir, stack, tmp_path_factory.mktemp("gateway"), static_dir=str(static))
    try:
        g.boot_generation = db_rows(stack, "SELECT boot_generation FROM gateway_nodes "
                                           "WHERE node_id = %s", (g.node_id,))[0][0]
        yield g
        g.stop()
        g.check_clean()
    finally:
        g.kill_all()


async def still_serves(port):
    u = uid("after")
    ws, data = await online(port, u)
    try:
        await send_json(ws, {"event": "HEART_BEAT"})
        ev = await recv_json(ws)
        assert ev["event"] == "HEART_BEAT" and isinstance(ev["data"]["time"], int)
    finally:
        await ws.close()


@pytest.fixture
def gw(node):
    """The module node; afterwards it must still run and serve a new browser."""
    yield node
    assert node.proc.poll() is None, "gateway exited:\n" + node.sanitizer_text()[-4000:]
    run(still_serves(node.port))


@pytest.fixture
def internal(node):
    clients = []

    def make(eof=False, port=None):
        c = Internal(port or node.internal_port, eof=eof)
        clients.append(c)
        return c
    yield make
    for c in clients:
        c.close()


@pytest.fixture
def gateways(bin_dir, stack, app, tmp_path):
    """gateways(**settings) starts an extra gateway; all are stopped and
    checked (exit 0, no sanitizer report, nothing left) after the test."""
    started = []

    def start(**settings):
        g = start_gateway(bin_dir, stack, tmp_path, **settings)
        started.append(g)
        return g
    yield start
    errors = []
    for g in started:
        try:
            g.stop()
            g.check_clean()
        except AssertionError as e:
            errors.append(str(e))
        finally:
            g.kill_all()
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


def wait_rows(fn, want, timeout=6, what="rows"):
    """Polls fn() until it returns want; returns it."""
    last = []

    def check():
        last[:] = [fn()]
        return last[0] == want
    try:
        wait_until(check, timeout, interval=0.1, what=what)
    except AssertionError:
        raise AssertionError("%s: wanted %r, last %r" % (what, want, last[0] if last else None))
    return want


def gone_from_online(stack, uuid, timeout=6):
    wait_rows(lambda: online_rows(stack, uuid), (), timeout, "online_clients rows of %s gone" % uuid)


def ok_reply(reply, msg_id, delivered=0, stored=0, forwarded=0):
    assert reply["code"] == 0, reply
    assert reply["msg_id"] == msg_id, reply
    assert (reply["delivered"], reply["stored"], reply["forwarded"]) == (delivered, stored, forwarded), reply


# ---- 1. JWT ----

def test_token_in_query_gets_online(gw, stack):
    u = uid()

    async def go():
        ws, data = await online(gw.port, u)
        try:
            assert set(data) == {"uuid", "client_id", "node", "offline"}, data
            assert data["node"] == gw.node_id
            assert data["offline"] == 0
            ip, port, session = decode_client_id(data["client_id"])
            assert (ip, port) == (HOST, gw.internal_port) and session > 0
        finally:
            await ws.close()
    run(go())


@pytest.mark.parametrize("why,token", [
    ("expired", lambda u: token_for(u, ttl=-10)),
    ("forged", lambda u: token_for(u, secret="not-the-gateway-secret")),
    ("alg none", lambda u: make_token({"sub": u, "exp": int(time.time()) + 60}, alg="none")),
    ("garbage", lambda u: "not.a.token"),
])
def test_bad_token_gets_401_before_upgrade(gw, stack, why, token):
    u = uid()
    r = Raw(gw.port)
    try:
        r.send(upgrade_request("/ws?token=" + token(u)))
        status, headers, body = r.read_response()
        assert status == 401, (why, status, body)
        assert "upgrade" not in headers
        assert r.wait_eof()
    finally:
        r.close()

    async def go():
        with pytest.raises(websockets.InvalidStatusCode) as e:
            await ws_connect(gw.port, token(u))
        assert e.value.status_code == 401
    run(go())
    assert online_rows(stack, u) == ()


def test_connect_event_authenticates(gw, stack):
    u = uid()

    async def go():
        ws = await ws_connect(gw.port)
        try:
            await send_json(ws, {"event": "CONNECT", "data": {"client_token": token_for(u)}})
            ev = await recv_json(ws)
            assert ev["event"] == "ONLINE" and ev["data"]["uuid"] == u, ev
            assert ev["data"]["offline"] == 0
            # a second CONNECT on an authenticated socket is refused, the socket stays
            await send_json(ws, {"event": "CONNECT", "data": {"client_token": token_for(u)}})
            err = await recv_json(ws)
            assert err["code"] == 10104, err
            # well past auth_timeout_ms: still open
            await asyncio.sleep(AUTH_TIMEOUT_MS / 1000 + 0.3)
            await send_json(ws, {"event": "HEART_BEAT"})
            assert (await recv_json(ws))["event"] == "HEART_BEAT"
            assert len(online_rows(stack, u)) == 1
        finally:
            await ws.close()
    run(go())


@pytest.mark.parametrize("why,data", [
    ("forged", lambda u: {"client_token": token_for(u, secret="wrong-secret-wrong-secret")}),
    ("expired", lambda u: {"client_token": token_for(u, ttl=-5)}),
    ("missing", lambda u: {}),
    ("not a string", lambda u: {"client_token": 42}),
])
def test_connect_with_bad_token_closes_4001(gw, stack, why, data):
    u = uid()

    async def go():
        ws = await ws_connect(gw.port)
        try:
            await send_json(ws, {"event": "CONNECT", "data": data(u)})
            code, got = await closed_with(ws)
            assert code == 4001, (why, code, got)
            assert got == []
        finally:
            await ws.close()
    run(go())
    assert online_rows(stack, u) == ()


def test_no_connect_within_auth_timeout_closes_4001(gw):
    async def go():
        ws = await ws_connect(gw.port)
        start = time.monotonic()
        try:
            code, got = await closed_with(ws, timeout=AUTH_TIMEOUT_MS / 1000 + 3)
            elapsed = time.monotonic() - start
            assert code == 4001 and got == []
            assert AUTH_TIMEOUT_MS / 1000 - 0.15 <= elapsed <= AUTH_TIMEOUT_MS / 1000 + 2, elapsed
        finally:
            await ws.close()
    run(go())


def test_events_before_auth_get_10103(gw, internal):
    u = uid()

    async def go():
        ws = await ws_connect(gw.port)
        try:
            for ev in [{"event": "HEART_BEAT"}, {"event": "ACK", "data": {"id": "x"}},
                       {"event": "NEW_MSG", "data": {"to": "someone", "msg": "hi"}},
                       {"event": "WHATEVER"}]:
                await send_json(ws, ev)
                err = await recv_json(ws)
                assert err == {"code": 10103, "msg": err["msg"], "data": []}, (ev, err)
            await send_json(ws, {"event": "CONNECT", "data": {"client_token": token_for(u)}})
            ev = await recv_json(ws)
            assert ev["event"] == "ONLINE" and ev["data"]["uuid"] == u
        finally:
            await ws.close()
    run(go())


# ---- 2. registration ----

def test_registration_row_while_connected(gw, stack):
    u = uid()

    async def go():
        ws, data = await online(gw.port, u)
        try:
            rows = online_rows(stack, u)
            assert len(rows) == 1, rows
            client_id, uuid, node_ip, node_port, session_id = rows[0]
            assert client_id == data["client_id"]
            assert (uuid, node_ip, node_port) == (u, HOST, gw.internal_port)
            assert session_id == decode_client_id(client_id)[2]
            # a second tab: a second row with another client_id and session
            ws2, data2 = await online(gw.port, u)
            try:
                assert data2["client_id"] != data["client_id"]
                rows = online_rows(stack, u)
                assert sorted(r[0] for r in rows) == sorted([data["client_id"], data2["client_id"]])
            finally:
                await ws2.close()
            wait_rows(lambda: [r[0] for r in online_rows(stack, u)], [data["client_id"]],
                      what="only the first tab's row")
        finally:
            await ws.close()
    run(go())
    gone_from_online(stack, u)


# ---- 3. offline delivery ----

def test_offline_messages_stored_then_delivered_oldest_first(gw, stack, internal):
    u = uid()
    c = internal()
    bodies = [{"type": "new_worksheet_to_deal", "infos": "你有一条新工单待处理", "n": i} for i in range(3)]
    ids = ["off-%s-%d" % (u, i) for i in range(3)]
    for i in range(3):
        ok_reply(c.call(work_order(ids[i], [(u, bodies[i])], APP_TOKEN)), ids[i], stored=1)
    rows = offline_rows(stack, u)
    assert [r[0] for r in rows] == ids
    assert [r[1] for r in rows] == [worksheet_event(bodies[i], ids[i]) for i in range(3)]
    assert all(r[2] is None for r in rows)

    async def go():
        ws, data = await online(gw.port, u)
        try:
            assert data["offline"] == 3
            got = [await recv_json(ws) for _ in range(3)]
            assert got == [worksheet_event(bodies[i], ids[i]) for i in range(3)]
            await quiet(ws, 0.3)
            # marked delivered, kept until acknowledged
            rows = offline_rows(stack, u)
            assert [r[0] for r in rows] == ids and all(r[2] is not None for r in rows)
            for i in ids[:2]:
                await send_json(ws, {"event": "ACK", "data": {"id": i}})
            wait_rows(lambda: [r[0] for r in offline_rows(stack, u)], ids[2:],
                      what="acked offline rows deleted")
        finally:
            await ws.close()
        # not acked: delivered again at the next connect, same id
        ws, data = await online(gw.port, u)
        try:
            assert data["offline"] == 1
            assert await recv_json(ws) == worksheet_event(bodies[2], ids[2])
            await send_json(ws, {"event": "ACK", "data": {"id": ids[2]}})
            wait_rows(lambda: offline_rows(stack, u), [], what="last offline row deleted")
        finally:
            await ws.close()
    run(go())


# ---- 4. work orders to connected users ----

def test_work_order_to_connected_user(gw, stack, internal):
    u = uid()
    c = internal()
    body = {"type": "new_worksheet_to_deal", "infos": "你有一条新工单待处理"}

    async def go():
        ws, _ = await online(gw.port, u)
        try:
            r = await call(c, work_order("1700000000000-0", [(u, body)], APP_TOKEN))
            ok_reply(r, "1700000000000-0", delivered=1)
            raw = await asyncio.wait_for(ws.recv(), IO_TIMEOUT)
            assert json.loads(raw) == {"event": "WorksheetMsg", "response": body,
                                       "id": "1700000000000-0"}
            await send_json(ws, {"event": "ACK", "data": {"id": "1700000000000-0"}})
            await quiet(ws, 0.3)
        finally:
            await ws.close()
    run(go())
    assert offline_rows(stack, u) == []


def test_work_order_with_several_entries_gets_indexed_ids(gw, stack, internal):
    a, b = uid("a"), uid("b")
    c = internal()

    async def go():
        wa, _ = await online(gw.port, a)
        wb, _ = await online(gw.port, b)
        try:
            r = await call(c, work_order("multi-1", [(a, {"k": 0}), (b, {"k": 1}), (a, {"k": 2})],
                                         APP_TOKEN))
            ok_reply(r, "multi-1", delivered=3)
            got_a = [await recv_json(wa) for _ in range(2)]
            got_b = await recv_json(wb)
            assert got_a == [worksheet_event({"k": 0}, "multi-1:0"), worksheet_event({"k": 2}, "multi-1:2")]
            assert got_b == worksheet_event({"k": 1}, "multi-1:1")
            for ws, ids in ((wa, ["multi-1:0", "multi-1:2"]), (wb, ["multi-1:1"])):
                for i in ids:
                    await send_json(ws, {"event": "ACK", "data": {"id": i}})
            await quiet(wa, 0.2)
            await quiet(wb, 0.1)
        finally:
            await wa.close()
            await wb.close()
    run(go())


async def warm_token(c, tabs, tag, u, workers=2):
    """Delivered orders, so that the worker they are handed to (the home
    worker of u's first tab) knows APP_TOKEN and pushes to its node's
    sessions from the uuid index.  tabs: u's sockets, each gets and ACKs
    them."""
    for i in range(workers * 2):
        msg_id = "%s-w%d" % (tag, i)
        ok_reply(await call(c, work_order(msg_id, [(u, {"w": i})], APP_TOKEN)), msg_id,
                 delivered=len(tabs))
        for ws in tabs:
            assert (await recv_json(ws))["id"] == msg_id
            await send_json(ws, {"event": "ACK", "data": {"id": msg_id}})


def test_local_session_is_pushed_from_the_uuid_index_not_only_from_mysql(gw, stack, internal):
    """The node's own sessions come from its shared uuid index: one whose
    online_clients row is missing (as while its registration is on the way)
    still gets the order, counted delivered and not stored."""
    u = uid("idx")
    c = internal()

    async def go():
        ws, _ = await online(gw.port, u)
        try:
            await warm_token(c, [ws], "idx", u)
            db_exec(stack, "DELETE FROM online_clients WHERE uuid = %s", (u,))
            ok_reply(await call(c, work_order("idx-1", [(u, {"k": 1})], APP_TOKEN)), "idx-1",
                     delivered=1)
            assert await recv_json(ws) == worksheet_event({"k": 1}, "idx-1")
            await send_json(ws, {"event": "ACK", "data": {"id": "idx-1"}})
            await quiet(ws, 0.3)
        finally:
            await ws.close()
    run(go())
    assert offline_rows(stack, u) == []


def relayed(g):
    return node_stats(g.port)["messages"]["relayed"]


async def delivered_to(c, msg_id, u, tabs):
    ok_reply(await call(c, work_order(msg_id, [(u, {"m": msg_id})], APP_TOKEN)), msg_id,
             delivered=len(tabs))
    for ws in tabs:
        assert await recv_json(ws) == worksheet_event({"m": msg_id}, msg_id)
        await send_json(ws, {"event": "ACK", "data": {"id": msg_id}})


def test_a_request_goes_to_the_home_worker_of_its_browser(gw, stack, internal):
    """The reactor thread hands an internal request to the home worker of
    the session it is for (gateway/internal.c gw_internal_worker), so the
    worker that routes an order also pushes it: with one tab per uuid, on
    either worker, no push is relayed between workers.  A uuid whose tabs
    are on both workers gets the order on both (the other tab's push is
    relayed); a push-local goes to the home of the client_id it names."""
    c = internal()

    async def go():
        tabs = {}
        for i in range(16):                   # until both workers hold some
            u = uid("home")
            ws, data = await online(gw.port, u)
            tabs[u] = (ws, home_worker(data["client_id"]))
            if i >= 3 and len({w for _, w in tabs.values()}) == 2:
                break
        assert len({w for _, w in tabs.values()}) == 2, "16 sessions, all on one worker"
        try:
            before = relayed(gw)
            for rnd in range(2):
                for u, (ws, _) in tabs.items():
                    await delivered_to(c, "home-%d-%s" % (rnd, u), u, [ws])
            assert relayed(gw) == before

            u = uid("both")
            first, d1 = await online(gw.port, u)
            others = []
            for _ in range(12):               # a second tab on the other worker
                second, d2 = await online(gw.port, u)
                if home_worker(d2["client_id"]) != home_worker(d1["client_id"]):
                    break
                others.append(second)
            else:
                raise AssertionError("12 more tabs, all on the first one's worker")
            for ws in others:
                await ws.close()
            before = relayed(gw)
            await delivered_to(c, "both-1-" + u, u, [first, second])
            assert relayed(gw) == before + 1
            event = {"event": "WorksheetMsg", "response": {}, "id": "pl-home"}
            r = await call(c, push_local(d2["client_id"], u, event, msg_id="pl-home"))
            assert r["code"] == 0, r
            assert await recv_json(second) == event
            await send_json(second, {"event": "ACK", "data": {"id": "pl-home"}})
            await quiet(first, 0.3)
            assert relayed(gw) == before + 1
            await first.close()
            await second.close()
        finally:
            for ws, _ in tabs.values():
                await ws.close()
    run(go(), timeout=60)


def test_more_tabs_than_the_uuid_index_holds_each_get_one_copy(gw, stack, internal):
    """Six tabs of one uuid on the node (the index names four): every tab
    gets each order once, whether it came from the index or from MySQL; a
    closed tab is no longer a target."""
    u = uid("tabs")
    c = internal()

    async def go():
        tabs = [(await online(gw.port, u))[0] for _ in range(6)]
        try:
            await warm_token(c, tabs, "tabs", u)
            ok_reply(await call(c, work_order("tabs-1", [(u, {"k": 1})], APP_TOKEN)), "tabs-1",
                     delivered=6)
            for ws in tabs:
                assert await recv_json(ws) == worksheet_event({"k": 1}, "tabs-1")
                await send_json(ws, {"event": "ACK", "data": {"id": "tabs-1"}})
            for ws in tabs[:2]:
                await ws.close()
            for _ in range(100):
                if len(online_rows(stack, u)) == 4:
                    break
                await asyncio.sleep(0.05)
            ok_reply(await call(c, work_order("tabs-2", [(u, {"k": 2})], APP_TOKEN)), "tabs-2",
                     delivered=4)
            for ws in tabs[2:]:
                assert await recv_json(ws) == worksheet_event({"k": 2}, "tabs-2")
                await send_json(ws, {"event": "ACK", "data": {"id": "tabs-2"}})
            for ws in tabs[2:]:
                await quiet(ws, 0.2)
        finally:
            for ws in tabs:
                await ws.close()
    run(go())
    assert offline_rows(stack, u) == []


def wide_targets(tag, n=1000, online_at=(0, 999)):
    return [(("%s-on%d" if i in online_at else "%s-off%d") % (tag, i), {"i": i}) for i in range(n)]


def test_pipelined_work_orders_are_routed_together_each_with_its_reply(gw, stack, internal):
    """Orders arriving in one write travel to a task worker as one batch
    (route.c): each still gets its own reply, a bad chat_token refuses only
    its own order, and online, offline and mixed targets are all settled."""
    on, off = uid("batch-on"), uid("batch-off")
    c = internal()
    orders = [work_order("bt-%d" % i, [(on, {"i": i})], APP_TOKEN) for i in range(20)]
    orders[5]["chat_token"] = "not-an-app-token"
    orders[9] = work_order("bt-9", [(on, {"i": 9}), (off, {"i": 9})], APP_TOKEN)
    orders[12] = work_order("bt-12", [(off, {"i": 12})], APP_TOKEN)

    async def go():
        ws, _ = await online(gw.port, on)
        try:
            c.c.send(*[json.dumps(o).encode() for o in orders])
            replies = {}
            for _ in orders:
                r = json.loads(c.c.recv())
                replies[r["msg_id"]] = r
            assert replies["bt-5"]["code"] == 10201, replies["bt-5"]
            ok_reply(replies["bt-9"], "bt-9", delivered=1, stored=1)
            ok_reply(replies["bt-12"], "bt-12", stored=1)
            for i in set(range(20)) - {5, 9, 12}:
                ok_reply(replies["bt-%d" % i], "bt-%d" % i, delivered=1)
            got = set()
            while len(got) < 18:
                event = await recv_json(ws)
                got.add(event["id"])
                await send_json(ws, {"event": "ACK", "data": {"id": event["id"]}})
            assert got == {"bt-%d" % i for i in range(20) if i not in (5, 9, 12)} | {"bt-9:0"}
            await quiet(ws, 0.3)
        finally:
            await ws.close()
    run(go())
    assert sorted(r[0] for r in offline_rows(stack, off)) == ["bt-12", "bt-9:1"]
    db_exec(stack, "DELETE FROM offline_messages WHERE uuid = %s", (off,))


def test_work_order_with_1000_targets(gateways, stack):
    """The largest work order: 2 targets online, 998 offline (SQL batches of
    IN and INSERT, task messages far bigger than the request), on a node
    with the default package_max_length."""
    g = gateways(package_max_length="2M")
    tag = uid("wide")
    targets = wide_targets(tag)
    c = Internal(g.internal_port)

    async def go():
        w0, _ = await online(g.port, tag + "-on0")
        w1, _ = await online(g.port, tag + "-on999")
        try:
            r = await call(c, work_order("wide-1", targets, APP_TOKEN))
            ok_reply(r, "wide-1", delivered=2, stored=998)
            assert await recv_json(w0) == worksheet_event({"i": 0}, "wide-1:0")
            assert await recv_json(w1) == worksheet_event({"i": 999}, "wide-1:999")
            await send_json(w0, {"event": "ACK", "data": {"id": "wide-1:0"}})
            await send_json(w1, {"event": "ACK", "data": {"id": "wide-1:999"}})
        finally:
            await w0.close()
            await w1.close()
    try:
        run(go())
        rows = db_rows(stack, "SELECT uuid, msg_id FROM offline_messages WHERE uuid LIKE %s",
                       (tag + "-%",))
        assert sorted(rows) == sorted(("%s-off%d" % (tag, i), "wide-1:%d" % i) for i in range(1, 999))
        # one more target is refused
        r = c.call(work_order("wide-2", targets + [(tag + "-x", {})], APP_TOKEN))
        assert r["code"] == 10104 and r["msg_id"] == "wide-2"
    finally:
        c.close()
        db_exec(stack, "DELETE FROM offline_messages WHERE uuid LIKE %s", (tag + "-%",))


def test_work_order_expanding_past_the_ipc_limit_gets_a_reply(gw, stack, internal):
    """The request (about 50 KB) fits in package_max_length (64K); the route
    task built from it (every target's event JSON, escaped) is over 128 KB.
    The log says "could not hand a task to a task worker" and the sender
    waits forever: a consumer would neither XACK nor learn to retry."""
    tag = uid("wide")
    targets = wide_targets(tag, online_at=())
    body = json.dumps(work_order("wide-3", targets, APP_TOKEN)).encode()
    assert len(body) < PACKAGE_MAX
    c = internal()
    try:
        r = c.call(body, timeout=8)
    except socket.timeout:
        pytest.fail("no reply frame within 8 s for a work order of %d bytes" % len(body))
    finally:
        db_exec(stack, "DELETE FROM offline_messages WHERE uuid LIKE %s", (tag + "-%",))
    assert r["msg_id"] == "wide-3"
    assert r["code"] != 0 or r["stored"] == 1000, r


def test_registration_with_a_big_offline_backlog_gets_online(gw, stack, internal):
    """tasks.c op_register returns up to 1000 offline payloads in one task
    result, with no byte limit; 20 stored work orders of 8 KB (each far
    below package_max_length) are enough here (64K + 64K)."""
    u = uid("backlog")
    c = internal()
    for i in range(20):
        ok_reply(c.call(work_order("bk-%d" % i, [(u, {"pad": "p" * 8000, "i": i})], APP_TOKEN)),
                 "bk-%d" % i, stored=1)

    async def go():
        ws = await ws_connect(gw.port, token_for(u))
        try:
            got = []
            try:
                while len(got) < 21:
                    got.append(await recv_json(ws, 3))
            except asyncio.TimeoutError:
                pass
            assert got, "no ONLINE within 3 s; online_clients: %r" % (online_rows(stack, u),)
            assert got[0]["event"] == "ONLINE" and got[0]["data"]["offline"] >= 1
            ids = [m["id"] for m in got[1:]]
            assert ids == ["bk-%d" % i for i in range(len(ids))]
        finally:
            await ws.close()
    try:
        run(go())
    finally:
        db_exec(stack, "DELETE FROM offline_messages WHERE uuid = %s", (u,))


def test_a_push_during_registration_waits_for_online(gw, stack, internal):
    """A session enters the node's uuid index when it authenticates, and
    its ONLINE goes when its registration task answers; an order pushed in
    between (here: while online_clients is locked, so that the
    registration waits) is held and follows ONLINE, never precedes it."""
    u, other = uid("held"), uid("held-warm")
    c = internal()
    ok_reply(c.call(work_order("held-warm", [(other, {"n": 0})], APP_TOKEN)), "held-warm",
             stored=1)   # the chat_token is known valid now: orders push at once
    lock = stack.mysql()

    async def go():
        ws = await ws_connect(gw.port, token_for(u))
        try:
            await asyncio.sleep(0.3)                       # authenticated, registering
            reply = asyncio.create_task(call(c, work_order("held-1", [(u, {"n": 1})], APP_TOKEN)))
            await quiet(ws, 0.5)                           # held: no ONLINE yet, no push
            await asyncio.to_thread(unlock)
            ev = await recv_json(ws)
            assert ev["event"] == "ONLINE" and ev["data"]["uuid"] == u, ev
            ev = await recv_json(ws)
            assert ev == worksheet_event({"n": 1}, "held-1"), ev
            await send_json(ws, {"event": "ACK", "data": {"id": "held-1"}})
            ok_reply(await reply, "held-1", delivered=1)
        finally:
            await ws.close()

    def unlock():
        with lock.cursor() as cur:
            cur.execute("UNLOCK TABLES")

    try:
        with lock.cursor() as cur:
            cur.execute("LOCK TABLES online_clients WRITE")
        run(go())
    finally:
        lock.close()
        db_exec(stack, "DELETE FROM offline_messages WHERE uuid IN (%s, %s)", (u, other))


def store_offline(stack, messages):
    """messages: [(uuid, msg_id, event dict)], stored oldest first."""
    conn = stack.mysql()
    try:
        with conn.cursor() as c:
            c.executemany("INSERT INTO offline_messages (uuid, msg_id, payload) VALUES (%s, %s, %s)",
                          [(u, m, json.dumps(e)) for u, m, e in messages])
    finally:
        conn.close()


def test_registration_burst_gets_everyone_online_with_their_messages_once(gateways, stack):
    """200 browsers connect at once, so their registrations travel in
    batches (session.c, batch.c: a REPLACE and a backlog query per batch):
    every one gets ONLINE, then exactly the messages stored for it, oldest
    first, once each - 60 have a few, 8 of them a backlog of several pages
    (whose first page takes the whole budget of the batch's answer, so the
    others of the batch get their first page by another task, their ONLINE
    still counting it whole).  Browsers that close right after the
    handshake, in the same burst, leave no online_clients row: their
    unregister must not overtake their registration.  (Its own node: 220
    handshakes at once may take longer than the module node's 500 ms
    header_timeout_ms.)"""
    g = gateways(header_timeout_ms=10000)
    tag = uid("burst")
    users = ["%s-u%d" % (tag, i) for i in range(200)]
    closers = ["%s-x%d" % (tag, i) for i in range(20)]
    stored = {u: ["%s-m%d" % (u, k) for k in range(1 + i % 3)] for i, u in enumerate(users[:60])}
    big = users[0:8]
    for u in big:
        stored[u] = ["%s-big%d" % (u, k) for k in range(24)]   # 24 x 8 KB: pages of 64K
    store_offline(stack, [(u, m, worksheet_event({"m": m, "pad": "p" * (8000 if u in big else 10)}, m))
                          for u, ids in stored.items() for m in ids])

    async def browser(u):
        ws = await ws_connect(g.port, token_for(u))
        try:
            ev = await recv_json(ws, 30)
            assert ev["event"] == "ONLINE" and ev["data"]["uuid"] == u, ev
            want, got = stored.get(u, []), []
            if u in big:
                assert 1 <= ev["data"]["offline"] < len(want) and ev["data"]["more_offline"], ev
            else:   # as if it registered alone: its whole page with ONLINE
                assert ev["data"]["offline"] == len(want) and "more_offline" not in ev["data"], ev
            while len(got) < len(want):
                m = await recv_json(ws, 30)
                got.append(m["id"])
                await send_json(ws, {"event": "ACK", "data": {"id": m["id"]}})
            assert got == want, u
            return ws
        except BaseException:
            await ws.close()
            raise

    async def closer(u):
        if u.endswith(("0", "2", "4", "6", "8")):   # gone as soon as the handshake is sent
            r = Raw(g.port)
            r.send(upgrade_request("/ws?token=" + token_for(u)))
            r.close()
        else:                                         # gone as soon as it is open
            ws = await ws_connect(g.port, token_for(u))
            await ws.close()

    async def go():
        done = await asyncio.gather(*(browser(u) for u in users), *(closer(u) for u in closers),
                                    return_exceptions=True)
        socks = [ws for ws in done[:len(users)] if not isinstance(ws, BaseException)]
        try:
            for r in done:
                if isinstance(r, BaseException):
                    raise r
            await asyncio.gather(*(quiet(ws, 0.5) for ws in socks))   # nothing twice
            assert db_rows(stack, "SELECT COUNT(*) FROM online_clients WHERE uuid LIKE %s",
                           (tag + "-u%",))[0][0] == len(users)
        finally:
            await asyncio.gather(*(ws.close() for ws in socks), return_exceptions=True)
    try:
        run(go(), timeout=120)
        wait_rows(lambda: db_rows(stack, "SELECT uuid FROM online_clients WHERE uuid LIKE %s",
                                  (tag + "-%",)), (), 15, "online_clients rows of the burst gone")
        wait_rows(lambda: db_rows(stack, "SELECT msg_id FROM offline_messages WHERE uuid LIKE %s",
                                  (tag + "-%",)), (), 15, "acknowledged messages deleted")
    finally:
        db_exec(stack, "DELETE FROM offline_messages WHERE uuid LIKE %s", (tag + "-%",))


def test_two_tabs_both_get_it(gw, stack, internal):
    u = uid()
    c = internal()

    async def go():
        w1, d1 = await online(gw.port, u)
        w2, d2 = await online(gw.port, u)
        try:
            r = await call(c, work_order("tabs-1", [(u, {"x": 1})], APP_TOKEN))
            ok_reply(r, "tabs-1", delivered=2)
            for ws in (w1, w2):
                assert await recv_json(ws) == worksheet_event({"x": 1}, "tabs-1")
                await send_json(ws, {"event": "ACK", "data": {"id": "tabs-1"}})
        finally:
            await w1.close()
            await w2.close()
    run(go())
    assert offline_rows(stack, u) == []


def test_one_online_one_offline(gw, stack, internal):
    on, off = uid("on"), uid("off")
    c = internal()

    async def go():
        ws, _ = await online(gw.port, on)
        try:
            r = await call(c, work_order("mixed-1", [(on, {"a": 1}), (off, {"b": 2})], APP_TOKEN))
            ok_reply(r, "mixed-1", delivered=1, stored=1)
            assert await recv_json(ws) == worksheet_event({"a": 1}, "mixed-1:0")
            await send_json(ws, {"event": "ACK", "data": {"id": "mixed-1:0"}})
        finally:
            await ws.close()
    run(go())
    rows = offline_rows(stack, off)
    assert [(m, p) for m, p, _ in rows] == [("mixed-1:1", worksheet_event({"b": 2}, "mixed-1:1"))]
    assert offline_rows(stack, on) == []


# ---- 5. ACK ----

def test_acked_message_is_not_delivered_again(gw, stack, internal):
    u = uid()
    c = internal()

    async def go():
        ws, _ = await online(gw.port, u)
        try:
            ok_reply(await call(c, work_order("ack-1", [(u, {"v": 1})], APP_TOKEN)), "ack-1", delivered=1)
            assert await recv_json(ws) == worksheet_event({"v": 1}, "ack-1")
            await send_json(ws, {"event": "ACK", "data": {"id": "ack-1"}})
            await asyncio.sleep(0.2)
        finally:
            await ws.close()
        gone_from_online(stack, u)
        await asyncio.sleep(0.3)
        assert offline_rows(stack, u) == []
        ws, data = await online(gw.port, u)
        try:
            assert data["offline"] == 0
            await quiet(ws, 0.5)
        finally:
            await ws.close()
    run(go())


def test_unacked_message_comes_back_after_reconnect(gw, stack, internal):
    u = uid()
    c = internal()

    async def go():
        ws, _ = await online(gw.port, u)
        try:
            ok_reply(await call(c, work_order("noack-1", [(u, {"v": 2})], APP_TOKEN)), "noack-1",
                     delivered=1)
            assert await recv_json(ws) == worksheet_event({"v": 2}, "noack-1")
        finally:
            await ws.close()
        wait_rows(lambda: [r[0] for r in offline_rows(stack, u)], ["noack-1"],
                  what="unacked message back in offline_messages")
        ws, data = await online(gw.port, u)
        try:
            assert data["offline"] == 1
            assert await recv_json(ws) == worksheet_event({"v": 2}, "noack-1")
            await send_json(ws, {"event": "ACK", "data": {"id": "noack-1"}})
            wait_rows(lambda: offline_rows(stack, u), [], what="row deleted after ACK")
        finally:
            await ws.close()
    run(go())


def test_ack_timeout_stores_the_message(gw, stack, internal):
    u = uid()
    c = internal()

    async def go():
        ws, _ = await online(gw.port, u)
        try:
            ok_reply(await call(c, work_order("late-1", [(u, {"v": 3})], APP_TOKEN)), "late-1",
                     delivered=1)
            start = time.monotonic()
            assert await recv_json(ws) == worksheet_event({"v": 3}, "late-1")
            assert offline_rows(stack, u) == []
            await asyncio.to_thread(wait_rows, lambda: [r[0] for r in offline_rows(stack, u)],
                                    ["late-1"], ACK_TIMEOUT + 4, "message stored after ack_timeout")
            elapsed = time.monotonic() - start
            assert elapsed >= ACK_TIMEOUT - 0.2, elapsed
            # the next connect (a second tab here) gets it again, same id
            ws2, data = await online(gw.port, u)
            try:
                assert data["offline"] == 1
                assert await recv_json(ws2) == worksheet_event({"v": 3}, "late-1")
                await send_json(ws2, {"event": "ACK", "data": {"id": "late-1"}})
                await asyncio.to_thread(wait_rows, lambda: offline_rows(stack, u), [], 6,
                                        "row deleted after the ACK")
            finally:
                await ws2.close()
            await quiet(ws, 0.2)
        finally:
            await ws.close()
        gone_from_online(stack, u)
        await asyncio.sleep(0.3)
        assert offline_rows(stack, u) == []
    run(go())


def test_ack_after_ack_timeout_deletes_the_stored_row(gw, stack, internal):
    u = uid()
    c = internal()

    async def go():
        ws, _ = await online(gw.port, u)
        try:
            ok_reply(await call(c, work_order("slow-ack", [(u, {"v": 4})], APP_TOKEN)), "slow-ack",
                     delivered=1)
            assert await recv_json(ws) == worksheet_event({"v": 4}, "slow-ack")
            await asyncio.to_thread(wait_rows, lambda: [r[0] for r in offline_rows(stack, u)],
                                    ["slow-ack"], ACK_TIMEOUT + 4, "message stored after ack_timeout")
            # the browser acknowledges late, on the same connection: the stored copy goes
            await send_json(ws, {"event": "ACK", "data": {"id": "slow-ack"}})
            await asyncio.to_thread(wait_rows, lambda: offline_rows(stack, u), [], 6,
                                    "stored copy deleted by the late ACK")
        finally:
            await ws.close()
        ws, data = await online(gw.port, u)
        try:
            assert data["offline"] == 0
            await quiet(ws, 0.3)
        finally:
            await ws.close()
    run(go())


def test_browser_that_never_acks_has_its_oldest_half_stored_at_max_pending_acks(gateways, stack):
    """max_pending_acks 10: at the 11th unacknowledged push the oldest 5 go
    back to offline_messages in one task; after 25 pushes 15 are stored and
    10 pending, and the close stores those 10 too."""
    g = gateways(max_pending_acks=10, ack_timeout=600)
    u = uid("noack")
    c = Internal(g.internal_port)

    async def go():
        ws, _ = await online(g.port, u)
        try:
            for i in range(25):
                ok_reply(await call(c, work_order("na-%d" % i, [(u, {"i": i})], APP_TOKEN)),
                         "na-%d" % i, delivered=1)
                assert (await recv_json(ws))["id"] == "na-%d" % i
            await asyncio.to_thread(wait_rows, lambda: sorted(r[0] for r in offline_rows(stack, u)),
                                    sorted("na-%d" % i for i in range(15)), 6,
                                    "the oldest 15 stored")
        finally:
            await ws.close()
        await asyncio.to_thread(wait_rows, lambda: len(offline_rows(stack, u)), 25, 6,
                                "all 25 stored after the close")
    try:
        run(go())
    finally:
        c.close()
        db_exec(stack, "DELETE FROM offline_messages WHERE uuid = %s", (u,))


async def push_unacknowledged(c, ws, u, ids):
    """Work orders of ~2 KB to u, one per id, each pushed to ws (never ACKed)."""
    for i, msg_id in enumerate(ids):
        ok_reply(await call(c, work_order(msg_id, [(u, {"i": i, "pad": "x" * 2000})], APP_TOKEN)),
                 msg_id, delivered=1)
        assert (await recv_json(ws))["id"] == msg_id


def test_browser_that_never_acks_is_held_to_max_pending_bytes(gateways, stack):
    """max_pending_bytes 8K with pushes of ~2 KB: no more than three are ever
    held for the browser (the older ones go back to the store while it is
    still connected), and the close stores the rest."""
    g = gateways(max_pending_bytes="8K", ack_timeout=600)
    u = uid("bytes")
    c = Internal(g.internal_port)
    ids = ["pb-%d" % i for i in range(10)]

    async def go():
        ws, _ = await online(g.port, u)
        try:
            await push_unacknowledged(c, ws, u, ids)
            await asyncio.to_thread(wait_rows, lambda: len(offline_rows(stack, u)) >= 7, True, 6,
                                    "all but the newest three at most stored while connected")
        finally:
            await ws.close()
        await asyncio.to_thread(wait_rows, lambda: sorted(r[0] for r in offline_rows(stack, u)),
                                sorted(ids), 6, "all 10 stored after the close")
    try:
        run(go())
    finally:
        c.close()
        db_exec(stack, "DELETE FROM offline_messages WHERE uuid = %s", (u,))


def test_unacknowledged_backlog_bigger_than_one_store_task_is_stored_whole(gateways, stack):
    """120 unacknowledged pushes of ~2 KB (about four of the worker's 64 KB
    store tasks) all reach offline_messages when the browser closes."""
    g = gateways(ack_timeout=600)
    u = uid("backlog")
    c = Internal(g.internal_port)
    ids = ["bl-%d" % i for i in range(120)]

    async def go():
        ws, _ = await online(g.port, u)
        try:
            await push_unacknowledged(c, ws, u, ids)
        finally:
            await ws.close()
        await asyncio.to_thread(wait_rows, lambda: sorted(r[0] for r in offline_rows(stack, u)),
                                sorted(ids), 10, "the whole backlog stored after the close")
    try:
        run(go())
    finally:
        c.close()
        db_exec(stack, "DELETE FROM offline_messages WHERE uuid = %s", (u,))


def test_browsers_filling_max_conn_do_not_lock_out_the_internal_port(gateways, stack):
    """max_conn 3 holds browsers; the internal port has internal_max_conn of
    its own, so a consumer still connects, and its order is delivered."""
    g = gateways(max_conn=3, internal_max_conn=2)
    users = [uid("full") for _ in range(3)]

    async def go():
        tabs = [(await online(g.port, u))[0] for u in users]
        try:
            with pytest.raises(Exception):
                extra, _ = await online(g.port, uid("over"))
                await extra.close()
            with Internal(g.internal_port) as a, Internal(g.internal_port) as b:
                ok_reply(a.call(work_order("full-1", [(users[0], {"v": 1})], APP_TOKEN)), "full-1",
                         delivered=1)
                assert (await recv_json(tabs[0]))["id"] == "full-1"
                await send_json(tabs[0], {"event": "ACK", "data": {"id": "full-1"}})
                b.call({"url": "/nowhere"})
                # the internal port's own limit: a third link is refused
                with pytest.raises((ConnectionError, OSError)):
                    with Internal(g.internal_port, timeout=2) as c:
                        c.call({"url": "/nowhere"}, timeout=2)
            await quiet(tabs[0], 0.3)
        finally:
            for t in tabs:
                await t.close()
    run(go())
    assert "max_conn reached" in g.log()


def test_work_order_racing_registration_reaches_the_browser(gateways, stack):
    """tasks.c: op_route reads online_clients (no row yet), then op_store
    INSERTs into offline_messages; op_register REPLACEs the online row and then
    SELECTs the offline messages.  When the route's read comes before the
    REPLACE and the INSERT after the SELECT, nobody delivers the message.  The
    window is widened here, deterministically, with a gap lock held by the test
    on the uuid's offline_messages range (the store's INSERT waits on it; the
    registration's plain SELECT does not).  Seen without any lock in a stress
    run too (1 in ~1000 connect + work order pairs)."""
    g = gateways(task_worker_num=4)
    for attempt in range(8):
        u = uid("race")
        lock = stack.mysql(autocommit=False)
        c = Internal(g.internal_port)
        try:
            with lock.cursor() as cur:
                cur.execute("SELECT id FROM offline_messages WHERE uuid = %s FOR UPDATE", (u,))
            c.c.send(json.dumps(work_order("race-1", [(u, {"r": 1})], APP_TOKEN)).encode())
            time.sleep(0.3)          # the store now waits in its INSERT

            async def go():
                ws = await ws_connect(g.port, token_for(u))
                try:
                    deadline = time.monotonic() + 1.5
                    while time.monotonic() < deadline and not online_rows(stack, u):
                        await asyncio.sleep(0.05)
                    registered = bool(online_rows(stack, u))
                    await asyncio.sleep(0.3)     # its SELECT of offline_messages is done
                    lock.commit()
                    reply = json.loads(await asyncio.to_thread(c.c.recv, 10))
                    got = []
                    try:
                        while True:
                            got.append(await recv_json(ws, 1.5))
                    except asyncio.TimeoutError:
                        pass
                    return registered, reply, got
                finally:
                    await ws.close()
            registered, reply, got = run(go())
        finally:
            lock.close()
            c.close()
        if not registered:
            continue     # the registration queued behind the blocked store: try again
        # stored, and pushed too once the second look found the new session
        ok_reply(reply, "race-1", delivered=1, stored=1)
        assert got[0]["event"] == "ONLINE"
        assert worksheet_event({"r": 1}, "race-1") in got, (
            "online browser never got the stored work order; offline_messages: %r"
            % offline_rows(stack, u))
        return
    pytest.fail("the registration never ran beside the blocked store in 8 attempts")


def test_task_worker_0_only_routes(gateways, stack):
    """With two task workers, registrations, unregisters, stores and the
    node's heartbeat go to task worker 1 (batch.c, gw_task_worker_of), so a
    slow INSERT never holds up a route: task worker 0 gets routes only."""
    g = gateways(task_worker_num=2, node_heartbeat_interval=1)

    def task_requests():
        return [w["requests"] for w in json.loads(http_get(g.port, "/stats")[2])["task_workers"]]
    before = task_requests()
    users = [uid("lane") for _ in range(6)]

    async def go():
        for u in users:
            ws, _ = await online(g.port, u)
            await ws.close()
    run(go())
    wait_until(lambda: not any(online_rows(stack, u) for u in users), 5, what="unregistered")
    assert task_requests()[0] == before[0], "a registration or unregister ran on task worker 0"
    c = Internal(g.internal_port)
    try:
        orders = 5
        for i in range(orders):
            ok_reply(run(call(c, work_order("lane-%d" % i, [(users[i], {"k": i})], APP_TOKEN))),
                     "lane-%d" % i, stored=1)
    finally:
        c.close()
    after = task_requests()
    # one route each, on either task worker; the store always on task worker 1
    assert after[0] - before[0] <= orders, (before, after)
    assert after[1] - before[1] >= len(users) + orders, (before, after)


def test_one_read_of_pipelined_orders_goes_to_one_worker(gateways):
    """The internal port deals reads, not packets, to the workers
    (round_robin_reads): the orders a consumer pipelines in one write are
    routed by one worker, in one task, instead of half by each; the next
    read goes to the next worker."""
    g = gateways(worker_num=2)

    def worker_requests():
        return [w["requests"] for w in json.loads(http_get(g.port, "/stats")[2])["workers"]]
    c = Internal(g.internal_port)
    takers = []
    try:
        for burst in range(2):
            before = worker_requests()
            ids = ["read-%d-%d" % (burst, i) for i in range(20)]
            c.c.send(*[json.dumps(work_order(m, [(uid("gone"), {"i": m})], APP_TOKEN)).encode()
                       for m in ids])
            replies = [json.loads(r) for r in c.c.recv_many(len(ids), timeout=15)]
            assert sorted(r["msg_id"] for r in replies) == sorted(ids)
            assert all(r["code"] == 0 for r in replies), replies
            delta = [a - b for a, b in zip(worker_requests(), before)]
            # each /stats request is one more packet for some worker
            assert max(delta) >= len(ids) and min(delta) <= 1, delta
            takers.append(delta.index(max(delta)))
    finally:
        c.close()
    assert takers[0] != takers[1], takers


# ---- 6. chat ----

def test_chat_between_two_local_users(gw, stack):
    a, b = uid("a"), uid("b")

    async def go():
        wa, _ = await online(gw.port, a)
        wb, _ = await online(gw.port, b)
        try:
            await send_json(wa, {"event": "NEW_MSG", "data": {"to": b, "msg": "你好 B"}})
            got = await recv_json(wb)
            assert got["event"] == "NEW_MSG", got
            assert set(got["data"]) == {"from", "msg", "id"}
            assert (got["data"]["from"], got["data"]["msg"]) == (a, "你好 B")
            cid = got["data"]["id"]
            assert isinstance(cid, str) and cid
            status = await recv_json(wa)
            assert status["event"] == "NEW_MSG_STATUS", status
            assert status["data"]["status"] == "delivered", status
            assert status["data"]["id"] == cid and status["data"]["to"] == b
            await send_json(wb, {"event": "ACK", "data": {"id": cid}})
            # a second message gets another id
            await send_json(wa, {"event": "NEW_MSG", "data": {"to": b, "msg": "again"}})
            got2 = await recv_json(wb)
            assert got2["data"]["msg"] == "again" and got2["data"]["id"] != cid
            await send_json(wb, {"event": "ACK", "data": {"id": got2["data"]["id"]}})
            assert (await recv_json(wa))["data"]["status"] == "delivered"
        finally:
            await wa.close()
            await wb.close()
    run(go())
    assert offline_rows(stack, b) == []


def test_chat_to_offline_user_is_stored_and_delivered_at_connect(gw, stack):
    a, c = uid("a"), uid("c")

    async def go():
        wa, _ = await online(gw.port, a)
        try:
            await send_json(wa, {"event": "NEW_MSG", "data": {"to": c, "msg": "later"}})
            status = await recv_json(wa)
            assert status["event"] == "NEW_MSG_STATUS" and status["data"]["status"] == "stored", status
            cid = status["data"]["id"]
            rows = offline_rows(stack, c)
            assert [r[0] for r in rows] == [cid]
            assert rows[0][1] == {"event": "NEW_MSG", "data": {"from": a, "msg": "later", "id": cid}}
            wc, data = await online(gw.port, c)
            try:
                assert data["offline"] == 1
                assert await recv_json(wc) == {"event": "NEW_MSG",
                                               "data": {"from": a, "msg": "later", "id": cid}}
                await send_json(wc, {"event": "ACK", "data": {"id": cid}})
                await asyncio.to_thread(wait_rows, lambda: offline_rows(stack, c), [], 6,
                                        "chat row deleted after ACK")
            finally:
                await wc.close()
        finally:
            await wa.close()
    run(go())


@pytest.mark.parametrize("data", [
    {"msg": "no to"},
    {"to": "", "msg": "empty to"},
    {"to": "x" * 64, "msg": "to too long"},
    {"to": "someone"},
    {"to": "someone", "msg": 42},
    None,
])
def test_bad_new_msg_gets_10104(gw, data):
    a = uid("a")

    async def go():
        ws, _ = await online(gw.port, a)
        try:
            ev = {"event": "NEW_MSG"}
            if data is not None:
                ev["data"] = data
            await send_json(ws, ev)
            err = await recv_json(ws)
            assert err == {"code": 10104, "msg": err["msg"], "data": []}, err
            await quiet(ws, 0.2)
        finally:
            await ws.close()
    run(go())


# ---- 7. chat_token ----

@pytest.mark.parametrize("kind", ["unknown", "disabled", "missing"])
def test_bad_chat_token_is_refused(gw, stack, internal, kind):
    on, off = uid("on"), uid("off")
    c = internal()
    token = uid("tok")
    if kind == "disabled":
        stack.add_app(token, name="disabled", enabled=False)

    async def go():
        ws, _ = await online(gw.port, on)
        try:
            req = work_order("badtok-1", [(on, {"v": 1}), (off, {"v": 2})], token)
            if kind == "missing":
                del req["chat_token"]
            r = await call(c, req)
            assert r["code"] == (10104 if kind == "missing" else 10201), r
            assert r["msg_id"] == "badtok-1"
            assert r.get("delivered", 0) == 0 and r.get("stored", 0) == 0, r
            await quiet(ws, 0.5)
        finally:
            await ws.close()
    run(go())
    assert offline_rows(stack, off) == []
    assert offline_rows(stack, on) == []
    # the same connection still serves a good request
    ok_reply(c.call(work_order("goodtok-1", [(off, {"v": 3})], APP_TOKEN)), "goodtok-1", stored=1)


# ---- 8. the internal port ----

def test_internal_bad_requests_keep_the_connection(gw, stack, internal):
    u = uid()
    c = internal()
    cases = [
        (b"this is not json", 10102, None),
        (b"[1,2,3]", 10102, None),
        # not JSON, but its sender wrote msg_id last (as the consumer does):
        # the refusal names it, so that the sender knows which was refused
        (b'{"url":"/worksheet/send-message","x":tru,"msg_id":"5-1"}', 10102, "5-1"),
        (b'{"x":tru, "msg_id" : "5-2" }\n', 10102, "5-2"),
        (b'{"x":tru,"msg_id":"5-3","handoff":true}', 10102, None),
        (b'{"x":tru,"msg_id":"5\\"-4"}', 10102, None),
        (b'"msg_id":"5-5"}', 10102, None),
        ({"msg_id": "r1", "chat_token": APP_TOKEN}, 10104, "r1"),
        ({"url": 42, "msg_id": "r2"}, 10104, "r2"),
        ({"url": "/nowhere", "msg_id": "r3", "chat_token": APP_TOKEN}, 10202, "r3"),
        ({"url": "/worksheet/send-message", "chat_token": APP_TOKEN, "msg_id": "r4",
          "data": {"uuid": u, "data": {}}}, 10104, "r4"),
        ({"url": "/worksheet/send-message", "chat_token": APP_TOKEN, "msg_id": "r5", "data": []},
         10104, "r5"),
        ({"url": "/worksheet/send-message", "chat_token": APP_TOKEN, "msg_id": "r6",
          "data": [{"data": {"x": 1}}]}, 10104, "r6"),
        ({"url": "/worksheet/send-message", "chat_token": APP_TOKEN, "msg_id": "r7",
          "data": [{"uuid": u, "data": {}}, {"uuid": "", "data": {}}]}, 10104, "r7"),
        ({"url": "/worksheet/send-message", "chat_token": APP_TOKEN, "msg_id": "r8",
          "data": [{"uuid": u}]}, 10104, "r8"),
        ({"url": "/worksheet/send-message", "chat_token": APP_TOKEN, "data": [{"uuid": u, "data": {}}]},
         10104, None),
        ({"url": "/chat/push-local", "chat_token": APP_TOKEN, "msg_id": "r9"}, 10104, "r9"),
    ]
    for req, code, msg_id in cases:
        r = c.call(req)
        assert r["code"] == code, (req, r)
        assert r["msg_id"] == msg_id, (req, r)
        assert isinstance(r["msg"], str) and r["msg"]
    assert offline_rows(stack, u) == []
    ok_reply(c.call(work_order("after-bad", [(u, {"ok": True})], APP_TOKEN)), "after-bad", stored=1)
    # requests pipelined in one write each get one reply (matched by msg_id: a
    # refusal made by the worker may overtake work orders routed by task workers)
    c.c.send(json.dumps(work_order("pipe-1", [(u, {"p": 1})], APP_TOKEN)).encode(), b"nope",
             json.dumps(work_order("pipe-2", [(u, {"p": 2})], APP_TOKEN)).encode())
    replies = {r["msg_id"]: r for r in (json.loads(c.c.recv()) for _ in range(3))}
    assert set(replies) == {"pipe-1", None, "pipe-2"}
    assert replies[None]["code"] == 10102
    ok_reply(replies["pipe-1"], "pipe-1", stored=1)
    ok_reply(replies["pipe-2"], "pipe-2", stored=1)
    assert c.c.quiet(0.3)
    assert sorted(r[0] for r in offline_rows(stack, u)) == ["after-bad", "pipe-1", "pipe-2"]


def test_internal_oversize_frame_closes_only_that_connection(gw, stack, internal):
    u = uid()
    keep = internal()
    big = internal()
    body = json.dumps(work_order("big-1", [(u, {"pad": "x" * (PACKAGE_MAX + 1000)})], APP_TOKEN)).encode()
    assert len(body) > PACKAGE_MAX
    try:
        big.c.send(body)
    except OSError:
        pass
    assert big.c.wait_closed(IO_TIMEOUT), "an oversize frame did not close its connection"
    # a header announcing too much closes as well, before the body arrives
    big2 = internal()
    big2.c.send_raw(struct.pack(">I", PACKAGE_MAX * 4))
    assert big2.c.wait_closed(IO_TIMEOUT)
    ok_reply(keep.call(work_order("small-1", [(u, {"ok": 1})], APP_TOKEN)), "small-1", stored=1)
    assert [r[0] for r in offline_rows(stack, u)] == ["small-1"]


def test_internal_eof_framing(gateways, stack):
    g = gateways(internal_eof=True)
    u = uid()
    c = Internal(g.internal_port, eof=True)
    try:
        ok_reply(c.call(work_order("eof-1", [(u, {"e": 1})], APP_TOKEN)), "eof-1", stored=1)
        assert c.call(b"{broken")["code"] == 10102
        # two requests in one write: two replies, each ending with the marker
        c.c.send_raw(json.dumps(work_order("eof-2", [(u, {"e": 2})], APP_TOKEN)).encode() +
                     b"\r\n\r\n" + json.dumps({"url": "/x", "msg_id": "eof-3"}).encode() + b"\r\n\r\n")
        replies = {r["msg_id"]: r for r in (json.loads(c.c.recv()) for _ in range(2))}
        ok_reply(replies["eof-2"], "eof-2", stored=1)
        assert replies["eof-3"]["code"] == 10202
        assert c.c.buf == b""
    finally:
        c.close()
    assert [r[0] for r in offline_rows(stack, u)] == ["eof-1", "eof-2"]

    async def go():
        ws, data = await online(g.port, u)
        try:
            assert data["offline"] == 2
            assert [await recv_json(ws) for _ in range(2)] == [
                worksheet_event({"e": 1}, "eof-1"), worksheet_event({"e": 2}, "eof-2")]
        finally:
            await ws.close()
    run(go())


# ---- 9. browser robustness ----

@pytest.mark.parametrize("text,code", [
    ("this is not json", 10102),
    ("[1, 2]", 10102),
    ('"event"', 10102),
    ('{"data": {}}', 10101),
    ('{"event": 7}', 10101),
    ('{"event": "NO_SUCH_EVENT", "data": {}}', 10101),
    ('{"event": "ACK", "data": {}}', 10104),
])
def test_browser_bad_messages_get_error_objects(gw, text, code):
    async def go():
        ws, _ = await online(gw.port, uid())
        try:
            await ws.send(text)
            err = await recv_json(ws)
            assert err == {"code": code, "msg": err["msg"], "data": []}, (text, err)
            assert isinstance(err["msg"], str) and err["msg"]
            # the socket stays usable
            await send_json(ws, {"event": "HEART_BEAT"})
            assert (await recv_json(ws))["event"] == "HEART_BEAT"
        finally:
            await ws.close()
    run(go())


def test_browser_binary_frame_closes_1003(gw):
    async def go():
        ws, _ = await online(gw.port, uid())
        try:
            await ws.send(b"\x00\x01binary")
            code, got = await closed_with(ws)
            assert code == 1003 and got == []
        finally:
            await ws.close()
    run(go())


def test_browser_message_over_package_max_length_closes_1009(gw):
    async def go():
        ws, _ = await online(gw.port, uid())
        try:
            await ws.send(json.dumps({"event": "HEART_BEAT", "data": {"pad": "p" * PACKAGE_MAX}}))
            code, got = await closed_with(ws)
            assert code == 1009 and got == []
        finally:
            await ws.close()
    run(go())


def test_browser_invalid_utf8_closes_1007(gw):
    u = uid()
    r = Raw(gw.port)
    try:
        r.handshake("/ws?token=" + token_for(u))
        payload, _ = r.read_until(0x1)
        assert json.loads(payload)["event"] == "ONLINE"
        r.send(frame(0x1, b'{"event":"HEART_BEAT","data":"\xc0\xaf"}'))
        code, _, others = r.read_close()
        assert code == 1007
        assert others == []
        assert r.wait_eof()
    finally:
        r.close()


def test_wrong_websocket_version_gets_426(gw):
    r = Raw(gw.port)
    try:
        r.send(upgrade_request("/ws?token=" + token_for(uid()), version="8"))
        status, headers, _ = r.read_response()
        assert status == 426
        assert headers.get("sec-websocket-version") == "13"
        assert r.wait_eof()
    finally:
        r.close()


def test_slow_header_sender_gets_408(gw):
    r = Raw(gw.port)
    try:
        start = time.monotonic()
        r.send(upgrade_request()[:30])
        status, _, _ = r.read_response(timeout=HEADER_TIMEOUT_MS / 1000 + 3)
        elapsed = time.monotonic() - start
        assert status == 408
        assert HEADER_TIMEOUT_MS / 1000 - 0.15 <= elapsed <= HEADER_TIMEOUT_MS / 1000 + 2, elapsed
        assert r.wait_eof()
    finally:
        r.close()


# ---- 10. stale client_id on /chat/push-local ----

def push_local(client_id, uuid, remote_data, token=APP_TOKEN, msg_id="pl-1"):
    return {"url": "/chat/push-local", "chat_token": token, "client_id": client_id, "uuid": uuid,
            "remote_data": remote_data, "msg_id": msg_id}


def test_push_local_refuses_stale_client_id(gw, stack, internal):
    u, other = uid("x"), uid("o")
    c = internal()
    event = {"event": "WorksheetMsg", "response": {}, "id": "p1"}

    async def go():
        wx, dx = await online(gw.port, u)
        x_id = dx["client_id"]
        await wx.close()
        gone_from_online(stack, u)
        wy, dy = await online(gw.port, u)           # same uuid, new connection
        wz, dz = await online(gw.port, other)       # another uuid
        try:
            y_id = dy["client_id"]
            assert y_id != x_id
            r = await call(c, push_local(x_id, u, event))
            assert r["code"] == 10203 and r["msg_id"] == "pl-1", r
            r = await call(c, push_local(y_id, other, event))
            assert r["code"] == 10203, r
            r = await call(c, push_local(dz["client_id"], u, event))
            assert r["code"] == 10203, r
            # a client_id of another node, or not a client_id at all
            ip, port, session = decode_client_id(y_id)
            for bad in [make_client_id("127.0.0.9", port, session),
                        make_client_id(ip, port + 1, session), "bm90IGEgY2xpZW50IGlk", "%%%"]:
                r = await call(c, push_local(bad, u, event))
                assert r["code"] == 10203, (bad, r)
            await quiet(wy, 0.3)
            await quiet(wz, 0.1)
            # wrong chat_token: refused whatever the target
            r = await call(c, push_local(y_id, u, event, token="not-an-app-token"))
            assert r["code"] == 10201, r
            await quiet(wy, 0.3)
            # the right one: delivered exactly as given
            r = await call(c, push_local(y_id, u, event, msg_id="pl-2"))
            assert r["code"] == 0 and r["msg"] == "delivered" and r["msg_id"] == "pl-2", r
            raw = await asyncio.wait_for(wy.recv(), IO_TIMEOUT)
            assert json.loads(raw) == event
            await send_json(wy, {"event": "ACK", "data": {"id": "p1"}})
            await quiet(wy, 0.3)
            await quiet(wz, 0.1)
        finally:
            await wy.close()
            await wz.close()
    run(go())
    assert offline_rows(stack, u) == []


def test_push_local_event_arrives_as_its_text_says(gw, stack, internal):
    """remote_data goes to the browser as the bytes it came in (not printed
    again): spaces and key order stay; of a repeated member the last counts,
    as in the parse that checked it; an escaped member name is printed from
    the parse instead.  Each way the browser gets the same event."""
    u = uid("raw")
    c = internal()

    async def go():
        ws, data = await online(gw.port, u)
        try:
            cid = data["client_id"]
            head = ('{"url":"/chat/push-local","chat_token":%s,"client_id":%s,"uuid":%s,'
                    % (json.dumps(APP_TOKEN), json.dumps(cid), json.dumps(u)))
            spaced = ('{ "id" : "raw-1" ,  "response" : { "b" : [ 1 , 2 ] , "a" : "\\u00e9}" },'
                      '"event":"WorksheetMsg" }')
            texts = {
                "raw-1": head + '"msg_id":"m1","remote_data" : ' + spaced + " }",
                "raw-2": head + '"remote_data":{"id":"x"},"msg_id":"m2","remote_data":'
                                '{"event":"WorksheetMsg","response":{},"id":"raw-2"}}',
                "raw-3": head + '"msg_id":"m3","remote\\u005fdata":'
                                '{"event":"WorksheetMsg","response":{"k":1},"id":"raw-3"}}',
            }
            for want, text in texts.items():
                r = await call(c, text.encode())
                assert r["code"] == 0, (want, r)
                got = await asyncio.wait_for(ws.recv(), IO_TIMEOUT)
                assert json.loads(got)["id"] == want, got
                if want == "raw-1":
                    assert got == spaced
                await send_json(ws, {"event": "ACK", "data": {"id": want}})
            await quiet(ws, 0.3)
        finally:
            await ws.close()
    run(go())


# ---- 11. HTTP ----

def test_http_healthz_stats_metrics(gw, internal):
    status, headers, body = http_get(gw.port, "/healthz")
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert json.loads(body)["status"] == "ok"

    u = uid()

    async def go():
        ws, _ = await online(gw.port, u)
        try:
            ok_reply(await call(internal(), work_order("stats-1", [(u, {})], APP_TOKEN)), "stats-1",
                     delivered=1)
            await recv_json(ws)
            await send_json(ws, {"event": "ACK", "data": {"id": "stats-1"}})
            await asyncio.sleep(0.2)
            status, headers, body = http_get(gw.port, "/stats")
            assert status == 200 and headers["content-type"].startswith("application/json")
            st = json.loads(body)
            assert st["connections"] >= 1
            for k in ("in", "pushed", "stored", "acked"):
                assert isinstance(st["messages"][k], int), k
            assert st["messages"]["in"] >= 1 and st["messages"]["pushed"] >= 1
            assert st["messages"]["acked"] >= 1
            assert len(st["workers"]) == 2 and len(st["task_workers"]) == 2
            assert all(w["pid"] > 0 for w in st["workers"] + st["task_workers"])
            assert st["mysql"]["ok"] is True
            assert st["node"] == gw.node_id
            status, headers, body = http_get(gw.port, "/metrics")
            assert status == 200 and headers["content-type"].startswith("text/plain")
            metrics = {}
            for line in body.decode().splitlines():
                if line and not line.startswith("#"):
                    name, value = line.split()
                    metrics[name] = float(value)
            assert metrics["pushgate_connections"] >= 1
            assert metrics["pushgate_pushed_total"] >= 1
            assert metrics["pushgate_mysql_up"] == 1
        finally:
            await ws.close()
    run(go())


def test_http_static_files(gw):
    status, headers, body = http_get(gw.port, "/")
    assert status == 200 and body == INDEX_HTML
    assert headers["content-type"].startswith("text/html")
    status, _, body = http_get(gw.port, "/index.html")
    assert status == 200 and body == INDEX_HTML
    for path in ["/missing", "/missing.js", "/../etc/passwd", "/%2e%2e/etc/passwd",
                 "/..%2fetc%2fpasswd", "//etc/passwd"]:
        status, _, body = http_get(gw.port, path)
        assert status == 404, (path, status, body)
        assert b"root:" not in body


def test_http_head_has_no_body(gw):
    r = Raw(gw.port)
    try:
        r.send(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + IO_TIMEOUT
        while b"\r\n\r\n" not in r.buf:
            r._fill(deadline)
        head, rest = r.buf.split(b"\r\n\r\n", 1)
        r.buf = rest
        assert head.startswith(b"HTTP/1.1 200")
        assert r.wait_eof()
        assert r.buf == b"", "HEAD response body: %r" % r.buf
    finally:
        r.close()


def test_stats_mysql_ok_right_after_start(gateways):
    g = gateways(node_heartbeat_interval=60)
    st = json.loads(http_get(g.port, "/stats")[2])
    metrics = http_get(g.port, "/metrics")[2].decode()
    assert st["mysql"]["ok"] is True, st["mysql"]
    assert "pushgate_mysql_up 1" in metrics


# ---- 12. node lifecycle ----

def node_row(stack, node_id):
    rows = db_rows(stack, "SELECT ip, ws_port, internal_port, boot_generation, state, heartbeat_at "
                          "FROM gateway_nodes WHERE node_id = %s", (node_id,))
    return rows[0] if rows else None


def test_node_row_and_heartbeat(gw, stack):
    row = node_row(stack, gw.node_id)
    assert row is not None
    ip, ws_port, internal_port, generation, state, hb1 = row
    assert (ip, ws_port, internal_port, state) == (HOST, gw.port, gw.internal_port, "up")
    assert generation > 0
    wait_until(lambda: node_row(stack, gw.node_id)[5] > hb1, 5, interval=0.2,
               what="heartbeat_at to advance")


def test_dead_node_is_swept_with_its_clients(gw, stack):
    fake = "127.0.0.42:7777"
    victim, bystander = uid("v"), uid("b")
    db_exec(stack, "REPLACE INTO gateway_nodes (node_id, ip, ws_port, internal_port, boot_generation, "
                   "heartbeat_at) VALUES (%s, '127.0.0.42', 7501, 7777, 5, "
                   "CURRENT_TIMESTAMP(3) - INTERVAL 1 HOUR)", (fake,))
    db_exec(stack, "INSERT INTO online_clients (client_id, uuid, node_ip, node_port, session_id) "
                   "VALUES (%s, %s, '127.0.0.42', 7777, 77)", (make_client_id("127.0.0.42", 7777, 77), victim))
    # a row of another (fake) address with no node row is not the sweeper's business
    db_exec(stack, "INSERT INTO online_clients (client_id, uuid, node_ip, node_port, session_id) "
                   "VALUES (%s, %s, '127.0.0.43', 7777, 78)", (make_client_id("127.0.0.43", 7777, 78), bystander))
    try:
        wait_until(lambda: node_row(stack, fake) is None and online_rows(stack, victim) == (), 6,
                   interval=0.2, what="the dead node and its online row to be swept")
        assert len(online_rows(stack, bystander)) == 1
        assert node_row(stack, gw.node_id) is not None
    finally:
        db_exec(stack, "DELETE FROM online_clients WHERE uuid IN (%s, %s)", (victim, bystander))
        db_exec(stack, "DELETE FROM gateway_nodes WHERE node_id = %s", (fake,))


def test_node_swept_while_alive_registers_again(gw, stack):
    db_exec(stack, "DELETE FROM gateway_nodes WHERE node_id = %s", (gw.node_id,))
    row = wait_until(lambda: node_row(stack, gw.node_id), 5, interval=0.1,
                     what="the node's row to come back")
    assert row[:3] == (HOST, gw.port, gw.internal_port) and row[4] == "up"


def test_node_swept_while_alive_keeps_its_boot_generation(gw, stack):
    db_exec(stack, "DELETE FROM gateway_nodes WHERE node_id = %s", (gw.node_id,))
    row = wait_until(lambda: node_row(stack, gw.node_id), 5, interval=0.1,
                     what="the node's row to come back")
    assert row[3] == gw.boot_generation, "boot_generation %d (at start) became %d" % (
        gw.boot_generation, row[3])


def test_node_swept_while_alive_puts_back_only_browsers_that_answer(gateways, stack):
    """What another node's sweep does to a live node (its gateway_nodes and
    online_clients rows deleted); an order for one of its browsers, entering
    at another node meanwhile, is stored.  The swept node pings its sessions
    (rejoin.c): the browser that answers gets its row back and the stored
    order, with no reconnect and no second ONLINE; a connection that does not
    answer (its browser gone elsewhere) gets no row, and is closed with 1012
    once 10 s have passed."""
    a, b = gateways(), gateways()
    live, gone = uid("live"), uid("gone")
    silent = Raw(a.port)
    silent.handshake(path="/ws?token=" + token_for(gone))
    silent.read_until(0x1)                                   # its ONLINE; then it says nothing

    async def go():
        ws, _ = await online(a.port, live)
        try:
            assert len(online_rows(stack, live)) == 1 and len(online_rows(stack, gone)) == 1
            db_exec(stack, "DELETE FROM online_clients WHERE node_ip = %s AND node_port = %s",
                    (HOST, a.internal_port))
            db_exec(stack, "DELETE FROM gateway_nodes WHERE node_id = %s", (a.node_id,))
            c = Internal(b.internal_port)
            try:
                ok_reply(await call(c, work_order("while-swept", [(live, {"o": 1})], APP_TOKEN)),
                         "while-swept", stored=1)
            finally:
                c.close()
            ev = await recv_json(ws, 10)          # no ONLINE first
            assert ev == worksheet_event({"o": 1}, "while-swept"), ev
            await send_json(ws, {"event": "ACK", "data": {"id": "while-swept"}})
            wait_until(lambda: len(online_rows(stack, live)) == 1, 5, interval=0.1,
                       what="the live browser's row back")
            silent.read_until(0x9)                 # a ping, left unanswered
            assert online_rows(stack, gone) == ()
            code, reason, _ = silent.read_close(timeout=15)
            assert code == 1012, (code, reason)
            assert online_rows(stack, gone) == () and len(online_rows(stack, live)) == 1
            wait_until(lambda: not offline_rows(stack, live), 5, interval=0.1,
                       what="the ACK to delete the stored order")
            await quiet(ws, 0.3)
        finally:
            await ws.close()
    try:
        run(go(), timeout=40)
    finally:
        silent.close()


def handoff_replies(internal, port, uuid, msg_id, ack_after):
    """A work order with "handoff" to uuid's browser, which ACKs it after
    ack_after s; every reply the sender gets within 1 s of the ACK."""
    async def go():
        ws, _ = await online(port, uuid)
        c = internal()
        try:
            order = dict(work_order(msg_id, [(uuid, {"o": 1})], APP_TOKEN), handoff=True)
            c.c.send(json.dumps(order).encode())
            assert (await recv_json(ws))["id"] == msg_id
            await asyncio.sleep(ack_after)
            await send_json(ws, {"event": "ACK", "data": {"id": msg_id}})
            replies = []
            while True:
                try:
                    replies.append(json.loads(await asyncio.to_thread(c.c.recv, 1.0)))
                except (socket.timeout, TimeoutError):
                    return replies
        finally:
            await ws.close()
    return run(go())


def test_handoff_one_reply_when_the_browser_acks_at_once(gw, internal):
    """handoff.c holds the first reply up to 500 ms: a browser that ACKs
    within that gets the sender one reply, with no "pending" and no final
    one after it."""
    replies = handoff_replies(internal, gw.port, uid("h1"), "ho-1", 0)
    assert len(replies) == 1, replies
    r = replies[0]
    assert r["code"] == 0 and r["delivered"] == 1 and "pending" not in r and "final" not in r, r


def test_handoff_two_replies_when_the_ack_is_late(gw, internal):
    """Past the hold, the first reply says what still waits; the final one
    follows the ACK."""
    replies = handoff_replies(internal, gw.port, uid("h2"), "ho-2", 0.8)
    assert len(replies) == 2, replies
    first, final = replies
    assert first["code"] == 0 and first["pending"] == 1 and "final" not in first, first
    assert final["code"] == 0 and final["final"] is True and final["acked"] == 1, final


def test_restart_after_crash_takes_next_generation_and_clears_old_rows(gateways, stack):
    port = free_port()
    g1 = gateways(internal_port=port)
    u, ghost = uid("u"), uid("ghost")
    gen1 = node_row(stack, g1.node_id)[3]

    async def connect_and_crash():
        ws, data = await online(g1.port, u)
        assert len(online_rows(stack, u)) == 1
        db_exec(stack, "INSERT INTO online_clients (client_id, uuid, node_ip, node_port, session_id) "
                       "VALUES (%s, %s, %s, %s, 424242)",
                (make_client_id(HOST, port, 424242), ghost, HOST, port))
        g1.snapshot()
        g1.expected_exit = None
        g1.kill_all()          # kill -9 of every process of the node: nothing cleaned up
        g1.stopped = True
        code, _ = await closed_with(ws)
        assert code == 1006
        await ws.close()
    run(connect_and_crash())
    assert node_row(stack, g1.node_id) is not None
    assert len(online_rows(stack, u)) == 1 and len(online_rows(stack, ghost)) == 1

    g2 = gateways(internal_port=port)
    row = node_row(stack, g2.node_id)
    assert row[3] == gen1 + 1, (gen1, row)
    assert row[4] == "up"
    assert online_rows(stack, u) == () and online_rows(stack, ghost) == ()
    assert db_rows(stack, "SELECT COUNT(*) FROM online_clients WHERE node_ip = %s AND node_port = %s",
                   (HOST, port)) == ((0,),)

    async def serves():
        ws, data = await online(g2.port, u)
        try:
            assert decode_client_id(data["client_id"])[1] == port
        finally:
            await ws.close()
    run(serves())


def test_clean_restart_within_a_second_takes_a_new_generation(gateways, stack):
    """node.c gw_node_register: generation = previous + 1 only while the row
    exists; gw_node_unregister deletes it at a clean stop, and the fallback is
    the clock in seconds.  Stop and start fit well inside one second here."""
    port = free_port()
    frac = time.time() % 1
    if frac > 0.1:
        time.sleep(1.02 - frac)        # begin just after a second boundary
    u1, u2 = uid("a"), uid("b")

    async def first_client(g, u):
        ws, data = await online(g.port, u)
        await ws.close()
        return data["client_id"]
    g1 = gateways(internal_port=port)
    gen1 = node_row(stack, g1.node_id)[3]
    c1 = run(first_client(g1, u1))
    g1.stop()
    g1.check_clean()
    g2 = gateways(internal_port=port)
    gen2 = node_row(stack, g2.node_id)[3]
    c2 = run(first_client(g2, u2))
    assert gen2 > gen1, "boot generation %d after %d" % (gen2, gen1)
    assert c2 != c1, "client_id %s handed out again: %s" % (c1, decode_client_id(c1))


def test_a_stopping_node_does_not_reset_a_browser_still_sending(gateways):
    """A node stops reading its browsers when it stops, and closes them once
    its workers are gone.  A browser sending meanwhile has input the node
    never read; closing such a socket makes the kernel reset it, and a reset
    can destroy the close frame (the browser sees 1006, not 1001).  So the
    close frame must be followed by a clean end of stream."""
    g = gateways()
    raw = Raw(g.port)
    raw.handshake()
    g.stopped = True
    g.send_signal(signal.SIGTERM)
    ping = bytes([0x89, 0x80]) + b"mask"        # an empty masked ping
    sent_until = time.monotonic() + 0.5
    try:
        while time.monotonic() < sent_until:
            raw.send(ping)
            time.sleep(0.005)
    except (BrokenPipeError, ConnectionResetError) as e:
        pytest.fail("reset while the node stopped: %s" % e)
    code, _, _ = raw.read_close(timeout=10)
    assert code == 1001
    try:
        assert raw.sock.recv(65536) == b"", "data after the close frame"
    except ConnectionResetError:
        pytest.fail("the close frame was followed by a reset, not a clean end of stream")
    finally:
        raw.sock.close()
    g.wait_master_exit(20)
    assert g.exit_code == 0, g.sanitizer_text()[-4000:]


def test_sigterm_closes_1001_and_removes_rows(gateways, stack):
    g = gateways()
    u1, u2 = uid("a"), uid("b")

    async def go():
        w1, _ = await online(g.port, u1)
        w2, _ = await online(g.port, u2)
        assert len(db_rows(stack, "SELECT 1 FROM online_clients WHERE node_ip = %s AND node_port = %s",
                           (HOST, g.internal_port))) == 2
        # u1 has a message it has not acknowledged when the node stops
        c = Internal(g.internal_port)
        try:
            ok_reply(await call(c, work_order("term-1", [(u1, {"t": 1})], APP_TOKEN)), "term-1",
                     delivered=1)
        finally:
            c.close()
        assert await recv_json(w1) == worksheet_event({"t": 1}, "term-1")
        g.snapshot()
        g.stopped = True
        g.send_signal(signal.SIGTERM)
        try:
            for ws in (w1, w2):
                code, _ = await closed_with(ws, timeout=10)
                assert code == 1001
        finally:
            await w1.close()
            await w2.close()
    run(go())
    g.wait_master_exit(20)
    assert g.exit_code == 0, g.sanitizer_text()[-4000:]
    assert node_row(stack, g.node_id) is None
    assert db_rows(stack, "SELECT COUNT(*) FROM online_clients WHERE node_ip = %s AND node_port = %s",
                   (HOST, g.internal_port)) == ((0,),)
    # what was not acknowledged went back to the store before the node exited
    assert [(m, p) for m, p, _ in offline_rows(stack, u1)] == [
        ("term-1", worksheet_event({"t": 1}, "term-1"))]
    assert offline_rows(stack, u2) == []
    g.check_clean()


# ---- 14. the proxy is unreachable ----

def test_unreachable_proxy_stores_the_message(gateways, stack):
    closed = free_port()
    g = gateways(proxy="%s:%d" % (HOST, closed), chat_token=APP_TOKEN)
    r_uuid, a = uid("remote"), uid("a")
    remote_id = make_client_id("127.0.0.9", 9, 99)
    db_exec(stack, "INSERT INTO online_clients (client_id, uuid, node_ip, node_port, session_id) "
                   "VALUES (%s, %s, '127.0.0.9', 9, 99)", (remote_id, r_uuid))
    try:
        c = Internal(g.internal_port)
        try:
            r = c.call(work_order("via-proxy-1", [(r_uuid, {"far": 1})], APP_TOKEN), timeout=15)
            ok_reply(r, "via-proxy-1", stored=1)
        finally:
            c.close()
        rows = offline_rows(stack, r_uuid)
        assert [(m, p) for m, p, _ in rows] == [("via-proxy-1", worksheet_event({"far": 1}, "via-proxy-1"))]

        # a chat message to that user is stored the same way
        async def go():
            ws, _ = await online(g.port, a)
            try:
                await send_json(ws, {"event": "NEW_MSG", "data": {"to": r_uuid, "msg": "far away"}})
                status = await recv_json(ws, timeout=15)
                assert status["event"] == "NEW_MSG_STATUS" and status["data"]["status"] == "stored", status
            finally:
                await ws.close()
        run(go())
        assert len(offline_rows(stack, r_uuid)) == 2
    finally:
        db_exec(stack, "DELETE FROM online_clients WHERE client_id = %s", (remote_id,))


# ---- 13. MySQL hangs, then restarts, under a running gateway (last: they disturb the stack) ----

def test_hung_mysql_is_answered_try_again_later(gw, stack, internal):
    """A MySQL that hangs instead of refusing holds a task worker, and every
    task behind it, for as long as it lasts.  An order that needs it (its
    uuid is not in the route cache, or it must be stored) is answered
    10503, try again later, once it has waited mysql_wait_ms (2 s by
    default): not left to time out, which would cost the sender an attempt.
    What MySQL does once it is back (the store of the order given up on)
    leaves one row, as storing it again does.  So with a push relayed by the
    proxy whose chat_token the node has not checked yet."""
    c = internal()
    overdue = json.loads(http_get(gw.port, "/stats")[2])["mysql"]["overdue"]
    known, fresh, new_app = uid("known"), uid("fresh"), uid("app")
    stack.add_app(new_app, name="e2e-hung")
    ok_reply(c.call(work_order("warm-1", [(known, {"w": 1})], APP_TOKEN), timeout=15), "warm-1", stored=1)
    relayed = push_local("bm90IGEgY2xpZW50IGlk", known, {"event": "WorksheetMsg"}, token=new_app,
                         msg_id="hung-token")
    requests = [work_order("hung-store", [(known, {"h": 1})], APP_TOKEN),
                work_order("hung-route", [(fresh, {"h": 1})], APP_TOKEN), relayed]
    stack.freeze_mysql()
    try:
        for req in requests:
            t0 = time.monotonic()
            r = c.call(req, timeout=15)
            waited = time.monotonic() - t0
            assert r["code"] == 10503 and r["msg_id"] == req["msg_id"], r
            assert 1.9 <= waited <= 6, "%s answered after %.2f s" % (req["msg_id"], waited)
    finally:
        stack.freeze_mysql(False)
    assert json.loads(http_get(gw.port, "/stats")[2])["mysql"]["overdue"] == overdue + 3
    for req in requests[:2]:
        ok_reply(c.call(req, timeout=30), req["msg_id"], stored=1)
    assert c.call(relayed, timeout=30)["code"] == 10203   # checked now: the client_id is none
    assert sorted(m for m, _, _ in offline_rows(stack, known)) == ["hung-store", "warm-1"]
    assert [m for m, _, _ in offline_rows(stack, fresh)] == ["hung-route"]


def test_mysql_restart_while_running(gw, stack, internal):
    u, late = uid("u"), uid("late")
    c = internal()

    async def go():
        ws, _ = await online(gw.port, u)
        try:
            # From this (the main) thread: the fixture's mariadbd dies with the
            # thread that started it (PR_SET_PDEATHSIG), so no asyncio.to_thread here.
            stack.stop_mysql()
            try:
                # MySQL down: the work order is refused with "retry later" (10503), not lost silently
                r = await call(c, work_order("down-1", [(u, {"d": 1})], APP_TOKEN))
                assert r["code"] == 10503 and r["msg_id"] == "down-1", r
                # a batch of registrations fails as a whole: each browser hears 1011
                socks = await asyncio.gather(*(ws_connect(gw.port, token_for(uid("down")))
                                               for _ in range(5)))
                closed = await asyncio.gather(*(closed_with(ws, 15) for ws in socks))
                assert closed == [(1011, [])] * 5, closed
            finally:
                stack.start_mysql()
            r = await call(c, work_order("up-1", [(u, {"d": 2})], APP_TOKEN))
            ok_reply(r, "up-1", delivered=1)
            # down-1 may have reached u all the same, from the node's own uuid
            # index, if the worker still knew the token: the retry asked for
            # covers the sessions MySQL could not name
            got = await recv_json(ws)
            if got == worksheet_event({"d": 1}, "down-1"):
                got = await recv_json(ws)
            assert got == worksheet_event({"d": 2}, "up-1")
            await send_json(ws, {"event": "ACK", "data": {"id": "up-1"}})
            # a browser registering now works too, and offline storing
            ok_reply(await call(c, work_order("up-2", [(late, {"d": 3})], APP_TOKEN)), "up-2", stored=1)
            wl, data = await online(gw.port, late)
            try:
                assert data["offline"] == 1
                assert await recv_json(wl) == worksheet_event({"d": 3}, "up-2")
                await send_json(wl, {"event": "ACK", "data": {"id": "up-2"}})
            finally:
                await wl.close()
        finally:
            await ws.close()
    try:
        run(go(), timeout=90)
    finally:
        if stack.mysql_pid is None:
            stack.start_mysql()
    wait_until(lambda: json.loads(http_get(gw.port, "/stats")[2])["mysql"]["ok"], 5, interval=0.2,
               what="/stats mysql.ok")
    assert node_row(stack, gw.node_id)[4] == "up"


def test_mysql_outage_longer_than_node_dead_after_keeps_clients_routable(gateways, stack):
    """node.c heartbeat(): UPDATE own row, then DELETE online_clients of every
    node whose heartbeat_at is older than node_dead_after.  After an outage
    every other node's heartbeat_at is old, so whichever node comes first
    sweeps the rest; the swept node notices (touched == 0) and REPLACEs its
    gateway_nodes row, but nothing puts its sessions back in online_clients."""
    a = gateways(node_dead_after=2)
    b = gateways(node_dead_after=2)
    ua, ub = uid("a"), uid("b")

    async def go():
        wa, _ = await online(a.port, ua)
        wb, _ = await online(b.port, ub)
        try:
            stack.stop_mysql()
            try:
                await asyncio.sleep(4.5)
            finally:
                stack.start_mysql()
            await asyncio.sleep(2.5)           # both nodes heartbeat again
            assert node_row(stack, a.node_id)[4] == "up" and node_row(stack, b.node_id)[4] == "up"
            results = {}
            for g, u, ws in ((a, ua, wa), (b, ub, wb)):
                c = Internal(g.internal_port)
                try:
                    r = await call(c, work_order("after-outage", [(u, {"o": 1})], APP_TOKEN))
                finally:
                    c.close()
                got = None
                try:
                    got = await recv_json(ws, 1.0)
                    await send_json(ws, {"event": "ACK", "data": {"id": "after-outage"}})
                except asyncio.TimeoutError:
                    pass
                results[u] = (r, got, online_rows(stack, u))
            for u, (r, got, rows) in results.items():
                assert r["code"] == 0 and r["delivered"] == 1 and \
                    got == worksheet_event({"o": 1}, "after-outage"), (
                        "%s is connected but not routable: reply %r, online rows %r" % (u, r, rows))
        finally:
            await wa.close()
            await wb.close()
    try:
        run(go(), timeout=60)
    finally:
        if stack.mysql_pid is None:
            stack.start_mysql()


def test_mysql_hang_gets_no_live_node_swept(gateways, stack):
    """node.c heartbeat(): a MySQL that hangs (SIGSTOP) rather than refuses
    lets the heartbeat in flight succeed when it wakes, with no failure seen.
    The node whose beat that was must not sweep the others at once: their
    beats may come a moment later (here b's heartbeat writer, its last task
    worker, is held up half a second longer), and a live node's browsers
    would lose their rows.  Its window starts again with the late beat."""
    a = gateways(node_dead_after=2, node_heartbeat_interval=1)
    b = gateways(node_dead_after=2, node_heartbeat_interval=1)
    ub = uid("b")
    b_writer = b.task_pids()["task %d" % (len(b.task_pids()) - 1)]

    async def go():
        wb, _ = await online(b.port, ub)
        try:
            await asyncio.sleep(2.5)              # a has heartbeated for node_dead_after
            stack.freeze_mysql(True)
            os.kill(b_writer, signal.SIGSTOP)
            try:
                await asyncio.sleep(5)            # under the 10 s read timeout: a's beat waits
            finally:
                stack.freeze_mysql(False)
                await asyncio.sleep(0.5)
                os.kill(b_writer, signal.SIGCONT)
            lost = []
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                if not await asyncio.to_thread(online_rows, stack, ub):
                    lost.append(round(deadline - time.monotonic(), 1))
                await asyncio.sleep(0.1)
            assert not lost, "b's live browser lost its online row after the hang " \
                             "(%d of 30 looks)" % len(lost)
            assert "swept" not in a.log() + b.log(), "a live node was swept"
            c = Internal(b.internal_port)
            try:
                ok_reply(await call(c, work_order("after-hang", [(ub, {"o": 1})], APP_TOKEN)),
                         "after-hang", delivered=1)
            finally:
                c.close()
            assert await recv_json(wb) == worksheet_event({"o": 1}, "after-hang")
            await send_json(wb, {"event": "ACK", "data": {"id": "after-hang"}})
        finally:
            await wb.close()
    try:
        run(go(), timeout=60)
    finally:
        stack.freeze_mysql(False)
        os.kill(b_writer, signal.SIGCONT)


# ---- reload keeps browser sessions ----

def test_reload_keeps_browser_sessions_working(gateways, stack):
    """SIGUSR1 replaces every worker; the browsers' connections stay open in
    the master and the new workers adopt their sessions from the shared
    table: events, pushes and ACKs keep working without a reconnect."""
    g = gateways()
    users = [uid("reload") for _ in range(6)]

    async def go():
        tabs = [(await online(g.port, u))[0] for u in users]
        try:
            before = g.worker_pids()
            os.kill(g.proc.pid, signal.SIGUSR1)
            await asyncio.to_thread(
                wait_until, lambda: all(p not in before.values() for p in g.worker_pids().values())
                and len(g.worker_pids()) == len(before), 20, 0.05, "every worker replaced")
            c = Internal(g.internal_port)
            try:
                for u, ws in zip(users, tabs):
                    await send_json(ws, {"event": "HEART_BEAT"})
                    assert (await recv_json(ws))["event"] == "HEART_BEAT"
                    ok_reply(await call(c, work_order("r-" + u, [(u, {"n": 1})], APP_TOKEN)),
                             "r-" + u, delivered=1)
                    assert await recv_json(ws) == worksheet_event({"n": 1}, "r-" + u)
                    await send_json(ws, {"event": "ACK", "data": {"id": "r-" + u}})
            finally:
                c.close()
        finally:
            for ws in tabs:
                await ws.close()
    run(go())
    for u in users:
        gone_from_online(stack, u)
        assert offline_rows(stack, u) == []


def test_agent_console_and_client_are_served(gateways):
    www = os.path.join(os.path.dirname(__file__), "..", "..", "gateway", "www")
    g = gateways(static_dir=os.path.abspath(www))
    status, headers, body = http_get(g.port, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"pushgate agent console" in body and b'src="pushgate.js"' in body
    status, headers, body = http_get(g.port, "/pushgate.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert b"class Pushgate" in body

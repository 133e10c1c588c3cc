"""The hand-off contract between queue, gateway and browser (the consumer and
gateways, ASan + UBSan build, real MariaDB, Redis and WebSocket browsers):
a stream entry leaves the consumer group's pending list only once every
browser it reached has ACKed it, or it is stored in offline_messages.

- a browser that ACKs late holds the XACK back until its ACK;
- a browser that ACKs within the first reply's hold gets its sender one
  reply, from whichever worker settles the order;
- ACKs that wait for each other in the reactor thread (browser_input_wait_us)
  still settle their orders;
- a browser that never ACKs: its order goes back to the store at
  ack_timeout, and then it is XACKed;
- a gateway killed with orders pushed but not ACKed: the entries stay
  pending, are routed again, and reach the browser on its new node;
- an order stored because the path to the browser's node is broken
  reaches the open tab once that node hears of it, without a reconnect.

Every wait is bounded."""
import asyncio
import json
import os
import signal
import socket
import sys

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import HOST, free_port, start_server  # noqa: E402
from gateway_util import Internal, offline_rows  # noqa: E402
from gateway_util import work_order as internal_order  # noqa: E402
from test_consumer import (SECRET, TOKEN, browser_token, dead_letters, pending,  # noqa: E402,F401
                           procs, publish, start_consumer, stop_gateway, stream, uid, until,
                           work_order)


def start_gateway(bin_dir, stack, tmp_path, procs, **settings):
    s = dict(host=HOST, internal_host=HOST, internal_port=free_port(), advertised_ip=HOST,
             worker_num=2, task_worker_num=2, reactor_num=2, jwt_secret=SECRET, ack_timeout=10,
             node_heartbeat_interval=1, mysql_host=stack.mysql_host, mysql_port=stack.mysql_port,
             mysql_user=stack.mysql_user, mysql_password=stack.mysql_password,
             mysql_database=stack.mysql_db)
    s.update(settings)
    g = start_server(bin_dir, "pushgate-gateway", tmp_path, wait=False, **s)
    procs.append(g)
    g.wait_ready()
    g.internal_port = int(s["internal_port"])
    return g


class Tab:
    """A browser tab that ACKs what it gets only when told to."""

    def __init__(self, uuid):
        self.uuid = uuid
        self.ids = []
        self.online = False

    async def open(self, port):
        """Connected and registered (ONLINE): an order published before the
        node's online_clients row is written would be stored, not pushed,
        and a stored order is handed off at once."""
        self.ws = await websockets.connect("ws://%s:%d/ws?token=%s" % (HOST, port,
                                                                      browser_token(self.uuid)),
                                           ping_interval=None, close_timeout=1)
        self.task = asyncio.ensure_future(self._read())
        await until(lambda: self.online, 10, "ONLINE")
        return self

    async def _read(self):
        try:
            async for raw in self.ws:
                m = json.loads(raw)
                if m.get("event") == "ONLINE":
                    self.online = True
                elif m.get("event") == "WorksheetMsg":
                    self.ids.append(m["id"])
        except websockets.ConnectionClosed:
            pass

    async def ack_all(self):
        for i in self.ids:
            await self.ws.send(json.dumps({"event": "ACK", "data": {"id": i}}))

    def closed(self):
        return self.task.done()

    async def close(self):
        self.task.cancel()
        await self.ws.close()


async def send_orders(c, tabs, prefix):
    """One order asking for the hand-off to each tab, "<prefix>-<i>", on the
    internal port c; returns once every tab has its order."""
    for i, tab in enumerate(tabs):
        order = dict(internal_order("%s-%d" % (prefix, i), [(tab.uuid, {"o": i})], TOKEN),
                     handoff=True)
        c.c.send(json.dumps(order).encode())
    await until(lambda: all(tab.ids for tab in tabs), 10, "every tab's order")


async def close_all(c, tabs):
    c.close()
    for tab in tabs:
        await tab.close()


def assert_one_each(replies, prefix, n):
    """One reply for each of the orders send_orders sent."""
    assert sorted(r.get("msg_id") for r in replies) == sorted("%s-%d" % (prefix, i)
                                                              for i in range(n)), replies


def test_a_late_ack_holds_the_xack_back(bin_dir, stack, tmp_path, procs, stream):
    g = start_gateway(bin_dir, stack, tmp_path, procs)
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream)
    r = stack.redis()

    async def run():
        tab = await Tab(uid("late")).open(g.port)
        ids = publish(r, stream, [work_order(tab.uuid, "order %d" % i) for i in range(5)])
        await until(lambda: sorted(tab.ids) == sorted(ids), 15, "the orders at the browser")
        await asyncio.sleep(1.5)
        assert pending(r, stream) == 5, "XACKed before the browser's ACK"
        await tab.ack_all()
        await until(lambda: pending(r, stream) == 0, 10, "the XACKs after the ACKs")
        await tab.close()

    asyncio.run(run())
    assert dead_letters(r, stream) == []
    c.stop()
    stop_gateway(g)


def test_an_ack_within_the_hold_gets_one_reply_from_the_worker_that_settles(
        bin_dir, stack, tmp_path, procs, stream):
    """handoff.c holds a first reply in its ticket, and the worker that
    settles its last target sends it, whichever worker that is: orders
    on the internal port to tabs spread over the node's two workers, ACKed
    0.15 s after the push (longer than a loop pass, well within the hold),
    get one reply each, with no "pending" and no final one after it."""
    g = start_gateway(bin_dir, stack, tmp_path, procs)

    async def run():
        tabs = [await Tab(uid("one")).open(g.port) for _ in range(8)]
        c = Internal(g.internal_port)
        try:
            await send_orders(c, tabs, "one")
            await asyncio.sleep(0.15)
            for tab in tabs:
                await tab.ack_all()
            replies = []
            while True:
                try:
                    replies.append(json.loads(await asyncio.to_thread(c.c.recv, 1.5)))
                except (socket.timeout, TimeoutError):
                    break
        finally:
            await close_all(c, tabs)
        assert_one_each(replies, "one", len(tabs))
        assert all(r["code"] == 0 and r["delivered"] == 1 and "pending" not in r
                   and "final" not in r for r in replies), replies

    asyncio.run(run())
    stop_gateway(g)


def test_acks_that_wait_for_each_other_still_settle(bin_dir, stack, tmp_path, procs, stream):
    """browser_input_wait_us lets a browser's message wait in the reactor
    thread for others to the same worker: with 0.3 s, the ACKs of 8 tabs,
    sent after the orders' first replies, settle every order, and no final
    reply comes before the wait is over."""
    g = start_gateway(bin_dir, stack, tmp_path, procs, browser_input_wait_us=300000)

    async def run():
        tabs = [await Tab(uid("wait")).open(g.port) for _ in range(8)]
        c = Internal(g.internal_port)
        recv = lambda: asyncio.to_thread(c.c.recv, 5)  # noqa: E731
        try:
            await send_orders(c, tabs, "wait")
            firsts = [json.loads(await recv()) for _ in tabs]
            assert all(r["code"] == 0 and r.get("pending") == 1 for r in firsts), firsts
            acked = asyncio.get_running_loop().time()
            for tab in tabs:
                await tab.ack_all()
            finals = [json.loads(await recv())]
            waited = asyncio.get_running_loop().time() - acked
            finals += [json.loads(await recv()) for _ in tabs[1:]]
        finally:
            await close_all(c, tabs)
        assert_one_each(finals, "wait", len(tabs))
        assert all(r["code"] == 0 and "pending" not in r for r in finals), finals
        assert waited >= 0.25, "a final reply %.3f s after the ACKs" % waited

    asyncio.run(run())
    stop_gateway(g)


def test_no_ack_then_stored_then_xacked(bin_dir, stack, tmp_path, procs, stream):
    g = start_gateway(bin_dir, stack, tmp_path, procs, ack_timeout=2)
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream)
    r = stack.redis()

    async def run():
        tab = await Tab(uid("mute")).open(g.port)
        ids = publish(r, stream, [work_order(tab.uuid, "order %d" % i) for i in range(3)])
        await until(lambda: sorted(tab.ids) == sorted(ids), 15, "the orders at the browser")
        # ack_timeout: back to the store, and then handed off (that a push
        # alone does not XACK is test_a_late_ack_holds_the_xack_back's)
        await until(lambda: pending(r, stream) == 0, 15, "the XACKs after the store")
        assert sorted(m for m, _, _ in offline_rows(stack, tab.uuid)) == sorted(ids)
        await tab.close()

    asyncio.run(run())
    assert dead_letters(r, stream) == []
    c.stop()
    stop_gateway(g)


def test_gateway_killed_before_the_acks_loses_nothing(bin_dir, stack, tmp_path, procs, stream):
    """Orders pushed by a node that is then killed (kill -9, every process)
    before the browser ACKed them come again through another node."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_gateway(bin_dir, stack, tmp_path / "a", procs)
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream, reply_timeout_ms=2000)
    r = stack.redis()

    async def run():
        tab = await Tab(uid("moved")).open(a.port)
        ids = publish(r, stream, [work_order(tab.uuid, "order %d" % i) for i in range(5)])
        await until(lambda: sorted(tab.ids) == sorted(ids), 15, "the orders at the browser")
        victims = [a.proc.pid, a.manager_pid()] + list(a.worker_pids().values()) + \
            list(a.task_pids().values())
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        await until(tab.closed, 10, "the browser to see its node die")
        assert pending(r, stream) == 5, "XACKed though no browser ACKed"
        b = start_gateway(bin_dir, stack, tmp_path / "b", procs)
        again = await Tab(tab.uuid).open(b.port)
        await until(lambda: sorted(set(again.ids)) == sorted(ids), 30, "the orders on the new node")
        await again.ack_all()
        await until(lambda: pending(r, stream) == 0, 15, "the XACKs")
        await again.close()
        stop_gateway(b)

    asyncio.run(run())
    assert dead_letters(r, stream) == []
    c.stop()


def test_stored_for_a_browser_online_elsewhere_reaches_it_without_a_reconnect(
        bin_dir, stack, tmp_path, procs, stream):
    """Node A cannot reach node B (no proxy at all here): orders for a browser
    on B are stored, B hears of them through MySQL and delivers them to the
    open tab, which never reconnects.  A logs the broken path once a worker."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_gateway(bin_dir, stack, tmp_path / "a", procs)
    b = start_gateway(bin_dir, stack, tmp_path / "b", procs)
    stack.add_app("handoff-app")

    async def run():
        tab = await Tab(uid("elsewhere")).open(b.port)
        await asyncio.sleep(0.5)   # its online_clients row is written
        with Internal(a.internal_port) as internal:
            for i in range(3):
                reply = await asyncio.to_thread(internal.call, {
                    "url": "/worksheet/send-message", "chat_token": "handoff-app",
                    "msg_id": "far-%d" % i, "data": [{"uuid": tab.uuid, "data": {"n": i}}]})
                assert reply["code"] == 0 and reply["stored"] == 1, reply
        await until(lambda: sorted(tab.ids) == ["far-0", "far-1", "far-2"], 10,
                    "the stored orders at the open tab")
        assert not tab.closed()
        await tab.ack_all()
        await until(lambda: offline_rows(stack, tab.uuid) == [], 10, "the stored copies deleted")
        await tab.close()

    asyncio.run(run())
    # once an episode in each worker that met it, not once an order
    assert 1 <= a.log().count("the path to another node is down") <= 2
    stop_gateway(a)
    stop_gateway(b)

"""The rows pushgate-consumer and pushgate-proxy keep in daemon_status (ASan +
UBSan build, the session's MariaDB + Redis), which the cluster console reads:

- each row appears within a few seconds, its status holding every field the
  cluster console (gateway/www/admin.js) reads, each of its type, and is
  replaced every 2 s;
- the consumer's dead letters are counted by kind of reason, the newest 20
  kept with their entry id and full reason, newest first;
- orders flowing move the consumer's counters and replies and the proxy's
  requests and forwards by target node;
- SIGTERM deletes each row, and the stop logs no WARN or ERROR;
- with MySQL unreachable (a port of the test's own that stops forwarding to
  MariaDB, so the shared server is not disturbed) each daemon keeps working,
  logs the outage a few times at most, and its row comes back with MySQL.

Every wait is bounded; only processes started here are stopped."""
import json
import os
import re
import socket
import sys
import threading
import time
import uuid as uuidlib

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import HOST, free_port, start_server, wait_until  # noqa: E402
from gateway_util import db_rows  # noqa: E402
from stack_util import (APP_TOKEN, RUN, order_json, proxy_stats,  # noqa: E402
                        running_cluster, users)
from test_consumer import (fakes, pending, procs, publish, start_consumer,  # noqa: E402,F401
                           stream, work_order)

MOD_STREAM = "test:status-%s:worksheets" % RUN   # the module cluster's consumer reads it
MOD_CONSUMER = "status-%s" % RUN
NOISE = re.compile(r"^.*\[(WARN|ERROR)\].*$", re.M)


# ---- the contract's shapes ----

class MapOf:
    """An object of any keys whose values have one shape (replies by code)."""

    def __init__(self, shape):
        self.shape = shape


COUNTERS = {k: int for k in ("read", "claimed", "sent", "acked", "dead", "retried")}
BY_REASON = {k: int for k in ("malformed", "refused", "gave up", "too big", "other")}
CONSUMER = {
    "role": str, "at": int, "name": str, "stream": str, "group": str, "uptime": int,
    "lag": int, "pending": int, "in_flight": int, "counters": COUNTERS,
    "replies": MapOf(int),
    "dead_letters": {"total": int, "by_reason": BY_REASON,
                     "recent": [{"at": int, "id": str, "reason": str}]},
    "redis": {"ok": bool}, "mysql": {"ok": bool, "host": str}, "gateways": int,
}
PROXY = {
    "role": str, "at": int, "uptime": int, "requests": int,
    "forwards": [{"target": str, "outcome": str, "count": int}],
    "nodes": int, "mysql": {"ok": bool, "host": str},
}


def check_shape(value, shape, where="status"):
    """Asserts value has shape: a type, {key: shape} (exactly those keys),
    [shape] (a list of such) or MapOf(shape)."""
    if isinstance(shape, dict):
        assert isinstance(value, dict), "%s: %r is not an object" % (where, value)
        assert set(value) == set(shape), "%s: keys %s, the contract's %s" % (
            where, sorted(value), sorted(shape))
        for k, s in shape.items():
            check_shape(value[k], s, "%s.%s" % (where, k))
    elif isinstance(shape, list):
        assert isinstance(value, list), "%s: %r is not an array" % (where, value)
        for i, v in enumerate(value):
            check_shape(v, shape[0], "%s[%d]" % (where, i))
    elif isinstance(shape, MapOf):
        assert isinstance(value, dict), "%s: %r is not an object" % (where, value)
        for k, v in value.items():
            check_shape(v, shape.shape, "%s.%s" % (where, k))
    else:
        ok = isinstance(value, shape) and (shape is bool or not isinstance(value, bool))
        assert ok, "%s: %r is not of type %s" % (where, value, shape.__name__)


# ---- rows ----

def consumer_id(name):
    return "consumer " + name


def proxy_id(port):
    return "proxy %s:%d" % (HOST, port)


def row(stack, daemon_id):
    """(role, status) of daemon_id's row, or None."""
    rows = db_rows(stack, "SELECT role, status FROM daemon_status WHERE daemon_id = %s",
                   (daemon_id,))
    return (rows[0][0], json.loads(rows[0][1])) if rows else None


def status(stack, daemon_id):
    r = row(stack, daemon_id)
    return r[1] if r else None


def wait_status(stack, daemon_id, cond=lambda s: True, timeout=10, what="its row"):
    """daemon_id's status once cond(status) holds."""
    seen = {}

    def ready():
        s = seen["last"] = status(stack, daemon_id)
        return s if s is not None and cond(s) else None
    try:
        return wait_until(ready, timeout, interval=0.2, what="%s: %s" % (daemon_id, what))
    except AssertionError as e:
        raise AssertionError("%s; last status: %s" % (e, seen.get("last"))) from None


def now_ms():
    return int(time.time() * 1000)


def mysql_lines(log):
    return [line for line in log.splitlines() if "MySQL" in line or "status row" in line]


# ---- a MySQL that goes away ----

class MysqlGate:
    """A port of the test's own forwarding to the stack's MariaDB.  Closed,
    it refuses connections and cuts those through it - MySQL is down, as a
    daemon pointed at it sees it - without stopping the shared server."""

    def __init__(self, target_port):
        self.target = target_port
        self.port = free_port()
        self.srv = None
        self.thread = None
        self.conns = []
        self.lock = threading.Lock()

    def open(self):
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((HOST, self.port))
        srv.listen(64)
        srv.settimeout(0.2)
        self.srv = srv
        self.thread = threading.Thread(target=self._accept, args=(srv,), daemon=True)
        self.thread.start()

    def _accept(self, srv):
        while self.srv is srv:
            try:
                down, _ = srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                up = socket.create_connection((HOST, self.target), timeout=5)
            except OSError:
                down.close()
                continue
            down.settimeout(None)
            up.settimeout(None)
            with self.lock:
                self.conns += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        srv, self.srv = self.srv, None
        if srv is not None:
            srv.close()
        if self.thread is not None:
            self.thread.join(5)
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


@pytest.fixture
def gate(stack):
    g = MysqlGate(stack.mysql_port)
    yield g
    g.close()


# ---- fixtures ----

@pytest.fixture(scope="module")
def cluster(bin_dir, stack, tmp_path_factory):
    """Proxy, gateways A and B, and a consumer of this module's stream."""
    with running_cluster(bin_dir, stack, tmp_path_factory.mktemp("status"), stream=MOD_STREAM,
                         consumer_settings={"consumer": MOD_CONSUMER, "stream": MOD_STREAM,
                                            "dead_letter_stream": MOD_STREAM + ":dead"}) as c:
        yield c


@pytest.fixture
def env(stack, monkeypatch):
    """PUSHGATE_MYSQL_* and PUSHGATE_REDIS_* for servers started here."""
    for k, v in stack.env().items():
        monkeypatch.setenv(k, v)


def start_proxy(bin_dir, tmp_path, **settings):
    s = dict(host=HOST, port=free_port(), worker_num=2, task_worker_num=1, reactor_num=1,
             nodes_refresh_ms=200)
    s.update(settings)
    return start_server(bin_dir, "pushgate-proxy", tmp_path, **s)


# ---- tests ----

def test_rows_appear_with_every_field_of_the_contract(cluster, stack):
    t0 = now_ms()
    c = wait_status(stack, consumer_id(MOD_CONSUMER), lambda s: s["gateways"] >= 2, 10,
                    what="a row with both gateways")
    p = wait_status(stack, proxy_id(cluster.proxy_port), lambda s: s["nodes"] >= 2, 10,
                    what="a row knowing both gateways")
    check_shape(c, CONSUMER)
    check_shape(p, PROXY)
    assert row(stack, consumer_id(MOD_CONSUMER))[0] == "consumer"
    assert row(stack, proxy_id(cluster.proxy_port))[0] == "proxy"
    assert c["role"] == "consumer" and p["role"] == "proxy"
    assert (c["name"], c["stream"], c["group"]) == (MOD_CONSUMER, MOD_STREAM, "pushgate")
    assert c["redis"]["ok"] is True and c["mysql"]["ok"] is True
    assert p["mysql"]["ok"] is True
    server = "%s:%d" % (stack.mysql_host, stack.mysql_port)   # the one of mysql_host/port
    assert c["mysql"]["host"] == server and p["mysql"]["host"] == server, (c["mysql"], p["mysql"])
    for s in (c, p):
        assert abs(s["at"] - t0) < 30000, s["at"]
        assert 0 <= s["uptime"] < 600
    assert c["lag"] >= -1 and c["pending"] >= -1 and c["in_flight"] >= 0
    # replaced every 2 s: "at" moves on
    wait_status(stack, consumer_id(MOD_CONSUMER), lambda s: s["at"] > c["at"], 6,
                what="a newer report")
    wait_status(stack, proxy_id(cluster.proxy_port), lambda s: s["at"] > p["at"], 6,
                what="a newer report")


def test_dead_letters_by_reason_and_the_newest_20(cluster, stack):
    cid = consumer_id(MOD_CONSUMER)
    before = wait_status(stack, cid)["dead_letters"]
    r = stack.redis()
    (no_msg,) = publish(r, MOD_STREAM, [{"body": "no msg here"}])
    s = wait_status(stack, cid, lambda s: s["dead_letters"]["total"] == before["total"] + 1,
                    10, what="the dead letter counted")
    d = s["dead_letters"]
    check_shape(s, CONSUMER)
    assert d["by_reason"]["malformed"] == before["by_reason"]["malformed"] + 1
    assert d["recent"][0]["id"] == no_msg
    assert d["recent"][0]["reason"] == "malformed: no msg field"
    assert abs(d["recent"][0]["at"] - now_ms()) < 30000
    wait_status(stack, cid, lambda s: s["counters"]["dead"] >= before["total"] + 1, 10,
                what="counters.dead to follow")

    # a token the gateways do not know: refused, a final answer
    (refused,) = publish(r, MOD_STREAM, [order_json("nobody-" + RUN, "refused")
                                         .replace(APP_TOKEN, "unknown-token-" + RUN)])
    s = wait_status(stack, cid, lambda s: s["dead_letters"]["recent"][0]["id"] == refused, 15,
                    what="the refused entry")
    d = s["dead_letters"]
    assert d["by_reason"]["refused"] == before["by_reason"]["refused"] + 1
    assert d["recent"][0]["reason"].startswith("refused by gateway"), d["recent"][0]
    assert "10201" in d["recent"][0]["reason"]

    # only the 20 newest are kept, newest first; every one is counted
    total = d["total"]
    ids = publish(r, MOD_STREAM, ["not json %d" % i for i in range(23)])
    s = wait_status(stack, cid, lambda s: s["dead_letters"]["total"] == total + 23, 15,
                    what="23 more dead letters")
    d = s["dead_letters"]
    check_shape(s, CONSUMER)
    assert [x["id"] for x in d["recent"]] == list(reversed(ids))[:20]
    assert all(x["reason"].startswith("malformed: msg is not JSON") for x in d["recent"])
    assert d["by_reason"]["malformed"] == before["by_reason"]["malformed"] + 24
    assert sum(d["by_reason"].values()) == d["total"]
    wait_until(lambda: pending(r, MOD_STREAM) == 0, 10, what="every dead letter XACKed")


def test_orders_move_the_counters(cluster, stack, fleet):
    """Orders for tabs on gateway A, dealt round robin to A and B: those B
    takes cross the proxy to A."""
    c = cluster
    cid, pid = consumer_id(MOD_CONSUMER), proxy_id(c.proxy_port)
    r = stack.redis()
    agents = users("status-a", 3)
    tabs = fleet.open(agents, c.a.port)
    before_c, before_p = wait_status(stack, cid), wait_status(stack, pid)
    n = 12
    markers = ["status-%s-%d" % (RUN, i) for i in range(n)]
    publish(r, MOD_STREAM, [order_json(agents[i % 3], m) for i, m in enumerate(markers)])
    wait_until(lambda: set(markers) <= {m for t in tabs for m, _ in t.got}, 30,
               what="%d orders at the tabs" % n)
    wait_until(lambda: pending(r, MOD_STREAM) == 0, 30, what="every entry XACKed")

    def counted(s):
        k, b = s["counters"], before_c["counters"]
        return (k["acked"] >= b["acked"] + n and k["sent"] >= b["sent"] + n
                and k["read"] >= b["read"] + n and s["pending"] == 0 and s["lag"] == 0)
    s = wait_status(stack, cid, counted, 10, what="counters to move")
    check_shape(s, CONSUMER)
    assert s["replies"].get("0", 0) >= before_c["replies"].get("0", 0) + n
    assert s["in_flight"] == 0

    def crossed(forwards):
        return sum(f["count"] for f in forwards
                   if f["target"] == c.a.node_id and f["outcome"] == "ok")
    p = wait_status(stack, pid, lambda s: crossed(s["forwards"]) > crossed(before_p["forwards"]),
                    10, what="forwards to A counted")
    check_shape(p, PROXY)
    assert p["requests"] > before_p["requests"]
    assert all(f["count"] > 0 for f in p["forwards"])
    fleet.close_tabs(tabs)


def test_a_clean_stop_deletes_each_row_quietly(bin_dir, stack, tmp_path, procs, stream, fakes,
                                               env):
    x = fakes(lambda req, n: {"code": 0})
    name = "status-stop-" + uuidlib.uuid4().hex[:8]
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream, gateways=x.addr, consumer=name)
    p = start_proxy(bin_dir, tmp_path)
    procs.append(p)
    s = wait_status(stack, consumer_id(name), timeout=10)
    check_shape(s, CONSUMER)
    assert s["gateways"] == 1 and s["mysql"]["ok"] is True
    check_shape(wait_status(stack, proxy_id(p.port), timeout=10), PROXY)
    log = c.stop()
    assert row(stack, consumer_id(name)) is None
    p.stop()
    p.check_clean()
    assert row(stack, proxy_id(p.port)) is None
    for who, text in (("consumer", log), ("proxy", p.log())):
        assert not NOISE.findall(text), "%s logged:\n%s" % (who, "\n".join(NOISE.findall(text)))


def test_consumer_without_mysql_delivers_and_its_row_comes_back(bin_dir, stack, tmp_path, procs,
                                                                stream, fakes, gate):
    """MySQL is unreachable from the start, then goes away again: the
    consumer (static gateways) delivers all the same, says so a few times,
    and writes its row whenever it can."""
    x = fakes(lambda req, n: {"code": 0})
    name = "status-outage-" + uuidlib.uuid4().hex[:8]
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream, gateways=x.addr, consumer=name,
                       mysql_port=gate.port)
    r = stack.redis()
    t0 = time.monotonic()
    publish(r, stream, [work_order("someone", "during %d" % i) for i in range(5)])
    wait_until(lambda: pending(r, stream) == 0, 15, what="delivery without MySQL")
    time.sleep(max(0.0, 8 - (time.monotonic() - t0)))
    assert c.running()
    assert row(stack, consumer_id(name)) is None
    lines = mysql_lines(c.log())
    assert 1 <= len(lines) <= 3, "\n".join(lines)

    gate.open()
    s = wait_status(stack, consumer_id(name), lambda s: s["mysql"]["ok"], 40,
                    what="the row once MySQL is back")
    check_shape(s, CONSUMER)
    assert s["counters"]["acked"] == 5
    assert "reachable again" in c.log()

    # and once more, MySQL going away under an open connection
    gate.close()
    down_at, seen = now_ms(), len(mysql_lines(c.log()))
    publish(r, stream, [work_order("someone", "again %d" % i) for i in range(5)])
    wait_until(lambda: pending(r, stream) == 0, 15, what="delivery without MySQL")
    time.sleep(5)
    assert c.running()
    assert status(stack, consumer_id(name))["at"] < down_at + 2500
    lines = mysql_lines(c.log())[seen:]
    assert 1 <= len(lines) <= 3, "\n".join(lines)
    assert any("writing the status row failed" in line for line in lines), "\n".join(lines)
    gate.open()
    back_at = now_ms()
    s = wait_status(stack, consumer_id(name), lambda s: s["at"] > back_at and s["mysql"]["ok"],
                    40, what="the row once MySQL is back again")
    assert s["counters"]["acked"] == 10
    c.stop()
    assert row(stack, consumer_id(name)) is None


def test_proxy_outlives_a_mysql_outage_and_its_row_comes_back(bin_dir, stack, tmp_path, env,
                                                              gate):
    """The proxy needs MySQL at start; it goes away for 8 s, then comes back."""
    gate.open()
    p = start_proxy(bin_dir, tmp_path, mysql_port=gate.port)
    try:
        pid = proxy_id(p.port)
        wait_status(stack, pid, lambda s: s["mysql"]["ok"], 10, what="a first row")
        gate.close()
        down_at = now_ms()
        time.sleep(8)
        assert p.proc.poll() is None, p.sanitizer_text()[-3000:]
        assert proxy_stats(p.port)["code"] == 0     # still answering
        s = status(stack, pid)
        assert s["at"] < down_at + 2500, "written while MySQL was away: %s" % s
        lines = mysql_lines(p.log())
        assert 1 <= len(lines) <= 6, "\n".join(lines)

        gate.open()
        back_at = now_ms()
        s = wait_status(stack, pid, lambda s: s["at"] > back_at and s["mysql"]["ok"], 20,
                        what="the row once MySQL is back")
        check_shape(s, PROXY)
        assert "MySQL is back" in p.log()
        p.stop()
        p.check_clean()
        assert row(stack, pid) is None
    finally:
        if not p.stopped:
            p.snapshot()
            p.kill_all()

"""pushgate on a 3-node MariaDB Galera cluster (tests/fixture.py's
GaleraCluster): every daemon is given all three nodes in mysql_hosts (node 1
first, so all start there); Redis is a Stack's.  Two gateways, the proxy
and the consumer; 200 browsers (100 on each gateway) that ACK everything
and do not reconnect, so a close shows; work orders at 1,000/s, each
counted by its marker and its stream entry id (stack_util.py).

1. kill -9 of node 1, the one every process uses, 8 s into 25,000 orders:
   nothing lost, nothing dead-lettered, no browser closed; 20 browsers
   whose orders were stored while they were away connect right after the
   kill (registration, the offline page, then ACKs that delete the stored
   rows); every process says it moved to node 2 (gateway /stats and
   /metrics, the proxy's and the consumer's daemon_status rows and logs).
   The delivery latency (XADD confirmed to the browser's receipt) of the
   orders published before the kill and of those published in the minute
   around it (here: from the kill to the end) is printed, p50 and p99.
2. node 1 restarted during a run: it rejoins by IST, nothing breaks; then
   kill -9 of node 2 (in use now): everyone moves on to node 3, which only
   works if node 1 really rejoined (two of three keep the quorum).

Skipped, with the reason, where a Galera cluster cannot start (no galera-4,
no rsync).  Every wait is bounded; only processes started here are
stopped, by PID."""
import json
import os
import re
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import wait_until  # noqa: E402
from gateway_util import db_rows, http_get, node_stats  # noqa: E402
from stack_util import (RUN, Fleet, Orders, Producer, Tab, Tally, dead_letters,  # noqa: E402
                        pending, running_cluster, say, users)

from fixture import FixtureError, GaleraCluster, Stack  # noqa: E402

RATE = 1000
BROWSERS = 200
LATE = 20                   # browsers that connect only after the kill
CONSUMER_SETTINGS = {"claim_min_idle_ms": 2000}


class GaleraStack:
    """What stack_util's Cluster takes as its stack: the Galera cluster's
    MySQL settings and Redis of a Redis-only Stack."""

    def __init__(self, galera, redis_stack):
        self.galera, self.redis_stack = galera, redis_stack

    def env(self):
        env = dict(self.redis_stack.env())
        env.update(self.galera.env())
        return env

    def redis(self, **kw):
        return self.redis_stack.redis(**kw)

    def mysql(self, **kw):
        """The pushgate user on the first node that answers (node 1 may be down)."""
        last = None
        for node in range(GaleraCluster.NODES):
            if self.galera.alive(node):
                try:
                    return self.galera.mysql(node=node, **kw)
                except Exception as e:  # noqa: BLE001 - the next node
                    last = e
        raise last or FixtureError("no Galera node is running")

    def add_app(self, chat_token, name="test", enabled=True):
        Stack.add_app(self, chat_token, name, enabled)


class LateTab(Tab):
    """A browser with orders stored for it: what the node pushes while the
    registration is answered may come before ONLINE (as pushgate.js
    allows), so it is taken (and ACKed) until ONLINE comes."""

    pushes_before_online = True


@pytest.fixture(scope="module")
def galera():
    why = GaleraCluster.unavailable()
    if why:
        pytest.skip("no Galera cluster on this machine: " + why)
    g = GaleraCluster()
    try:
        g.start()
    except FixtureError as e:
        pytest.skip("the Galera cluster did not start here: %s" % str(e)[:2000])
    say("Galera cluster of 3 nodes up in %.1f s: %s" % (g.start_seconds, g.hosts()))
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def gstack(galera):
    with Stack(mysql=False) as r:
        yield GaleraStack(galera, r)


@pytest.fixture(scope="module")
def cluster(bin_dir, gstack, tmp_path_factory):
    with running_cluster(bin_dir, gstack, tmp_path_factory.mktemp("galera"),
                         consumer_settings=CONSUMER_SETTINGS) as c:
        yield c


@pytest.fixture(scope="module")
def fleet():
    f = Fleet()
    try:
        yield f
    finally:
        f.stop()


def node_text(galera, node):
    return "%s:%d" % (galera.host, galera.nodes[node]["port"])


def status_rows(gstack):
    """daemon_id -> status of every daemon_status row."""
    return {d: json.loads(s) for d, s in db_rows(gstack, "SELECT daemon_id, status "
                                                         "FROM daemon_status")}


def metric(port, name):
    """name's samples in a gateway's /metrics: {labels text: value}."""
    status, _, body = http_get(port, "/metrics")
    assert status == 200, status
    out = {}
    for m in re.finditer(r"^%s(\{[^}]*\})? (\S+)$" % re.escape(name), body.decode(), re.M):
        out[m.group(1) or ""] = float(m.group(2))
    return out


def where_all(gstack, cluster):
    """The server each daemon says it uses: {who: host}."""
    out = {g.node_id: node_stats(g.port)["mysql"]["host"] for g in cluster.gateways()}
    for d, st in status_rows(gstack).items():
        if st.get("role") in ("proxy", "consumer") and st.get("at", 0) / 1000 > time.time() - 4:
            out[d] = st["mysql"].get("host")
    return out


def everyone_on(galera, gstack, cluster, nodes, timeout=20):
    """Every daemon says it uses one of nodes (gateways: /stats; the proxy
    and the consumer: their daemon_status rows, written every 2 s).  A
    daemon may have gone past the first live node: a statement that waited
    longer than its read timeout while the cluster reconfigured counts as a
    lost connection (the consumer's timeout is 2 s)."""
    want = {node_text(galera, n) for n in nodes}
    seen = {}

    def there():
        seen.clear()
        seen.update(where_all(gstack, cluster))
        return len(seen) >= 4 and all(h in want for h in seen.values())
    try:
        wait_until(there, timeout, interval=0.5)
    except AssertionError:
        raise AssertionError("not every daemon uses %s: %s" % (sorted(want), seen)) from None
    return seen


def latencies(tabs, orders, t_from, t_to):
    """Seconds from the XADD's confirmation to the receipt, of the orders
    published in [t_from, t_to), first receipt of each."""
    first = {}
    for t in tabs:
        for marker, _, t_recv, _ in list(t.receipts):
            if marker in orders.t_pub and (marker not in first or t_recv < first[marker]):
                first[marker] = t_recv
    return sorted(first[m] - orders.t_pub[m] for m in first if t_from <= orders.t_pub[m] < t_to)


def pct(values, p):
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def no_browser_closed(tabs):
    closed = [(t.uuid, t.closes) for t in tabs if t.closes or not t.connected]
    assert not closed, "browsers closed by the server: %s" % closed[:5]


def run_orders(gstack, tabs, targets, tag, total, at, action):
    """Publishes total orders for random users of targets at RATE and runs
    action() `at` seconds into it; returns (orders, tally, t_action,
    action's result) once every order reached its browser among tabs (a
    list action may add to), 60 s after the last XADD at most."""
    orders = Orders(tag)
    producer = Producer(gstack.redis(), orders, targets, total, RATE, chunk=RATE // 10)
    producer.start()
    wait_until(lambda: producer.t0 is not None, 10, what="the producer to start")
    time.sleep(max(0.0, producer.t0 + at - time.monotonic()))
    t_action = time.monotonic()
    result = action()
    producer.finish(timeout=total / RATE * 3 + 60)
    tally = Tally(orders, tabs)
    wait_until(lambda: tally.count() >= len(orders.uuid_of), 60, interval=0.5,
               what="every order to arrive")
    return orders, tally, t_action, result


def drained(gstack, prefix):
    r = gstack.redis()
    wait_until(lambda: pending(r) == 0, 30, what="XPENDING to be empty")
    assert dead_letters(r) == [], dead_letters(r)[:3]
    wait_until(lambda: not db_rows(gstack, "SELECT 1 FROM offline_messages WHERE uuid LIKE %s "
                                           "LIMIT 1", (prefix + "%",)),
               30, interval=0.5, what="every stored order of %s* to be ACKed" % prefix)


@pytest.mark.parametrize("program", ["pushgate-gateway", "pushgate-proxy",
                                     "pushgate-consumer"])
def test_a_bad_mysql_hosts_stops_the_start(bin_dir, program):
    """No cluster needed: a list that is not host:port,... is a start-up
    error naming the entry, in every daemon."""
    for bad, why in (("127.0.0.1:3306,,127.0.0.1:3307", 'entry 2 "": empty'),
                     ("127.0.0.1:3306,db2", 'entry 2 "db2": no port'),
                     ("::1:3306", "[addr]:port"),
                     ("127.0.0.1:70000", "1 to 65535")):
        extra = (["--set", "jwt_secret=0123456789abcdef0123"]
                 if program == "pushgate-gateway" else [])
        p = subprocess.run([os.path.join(bin_dir, program), "--set", "mysql_hosts=" + bad] + extra,
                           capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
        assert p.returncode != 0, (program, bad)
        assert "mysql_hosts entry" in p.stderr and why in p.stderr, (program, bad, p.stderr)


def test_kill_the_node_in_use(galera, gstack, cluster, fleet):
    c = cluster
    everyone_on(galera, gstack, c, [0])
    online = users("g1", BROWSERS)
    late = users("g1late", LATE)
    tabs = (fleet.open(online[:BROWSERS // 2], c.a.port) +
            fleet.open(online[BROWSERS // 2:], c.b.port))
    everyone = list(tabs)       # the late browsers join it after the kill

    def kill_then_connect():
        t0 = time.monotonic()
        galera.kill(0)
        t_killed = time.monotonic()
        # new browsers register at once (REPLACE, the offline page, ACKs)
        half = LATE // 2
        everyone.extend(fleet.open(late[:half], c.a.port, cls=LateTab) +
                        fleet.open(late[half:], c.b.port, cls=LateTab))
        return t_killed - t0, time.monotonic() - t_killed

    # the late browsers' orders before the kill are stored until they connect
    orders, tally, t_kill, (kill_s, register_s) = run_orders(
        gstack, everyone, online + late, "o1%s" % RUN, 25 * RATE, 8.0, kill_then_connect)
    receipts, dups = tally.check()
    no_browser_closed(everyone)
    drained(gstack, "g1")

    before = latencies(tabs, orders, 0, t_kill)
    around = latencies(tabs, orders, t_kill, t_kill + 60)
    say("kill -9 of node 1 (%.3f s); %d browsers registered %.2f s after it; %d orders, "
        "%d receipts, %d duplicates" % (kill_s, LATE, register_s, len(orders.uuid_of), receipts,
                                        dups))
    say("latency before the kill: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d orders)" % (
        pct(before, 0.5) * 1e3, pct(before, 0.99) * 1e3, before[-1] * 1e3, len(before)))
    say("latency from the kill on: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d orders); added: "
        "p50 %+.1f ms, p99 %+.1f ms" % (
            pct(around, 0.5) * 1e3, pct(around, 0.99) * 1e3, around[-1] * 1e3, len(around),
            (pct(around, 0.5) - pct(before, 0.5)) * 1e3,
            (pct(around, 0.99) - pct(before, 0.99)) * 1e3))

    # every process left node 1, and said so once per process
    where = everyone_on(galera, gstack, c, [1, 2])
    say("where the daemons are now: %s" % where)
    n1 = node_text(galera, 0)
    moved = "MySQL: failed over from %s to " % n1
    for g in c.gateways():
        st = node_stats(g.port)["mysql"]
        assert st["ok"] is True and st["failovers"] >= 1, st
        assert metric(g.port, "pushgate_mysql_failovers_total")[""] >= 1
        assert metric(g.port, "pushgate_mysql_host_info") == {'{host="%s"}' % st["host"]: 1.0}
        moves = g.log().count(moved)
        assert 1 <= moves <= 2 * c.a.settings.get("task_worker_num", 2), (
            "%d failover lines in %s's log" % (moves, g.node_id))
    for d in (c.consumer, c.proxy):
        assert moved in d.log(), d.log()[-3000:]


def test_node_back_then_the_next_one_goes(galera, gstack, cluster, fleet):
    c = cluster
    if galera.alive(0):
        galera.kill(0)        # the test before did not get that far
        everyone_on(galera, gstack, c, [1, 2])
    tabs = (fleet.open(users("g2", BROWSERS // 2), c.a.port) +
            fleet.open(users("g2", BROWSERS)[BROWSERS // 2:], c.b.port))

    def restart():
        t0 = time.monotonic()
        how = galera.restart(0)
        return how, time.monotonic() - t0
    targets = [t.uuid for t in tabs]
    orders, tally, _, (how, took) = run_orders(gstack, tabs, targets, "o2%s" % RUN, 12 * RATE,
                                               2.0, restart)
    tally.check()
    no_browser_closed(tabs)
    say("node 1 restarted and synced again by %s in %.1f s during publishing" % (how, took))
    assert how == "IST", "node 1 rejoined by %s" % how
    assert all(galera.status(i)["wsrep_cluster_size"] == "3" for i in range(3))
    # it has what was written while it was away
    conn = galera.mysql(node=0)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM gateway_nodes")
            assert cur.fetchone()[0] == 2
    finally:
        conn.close()

    # node 2 goes (the gateways use it now): they move on to node 3; node 1
    # and node 3 keep the quorum only if node 1 really rejoined
    everyone_on(galera, gstack, c, [1, 2])
    orders, tally, _, _ = run_orders(gstack, tabs, targets, "o3%s" % RUN, 8 * RATE, 2.0,
                                     lambda: galera.kill(1))
    tally.check()
    no_browser_closed(tabs)
    drained(gstack, "g2")
    where = everyone_on(galera, gstack, c, [0, 2])
    n3 = node_text(galera, 2)
    for g in c.gateways():                  # from node 2, the next is node 3
        assert where[g.node_id] == n3, where
    say("kill -9 of node 2: every process on a live node, nothing lost: %s" % where)

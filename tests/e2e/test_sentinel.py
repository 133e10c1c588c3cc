"""Redis with Sentinel (tests/fixture.py SentinelSet: a primary, one replica
and three sentinels; the MariaDB is the session's): pushgate-consumer, two
gateways and the proxy find the primary through the sentinels
(redis_sentinels), browsers are connected to both gateways, and work
orders are XADDed at 1,000/s, every other chunk followed by WAIT 1 in the
same pipeline.

- kill -9 of the primary while publishing: the sentinels promote the
  replica; the consumer and the gateways' route feed follow it within
  down-after-milliseconds plus a few seconds (measured and printed); every
  order whose XADD WAIT 1 confirmed is delivered; the orders XADDed without
  WAIT that were lost (Redis's asynchronous replication window) are counted
  and printed, not asserted on;
- all of Redis down for a few seconds, then MySQL down for a few seconds,
  one after the other while publishing: everything comes back by itself,
  every order WAIT confirmed is delivered and nothing is dead-lettered.

The daemons get redis_host/redis_port pointing at a dead port, so a link
that did not go through the sentinels would show.  Skipped, with the
reason, when the sentinel set-up cannot start.  Every wait is bounded; only
processes started here are stopped, by pid."""
import collections
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import HOST, free_port, wait_until  # noqa: E402
from fixture import FixtureError, SentinelSet  # noqa: E402
from gateway_util import db_exec, node_stats  # noqa: E402
from stack_util import (APP_TOKEN, GROUP, STREAM, Cluster, Orders, Tally,  # noqa: E402
                        order_json, say, users)

redis_mod = pytest.importorskip("redis")

RATE = 1000             # orders per second
CHUNK = 50              # XADDs per pipeline (every other one with WAIT)
WAIT_MS = 200           # WAIT 1 <WAIT_MS>
DOWN_AFTER_MS = 1000    # the sentinels' down-after-milliseconds
FOLLOW_SLACK_S = 5.0    # "plus a few seconds"
USERS = 60              # half on gateway A, half on B


# ---- the set-up ----

class SentinelStack:
    """The session's stack (MariaDB) with Redis from a SentinelSet: what
    Cluster and Consumer ask of a stack."""

    def __init__(self, stack, rs):
        self.stack, self.rs = stack, rs
        self.dead_redis_port = free_port()

    def env(self):
        env = self.stack.env()
        env.update(self.rs.env())
        env.update({"PUSHGATE_REDIS_HOST": HOST,
                    "PUSHGATE_REDIS_PORT": str(self.dead_redis_port)})
        return env

    def redis(self, **kw):
        return self.rs.redis(**kw)

    def __getattr__(self, name):
        return getattr(self.stack, name)


@pytest.fixture
def sentinels(tmp_path):
    rs = SentinelSet(dir=str(tmp_path / "sentinel"), down_after_ms=DOWN_AFTER_MS, keep=True)
    try:
        rs.start()
    except (FixtureError, OSError) as e:
        pytest.skip("Redis with Sentinel cannot start here: %s" % e)
    try:
        yield rs
    finally:
        rs.stop()


@pytest.fixture
def system(bin_dir, stack, sentinels, tmp_path, monkeypatch):
    """Proxy, gateways A and B and a consumer (with a metrics port), all
    through the sentinels."""
    ss = SentinelStack(stack, sentinels)
    for k, v in ss.env().items():
        monkeypatch.setenv(k, v)
    stack.add_app(APP_TOKEN)
    metrics_port = free_port()
    c = Cluster(bin_dir, ss, tmp_path, consumer_settings={"metrics_port": metrics_port,
                                                          "claim_min_idle_ms": 2000})
    c.metrics_port = metrics_port
    try:
        for g in (c.a, c.b):
            wait_until(lambda g=g: node_stats(g.port)["route_cache"]["trusted"], 15,
                       what="the route feed of %s to work" % g.node_id)
        yield c
    finally:
        c.stop()
        db_exec(stack, "DELETE FROM offline_messages WHERE uuid LIKE %s", ("sentinel-%",))


# ---- publishing ----

class Publisher(threading.Thread):
    """XADDs orders at RATE per second in pipelines of CHUNK for `seconds`,
    each on the primary the sentinels name now; every other pipeline ends
    with WAIT 1 WAIT_MS.  Per order: waited (its pipeline had WAIT) and its
    state: "confirmed" (every XADD answered and, with WAIT, at least one
    replica has it), "unreplicated" (WAIT said 0), or "failed" (the pipeline
    raised: the primary gone; the publisher asks the sentinels again for the
    next chunk)."""

    def __init__(self, rs, orders, targets, seconds):
        super().__init__(name="publisher", daemon=True)
        self.rs, self.orders, self.targets = rs, orders, targets
        self.chunks = int(RATE * seconds / CHUNK)
        self.rnd = random.Random(7)
        self.waited, self.state = {}, {}
        self.errors = collections.Counter()
        self.error = None
        self.t_end = None
        self._r = None

    def _client(self):
        if self._r is None:
            self._r = self.rs.redis(socket_timeout=2, socket_connect_timeout=1)
        return self._r

    def _one(self, k):
        waited = k % 2 == 0
        made = self.orders.make([self.rnd.choice(self.targets) for _ in range(CHUNK)])
        try:
            pipe = self._client().pipeline(transaction=False)
            for marker, u in made:
                pipe.xadd(STREAM, {"msg": order_json(u, marker)})
            if waited:
                pipe.execute_command("WAIT", 1, WAIT_MS)
            res = pipe.execute()
            state = "confirmed" if not waited or res[CHUNK] >= 1 else "unreplicated"
            now = time.monotonic()
            with self.orders.lock:
                for (marker, _), entry_id in zip(made, res):
                    self.orders.id_of[marker] = entry_id
                    self.orders.t_pub[marker] = now
        except (redis_mod.exceptions.RedisError, FixtureError, OSError) as e:
            self.errors[type(e).__name__] += 1
            self._r = None
            state = "failed"
        for marker, _ in made:
            self.waited[marker] = waited
            self.state[marker] = state

    def run(self):
        t0 = time.monotonic()
        try:
            for k in range(self.chunks):
                pause = t0 + k * CHUNK / RATE - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                self._one(k)
        except Exception as e:  # noqa: BLE001 - reported by finish()
            self.error = e
        self.t_end = time.monotonic()

    def finish(self, timeout=90):
        self.join(timeout)
        assert not self.is_alive(), "the publisher did not finish"
        assert self.error is None, "the publisher failed: %r" % self.error

    def markers(self, waited, state):
        return {m for m, w in self.waited.items() if w == waited and self.state[m] == state}


# ---- looking at the daemons ----

def consumer_servers(c):
    """{link: server} from the consumer's pushgate_consumer_redis_server_info."""
    with urllib.request.urlopen("http://%s:%d/metrics" % (HOST, c.metrics_port),
                                timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("pushgate_consumer_redis_server_info{"):
            labels = dict(kv.split("=", 1) for kv in line[line.index("{") + 1:
                                                          line.index("}")].split(","))
            out[labels["link"].strip('"')] = labels["server"].strip('"')
    return out


def assert_uses(c, port):
    """/metrics, /stats and the logs say port is the server everyone uses."""
    want = "%s:%d" % (HOST, port)
    wait_until(lambda: consumer_servers(c) == {"reader": want, "control": want}, 15,
               what="the consumer's metrics to name %s" % want)
    for g in (c.a, c.b):
        wait_until(lambda g=g: node_stats(g.port)["redis"]["server"] == want, 15,
                   what="/stats of %s to name %s" % (g.node_id, want))


def logged_at(text, needle):
    """time.time() of the first log line holding needle (the daemons write
    local time to the millisecond), or None."""
    for line in text.splitlines():
        if needle in line:
            stamp = time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")
            return time.mktime(stamp) + int(line[20:23]) / 1000
    return None


def watch_follow(c, rs, old, kill_wall, limit):
    """After the kill (kill_wall: time.time() then): seconds until the
    sentinels named a new primary (polled every 20 ms), and until the
    consumer's two links and each gateway's route feed were up on it (from
    their logs' own time stamps), waited for at most limit s."""
    seen, new = {}, None
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if new is None:
            try:
                _, port = rs.primary()
                if port != old and rs.role(port) == "master":
                    new, seen["promoted"] = port, time.time() - kill_wall
            except FixtureError:
                pass
        if new is not None:
            clog = c.consumer.log()
            links = [logged_at(clog, "redis %s:%d: %s connection up" % (HOST, new, link))
                     for link in ("reader", "control")]
            if None not in links:
                seen["consumer"] = max(links) - kill_wall
            for name, g in (("gateway A", c.a), ("gateway B", c.b)):
                at = logged_at(g.log(), "redis %s:%d: route feed listener connection up" % (
                    HOST, new))
                if at is not None:
                    seen[name] = at - kill_wall
            if len(seen) == 4:
                break
        time.sleep(0.02)
    return new, seen


def wait_delivered(tally, markers, timeout, what):
    wait_until(lambda: markers <= tally.delivered(), timeout, interval=0.2,
               what="%s (%d of %d delivered)" % (what, len(markers & tally.delivered()),
                                                 len(markers)))


def wait_drained(r, timeout=60):
    """Nothing pending in the group and nothing left unread."""
    def drained():
        try:
            g = [x for x in r.xinfo_groups(STREAM) if x["name"] == GROUP]
            return g and g[0]["pending"] == 0 and g[0].get("lag") in (0, None)
        except redis_mod.exceptions.RedisError:
            return False
    wait_until(drained, timeout, interval=0.2, what="the consumer group to drain")


def report(pub, tally, title):
    """A table of what happened to the orders, by kind and state; returns
    {(waited, state): (published, delivered)}."""
    have = tally.delivered()
    rows = {}
    for waited in (True, False):
        for state in ("confirmed", "unreplicated", "failed"):
            ms = pub.markers(waited, state)
            rows[(waited, state)] = (len(ms), len(ms & have))
    lines = ["%s:" % title, "  %-18s %-13s %9s %9s %6s" % ("XADD", "state", "published",
                                                             "delivered", "lost")]
    for (waited, state), (n, d) in rows.items():
        lines.append("  %-18s %-13s %9d %9d %6d" % ("with WAIT 1" if waited else "without WAIT",
                                                     state, n, d, n - d))
    lines.append("  publisher errors: %s" % (dict(pub.errors) or "none"))
    say("\n".join(lines))
    return rows


def start_publishing(c, rs, fleet, tag, seconds):
    targets = users("sentinel-%s" % tag, USERS)
    half = USERS // 2
    tabs = fleet.open(targets[:half], c.a.port) + fleet.open(targets[half:], c.b.port)
    orders = Orders(tag)
    tally = Tally(orders, tabs)
    pub = Publisher(rs, orders, targets, seconds)
    pub.start()
    return pub, tally


# ---- the tests ----

def confirmed_all_delivered(pub, tally, rs, at_least):
    """Every order confirmed with WAIT 1 was delivered (at least at_least of
    them, or the test proved little); the stream is drained.  Redis on the
    primary now."""
    confirmed_wait = pub.markers(True, "confirmed")
    assert len(confirmed_wait) > at_least, "too few orders confirmed with WAIT: %d" % len(
        confirmed_wait)
    wait_delivered(tally, confirmed_wait, 60, "every order WAIT 1 confirmed")
    r = rs.redis()
    wait_drained(r)
    return r


def test_primary_killed_while_publishing(system, sentinels, fleet):
    c, rs = system, sentinels
    _, first = rs.primary()
    assert_uses(c, first)
    pub, tally = start_publishing(c, rs, fleet, "kill", seconds=10)
    time.sleep(3)

    kill_wall = time.time()
    old = rs.kill_primary()
    new, seen = watch_follow(c, rs, old, kill_wall, limit=30)
    say("kill -9 of the primary %s:%d: promoted %s:%s after %s; consumer on it after %s, "
        "route feed of A after %s, of B after %s (down-after-milliseconds %d)" % (
            HOST, old, HOST, new, *("%.2f s" % seen[k] if k in seen else "never"
                                    for k in ("promoted", "consumer", "gateway A",
                                              "gateway B")), DOWN_AFTER_MS))
    assert new is not None, "the sentinels promoted nobody within 30 s"
    limit = DOWN_AFTER_MS / 1000 + FOLLOW_SLACK_S
    for who in ("consumer", "gateway A", "gateway B"):
        assert seen.get(who, 1e9) <= limit, "%s did not follow within %.1f s" % (who, limit)
    rs.restart(old)     # the pair replicates again, so WAIT can be satisfied
    pub.finish()

    r = confirmed_all_delivered(pub, tally, rs, 1000)
    rows = report(pub, tally, "orders around the failover")
    n, d = rows[(False, "confirmed")]
    say("the asynchronous replication window: %d of %d orders XADDed without WAIT (confirmed "
        "by the old primary only) were lost" % (n - d, n))
    assert r.xrange(STREAM + ":dead") == []
    assert_uses(c, rs.primary()[1])   # new, unless the sentinels failed back meanwhile
    for g in (c.a, c.b):
        assert node_stats(g.port)["route_cache"]["trusted"], g.node_id
    ctl_through_sentinels(c, rs, r)


def ctl_through_sentinels(c, rs, r):
    """pushgate-ctl finds the promoted primary through the sentinels too, and
    WAIT 1 is satisfied by the old primary, a replica now; a master name the
    sentinels do not know fails at once, saying so."""
    env = dict(os.environ, **c.stack.env())
    env.pop("PUSHGATE_CHAT_TOKEN", None)
    ctl = os.path.join(c.bin_dir, "pushgate-ctl")
    stream = "test:sentinel:ctl"
    p = subprocess.run([ctl, "publish", "--set", "stream=" + stream, "--raw", "{}", "--count",
                        "5", "--wait-replicas", "1"], capture_output=True, text=True,
                       timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    assert r.xlen(stream) == 5
    t0 = time.monotonic()
    p = subprocess.run([ctl, "publish", "--set", "redis_master_name=nobody", "--raw", "{}"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 1 and "no sentinel monitors a master named nobody" in p.stderr, (
        p.stderr)
    assert p.stderr.count("does not monitor that master name") == rs.SENTINELS
    assert time.monotonic() - t0 < 5


def test_redis_then_mysql_down_recovers_by_itself(system, sentinels, fleet, stack):
    c, rs = system, sentinels
    pub, tally = start_publishing(c, rs, fleet, "outages", seconds=20)
    time.sleep(3)

    primary, replica = rs.kill_servers()
    down_wall = time.time()
    time.sleep(4)
    back_wall = rs.start_servers(primary, replica)

    def consumer_back():
        log = c.consumer.log()
        tail = log[log.rfind("connection lost"):]
        ats = [logged_at(tail, "redis %s:%d: %s connection up" % (HOST, primary, link))
               for link in ("reader", "control")]
        return None not in ats and max(ats)
    at = wait_until(consumer_back, 20, what="the consumer back on Redis")
    say("Redis (primary and replica) down %.1f s; the consumer back %.2f s after the primary "
        "answered again (reconnect backoff: at most 5 s)" % (back_wall - down_wall,
                                                             at - back_wall))

    time.sleep(1)
    stack.stop_mysql()
    t_mysql = time.monotonic()
    try:
        time.sleep(5)
    finally:
        stack.start_mysql()
    say("MySQL down %.1f s" % (time.monotonic() - t_mysql))
    pub.finish()

    r = confirmed_all_delivered(pub, tally, rs, 2000)
    report(pub, tally, "orders around the outages")
    assert r.xrange(STREAM + ":dead") == []
    assert_uses(c, primary)
    for g in (c.a, c.b):
        wait_until(lambda g=g: node_stats(g.port)["route_cache"]["trusted"], 15,
                   what="the route feed of %s back" % g.node_id)
        # mysql.ok turns with the node's next statement (its heartbeat)
        wait_until(lambda g=g: node_stats(g.port)["mysql"]["ok"], 15,
                   what="%s to reach MySQL again" % g.node_id)

"""Redis with an append-only file (appendfsync everysec, as docker-compose.yml
runs it): a kill -9 of Redis loses neither the stream, nor the consumer group,
nor its pending entries, and pushgate-consumer hands every work order off
after the restart.

Each test runs a Redis of its own (tests/fixture.py, Stack(redis_aof=True,
mysql=False)) on its own port, so the session's Redis is never restarted;
MySQL is the session's.  Delivery is checked in MySQL: the work orders are for
agents who are not connected, so the gateway stores each in offline_messages
(one row per uuid and msg_id = the stream id, even if it is delivered twice).
The consumer is pointed at its gateway with the static `gateways` setting, so
rows other tests leave in gateway_nodes do not matter.

Every wait is bounded; only processes started here are stopped, by pid."""
import json
import os
import sys
import time
import uuid as uuidlib

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import HOST, free_port, start_server, wait_until  # noqa: E402
from fixture import Stack  # noqa: E402
import test_consumer  # noqa: E402

SECRET = "durability-e2e-secret-0123456789"
TOKEN = "durability-e2e-app"
GROUP = "pushgate"
EVERYSEC_WINDOW = 1.5   # a little over appendfsync everysec's one second


# ---- helpers ----

def work_order(uuid, infos):
    """The producer format of the README (field msg of the stream entry)."""
    return json.dumps({"url": "/worksheet/send-message", "chat_token": TOKEN,
                       "data": [{"uuid": uuid, "data": {"type": "new_worksheet_to_deal",
                                                        "infos": infos}}]})


def publish(r, stream, uuids, n, tag):
    """XADDs n work orders, round robin over uuids; returns the entry ids."""
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(stream, {"msg": work_order(uuids[i % len(uuids)], "%s %d" % (tag, i))})
    return pipe.execute()


def stored_ids(stack, prefix):
    """msg_ids stored offline for the uuids starting with prefix."""
    conn = stack.mysql()
    try:
        with conn.cursor() as c:
            c.execute("SELECT msg_id FROM offline_messages WHERE uuid LIKE %s", (prefix + "%",))
            return [row[0] for row in c.fetchall()]
    finally:
        conn.close()


def forget(stack, prefix):
    conn = stack.mysql()
    try:
        with conn.cursor() as c:
            c.execute("DELETE FROM offline_messages WHERE uuid LIKE %s", (prefix + "%",))
    finally:
        conn.close()


def pending_summary(r, stream):
    """(count, {consumer: count}) of the group's pending entries list."""
    p = r.xpending(stream, GROUP)
    return p["pending"], {c["name"]: int(c["pending"]) for c in p["consumers"]}


def group_info(r, stream):
    (g,) = [g for g in r.xinfo_groups(stream) if g["name"] == GROUP]
    return g


def dead_letters(r, stream):
    return r.xrange(stream + ":dead")


class Consumer(test_consumer.Consumer):
    """test_consumer's, started and waited for; Redis from the settings."""

    def __init__(self, bin_dir, tmp_path, stack, **settings):
        super().__init__(bin_dir, tmp_path, stack, **settings)
        self.wait_started()


@pytest.fixture
def procs():
    """What a test started; anything still running at the end is killed."""
    started = []
    yield started
    for p in reversed(started):
        if isinstance(p, Consumer):
            p.kill()
        elif isinstance(p, Stack):
            p.stop()
        elif not p.stopped:
            p.snapshot()
            p.kill_all()


@pytest.fixture
def aof_redis(tmp_path, procs):
    """A Redis of this test's own with AOF (appendonly yes, appendfsync
    everysec), its files in tmp_path/redis-aof/redis (kept for a look after a
    failure)."""
    r = Stack(dir=str(tmp_path / "redis-aof"), redis_aof=True, mysql=False, keep=True)
    procs.append(r)
    r.start()
    cfg = r.redis().config_get("append*")
    assert cfg["appendonly"] == "yes" and cfg["appendfsync"] == "everysec", cfg
    return r


@pytest.fixture
def names(stack):
    """A stream and a uuid prefix of this test's own; the app token is known."""
    stack.add_app(TOKEN)
    tag = uuidlib.uuid4().hex[:10]
    prefix = "dur-%s-" % tag
    yield "test:%s:worksheets" % tag, prefix
    forget(stack, prefix)


def start_gateway(bin_dir, stack, tmp_path, procs, internal_port=None):
    g = start_server(bin_dir, "pushgate-gateway", tmp_path,
                     host=HOST, internal_host=HOST,
                     internal_port=internal_port or free_port(),
                     advertised_ip=HOST, worker_num=2, task_worker_num=2, reactor_num=2,
                     jwt_secret=SECRET, ack_timeout=10, node_heartbeat_interval=1,
                     mysql_host=stack.mysql_host, mysql_port=stack.mysql_port,
                     mysql_user=stack.mysql_user, mysql_password=stack.mysql_password,
                     mysql_database=stack.mysql_db, wait=False)
    procs.append(g)
    g.wait_ready()
    return g


def start_consumer(bin_dir, stack, tmp_path, procs, redis, stream, gateway_port, **settings):
    s = dict(redis_host=redis.redis_host, redis_port=redis.redis_port, stream=stream,
             dead_letter_stream=stream + ":dead", gateways="%s:%d" % (HOST, gateway_port),
             block_ms=500)
    s.update(settings)
    c = Consumer(bin_dir, tmp_path, stack, **s)
    procs.append(c)
    return c


def kill_9_and_restart(redis, meanwhile=None):
    """kill -9 of our redis-server (by pid), meanwhile() while it is down,
    then a new one on the same port and folder; waits until it answers, i.e.
    has loaded the AOF.  Returns a client of the new one."""
    port, pid = redis.redis_port, redis.redis_pid
    redis.stop_redis("kill")
    if meanwhile:
        meanwhile()
    redis.start_redis()
    assert redis.redis_port == port and redis.redis_pid != pid
    assert "DB loaded from append only file" in open(redis.redis_log, errors="replace").read()
    return redis.redis()


def wait_all_stored(stack, prefix, ids, timeout, consumer):
    want = set(ids)

    def done():
        consumer.running()
        return want <= set(stored_ids(stack, prefix))
    try:
        wait_until(done, timeout, interval=0.2, what="%d work orders stored" % len(want))
    except AssertionError:
        got = set(stored_ids(stack, prefix))
        raise AssertionError("%d of %d work orders stored; consumer log:\n%s"
                             % (len(got & want), len(want), consumer.log()[-4000:]))


# ---- tests ----

def test_backlog_and_group_survive_kill_9_of_redis(bin_dir, stack, tmp_path, procs, aof_redis,
                                                   names):
    stream, prefix = names
    r = aof_redis.redis()
    users = [prefix + "agent-%d" % i for i in range(50)]

    # What an earlier run of a consumer leaves: the group, with some entries
    # read and acknowledged - handed off already, never to be sent again.
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    done = publish(r, stream, users, 10, "handled earlier")
    r.xreadgroup(GROUP, "earlier", {stream: ">"}, count=10)
    assert r.xack(stream, GROUP, *done) == 10

    # The backlog, XADDed while no consumer runs.
    ids = publish(r, stream, users, 2000, "backlog")
    time.sleep(EVERYSEC_WINDOW)
    r = kill_9_and_restart(aof_redis)

    assert r.xlen(stream) == 2010
    assert r.xrange(stream, count=1)[0][0] == done[0]
    assert r.xrevrange(stream, count=1)[0][0] == ids[-1]
    g = group_info(r, stream)
    assert g["last-delivered-id"] == done[-1], g
    assert pending_summary(r, stream)[0] == 0

    gw_port = free_port()
    g = start_gateway(bin_dir, stack, tmp_path, procs, internal_port=gw_port)
    c = start_consumer(bin_dir, stack, tmp_path, procs, aof_redis, stream, gw_port,
                       consumer="after")
    wait_all_stored(stack, prefix, ids, 120, c)
    wait_until(lambda: pending_summary(r, stream)[0] == 0, 20, what="every entry XACKed")
    got = stored_ids(stack, prefix)
    assert set(got) == set(ids), "stored: %d, of them not in the backlog: %s" % (
        len(got), sorted(set(got) - set(ids))[:5])
    assert dead_letters(r, stream) == []
    assert group_info(r, stream)["last-delivered-id"] == ids[-1]
    log = c.stop()
    assert "created consumer group" not in log, "the group was lost:\n" + log[-3000:]
    g.stop()
    g.check_clean()


def test_pending_entries_of_a_dead_consumer_survive_and_are_reclaimed(
        bin_dir, stack, tmp_path, procs, aof_redis, names):
    stream, prefix = names
    r = aof_redis.redis()
    users = [prefix + "agent-%d" % i for i in range(20)]
    ids = publish(r, stream, users, 1000, "order")

    # Consumer A reads a part of the backlog but has no gateway to hand it
    # to (nothing listens on gw_port yet): its entries stay pending.
    gw_port = free_port()
    a = start_consumer(bin_dir, stack, tmp_path, procs, aof_redis, stream, gw_port,
                       consumer="A", max_in_flight=200, count=50)
    wait_until(lambda: pending_summary(r, stream)[1].get("A", 0) == 200, 15,
               what="200 entries pending with A")
    time.sleep(EVERYSEC_WINDOW)
    before = {e["message_id"]: e["times_delivered"]
              for e in r.xpending_range(stream, GROUP, "-", "+", 1000)}
    assert len(before) == 200

    assert set(before) == set(ids[:200])

    # Redis dies (kill -9) while A holds them, and A dies too before Redis is
    # back (as when their host goes down).
    r = kill_9_and_restart(aof_redis, meanwhile=a.kill)

    assert r.xlen(stream) == 1000
    count, per_consumer = pending_summary(r, stream)
    assert (count, per_consumer) == (200, {"A": 200}), per_consumer
    after = {e["message_id"]: e["times_delivered"]
             for e in r.xpending_range(stream, GROUP, "-", "+", 1000)}
    assert after == before, "the pending entries list changed across the restart"
    assert group_info(r, stream)["last-delivered-id"] == ids[199]

    # B reclaims what A left (XAUTOCLAIM after claim_min_idle_ms) and reads
    # the rest; the gateway stores every work order for the offline agents.
    g = start_gateway(bin_dir, stack, tmp_path, procs, internal_port=gw_port)
    b = start_consumer(bin_dir, stack, tmp_path, procs, aof_redis, stream, gw_port,
                       consumer="B", claim_min_idle_ms=1000)
    wait_all_stored(stack, prefix, ids, 120, b)
    wait_until(lambda: pending_summary(r, stream)[0] == 0, 20, what="every entry XACKed")
    assert set(stored_ids(stack, prefix)) == set(ids)
    assert dead_letters(r, stream) == []
    log = b.stop()
    assert "reclaimed" in log, log[-3000:]
    assert "created consumer group" not in log, "the group was lost:\n" + log[-3000:]
    g.stop()
    g.check_clean()


def test_a_consumer_holding_entries_rides_through_kill_9_of_redis(
        bin_dir, stack, tmp_path, procs, aof_redis, names):
    stream, prefix = names
    r = aof_redis.redis()
    users = [prefix + "agent-%d" % i for i in range(20)]
    ids = publish(r, stream, users, 1000, "order")

    # The consumer holds 200 entries (read, not XACKed: no gateway yet) when
    # Redis is killed; it keeps running, reconnects and delivers them.
    gw_port = free_port()
    c = start_consumer(bin_dir, stack, tmp_path, procs, aof_redis, stream, gw_port,
                       consumer="C", max_in_flight=200, count=50)
    wait_until(lambda: pending_summary(r, stream)[1].get("C", 0) == 200, 15,
               what="200 entries pending with C")
    time.sleep(EVERYSEC_WINDOW)
    lost_before = c.log().count("reader connection lost")
    r = kill_9_and_restart(aof_redis)
    assert pending_summary(r, stream) == (200, {"C": 200})
    wait_until(lambda: c.running() and c.log().count("reader connection lost") > lost_before, 10,
               what="the consumer to notice the restart")
    wait_until(lambda: c.running() and c.log().count("reader connection up") >= 2, 15,
               what="the consumer to reconnect")

    g = start_gateway(bin_dir, stack, tmp_path, procs, internal_port=gw_port)
    wait_all_stored(stack, prefix, ids, 120, c)
    wait_until(lambda: pending_summary(r, stream)[0] == 0, 20, what="every entry XACKed")
    assert set(stored_ids(stack, prefix)) == set(ids)
    assert dead_letters(r, stream) == []
    log = c.stop()
    assert "created consumer group" not in log.split("reader connection up", 2)[-1], (
        "the group was created again after the restart:\n" + log[-3000:])
    g.stop()
    g.check_clean()

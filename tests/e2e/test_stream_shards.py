"""Stream shards: the consumer reads a set of streams
(stream = <prefix>:{0..7}, eight streams, each its own Redis Cluster hash
tag), on one Redis and on a Redis Cluster of three primaries
(tests/fixture.py RedisCluster), with proxy, gateways A and B and browsers
(tests/e2e/stack_util.py).

- one Redis, 8 shards: orders published by pushgate-ctl publish for many
  uuids land in several streams (crc32(uuid) mod 8, as zlib and PHP compute
  it), all reach their browsers with the id <entry id>@<shard>, and every
  shard ends with nothing pending;
- a malformed entry of one shard is dead-lettered with that shard as
  source_stream and XACKed there, and pushgate-ctl dead replay puts a dead
  letter back into its shard with the id browsers had;
- entries left pending in every shard by a consumer that died are reclaimed
  by the next one and delivered;
- a Redis Cluster: the shards spread over the three primaries, the consumer
  reads each from the node serving its slot (its log and /metrics say
  which), pushgate-ctl publish sends each order to the node of its shard,
  and orders of every shard reach their browsers; a malformed one goes to
  the dead-letter stream on its own node;
- a shard's slot moved to another node (CLUSTER SETSLOT, MIGRATE) while the
  consumer reads it: the consumer follows MOVED to the new node;
- a node killed and started again (its streams gone): the consumer
  reconnects, creates the groups again, and its shards work again.

Skipped, with the reason, when the cluster cannot start.  Every wait is
bounded; only processes started here are stopped, by pid."""
import concurrent.futures
import json
import os
import subprocess
import sys
import urllib.request
import zlib

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import SANITIZER_MARKS, free_port, wait_until  # noqa: E402
from fixture import FixtureError, RedisCluster  # noqa: E402
from stack_util import (APP_TOKEN, GROUP, RUN, Cluster, Orders, Tally,  # noqa: E402
                        order_json, users)
from test_consumer import pending  # noqa: E402

pytest.importorskip("redis")

SHARDS = 8
PREFIX = "pushgate:shards-%s" % RUN
STREAM_SET = PREFIX + ":{0..7}"
NAMES = ["%s:{%d}" % (PREFIX, k) for k in range(SHARDS)]
DEAD = PREFIX + ":dead"
USERS = 16
PARALLEL = 4            # pushgate-ctl runs at once
CTL_TIMEOUT = 30


def shard_of(uuid):
    """What pushgate-ctl publish picks (and what a PHP producer would:
    crc32($uuid) % 8)."""
    return zlib.crc32(uuid.encode()) % SHARDS


# ---- set-up ----

def consumer_settings(metrics_port, **extra):
    s = {"stream": STREAM_SET, "dead_letter_stream": DEAD, "claim_min_idle_ms": 1500,
         "metrics_port": metrics_port}
    s.update(extra)
    return s


def clean(r_for):
    for name in NAMES + [DEAD]:
        r_for(name).delete(name)


@pytest.fixture(scope="module")
def single(bin_dir, stack, tmp_path_factory):
    """Proxy, gateways A and B and a consumer of the 8 shards, on the stack's Redis."""
    tmp = tmp_path_factory.mktemp("shards-single")
    mp = pytest.MonkeyPatch()
    for k, v in stack.env().items():
        mp.setenv(k, v)
    stack.add_app(APP_TOKEN)
    r = stack.redis()
    clean(lambda name: r)
    metrics_port = free_port()
    c = Cluster(bin_dir, stack, tmp, consumer_settings=consumer_settings(metrics_port))
    c.metrics_port = metrics_port
    c.r_for = lambda name: r
    c.ctl_sets = []
    try:
        yield c
    finally:
        try:
            c.stop()
        finally:
            clean(lambda name: r)
            mp.undo()


@pytest.fixture(scope="module")
def rcluster(tmp_path_factory):
    rc = RedisCluster(dir=str(tmp_path_factory.mktemp("redis-cluster")), keep=True)
    try:
        rc.start()
    except (FixtureError, OSError) as e:
        pytest.skip("a Redis Cluster cannot start here: %s" % e)
    try:
        yield rc
    finally:
        rc.stop()


@pytest.fixture(scope="module")
def clustered(bin_dir, stack, rcluster, tmp_path_factory):
    """The same system with the shards on the Redis Cluster; the gateways'
    route feed stays on the stack's Redis."""
    tmp = tmp_path_factory.mktemp("shards-cluster")
    mp = pytest.MonkeyPatch()
    for k, v in stack.env().items():
        mp.setenv(k, v)
    stack.add_app(APP_TOKEN)
    metrics_port = free_port()
    settings = consumer_settings(metrics_port, redis_cluster_nodes=rcluster.nodes(),
                                 redis_port=free_port())   # a dead port: nothing may use it
    c = Cluster(bin_dir, stack, tmp, consumer_settings=settings)
    c.metrics_port = metrics_port
    c.r_for = rcluster.node_for
    c.ctl_sets = ["redis_cluster_nodes=" + rcluster.nodes(), "redis_port=%d" % free_port()]
    try:
        yield c
    finally:
        try:
            c.stop()
        finally:
            mp.undo()


# ---- helpers ----

def ctl_publish(bin_dir, stack, system, uuid, marker):
    """pushgate-ctl publish --raw of one order with a marker; its entry id."""
    args = [os.path.join(bin_dir, "pushgate-ctl"), "publish", "--set", "stream=" + STREAM_SET]
    for s in system.ctl_sets:
        args += ["--set", s]
    args += ["--raw", order_json(uuid, marker)]
    env = dict(os.environ, **stack.env())
    p = subprocess.run(args, capture_output=True, text=True, timeout=CTL_TIMEOUT, env=env,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, "pushgate-ctl publish: %s %s" % (p.stdout, p.stderr)
    marks = [m for m in SANITIZER_MARKS if m in p.stderr]
    assert not marks, p.stderr[-4000:]
    return p.stdout.strip()


def publish_all(bin_dir, stack, system, orders, targets):
    """One order per uuid through pushgate-ctl; marker -> shard."""
    shard = {}
    made = orders.make(targets)
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        ids = list(pool.map(lambda mu: ctl_publish(bin_dir, stack, system, mu[1], mu[0]), made))
    for (marker, u), entry_id in zip(made, ids):
        k = shard_of(u)
        found = system.r_for(NAMES[k]).xrange(NAMES[k], entry_id, entry_id)
        assert found and json.loads(found[0][1]["msg"])["data"][0]["data"]["marker"] == marker, \
            "order %s of %s is not in %s (crc32 mod 8)" % (marker, u, NAMES[k])
        orders.id_of[marker] = "%s@%d" % (entry_id, k)   # what browsers get as id
        shard[marker] = k
    return shard


def pending_of(system, name):
    return pending(system.r_for(name), name, GROUP)


def wait_all_acked(system, timeout=30):
    wait_until(lambda: all(pending_of(system, n) == 0 for n in NAMES), timeout,
               what="every shard's pending list to be empty (%s)" % [
                   pending_of(system, n) for n in NAMES])


def deliver(bin_dir, stack, system, fleet, tag):
    """Tabs for USERS users over both gateways, one order each through
    pushgate-ctl, all delivered with <entry id>@<shard>; the shards used."""
    us = users(tag, USERS)
    fleet.open(us[:USERS // 2], system.a.port)
    fleet.open(us[USERS // 2:], system.b.port)
    orders = Orders(tag)
    shard = publish_all(bin_dir, stack, system, orders, us)
    tally = Tally(orders, fleet.tabs)
    wait_until(lambda: tally.count() == len(us), 30,
               what="all %d orders delivered (have %d)" % (len(us), tally.count()))
    tally.check()
    wait_all_acked(system)
    return set(shard.values())


def ctl(bin_dir, stack, system, *args):
    argv = [os.path.join(bin_dir, "pushgate-ctl")] + list(args) + [
        "--set", "stream=" + STREAM_SET, "--set", "dead_letter_stream=" + DEAD]
    for s in system.ctl_sets:
        argv += ["--set", s]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=CTL_TIMEOUT,
                       env=dict(os.environ, **stack.env()), stdin=subprocess.DEVNULL)
    marks = [m for m in SANITIZER_MARKS if m in p.stderr]
    assert not marks, p.stderr[-4000:]
    return p


def replay_goes_back_to_its_shard(bin_dir, stack, system, fleet, tag, k):
    """A dead letter of shard k (as the consumer writes them) replayed with
    pushgate-ctl dead replay: back into shard k, with the msg_id browsers
    had (<source id>@k), delivered, and gone from the dead-letter stream."""
    u = users(tag, 1)[0]
    fleet.open([u], system.a.port)
    marker = "%s-%s-replay" % (tag, RUN)
    source_id = "1700000000000-%d" % k
    dead_id = system.r_for(DEAD).xadd(DEAD, {
        "msg": order_json(u, marker), "reason": "refused by gateway x: code 10201: test",
        "source_id": source_id, "source_stream": NAMES[k], "deliveries": "1"})
    p = ctl(bin_dir, stack, system, "dead", "replay", "--id", dead_id)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "(msg_id %s@%d)" % (source_id, k) in p.stdout, p.stdout
    tab = fleet.tabs[-1]
    wait_until(lambda: tab.got, 20, what="the replayed order at the browser")
    assert tab.got == [(marker, "%s@%d" % (source_id, k))], tab.got
    assert system.r_for(DEAD).xrange(DEAD, dead_id, dead_id) == []
    wait_all_acked(system)
    # one from a stream that is not in the set stays
    other = system.r_for(DEAD).xadd(DEAD, {
        "msg": order_json(u, marker), "reason": "x", "source_id": source_id,
        "source_stream": PREFIX + ":other", "deliveries": "1"})
    p = ctl(bin_dir, stack, system, "dead", "replay", "--id", other)
    assert p.returncode == 1 and "came from stream '%s:other'" % PREFIX in p.stderr, p.stderr
    system.r_for(DEAD).xdel(DEAD, other)


def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as f:
        return f.read().decode()


def dead_letter_of(system, entry_id):
    for _, fields in system.r_for(DEAD).xrange(DEAD):
        if fields.get("source_id") == entry_id:
            return fields
    return None


def malformed_goes_to_dead(system, k):
    name = NAMES[k]
    entry_id = system.r_for(name).xadd(name, {"msg": "not json at all"})
    d = wait_until(lambda: dead_letter_of(system, entry_id), 20,
                   what="the dead letter of %s in %s" % (entry_id, name))
    assert d["source_stream"] == name, d
    assert d["reason"].startswith("malformed: msg is not JSON"), d
    wait_until(lambda: pending_of(system, name) == 0, 20, what="%s XACKed in %s" % (entry_id, name))


# ---- settings ----

@pytest.mark.parametrize("stream,needle", [
    ("s:{7..0}", "a range is written {a..b}"),
    ("s:{0..1024}", "more than 1024 streams"),
    ("a,,b", "an empty item"),
    ("a,b,a", "a is given twice"),
    ("s:{0..3},s:{3}", "s:{3} is given twice"),
    ("s:{0..1}{2..3}", "one range per name"),
])
def test_bad_stream_set_stops_at_start_with_the_reason(bin_dir, stream, needle):
    p = subprocess.run([os.path.join(bin_dir, "pushgate-consumer"), "--set", "stream=" + stream],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "pushgate-consumer: stream: " in p.stderr and needle in p.stderr, p.stderr


def test_dead_letter_stream_in_the_set_and_cluster_with_sentinels_refused(bin_dir):
    exe = os.path.join(bin_dir, "pushgate-consumer")
    p = subprocess.run([exe, "--set", "stream=s:{0..3}", "--set", "dead_letter_stream=s:{2}"],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and "dead_letter_stream must differ from stream" in p.stderr, p.stderr
    p = subprocess.run([exe, "--set", "redis_cluster_nodes=127.0.0.1:7000", "--set",
                        "redis_sentinels=127.0.0.1:26379"], capture_output=True, text=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and "exclude each other" in p.stderr, p.stderr
    p = subprocess.run([exe, "--set", "redis_cluster_nodes=127.0.0.1"], capture_output=True,
                       text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and "redis_cluster_nodes: " in p.stderr, p.stderr


# ---- one Redis ----

def test_single_redis_orders_spread_over_shards_and_reach_browsers(bin_dir, stack, single,
                                                                   fleet):
    used = deliver(bin_dir, stack, single, fleet, "shards1")
    assert len(used) >= 4, "%d uuids landed in only %d of 8 streams: %s" % (USERS, len(used), used)
    for name in NAMES:      # every shard has its group, created with MKSTREAM
        groups = single.r_for(name).xinfo_groups(name)
        assert [g["name"] for g in groups] == [GROUP], (name, groups)
    # the figures are sampled about once a second: the last XACKs show soon
    wanted = ['pushgate_consumer_shard_pending{stream="%s"} 0' % name for name in NAMES] + \
        ["pushgate_consumer_stream_pending 0"]
    wait_until(lambda: all(w in metrics(single.metrics_port) for w in wanted), 10,
               what="every shard's pending count to read 0 in /metrics")


def test_single_redis_malformed_entry_dead_lettered_with_its_shard(single):
    malformed_goes_to_dead(single, 5)


def test_single_redis_dead_letter_replayed_into_its_shard(bin_dir, stack, single, fleet):
    replay_goes_back_to_its_shard(bin_dir, stack, single, fleet, "shards-rp", 6)


def test_restart_reclaims_pending_entries_of_every_shard(bin_dir, stack, single, fleet):
    """A consumer that read one entry of every shard and died (ghost: read,
    never XACKed): the next consumer reclaims all of them."""
    single.consumer.stop()
    us = users("shards-re", SHARDS)
    fleet.open(us, single.a.port)
    orders = Orders("shards-re")
    r = single.r_for(NAMES[0])
    for k, (marker, u) in enumerate(orders.make(us)):
        entry_id = r.xadd(NAMES[k], {"msg": order_json(u, marker)})
        orders.id_of[marker] = "%s@%d" % (entry_id, k)
    got = r.xreadgroup(GROUP, "ghost", {n: ">" for n in NAMES}, count=SHARDS)
    assert sum(len(entries) for _, entries in got) == SHARDS, got
    assert all(pending_of(single, n) == 1 for n in NAMES)
    single.consumer = single.start_consumer("c-after-ghost")
    tally = Tally(orders, fleet.tabs)
    wait_until(lambda: tally.count() == SHARDS, 30,
               what="the %d reclaimed orders delivered (have %d)" % (SHARDS, tally.count()))
    tally.check()
    wait_all_acked(single)
    log = single.consumer.log()
    for name in NAMES:
        assert "(by a stopped consumer) in %s\n" % name in log, log[-3000:]


# ---- a Redis Cluster ----

def test_cluster_shards_spread_over_nodes_and_reach_browsers(bin_dir, stack, rcluster,
                                                             clustered, fleet):
    owners = {name: rcluster.owner(name) for name in NAMES}
    assert len(set(owners.values())) == 3, "the 8 shards are not on 3 nodes: %s" % owners
    for name, port in owners.items():
        wait_until(lambda name=name, port=port: "stream %s (slot %d) is served by 127.0.0.1:%d"
                   % (name, rcluster.slot(name), port) in clustered.consumer.log(), 10,
                   what="the consumer to read %s from node %d" % (name, port))
    used = deliver(bin_dir, stack, clustered, fleet, "shards-c")
    assert len(used) >= 4, used
    for name, port in owners.items():   # each stream exists on its own node only
        assert rcluster.client(port).exists(name) == 1, (name, port)
        others = [p for p in rcluster.ports if p != port]
        for p in others:
            assert rcluster.client(p).execute_command("CLUSTER", "COUNTKEYSINSLOT",
                                                      rcluster.slot(name)) == 0
    text = metrics(clustered.metrics_port)
    for port in rcluster.ports:
        assert 'link="control 127.0.0.1:%d",server="127.0.0.1:%d"' % (port, port) in text, \
            text[-3000:]
    assert "pushgate_consumer_redis_up 1" in text
    wait_until(lambda: "pushgate_consumer_stream_pending 0" in metrics(clustered.metrics_port), 10,
               what="the pending count to read 0 in /metrics")
    malformed_goes_to_dead(clustered, 2)
    replay_goes_back_to_its_shard(bin_dir, stack, clustered, fleet, "shards-crp", 3)


def test_cluster_shard_moved_to_another_node_is_followed(bin_dir, stack, rcluster, clustered,
                                                        fleet):
    """The slot of shard 0 moves to another node (its stream and group with
    it) while the consumer reads it: the consumer follows the MOVED replies
    to the new node, and orders of that shard still reach their browsers."""
    name = NAMES[0]
    slot = rcluster.slot(name)
    old = rcluster.owner(name)
    new = [p for p in rcluster.ports if p != old][0]
    rcluster.move_slot(slot, new)
    assert rcluster.owner(name) == new
    wait_until(lambda: "stream %s (slot %d) is served by 127.0.0.1:%d" % (name, slot, new)
               in clustered.consumer.log(), 15, what="the consumer to follow %s to %d" % (name,
                                                                                          new))
    candidates = users("shards-mv", 200)
    us = [u for u in candidates if shard_of(u) == 0][:6]
    assert len(us) == 6
    fleet.open(us, clustered.a.port)
    orders = Orders("shards-mv")
    shard = publish_all(bin_dir, stack, clustered, orders, us)
    assert set(shard.values()) == {0}
    tally = Tally(orders, fleet.tabs)
    wait_until(lambda: tally.count() == len(us), 30,
               what="the orders of the moved shard delivered (have %d)" % tally.count())
    tally.check()
    wait_all_acked(clustered)


def test_cluster_node_lost_and_back_its_shards_resume(bin_dir, stack, rcluster, clustered,
                                                      fleet):
    """kill -9 of a node serving two shards, and the node started again (no
    persistence: its streams and groups are gone): the consumer reconnects,
    creates the groups again with MKSTREAM, and orders published to those
    shards afterwards reach their browsers."""
    victim = rcluster.owner(NAMES[1])
    lost = [k for k in range(SHARDS) if rcluster.owner(NAMES[k]) == victim]
    assert len(lost) >= 2, lost
    rcluster.kill(victim)
    wait_until(lambda: "control 127.0.0.1:%d connection lost" % victim in
               clustered.consumer.log(), 10, what="the consumer to see node %d go" % victim)
    rcluster.restart(victim)
    wait_until(lambda: clustered.consumer.log().count("consumer group pushgate on stream") >=
               SHARDS + len(lost), 20, what="the groups of %s created again" % lost)
    us = [u for u in users("shards-lost", 300) if shard_of(u) in lost][:8]
    fleet.open(us, clustered.b.port)
    orders = Orders("shards-lost")
    shard = publish_all(bin_dir, stack, clustered, orders, us)
    assert set(shard.values()) <= set(lost)
    tally = Tally(orders, fleet.tabs)
    wait_until(lambda: tally.count() == len(us), 30,
               what="the orders of the shards of the lost node (have %d)" % tally.count())
    tally.check()
    wait_all_acked(clustered)

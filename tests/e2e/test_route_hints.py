"""The consumer's route hints (consumer/hints.c): an order goes to the
gateway that holds its uuid's browser, as the route feed last said, so it
does not cross the proxy; a hint is only a preference, so a wrong, stale
or forged one still delivers every order.  Gateways A and B, the proxy and
a consumer with its hints (the default), against the stack's MariaDB and
Redis, with real browsers that ACK every order.

1. users on A and on B: every order reaches its user, none crosses the
   proxy, and the consumer says it followed a hint for each;
2. a user who moves from B to A is followed, and still is when some of
   its tabs on A close; a user with a tab on each node gets every order on
   both (the second through the proxy);
3. notes forged on the feed: a hint naming the wrong node (the order then
   crosses the proxy), an unknown node, more nodes than the consumer keeps,
   and malformed notes; the consumer keeps running and every order arrives.

Every wait is bounded."""
import os
import re
import sys
import time
import urllib.request

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import HOST, free_port, wait_until  # noqa: E402
from stack_util import Orders, Tally, pending, running_cluster, users, wait_drained  # noqa: E402

CHANNEL = "pushgate:routes"


@pytest.fixture(scope="module")
def cluster(bin_dir, stack, tmp_path_factory):
    port = free_port()
    with running_cluster(bin_dir, stack, tmp_path_factory.mktemp("hints"),
                         consumer_settings=dict(route_hints=65536, metrics_port=port)) as c:
        c.metrics_port = port
        wait_until(lambda: metric(c, "pushgate_consumer_route_feed_up") == 1, 10,
                   what="the consumer to hear the route feed")
        yield c


def metric(c, name):
    url = "http://%s:%d/metrics" % (HOST, c.metrics_port)
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    assert m, "%s not in /metrics" % name
    return float(m.group(1))


def notes(c):
    return metric(c, "pushgate_consumer_route_notes_total")


def open_heard(c, fleet, uuids, port):
    """Tabs for uuids on port, once the consumer heard of each registration."""
    before = notes(c)
    tabs = fleet.open(uuids, port)
    wait_until(lambda: notes(c) >= before + len(uuids), 10,
               what="the consumer to hear of %d registrations" % len(uuids))
    return tabs


def heard(feed, text, timeout=10):
    """Waits until a pubsub subscription gets the note text."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = feed.get_message(timeout=0.5)
        if m and m["type"] == "message" and m["data"] == text:
            return
    raise AssertionError("no note %r on the feed in %d s" % (text, timeout))


def deliver(c, stack, orders, targets, tabs, per_tab=False):
    orders.publish(stack.redis(), targets)
    wait_until(lambda: Tally(orders, tabs).count() == len(set(orders.uuid_of)), 30,
               what="%d orders at their users" % len(orders.uuid_of))
    wait_until(lambda: pending(stack.redis()) == 0, 30, what="every entry XACKed")
    Tally(orders, tabs).check(per_tab=per_tab)


def test_orders_go_to_the_node_of_their_browser(cluster, stack, fleet):
    c = cluster
    on_a, on_b = users("hint-a", 10), users("hint-b", 10)
    tabs = open_heard(c, fleet, on_a, c.a.port) + open_heard(c, fleet, on_b, c.b.port)
    crossed0, hinted0 = c.crossed(), metric(c, "pushgate_consumer_hinted_total")
    orders = Orders("hint")
    deliver(c, stack, orders, (on_a + on_b) * 10, tabs, per_tab=True)
    assert c.crossed() == crossed0, "orders crossed the proxy though hinted"
    assert metric(c, "pushgate_consumer_hinted_total") - hinted0 == 200
    wait_drained(stack, stack.redis(), "hint-")


def test_a_user_who_moves_is_followed_and_every_tab_served(cluster, stack, fleet):
    c = cluster
    mover, both = users("hint-move", 1) + users("hint-both", 1)
    (on_b,) = open_heard(c, fleet, [mover], c.b.port)
    first = Orders("hint-m1")
    deliver(c, stack, first, [mover] * 5, [on_b])

    feed = stack.redis().pubsub()
    feed.subscribe(CHANNEL)
    fleet.close_tabs([on_b])
    heard(feed, "u " + mover)   # B's note that it left, before A's that it came
    feed.close()
    crossed0 = c.crossed()
    (on_a,) = open_heard(c, fleet, [mover], c.a.port)
    moved = Orders("hint-m2")
    deliver(c, stack, moved, [mover] * 5, [on_a], per_tab=True)
    assert c.crossed() == crossed0, "the moved user's orders crossed the proxy"

    (stays,) = open_heard(c, fleet, [mover], c.a.port)
    feed = stack.redis().pubsub()
    feed.subscribe(CHANNEL)
    fleet.close_tabs([on_a])
    heard(feed, "u %s %s" % (mover, c.a.node_id))   # a tab of it is left on A: still there
    feed.close()
    heard_close = Orders("hint-m3")
    deliver(c, stack, heard_close, [mover] * 5, [stays], per_tab=True)
    assert c.crossed() == crossed0, "the orders of a user still on A crossed the proxy"

    tab_a = open_heard(c, fleet, [both], c.a.port)
    tab_b = open_heard(c, fleet, [both], c.b.port)
    crossed0 = c.crossed()
    twice = Orders("hint-both")
    deliver(c, stack, twice, [both] * 5, tab_a + tab_b, per_tab=True)
    wait_until(lambda: all(len(t.got) >= 5 for t in tab_a + tab_b), 10, what="both tabs")
    assert c.crossed() - crossed0 == 5, "the tab on the other node is served through the proxy"
    wait_drained(stack, stack.redis(), "hint-")


def test_wrong_and_forged_notes_still_deliver(cluster, stack, fleet):
    c = cluster
    r = stack.redis()
    (victim,) = users("hint-forged", 1)
    (tab,) = open_heard(c, fleet, [victim], c.b.port)
    before = notes(c)
    r.publish(CHANNEL, "u %s %s" % (victim, c.a.node_id))     # the wrong node
    wait_until(lambda: notes(c) > before, 10, what="the forged note to be heard")
    crossed0 = c.crossed()
    wrong = Orders("hint-wrong")
    deliver(c, stack, wrong, [victim] * 3, [tab], per_tab=True)
    assert c.crossed() - crossed0 == 3, "A forwards what a wrong hint sent it"

    junk = ["", "u", "u  x", "x %s %s" % (victim, c.b.node_id), "u %s" % ("v" * 500),
            "u %s 10.255.255.1:1" % victim, "u %s not-an-address" % victim,
            "u %s 127.0.0.1:99999" % victim, "u %s\x00 %s" % (victim, c.b.node_id),
            "h", "\xff\xfe", "u " + victim + " " + "9" * 300]
    # more gateways than the consumer keeps: it forgets its hints, nothing else
    junk += ["u %s 10.255.%d.%d:1" % (victim, i // 256, i % 256) for i in range(300)]
    for text in junk:
        r.publish(CHANNEL, text)
    after = Orders("hint-junk")
    deliver(c, stack, after, [victim] * 3, [tab], per_tab=True)
    assert c.consumer.running()
    wait_drained(stack, r, "hint-")

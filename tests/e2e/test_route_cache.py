"""The route cache (gateway/route_cache.c, route_feed.c) is exactly as good
as a lookup in MySQL: gateways A and B, the proxy, the stack's MariaDB and
Redis (the route feed), real browsers.

- every open tab of a uuid gets the order, on every node, also when the
  second tab opens after the first's route was cached (on A: the uuid
  index; on B: the feed's announcement drops A's entry);
- a closed tab never swallows an order: it reaches the uuid's other tab,
  or it is stored;
- while the feed is cut (Redis stopped), the cache is not trusted: orders
  are looked up in MySQL and nothing is misrouted;
- orders whose routes are cached need no lookup (/stats hits), and a
  uuid's first order at the node it registered on finds its routes
  cached already; so do chat messages between tabs of one node.

Every wait is bounded."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import wait_until  # noqa: E402
from gateway_util import home_worker  # noqa: E402
from test_proxy import (Cluster, ack, gateway_stats, mysql_env, offline_ids, online,  # noqa: E402,F401
                        order, quiet, recv_json, run, send_json, uid)


@pytest.fixture
def cached_cluster(bin_dir, mysql_env, tmp_path):
    c = Cluster(bin_dir, mysql_env, tmp_path)
    try:
        for g in (c.a, c.b):
            wait_until(lambda: route_cache(g)["trusted"], 10, what="the route feed to work")
        yield c
    finally:
        c.stop()


def route_cache(gateway):
    return gateway_stats(gateway)["route_cache"]


async def got(ws, msg_id):
    ev = await recv_json(ws)
    assert ev["event"] == "WorksheetMsg" and ev["id"] == msg_id, ev
    await ack(ws, msg_id)


async def send(gateway, msg_id, uuid):
    r = await order(gateway, msg_id, uuid, {"type": "t", "infos": msg_id})
    assert r["code"] == 0, r
    return r


def announced(gateway, before):
    wait_until(lambda: route_cache(gateway)["invalidations"] > before, 10,
               what="the announcement to reach %d" % gateway.internal_port)


def test_every_open_tab_gets_it_with_a_warm_cache(cached_cluster):
    c = cached_cluster
    a, b = c.a, c.b
    u = uid("tabs")

    async def go():
        first, _ = await online(b, u)
        await send(a, "w1-" + u, u)              # A looks B's tab up, and caches it
        await got(first, "w1-" + u)
        hits = route_cache(a)["hits"]
        for i in range(4):   # each of A's workers learns the app token, then routes from the cache
            await send(a, "w2-%d-%s" % (i, u), u)
            await got(first, "w2-%d-%s" % (i, u))
        assert route_cache(a)["hits"] > hits

        second_a, _ = await online(a, u)         # a second tab, on A
        await send(a, "w3-" + u, u)
        await got(first, "w3-" + u)
        await got(second_a, "w3-" + u)

        before = route_cache(a)["invalidations"]
        third_b, _ = await online(b, u)          # a third tab, on B
        announced(a, before)
        await send(a, "w4-" + u, u)
        for ws in (first, second_a, third_b):
            await got(ws, "w4-" + u)
        for ws in (first, second_a, third_b):
            await quiet(ws, 0.3)
            await ws.close()
    run(go())


def test_a_closed_tab_never_swallows_an_order(cached_cluster, stack):
    c = cached_cluster
    a, b = c.a, c.b
    u, alone = uid("close"), uid("alone")

    async def go():
        one, _ = await online(b, u)
        two, _ = await online(b, u)
        await send(a, "c1-" + u, u)
        await got(one, "c1-" + u)
        await got(two, "c1-" + u)
        before = route_cache(a)["invalidations"]
        await one.close()
        announced(a, before)
        await send(a, "c2-" + u, u)
        await got(two, "c2-" + u)
        await two.close()

        last, _ = await online(b, alone)
        await send(a, "c3-" + alone, alone)
        await got(last, "c3-" + alone)
        before = route_cache(a)["invalidations"]
        await last.close()                      # its only tab: the next is stored
        announced(a, before)
        r = await send(a, "c4-" + alone, alone)
        assert r["stored"] == 1, r
    run(go())
    assert offline_ids(stack, alone) == ["c4-" + alone]


def test_a_registration_fills_its_own_nodes_cache(cached_cluster):
    """The consumer sends a uuid's orders to the node it registered on, so
    that node looks its routes up with the registration: the first order
    finds them cached.  Its own note on the feed does not drop them."""
    c = cached_cluster
    b = c.b
    warm, u = uid("token"), uid("filled")

    async def go():
        warm_tabs, workers = [], set()
        for i in range(16):   # each of B's workers learns the app token: an order for a tab of each
            w, data = await online(b, warm + str(i))
            await send(b, "t%d-%s" % (i, warm), warm + str(i))
            await got(w, "t%d-%s" % (i, warm))
            warm_tabs.append(w)
            workers.add(home_worker(data["client_id"]))
            if len(workers) == 2:
                break
        assert len(workers) == 2, "16 tabs, all on one worker"
        before_tab = route_cache(b)["invalidations"]
        tab, _ = await online(b, u)
        other = uid("other")
        elsewhere, _ = await online(c.a, other)     # a note from A still counts on B
        announced(b, before_tab)
        before = route_cache(b)
        for i in range(4):
            await send(b, "f%d-%s" % (i, u), u)
            await got(tab, "f%d-%s" % (i, u))
        after = route_cache(b)
        assert after["misses"] == before["misses"], (before, after)
        assert after["hits"] >= before["hits"] + 4, (before, after)
        for ws in warm_tabs + [tab, elsewhere]:
            await ws.close()
    run(go())


def test_a_chat_within_a_node_is_answered_from_the_cache(cached_cluster):
    """A chat message to a uuid whose tabs are all on the sender's node:
    the first is looked up and fills the cache; the rest are pushed and
    answered at once ("delivered"), each to the tab and to its sender."""
    b = cached_cluster.b
    x, y = uid("chatx"), uid("chaty")

    async def go():
        ws_x, _ = await online(b, x)
        ws_y, _ = await online(b, y)
        for i in range(4):
            if i == 1:
                before = route_cache(b)
            text = "hello %d" % i
            await send_json(ws_x, {"event": "NEW_MSG", "data": {"to": y, "msg": text}})
            ev = await recv_json(ws_y)
            assert ev["event"] == "NEW_MSG" and (ev["data"]["from"], ev["data"]["msg"]) == \
                (x, text), ev
            status = await recv_json(ws_x)
            assert status["event"] == "NEW_MSG_STATUS", status
            assert (status["data"]["status"], status["data"]["id"], status["data"]["to"],
                    status["data"]["code"]) == ("delivered", ev["data"]["id"], y, 0), status
            await ack(ws_y, ev["data"]["id"])
        after = route_cache(b)
        assert after["misses"] == before["misses"], (before, after)
        assert after["hits"] >= before["hits"] + 3, (before, after)
        await quiet(ws_y, 0.3)
        await ws_x.close()
        await ws_y.close()
    run(go())


def test_feed_cut_means_mysql(cached_cluster):
    """Redis (the feed) stopped: the cache is not trusted within 1.5 s, and a
    tab that opens meanwhile (its announcement lost) still gets orders."""
    c = cached_cluster
    a, b = c.a, c.b
    stack = c.stack
    u = uid("cut")

    async def go():
        first, _ = await online(b, u)
        await send(a, "f1-" + u, u)
        await got(first, "f1-" + u)
        stack.stop_redis()
        try:
            wait_until(lambda: not route_cache(a)["trusted"], 5, what="A to stop trusting its cache")
            second, _ = await online(b, u)       # announced to nobody
            await send(a, "f2-" + u, u)
            await got(first, "f2-" + u)
            await got(second, "f2-" + u)
        finally:
            stack.start_redis()
        wait_until(lambda: route_cache(a)["trusted"], 15, what="A to trust its cache again")
        await send(a, "f3-" + u, u)              # flushed when the feed came back: looked up
        await got(first, "f3-" + u)
        await got(second, "f3-" + u)
        for ws in (first, second):
            await ws.close()
    run(go())


def test_an_unreadable_note_empties_the_cache(cached_cluster):
    """A note a node cannot read (a newer node's kind, or garbage on the
    channel) may have named any uuid: the node drops every entry, and the
    next order is looked up in MySQL again and still reaches its tab."""
    c = cached_cluster
    a, b = c.a, c.b
    u = uid("unread")

    async def go():
        before = route_cache(a)
        tab, _ = await online(b, u)
        announced(a, before["invalidations"])
        for i in range(4):   # looked up and cached; each of A's workers learns the app token
            await send(a, "w1-%d-%s" % (i, u), u)
            await got(tab, "w1-%d-%s" % (i, u))
        warm = route_cache(a)
        await send(a, "w2-" + u, u)              # from the cache
        await got(tab, "w2-" + u)
        mid = route_cache(a)
        assert mid["hits"] > warm["hits"] and mid["misses"] == warm["misses"], (warm, mid)
        c.stack.redis().publish("pushgate:routes", "v " + u + " a note of another kind")
        wait_until(lambda: route_cache(a)["flushes"] > mid["flushes"], 10,
                   what="A to drop its route cache")
        await send(a, "w3-" + u, u)
        await got(tab, "w3-" + u)
        after = route_cache(a)
        assert after["misses"] > mid["misses"] and after["trusted"], (mid, after)
        await tab.close()
    run(go())

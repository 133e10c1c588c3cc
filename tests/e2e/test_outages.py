"""An outage of MySQL is no reason to give up on a work order (the consumer
and a gateway, ASan + UBSan build, real MariaDB and Redis, real browsers):

- a gateway that cannot reach MySQL answers 10503, and the consumer retries
  such an entry with backoff for as long as it takes, without counting the
  attempt toward max_deliveries: nothing is dead-lettered;
- a browser that got an order at once (its session is on the node that took
  the order) does not get it again at each retry;
- the gateway logs the outage once when it begins and once when it ends,
  not once per failed call;
- a MySQL that hangs instead of refusing holds up no order whose route the
  gateway knows: the consumer's own statements (its list of gateways, its
  status row) wait on a thread of their own, not in the loop that hands
  orders on.

The shared MariaDB of the `stack` fixture is stopped and started again
here; every wait is bounded."""
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gateway_util import offline_rows  # noqa: E402
from test_consumer import (Browser, dead_letters, fakes, pending, procs, publish,  # noqa: E402,F401
                           start_consumer, start_gateway, stop_gateway, stream, uid, until,
                           wait_sync, work_order)

UNAVAILABLE = {"code": 10503, "msg": "MySQL is unavailable: retry later"}


def test_unavailable_is_retried_without_counting(bin_dir, stack, tmp_path, procs, stream, fakes):
    """Five answers of 10503, then success: with max_deliveries 2 the entry
    is still handed off, after backoffs that grow."""
    x = fakes(lambda req, n: dict(UNAVAILABLE) if n <= 5 else {"code": 0})
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream, gateways=x.addr, max_deliveries=2)
    r = stack.redis()
    (entry_id,) = publish(r, stream, [work_order("someone", "later")])
    wait_sync(lambda: pending(r, stream) == 0, 30, "the XACK after the outage")
    assert x.seen(entry_id) == 6
    assert dead_letters(r, stream) == []
    c.stop()


def mysql_lines(log):
    return [line for line in log.splitlines() if "MySQL" in line]


def test_mysql_outage_dead_letters_nothing(bin_dir, stack, tmp_path, procs, stream):
    g = start_gateway(bin_dir, stack, tmp_path, procs)
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream, max_deliveries=3)
    r = stack.redis()
    online_agent, offline_agent = uid("online"), uid("offline")

    async def run():
        b = await Browser(online_agent).open(g.port)
        # the app token is known to the node: orders for b are pushed at once
        (first,) = publish(r, stream, [work_order(online_agent, "before")])
        await until(lambda: first in b.ids, 15, "the first order")
        stack.stop_mysql()
        try:
            during = publish(r, stream, [work_order(online_agent, "during %d" % i) for i in range(5)])
            stored = publish(r, stream, [work_order(offline_agent, "stored %d" % i) for i in range(5)])
            # three counted attempts would take under 2 s; the outage lasts 8
            await asyncio.sleep(8)
            assert dead_letters(r, stream) == []
        finally:
            stack.start_mysql()
        back = time.monotonic()
        await until(lambda: set(during) <= set(b.ids), 15, "the orders for the online agent")
        await until(lambda: pending(r, stream) == 0, 15, "every entry to be XACKed")
        print("\nhanded off %.1f s after MySQL was back" % (time.monotonic() - back))
        assert len(b.ids) == len(set(b.ids)), "an order reached the session twice: %s" % b.ids
        assert sorted(m for m, _, _ in offline_rows(stack, offline_agent)) == sorted(stored)
        await b.close()

    asyncio.run(run())
    assert dead_letters(r, stream) == []
    lines = mysql_lines(g.log())
    # per task worker: down, perhaps a count, back
    assert len(lines) <= 8, "\n".join(lines)
    assert any("MySQL is down" in line for line in lines)
    assert any("MySQL is back" in line for line in lines)
    c.stop()
    stop_gateway(g)


def test_hung_mysql_holds_up_no_order(bin_dir, stack, tmp_path, procs, stream):
    """MariaDB frozen (SIGSTOP) for 5 s while an order is published every
    100 ms to an agent online on the gateway: each reaches the browser
    within 1 s of its publishing.  The consumer reads gateway_nodes every
    200 ms and writes its status row every 2 s, each with 2 s timeouts: in
    its event loop, every such statement held every order up for 2 s."""
    g = start_gateway(bin_dir, stack, tmp_path, procs)
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream, nodes_refresh_ms=200)
    r = stack.redis()
    agent = uid("agent")

    async def run():
        b = await Browser(agent).open(g.port)
        (first,) = publish(r, stream, [work_order(agent, "before")])
        await until(lambda: first in b.arrived, 15, "the first order")
        published = {}
        stack.freeze_mysql()
        try:
            for i in range(50):
                (entry_id,) = publish(r, stream, [work_order(agent, "frozen %d" % i)])
                published[entry_id] = time.monotonic()
                await asyncio.sleep(0.1)
            await until(lambda: set(published) <= set(b.arrived), 15, "the orders while frozen")
        finally:
            stack.freeze_mysql(False)
        late = {i: round(b.arrived[i] - t, 3) for i, t in published.items()
                if b.arrived[i] - t >= 1.0}
        worst = max(b.arrived[i] - t for i, t in published.items())
        print("\nslowest order while MySQL was frozen: %.3f s" % worst)
        assert not late, "orders held up while MySQL hung: %s" % late
        await until(lambda: pending(r, stream) == 0, 15, "every entry to be XACKed")
        await b.close()

    asyncio.run(run())
    assert dead_letters(r, stream) == []
    c.stop()
    stop_gateway(g)

"""The fault harness: what one failed part of the system costs, counted by
work order id (see fault_harness.py for how a run goes and what is counted).

Each run: gateways A and B, pushgate-proxy, pushgate-consumer, MariaDB and
Redis; 200 browsers (100 on A, 100 on B) ACKing every order; 10,000 work
orders XADDed at 1,000/s; one fault 3 s into publishing.  It asserts:

- nothing lost: every published order reached its browser, if need be
  after a reconnect;
- no good order dead-lettered;
- no session got the same id twice from one node;
- every order arrived within 10 s of the end of the fault, without the
  harness having to reconnect its browser.

Faults (the node that fails is A): kill -9 of a worker (A's worker 0), of
a task worker (A's task worker 1, which stores and registers), of the
consumer (a new one is started at once; consumers here reclaim a dead
one's entries after 2 s), of the proxy (every process; started again
after 2 s), of the proxy's worker 0 alone (with the gateways' links it served:
the proxy's 2 workers hold them, workers_accept = auto); kill -9 of the
whole gateway A (master, manager, workers, task workers), its sockets then destroyed with ss -K, started again after 3 s
on the same ports; parts that hang instead of dying, stopped (SIGSTOP) and
then let go on (SIGCONT), their sockets open and answering nothing: every
process of gateway A for 8 s and for 20 s (past node_dead_after, 10 s
here), A's worker 0 alone for 8 s, the proxy's for 8 s, the consumer for 8 s (a second consumer,
started just before, takes over its entries), Redis and MariaDB for 5 s,
and MariaDB for 40 s;
MariaDB stopped for 5 s and for 60 s; Redis with an
append-only file (everysec) killed and restarted ("redis-aof-kill", the
fixture's restart_redis()), and stopped with SIGTERM and restarted
("redis-aof-term").  Each with two browser behaviours: "ack-now", and
"ack-300ms-stall" (ACK 300 ms after reading; two browsers read nothing for
2 s around the fault).

The short variant (`-m short`): 2,000 orders at 500/s, ack-now, kill -9 of
a worker and of the whole gateway.

    make test-faults                              # everything
    make test-faults FAULTS="-m short"            # the short variant
    make test-faults FAULTS="-k 'gateway and stall'"

Each run's table is printed as it ends (with -s, as make test-faults runs
it) and again, with a summary of all runs, at the end of the session.
Every run's result.json (and, for a run that failed, its daemons' logs and
sanitizer files) is kept in build/faults/<date>-<run>/ (FAULTS_OUT to choose
another folder).

By hand, against the ASan build:

    PG_BIN=build/test/bin /usr/bin/python3 -m pytest -q -s tests/faults -m short"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fault_harness import BEHAVIOURS, FAULTS, Run, log, problems, run_table  # noqa: E402


def _run(stack, bin_dir, tmp_path, monkeypatch, fault, behaviour, **kw):
    if fault.startswith("redis") and not (getattr(stack, "redis_aof", False)
                                          and hasattr(stack, "restart_redis")):
        pytest.skip("tests/fixture.py has no Stack(redis_aof=True) / restart_redis() yet")
    for k, v in stack.env().items():
        monkeypatch.setenv(k, v)
    res = Run(stack, bin_dir, tmp_path, fault, behaviour, **kw).execute()
    log("\n" + run_table(res))
    verdict = problems(res)
    assert not verdict, "%s/%s: %s (table above and in the summary; details in %s)" % (
        fault, behaviour, "; ".join(verdict), res.get("json"))


@pytest.mark.full
@pytest.mark.parametrize("behaviour", BEHAVIOURS)
@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault(fault, behaviour, stack, bin_dir, tmp_path, monkeypatch):
    _run(stack, bin_dir, tmp_path, monkeypatch, fault, behaviour)


@pytest.mark.short
@pytest.mark.parametrize("fault", ["worker", "gateway"])
def test_fault_short(fault, stack, bin_dir, tmp_path, monkeypatch):
    _run(stack, bin_dir, tmp_path, monkeypatch, fault, "ack-now", orders=2000, rate=500,
         variant="short", limits=dict(hard=12, forced=8, drain=5))

"""Fixtures of the fault harness (tests/faults/, `make test-faults`).

`stack`   one throw-away MariaDB + Redis for the session (tests/fixture.py),
          Redis with an append-only file (redis_aof=True) so that the Redis
          restarts keep the stream; every run empties it and the tables first.
`bin_dir` the folder with the built programs, from PG_BIN (the ASan build,
          build/test/bin, as `make e2e` sets it).

Markers: `short` (the quick variant, meant for `make test` later) and
`full` (every fault with both browser behaviours): `-m short`, `-m full`.
At the end of the session every run's table and a summary are printed."""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
for d in (TESTS, os.path.join(TESTS, "e2e"), HERE):
    if d not in sys.path:
        sys.path.insert(0, d)

try:
    from fixture import Stack  # noqa: E402
except ImportError as e:  # pragma: no cover - environment problem
    raise ImportError(
        "%s: the fault harness needs Debian's python3-pymysql and python3-redis; "
        "run it with /usr/bin/python3 after scripts/install-deps" % e) from e

import fault_harness  # noqa: E402
from engine_util import built_programs_dir  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "short: the quick fault runs (2,000 orders, one "
                                       "behaviour, worker and whole-gateway kill)")
    config.addinivalue_line("markers", "full: every fault with both browser behaviours")


@pytest.fixture(scope="session")
def stack():
    s = Stack(redis_aof=True)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def bin_dir():
    return built_programs_dir("make test-faults")


def pytest_terminal_summary(terminalreporter):
    results = fault_harness.RESULTS
    if not results:
        return
    tr = terminalreporter
    tr.section("fault runs")
    for r in results:
        tr.write_line(fault_harness.run_table(r))
        tr.write_line("")
    tr.section("fault summary")
    tr.write_line(fault_harness.summary_table(results))

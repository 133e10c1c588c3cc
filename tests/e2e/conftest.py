"""Shared pytest fixtures for the end-to-end tests.

`stack`   one throw-away MariaDB + Redis for the whole session (tests/fixture.py),
          schema from sql/*.sql loaded; stopped and removed at the end.
`bin_dir` the folder with the built programs, from the PG_BIN environment
          variable (`make test` / `make e2e` set it).
"""

import os
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

try:
    from fixture import Stack  # noqa: E402
except ImportError as e:  # pragma: no cover - environment problem
    raise ImportError(
        "%s: the end-to-end tests need Debian's python3-pymysql and python3-redis; "
        "run them with /usr/bin/python3 after scripts/install-deps" % e) from e

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import built_programs_dir  # noqa: E402


@pytest.fixture(scope="session")
def stack():
    s = Stack()
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def bin_dir():
    return built_programs_dir("make test")


@pytest.fixture
def fleet():
    """Browser tabs in an asyncio loop of their own (stack_util.Fleet),
    closed after the test."""
    from stack_util import Fleet
    f = Fleet()
    try:
        yield f
    finally:
        f.stop()

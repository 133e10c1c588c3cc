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
    d = os.environ.get("PG_BIN")
    if not d:
        pytest.fail("PG_BIN is not set: it must name the folder with the built "
                    "programs (make test sets it, e.g. PG_BIN=build/test/bin)",
                    pytrace=False)
    d = os.path.abspath(d)
    if not os.path.isdir(d):
        pytest.fail("PG_BIN=%s is not a folder: build first (make BUILD=test all)" % d,
                    pytrace=False)
    return d

"""common/db.c against the throw-away MariaDB: the cmocka program
tests/unit/test_db.c (ASan/UBSan build) with the stack's PUSHGATE_MYSQL_*,
once normally and once while MariaDB is stopped and started again between two
queries; and, when a release build and valgrind are there, under valgrind."""
import os
import re
import shutil
import subprocess
import time

import pytest

from engine_util import VALGRIND

RELEASE_BIN = os.environ.get("PG_RELEASE_BIN", "")
NORMAL_TESTS = 13


def db_test_binary(bin_dir):
    path = os.path.normpath(os.path.join(bin_dir, "..", "tests", "test_db"))
    if not os.access(path, os.X_OK):
        pytest.fail("%s is missing: build first (make BUILD=test all)" % path, pytrace=False)
    return path


def run_env(stack, **extra):
    env = dict(os.environ, **stack.env())
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    env.pop("PG_DB_TEST_RESTART_DIR", None)
    env.update(extra)
    return env


def check_passed(proc_rc, out, count):
    assert proc_rc == 0, "test_db exited with %s:\n%s" % (proc_rc, out)
    m = re.search(r"\[  PASSED  \] (\d+) test\(s\)\.", out)
    assert m, "no PASSED line:\n" + out
    assert int(m.group(1)) == count, out
    assert "SKIPPED" not in out, out
    assert "FAILED" not in out, out
    assert "ERROR: AddressSanitizer" not in out and "LeakSanitizer" not in out, out
    assert "runtime error" not in out, out


def test_db_unit_against_mariadb(stack, bin_dir):
    exe = db_test_binary(bin_dir)
    r = subprocess.run([exe], env=run_env(stack), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=300)
    out = r.stdout.decode("utf-8", "replace")
    check_passed(r.returncode, out, NORMAL_TESTS)
    # Its scratch table is gone.
    conn = stack.mysql()
    try:
        with conn.cursor() as c:
            c.execute("SHOW TABLES LIKE 'db\\_test\\_%'")
            assert c.fetchall() == ()
    finally:
        conn.close()


def wait_for(path, proc, timeout):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_db_survives_mariadb_restart(stack, bin_dir, tmp_path):
    exe = db_test_binary(bin_dir)
    d = str(tmp_path)
    log = open(os.path.join(d, "out.log"), "wb")
    proc = subprocess.Popen([exe], env=run_env(stack, PG_DB_TEST_RESTART_DIR=d),
                            stdout=log, stderr=subprocess.STDOUT)
    restarted = False
    try:
        assert wait_for(os.path.join(d, "ready"), proc, 60), "test_db never got ready"
        stack.stop_mysql()
        try:
            open(os.path.join(d, "stopped"), "w").close()
            assert wait_for(os.path.join(d, "checked"), proc, 120), \
                "test_db did not check the stopped server"
        finally:
            stack.start_mysql()           # same port, same data
            restarted = True
        open(os.path.join(d, "started"), "w").close()
        rc = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
        if not restarted:
            stack.start_mysql()
    with open(os.path.join(d, "out.log"), "rb") as f:
        out = f.read().decode("utf-8", "replace")
    check_passed(rc, out, 1)
    assert "restart: query while down: errno" in out, out
    assert "restart: query after restart ok, reconnects 1" in out, out
    assert "restart: idle handle query after restart ok, reconnects 1" in out, out
    print(out)


@pytest.mark.skipif(not RELEASE_BIN or not shutil.which("valgrind"),
                    reason="needs PG_RELEASE_BIN and valgrind")
def test_db_unit_under_valgrind(stack, tmp_path):
    exe = os.path.normpath(os.path.join(RELEASE_BIN, "..", "tests", "test_db"))
    if not os.access(exe, os.X_OK):
        pytest.skip("no release build of test_db (make BUILD=release all)")
    vlog = str(tmp_path / "vg.log")
    r = subprocess.run(
        VALGRIND + ["--quiet", "--error-exitcode=99", "--log-file=" + vlog, exe],
        env=run_env(stack), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    out = r.stdout.decode("utf-8", "replace")
    with open(vlog, encoding="utf-8", errors="replace") as f:
        vg = f.read()
    assert r.returncode == 0, "rc %s\n%s\nvalgrind:\n%s" % (r.returncode, out, vg)
    check_passed(r.returncode, out, NORMAL_TESTS)

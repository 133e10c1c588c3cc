"""End-to-end tests of pushgate-ctl (ASan + UBSan build) against the
throw-away MariaDB + Redis of the `stack` fixture and real gateways.

publish is checked against what lands in Redis (the exact seed JSON), token
against a gateway that must accept it, nodes and online against the rows a
running gateway wrote, and start / status / reload / stop against a gateway
that pushgate-ctl itself starts as a daemon with a pid file in a temporary
folder.  Every run of pushgate-ctl must be free of sanitizer reports.  Every
wait is bounded; only processes these tests started are stopped.
Helpers: gateway_util.py, engine_util.py."""
import base64
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid as uuidlib

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import SANITIZER_MARKS, alive, children, proc_stat  # noqa: E402
from gateway_util import (ADMIN_SECRET, HOST, SECRET, free_port, http_get, recv_json, run,  # noqa: E402
                          start_gateway, uid, wait_until, ws_connect)

APP_TOKEN = uid("ctl-app")
CTL_TIMEOUT = 60


# ---- running pushgate-ctl ----

def ctl_env(stack, **extra):
    env = dict(os.environ, **stack.env())
    env.pop("PUSHGATE_CHAT_TOKEN", None)
    env.update(extra)
    return env


def ctl(bin_dir, stack, *args, env=None, timeout=CTL_TIMEOUT):
    """Runs pushgate-ctl; CompletedProcess (text).  Fails on a sanitizer report."""
    p = subprocess.run([os.path.join(bin_dir, "pushgate-ctl")] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout,
                       env=env or ctl_env(stack), stdin=subprocess.DEVNULL)
    marks = [m for m in SANITIZER_MARKS if m in p.stderr]
    assert not marks, "sanitizer report from pushgate-ctl %s:\n%s" % (args, p.stderr[-4000:])
    return p


def ok(p):
    assert p.returncode == 0, "exit %d\nstdout: %s\nstderr: %s" % (p.returncode, p.stdout,
                                                                  p.stderr)
    return p


def seed(uuids, type_, infos, token=APP_TOKEN):
    return {"url": "/worksheet/send-message", "chat_token": token,
            "data": [{"uuid": u, "data": {"type": type_, "infos": infos}} for u in uuids]}


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@pytest.fixture
def stream():
    return "test:ctl:%s" % uuidlib.uuid4().hex[:10]


def entries(stack, stream):
    return stack.redis().xrange(stream)


# ---- publish ----

def test_publish_one_entry_is_the_seed_json(bin_dir, stack, stream):
    u = uid("agent")
    infos = 'Order 7 "urgent" - caf\u00e9 \u2713'
    p = ok(ctl(bin_dir, stack, "publish", "--set", "stream=" + stream, "--uuid", u,
               "--type", "repair", "--infos", infos, "--chat-token", APP_TOKEN))
    (eid, fields), = entries(stack, stream)
    assert p.stdout.strip() == eid
    assert list(fields) == ["msg"]
    assert fields["msg"] == compact(seed([u], "repair", infos))


def test_publish_several_uuids_one_data_entry_each(bin_dir, stack, stream):
    a, b = uid("a"), uid("b")
    ok(ctl(bin_dir, stack, "publish", "--set", "stream=" + stream, "--uuid", a, "--uuid", b,
           "--type", "t", "--infos", "two", "--chat-token", APP_TOKEN))
    (_, fields), = entries(stack, stream)
    msg = json.loads(fields["msg"])
    assert msg == seed([a, b], "t", "two")
    assert [d["uuid"] for d in msg["data"]] == [a, b]


def test_publish_raw_valid_and_invalid(bin_dir, stack, stream):
    raw = '{"url":"/worksheet/send-message", "chat_token":"x","data":[] }'
    p = ok(ctl(bin_dir, stack, "publish", "--set", "stream=" + stream, "--raw", raw))
    (eid, fields), = entries(stack, stream)
    assert p.stdout.strip() == eid and fields == {"msg": raw}   # verbatim
    for bad in ('{"url":', "not json", "[1,2]", '"text"'):
        p = ctl(bin_dir, stack, "publish", "--set", "stream=" + stream, "--raw", bad)
        assert p.returncode == 1, (bad, p.stdout, p.stderr)
        assert "--raw" in p.stderr and p.stdout == ""
    assert len(entries(stack, stream)) == 1
    p = ctl(bin_dir, stack, "publish", "--set", "stream=" + stream, "--raw", raw, "--uuid", "u")
    assert p.returncode == 2 and "cannot be combined" in p.stderr


def test_publish_count_pipelined_with_progress_and_summary(bin_dir, stack, stream):
    r = stack.redis()
    r.xadd(stream, {"msg": "{}"})
    before = r.xlen(stream)
    p = ok(ctl(bin_dir, stack, "publish", "--set", "stream=" + stream, "--uuid", uid(),
               "--type", "load", "--infos", "x", "--chat-token", APP_TOKEN, "--count", 2500))
    assert r.xlen(stream) == before + 2500
    assert re.fullmatch(r"published 2500 entries in \d+\.\d\d s \(\d+/s\)\n", p.stdout), p.stdout
    # not a terminal: plain progress lines, the last one complete
    lines = p.stderr.splitlines()
    assert lines and lines[-1] == "published 2500/2500 (100%)", p.stderr
    assert "\r" not in p.stderr
    # a small count prints every id
    p = ok(ctl(bin_dir, stack, "publish", "--set", "stream=" + stream, "--raw", "{}",
               "--count", 3))
    ids = p.stdout.splitlines()[:3]
    assert [e for e, _ in r.xrange(stream, "-", "+")][-3:] == ids


def test_publish_settings_from_file_env_and_set(bin_dir, stack, stream, tmp_path):
    """-c takes a daemon's INI file: keys ctl does not use are skipped, its own
    are checked; PUSHGATE_<KEY> and --set override in that order."""
    ini = tmp_path / "gateway.ini"
    ini.write_text("[server]\nworker_num = 4\n  reactor_num = 2\n[gateway]\n"
                   'stream = "%s"\nchat_token = from-file\nredis_port = 1\n' % stream)
    env = ctl_env(stack)       # PUSHGATE_REDIS_PORT fixes the port from the file
    u = uid()
    ok(ctl(bin_dir, stack, "publish", "-c", ini, "--uuid", u, "--type", "t", "--infos", "i",
           env=env))
    env["PUSHGATE_CHAT_TOKEN"] = "from-env"
    ok(ctl(bin_dir, stack, "publish", "-c", ini, "--uuid", u, "--type", "t", "--infos", "i",
           env=env))
    ok(ctl(bin_dir, stack, "publish", "-c", ini, "--set", "chat_token=from-set", "--uuid", u,
           "--type", "t", "--infos", "i", env=env))
    tokens = [json.loads(f["msg"])["chat_token"] for _, f in entries(stack, stream)]
    assert tokens == ["from-file", "from-env", "from-set"]
    # ctl's own keys are checked strictly, with the file and line
    ini.write_text("worker_num = 4\nredis_port = many\n")
    p = ctl(bin_dir, stack, "publish", "-c", ini, "--raw", "{}")
    assert p.returncode == 2 and "%s:2: redis_port" % ini in p.stderr, p.stderr
    p = ctl(bin_dir, stack, "publish", "--set", "no_such_key=1", "--raw", "{}")
    assert p.returncode == 2 and "no_such_key" in p.stderr


def test_publish_redis_down_fails_clearly(bin_dir, stack):
    p = ctl(bin_dir, stack, "publish", "--set", "redis_port=%d" % free_port(), "--raw", "{}")
    assert p.returncode == 1 and "redis 127.0.0.1:" in p.stderr, p.stderr


def test_publish_wait_replicas_reports_what_no_replica_has(bin_dir, stack, stream):
    """The session's Redis has no replica: WAIT 1 answers 0, so publish says
    so and exits 1; the entries are in the stream all the same."""
    p = ctl(bin_dir, stack, "publish", "--set", "stream=" + stream, "--raw", "{}",
            "--count", "3", "--wait-replicas", "1", "--wait-timeout", "50")
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "WAIT 1 50: only 0 of 1 replicas acknowledged the last 3 entries" in p.stderr
    assert "published 3 of 3 entries, the last 3 not confirmed" in p.stderr
    assert len(entries(stack, stream)) == 3
    for args, says in ((["--wait-replicas", "0"], "--wait-replicas"),
                       (["--wait-timeout", "10"], "goes with --wait-replicas"),
                       (["--wait-replicas", "1", "--wait-timeout", "0"], "--wait-timeout")):
        p = ctl(bin_dir, stack, "publish", "--set", "stream=" + stream, "--raw", "{}", *args)
        assert p.returncode == 2 and says in p.stderr, (args, p.stderr)
    assert len(entries(stack, stream)) == 3


def test_publish_sentinel_settings_checked(bin_dir, stack):
    for value, says in (("127.0.0.1", "is not host:port"), ("a:1,,b:2", "empty item"),
                        ("a:1,a:1", "listed twice"), ("a:99999", "1..65535")):
        p = ctl(bin_dir, stack, "publish", "--set", "redis_sentinels=" + value, "--raw", "{}")
        assert p.returncode == 2 and "redis_sentinels: " in p.stderr and says in p.stderr, (
            value, p.stderr)
    p = ctl(bin_dir, stack, "publish", "--set", "redis_sentinels=127.0.0.1:1", "--set",
            "redis_master_name=", "--raw", "{}")
    assert p.returncode == 2 and "redis_master_name" in p.stderr, p.stderr
    # a sentinel nobody runs: tried for 10 s, then each sentinel's reason
    p = ctl(bin_dir, stack, "publish", "--set", "redis_sentinels=127.0.0.1:%d" % free_port(),
            "--raw", "{}")
    assert p.returncode == 1 and "no primary of pushgate found" in p.stderr, p.stderr
    assert "Connection refused" in p.stderr, p.stderr


# ---- token, nodes, online (one gateway) ----

@pytest.fixture(scope="module")
def node(bin_dir, stack, tmp_path_factory):
    stack.add_app(APP_TOKEN, name="ctl")
    g = start_gateway(bin_dir, stack, tmp_path_factory.mktemp("gateway"))
    try:
        yield g
        g.stop()
        g.check_clean()
    finally:
        g.kill_all()


def jwt_payload(token):
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def table_rows(text):
    """The rows under a table's dashed line, split at runs of 2+ spaces."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("---")) + 1
    return [re.split(r"\s{2,}", line.strip()) for line in lines[start:] if line.strip()]


def test_token_nodes_online(bin_dir, stack, node):
    u = uid("agent")
    now = int(time.time())
    p = ok(ctl(bin_dir, stack, "token", u, "--ttl", 600, "--set", "jwt_secret=" + SECRET))
    token = p.stdout.strip()
    payload = jwt_payload(token)
    assert payload["sub"] == u and now + 599 <= payload["exp"] <= int(time.time()) + 601
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["alg"] == "HS256"

    async def connected():
        ws = await ws_connect(node.port, token)
        try:
            ev = await recv_json(ws)
            assert ev["event"] == "ONLINE" and ev["data"]["uuid"] == u, ev
            client_id = ev["data"]["client_id"]
            rows = table_rows(ok(ctl(bin_dir, stack, "online", u)).stdout)
            assert [r[0] for r in rows] == [client_id]
            assert rows[0][1] == "%s:%d" % (HOST, node.internal_port)
            nodes = ok(ctl(bin_dir, stack, "nodes")).stdout
            assert "HEARTBEAT AGE" in nodes
            mine = [r for r in table_rows(nodes) if r[0] == node.node_id]
            assert len(mine) == 1, nodes
            _, ip, ws_port, internal_port, state, age, count = mine[0]
            assert (ip, int(ws_port), int(internal_port), state) == (
                HOST, node.port, node.internal_port, "up")
            assert 0 <= float(age) < 10 and int(count) >= 1
        finally:
            await ws.close()
    run(connected())
    wait_until(lambda: "is not online" in ctl(bin_dir, stack, "online", u).stdout, 10,
               what="the row to go")


def test_token_errors(bin_dir, stack):
    p = ctl(bin_dir, stack, "token", uid())
    assert p.returncode == 1 and "jwt_secret is not set" in p.stderr
    p = ctl(bin_dir, stack, "token", "bad uuid!", "--set", "jwt_secret=" + SECRET)
    assert p.returncode == 2 and "not a valid uuid" in p.stderr
    p = ctl(bin_dir, stack, "token", "u", "--ttl", "0", "--set", "jwt_secret=" + SECRET)
    assert p.returncode == 2 and "--ttl" in p.stderr


def test_nodes_mysql_down_fails_clearly(bin_dir, stack):
    p = ctl(bin_dir, stack, "nodes", "--set", "mysql_port=%d" % free_port())
    assert p.returncode == 1 and p.stderr.startswith("pushgate-ctl: mysql"), p.stderr


def test_mysql_hosts_pass_over_a_dead_server_and_refuse_a_bad_list(bin_dir, stack):
    alive = "%s:%d" % (stack.mysql_host, stack.mysql_port)
    p = ctl(bin_dir, stack, "nodes", "--set",
            "mysql_hosts=127.0.0.1:%d,%s" % (free_port(), alive))
    assert p.returncode == 0, p.stderr
    p = ctl(bin_dir, stack, "nodes", "--set", "mysql_hosts=%s,,127.0.0.1:1" % alive)
    assert p.returncode == 2 and "mysql_hosts entry 2" in p.stderr, p.stderr   # a bad setting
    p = ctl(bin_dir, stack, "nodes", "--set", "mysql_hosts=127.0.0.1")
    assert p.returncode == 2 and "no port" in p.stderr, p.stderr


# ---- start / status / reload / stop ----

class Daemon:
    """What a test learns of a gateway started by pushgate-ctl (not our
    child): its processes with their start times, to check they are gone and
    to kill them if a test fails."""

    def __init__(self, pid_file):
        self.pid_file = pid_file
        self.recorded = {}

    def master(self):
        try:
            return int(open(self.pid_file).read())
        except (FileNotFoundError, ValueError):
            return None

    def record(self):
        pending = [self.master()] if self.master() else []
        while pending:
            pid = pending.pop()
            st = proc_stat(pid)
            if st and st[0] != "Z":
                self.recorded.setdefault(pid, st[2])
                pending += children(pid)

    def left(self):
        return [p for p, t in self.recorded.items() if alive(p, t)]

    def kill_all(self):
        for pid in self.left():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def stats(port):
    status, _, body = http_get(port, "/stats")
    assert status == 200
    return json.loads(body)


def pids(st, key):
    return sorted(w["pid"] for w in st[key])


def write_config(stack, tmp_path, pid_file, port):
    text = ("; a gateway as pushgate-ctl start runs it\n[server]\nworker_num = 2\n"
            "task_worker_num = 2\nreactor_num = 1\npid_file = %s\nlog_file = %s\n"
            "reload_timeout = 10\n[gateway]\nhost = %s\nport = %d\ninternal_host = %s\n"
            "internal_port = %d\nadvertised_ip = %s\njwt_secret = %s\nadmin_secret = %s\nnode_dead_after = 10\n"
            "mysql_host = %s\nmysql_port = %d\nmysql_user = %s\nmysql_password = %s\n"
            "mysql_database = %s\n" % (
                pid_file, tmp_path / "gateway.log", HOST, port, HOST, free_port(), HOST, SECRET, ADMIN_SECRET,
                stack.mysql_host, stack.mysql_port, stack.mysql_user, stack.mysql_password,
                stack.mysql_db))
    path = tmp_path / "gateway.ini"
    path.write_text(text)
    return str(path)


def daemon_env(stack, tmp_path):
    """Sanitizer reports of the daemon (whose stderr is /dev/null) to files."""
    env = ctl_env(stack)
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        opts = env.get(var, "")
        env[var] = (opts + ":" if opts else "") + "log_path=%s/san" % tmp_path
    return env


def sanitizer_reports(tmp_path):
    text = ""
    for path in sorted(glob.glob(str(tmp_path / "san*"))):
        text += open(path, errors="replace").read()
    return [m for m in SANITIZER_MARKS if m in text], text


def test_start_status_reload_stop(bin_dir, stack, tmp_path):
    pid_file = str(tmp_path / "run" / "gateway.pid")
    os.makedirs(os.path.dirname(pid_file))
    port = free_port()
    ini = write_config(stack, tmp_path, pid_file, port)
    env = daemon_env(stack, tmp_path)
    d = Daemon(pid_file)
    try:
        t0 = time.monotonic()
        # settings ctl and the gateway share (its route feed's Redis) reach the gateway
        p = ok(ctl(bin_dir, stack, "start", "-c", ini, "--set", "redis_host=127.0.0.1",
                   "--set", "redis_port=%d" % stack.redis_port, env=env))
        master = d.master()
        assert master and p.stdout == "started, pid %d (pid file %s)\n" % (master, pid_file)
        assert "starting pushgate-gateway" in p.stderr and time.monotonic() - t0 < 30
        wait_until(lambda: len(stats(port)["workers"]) == 2 and all(
            w["pid"] > 0 for w in stats(port)["task_workers"]), 10, what="workers")
        wait_until(lambda: stats(port)["redis"]["ok"], 10, what="the route feed on the stack's Redis")
        d.record()

        p = ctl(bin_dir, stack, "start", "-c", ini, env=env)
        assert p.returncode == 1 and "already running as pid %d" % master in p.stderr

        p = ok(ctl(bin_dir, stack, "status", "-c", ini, env=env))
        assert "running, pid %d" % master in p.stdout
        for word in ("connections", "accepted", "messages pushed", "messages acked",
                     "mysql", "workers", "task workers", "REQUESTS"):
            assert word in p.stdout, (word, p.stdout)
        assert re.search(r"^mysql\s+ok", p.stdout, re.M), p.stdout
        before = stats(port)
        for w in before["workers"] + before["task_workers"]:
            assert re.search(r"^\s+\d+\s+%d\s+" % w["pid"], p.stdout, re.M), p.stdout

        p = ok(ctl(bin_dir, stack, "reload", "-c", ini, env=env))
        assert "reloaded pid %d: 4 new processes" % master in p.stdout, p.stdout
        after = stats(port)
        assert not set(pids(after, "workers")) & set(pids(before, "workers"))
        assert not set(pids(after, "task_workers")) & set(pids(before, "task_workers"))
        d.record()

        p = ok(ctl(bin_dir, stack, "reload", "--tasks", "--pid-file", pid_file, "--set",
                   "port=%d" % port, "--set", "admin_secret=" + ADMIN_SECRET, env=env))
        last = stats(port)
        assert pids(last, "workers") == pids(after, "workers")
        assert not set(pids(last, "task_workers")) & set(pids(after, "task_workers"))
        d.record()

        p = ok(ctl(bin_dir, stack, "stop", "--pid-file", pid_file, env=env))
        assert p.stdout == "stopped pid %d\n" % master
        assert re.match(r"stopping pid %d \.* stopped\n" % master, p.stderr), p.stderr
        assert not os.path.exists(pid_file)
        assert not d.left(), d.left()
        p = ctl(bin_dir, stack, "status", "-c", ini, env=env)
        assert p.returncode == 1 and "not running" in p.stderr
        marks, text = sanitizer_reports(tmp_path)
        assert not marks, text[-6000:]
    finally:
        d.record()
        d.kill_all()


def test_start_failure_is_reported(bin_dir, stack, tmp_path):
    pid_file = str(tmp_path / "gateway.pid")
    ini = write_config(stack, tmp_path, pid_file, free_port())
    d = Daemon(pid_file)
    try:
        # words after -- go to the gateway, which refuses the bad value
        p = ctl(bin_dir, stack, "start", "-c", ini, "--", "--set", "worker_num=zero")
        assert p.returncode == 1 and "failed to start" in p.stderr, p.stderr
        assert "worker_num" in p.stderr      # the gateway's own message, passed through
        assert not os.path.exists(pid_file)
        p = ctl(bin_dir, stack, "start", "-c", ini, "--bin", str(tmp_path / "nothing"))
        assert p.returncode == 1 and "nothing" in p.stderr
    finally:
        d.record()
        d.kill_all()


def test_stale_pid_file(bin_dir, stack, tmp_path):
    pid_file = tmp_path / "gateway.pid"
    gone = subprocess.Popen(["true"])
    gone.wait()
    pid_file.write_text("%d\n" % gone.pid)
    for cmd in ("status", "stop", "reload"):
        p = ctl(bin_dir, stack, cmd, "--pid-file", pid_file)
        assert p.returncode == 1, (cmd, p.stderr)
        assert "stale pid file %s: pid %d is not running" % (pid_file, gone.pid) in p.stderr
    # a live process that is not a pushgate one is never signalled
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        pid_file.write_text("%d\n" % sleeper.pid)
        for cmd in ("stop", "reload", "status"):
            p = ctl(bin_dir, stack, cmd, "--pid-file", pid_file)
            assert p.returncode == 1 and "not a pushgate process" in p.stderr, p.stderr
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
    pid_file.write_text("garbage\n")
    p = ctl(bin_dir, stack, "stop", "--pid-file", pid_file)
    assert p.returncode == 1 and "no pid in it" in p.stderr


# ---- usage ----

@pytest.mark.parametrize("args", [
    [], ["nosuch"], ["--pid-file", "x", "status"], ["publish"], ["publish", "--uuid"],
    ["publish", "--uuid", "u", "--type", "t"], ["publish", "--uuid", "", "--type", "t",
                                                 "--infos", "i", "--chat-token", "x"],
    ["publish", "--raw", "{}", "--count", "0"],
    ["publish", "--raw", "{}", "--count", "many"], ["publish", "--bogus"], ["token"],
    ["token", "a", "b"], ["online"], ["nodes", "extra"], ["status"], ["stop", "x"],
    ["reload", "--tasks=1", "--pid-file", "f"], ["start", "--timeout", "-1", "--pid-file", "f"],
    ["status", "-c"], ["nodes", "-c", "a", "-c", "b"], ["nodes", "--set", "nokey=1"],
])
def test_usage_errors_exit_2(bin_dir, stack, args):
    p = ctl(bin_dir, stack, *args)
    assert p.returncode == 2, (args, p.stdout, p.stderr)
    assert p.stderr.startswith("pushgate-ctl: ") or p.stderr.startswith("Usage:"), p.stderr
    assert p.stdout == ""


def test_help(bin_dir, stack):
    p = ok(ctl(bin_dir, stack, "--help"))
    for word in ("publish", "token", "nodes", "online", "start", "stop", "reload", "status",
                 "redis_host = 127.0.0.1", "stream = pushgate:worksheets", "jwt_secret",
                 "pid_file", "Exit codes"):
        assert word in p.stdout, word
    for cmd, opt in (("publish", "--count N"), ("token", "--ttl SECONDS"), ("start", "--bin"),
                     ("reload", "--tasks"), ("status", "--pid-file"), ("nodes", "--config")):
        p = ok(ctl(bin_dir, stack, cmd, "--help"))
        assert p.stdout.startswith("Usage: pushgate-ctl %s" % cmd) and opt in p.stdout
    assert ok(ctl(bin_dir, stack, "--version")).stdout.startswith("pushgate-ctl ")

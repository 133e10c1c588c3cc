"""pushgate-bench end to end, in its smoke form (the figures of larger runs
are in README's Benchmarks part).

1. `connect` with 100 clients over two gateway nodes (source addresses
   127.0.0.2 and 127.0.0.3), READY, then `publish` of 1,000 stamped work
   orders through Redis, the consumer, both gateways and the proxy: all 100
   connected, all 1,000 delivered, none missing, no duplicates
2. the same with the clients split over 3 processes (--per-proc 40)
3. --reconnect: node B is stopped (SIGTERM), its clients are closed with
   1001 and move to node A; the report counts the closes and the time until
   all were registered again
4. the seed's load-tool mode against examples/echo_server (long_tcp with a
   pipeline, short_tcp) and examples/ws_echo (websocket)

The cluster (proxy, gateways A and B, consumer) is test_stack's.  Every
wait is bounded; only processes started here are stopped, by PID."""
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import HOST, SANITIZER_MARKS, start_server, stop_all, wait_until  # noqa: E402
from gateway_util import db_rows  # noqa: E402
from stack_util import APP_TOKEN, RUN, SECRET, STREAM  # noqa: E402
from test_stack import cluster, healthy  # noqa: E402,F401

BENCH = "pushgate-bench"


# ---- running pushgate-bench ----

class Bench:
    """pushgate-bench as a child process: stdout is its --json report,
    stderr is read by a thread (READY, errors, sanitizer reports)."""

    def __init__(self, bin_dir, args, env=None):
        self.args = [os.path.join(bin_dir, BENCH)] + [str(a) for a in args]
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, **(env or {})))
        self.lines = queue.Queue()
        self.err = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.err.append(line)
            self.lines.put(line)

    def wait_ready(self, timeout):
        """The n of the READY n line (stderr with --json)."""
        try:
            while True:
                line = self.lines.get(timeout=timeout)
                if line.startswith("READY "):
                    return int(line.split()[1])
        except queue.Empty:
            raise AssertionError("no READY within %s s; stderr:\n%s" % (timeout, "".join(self.err)))

    def finish(self, timeout, expect_rc=0):
        """Waits for the exit; the report (a dict)."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("%s did not finish within %s s" % (self.args[1], timeout))
        self.reader.join(5)
        err = "".join(self.err)
        marks = [m for m in SANITIZER_MARKS if m in err]
        assert not marks, "sanitizer report from pushgate-bench:\n%s" % err[-6000:]
        assert self.proc.returncode == expect_rc, "exit %s (stderr:\n%s)\n%s" % (
            self.proc.returncode, err[-3000:], out[-3000:])
        return json.loads(out)

    def signal(self, signo):
        self.proc.send_signal(signo)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def run_bench(bin_dir, args, timeout=60, expect_rc=0):
    return Bench(bin_dir, list(args) + ["--json", "--quiet"]).finish(timeout, expect_rc)


def ws_url(g):
    return "ws://%s:%d/ws" % (HOST, g.port)


def publish(bin_dir, stack, prefix, messages, users, *extra):
    rep = run_bench(bin_dir, ["publish", "-m", messages, "--users", users, "--prefix", prefix,
                              "--redis", "%s:%d" % (stack.redis_host, stack.redis_port),
                              "--stream", STREAM, "--chat-token", APP_TOKEN, "--seed", 7]
                    + list(extra))
    assert rep["sent"] == messages and rep["errors"] == 0 and rep["ok"], rep
    return rep


def peer_addresses(ports):
    """Local IPv4 address -> count of established loopback TCP connections
    to any of ports, from /proc/net/tcp."""
    seen = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            rport = int(remote.split(":")[1], 16)
            if state != "01" or rport not in ports:
                continue
            ip = socket.inet_ntoa(bytes.fromhex(local.split(":")[0])[::-1])
            seen[ip] = seen.get(ip, 0) + 1
    return seen


# ---- against the cluster of test_stack (its fixtures) ----

def connect_args(c, prefix, n, *extra):
    return ["connect", "-n", n, "--url", ws_url(c.a), "--url", ws_url(c.b), "--secret", SECRET,
            "--prefix", prefix, "--timeout", 60, "--json", "--quiet"] + list(extra)


def assert_delivered(rep, n, messages):
    assert rep["connected"] == n and rep["connect_errors"] == 0, rep
    assert rep["delivered"] == messages and rep["missing"] == 0, rep
    assert rep["duplicates"] == 0 and rep["bad_messages"] == 0, rep
    assert rep["acks"] >= messages and rep["latency_ms"]["count"] == messages, rep
    assert rep["ended"] == "complete" and rep["ok"] is True, rep


# ---- 1. connect + publish ----

def test_connect_100_over_two_nodes_then_publish_1000(healthy, bin_dir, stack):
    c = healthy
    prefix = "bench-%s-a-" % RUN
    bench = Bench(bin_dir, connect_args(c, prefix, 100, "--expect", 1000, "--src-addrs", 2))
    try:
        assert bench.wait_ready(30) == 100
        # the clients' sockets come from the two source addresses, half each
        peers = peer_addresses({c.a.port, c.b.port})
        assert peers.get("127.0.0.2") == 50 and peers.get("127.0.0.3") == 50, peers
        rows = db_rows(stack, "SELECT node_port, COUNT(*) FROM online_clients WHERE uuid LIKE %s "
                              "GROUP BY node_port", (prefix + "%",))
        assert sorted(n for _, n in rows) == [50, 50], rows
        publish(bin_dir, stack, prefix, 1000, 100)
        rep = bench.finish(60)
    finally:
        bench.kill()
    assert_delivered(rep, 100, 1000)
    assert rep["processes"] == 1 and rep["src_addrs"] == 2, rep
    assert rep["server_closes"] == 0 and rep["close_codes"] == {}, rep
    print("\n[bench] 100 clients, 1000 orders: connect %.2f s, latency ms %s, %.0f delivered/s"
          % (rep["connect_seconds"], rep["latency_ms"], rep["delivered_per_s"]))


# ---- 2. three processes ----

def test_connect_split_over_three_processes(healthy, bin_dir, stack, tmp_path):
    """And --slow-log with --slow-ms 0: every order, once, as a whole line,
    from each of the processes.  The orders are paced (1,000/s, a batch of
    10 every 10 ms): each batch carries the time it went, none earlier than
    its turn, and none was held back."""
    c = healthy
    prefix = "bench-%s-b-" % RUN
    slow = tmp_path / "slow.log"
    bench = Bench(bin_dir, connect_args(c, prefix, 100, "--expect", 1000, "--per-proc", 40,
                                        "--slow-log", slow, "--slow-ms", 0))
    try:
        assert bench.wait_ready(30) == 100
        published_after = time.time() * 1e6
        pub = publish(bin_dir, stack, prefix, 1000, 100, "--rate", 1000, "--pace-us", 10000)
        rep = bench.finish(60)
    finally:
        bench.kill()
    assert rep["processes"] == 3 and rep["processes_reported"] == 3, rep
    assert_delivered(rep, 100, 1000)
    assert pub["seconds"] >= 0.99 and pub["late_batches"] == 0, pub
    lines = [line.split() for line in slow.read_text().splitlines()]
    assert len(lines) == 1000 and all(len(f) == 3 for f in lines), lines[:3]
    assert len({f[2] for f in lines}) == 1000
    assert all(int(f[0]) >= published_after - 1e6 and 0 <= int(f[1]) < 60e6 for f in lines)
    # the send stamps of the 100 batches span their 990 ms of turns
    stamps = sorted(int(f[0]) for f in lines)
    assert stamps[-1] - stamps[0] >= 980000, (stamps[0], stamps[-1])


# ---- 3. reconnect when a node stops ----

def test_reconnect_when_a_node_stops(healthy, bin_dir, stack):
    c = healthy
    prefix = "bench-%s-r-" % RUN
    bench = Bench(bin_dir, connect_args(c, prefix, 40, "--reconnect", "--hold", 50))
    try:
        assert bench.wait_ready(30) == 40
        a_port = c.a.internal_port
        c.b.stop()
        wait_until(lambda: db_rows(stack, "SELECT COUNT(*) FROM online_clients WHERE uuid LIKE %s "
                                          "AND node_port = %s", (prefix + "%", a_port))[0][0] == 40,
                   20, what="all 40 clients registered on node A")
        bench.signal(signal.SIGINT)
        rep = bench.finish(30)
    finally:
        bench.kill()
    assert rep["connected"] == 40 and rep["open_at_end"] == 40, rep
    assert rep["server_closes"] == 20, rep
    assert set(rep["close_codes"]) <= {"1001", "1006"}, rep["close_codes"]
    assert rep["reconnect_seconds"] is not None and rep["reconnect_seconds"] < 20, rep
    assert rep["ended"] == "signal" and rep["ok"] is True, rep
    print("\n[bench] node B stopped: 20 clients back on A in %.2f s (closes %s)"
          % (rep["reconnect_seconds"], rep["close_codes"]))


# ---- 4. the seed's load-tool mode ----

@pytest.fixture(scope="module")
def echo_servers(bin_dir, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("echo")
    servers = []
    try:
        # recorded before waiting, so a server that fails to start is stopped too
        for name, extra in (("echo_server", dict(open_length_check=True)), ("ws_echo", {})):
            servers.append(start_server(bin_dir, name, tmp_path, wait=False, reactor_num=1,
                                        worker_num=2, task_worker_num=0, **extra))
            servers[-1].wait_ready()
        yield servers
    finally:
        stop_all(servers)


@pytest.mark.parametrize("mode,args", [
    ("long_tcp", ["-c", 10, "-n", 3000, "-p", 4, "-l", 64]),
    ("short_tcp", ["-c", 5, "-n", 300, "-l", 32]),
    ("websocket", ["-c", 10, "-n", 2000, "-p", 2, "-l", 100]),
])
def test_echo_modes(echo_servers, bin_dir, mode, args):
    echo, ws = echo_servers
    server = "ws://%s:%d/ws" % (HOST, ws.port) if mode == "websocket" else \
        "tcp://%s:%d" % (HOST, echo.port)
    rep = run_bench(bin_dir, args + ["-s", server, "-f", mode, "--timeout", 30])
    requested = args[args.index("-n") + 1]
    assert rep["mode"] == mode and rep["requests"] == requested, rep
    assert rep["done"] == requested and rep["errors"] == 0 and rep["ok"] is True, rep
    assert rep["latency_ms"]["count"] == requested and rep["requests_per_s"] > 0, rep


# ---- MySQL churn (bench/churn_bench.c) ----

def test_churn_bench_registers_and_deletes_every_row(bin_dir, stack):
    out = subprocess.run([os.path.join(bin_dir, "churn_bench"), "300", "64", "2", "30"],
                         env=dict(os.environ, **stack.env()), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("churn: register 300 rows in ") and \
        lines[1].startswith("churn: unregister 300 rows in "), out.stdout
    assert db_rows(stack, "SELECT COUNT(*) FROM online_clients WHERE client_id LIKE 'churn-%%'") \
        == ((0,),)
    bad = subprocess.run([os.path.join(bin_dir, "churn_bench"), "10", "65"], capture_output=True,
                         text=True, timeout=10)
    assert bad.returncode == 2 and "usage" in bad.stderr


# ---- run-queue wait per thread (bench/runq.py) ----

def test_runq_reports_a_busy_thread_by_its_share_of_a_core():
    """A process that only spins shows near a whole core running; one that
    sleeps does not show; --after waits for a command line other than its
    own."""
    runq = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench",
                        "runq.py")
    spin = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 30\n"
                             "while time.time() < end: pass", "runq-test-spin"])
    idle = subprocess.Popen(["sleep", "30"])
    try:
        out = subprocess.run([sys.executable, runq, "--seconds", "1", "--after",
                              "runq-test-spin", "python", "sleep"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        rows = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
        assert str(spin.pid) in rows and str(idle.pid) not in rows, out.stdout
        running = int(re.search(r" (\d+)% +\d+% ", rows[str(spin.pid)]).group(1))
        assert running >= 30, out.stdout        # a whole core, less what others took
        assert out.stdout.splitlines()[-1].startswith("all of the above"), out.stdout
    finally:
        for p in (spin, idle):
            p.kill()
            p.wait(10)

"""A whole pushgate system for the benchmarks: the test fixture's throw-away
MariaDB and Redis (tests/fixture.py), gateway nodes, the proxy and the
consumer, all release builds on loopback, plus what the benchmarks measure
about them: PSS (smaps_rollup) and CPU time (utime + stime) per component,
summed over every process of it.

Only processes started here are stopped, by PID."""
import os
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
from fixture import Stack, free_port  # noqa: E402

BIN = os.environ.get("PG_BIN", os.path.join(ROOT, "build", "release", "bin"))
SECRET = "bench-secret-0123456789abcdef"
ADMIN_SECRET = "bench-admin-secret-0123456789"   # opens /stats on the public port
APP_TOKEN = "bench-app-token"
STREAM = "pushgate:worksheets"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# BENCH_GATEWAY_SET="worker_num=1,task_worker_num=3": settings every gateway
# gets on top of the scenario's, to measure a tuning with the same scenarios
GATEWAY_SET = dict(kv.split("=", 1) for kv in
                   os.environ.get("BENCH_GATEWAY_SET", "").split(",") if "=" in kv)
# BENCH_PROXY_SET="workers_accept=false": the same for the proxy
PROXY_SET = dict(kv.split("=", 1) for kv in
                 os.environ.get("BENCH_PROXY_SET", "").split(",") if "=" in kv)
# BENCH_CONSUMER_SET="route_hints=0": the same for the consumer
CONSUMER_SET = dict(kv.split("=", 1) for kv in
                    os.environ.get("BENCH_CONSUMER_SET", "").split(",") if "=" in kv)
# BENCH_PIN_NODES=1: node i of either system (pushgate's gateways, nchan's
# nginx nodes) runs on a core of its own, the i-th this process may use
# (cpu_affinity; worker_cpu_affinity); the other processes run anywhere
PIN_NODES = os.environ.get("BENCH_PIN_NODES", "") == "1"


def node_cpu(index):
    """The CPU of node index under BENCH_PIN_NODES=1, or None."""
    if not PIN_NODES:
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[index % len(cpus)]


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError("timed out waiting for " + what)


def port_open(port):
    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
        return True
    except OSError:
        return False


# ---- what a process tree costs ----

def _children():
    """ppid -> [pid] over every process."""
    tree = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(name))
    return tree


def tree_pids(root):
    tree, out, unvisited = _children(), [], [root]
    while unvisited:
        pid = unvisited.pop()
        out.append(pid)
        unvisited.extend(tree.get(pid, []))
    return out


def _pss(pid):
    with open("/proc/%d/smaps_rollup" % pid) as f:
        return sum(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))


def _cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])   # utime + stime


def _sum_over(pids, read):
    """read(pid) summed over pids; a process gone meanwhile counts 0."""
    total = 0
    for pid in pids:
        try:
            total += read(pid)
        except (OSError, IndexError, ValueError):
            pass
    return total


def pss_bytes(pids):
    return _sum_over(pids, _pss)


def cpu_seconds(pids):
    return _sum_over(pids, _cpu_ticks) / CLK_TCK


def role_of(pid):
    """A server process's role from its title ("pushgate-gateway: worker 1"
    -> worker): master (its reactor threads included), manager, worker,
    task; "gone" when it exited."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            title = f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return "gone"
    return title.split(": ")[-1].split(" ")[0] if ": " in title else "master"


class Daemon:
    def __init__(self, name, program, settings, logdir, env):
        self.name = name
        self.log_path = os.path.join(logdir, name + ".log")
        args = [os.path.join(BIN, program)]
        for k, v in settings.items():
            args += ["--set", "%s=%s" % (k, v)]
        self.err = open(os.path.join(logdir, name + ".stderr"), "wb")
        self.proc = subprocess.Popen(args + ["--set", "log_file=" + self.log_path],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.err, env=env, start_new_session=True)
        self.settings = settings

    def pids(self):
        return tree_pids(self.proc.pid) if self.proc.poll() is None else []

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout=60):
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.err.close()


class Cluster:
    """nodes gateways (public and internal ports), one proxy, consumers."""

    def __init__(self, nodes=2, consumers=1, gateway=None, logdir=None):
        self.stack = Stack().start()
        self.stack.add_app(APP_TOKEN)
        self.logdir = logdir or self.stack.dir
        self.env = dict(os.environ, **self.stack.env())
        self.daemons = []
        self.proxy_port = free_port()
        self.proxy = self.start("proxy", "pushgate-proxy", **dict(
            dict(host=HOST, port=self.proxy_port, reactor_num=1, worker_num=2, task_worker_num=1,
                 nodes_refresh_ms=200, log_level="warn"), **PROXY_SET))
        wait_for(lambda: port_open(self.proxy_port), 20, "the proxy")
        self.gateways = [self.start_gateway(i, **(gateway or {})) for i in range(nodes)]
        self.consumers = [self.start("consumer-%d" % i, "pushgate-consumer",
                                     **dict(dict(consumer="bench-%d" % i, nodes_refresh_ms=300),
                                            **CONSUMER_SET))
                          for i in range(consumers)]
        for c in self.consumers:
            wait_for(lambda: c.log().count("joined") >= nodes, 20, "the consumer")

    def start(self, name, program, **settings):
        d = Daemon(name, program, settings, self.logdir, self.env)
        self.daemons.append(d)
        return d

    def start_gateway(self, index, **overrides):
        settings = dict(host=HOST, port=free_port(), internal_host=HOST,
                        internal_port=free_port(), advertised_ip=HOST, reactor_num=1,
                        worker_num=2, task_worker_num=2, max_conn=19000, jwt_secret=SECRET,
                        admin_secret=ADMIN_SECRET,
                        chat_token=APP_TOKEN, proxy="%s:%d" % (HOST, self.proxy_port),
                        ack_timeout=30, node_heartbeat_interval=1, node_dead_after=10,
                        heartbeat_idle_time=600, log_level="warn")
        cpu = node_cpu(index)
        if cpu is not None:
            settings["cpu_affinity"] = cpu
        settings.update(overrides)
        settings.update(GATEWAY_SET)
        g = self.start("gateway-%d" % index, "pushgate-gateway", **settings)
        g.port, g.internal_port = settings["port"], settings["internal_port"]
        g.url = "ws://%s:%d/" % (HOST, g.port)
        wait_for(lambda: port_open(g.port), 30, "gateway %d" % index)
        wait_for(lambda: self.node_up(g), 30, "gateway %d in gateway_nodes" % index)
        return g

    def node_up(self, g):
        with self.stack.mysql() as db, db.cursor() as cur:
            cur.execute("SELECT state FROM gateway_nodes WHERE ip = %s AND internal_port = %s",
                        (HOST, g.internal_port))
            row = cur.fetchone()
        return bool(row) and row[0] == "up"

    def redis_address(self):
        return "%s:%d" % (self.stack.redis_host, self.stack.redis_port)

    def cpu(self):
        """CPU seconds so far per component (living processes)."""
        parts = {"gateways": sum((g.pids() for g in self.gateways), []),
                 "proxy": self.proxy.pids(),
                 "consumer": sum((c.pids() for c in self.consumers), []),
                 "mariadb": [self.stack.mysql_pid], "redis": [self.stack.redis_pid]}
        return {k: cpu_seconds(v) for k, v in parts.items()}

    def gateway_cpu_by_role(self):
        """CPU seconds so far of the gateways' processes by role (role_of)."""
        roles = {}
        for pid in sum((g.pids() for g in self.gateways), []):
            role = role_of(pid)
            roles[role] = roles.get(role, 0) + cpu_seconds([pid])
        return roles

    def stop(self):
        try:
            for d in reversed(self.daemons):
                d.stop()
        finally:
            self.stack.stop()

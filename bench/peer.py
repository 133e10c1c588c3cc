"""The peer system of make bench: nchan (the nginx push module) on Redis,
measured in the same sitting as pushgate so that pushgate's figures can be
given as ratios to it (BENCH_ONLY=peer; bench/README.md, "Peer: nchan").

Two nginx nodes, each its own configuration, pid file and temp folders in
the run's log folder and its own free loopback port, both with nchan
pointed at the test fixture's throw-away Redis (tests/fixture.py, Redis
only) in `nostore` mode: Redis carries every message from the node it was
published on to the node that holds its subscriber, and stores none.

    /sub/<user>   WebSocket subscriber location, one channel per user
    /pub/<user>   HTTP POST publisher location

Started and stopped by PID (the nginx master runs in the foreground,
`daemon off`); only loopback; every wait is bounded.  Debian's nginx and
libnginx-mod-nchan are needed (scripts/install-deps --bench, which make
bench runs); missing() says what is missing so the caller can skip."""
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request

from cluster import (HOST, Stack, cpu_seconds, free_port, node_cpu, port_open, tree_pids,
                     wait_for)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"
PACKAGES = ("nginx", "libnginx-mod-nchan")
# worker processes per nginx node: Debian's nginx.conf says `auto`, one per
# core, 2 here; BENCH_NCHAN_WORKERS=1 measures the other choice
WORKERS = int(os.environ.get("BENCH_NCHAN_WORKERS", "0")) or os.cpu_count() or 1
# the open-file limit of every process here is 20,000 at most
NOFILE = 20000
WORKER_CONNECTIONS = 19000

CONFIG = """\
# nchan peer node {name} (bench/peer.py), made for one bench run
load_module {module};
daemon off;
master_process on;
{user}worker_processes {workers};
{affinity}worker_rlimit_nofile {nofile};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;

events {{
    worker_connections {worker_connections};
}}

http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    # the publisher's few pipelined connections stay open for the whole run
    keepalive_requests 100000000;
    keepalive_timeout 600s;

    upstream bench_redis {{
        nchan_redis_server redis://{redis};
        # Redis relays each message to the node of its subscriber, stores none
        nchan_redis_storage_mode nostore;
        # nchan's documented setting for publishing capacity in nostore mode
        # (the publisher's 201/202 then only estimates the subscriber count)
        nchan_redis_nostore_fastpublish on;
    }}

    server {{
        listen {host}:{port} backlog=4096;
        location ~ ^/sub/([A-Za-z0-9_.:@-]+)$ {{
            nchan_subscriber websocket;
            nchan_channel_id $1;
            nchan_redis_pass bench_redis;
        }}
        location ~ ^/pub/([A-Za-z0-9_.:@-]+)$ {{
            nchan_publisher http;
            nchan_channel_id $1;
            nchan_redis_pass bench_redis;
        }}
    }}
}}
"""


def missing():
    """What the peer needs and this machine lacks: [] when it can run."""
    gone = []
    if not os.path.exists(NGINX):
        gone.append("nginx")
    if not os.path.exists(NCHAN_MODULE):
        gone.append("libnginx-mod-nchan")
    return gone


class NchanNode:
    """One nginx process tree with nchan: config, pid file, temp folders
    and logs in logdir/<name>."""

    def __init__(self, name, logdir, redis_address, cpu=None):
        self.name = name
        self.dir = os.path.join(logdir, name)
        os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)
        self.port = free_port()
        self.conf = os.path.join(self.dir, "nginx.conf")
        # as root, the workers run as the same user as every other daemon
        # of the bench (nginx would make them nobody, who cannot enter the
        # run's private folders)
        user = "user root;\n" if os.geteuid() == 0 else ""
        # every worker on one CPU (BENCH_PIN_NODES): a mask per worker
        affinity = "" if cpu is None else "worker_cpu_affinity %s;\n" % " ".join(
            ["1" + "0" * cpu] * WORKERS)
        with open(self.conf, "w") as f:
            f.write(CONFIG.format(name=name, module=NCHAN_MODULE, user=user, workers=WORKERS,
                                  affinity=affinity, nofile=NOFILE,
                                  worker_connections=WORKER_CONNECTIONS, dir=self.dir,
                                  redis=redis_address, host=HOST, port=self.port))
        self.err = open(os.path.join(self.dir, "stderr"), "wb")
        self.proc = subprocess.Popen([NGINX, "-p", self.dir + "/", "-c", self.conf,
                                      "-e", os.path.join(self.dir, "error.log")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.err, start_new_session=True)
        self.sub_url = "ws://%s:%d/sub/" % (HOST, self.port)
        self.pub_url = "http://%s:%d/pub/" % (HOST, self.port)

    def wait_ready(self, timeout=20):
        """The port answers and a POST goes through nchan to Redis."""
        wait_for(lambda: self.proc.poll() is not None or port_open(self.port), timeout,
                 "nginx %s on port %d" % (self.name, self.port))
        if self.proc.poll() is not None:
            raise RuntimeError("nginx %s exited (%s): %s" % (self.name, self.proc.returncode,
                                                             self.log()[-2000:]))
        wait_for(self._publishes, timeout, "nchan %s publishing through Redis" % self.name)

    def _publishes(self):
        req = urllib.request.Request(self.pub_url + "bench-ready-probe", data=b"{}",
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                return 200 <= r.status < 300
        except (urllib.error.URLError, OSError):
            return False

    def log(self):
        try:
            with open(os.path.join(self.dir, "error.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def pids(self):
        return tree_pids(self.proc.pid) if self.proc.poll() is None else []

    def stop(self, timeout=30):
        """SIGTERM (nginx's fast shutdown) to the master we started, then
        SIGKILL to it and its workers if it overstays."""
        if self.proc.poll() is None:
            pids = self.pids()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self.proc.wait(10)
        self.err.close()


class NchanPeer:
    """Two nchan nodes (A and B) on one throw-away Redis."""

    def __init__(self, nodes=2, logdir=None):
        self.stack = Stack(mysql=False).start()
        self.logdir = logdir or self.stack.dir
        self.nodes = []
        try:
            redis = "%s:%d" % (self.stack.redis_host, self.stack.redis_port)
            for i in range(nodes):
                self.nodes.append(NchanNode("nchan-%d" % i, self.logdir, redis, node_cpu(i)))
            for n in self.nodes:
                n.wait_ready()
        except BaseException:
            self.stop()
            raise

    def wait_subscribed(self, prefix, users, timeout=60):
        """Until Redis has a pubsub channel for every user: a node answers a
        subscriber's upgrade before its SUBSCRIBE to Redis is done, and a
        message published before that would reach nobody (nostore)."""
        r = self.stack.redis()
        try:
            wait_for(lambda: len(r.pubsub_channels("*%s*" % prefix)) >= users, timeout,
                     "nchan's %d Redis subscriptions" % users)
        finally:
            r.close()

    def cpu(self):
        """CPU seconds so far: the nginx processes of both nodes, and Redis."""
        return {"nginx": cpu_seconds(sum((n.pids() for n in self.nodes), [])),
                "redis": cpu_seconds([self.stack.redis_pid])}

    def stop(self):
        try:
            for n in reversed(self.nodes):
                n.stop()
        finally:
            self.stack.stop()


# the publisher's keep-alive connections to node A: nginx answers the
# requests pipelined on one connection one at a time, and an nchan publish
# holds its connection for a Redis round trip, so 4 connections cap the
# publisher near 9,000/s here, and 16 still held nchan's highest rate about
# a fifth below what 64, the client's most, reach (bench/README.md)
CONNS = int(os.environ.get("BENCH_NCHAN_CONNS", "64"))


def s2_nchan(messages, users, rate, pace_us=1000, conns=CONNS):
    """pushgate's S2 load against the peer: users browsers (user i on node
    i % 2), messages orders POSTed to node A only, one random user each
    (the publisher's same seed), paced like `publish --pace-us`.  CPU is
    taken from the moment every subscriber is connected (and its channel
    subscribed in Redis) to the one the last
    order arrives, the end of nchan's work for it (it has no ACK)."""
    import scenarios as sc
    peer = NchanPeer()
    try:
        a = peer.nodes[0]
        hold = messages / max(rate, 5000) + 120
        b = sc.Bench(["connect", "--nchan", "-n", users, "--prefix", sc.PREFIX, "--expect",
                      messages, "--hold", hold, "--grace", 2,
                      "--per-proc", sc.client_per_proc(users)]
                     + sum((["--url", n.sub_url] for n in peer.nodes), []),
                     peer.logdir, "nchan-connect")
        b.wait_ready(120)
        peer.wait_subscribed(sc.PREFIX, users)
        cpu0, receivers0, tools0 = peer.cpu(), cpu_seconds(tree_pids(b.proc.pid)), sc.children_cpu()
        p = sc.Bench(["publish", "-m", messages, "--users", users, "--prefix", sc.PREFIX,
                      "--rate", rate, "--seed", 1, "--infos-len", 16, "--pace-us", pace_us,
                      "--nchan-url", a.pub_url, "--conns", conns], peer.logdir, "nchan-publish")
        pub = p.report(messages / max(rate, 5000) + 60)
        publisher = sc.children_cpu() - tools0
        complete = b.wait_complete(messages / max(rate, 5000) + 60)
        cpu = sc.cpu_delta(cpu0, peer.cpu())
        cpu["bench_tools"] = round(cpu_seconds(tree_pids(b.proc.pid)) - receivers0 + publisher, 2)
        r = b.report(messages / max(rate, 5000) + 120)
        return {"system": "nchan", "messages": messages, "users": users, "rate": rate,
                "pace_us": pace_us, "nginx_workers_per_node": WORKERS,
                "client_processes": sc.CLIENT_PROCS,
                "publisher_connections": conns,
                "published_per_s": pub.get("rate"), "publish_errors": pub.get("errors"),
                "publisher_late_orders": pub.get("late_orders"),
                "no_subscriber": pub.get("no_subscriber"), "delivered": r.get("delivered"),
                "missing": r.get("missing"), "duplicates": r.get("duplicates"),
                "connected": r.get("connected"), "complete": complete,
                "delivered_per_s": r.get("delivered_per_s"), "latency_ms": r.get("latency_ms"),
                "cpu_seconds": cpu,
                "server_cpu_us_per_msg": round(sum(v for k, v in cpu.items() if k != "bench_tools")
                                               / messages * 1e6, 1),
                "cpu_us_per_msg": {k: round(v / messages * 1e6, 1) for k, v in cpu.items()},
                "bench_tools_cpu_us_per_msg": round(cpu["bench_tools"] / messages * 1e6, 1)}
    finally:
        peer.stop()


# ---- the comparison ----

def ratio(a, b):
    """a / b rounded, or None when either is missing or b is 0."""
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
        return None
    return round(a / b, 2)


def ratios(pg, peer):
    """pushgate's figures over the peer's for one load (x > 1: pushgate
    takes more CPU, more time, or delivers more per second)."""
    lp, lq = pg.get("latency_ms") or {}, peer.get("latency_ms") or {}
    return {"cpu_per_order": ratio(pg.get("server_cpu_us_per_msg"),
                                   peer.get("server_cpu_us_per_msg")),
            "p50": ratio(lp.get("p50"), lq.get("p50")),
            "p99": ratio(lp.get("p99"), lq.get("p99")),
            "delivered_per_s": ratio(pg.get("delivered_per_s"), peer.get("delivered_per_s")),
            "bench_tools_cpu_per_order": ratio(pg.get("bench_tools_cpu_us_per_msg"),
                                               peer.get("bench_tools_cpu_us_per_msg"))}

#!/usr/bin/python3
"""A scale run across Linux network namespaces: what 60,000 browsers on six
gateway nodes cost, and what losing one node costs.

The loopback benchmarks (bench/scenarios.py) put every node on one address
and every browser in the same network stack as the servers.  Here each
gateway, the proxy, the consumer and MariaDB+Redis ("db") run in a
namespace of their own (tests/netns.py, kernel bridge), bound to their own
address, as on separate hosts, and a whole node can die under load:

1. Connect: 60,000 browsers (10,000 a node) sign in; time until
   online_clients has them all, connects/s overall and per node, gateway
   PSS per connection, MariaDB CPU per registration.
2. Orders at a fixed steady rate to random users: delivered, missing,
   duplicates, latency p50/p99, CPU per order by component.
3. kill -9 of gw1's whole process tree while orders flow: time until its
   browsers are registered on the other nodes, re-registrations/s,
   MariaDB CPU and rows changed during the move (including the sweep of
   the dead node's rows after node_dead_after), missing orders (must be 0).

pushgate-bench takes loopback URLs only (bench/client/net.h: it never
loads another host), so the browsers and the publisher run in a namespace
"clients" of their own where nftables maps 127.0.1.K to gateway K and
127.0.2.1 to the db host (DNAT + masquerade, route_localnet): the packets
cross the bridge to the nodes' addresses like any client's.  Phase 1-2's
browsers are one pushgate-bench (4+ processes, one merged latency); they
close after phase 2 and phase 3's browsers connect anew as nodes-1
pushgate-bench runs, each browser's URL list starting at its own node and
going round all the others, the runs' lists rotated so that gw1's
browsers spread evenly over the other nodes.

Needs root, nft (Debian: nftables) and the release build.  Every wait is
bounded, only processes started here are stopped (by PID), and the
namespaces and devices are checked gone at the end.

    bench/scale.py                                 # 6 x 10,000, the full run
    bench/scale.py --nodes 3 --per-node 500 --orders-seconds 10   # a quick one
"""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
from cluster import (ADMIN_SECRET, APP_TOKEN, BIN, SECRET, Daemon, cpu_seconds,  # noqa: E402
                     pss_bytes, tree_pids)
import netns  # noqa: E402
from fixture import Stack  # noqa: E402

WS_PORT, INTERNAL_PORT, PROXY_PORT = 9501, 9601, 9701
PREFIX = "scale-user-"
REDIS_LOCAL = "127.0.2.1"       # the db host's Redis, as the clients namespace sees it
PROGRESS = re.compile(r"registered (\d+)/\d+ .*received (\d+) \(unique (\d+)\)")


def local_url(i):
    """Gateway i's URL in the clients namespace (NAT to its address)."""
    return "ws://127.0.1.%d:%d/" % (i + 1, WS_PORT)


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def say(text):
    print(text, flush=True)


def wait_for(pred, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    raise RuntimeError("timed out after %.0f s waiting for %s" % (timeout, what))


# ---- the network ----

def map_clients_namespace(net, gateways):
    """DNAT 127.0.1.K -> gateway K and 127.0.2.1 -> db inside "clients"."""
    ns = net.ns("clients")
    for dev in ("all", "default", "lo", "eth0"):
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                        "net.ipv4.conf.%s.route_localnet=1" % dev], check=True, timeout=10)
    lines = ["table ip pgscale {", " chain out {",
             "  type nat hook output priority -100; policy accept;"]
    for i, h in enumerate(gateways):
        lines.append("  ip daddr 127.0.1.%d dnat to %s" % (i + 1, net.addr(h)))
    lines += ["  ip daddr %s dnat to %s" % (REDIS_LOCAL, net.addr("db")), " }",
              " chain post {", "  type nat hook postrouting priority 100; policy accept;",
              '  oifname "eth0" masquerade', " }", "}"]
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input="\n".join(lines) + "\n",
                   text=True, check=True, timeout=10)


# ---- the cluster ----

class NetCluster:
    """Proxy, gateways and consumer, each in its namespace at its address."""

    def __init__(self, net, stack, gateways, logdir, dead_after):
        self.net, self.stack, self.logdir = net, stack, logdir
        self.env = dict(os.environ, **stack.env())
        self.daemons, self.gateways, self.dead_cpu = [], {}, 0.0
        try:
            self.start_all(gateways, dead_after)
        except BaseException:
            self.stop()
            raise

    def start_all(self, gateways, dead_after):
        net = self.net
        self.proxy = self.start("proxy", "pushgate-proxy", host=net.addr("proxy"),
                                port=PROXY_PORT, reactor_num=1, worker_num=2, task_worker_num=1,
                                nodes_refresh_ms=200, log_level="warn")
        wait_for(lambda: port_open(net.addr("proxy"), PROXY_PORT), 20, "the proxy")
        for h in gateways:
            self.gateways[h] = self.start_gateway(h, dead_after)
        self.consumer = self.start("consumer", "pushgate-consumer", consumer="scale-0",
                                   nodes_refresh_ms=300, block_ms=500,
                                   handoff_timeout_ms=20000, claim_min_idle_ms=5000)
        wait_for(lambda: self.consumer.log().count("joined") >= len(gateways), 30,
                 "the consumer to find every gateway")

    def start(self, where, program, **settings):
        with self.net.inside(where):
            d = Daemon(where, program, settings, self.logdir, self.env)
        self.daemons.append(d)
        return d

    def start_gateway(self, h, dead_after):
        addr = self.net.addr(h)
        g = self.start(h, "pushgate-gateway", host=addr, port=WS_PORT, internal_host=addr,
                       internal_port=INTERNAL_PORT, advertised_ip=addr, reactor_num=1,
                       worker_num=2, task_worker_num=2, max_conn=19000, jwt_secret=SECRET,
                       admin_secret=ADMIN_SECRET, chat_token=APP_TOKEN,
                       proxy="%s:%d" % (self.net.addr("proxy"), PROXY_PORT), ack_timeout=30,
                       node_heartbeat_interval=1, node_dead_after=dead_after,
                       heartbeat_idle_time=600, log_level="warn")
        g.addr = addr
        wait_for(lambda: port_open(addr, WS_PORT), 30, "gateway " + h)
        wait_for(lambda: node_up(self.stack, addr), 30, "gateway %s in gateway_nodes" % h)
        return g

    def live_gateways(self):
        return [g for g in self.gateways.values() if g.proc.poll() is None]

    def cpu(self):
        """CPU seconds so far per component (living processes)."""
        parts = {"gateways": sum((g.pids() for g in self.live_gateways()), []),
                 "proxy": self.proxy.pids(), "consumer": self.consumer.pids(),
                 "mariadb": [self.stack.mysql_pid], "redis": [self.stack.redis_pid]}
        cpu = {k: cpu_seconds(v) for k, v in parts.items()}
        cpu["gateways"] += self.dead_cpu     # what killed nodes had used
        return cpu

    def pss(self):
        return {h: pss_bytes(g.pids()) for h, g in self.gateways.items()}

    def kill_node(self, h):
        """kill -9 of every process of gateway h, by PID."""
        g = self.gateways[h]
        pids = tree_pids(g.proc.pid)
        self.dead_cpu += cpu_seconds(pids)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        g.proc.wait(10)
        return pids

    def acked(self):
        total = 0
        for g in self.live_gateways():
            req = urllib.request.Request("http://%s:%d/stats" % (g.addr, WS_PORT),
                                         headers={"Authorization": "Bearer " + ADMIN_SECRET})
            with urllib.request.urlopen(req, timeout=5) as f:
                total += json.load(f)["messages"]["acked"]
        return total

    def stop(self):
        for d in reversed(self.daemons):
            try:
                d.stop(timeout=30)
            except Exception as e:  # noqa: BLE001 - the others still stop
                say("stopping %s: %s" % (d.name, e))


def port_open(addr, port):
    import socket
    try:
        socket.create_connection((addr, port), timeout=0.5).close()
        return True
    except OSError:
        return False


# ---- the database ----

def query(db, sql, args=None):
    with db.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def node_up(stack, addr):
    with stack.mysql() as db:
        rows = query(db, "SELECT state FROM gateway_nodes WHERE ip = %s", (addr,))
    return bool(rows) and rows[0][0] == "up"


def rows_by_node(db):
    return dict(query(db, "SELECT node_ip, COUNT(*) FROM online_clients GROUP BY node_ip"))


def row_writes(db):
    """MariaDB's row writes so far (Handler_write/update/delete: every
    table's, in-memory temporary tables included)."""
    return {k: int(v) for k, v in query(
        db, "SHOW GLOBAL STATUS WHERE Variable_name IN "
            "('Handler_write', 'Handler_update', 'Handler_delete')")}


def poll_cost(db, stack, fn, n=20):
    """MariaDB CPU seconds one call of fn(db) takes (the polling's own cost)."""
    c0 = cpu_seconds([stack.mysql_pid])
    for _ in range(n):
        fn(db)
    return (cpu_seconds([stack.mysql_pid]) - c0) / n


# ---- the load generator, in the clients namespace ----

class Tool:
    """pushgate-bench run by net.run in "clients": READY/COMPLETE and the
    per-second progress (registered, unique received) from stderr, the
    --json report from stdout."""

    def __init__(self, net, name, args, logdir):
        self.name = name
        self.proc = net.run("clients", [os.path.join(BIN, "pushgate-bench")] +
                            [str(a) for a in args] + ["--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.log = open(os.path.join(logdir, name + ".stderr"), "w")
        self.ready = threading.Event()
        self.complete = threading.Event()
        self.unique = self.registered = 0
        self.out = []
        self.threads = [threading.Thread(target=self._read_err, daemon=True),
                        threading.Thread(target=lambda: self.out.append(self.proc.stdout.read()),
                                         daemon=True)]
        for t in self.threads:
            t.start()

    def _read_err(self):
        for line in self.proc.stderr:
            self.log.write(line)
            if line.startswith("READY"):
                self.ready.set()
            elif line.startswith("COMPLETE"):
                self.complete.set()
            m = PROGRESS.search(line)
            if m:
                self.registered, self.unique = int(m.group(1)), int(m.group(3))

    def running(self):
        return self.proc.poll() is None

    def interrupt(self):
        if self.running():
            self.proc.send_signal(signal.SIGINT)

    def report(self, timeout):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.interrupt()
            self.proc.wait(30)
        for t in self.threads:
            t.join(10)
        self.log.close()
        text = "".join(self.out)
        if "{" not in text:
            raise RuntimeError("%s: no report (exit %s)" % (self.name, self.proc.returncode))
        return json.loads(text[text.index("{"):])


def browsers(net, name, logdir, n, urls, first=0, expect=0, reconnect=False, per_proc=None,
             hold=900, grace=1):
    args = ["connect", "-n", n, "--first", first, "--prefix", PREFIX, "--secret", SECRET,
            "--home-urls", len(urls), "--hold", hold, "--grace", grace, "--expect", expect]
    for u in urls:
        args += ["--url", u]
    if reconnect:
        args.append("--reconnect")
    if per_proc:
        args += ["--per-proc", per_proc]
    return Tool(net, name, args, logdir)


def publisher(net, name, logdir, stack, messages, users, rate, first_seq=0, seed=1):
    return Tool(net, name, ["publish", "-m", messages, "--users", users, "--prefix", PREFIX,
                            "--rate", rate, "--pace-us", 1000, "--seed", seed,
                            "--first-seq", first_seq, "--infos-len", 16, "--quiet",
                            "--redis", "%s:%d" % (REDIS_LOCAL, stack.redis_port),
                            "--chat-token", APP_TOKEN], logdir)


def rotations(gateways):
    """URL lists for len-1 runs: run c is gw1 followed by the others
    rotated by c, so gw1's browsers of run c move to a different node in
    each run, and every list holds every node once."""
    idx = list(range(len(gateways)))
    others = idx[1:]
    return [[local_url(i) for i in [0] + others[c:] + others[:c]] for c in range(len(others))]


# ---- phase 1: connect ----

def wait_registered(db, want, shares, t0, timeout, every=0.5):
    """Polls online_clients until want rows; returns (seconds, {ip: seconds
    when that node had its share}, polls)."""
    full, polls = {}, 0
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        rows = rows_by_node(db)
        polls += 1
        now = time.monotonic() - t0
        for ip, n in rows.items():
            if ip in shares and n >= shares[ip] and ip not in full:
                full[ip] = now
        if sum(rows.values()) >= want:
            return now, full, polls
        time.sleep(every)
    raise RuntimeError("online_clients: %s of %d rows after %.0f s" % (
        sum(rows_by_node(db).values()), want, timeout))


def phase_connect(o, net, cl, db, logdir, tag, make_tools):
    """Starts the browsers (make_tools()) and measures until all are in
    online_clients."""
    n = o.nodes * o.per_node
    shares = {cl.gateways[h].addr: o.per_node for h in cl.gateways}
    pss0, cpu0, rows0 = cl.pss(), cl.cpu(), row_writes(db)
    t0 = time.monotonic()
    tools = make_tools()
    took, full, polls = wait_registered(db, n, shares, t0, o.connect_timeout)
    cpu1, rows1 = cl.cpu(), row_writes(db)
    for t in tools:
        if not t.ready.wait(max(1, o.connect_timeout - (time.monotonic() - t0))):
            raise RuntimeError("%s: not ready" % t.name)
    ready = time.monotonic() - t0
    time.sleep(2)
    pss1 = cl.pss()
    per_poll = poll_cost(db, cl.stack, rows_by_node)
    maria = cpu1["mariadb"] - cpu0["mariadb"]
    by_ip = {cl.gateways[h].addr: h for h in cl.gateways}
    r = {"browsers": n, "seconds_to_all_registered": round(took, 2),
         "seconds_to_all_online_at_clients": round(ready, 2),
         "connects_per_s": round(n / took),
         "connects_per_s_by_node": {by_ip[ip]: round(o.per_node / s) for ip, s in full.items()},
         "seconds_by_node": {by_ip[ip]: round(s, 2) for ip, s in full.items()},
         "gateway_pss_before": pss0, "gateway_pss_after": pss1,
         "pss_bytes_per_conn_by_node": {h: round((pss1[h] - pss0[h]) / o.per_node)
                                        for h in pss1},
         "pss_bytes_per_conn": round(sum(pss1[h] - pss0[h] for h in pss1) / n),
         "mariadb_cpu_s": round(maria, 2),
         "mariadb_us_per_registration": round(maria / n * 1e6, 1),
         "mariadb_us_per_registration_less_polling": round(
             max(0.0, maria - polls * per_poll / 2) / n * 1e6, 1),
         "status_polls": polls, "mariadb_row_writes": delta(rows0, rows1),
         "cpu_seconds": delta(cpu0, cpu1)}
    show("phase 1 connect (%s)" % tag, r, ["seconds_to_all_registered", "connects_per_s",
                                           "connects_per_s_by_node", "pss_bytes_per_conn",
                                           "pss_bytes_per_conn_by_node",
                                           "mariadb_us_per_registration",
                                           "mariadb_us_per_registration_less_polling"])
    return r, tools


def delta(a, b):
    return {k: round(b[k] - a.get(k, 0), 3) for k in b}


def show(title, r, keys):
    say("== " + title)
    for k in keys:
        say("   %-44s %s" % (k, r.get(k)))


# ---- phase 2: orders ----

def phase_orders(o, net, cl, db, tool, logdir):
    n, m = o.nodes * o.per_node, o.rate * o.orders_seconds
    cpu0, acked0, rows0 = cl.cpu(), cl.acked(), row_writes(db)
    bench0 = cpu_seconds(tree_pids(tool.proc.pid))
    pub = publisher(net, "publish-orders", logdir, cl.stack, m, n, o.rate)
    p = pub.report(o.orders_seconds * 3 + 60)
    complete = tool.complete.wait(60)
    deadline = time.monotonic() + 30
    while cl.acked() - acked0 < m and time.monotonic() < deadline:
        time.sleep(0.1)
    cpu, rows = delta(cpu0, cl.cpu()), delta(rows0, row_writes(db))
    cpu["pushgate_bench_browsers"] = round(cpu_seconds(tree_pids(tool.proc.pid)) - bench0, 2)
    if not complete:
        tool.interrupt()
    rep = tool.report(60)
    system = sum(v for k, v in cpu.items() if k != "pushgate_bench_browsers")
    r = {"orders": m, "rate": o.rate, "pace_us": 1000, "published_per_s": p.get("rate"),
         "delivered": rep.get("delivered"), "missing": rep.get("missing"),
         "duplicates": rep.get("duplicates"), "latency_ms": rep.get("latency_ms"),
         "latency_p50_ms": rep["latency_ms"]["p50"], "latency_p99_ms": rep["latency_ms"]["p99"],
         "cpu_seconds": cpu,
         "cpu_us_per_order": {k: round(v / m * 1e6, 1) for k, v in cpu.items()},
         "system_cpu_us_per_order": round(system / m * 1e6, 1),
         "mariadb_row_writes": rows, "browsers_report": rep}
    show("phase 2 orders", r, ["orders", "published_per_s", "delivered", "missing",
                               "duplicates", "latency_p50_ms", "latency_p99_ms",
                               "cpu_us_per_order", "system_cpu_us_per_order",
                               "mariadb_row_writes"])
    return r


def wait_unregistered(cl, db, timeout=120):
    """After phase 2's browsers close: seconds until online_clients is empty."""
    cpu0, t0 = cl.cpu()["mariadb"], time.monotonic()
    while sum(rows_by_node(db).values()) and time.monotonic() - t0 < timeout:
        time.sleep(0.2)
    left = sum(rows_by_node(db).values())
    return {"seconds": round(time.monotonic() - t0, 2), "rows_left": left,
            "mariadb_cpu_s": round(cl.cpu()["mariadb"] - cpu0, 2)}


# ---- phase 3: a node killed under load ----

def move_counts(db, dead_ip):
    """(rows at live nodes, rows of the dead node), in one statement so
    that a sweep between two counts cannot make rows look moved."""
    total, dead = query(db, "SELECT COUNT(*), COALESCE(SUM(node_ip = %s), 0) "
                            "FROM online_clients", (dead_ip,))[0]
    return int(total) - int(dead), int(dead)


def watch_move(o, db, dead_ip, t_kill, timeout=90):
    """Polls online_clients after the kill: when every browser has a row
    at a live node (moved), when the dead node's rows are gone (swept)."""
    n = o.nodes * o.per_node
    first = moved = swept = None
    polls = 0
    while time.monotonic() - t_kill < timeout and (moved is None or swept is None):
        live, dead = move_counts(db, dead_ip)
        polls += 1
        now = time.monotonic() - t_kill
        if first is None and live > n - o.per_node:
            first = now
        if moved is None and live >= n:
            moved = now
        if swept is None and dead == 0:
            swept = now
        time.sleep(0.2)
    return first, moved, swept, polls


def phase_failover(o, net, cl, db, logdir, orders_cpu):
    n = o.nodes * o.per_node
    names = list(cl.gateways)
    lists = rotations(names)
    runs = len(lists)
    each = n // runs

    def make_tools():
        return [browsers(net, "browsers-move-%d" % c, logdir, each + (n - each * runs
                                                                     if c == runs - 1 else 0),
                         urls, first=c * each, expect=o.rate * o.move_seconds, reconnect=True,
                         grace=3600) for c, urls in enumerate(lists)]
    again, tools = phase_connect(o, net, cl, db, logdir, "again, for phase 3", make_tools)
    dead = names[0]
    dead_ip = cl.gateways[dead].addr
    per_poll = poll_cost(db, cl.stack, lambda d: move_counts(d, dead_ip))
    m = o.rate * o.move_seconds
    cpu0, rows0 = cl.cpu(), row_writes(db)
    live0, dead0 = move_counts(db, dead_ip)
    pub = publisher(net, "publish-move", logdir, cl.stack, m, n, o.rate, seed=2)
    time.sleep(o.kill_at)
    t_kill = time.monotonic()
    pids = cl.kill_node(dead)
    first, moved, swept, polls = watch_move(o, db, dead_ip, t_kill)
    cpu1, rows1 = cl.cpu(), row_writes(db)
    live1, dead1 = move_counts(db, dead_ip)
    window = time.monotonic() - t_kill
    p = pub.report(o.move_seconds * 3 + 60)
    deadline = time.monotonic() + 90
    while sum(t.unique for t in tools) < m and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)               # copies still on their way
    for t in tools:
        t.interrupt()
    reps = [t.report(60) for t in tools]
    delivered = sum(r.get("delivered") or 0 for r in reps)
    with cl.stack.mysql() as d2:
        stored = query(d2, "SELECT COUNT(*) FROM offline_messages")[0][0]
    maria = cpu1["mariadb"] - cpu0["mariadb"]
    orders_in_window = min(m, o.rate * max(0.0, window + o.kill_at)) - o.rate * o.kill_at
    maria_orders = orders_cpu.get("mariadb", 0) * 1e-6 * max(0.0, orders_in_window)
    r = {"killed": dead, "killed_pids": pids, "orders": m, "rate": o.rate,
         "kill_at_s": o.kill_at, "published_per_s": p.get("rate"),
         "seconds_to_first_reregistration": rnd(first),
         "seconds_to_all_registered_again": rnd(moved),
         "seconds_to_dead_rows_swept": rnd(swept),
         "reregistrations_per_s": round(o.per_node / (moved - first)) if moved and first and
         moved > first else None,
         "window_s": round(window, 2), "status_polls": polls,
         "mariadb_cpu_s_in_window": round(maria, 2),
         "mariadb_cpu_s_polling_est": round(polls * per_poll, 2),
         "mariadb_cpu_s_orders_est": round(maria_orders, 2),
         # what the move added: registrations, the sweep, orders stored and
         # delivered again at the reconnect, the other nodes' work on them
         "mariadb_cpu_s_added_by_move": round(max(0.0, maria - polls * per_poll - maria_orders), 2),
         "mariadb_us_added_per_moved_browser": round(
             max(0.0, maria - polls * per_poll - maria_orders) / o.per_node * 1e6, 1),
         "online_clients_rows_changed": {"registered_at_live_nodes": live1 - live0,
                                         "dead_node_rows_swept": dead0 - dead1},
         "mariadb_row_writes_in_window": delta(rows0, rows1),
         "cpu_seconds_in_window": delta(cpu0, cpu1),
         "delivered": delivered, "missing": m - delivered,
         "duplicates": sum(r.get("duplicates") or 0 for r in reps),
         "client_reconnects": sum(r.get("reconnects") or 0 for r in reps),
         "client_server_closes": sum(r.get("server_closes") or 0 for r in reps),
         "client_reconnect_seconds": max((r.get("reconnect_seconds") or 0) for r in reps),
         "latency_p50_ms_by_run": [r["latency_ms"]["p50"] for r in reps],
         "latency_p99_ms_by_run": [r["latency_ms"]["p99"] for r in reps],
         "latency_max_ms": max(r["latency_ms"]["max"] for r in reps),
         "offline_messages_left": stored, "browsers_reports": reps}
    show("phase 3 kill -9 of %s under load" % dead, r, [
        "seconds_to_first_reregistration", "seconds_to_all_registered_again",
        "seconds_to_dead_rows_swept", "reregistrations_per_s", "mariadb_cpu_s_in_window",
        "mariadb_cpu_s_polling_est", "mariadb_cpu_s_orders_est", "mariadb_cpu_s_added_by_move",
        "mariadb_us_added_per_moved_browser", "online_clients_rows_changed",
        "mariadb_row_writes_in_window", "cpu_seconds_in_window", "delivered", "missing",
        "duplicates", "client_reconnects", "client_reconnect_seconds", "latency_p50_ms_by_run",
        "latency_p99_ms_by_run", "offline_messages_left"])
    return again, r


def rnd(x):
    return None if x is None else round(x, 2)


# ---- the run ----

def run(o, logdir):
    gateways = ["gw%d" % (i + 1) for i in range(o.nodes)]
    results = {"settings": vars(o), "started": utc_now().isoformat(timespec="seconds")}
    t_start = time.monotonic()
    net = netns.Net(["db", "proxy", "consumer", "clients"] + gateways, mode="bridge")
    net.start()
    try:
        stack = Stack(host=net.addr("db"))
        with net.inside("db"):
            stack.start()
        try:
            stack.add_app(APP_TOKEN)
            map_clients_namespace(net, gateways)
            cl = NetCluster(net, stack, gateways, logdir, o.dead_after)
            say("cluster up in %.1f s: db %s, proxy %s, consumer %s, gateways %s" % (
                time.monotonic() - t_start, net.addr("db"), net.addr("proxy"),
                net.addr("consumer"), [net.addr(h) for h in gateways]))
            try:
                results.update(phases(o, net, cl, logdir))
            finally:
                cl.stop()
        finally:
            stack.stop()
    finally:
        net.stop()
    left = net.leftovers()
    results["leftovers"] = left
    results["seconds"] = round(time.monotonic() - t_start, 1)
    return results


def phases(o, net, cl, logdir):
    n = o.nodes * o.per_node
    urls = [local_url(i) for i in range(o.nodes)]
    per_proc = -(-n // max(4, -(-n // 15000)))
    with cl.stack.mysql() as db:
        connect, (tool,) = phase_connect(o, net, cl, db, logdir, "browsers of phases 1-2", lambda: [
            browsers(net, "browsers", logdir, n, urls, expect=o.rate * o.orders_seconds,
                     per_proc=per_proc, grace=5)])
        connect["client_processes"] = -(-n // per_proc)
        orders = phase_orders(o, net, cl, db, tool, logdir)
        gone = wait_unregistered(cl, db)
        say("== phase 2's browsers closed: %d online_clients rows left %s s after their "
            "report" % (gone["rows_left"], gone["seconds"]))
        again, move = phase_failover(o, net, cl, db, logdir, orders["cpu_us_per_order"])
    return {"connect": connect, "orders": orders, "unregister": gone, "connect_again": again,
            "kill_node": move}


def options():
    a = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    a.add_argument("--nodes", type=int, default=6)
    a.add_argument("--per-node", type=int, default=10000, help="browsers per gateway")
    a.add_argument("--rate", type=int, default=2000, help="orders/s (1 ms pace)")
    a.add_argument("--orders-seconds", type=int, default=20, help="phase 2's length")
    a.add_argument("--move-seconds", type=int, default=20, help="phase 3's orders' length")
    a.add_argument("--kill-at", type=float, default=3.0, help="s into phase 3's orders")
    a.add_argument("--dead-after", type=int, default=5, help="node_dead_after, s")
    a.add_argument("--connect-timeout", type=float, default=150)
    a.add_argument("--budget", type=int, default=570,
                   help="s: past this the run stops (cleaning up) and fails")
    a.add_argument("--out", help="the JSON file (default bench/results/<date>-scale.json)")
    o = a.parse_args()
    if o.nodes < 2 or o.per_node < 1:
        a.error("at least 2 nodes and 1 browser a node")
    return o


def save(path, results):
    """Appends this run to the file's runs (a file of the same day keeps
    its earlier runs)."""
    runs = []
    if os.path.exists(path):
        with open(path) as f:
            runs = json.load(f).get("runs", [])
    runs.append(results)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"runs": runs}, f, indent=1)


def over_budget(sig, frame):
    raise RuntimeError("the run took longer than --budget: stopped")


def main():
    o = options()
    why = netns.unavailable()
    if why:
        sys.exit("scale: " + why)
    if not shutil.which("nft"):
        sys.exit("scale: nft not found (Debian: apt-get install nftables)")
    if not os.path.exists(os.path.join(BIN, "pushgate-gateway")):
        sys.exit("scale: no release build in %s (make BUILD=release all)" % BIN)
    import tempfile
    logdir = tempfile.mkdtemp(prefix="pushgate-scale-")
    say("logs in " + logdir)
    signal.signal(signal.SIGALRM, over_budget)
    signal.alarm(o.budget)
    results = run(o, logdir)
    signal.alarm(0)
    path = o.out or os.path.join(HERE, "results", "%s-scale.json" % utc_now().strftime("%Y-%m-%d"))
    save(path, results)
    say("run took %.1f s; leftovers %s; written to %s" % (results["seconds"],
                                                          results["leftovers"], path))
    return 0 if not results["leftovers"] else 1


if __name__ == "__main__":
    sys.exit(main())

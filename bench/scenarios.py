"""The push scenarios of make bench (S1-S4), each against a fresh cluster
(bench/cluster.py) and driven by pushgate-bench.  Each function returns a
dict of figures; bench/run.py repeats them and takes medians."""
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request

from cluster import (ADMIN_SECRET, APP_TOKEN, BIN, CLK_TCK, HOST, SECRET, Cluster, cpu_seconds,
                     pss_bytes, role_of, tree_pids)

PREFIX = "bench-user-"
# BENCH_CLIENT_PROCS: S2's browsers (either system's) as this many client
# processes, one per core by default.  One process for all 10,000 falls
# behind at 20,000/s while it waits for a core, and its wait showed as the
# systems' latency (bench/README.md, "The browsers' client as two processes").
CLIENT_PROCS = max(1, int(os.environ.get("BENCH_CLIENT_PROCS", "2")))


def client_per_proc(users):
    """connect's --per-proc that splits users over CLIENT_PROCS processes."""
    return -(-users // CLIENT_PROCS)


class Bench:
    """pushgate-bench in the background: READY on stderr (and COMPLETE once
    a connect run has every --expect message), the --json report on stdout
    at the end."""

    def __init__(self, args, logdir, name):
        self.name = name
        self.log = open(os.path.join(logdir, name + ".stderr"), "w")
        self.proc = subprocess.Popen([os.path.join(BIN, "pushgate-bench")] + [str(a) for a in args]
                                     + ["--json", "--quiet"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.ready = threading.Event()
        self.complete = threading.Event()
        self.out = []
        self.threads = [threading.Thread(target=self._read_err, daemon=True),
                        threading.Thread(target=lambda: self.out.append(self.proc.stdout.read()),
                                         daemon=True)]
        for t in self.threads:
            t.start()

    def _read_err(self):
        for line in self.proc.stderr:
            if line.startswith("READY"):
                self.ready.set()
            elif line.startswith("COMPLETE"):
                self.complete.set()
            self.log.write(line)

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("%s: not ready (exit %s)" % (self.name, self.proc.poll()))

    def wait_complete(self, timeout):
        """Until every expected message has arrived (False: not in time,
        or the process ended first)."""
        deadline = time.monotonic() + timeout
        while not self.complete.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return False
        return True

    def report(self, timeout):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)   # reports what it has
            self.proc.wait(30)
        for t in self.threads:
            t.join(10)
        self.log.close()
        text = "".join(self.out)
        if "{" not in text:
            raise RuntimeError("%s: no report (exit %s)" % (self.name, self.proc.returncode))
        return json.loads(text[text.index("{"):])

    def interrupt(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)


# BENCH_SLOW_LOG=<file>: every connect run appends each order later than
# BENCH_SLOW_MS (default 2) there (pushgate-bench connect --slow-log)
SLOW_LOG = os.environ.get("BENCH_SLOW_LOG")


def connect(c, urls, n, logdir, name="connect", prefix=PREFIX, **opts):
    args = ["connect", "-n", n, "--secret", SECRET, "--prefix", prefix]
    if SLOW_LOG:
        args += ["--slow-log", SLOW_LOG, "--slow-ms", os.environ.get("BENCH_SLOW_MS", "2")]
    for u in urls:
        args += ["--url", u]
    for k, v in opts.items():
        flag = "--" + k.replace("_", "-")
        args += [flag] if v is True else [flag, v]
    return Bench(args, logdir, name)


def publish(c, m, users, rate, logdir, name="publish", prefix=PREFIX, seed=1, infos_len=16,
            pace_us=10000):
    return Bench(["publish", "-m", m, "--users", users, "--prefix", prefix, "--rate", rate,
                  "--redis", c.redis_address(), "--chat-token", APP_TOKEN, "--seed", seed,
                  "--infos-len", infos_len, "--pace-us", pace_us], logdir, name)


def online_count(c):
    with c.stack.mysql() as db, db.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM online_clients")
        return cur.fetchone()[0]


def gateway_pss(c):
    return [pss_bytes(g.pids()) for g in c.gateways]


def children_cpu():
    """CPU seconds of every waited-for child (pushgate-bench runs)."""
    import resource
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def cpu_delta(before, after):
    return {k: round(after[k] - before.get(k, 0), 2) for k in after}


def acked(c):
    """ACKs the gateways have had from their browsers so far (/stats)."""
    total = 0
    for g in c.gateways:
        req = urllib.request.Request("http://%s:%d/stats" % (HOST, g.port),
                                     headers={"Authorization": "Bearer " + ADMIN_SECRET})
        with urllib.request.urlopen(req, timeout=5) as f:
            total += json.load(f)["messages"]["acked"]
    return total


def wait_acked(c, n, timeout):
    deadline = time.monotonic() + timeout
    while acked(c) < n and time.monotonic() < deadline:
        time.sleep(0.1)


# ---- S1: idle capacity ----

def kernel_bytes():
    """The kernel's memory that connections take: slab (socket, file, epoll
    and inode objects) plus the TCP buffers' pages (/proc/net/sockstat)."""
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    slab = int(info["Slab"].split()[0]) * 1024
    with open("/proc/net/sockstat") as f:
        tcp = [line.split() for line in f if line.startswith("TCP:")][0]
    return slab + int(tcp[tcp.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE")


def s1_idle(nodes, clients, hold_s=20):
    """Kernel memory is the whole machine's: both ends of every connection
    are here, the browser's and the gateway's, so a gateway's share is about
    half of kernel_bytes_per_conn (other activity on the machine adds to it).
    MySQL's churn: MariaDB's CPU while the clients connect (registrations,
    batched as the gateways do them) and after they all go at once
    (unregistrations), per row, and how long the rows took to go."""
    c = Cluster(nodes=nodes, consumers=1)
    try:
        time.sleep(1)
        before, kernel_before = gateway_pss(c), kernel_bytes()
        cpu_before = c.cpu()
        b = connect(c, [g.url for g in c.gateways], clients, c.logdir, hold=hold_s + 60,
                    per_proc=19000)
        b.wait_ready(120)
        t_ready = time.monotonic()
        cpu_ready = c.cpu()
        online = online_count(c)
        time.sleep(min(hold_s, 5))
        during, kernel_during = gateway_pss(c), kernel_bytes()
        time.sleep(max(0, hold_s - (time.monotonic() - t_ready)))
        b.interrupt()
        r = b.report(60)
        t_gone = time.monotonic()
        while online_count(c) > 0 and time.monotonic() - t_gone < 60:
            time.sleep(0.05)
        unregister_s = time.monotonic() - t_gone
        cpu_gone = c.cpu()
        per_conn = [(d - b0) / max(1, clients / nodes) for d, b0 in zip(during, before)]
        return {"clients": clients, "nodes": nodes, "connected": r.get("connected"),
                "online_rows": online, "connect_seconds": r.get("connect_seconds"),
                "pss_before": before, "pss_during": during,
                "bytes_per_conn": round(sum(during) - sum(before)) / clients,
                "kernel_bytes_per_conn": round((kernel_during - kernel_before) / clients),
                "mariadb_us_per_registration": round(
                    (cpu_ready["mariadb"] - cpu_before["mariadb"]) / max(1, online) * 1e6, 1),
                "mariadb_us_per_unregistration": round(
                    (cpu_gone["mariadb"] - cpu_ready["mariadb"]) / max(1, online) * 1e6, 1),
                "gateway_us_per_registration": round(
                    (cpu_ready["gateways"] - cpu_before["gateways"]) / max(1, online) * 1e6, 1),
                "gateway_us_per_unregistration": round(
                    (cpu_gone["gateways"] - cpu_ready["gateways"]) / max(1, online) * 1e6, 1),
                "unregister_seconds": round(unregister_s, 2),
                "bytes_per_conn_by_node": [round(x) for x in per_conn],
                "connect_errors": r.get("connect_errors")}
    finally:
        c.stop()


# ---- MySQL's registration churn ----

def churn(rows=20000, batch=64, procs=2, galera=False):
    """online_clients writes as gateways make them (bench/churn_bench.c):
    rows registered in multi-row statements of batch rows by procs task
    workers of as many nodes, then deleted batch rows a statement (batch 1:
    one a statement, as gateways did before they batched closes), on one
    MariaDB or on a 3-node Galera cluster (every write to its first node,
    as mysql_hosts does; the others apply them).  Rows per second of each
    phase and the database's CPU per row (Galera: all three nodes)."""
    from fixture import GaleraCluster, Stack
    if galera and GaleraCluster.unavailable():
        return {"skipped": GaleraCluster.unavailable()}
    with (GaleraCluster() if galera else Stack()) as db:
        pids = ([n["proc"].pid for n in db.nodes] if galera else [db.mysql_pid])
        env = dict(os.environ, **db.env())
        cpu0 = cpu_seconds(pids)
        out = subprocess.run([os.path.join(BIN, "churn_bench"), str(rows), str(batch), str(procs)],
                             env=env, capture_output=True, text=True, timeout=300)
        cpu1 = cpu_seconds(pids)
    phases = {}
    for m in re.finditer(r"churn: (\w+) (\d+) rows in ([\d.]+) s = (\d+) rows/s", out.stdout):
        phases[m.group(1)] = {"rows": int(m.group(2)), "seconds": float(m.group(3)),
                              "rows_per_s": int(m.group(4))}
    if len(phases) != 2:
        raise RuntimeError("churn_bench: %s%s" % (out.stdout, out.stderr))
    done = phases["register"]["rows"] + phases["unregister"]["rows"]
    return {"engine": "galera-3" if galera else "mariadb", "batch": batch, "procs": procs,
            "register": phases["register"], "unregister": phases["unregister"],
            "db_cpu_us_per_row": round((cpu1 - cpu0) / max(1, done) * 1e6, 1)}


# ---- S2: targeted push ----

def s2_push(messages, users, rate, pace_us=10000):
    """CPU is taken from the moment every browser is registered to the one
    the last order is acknowledged, so neither the 10,000 connects nor the
    disconnects (and their unregistering) count toward the orders."""
    c = Cluster(nodes=2, consumers=1)
    try:
        b = connect(c, [g.url for g in c.gateways], users, c.logdir, expect=messages,
                    hold=messages / max(rate, 5000) + 120, per_proc=client_per_proc(users))
        b.wait_ready(120)
        cpu0, receivers0, tools0 = c.cpu(), cpu_seconds(tree_pids(b.proc.pid)), children_cpu()
        roles0 = c.gateway_cpu_by_role()
        p = publish(c, messages, users, rate, c.logdir, pace_us=pace_us)
        pub = p.report(messages / max(rate, 5000) + 60)
        publisher = children_cpu() - tools0
        wait_acked(c, messages, messages / max(rate, 5000) + 60)
        cpu, roles = cpu_delta(cpu0, c.cpu()), cpu_delta(roles0, c.gateway_cpu_by_role())
        cpu["bench_tools"] = round(cpu_seconds(tree_pids(b.proc.pid)) - receivers0 + publisher, 2)
        r = b.report(messages / max(rate, 5000) + 120)
        return {"messages": messages, "users": users, "rate": rate, "pace_us": pace_us,
                "client_processes": CLIENT_PROCS, "published_per_s": pub.get("rate"),
                # orders whose batch the last one's replies held back: their
                # latency counts from when they were due (publish.c)
                "publisher_late_orders": pub.get("late_orders"), "delivered": r.get("delivered"),
                "missing": r.get("missing"), "duplicates": r.get("duplicates"),
                "delivered_per_s": r.get("delivered_per_s"), "latency_ms": r.get("latency_ms"),
                "cpu_seconds": cpu,
                # what one message costs the system (not the bench tools), in CPU
                "server_cpu_us_per_msg": round(sum(v for k, v in cpu.items() if k != "bench_tools")
                                               / messages * 1e6, 1),
                "gateway_cpu_us_per_msg": round(cpu["gateways"] / messages * 1e6, 1),
                # each component's: the daemons, MariaDB and Redis apart
                "cpu_us_per_msg": {k: round(v / messages * 1e6, 1) for k, v in cpu.items()},
                "gateway_cpu_us_per_msg_by_role": {k: round(v / messages * 1e6, 1)
                                                   for k, v in roles.items()},
                "bench_tools_cpu_us_per_msg": round(cpu["bench_tools"] / messages * 1e6, 1)}
    finally:
        c.stop()


# ---- where a steady stream's CPU goes: wake-ups per order, by process ----

def thread_counters(pid):
    """(voluntary context switches, CPU ticks) summed over pid's threads."""
    switches = ticks = 0
    for task in os.listdir("/proc/%d/task" % pid) if os.path.isdir("/proc/%d" % pid) else []:
        try:
            with open("/proc/%d/task/%s/status" % (pid, task)) as f:
                status = f.read()
            with open("/proc/%d/task/%s/stat" % (pid, task)) as f:
                stat = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        switches += int(status.split("voluntary_ctxt_switches:")[1].split()[0])
        ticks += int(stat[11]) + int(stat[12])
    return switches, ticks


def role_counters(c):
    """{"gateway master": [switches, ticks], ...} over every daemon's processes."""
    out = {}
    for d in c.daemons:
        for pid in d.pids():
            key = "%s %s" % (d.name.split("-")[0], role_of(pid))
            acc = out.setdefault(key, [0, 0])
            for i, v in enumerate(thread_counters(pid)):
                acc[i] += v
    return out


def s2_wakeups(messages, users, rate, window_s=10):
    """S2's load at a steady rate (1 ms pace); over window_s in its middle,
    each process role's wake-ups (voluntary context switches: a sleep in
    epoll_wait that a message ended) and CPU per order.  At a steady rate
    every process of the path wakes about once a pace, so what an order
    costs follows from how many processes it crosses."""
    c = Cluster(nodes=2, consumers=1)
    try:
        b = connect(c, [g.url for g in c.gateways], users, c.logdir, expect=messages,
                    hold=messages / rate + 120)
        b.wait_ready(120)
        p = publish(c, messages, users, rate, c.logdir, pace_us=1000)
        time.sleep(min(4, messages / rate / 4))
        before = role_counters(c)
        time.sleep(window_s)
        after = role_counters(c)
        orders = rate * window_s
        roles = {}
        for key, (switches, ticks) in after.items():
            s0, t0 = before.get(key, [0, 0])
            if ticks - t0 > 0 or switches - s0 > 0:
                roles[key] = {"wakeups_per_order": round((switches - s0) / orders, 3),
                              "cpu_us_per_order": round((ticks - t0) / CLK_TCK * 1e6 / orders, 1)}
        p.report(messages / rate + 60)
        wait_acked(c, messages, 60)
        r = b.report(120)
        return {"rate": rate, "window_s": window_s, "roles": roles, "missing": r.get("missing"),
                "wakeups_per_order": round(sum(v["wakeups_per_order"] for v in roles.values()), 2),
                "cpu_us_per_order": round(sum(v["cpu_us_per_order"] for v in roles.values()), 1)}
    finally:
        c.stop()


# ---- S3: a slow reader among normal ones ----

def jwt_for(uuid, ttl=3600):
    import base64
    import hashlib
    import hmac
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    head = enc(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = enc(json.dumps({"sub": uuid, "exp": int(time.time()) + ttl}).encode())
    sig = enc(hmac.new(SECRET.encode(), ("%s.%s" % (head, body)).encode(), hashlib.sha256).digest())
    return "%s.%s.%s" % (head, body, sig)


class SlowReader:
    """A browser that completes the handshake, then never reads again."""

    def __init__(self, port, uuid):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((HOST, port))
        self.sock.sendall(("GET /ws?token=%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n" % (jwt_for(uuid), HOST, port)).encode())
        head = b""
        self.sock.settimeout(10)
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise RuntimeError("slow reader: closed during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError("slow reader: %r" % head)

    def closed_by_server(self, timeout=30):
        """Reads what is buffered until EOF or a reset: True when the server closed."""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(1)
        while time.monotonic() < deadline:
            try:
                if not self.sock.recv(1 << 20):
                    return True
            except socket.timeout:
                continue
            except ConnectionResetError:
                return True
        return False

    def close(self):
        self.sock.close()


def stored_count(c, uuid):
    with c.stack.mysql() as db, db.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM offline_messages WHERE uuid = %s", (uuid,))
        return cur.fetchone()[0]


def _others_run(c, g, users, messages, rate, tag, slow=None):
    """users receivers; messages to them at rate, while slow (if any) gets
    its own flood.  Returns (receiver report, gateway PSS growth, the same
    by process role): the sum over the gateway's processes of each one's
    peak while the orders flow minus its PSS just before (the receivers
    connected), so the heap each process kept or gave back before this run
    does not count."""
    b = connect(c, [g.url], users, c.logdir, name="connect-" + tag, expect=messages,
                hold=messages / rate + 60)
    b.wait_ready(60)
    flood = None
    if slow:
        # as fast as the others' orders: the stream is FIFO, so a faster
        # flood would measure queueing behind it, not the slow reader
        flood = publish(c, slow["messages"], 1, rate, c.logdir, name="flood-" + tag,
                        prefix=slow["prefix"], seed=2, infos_len=slow["infos_len"])
    before = {pid: pss_bytes([pid]) for pid in g.pids()}
    p = publish(c, messages, users, rate, c.logdir, name="publish-" + tag)
    peaks = dict(before)
    while p.proc.poll() is None or (flood and flood.proc.poll() is None):
        for pid in g.pids():
            peaks[pid] = max(peaks.get(pid, 0), pss_bytes([pid]))
        time.sleep(0.2)
    p.report(30)
    if flood:
        flood.report(30)
    by_role = {}
    for pid, peak in peaks.items():
        role = role_of(pid)
        by_role[role] = by_role.get(role, 0) + peak - before.get(pid, 0)
    return b.report(messages / rate + 60), sum(peaks.values()) - sum(before.values()), by_role


def s3_slow_reader(slow_messages=20000, users=1000, rate=2000, infos_len=400):
    """The slow reader's orders are big (infos_len) so that they overflow
    the kernel's socket buffers and then buffer_output_size (2M).  A
    control run sends the same flood to a browser that reads and ACKs, so
    the others' p99 and the gateway's memory growth can be set against the
    same load without a slow reader too.  The slow reader's whole backlog
    is to be stored, so its inbox has no cap (max_offline_per_uuid, 10,000
    by default, would refuse the second half)."""
    c = Cluster(nodes=1, consumers=1, gateway=dict(max_offline_per_uuid=0))
    try:
        g = c.gateways[0]
        messages = slow_messages // 2
        flood = {"messages": slow_messages, "infos_len": infos_len}
        base, base_growth, _ = _others_run(c, g, users, messages, rate, "baseline")
        healthy = connect(c, [g.url], 1, c.logdir, name="healthy", expect=slow_messages,
                          hold=slow_messages / rate + 60, prefix="healthy-user-")
        healthy.wait_ready(30)
        control, control_growth, _ = _others_run(c, g, users, messages, rate, "control",
                                              slow=dict(flood, prefix="healthy-user-"))
        healthy_report = healthy.report(slow_messages / rate + 60)
        slow_uuid = "slow-user-0"
        slow = SlowReader(g.port, slow_uuid)
        time.sleep(0.5)
        loaded, growth, growth_by_role = _others_run(c, g, users, messages, rate, "loaded",
                                     slow=dict(flood, prefix="slow-user-"))
        closed = slow.closed_by_server()
        slow.close()
        deadline = time.monotonic() + 60
        while stored_count(c, slow_uuid) < slow_messages and time.monotonic() < deadline:
            time.sleep(0.5)
        p99 = lambda r: max(r["latency_ms"]["p99"], 0.001)  # noqa: E731
        return {"slow_messages": slow_messages, "slow_closed": closed,
                "slow_tasks": slow_tasks(g),
                "slow_stored": stored_count(c, slow_uuid),
                "gateway_pss_growth": growth, "buffer_output_size": 2 << 20,
                "gateway_pss_growth_by_role": growth_by_role,
                "gateway_pss_growth_baseline": base_growth,
                "gateway_pss_growth_healthy_flood": control_growth,
                "others_missing": loaded.get("missing"),
                "healthy_reader_missing": healthy_report.get("missing"),
                "others_p99_ms_baseline": base["latency_ms"]["p99"],
                "others_p99_ms_healthy_flood": control["latency_ms"]["p99"],
                "others_p99_ms_with_slow": loaded["latency_ms"]["p99"],
                "p99_ratio": p99(loaded) / p99(base),
                "p99_ratio_vs_healthy": p99(loaded) / p99(control)}
    finally:
        c.stop()


class FloodingTab:
    """A signed-in tab that sends HEART_BEATs as fast as the socket takes
    them, reading what comes back, and (reconnect) connects again each time
    the server closes it, until stopped: a hostile browser, not a slow one."""

    FRAME = None

    def __init__(self, port, uuid, reconnect=True):
        self.port, self.uuid, self.reconnect = port, uuid, reconnect
        self.sent = self.closes = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @classmethod
    def frame(cls):
        if cls.FRAME is None:
            payload, mask = b'{"event":"HEART_BEAT"}', b"\x01\x02\x03\x04"
            cls.FRAME = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(
                b ^ mask[i % 4] for i, b in enumerate(payload))
        return cls.FRAME

    def _run(self):
        burst = self.frame() * 64
        while not self.stopping:
            try:
                tab = SlowReader(self.port, self.uuid)
            except (OSError, RuntimeError):
                time.sleep(0.05)
                continue
            tab.sock.setblocking(False)
            try:
                while not self.stopping:
                    try:
                        self.sent += tab.sock.send(burst) // len(self.frame())
                    except BlockingIOError:
                        pass
                    try:
                        if tab.sock.recv(1 << 16) == b"":
                            break
                    except BlockingIOError:
                        time.sleep(0.001)
            except OSError:
                pass
            self.closes += 1
            tab.close()
            if not self.reconnect:
                return

    def stop(self):
        self.stopping = True
        self.thread.join(10)


def s5_flooding_tab(users=1000, messages=10000, rate=2000, rounds=3, reconnect=True, **limits):
    """Others' latency on one node while a tab floods it with HEART_BEATs
    (and, with reconnect, connects again each time it is cut off), against
    the same load with no flood, in alternate rounds; limits: gateway
    settings (browser_rate=0 lets the flood through, to show what the limit
    saves)."""
    c = Cluster(nodes=1, consumers=1, gateway=limits)
    try:
        g = c.gateways[0]
        base, flooded, tabs = [], [], []
        for i in range(rounds):
            base.append(_others_run(c, g, users, messages, rate, "calm-%d" % i)[0])
            tab = FloodingTab(g.port, "flood-user-%d" % i, reconnect)
            flooded.append(_others_run(c, g, users, messages, rate, "flood-%d" % i)[0])
            tab.stop()
            tabs.append({"frames_sent": tab.sent, "closed": tab.closes})
        p99 = lambda r: max(r["latency_ms"]["p99"], 0.001)  # noqa: E731
        med = lambda runs: sorted(p99(r) for r in runs)[len(runs) // 2]  # noqa: E731
        return {"limits": limits, "rounds": rounds, "reconnect": reconnect, "tabs": tabs,
                "others_p99_ms_calm": [r["latency_ms"]["p99"] for r in base],
                "others_p99_ms_flooded": [r["latency_ms"]["p99"] for r in flooded],
                "others_p50_ms_calm": [r["latency_ms"]["p50"] for r in base],
                "others_p50_ms_flooded": [r["latency_ms"]["p50"] for r in flooded],
                "others_missing": sum(r.get("missing") or 0 for r in base + flooded),
                "p99_ratio": med(flooded) / med(base)}
    finally:
        c.stop()


def slow_tasks(g):
    """The task workers' "slow task" log lines (tasks.c): which task worker
    was held up, by what and how long; a stall of MariaDB shows on both at
    once unless only one of them writes."""
    found = re.findall(r"\] (task \d+) \(pid \d+\): slow task: (\w+) of \d+ bytes took (\d+) ms",
                       g.log())
    return ["%s %s %s ms" % f for f in found]


# ---- S4: reconnect storm ----

def s4_storm(clients=10000, messages=20000, rate=5000):
    c = Cluster(nodes=2, consumers=1)
    try:
        a, b_node = c.gateways
        b = connect(c, [a.url, b_node.url], clients, c.logdir, expect=messages, home_urls=1,
                    reconnect=True, hold=messages / rate + 120)
        b.wait_ready(60)
        p = publish(c, messages, clients, rate, c.logdir)
        time.sleep(1)
        t0 = time.monotonic()
        a.signal(signal.SIGTERM)
        a.proc.wait(60)
        drained = time.monotonic() - t0
        p.report(messages / rate + 60)
        r = b.report(messages / rate + 120)
        with c.stack.mysql() as db, db.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM offline_messages")
            stored = cur.fetchone()[0]
        return {"clients": clients, "messages": messages, "rate": rate,
                "left_in_offline_messages": stored, "missing_sample": r.get("missing_sample"),
                "node_stop_seconds": round(drained, 2),
                "reconnect_seconds": r.get("reconnect_seconds"),
                "reconnected": r.get("reconnects"), "delivered": r.get("delivered"),
                "missing": r.get("missing"), "duplicates": r.get("duplicates"),
                "closes": r.get("closes")}
    finally:
        c.stop()

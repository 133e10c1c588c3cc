"""The fault harness: the whole system (gateways A and B, pushgate-proxy,
pushgate-consumer, MariaDB, Redis) under a stream of work orders, one part
of it failed for a while, and every order counted by id.

One run (Run.execute):

1. a fresh Cluster (tests/e2e/stack_util.py) on the session's MariaDB and
   Redis (emptied first); 200 browsers (FaultTab), half on A and half on B,
   that behave like gateway/www/pushgate.js: on any close (not 4001) they
   move to the next node after 0.5 s doubling to 15 s, with jitter;
2. a producer XADDs the work orders at a fixed rate with stream ids of its
   own, so that a chunk whose answer was lost (Redis down) can be sent
   again without publishing anything twice;
3. 3 s into publishing, the fault (FAULTS); its end is when the failed part
   is back (respawned, restarted, relinked);
4. the live phase: until every order has arrived, or the system is idle
   (nothing pending in the consumer group, nothing arriving) at least 10 s
   after the end of the fault and of publishing (hard limit 60 s after);
5. what is where then: the consumer group's pending entries, the
   dead-letter stream, offline_messages;
6. the forced phase: every browser still missing an order is closed and
   connected again by the harness (a forced reconnect), to fetch what was
   stored for it; then, once the consumer group is empty (at most 90 s),
   what is where at the end.

The short variant keeps those limits short (12 s, 8 s, 5 s).  A run's
table (run_table) and the session's summary (summary_table) are printed by
conftest.py; result.json of every run, and the daemons' logs of a run that
failed, are kept in build/faults/ (artifacts_dir).

Per order: published (Redis confirmed the XADD), every receipt (which
browser, which connection - one WebSocket session of one node - and
when), duplicates on one connection and across reconnects, dead-lettered,
pending, stored and not delivered, whether it arrived without a reconnect
of its browser, and how long after the end of the fault.

Browser behaviours (BEHAVIOURS): "ack-now" ACKs every order at once;
"ack-300ms-stall" ACKs each 300 ms after reading it, and two browsers (the
first of A and the first of B) stop reading for 2 s, from 1 s before the
fault to 1 s after.

Every wait is bounded; only processes the harness started are signalled,
by pid; only loopback addresses are used."""
import asyncio
import collections
import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import redis as redis_mod
import websockets

HERE = os.path.dirname(os.path.abspath(__file__))
E2E = os.path.join(os.path.dirname(HERE), "e2e")
if E2E not in sys.path:
    sys.path.insert(0, E2E)

from engine_util import HOST, SANITIZER_MARKS, alive  # noqa: E402
from gateway_util import db_exec, db_rows  # noqa: E402
from stack_util import (APP_TOKEN, GROUP, RUN, STREAM, Cluster, Fleet, Orders,  # noqa: E402
                        Producer, Tab, order_json, pending, token_for)

DEAD_STREAM = STREAM + ":dead"      # consumer/acks.c: dead_letter_stream's default
FAULT_AT = 3.0                      # seconds into publishing
DEADLINE_AFTER_FAULT = 10.0         # every order must have arrived by then
HARD_LIMIT_AFTER_FAULT = 60.0       # the live phase ends then whatever happens
FORCED_LIMIT = 20.0                 # for what a forced reconnect brings
QUIET = 3.0                         # seconds with nothing arriving: the system is idle
DRAIN_LIMIT = 90.0                  # at the end, for the consumer group to empty
STALL_SECONDS = 2.0
ACK_DELAY_SLOW = 0.3
# Consumers claim entries a dead consumer left pending after 2 s idle (the
# default, 30 s, would make every consumer kill a late arrival by design).
CONSUMER_SETTINGS = {"claim_min_idle_ms": 2000}

RESULTS = []                        # one dict per run, for the session's summary
_runs = [0]


def log(text):
    print("[faults] " + text, flush=True)


# ---- browsers ----

class FaultTab(Tab):
    """A browser as gateway/www/pushgate.js is: on any close but 4001 it
    moves to the next node of `ports` after a backoff (0.5 s doubling to
    15 s, plus up to half of it as jitter), for at most RECONNECT_BUDGET
    seconds; once the WebSocket is open it takes (and ACKs) whatever comes,
    ONLINE or not, as pushgate.js does.  stall() stops reading for a while
    (the socket too, so the node sees a browser that does not read).

    Every connection attempt is numbered (conns: port, when it was opened,
    its ONLINE data); a receipt names its connection, one WebSocket session
    of one node.  Connections from forced_conn on were opened by the
    harness (a forced reconnect)."""

    RECONNECT_BUDGET = 240.0

    def __init__(self, fleet, uuid, port, fallback=None, ack_delay=0, ports=()):
        super().__init__(fleet, uuid, port, fallback, ack_delay)
        self.ports = list(ports) or [port]
        self.node = self.ports.index(port) if port in self.ports else 0
        self.reading = None         # asyncio.Event, made in the fleet's loop
        self.conns = []             # {"port", "t_open", "online", "t_online"}
        self.cur = -1               # the connection messages come on
        self.before_online = 0      # work orders that came before ONLINE
        self.bad_online = []        # ONLINE naming another uuid
        self.forced_conn = None
        self.stalls = []            # (start, end) of each stall
        self.rnd = random.Random(uuid)

    async def open(self, online_timeout=10):
        """Connects and waits for ONLINE (a browser that opens the page:
        the run starts with every browser registered)."""
        if self.reading is None:
            self.reading = asyncio.Event()
            self.reading.set()
        await super().open()
        conn = self.conns[-1]
        deadline = time.monotonic() + online_timeout
        while conn["online"] is None:
            if time.monotonic() > deadline or self.task.done():
                raise AssertionError("%s: no ONLINE from %d within %s s" % (
                    self.uuid, conn["port"], online_timeout))
            await asyncio.sleep(0.01)
        return self

    async def _connect(self):
        """The WebSocket only: as in pushgate.js, messages are taken from
        the start, and ONLINE is noted whenever it comes."""
        conn = {"port": self.port, "t_open": time.monotonic(), "online": None, "t_online": None}
        self.conns.append(conn)
        url = "ws://%s:%d/ws?token=%s" % (HOST, self.port, token_for(self.uuid))
        ws = await websockets.connect(url, open_timeout=10, close_timeout=2, ping_interval=None,
                                      max_queue=None, max_size=None)
        conn["opened"] = True
        self.cur = len(self.conns) - 1
        self.ws = ws
        self.connected = True

    async def _on_message(self, ws, m):
        if not self.reading.is_set():
            await self.reading.wait()
        conn = self.conns[self.cur]
        if m.get("event") == "ONLINE":
            if m["data"].get("uuid") != self.uuid:
                self.bad_online.append(m)
            conn["online"], conn["t_online"] = m["data"], time.monotonic()
            self.onlines.append((conn["port"], m["data"]))
            self.online_times.append(conn["t_online"])
            return
        if m.get("event") != "WorksheetMsg":
            return
        if conn["online"] is None:
            self.before_online += 1
        self.got.append((m["response"].get("marker"), m["id"]))
        self.receipts.append((m["response"].get("marker"), m["id"], time.monotonic(), self.cur))
        if self.ack_delay:
            asyncio.get_running_loop().call_later(
                self.ack_delay, lambda ws=ws, i=m["id"]: asyncio.ensure_future(self._ack(ws, i)))
        else:
            await self._ack(ws, m["id"])

    async def _reconnect(self, code):
        if code == 4001:
            return False
        backoff = 0.5
        deadline = time.monotonic() + self.RECONNECT_BUDGET
        while not self.stopping and time.monotonic() < deadline:
            self.node += 1
            self.port = self.ports[self.node % len(self.ports)]
            await asyncio.sleep(backoff + self.rnd.random() * backoff * 0.5)
            backoff = min(backoff * 2, 15.0)
            if self.stopping:
                return False
            try:
                await self._connect()
                return True
            except Exception as e:  # noqa: BLE001 - recorded, retried
                self.errors.append((time.monotonic(), self.port, repr(e)[:200]))
        return False

    async def stall(self, seconds):
        """Stops reading (and taking messages off the socket) for seconds."""
        self.reading.clear()
        t0 = time.monotonic()
        transport = getattr(self.ws, "transport", None)
        try:
            transport.pause_reading()
        except Exception:  # noqa: BLE001 - closed meanwhile: nothing to pause
            transport = None
        try:
            await asyncio.sleep(seconds)
        finally:
            if transport is not None:
                try:
                    transport.resume_reading()
                except Exception:  # noqa: BLE001
                    pass
            self.reading.set()
            self.stalls.append((t0, time.monotonic()))

    def conn_at(self, t):
        """The number of the connection opened last at or before time t
        (-1: none yet)."""
        n = -1
        for i, c in enumerate(list(self.conns)):
            if c["t_open"] <= t:
                n = i
        return n


# ---- work orders with ids of the producer's own ----

class FaultOrders(Orders):
    """Orders XADDed with explicit, increasing stream ids.  A chunk whose
    answer did not come (Redis down) is sent again with the same ids: an
    entry Redis already has answers "equal or smaller than the target
    stream top item" and counts as published, so nothing is published
    twice, and nothing is counted as published that Redis did not
    confirm.  Retries go on for retry_for seconds."""

    def __init__(self, tag, retry_for=120.0):
        super().__init__(tag)
        self.retry_for = retry_for
        self.retries = 0
        self.replayed = 0           # entries found already there at a retry
        self.errors = collections.Counter()
        self._last = (0, -1)

    def _next_id(self):
        ms = int(time.time() * 1000)
        last_ms, last_seq = self._last
        if ms <= last_ms:
            ms, seq = last_ms, last_seq + 1
        else:
            seq = 0
        self._last = (ms, seq)
        return "%d-%d" % (ms, seq)

    def publish(self, r, targets, chunk=1000):
        made = self.make(targets)
        unconfirmed = [(m, u, self._next_id()) for m, u in made]
        t_first = time.monotonic()
        deadline = t_first + self.retry_for
        attempt = 0
        while unconfirmed:
            attempt += 1
            try:
                pipe = r.pipeline(transaction=False)
                for m, u, i in unconfirmed:
                    pipe.xadd(STREAM, {"msg": order_json(u, m)}, id=i)
                res = pipe.execute(raise_on_error=False)
            except (redis_mod.exceptions.ConnectionError, redis_mod.exceptions.TimeoutError) as e:
                self.retries += 1
                self.errors[type(e).__name__] += 1
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
                continue
            now = time.monotonic()
            left = []
            with self.lock:
                for (m, u, i), x in zip(unconfirmed, res):
                    if isinstance(x, Exception):
                        if attempt > 1 and "equal or smaller" in str(x):
                            self.id_of[m] = i       # an earlier attempt got it in
                            self.t_pub[m] = t_first
                            self.replayed += 1
                        else:
                            self.errors[str(x)[:80]] += 1
                            left.append((m, u, i))
                    else:
                        self.id_of[m] = x
                        self.t_pub[m] = now
            unconfirmed = left
            if unconfirmed:
                if time.monotonic() > deadline:
                    raise RuntimeError("XADD refused: %s" % dict(self.errors))
                time.sleep(0.1)
        return [m for m, _ in made]


# ---- processes ----

def freeze_tree(server):
    """SIGSTOP of every process of an engine server (master, manager,
    workers, task workers), so that none sees another stop and reacts.
    Only pids this harness started (recorded with their start times)."""
    frozen = []
    for _ in range(5):
        server.snapshot()
        new = [p for p, t in server.recorded.items() if p not in frozen and alive(p, t)]
        if not new:
            break
        for p in new:
            try:
                os.kill(p, signal.SIGSTOP)
            except ProcessLookupError:
                pass
            frozen.append(p)
    return frozen


def kill_tree(server):
    """kill -9 of every process of an engine server at once, as a host
    that dies: all are frozen first, then killed."""
    frozen = freeze_tree(server)
    for p in frozen:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.expected_exit = None
    server.killed(timeout=15)
    left = server.left_behind(10)
    assert not left, "processes of %s alive after kill -9: %s" % (server.name, left)
    return frozen


SS_UNSUPPORTED = None       # set once: why ss -K does not work here


def destroy_sockets(ports):
    """ss -K of every loopback TCP socket to or from ports, as a dead host's
    peers would find them (no FIN, no RST from it any more).  Returns
    (destroyed, left, note)."""
    global SS_UNSUPPORTED
    if SS_UNSUPPORTED:
        return 0, 0, SS_UNSUPPORTED
    expr = "src %s and dst %s and ( %s )" % (HOST, HOST, " or ".join(
        "sport = :%d or dport = :%d" % (p, p) for p in ports))

    def ss(*extra):
        r = subprocess.run(["ss"] + list(extra) + ["-tan", expr], capture_output=True,
                           text=True, timeout=10)
        rows = [ln for ln in r.stdout.splitlines()[1:] if ln.strip()]
        return r, rows
    try:
        before_r, before = ss()
        r, killed = ss("-K")
        _, after = ss()
    except (OSError, subprocess.SubprocessError) as e:
        SS_UNSUPPORTED = "ss -K could not run (%s): sockets left to the kernel" % e
        return 0, 0, SS_UNSUPPORTED
    left = [ln for ln in after if not ln.startswith("TIME-WAIT")]
    note = "ss -K: %d sockets destroyed, %d left (%d in TIME-WAIT)" % (
        len(killed), len(left), len(after) - len(left))
    if r.returncode != 0 or "not supported" in (r.stderr or "").lower() or \
            (before and not killed and left):
        SS_UNSUPPORTED = ("ss -K does not work on this kernel (rc %d: %s): sockets left to "
                          "the kernel" % (r.returncode, (r.stderr or "").strip()[:120]))
        return 0, len(left), SS_UNSUPPORTED
    return len(killed), len(left), note


def daemon_log_summary(text, top=8):
    """The ERROR and WARN lines of a log ("... [ERROR] role (pid N): what"),
    grouped with numbers blanked, errors first."""
    groups = collections.Counter()
    for ln in text.splitlines():
        m = re.search(r"\[(ERROR|WARN)\] (.*)$", ln)
        if m:
            what = re.sub(r"\(pid \d+\)", "", m.group(2))
            what = re.sub(r"[0-9a-f]{8,}|\d+", "N", what)
            what = re.sub(r"f[0-9a-f]{8}N-N|o[0-9a-f]{8}N-[0-9a-f]{8}-N", "ID", what)[:170]
            groups["%s %s" % (m.group(1), what)] += 1
    return sorted(groups.items(), key=lambda kv: (not kv[0].startswith("ERROR"), -kv[1]))[:top]


# ---- the faults ----

class Ctx:
    """What a fault needs: the cluster, the stack, and a place for notes."""

    def __init__(self, cluster, stack):
        self.c = cluster
        self.stack = stack
        self.notes = []

    def note(self, text):
        self.notes.append(text)
        log(text)


def _respawned(server, role, old_pid, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = server.workers().get(role)
        if pid and pid != old_pid:
            return pid
        time.sleep(0.02)
    raise AssertionError("%s of %s was not respawned within %d s" % (role, server.name, timeout))


def fault_worker(ctx, role="worker 0"):
    g = ctx.c.a
    pid = g.workers()[role]
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    new = _respawned(g, role, pid)
    t1 = time.monotonic()
    ctx.note("kill -9 of A's %s (pid %d); respawned as pid %d after %.2f s" % (
        role, pid, new, t1 - t0))
    return t0, t1


def fault_task_worker(ctx):
    # with two task workers, task 1 does the stores and each session's
    # registrations and ACKs, and takes routes too (task 0 only routes)
    return fault_worker(ctx, "task 1")


def fault_consumer(ctx):
    c = ctx.c
    old = c.consumer
    t0 = time.monotonic()
    old.kill()
    held = pending(ctx.stack.redis())
    c.consumer = c.start_consumer("c%d" % (len(c.consumers) + 1))
    t1 = time.monotonic()
    ctx.note("kill -9 of the consumer %s (%s entries pending); %s started and found both "
             "gateways after %.2f s" % (old.name, held, c.consumer.name, t1 - t0))
    return t0, t1


def fault_proxy(ctx):
    c = ctx.c
    links = [c.proxy_links(c.a), c.proxy_links(c.b)]
    t0 = time.monotonic()
    pids = kill_tree(c.proxy)
    ctx.note("kill -9 of the proxy's %d processes" % len(pids))
    time.sleep(max(0.0, t0 + 2.0 - time.monotonic()))
    c.proxy = c.start_proxy()
    t1 = time.monotonic()
    ctx.note("proxy started again after %.2f s" % (t1 - t0))
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(
                c.proxy_links(g) > n for g, n in zip((c.a, c.b), links)):
            time.sleep(0.05)
        ctx.note("gateways relinked to the proxy %.2f s after its start (A %d, B %d new links)" % (
            time.monotonic() - t1, c.proxy_links(c.a) - links[0], c.proxy_links(c.b) - links[1]))
    except Exception as e:  # noqa: BLE001 - noted, the run goes on
        ctx.note("relink check failed: %r" % e)
    return t0, t1


def fault_proxy_worker(ctx):
    """kill -9 of the proxy's worker 0 alone.  With its 2 workers the proxy
    has them hold the gateways' links (workers_accept = auto), so the links
    it served close with it; with PG_TEST_PROXY_SET=workers_accept=false the
    reactor holds them and they stay up."""
    c = ctx.c
    links = [c.proxy_links(c.a), c.proxy_links(c.b)]
    t0 = time.monotonic()
    pid = c.proxy.workers()["worker 0"]
    os.kill(pid, signal.SIGKILL)
    new = _respawned(c.proxy, "worker 0", pid)
    t1 = time.monotonic()
    ctx.note("kill -9 of the proxy's worker 0 (pid %d); respawned as pid %d after %.2f s" % (
        pid, new, t1 - t0))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and sum(c.proxy_links(g) for g in (c.a, c.b)) <= sum(links):
        time.sleep(0.05)
    ctx.note("gateways relinked %.2f s after the kill (A %d, B %d new links)" % (
        time.monotonic() - t0, c.proxy_links(c.a) - links[0], c.proxy_links(c.b) - links[1]))
    return t0, t1


def fault_gateway(ctx):
    c = ctx.c
    old = c.a
    t0 = time.monotonic()
    pids = kill_tree(old)
    t_dead = time.monotonic()
    destroyed, left, note = destroy_sockets([old.port, old.internal_port])
    ctx.note("kill -9 of gateway A's %d processes (%.3f s); %s" % (len(pids), t_dead - t0, note))
    time.sleep(max(0.0, t0 + 3.0 - time.monotonic()))
    c.a = c.start_gateway(port=old.port, internal_port=old.internal_port)
    t1 = time.monotonic()
    ctx.note("gateway A started again on the same ports after %.2f s" % (t1 - t0))
    return t0, t1


def thaw(pids):
    for p in pids:
        try:
            os.kill(p, signal.SIGCONT)
        except ProcessLookupError:
            pass


def stop_part(ctx, what):
    """SIGSTOP of a part (see fault_freeze); returns what was stopped, for
    the notes, and the call that lets it go on."""
    c, stack = ctx.c, ctx.stack
    if what in ("redis", "mysql"):
        freeze = getattr(stack, "freeze_" + what)
        freeze(True)
        return what, lambda: freeze(False)
    if what in ("gateway", "proxy"):
        pids = freeze_tree(c.a if what == "gateway" else c.proxy)
    else:   # one process: A's worker 0, or the consumer
        pids = [c.a.workers()["worker 0"] if what == "worker" else c.consumer.proc.pid]
        os.kill(pids[0], signal.SIGSTOP)
    return "%s's %d process(es)" % (what, len(pids)), lambda: thaw(pids)


def fault_freeze(what, seconds):
    """A part stopped (SIGSTOP) for a while, then let go on (SIGCONT): a
    part that hangs instead of dying (a paused virtual machine, a stalled
    disk), whose sockets stay open and answer nothing.  what: "gateway"
    (every process of A), "worker" (A's worker 0 alone), "proxy",
    "consumer" (beside a second one, started first, which takes over its
    entries), "redis" or "mysql"."""
    def fault(ctx):
        if what == "consumer":
            peer = ctx.c.start_consumer("c%d" % (len(ctx.c.consumers) + 1))
            ctx.note("a second consumer %s started beside %s" % (peer.name, ctx.c.consumer.name))
        t0 = time.monotonic()
        stopped, go_on = stop_part(ctx, what)
        ctx.note("%s stopped (SIGSTOP)" % stopped)
        time.sleep(max(0.0, t0 + seconds - time.monotonic()))
        go_on()
        t1 = time.monotonic()
        ctx.note("%s let go on (SIGCONT) after %.1f s" % (what, t1 - t0))
        return t0, t1
    return fault


def fault_mysql(seconds):
    def fault(ctx):
        t0 = time.monotonic()
        ctx.stack.stop_mysql()
        t_down = time.monotonic()
        ctx.note("MariaDB stopped (SIGTERM) in %.2f s" % (t_down - t0))
        time.sleep(max(0.0, t_down + seconds - time.monotonic()))
        ctx.stack.start_mysql()
        t1 = time.monotonic()
        ctx.note("MariaDB started again after %.1f s down (answering %.2f s after the start)" % (
            t1 - t_down, t1 - t_down - seconds))
        return t0, t1
    return fault


def fault_redis(how):
    def fault(ctx):
        t0 = time.monotonic()
        ctx.stack.restart_redis(how)
        t1 = time.monotonic()
        ctx.note("Redis restarted (%s, AOF everysec), answering again after %.2f s" % (
            how, t1 - t0))
        return t0, t1
    return fault


FAULTS = {
    "worker": fault_worker,
    "task-worker": fault_task_worker,
    "consumer": fault_consumer,
    "proxy": fault_proxy,
    "proxy-worker": fault_proxy_worker,
    "gateway": fault_gateway,
    "gateway-freeze-8s": fault_freeze("gateway", 8),
    "gateway-freeze-20s": fault_freeze("gateway", 20),
    "proxy-freeze-8s": fault_freeze("proxy", 8),
    "consumer-freeze-8s": fault_freeze("consumer", 8),
    "mysql-5s": fault_mysql(5),
    "mysql-60s": fault_mysql(60),
    "redis-aof-kill": fault_redis("kill"),
    "redis-aof-term": fault_redis("term"),
    "redis-freeze-5s": fault_freeze("redis", 5),
    "mysql-freeze-5s": fault_freeze("mysql", 5),
    "mysql-freeze-40s": fault_freeze("mysql", 40),
    "worker-freeze-8s": fault_freeze("worker", 8),
}

BEHAVIOURS = ("ack-now", "ack-300ms-stall")


# ---- the stack between runs ----

def reset_stack(stack):
    """Both servers up, the stream, its group and dead letters gone, and
    no row of an earlier run left in the tables the daemons read."""
    if stack.mysql_pid is None:
        stack.start_mysql()
    if stack.redis_pid is None:
        stack.start_redis()
    r = stack.redis()
    r.delete(STREAM, DEAD_STREAM)
    for table in ("offline_messages", "online_clients", "gateway_nodes"):
        db_exec(stack, "DELETE FROM %s" % table)
    stack.add_app(APP_TOKEN)


# ---- where the orders are ----

def pending_ids(r):
    try:
        out = set()
        start = "-"
        while True:
            rows = r.xpending_range(STREAM, GROUP, start, "+", 10000)
            out.update(e["message_id"] for e in rows)
            if len(rows) < 10000:
                return out
            start = "(" + rows[-1]["message_id"]
    except redis_mod.exceptions.RedisError:
        return None


def dead_letter_ids(r):
    """source_id -> reason of every entry in the dead-letter stream."""
    try:
        return {f.get("source_id"): f.get("reason") for _, f in r.xrange(DEAD_STREAM)}
    except redis_mod.exceptions.RedisError:
        return None


def stream_ids(r):
    try:
        out = set()
        start = "-"
        while True:
            rows = r.xrange(STREAM, start, "+", count=10000)
            out.update(i for i, _ in rows)
            if len(rows) < 10000:
                return out
            start = "(" + rows[-1][0]
    except redis_mod.exceptions.RedisError:
        return None


def stored_rows(stack, prefix):
    """msg_id -> (uuid, delivered_at) of offline_messages rows of prefix's users."""
    try:
        rows = db_rows(stack, "SELECT uuid, msg_id, delivered_at FROM offline_messages "
                              "WHERE uuid LIKE %s", (prefix + "%",))
    except Exception:  # noqa: BLE001 - MariaDB down: unknown
        return None
    return {m: (u, d) for u, m, d in rows}


class Where:
    """A snapshot of the consumer group, the dead letters, the store and
    the stream."""

    def __init__(self, stack, prefix):
        r = stack.redis()
        self.t = time.monotonic()
        self.pending = pending_ids(r)
        self.dead = dead_letter_ids(r)
        self.stored = stored_rows(stack, prefix)
        self.stream = stream_ids(r)


# ---- one run ----

class Run:
    """One scenario: the cluster, the browsers, the orders, the fault, and
    what became of every order (analyse)."""

    def __init__(self, stack, bin_dir, tmp_path, fault, behaviour, orders=10000, rate=1000,
                 browsers=200, variant="full", limits=None):
        _runs[0] += 1
        self.no = _runs[0]
        self.stack, self.bin_dir, self.tmp_path = stack, bin_dir, tmp_path
        self.fault, self.behaviour, self.variant = fault, behaviour, variant
        self.total, self.rate, self.n_browsers = orders, rate, browsers
        # how long the phases may go on past the 10 s deadline, to measure
        # how late what is late is (the short variant keeps them short)
        self.limits = dict(hard=HARD_LIMIT_AFTER_FAULT, forced=FORCED_LIMIT, drain=DRAIN_LIMIT)
        self.limits.update(limits or {})
        self.prefix = "f%s%02d-" % (RUN, self.no)
        self.users = ["%s%04d" % (self.prefix, i) for i in range(browsers)]
        self.tabs = []
        self.c = self.fleet = None
        self.notes = []
        self.daemon_problems = []   # ERROR/WARN lines of the daemons' logs, grouped
        self.teardown_errors = []   # unclean stops, sanitizer reports, processes left
        self.sanitizer_reports = 0
        self.result = None

    # -- the run

    def execute(self):
        t_run = time.monotonic()
        reset_stack(self.stack)
        try:
            self.c = Cluster(self.bin_dir, self.stack, self.tmp_path,
                             consumer_settings=CONSUMER_SETTINGS)
            self.fleet = Fleet()
            self._go()
        finally:
            t_down = time.monotonic()
            self._teardown()
        self.result["teardown_seconds"] = time.monotonic() - t_down
        self.result["run_seconds"] = time.monotonic() - t_run
        RESULTS.append(self.result)
        self._keep()
        return self.result

    def _go(self):
        c, stack = self.c, self.stack
        slow = self.behaviour != "ack-now"
        ack_delay = ACK_DELAY_SLOW if slow else 0
        half = self.n_browsers // 2
        pa, pb = c.a.port, c.b.port
        t0 = time.monotonic()
        self.tabs = (self.fleet.open(self.users[:half], pa, ack_delay=ack_delay, cls=FaultTab,
                                     ports=[pa, pb]) +
                     self.fleet.open(self.users[half:], pb, ack_delay=ack_delay, cls=FaultTab,
                                     ports=[pb, pa]))
        log("run %d %s/%s: %d browsers registered in %.1f s" % (
            self.no, self.fault, self.behaviour, len(self.tabs), time.monotonic() - t0))
        self.orders = FaultOrders("o%s%02d" % (RUN, self.no))
        producer = Producer(stack.redis(), self.orders, self.users, self.total, self.rate,
                            chunk=max(1, self.rate // 10), seed=self.no)
        producer.start()
        deadline = time.monotonic() + 10
        while producer.t0 is None and time.monotonic() < deadline:
            time.sleep(0.001)
        t_fault = producer.t0 + FAULT_AT
        stalled = []
        if slow:
            stalled = [self.tabs[0], self.tabs[half]]
            self._stall(stalled, t_fault - STALL_SECONDS / 2, STALL_SECONDS)
        time.sleep(max(0.0, t_fault - time.monotonic()))
        ctx = Ctx(c, stack)
        fault_error = None
        try:
            f_start, f_end = FAULTS[self.fault](ctx)
        except Exception as e:  # noqa: BLE001 - reported; the run is counted anyway
            fault_error = "%s: %s" % (type(e).__name__, e)
            f_start, f_end = t_fault, time.monotonic()
            ctx.note("the fault went wrong: %s" % fault_error)
        self.notes += ctx.notes
        producer.join(max(1.0, self.total / self.rate * 3 + 150))
        producer_error = repr(producer.error) if producer.error else (
            "still running" if producer.is_alive() else None)
        t_pub_end = producer.t_end or time.monotonic()

        # -- the live phase
        base = max(f_end, t_pub_end)
        soft, hard = base + DEADLINE_AFTER_FAULT, base + self.limits["hard"]
        r = stack.redis()
        last_n, last_change = -1, time.monotonic()
        while True:
            n, n_receipts = self._received()
            now = time.monotonic()
            if n_receipts != last_n:
                last_n, last_change = n_receipts, now
            if n >= len(self.orders.id_of) and not producer.is_alive():
                break
            if now >= hard:
                break
            if now >= soft and now - last_change >= QUIET and not producer.is_alive():
                try:
                    if not pending(r):
                        break
                except redis_mod.exceptions.RedisError:
                    pass
            time.sleep(0.25)
        t_live_end = time.monotonic()
        at_live_end = Where(stack, self.prefix)

        # -- the forced phase: browsers still missing orders reconnect
        missing_by_uuid = self._missing()
        forced = [t for t in self.tabs if missing_by_uuid.get(t.uuid)]
        if forced:
            for t in forced:
                t.forced_conn = len(t.conns)
            try:
                self.fleet.reopen(forced, None)
            except Exception as e:  # noqa: BLE001 - noted; what came is counted
                self.notes.append("forced reconnect failed for some browsers: %r" % e)
            deadline = time.monotonic() + self.limits["forced"]
            while time.monotonic() < deadline and self._missing():
                time.sleep(0.25)
        # what the consumer still holds settles (XACK, retry, dead letter)
        deadline = time.monotonic() + self.limits["drain"]
        while time.monotonic() < deadline:
            try:
                if not pending(r):
                    break
            except redis_mod.exceptions.RedisError:
                pass
            time.sleep(0.25)
        at_end = Where(stack, self.prefix)

        self.result = self.analyse(dict(
            f_start=f_start, f_end=f_end, t_fault=t_fault, t0=producer.t0,
            t_pub_end=t_pub_end, t_live_end=t_live_end, at_live_end=at_live_end,
            at_end=at_end, forced=forced, stalled=stalled, fault_error=fault_error,
            producer_error=producer_error))

    def _stall(self, tabs, at, seconds):
        """tabs stop reading at `at` (time.monotonic(), which is what the
        loop's time() is) for seconds."""
        async def schedule():
            loop = asyncio.get_running_loop()
            for t in tabs:
                loop.call_at(at, lambda t=t: asyncio.ensure_future(t.stall(seconds)))
        self.fleet.call(schedule())

    def _received(self):
        """(orders received by their user, receipts in all)."""
        uuid_of = self.orders.uuid_of
        have, n = set(), 0
        for t in self.tabs:
            got = list(t.got)
            n += len(got)
            for marker, _ in got:
                if uuid_of.get(marker) == t.uuid:
                    have.add(marker)
        return len(have & set(self.orders.id_of)), n

    def _missing(self):
        """uuid -> published markers its browser has not received."""
        uuid_of = self.orders.uuid_of
        have = set()
        for t in self.tabs:
            for marker, _ in list(t.got):
                if uuid_of.get(marker) == t.uuid:
                    have.add(marker)
        out = collections.defaultdict(list)
        for m in list(self.orders.id_of):
            if m not in have:
                out[uuid_of[m]].append(m)
        return out

    def _teardown(self):
        if self.fleet is not None:
            try:
                self.fleet.stop()
            except Exception as e:  # noqa: BLE001
                self.daemon_problems.append("browsers did not close: %r" % e)
        if self.c is None:
            return
        # what the daemons logged, before stopping them
        for s in self.c.servers:
            text = s.log()
            groups = daemon_log_summary(text)
            if groups:
                self.daemon_problems.append("%s %s: %s" % (
                    s.name, getattr(s, "node_id", s.port),
                    "; ".join("%dx %s" % (n, k) for k, n in groups)))
        for cons in self.c.consumers:
            groups = daemon_log_summary(cons.log())
            if groups:
                self.daemon_problems.append("pushgate-consumer %s: %s" % (
                    cons.name, "; ".join("%dx %s" % (n, k) for k, n in groups)))
        try:
            self.c.stop()
        except Exception as e:  # noqa: BLE001 - reported; what is left is killed
            # the first line says what (exit code, processes left, sanitizer)
            self.teardown_errors.append("stopping the daemons: %s" % str(e).split("\n")[0][:300])
            for srv in self.c.servers:
                if not srv.stopped:
                    srv.snapshot()
                srv.kill_all()
            for cons in self.c.consumers:
                cons.kill()
        reports = collections.Counter()
        for srv in self.c.servers:
            for excerpt in sanitizer_excerpts(glob.glob(srv.san_prefix + "*") +
                                              [srv.stderr_path]):
                reports["%s %s: %s" % (srv.name, getattr(srv, "node_id", srv.port), excerpt)] += 1
        for cons in self.c.consumers:
            for excerpt in sanitizer_excerpts(glob.glob(cons.san_prefix + "*") +
                                              [cons.stderr_path]):
                reports["pushgate-consumer %s: %s" % (cons.name, excerpt)] += 1
        self.sanitizer_reports = sum(reports.values())
        for text, n in reports.items():
            self.teardown_errors.append("%dx %s" % (n, text))
        if self.result is not None:
            self.result["daemon_problems"] = self.daemon_problems
            self.result["teardown_errors"] = self.teardown_errors
            self.result["sanitizer_reports"] = self.sanitizer_reports

    def _crashes(self):
        """Daemon processes that died while the harness did not kill them:
        {"<daemon> <role>: <how>": n}, from the managers' "died" lines."""
        out = collections.Counter()
        ours = {"worker": "worker 0", "task-worker": "task worker 1"}.get(self.fault)
        for srv in self.c.servers:
            for m in re.finditer(r"\[ERROR\] manager \(pid \d+\): (worker|task worker) (\d+) "
                                 r"\(pid \d+\) died: (.*)", srv.log()):
                role = "%s %s" % (m.group(1), m.group(2))
                if ours == role and m.group(3) == "signal 9" and srv.name == "pushgate-gateway":
                    ours = None         # the one the harness killed
                    continue
                out["%s %s: %s" % (srv.name.replace("pushgate-", ""), m.group(1),
                                   m.group(3))] += 1
        return dict(out)

    # -- what became of every order

    def analyse(self, x):
        orders = self.orders
        uuid_of, id_of, t_pub = orders.uuid_of, dict(orders.id_of), dict(orders.t_pub)
        marker_of_id = {i: m for m, i in id_of.items()}
        tab_of = {t.uuid: t for t in self.tabs}
        names = {self.c.a.port: "A", self.c.b.port: "B"}

        def node_of(t, conn):
            c = t.conns[conn] if 0 <= conn < len(t.conns) else None
            if c is None:
                return "?"
            name = names.get(c["port"], str(c["port"]))
            if c["online"]:
                return "%s session %s" % (name, c["online"].get("client_id", "?"))
            return name + " no ONLINE"
        f_start, f_end = x["f_start"], x["f_end"]
        rec = collections.defaultdict(list)     # marker -> [(tab, conn, t)]
        misrouted, bad_id, foreign = [], [], 0
        for t in self.tabs:
            for marker, msg_id, tr, conn in list(t.receipts):
                if marker not in uuid_of:
                    foreign += 1
                    continue
                if uuid_of[marker] != t.uuid:
                    misrouted.append((marker, t.uuid))
                    continue
                if msg_id != id_of.get(marker):
                    bad_id.append((marker, msg_id, id_of.get(marker)))
                rec[marker].append((t, conn, tr))
        published = list(id_of)
        unconfirmed = len(uuid_of) - len(published)

        same_session = {}       # marker -> extra receipts on one connection
        cross = {}              # marker -> connections beyond the first
        lost, forced_only, late, own_reconnect = [], [], [], []
        delays, after_end = [], []
        slowest = (None, None)
        by_node = collections.Counter()
        for m in published:
            got = rec.get(m, [])
            if not got:
                lost.append(m)
                continue
            t = got[0][0]
            per_conn = collections.Counter(conn for _, conn, _ in got)
            extra = sum(n - 1 for n in per_conn.values())
            if extra:
                same_session[m] = extra
            if len(per_conn) > 1:
                cross[m] = len(per_conn) - 1
            live = [(conn, tr) for _, conn, tr in got
                    if t.forced_conn is None or conn < t.forced_conn]
            if not live:
                forced_only.append(m)
                continue
            conn, tr = min(live, key=lambda ct: ct[1])
            by_node[node_of(t, conn).split()[0]] += 1
            if conn > t.conn_at(t_pub[m]):
                own_reconnect.append(m)
            delay = tr - max(f_end, t_pub[m])
            delays.append(delay)
            if slowest[0] is None or delay > slowest[0]:
                slowest = (delay, m)
            if delay > DEADLINE_AFTER_FAULT:
                late.append(m)
            if t_pub[m] <= f_end and tr >= f_start:
                after_end.append(tr - f_end)

        def where(snap, m):
            i = id_of[m]
            out = []
            if snap.dead is not None and i in snap.dead:
                out.append("dead-lettered (%s)" % snap.dead[i])
            if snap.pending is not None and i in snap.pending:
                out.append("pending")
            if snap.stored is not None and i in snap.stored:
                out.append("stored")
            if snap.stream is not None and i not in snap.stream:
                out.append("gone from the stream (trimmed after its XACK, or lost)")
            return out or ["XACKed, nothing stored"]

        live_end, end = x["at_live_end"], x["at_end"]
        dead_ids = set(end.dead or {})
        dead = [m for m in published if id_of[m] in dead_ids]
        dead_reasons = collections.Counter((end.dead or {})[id_of[m]] for m in dead)
        live_have = {m for m in published if any(
            t.forced_conn is None or conn < t.forced_conn for t, conn, _ in rec.get(m, []))}
        stored_live = set(marker_of_id[i] for i in (live_end.stored or {}) if i in marker_of_id)
        stored_undelivered = [m for m in stored_live if m not in live_have]
        stored_copies = [m for m in stored_live if m in live_have]
        pending_live = [marker_of_id[i] for i in (live_end.pending or ()) if i in marker_of_id]
        pending_end = [marker_of_id[i] for i in (end.pending or ()) if i in marker_of_id]
        gone = [m for m in published if end.stream is not None and id_of[m] not in end.stream]
        lost_where = collections.Counter(" + ".join(where(end, m)) for m in lost)
        closes = collections.Counter(code for t in self.tabs for _, code in t.closes)
        reconnect_errors = sum(len(t.errors) for t in self.tabs)
        error_kinds = collections.Counter(re.sub(r"\d+", "N", e[2])[:120]
                                          for t in self.tabs for e in t.errors)
        unfinished = [t.uuid for t in self.tabs if not t.connected]
        opened = [c for t in self.tabs for c in t.conns if c.get("opened")]
        no_online = sum(1 for c in opened if c["online"] is None)
        online_waits = [c["t_online"] - c["t_open"] for c in opened if c["t_online"]]
        crashes = self._crashes()

        def pct(vals, q):
            if not vals:
                return None
            vals = sorted(vals)
            return vals[min(len(vals) - 1, int(q * len(vals)))]

        def trace(m):
            t0 = x["t0"]
            t = tab_of.get(uuid_of[m])
            rs = ["conn %d (%s%s) at %.2f s" % (
                conn, node_of(t, conn), ", forced" if t.forced_conn is not None and
                conn >= t.forced_conn else "", tr - t0) for _, conn, tr in rec.get(m, [])]
            k = t.conn_at(t_pub[m])
            if k < 0:
                then = "not connected"
            else:
                c = t.conns[k]
                then = "on conn %d (%s, %s)" % (
                    k, names.get(c["port"], c["port"]),
                    "not open" if not c.get("opened") else
                    "no ONLINE yet" if not c["t_online"] or c["t_online"] > t_pub[m] else
                    "registered")
            return "%s (%s, for %s, published at %.2f s, browser %s): %s; now %s" % (
                id_of[m], m, uuid_of[m], t_pub[m] - t0, then,
                ", ".join(rs) or "never received", " + ".join(where(end, m)))

        res = dict(
            fault=self.fault, behaviour=self.behaviour, variant=self.variant,
            browsers=len(self.tabs), rate=self.rate, requested=self.total,
            published=len(published), unconfirmed=unconfirmed,
            publish_seconds=x["t_pub_end"] - x["t0"],
            fault_at=f_start - x["t0"], fault_end=f_end - x["t0"],
            fault_seconds=f_end - f_start, live_seconds=x["t_live_end"] - x["t0"],
            end_seconds=time.monotonic() - x["t0"],
            received=len(published) - len(lost), received_live=len(live_have),
            lost=len(lost), lost_where=dict(lost_where),
            dead=len(dead), dead_reasons=dict(dead_reasons),
            dead_other=len(dead_ids) - len(dead),
            same_session_dups=sum(same_session.values()), same_session_orders=len(same_session),
            cross_reconnect_dups=sum(cross.values()),
            stored_undelivered=len(stored_undelivered), stored_copies=len(stored_copies),
            stored_at_end=len(end.stored or {}) if end.stored is not None else None,
            pending_live=len(pending_live) if live_end.pending is not None else None,
            pending_end=len(pending_end) if end.pending is not None else None,
            gone_from_stream=len(gone), late=len(late), forced_orders=len(forced_only),
            forced_browsers=len(x["forced"]), own_reconnect=len(own_reconnect),
            max_delay=max(delays) if delays else None,
            max_after_end=max(after_end) if after_end else None,
            p99_after_end=pct(after_end, 0.99),
            by_node=dict(by_node), closes=dict(closes), reconnect_errors=reconnect_errors,
            reconnect_error_kinds=dict(error_kinds.most_common(3)),
            browsers_not_connected=len(unfinished),
            before_online=sum(t.before_online for t in self.tabs),
            connections=len(opened), no_online=no_online,
            max_online_wait=max(online_waits) if online_waits else None,
            bad_online=sum(len(t.bad_online) for t in self.tabs),
            crashes=crashes,
            misrouted=len(misrouted), bad_id=len(bad_id), foreign=foreign,
            producer_retries=orders.retries, producer_replayed=orders.replayed,
            producer_error=x["producer_error"], fault_error=x["fault_error"],
            stalls=[(a - x["t0"], b - x["t0"]) for t in x["stalled"] for a, b in t.stalls],
            notes=list(self.notes), daemon_problems=self.daemon_problems,
            ss_note=SS_UNSUPPORTED,
            examples=dict(
                lost=[trace(m) for m in lost[:5]],
                dead=[trace(m) for m in dead[:3]],
                same_session=[trace(m) for m in list(same_session)[:5]],
                late=[trace(m) for m in late[:3]],
                slowest=[trace(slowest[1])] if slowest[1] else [],
                forced=[trace(m) for m in forced_only[:5]],
                stored_undelivered=[trace(m) for m in stored_undelivered[:3]],
                misrouted=[str(v) for v in misrouted[:3]], bad_id=[str(v) for v in bad_id[:3]]))
        return res

    def _keep(self):
        """result.json of the run, and with a failed verdict every log and
        sanitizer file of its daemons, in ARTIFACTS/NN-fault-behaviour/."""
        d = os.path.join(artifacts_dir(), "%02d-%s-%s%s" % (
            self.no, self.fault, self.behaviour, "-short" if self.variant == "short" else ""))
        try:
            os.makedirs(d, exist_ok=True)
            if problems(self.result):
                for name in os.listdir(str(self.tmp_path)):
                    src = os.path.join(str(self.tmp_path), name)
                    if os.path.isfile(src):
                        shutil.copy2(src, d)
            self.result["json"] = os.path.join(d, "result.json")
            with open(self.result["json"], "w") as f:
                json.dump(self.result, f, indent=1, default=str)
        except OSError as e:
            self.result["json"] = "not kept: %s" % e


def artifacts_dir():
    """FAULTS_OUT, or build/faults/<date>-<run> in the repository."""
    if not _artifacts:
        d = os.environ.get("FAULTS_OUT") or os.path.join(
            os.path.dirname(os.path.dirname(HERE)), "build", "faults",
            time.strftime("%Y%m%d-%H%M%S-") + RUN)
        _artifacts.append(d)
    return _artifacts[0]


_artifacts = []


def sanitizer_excerpts(paths):
    """Each sanitizer report in paths, as one line: what, where (the first
    frames of ours), summary."""
    out = []
    for path in paths:
        try:
            with open(path, errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        if not any(m in text for m in SANITIZER_MARKS):
            continue
        lines = text.splitlines()
        for i, ln in enumerate(lines):
            if "runtime error:" in ln or "ERROR: AddressSanitizer" in ln or \
                    "ERROR: LeakSanitizer" in ln:
                frames = [re.sub(r"^\s*#\d+ 0x[0-9a-f]+ in ", "", f).strip()
                          for f in lines[i + 1:i + 40] if re.match(r"\s*#\d+ ", f)]
                frames = [f for f in frames if "/work/" in f or "pushgate" in f][:4]
                where = ln.split("ERROR: ")[-1] if "ERROR: " in ln else ln
                out.append("%s [%s]%s" % (where.strip()[:200], os.path.basename(path),
                                          " in " + " < ".join(frames) if frames else ""))
        summaries = [ln for ln in lines if ln.startswith("SUMMARY:")]
        if summaries:
            out.append("%s [%s]" % ("; ".join(summaries)[:300], os.path.basename(path)))
    return out


# ---- verdict and tables ----

def problems(res):
    """What the run must not show (empty: it passed)."""
    out = []
    if res["lost"]:
        out.append("%d lost (now: %s)" % (res["lost"], res["lost_where"]))
    if res["dead"]:
        out.append("%d good orders dead-lettered (%s)" % (res["dead"], res["dead_reasons"]))
    if res["same_session_dups"]:
        out.append("%d duplicates on one session (%d orders)" % (
            res["same_session_dups"], res["same_session_orders"]))
    if res["late"]:
        out.append("%d arrived over %.0f s after the fault (max delay %.1f s)" % (
            res["late"], DEADLINE_AFTER_FAULT, res["max_delay"]))
    if res["forced_orders"]:
        out.append("%d arrived only after a forced reconnect (%d browsers)" % (
            res["forced_orders"], res["forced_browsers"]))
    if res["misrouted"] or res["bad_id"]:
        out.append("%d at the wrong browser, %d with a wrong id" % (res["misrouted"],
                                                                   res["bad_id"]))
    if res["unconfirmed"] or res["producer_error"]:
        out.append("%d orders never confirmed by Redis (producer: %s)" % (
            res["unconfirmed"], res["producer_error"]))
    if res["fault_error"]:
        out.append("the fault itself failed: %s" % res["fault_error"])
    if res.get("teardown_errors"):
        out.append("daemons: %s" % " | ".join(e[:200] for e in res["teardown_errors"][:3]))
    return out


def _f(v, fmt="%.1f"):
    return "-" if v is None else (fmt % v)


def run_table(res):
    """The table of one run."""
    rows = [
        ("published (Redis confirmed the XADD)", res["published"]),
        ("received by their browser", res["received"]),
        ("  before any forced reconnect", res["received_live"]),
        ("  first receipt by node", res["by_node"]),
        ("LOST (never received)", res["lost"]),
        ("  where they are now", res["lost_where"] or "-"),
        ("dead-lettered (good orders)", res["dead"]),
        ("same-session duplicates (extra receipts)", res["same_session_dups"]),
        ("duplicates across reconnects (allowed)", res["cross_reconnect_dups"]),
        ("stored, not delivered (end of live phase)", res["stored_undelivered"]),
        ("stored copies of delivered orders", res["stored_copies"]),
        ("pending in the group (end of live phase / end)",
         "%s / %s" % (_f(res["pending_live"], "%d"), _f(res["pending_end"], "%d"))),
        ("gone from the stream (trimmed, or lost by Redis)", res["gone_from_stream"]),
        ("arrived after their browser's own reconnect", res["own_reconnect"]),
        ("LATE (over %.0f s after the fault's end)" % DEADLINE_AFTER_FAULT, res["late"]),
        ("only after a FORCED reconnect (orders / browsers)",
         "%d / %d" % (res["forced_orders"], res["forced_browsers"])),
        ("max delay after max(fault end, publish) s", _f(res["max_delay"], "%.2f")),
        ("arrival after the fault's end, p99 / max s",
         "%s / %s" % (_f(res["p99_after_end"], "%.2f"), _f(res["max_after_end"], "%.2f"))),
        ("closes by the server, by code", res["closes"] or "-"),
        ("work orders that came before ONLINE", res["before_online"]),
        ("connections opened / never got ONLINE / slowest ONLINE s",
         "%d / %d / %s" % (res["connections"], res["no_online"],
                           _f(res["max_online_wait"], "%.2f"))),
        ("daemon processes that died (not killed here)", res["crashes"] or "-"),
        ("browsers not connected at the end", res["browsers_not_connected"]),
        ("failed reconnect attempts", "%d %s" % (res["reconnect_errors"],
                                                  res["reconnect_error_kinds"] or "")),
        ("producer retries / entries found already there",
         "%d / %d" % (res["producer_retries"], res["producer_replayed"])),
    ]
    head = "run: %s, %s (%s): %d browsers, %d orders at %d/s published in %.1f s; fault " \
           "%.2f s -> %.2f s (%.2f s); live phase to %.1f s, counted at %.1f s; run %.0f s " \
           "(stopping the daemons %.0f s)" % (
               res["fault"], res["behaviour"], res["variant"], res["browsers"], res["requested"],
               res["rate"], res["publish_seconds"], res["fault_at"], res["fault_end"],
               res["fault_seconds"], res["live_seconds"], res["end_seconds"],
               res.get("run_seconds", 0), res.get("teardown_seconds", 0))
    w = max(len(k) for k, _ in rows)
    lines = [head] + ["  %-*s  %s" % (w, k, v) for k, v in rows]
    for n in res["notes"]:
        lines.append("  note: " + n)
    if res["stalls"]:
        lines.append("  stalled browsers read nothing during: %s" % ", ".join(
            "%.2f-%.2f s" % s for s in res["stalls"]))
    for kind, ex in res["examples"].items():
        for e in ex:
            lines.append("  e.g. %s: %s" % (kind, e))
    for p in res.get("daemon_problems") or []:
        lines.append("  daemon log: " + p)
    for p in res.get("teardown_errors") or []:
        lines.append("  teardown: " + p)
    verdict = problems(res)
    lines.append("  verdict: " + ("PASS" if not verdict else "FAIL - " + "; ".join(verdict)))
    if res.get("json"):
        lines.append("  details: " + res["json"])
    return "\n".join(lines)


SUMMARY_COLUMNS = [
    ("fault", "fault", "%s"), ("behaviour", "behaviour", "%s"), ("orders", "published", "%d"),
    ("lost", "lost", "%d"), ("dead", "dead", "%d"), ("dup/sess", "same_session_dups", "%d"),
    ("dup/reconn", "cross_reconnect_dups", "%d"), ("stored", "stored_undelivered", "%d"),
    ("pend@end", "pending_end", "%d"), ("late", "late", "%d"),
    ("forced", "forced_orders", "%d"), ("forced-br", "forced_browsers", "%d"),
    ("own-reconn", "own_reconnect", "%d"), ("max-after", "max_after_end", "%.1f"),
    ("crashes", "n_crashes", "%d"), ("san", "sanitizer_reports", "%d"),
    ("fault-s", "fault_seconds", "%.1f"), ("run-s", "run_seconds", "%.0f"),
]


def summary_table(results):
    head = [c for c, _, _ in SUMMARY_COLUMNS] + ["verdict"]
    rows = []
    for r in results:
        r["n_crashes"] = sum((r.get("crashes") or {}).values())
        row = [_f(r.get(k), fmt) if not isinstance(r.get(k), str) else r[k]
               for _, k, fmt in SUMMARY_COLUMNS]
        if r.get("variant") == "short":
            row[0] += " (short)"
        v = problems(r)
        row.append("PASS" if not v else "FAIL")
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join("%%-%ds" % w if i < 2 else "%%%ds" % w for i, w in enumerate(widths))
    lines = [fmt % tuple(head)] + [fmt % tuple(r) for r in rows]
    lines.append("lost: never received; dead: good orders dead-lettered; dup/sess: extra "
                 "receipts on one connection; dup/reconn: receipts on further connections "
                 "(allowed); stored: stored and not delivered at the end of the live phase; "
                 "pend@end: still pending in the consumer group at the end; late: arrived over "
                 "%.0f s after the fault's end; forced: arrived only after the harness "
                 "reconnected the browser (forced-br: browsers); own-reconn: first receipt "
                 "after the browser's own reconnect; max-after: latest arrival after the "
                 "fault's end (s); crashes: daemon processes that died, not killed by the "
                 "harness; san: sanitizer reports" % DEADLINE_AFTER_FAULT)
    if SS_UNSUPPORTED:
        lines.append(SS_UNSUPPORTED)
    return "\n".join(lines)


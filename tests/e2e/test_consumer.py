"""pushgate-consumer end to end: a producer XADDs work orders into a Redis
Stream, the consumer hands them to a real gateway (found in gateway_nodes),
real WebSocket clients receive them, and the stream entries are XACKed only
then.  Also: kill -9 of the consumer mid-run, malformed entries going to the
dead-letter stream, no gateway up (entries wait, no busy loop), a Redis
restart; and, against fake gateways (static `gateways` setting): retries on
another gateway after 10500 or a dropped connection, giving up after
max_deliveries, reply timeouts, and SIGTERM waiting for replies in flight.

Every test uses its own stream, so tests never see each other's entries.
Every wait is bounded; only processes started here are stopped."""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid as uuidlib

import pytest
import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import (HOST, SANITIZER_MARKS, allowed_cpus, free_port,  # noqa: E402
                         start_server)

SECRET = "consumer-e2e-secret-0123456789"
TOKEN = "consumer-e2e-app"
GROUP = "pushgate"


# ---- helpers ----

def uid(tag="u"):
    return "%s-%s" % (tag, uuidlib.uuid4().hex[:12])


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def browser_token(uuid):
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps({"sub": uuid, "exp": int(time.time()) + 3600}).encode())
    sig = b64url(hmac.new(SECRET.encode(), ("%s.%s" % (header, body)).encode(),
                          hashlib.sha256).digest())
    return "%s.%s.%s" % (header, body, sig)


def work_order(uuid, infos, token=TOKEN):
    """The seed's producer format (message format 1)."""
    return json.dumps({"url": "/worksheet/send-message", "chat_token": token,
                       "data": [{"uuid": uuid, "data": {"type": "new_worksheet_to_deal",
                                                        "infos": infos}}]})


def publish(r, stream, msgs):
    """XADDs {"msg": m} for each m; returns the entry ids in order."""
    pipe = r.pipeline(transaction=False)
    for m in msgs:
        pipe.xadd(stream, {"msg": m} if isinstance(m, str) else m)
    return pipe.execute()


def pending(r, stream, group=GROUP):
    """How many of the stream's entries the group has not XACKed: those read
    and unanswered, plus those not read yet.  XPENDING alone is also 0 in the
    moment before the consumer reads what was just published."""
    try:
        # one transaction: a read between the two would count nothing twice
        # and could make both 0 while the entries are in flight
        pipe = r.pipeline(transaction=True)
        pipe.xpending(stream, group)
        pipe.xinfo_groups(stream)
        summary, groups = pipe.execute()
        read = summary["pending"]
        (info,) = [g for g in groups if g["name"] == group]
    except Exception:  # the group does not exist yet
        return None
    unread = info.get("lag")
    if unread is None:  # Redis cannot tell after deletions: count them
        unread = len(r.xrange(stream, "(" + info["last-delivered-id"], "+"))
    return read + unread


def dead_letters(r, stream):
    return r.xrange(stream + ":dead")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


async def until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        await asyncio.sleep(0.05)


def wait_sync(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(0.05)


# ---- processes ----

class Consumer:
    """pushgate-consumer (ASan build) with --set for each setting, Redis and
    MySQL of the stack from the environment (PUSHGATE_*)."""

    def __init__(self, bin_dir, tmp_path, stack, **settings):
        tag = "consumer-%d" % free_port()
        self.log_path = str(tmp_path / (tag + ".log"))
        self.stderr_path = str(tmp_path / (tag + ".stderr"))
        self.san_prefix = str(tmp_path / (tag + ".san"))
        settings.setdefault("log_file", self.log_path)
        args = [os.path.join(bin_dir, "pushgate-consumer")]
        for k, v in settings.items():
            args += ["--set", "%s=%s" % (k, v)]
        env = dict(os.environ, **stack.env())
        for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
            opts = env.get(var, "")
            env[var] = (opts + ":" if opts else "") + "log_path=" + self.san_prefix
        self.stderr_file = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr_file, env=env, start_new_session=True)
        self.pid = self.proc.pid

    def wait_started(self):
        wait_sync(lambda: self.running() and "started:" in self.log(), 15, "the consumer to start")

    def running(self):
        if self.proc.poll() is not None:
            raise AssertionError("consumer exited with %s:\n%s" % (self.proc.returncode,
                                                                  self.report()))
        return True

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def report(self):
        text = self.log()
        with open(self.stderr_path, errors="replace") as f:
            text += f.read()
        d = os.path.dirname(self.san_prefix)
        for name in sorted(os.listdir(d)):
            if name.startswith(os.path.basename(self.san_prefix)):
                with open(os.path.join(d, name), errors="replace") as f:
                    text += "\n==== %s\n%s" % (name, f.read())
        return text

    def cpu(self):
        return cpu_seconds(self.pid)

    def stop(self, timeout=30, signal_it=True):
        """SIGTERM (unless already sent): must exit 0 with no sanitizer
        report (leaks included)."""
        if self.proc.poll() is None:
            if signal_it:
                self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        self.stderr_file.close()
        text = self.report()
        assert self.proc.returncode == 0, "consumer exited with %s:\n%s" % (
            self.proc.returncode, text[-4000:])
        marks = [m for m in SANITIZER_MARKS if m in text]
        assert not marks, "sanitizer report from the consumer:\n%s" % text[-6000:]
        return self.log()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if not self.stderr_file.closed:
            self.stderr_file.close()


@pytest.fixture
def procs():
    """Tracks what a test started; anything still running at the end is killed."""
    started = []
    yield started
    for p in reversed(started):
        if isinstance(p, Consumer):
            p.kill()
        elif not p.stopped:
            p.snapshot()
            p.kill_all()


@pytest.fixture
def stream(stack):
    stack.add_app(TOKEN)
    return "test:%s:worksheets" % uuidlib.uuid4().hex[:10]


def start_gateway(bin_dir, stack, tmp_path, procs):
    g = start_server(bin_dir, "pushgate-gateway", tmp_path,
                     host=HOST, internal_host=HOST, internal_port=free_port(),
                     advertised_ip=HOST, worker_num=2, task_worker_num=2, reactor_num=2,
                     jwt_secret=SECRET, ack_timeout=10, node_heartbeat_interval=1,
                     mysql_host=stack.mysql_host, mysql_port=stack.mysql_port,
                     mysql_user=stack.mysql_user, mysql_password=stack.mysql_password,
                     mysql_database=stack.mysql_db, wait=False)
    procs.append(g)
    g.wait_ready()
    return g


def start_consumer(bin_dir, stack, tmp_path, procs, stream, **settings):
    s = dict(stream=stream, dead_letter_stream=stream + ":dead", nodes_refresh_ms=300,
             block_ms=500)
    s.update(settings)
    c = Consumer(bin_dir, tmp_path, stack, **s)
    procs.append(c)
    c.wait_started()
    return c


def stop_gateway(g):
    g.stop()
    g.check_clean()


class FakeGateway:
    """An internal port that answers each request by rule(request, n) where n
    counts the requests on that connection: a reply dict, None (silence) or
    "close" (drop the connection).  Records every request's msg_id."""

    def __init__(self, rule):
        self.rule = rule
        self.msg_ids = []
        self.lock = threading.Lock()
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind((HOST, 0))
        self.srv.listen(16)
        self.srv.settimeout(0.2)
        self.port = self.srv.getsockname()[1]
        self.addr = "%s:%d" % (HOST, self.port)
        self.done = False
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while not self.done:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                continue
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn):
        conn.settimeout(0.2)
        buf, n = b"", 0
        with conn:
            while not self.done:
                try:
                    chunk = conn.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while len(buf) >= 4 and len(buf) >= 4 + struct.unpack(">I", buf[:4])[0]:
                    size = struct.unpack(">I", buf[:4])[0]
                    req, buf = json.loads(buf[4:4 + size]), buf[4 + size:]
                    n += 1
                    with self.lock:
                        self.msg_ids.append(req["msg_id"])
                    reply = self.rule(req, n)
                    if reply == "close":
                        return
                    if reply is not None:
                        reply.setdefault("msg_id", req["msg_id"])
                        data = json.dumps(reply).encode()
                        conn.sendall(struct.pack(">I", len(data)) + data)

    def seen(self, msg_id):
        with self.lock:
            return self.msg_ids.count(msg_id)

    def close(self):
        self.done = True
        self.srv.close()
        for t in self.threads:
            t.join(timeout=2)


@pytest.fixture
def fakes():
    made = []
    yield lambda rule: made.append(FakeGateway(rule)) or made[-1]
    for f in made:
        f.close()


# ---- browsers ----

class Browser:
    """One agent's WebSocket: collects WorksheetMsg events and ACKs each."""

    def __init__(self, uuid):
        self.uuid = uuid
        self.events = []
        self.arrived = {}       # id -> time.monotonic() of its first arrival

    @property
    def ids(self):
        return [e["id"] for e in self.events]

    async def open(self, port):
        url = "ws://%s:%d/ws?token=%s" % (HOST, port, browser_token(self.uuid))
        self.ws = await websockets.connect(url, open_timeout=10, ping_interval=None,
                                           close_timeout=2, max_queue=None)
        first = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        assert first["event"] == "ONLINE", first
        self.task = asyncio.ensure_future(self._read())
        return self

    async def _read(self):
        try:
            async for raw in self.ws:
                m = json.loads(raw)
                if m.get("event") == "WorksheetMsg":
                    self.events.append(m)
                    self.arrived.setdefault(m["id"], time.monotonic())
                    await self.ws.send(json.dumps({"event": "ACK", "data": {"id": m["id"]}}))
        except websockets.ConnectionClosed:
            pass

    async def close(self):
        self.task.cancel()
        await self.ws.close()


async def open_browsers(port, uuids):
    return await asyncio.gather(*(Browser(u).open(port) for u in uuids))


def received(browsers):
    return [i for b in browsers for i in b.ids]


# ---- tests ----

def test_work_order_reaches_the_browser_and_is_acked(bin_dir, stack, tmp_path, procs, stream):
    g = start_gateway(bin_dir, stack, tmp_path, procs)
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream)
    r = stack.redis()

    async def run():
        (b,) = await open_browsers(g.port, [uid("agent")])
        (entry_id,) = publish(r, stream, [work_order(b.uuid, "你有一条新工单待处理")])
        await until(lambda: b.events, 15, "the work order at the browser")
        assert b.events[0] == {"event": "WorksheetMsg",
                               "response": {"type": "new_worksheet_to_deal",
                                            "infos": "你有一条新工单待处理"},
                               "id": entry_id}
        await until(lambda: pending(r, stream) == 0, 10, "the entry to be XACKed")
        await b.close()

    asyncio.run(run())
    assert r.xinfo_groups(stream)[0]["last-delivered-id"] is not None
    assert dead_letters(r, stream) == []
    c.stop()
    stop_gateway(g)


def test_2000_work_orders_for_50_users_and_an_offline_one(bin_dir, stack, tmp_path, procs,
                                                          stream):
    g = start_gateway(bin_dir, stack, tmp_path, procs)
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream)
    r = stack.redis()
    users = [uid("agent") for _ in range(50)]
    offline = uid("offline")

    async def run():
        browsers = await open_browsers(g.port, users)
        msgs = [work_order(users[i % 50], "order %d" % i) for i in range(2000)]
        t0 = time.monotonic()
        ids = publish(r, stream, msgs)
        offline_ids = publish(r, stream, [work_order(offline, "later %d" % i) for i in range(10)])
        await until(lambda: len(set(received(browsers))) >= 2000, 90, "2000 work orders")
        elapsed = time.monotonic() - t0
        print("\nconsumer throughput: 2000 entries in %.2f s = %.0f entries/s"
              % (elapsed, 2000 / elapsed))
        await until(lambda: pending(r, stream) == 0, 20, "every entry to be XACKed")
        got = received(browsers)
        assert set(got) == set(ids)
        assert len(got) == len(ids), "duplicates in an undisturbed run: %d" % (len(got) - len(ids))
        for b in browsers:      # each got exactly its own
            mine = [i for i, m in zip(ids, msgs) if json.loads(m)["data"][0]["uuid"] == b.uuid]
            assert sorted(b.ids) == sorted(mine)
        late = await Browser(offline).open(g.port)
        await until(lambda: len(late.ids) >= 10, 15, "the offline user's work orders at connect")
        # pipelined and routed by parallel task workers: stored in any order
        assert sorted(late.ids) == sorted(offline_ids)
        for b in browsers + [late]:
            await b.close()

    asyncio.run(run())
    assert dead_letters(r, stream) == []
    c.stop()
    stop_gateway(g)


def test_kill_9_mid_run_then_restart_loses_nothing(bin_dir, stack, tmp_path, procs, stream):
    g = start_gateway(bin_dir, stack, tmp_path, procs)
    r = stack.redis()
    users = [uid("agent") for _ in range(50)]

    async def run():
        browsers = await open_browsers(g.port, users)
        ids = publish(r, stream, [work_order(users[i % 50], "order %d" % i) for i in range(2000)])
        # small batches so that the kill lands in the middle of the run
        a = start_consumer(bin_dir, stack, tmp_path, procs, stream, consumer="A", count=20,
                           max_in_flight=40, claim_min_idle_ms=1000)
        await until(lambda: len(set(received(browsers))) >= 400, 60, "400 work orders")
        a.kill()
        at_kill = len(set(received(browsers)))
        left_with_a = pending(r, stream)
        assert at_kill < 2000, "the run finished before the kill"
        b = start_consumer(bin_dir, stack, tmp_path, procs, stream, consumer="B",
                           claim_min_idle_ms=1000)
        await until(lambda: len(set(received(browsers))) >= 2000, 90, "all 2000 after the restart")
        await until(lambda: pending(r, stream) == 0, 20, "every entry to be XACKed")
        got = received(browsers)
        assert set(got) == set(ids)
        print("\nkill -9 after %d delivered (%d pending with A); %d duplicates redelivered"
              % (at_kill, left_with_a, len(got) - len(ids)))
        for br in browsers:
            await br.close()
        return b, left_with_a

    b, left_with_a = asyncio.run(run())
    assert dead_letters(r, stream) == []
    log = b.stop()
    if left_with_a:
        assert "reclaimed" in log
    stop_gateway(g)


def test_cpu_affinity_holds_for_every_thread(bin_dir, stack, tmp_path, procs, stream):
    cpu = str(min(os.sched_getaffinity(0)))
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream, cpu_affinity=cpu)
    assert allowed_cpus(c.pid) == {cpu}
    c.stop()

    bad = Consumer(bin_dir, tmp_path, stack, stream=stream, cpu_affinity="0,x")
    procs.append(bad)
    assert bad.proc.wait(timeout=15) == 2
    bad.stderr_file.close()
    assert 'cpu_affinity "0,x": not a list of CPUs' in bad.report()


def test_malformed_entries_go_to_the_dead_letter_stream(bin_dir, stack, tmp_path, procs, stream):
    g = start_gateway(bin_dir, stack, tmp_path, procs)
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream)
    r = stack.redis()
    bad = [
        ({"body": "no msg field here"}, "no msg field"),
        ({"msg": "this is not json"}, "not JSON"),
        ({"msg": "[1, 2, 3]"}, "not a JSON object"),
        ({"msg": json.dumps({"url": "/worksheet/send-message", "chat_token": TOKEN})},
         "data is missing"),
        ({"msg": work_order("someone", "x", token="no-such-token")}, "10201"),
        # right where the consumer looks (url, chat_token, data), not JSON
        # elsewhere: the gateway's parse finds it, and it is still malformed
        ({"msg": work_order("someone", "x")[:-1] + ', "late": tru}'},
         "malformed: msg is not JSON (gateway "),
        # text after the object
        ({"msg": work_order("someone", "x") + " x"}, "malformed: msg is not JSON: "),
    ]

    async def run():
        (b,) = await open_browsers(g.port, [uid("agent")])
        ids = publish(r, stream, [f for f, _ in bad])
        # PHP's json_encode escapes slashes: "\/worksheet\/send-message"
        php = work_order(b.uuid, "after the bad ones").replace("/", "\\/")
        assert "\\/worksheet\\/send-message" in php
        (good,) = publish(r, stream, [php])
        await until(lambda: b.ids, 15, "the valid entry after the malformed ones")
        assert b.ids == [good]
        await until(lambda: len(dead_letters(r, stream)) >= len(bad), 15, "the dead letters")
        await until(lambda: pending(r, stream) == 0, 10, "every entry to be XACKed")
        await b.close()
        return ids

    ids = asyncio.run(run())
    dead = {fields["source_id"]: fields for _, fields in dead_letters(r, stream)}
    assert sorted(dead) == sorted(ids)
    for entry_id, (fields, why) in zip(ids, bad):
        assert why in dead[entry_id]["reason"], dead[entry_id]
        assert dead[entry_id]["msg"] == fields.get("msg", "")
        assert dead[entry_id]["source_stream"] == stream
    assert json.loads(dead[ids[0]]["fields"]) == {"body": "no msg field here"}
    c.stop()
    stop_gateway(g)


def test_no_gateway_up_entries_wait_without_spinning(bin_dir, stack, tmp_path, procs, stream):
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream)
    r = stack.redis()
    user = uid("agent")
    ids = publish(r, stream, [work_order(user, "waiting %d" % i) for i in range(20)])
    wait_sync(lambda: r.xpending(stream, GROUP)["pending"] == 20, 10,
              "the consumer to read the entries")
    wait_sync(lambda: "waiting for a gateway" in c.log(), 10, "a log line about waiting")
    cpu0 = c.cpu()
    time.sleep(3)
    used = c.cpu() - cpu0
    assert used < 0.5, "the consumer used %.2f s of CPU in 3 s while waiting" % used
    assert pending(r, stream) == 20
    assert dead_letters(r, stream) == []

    g = start_gateway(bin_dir, stack, tmp_path, procs)

    async def run():
        (b,) = await open_browsers(g.port, [user])
        await until(lambda: len(set(b.ids)) >= 20, 20, "the waiting entries")
        assert sorted(set(b.ids)) == sorted(ids)
        await until(lambda: pending(r, stream) == 0, 10, "every entry to be XACKed")
        await b.close()

    asyncio.run(run())
    assert dead_letters(r, stream) == []
    c.stop()
    stop_gateway(g)


def test_the_stream_loses_what_every_group_finished_and_keeps_the_rest(bin_dir, stack, tmp_path,
                                                                      procs, stream):
    """An XACK leaves its entry in the stream; the consumer trims what every
    group of it has read and XACKed.  Kept: entries read but pending (no
    gateway up), and all that another group has not read yet."""
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream, trim_interval_ms=100)
    r = stack.redis()
    user = uid("agent")
    ids = publish(r, stream, [work_order(user, "trim %d" % i) for i in range(500)])
    wait_sync(lambda: r.xpending(stream, GROUP)["pending"] == 500, 10,
              "the consumer to read the entries")
    time.sleep(1)   # ten rounds of trimming
    assert r.xlen(stream) == 500, "pending entries were trimmed"

    # Another reader's group, from the start: it has read nothing.
    r.xgroup_create(stream, "audit", id="0")
    g = start_gateway(bin_dir, stack, tmp_path, procs)

    async def run():
        (b,) = await open_browsers(g.port, [user])
        await until(lambda: len(set(b.ids)) >= 500, 30, "the entries at the browser")
        await until(lambda: pending(r, stream) == 0, 10, "every entry to be XACKed")
        await b.close()

    asyncio.run(run())
    time.sleep(1)
    assert r.xlen(stream) == 500, "entries the audit group has not read were trimmed"

    read = r.xreadgroup("audit", "auditor", {stream: ">"}, count=1000)
    assert r.xack(stream, "audit", *[i for i, _ in read[0][1]]) == 500
    # XTRIM MINID ~ drops whole nodes of the stream's radix tree only
    wait_sync(lambda: r.xlen(stream) <= 100, 10, "the finished entries to be trimmed")
    assert r.xrange(stream, ids[-1], ids[-1]), "the last entry read went too"
    assert "XTRIM" not in c.log()
    assert dead_letters(r, stream) == []
    c.stop()
    stop_gateway(g)


def test_redis_restart_the_consumer_reconnects(bin_dir, stack, tmp_path, procs, stream):
    if not (hasattr(stack, "stop_redis") and hasattr(stack, "start_redis")):
        pytest.skip("the fixture cannot restart Redis")
    g = start_gateway(bin_dir, stack, tmp_path, procs)
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream)

    async def run():
        (b,) = await open_browsers(g.port, [uid("agent")])
        (first,) = publish(stack.redis(), stream, [work_order(b.uuid, "before")])
        await until(lambda: b.ids == [first], 15, "the first work order")
        await until(lambda: pending(stack.redis(), stream) == 0, 10, "the first XACK")
        stack.stop_redis()
        await until(lambda: "connection lost" in c.log(), 10, "the consumer to notice")
        cpu0 = c.cpu()
        await asyncio.sleep(2)
        used = c.cpu() - cpu0
        assert used < 0.5, "the consumer used %.2f s of CPU in 2 s without Redis" % used
        stack.start_redis()
        r = stack.redis()   # the data is gone: the group is created again
        await until(lambda: c.log().count("reader connection up") >= 2, 15, "the reconnect")
        (second,) = publish(r, stream, [work_order(b.uuid, "after")])
        await until(lambda: second in b.ids, 15, "a work order after the restart")
        await until(lambda: pending(r, stream) == 0, 10, "the second XACK")
        await b.close()

    asyncio.run(run())
    c.stop()
    stop_gateway(g)


OK = {"code": 0, "msg": "ok", "delivered": 1, "forwarded": 0, "stored": 0}
RETRY = {"code": 10500, "msg": "MySQL failed"}


def test_failed_attempts_are_retried_on_another_gateway(bin_dir, stack, tmp_path, procs, stream,
                                                        fakes):
    # x: 10500 for the first request of each connection, drops it at the second
    x = fakes(lambda req, n: dict(RETRY) if n == 1 else "close")
    y = fakes(lambda req, n: dict(OK))
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream, gateways=x.addr + "," + y.addr)
    r = stack.redis()
    ids = publish(r, stream, [work_order(uid(), "retry %d" % i) for i in range(30)])
    wait_sync(lambda: pending(r, stream) == 0, 20, "every entry to be XACKed")
    assert dead_letters(r, stream) == []
    assert all(y.seen(i) >= 1 for i in ids)
    assert any(x.seen(i) for i in ids), "the failing gateway got no request"
    log = c.stop()
    assert "answered code 10500" in log and "connection lost" in log


def test_the_request_is_the_producers_object_plus_the_entry_id(bin_dir, stack, tmp_path, procs,
                                                               stream, fakes):
    """The entry id is added to the producer's text as it is (pretty-printed,
    trailing newline); a msg_id the producer put there itself is overridden;
    the consumer asks for the browsers' ACKs (handoff)."""
    requests = []
    x = fakes(lambda req, n: requests.append(req) or dict(OK))
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream, gateways=x.addr)
    r = stack.redis()
    order = json.loads(work_order("someone", "pretty \u00e9 \"quoted\""))
    text = json.dumps(dict(order, msg_id="producer-chosen"), indent=2) + "\n\t "
    (entry_id,) = publish(r, stream, [text])
    wait_sync(lambda: pending(r, stream) == 0, 20, "the XACK")
    assert len(requests) == 1
    assert requests[0] == dict(order, msg_id=entry_id, handoff=True)
    c.stop()


def test_a_reply_without_msg_id_blames_no_entry_of_several(bin_dir, stack, tmp_path, procs,
                                                          stream, fakes):
    """A refusal that names no msg_id while two requests are in flight (as a
    gateway that cannot tell the id of text that is not JSON sends): neither
    entry is dead-lettered for it; both time out and succeed on a retry."""
    asked = []    # over every connection: a lost one is opened again

    def rule(req, n):
        asked.append(req["msg_id"])
        if len(asked) == 1:
            return None                      # the first waits, in flight
        if len(asked) == 2:
            return {"code": 10102, "msg": "not a JSON object", "msg_id": None}
        return dict(OK)

    x = fakes(rule)
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream, gateways=x.addr,
                       reply_timeout_ms=500)
    r = stack.redis()
    ids = publish(r, stream, [work_order(uid(), "first"), work_order(uid(), "second")])
    wait_sync(lambda: pending(r, stream) == 0, 20, "both entries XACKed")
    assert dead_letters(r, stream) == []
    assert all(x.seen(i) >= 2 for i in ids)   # each retried after its timeout
    c.stop()


def test_gives_up_after_max_deliveries(bin_dir, stack, tmp_path, procs, stream, fakes):
    x = fakes(lambda req, n: dict(RETRY))
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream, gateways=x.addr, max_deliveries=3)
    r = stack.redis()
    (entry_id,) = publish(r, stream, [work_order("someone", "never")])
    wait_sync(lambda: dead_letters(r, stream), 20, "the dead letter")
    wait_sync(lambda: pending(r, stream) == 0, 10, "the XACK")
    (_, fields), = dead_letters(r, stream)
    assert fields["source_id"] == entry_id and fields["deliveries"] == "3"
    assert "gave up after 3 deliveries" in fields["reason"] and "10500" in fields["reason"]
    assert x.seen(entry_id) == 3
    c.stop()


def test_no_reply_in_time_is_a_failed_attempt(bin_dir, stack, tmp_path, procs, stream, fakes):
    silent = fakes(lambda req, n: None)
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream, gateways=silent.addr,
                       reply_timeout_ms=300, max_deliveries=2)
    r = stack.redis()
    (entry_id,) = publish(r, stream, [work_order("someone", "unanswered")])
    wait_sync(lambda: dead_letters(r, stream), 20, "the dead letter")
    wait_sync(lambda: pending(r, stream) == 0, 10, "the XACK")
    (_, fields), = dead_letters(r, stream)
    assert "no reply" in fields["reason"], fields
    assert silent.seen(entry_id) == 2
    c.stop()


@pytest.mark.parametrize("n", [1, 10])
def test_sigterm_waits_for_replies_in_flight_and_acks_them(bin_dir, stack, tmp_path, procs, stream,
                                                          fakes, n):
    def slow_first(req, n):
        if n == 1:
            time.sleep(0.5)
        return dict(OK)

    x = fakes(slow_first)
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream, gateways=x.addr)
    r = stack.redis()
    ids = publish(r, stream, [work_order(uid(), "in flight %d" % i) for i in range(n)])
    wait_sync(lambda: x.msg_ids, 10, "the first request at the gateway")
    # Redis may hand the first entry to the blocked read alone: all n read first
    wait_sync(lambda: r.xpending(stream, GROUP)["pending"] == n, 10, "every entry read")
    c.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    later = publish(r, stream, [work_order(uid(), "after the stop")])
    log = c.stop(signal_it=False)
    assert "waiting for %d requests in flight" % n in log
    assert r.xpending(stream, GROUP)["pending"] == 0, \
        "answered entries were not XACKed before the exit"
    assert sorted(set(x.msg_ids)) == sorted(ids)
    assert later[0] not in x.msg_ids

"""No leaks and no memory errors under valgrind for a normal start, serve and
stop of the example servers (release build; ASan builds cannot run under
valgrind).  Every process of the node is checked: master, manager, workers
and task workers.  Also: release daemons run on jemalloc."""
import glob
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest

from engine_util import ADMIN_SECRET, VALGRIND, free_port, wait_until
from gateway_util import node_stats

RELEASE_BIN = os.environ.get("PG_RELEASE_BIN", "")


def connect(port, timeout=30):
    deadline = time.time() + timeout
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.settimeout(10)
            return s
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data


def length_roundtrip(s, payload):
    s.sendall(struct.pack(">I", len(payload)) + payload)
    n = struct.unpack(">I", recv_exact(s, 4))[0]
    return recv_exact(s, n)


@pytest.mark.skipif(not RELEASE_BIN or not shutil.which("valgrind"),
                    reason="needs PG_RELEASE_BIN and valgrind")
@pytest.mark.parametrize("name", ["echo_server", "task_server"])
def test_start_serve_stop_is_clean_under_valgrind(tmp_path, name):
    port = free_port()
    logs = str(tmp_path / "vg.%p")
    proc = subprocess.Popen(
        VALGRIND + ["--trace-children=yes", "--log-file=" + logs, os.path.join(RELEASE_BIN, name),
         "--set", f"port={port}", "--set", "open_length_check=true",
         "--set", f"log_file={tmp_path / 'server.log'}"])
    try:
        s = connect(port)
        for i in range(20):
            payload = b"packet %d " % i + os.urandom(100 + i * 1000)
            reply = length_roundtrip(s, payload)
            assert reply.endswith(payload)
        big = os.urandom(300 * 1024)
        assert length_roundtrip(s, big).endswith(big)
        s.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    reports = glob.glob(str(tmp_path / "vg.*"))
    assert len(reports) == 6  # master, manager, 2 workers, 2 task workers
    for path in reports:
        text = open(path).read()
        assert re.search(r"ERROR SUMMARY: 0 errors", text), text[-3000:]
        for kind in ("definitely", "indirectly"):
            m = re.search(kind + r" lost: ([\d,]+) bytes", text)
            assert m is None or m.group(1) == "0", text[-3000:]


def _jwt(uuid, secret):
    import base64
    import hashlib
    import hmac
    import json
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
    head = enc(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = enc(json.dumps({"sub": uuid, "exp": int(time.time()) + 600}).encode())
    sig = enc(hmac.new(secret.encode(), head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


@pytest.mark.skipif(not RELEASE_BIN or not shutil.which("valgrind"),
                    reason="needs PG_RELEASE_BIN and valgrind")
def test_gateway_is_clean_under_valgrind(tmp_path, stack):
    """A browser registers, gets two work orders pushed and acknowledges
    them (the first is looked up in MySQL, the second is answered from the
    route cache: route.c's two paths); then the node stops. Every process
    of the gateway must be free of errors and leaks."""
    import asyncio
    import json
    import websockets
    secret = "valgrind-secret-0123456789"
    stack.add_app("vg-token")
    port, internal = free_port(), free_port()
    logs = str(tmp_path / "vg.%p")
    proc = subprocess.Popen(
        VALGRIND + ["--trace-children=yes", "--log-file=" + logs, os.path.join(RELEASE_BIN, "pushgate-gateway"),
         "--set", f"port={port}", "--set", f"internal_port={internal}",
         "--set", "advertised_ip=127.0.0.1", "--set", f"jwt_secret={secret}",
         "--set", f"admin_secret={ADMIN_SECRET}",
         "--set", f"log_file={tmp_path / 'gateway.log'}"],
        env=dict(os.environ, **stack.env()))

    async def browse():
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws?token={_jwt('vg-agent', secret)}",
                                      open_timeout=30) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 30))["event"] == "ONLINE"
            s = connect(internal)
            wait_until(lambda: node_stats(port)["route_cache"]["trusted"], 60,
                       what="the route feed to work")
            for msg_id in ("vg-1", "vg-2"):
                hits = node_stats(port)["route_cache"]["hits"]
                req = json.dumps({"url": "/worksheet/send-message", "chat_token": "vg-token",
                                  "msg_id": msg_id, "data": [{"uuid": "vg-agent", "data": {"t": 1}}]})
                reply = json.loads(length_roundtrip(s, req.encode()))
                assert reply["code"] == 0 and reply["delivered"] == 1
                event = json.loads(await asyncio.wait_for(ws.recv(), 30))
                assert event["id"] == msg_id
                await ws.send(json.dumps({"event": "ACK", "data": {"id": msg_id}}))
            assert node_stats(port)["route_cache"]["hits"] > hits, "vg-2 was looked up"
            await ws.send(json.dumps({"event": "HEART_BEAT"}))
            await asyncio.wait_for(ws.recv(), 30)
            s.close()

    try:
        connect(port).close()
        asyncio.run(browse())
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
    reports = glob.glob(str(tmp_path / "vg.*"))
    assert len(reports) == 6
    for path in reports:
        text = open(path).read()
        assert re.search(r"ERROR SUMMARY: 0 errors", text), text[-3000:]
        for kind in ("definitely", "indirectly"):
            m = re.search(kind + r" lost: ([\d,]+) bytes", text)
            assert m is None or m.group(1) == "0", text[-3000:]


@pytest.mark.skipif(not RELEASE_BIN, reason="needs PG_RELEASE_BIN")
@pytest.mark.parametrize("name", ["pushgate-gateway", "pushgate-proxy", "pushgate-consumer"])
def test_release_daemons_run_on_jemalloc_with_its_settings(name):
    """common/memory.c: one arena, no decay, read from its malloc_conf."""
    r = subprocess.run([os.path.join(RELEASE_BIN, name), "--help"],
                       env=dict(os.environ, MALLOC_CONF="stats_print:true"),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out
    for setting in ("opt.narenas: 1", "opt.dirty_decay_ms: 0", "opt.muzzy_decay_ms: 0"):
        assert setting in out, out[-2000:]


@pytest.mark.skipif(not RELEASE_BIN, reason="needs PG_RELEASE_BIN")
def test_release_memory_unit_tests():
    """tests/unit/test_memory.c as the release build has it: jemalloc, a
    freed burst given back by pg_memory_trim, and the consumer's
    pg_memory_keep_freed on every arena jemalloc has made."""
    exe = os.path.normpath(os.path.join(RELEASE_BIN, "..", "tests", "test_memory"))
    if not os.access(exe, os.X_OK):
        pytest.skip("no release build of test_memory (make BUILD=release all)")
    r = subprocess.run([exe], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0 and "PASSED  ] 4 test(s)" in out, out

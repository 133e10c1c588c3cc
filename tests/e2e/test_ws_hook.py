"""End-to-end tests of the gateway's HTTP + WebSocket hook (gateway/ws.c,
common/token.c) through examples/ws_echo.c, built with ASan + UBSan.

ws_echo's worker answers 'O' + uuid with {"event":"ONLINE","uuid":...},
echoes text ("close" closes with 4001 "bye") and answers other HTTP requests
with 200 and the request line.  One node serves the module (its sanitizer
logs are checked at the end); after every test a new client must still get
through.  Well-formed clients use python3-websockets (10.4: asyncio API);
malformed ones are raw sockets.  Every wait is bounded."""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import struct
import sys
import time

import pytest
import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import HOST, start_server  # noqa: E402
import ws_client  # noqa: E402
from ws_client import ACCEPT, KEY, Raw, b64url, frame, upgrade_request  # noqa: E402,F401

SECRET = "ws-test-secret"
GOOD_ORIGIN = "http://good.example"
HEADER_TIMEOUT_MS = 1000
MAX_HEADER_SIZE = 4096
MAX_MESSAGE = 1024
OUTPUT_LIMIT = 64 * 1024
IO_TIMEOUT = 5.0


# ---- tokens ----

def make_token(payload, secret=SECRET, alg="HS256"):
    return ws_client.make_token(payload, secret, alg)


def token_for(uuid, ttl=3600, **kw):
    return make_token({"sub": uuid, "exp": int(time.time()) + ttl}, **kw)


def online(raw):
    """The ONLINE event the worker sends after the upgrade."""
    payload, others = raw.read_until(0x1)
    assert not others
    msg = json.loads(payload)
    assert msg["event"] == "ONLINE"
    return msg["uuid"]


# ---- asyncio client ----

def run(coro, timeout=15):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ws_url(port, token=None, path="/ws"):
    url = "ws://%s:%d%s" % (HOST, port, path)
    return url + ("?token=" + token if token is not None else "")


async def ws_connect(port, token=None, origin=GOOD_ORIGIN):
    return await websockets.connect(ws_url(port, token), origin=origin, open_timeout=IO_TIMEOUT,
                                    close_timeout=IO_TIMEOUT, max_size=None)


async def echo_roundtrip(port):
    ws = await ws_connect(port)
    try:
        event = json.loads(await asyncio.wait_for(ws.recv(), IO_TIMEOUT))
        assert event == {"event": "ONLINE", "uuid": ""}
        await ws.send("still there?")
        assert await asyncio.wait_for(ws.recv(), IO_TIMEOUT) == "still there?"
    finally:
        await ws.close()


# ---- the node ----

@pytest.fixture(scope="module")
def node(bin_dir, tmp_path_factory):
    s = start_server(bin_dir, "ws_echo", tmp_path_factory.mktemp("ws_echo"),
                     worker_num=2, task_worker_num=0, jwt_secret=SECRET,
                     allowed_origins="http://other.example, " + GOOD_ORIGIN,
                     header_timeout_ms=HEADER_TIMEOUT_MS, max_header_size=MAX_HEADER_SIZE,
                     max_message=MAX_MESSAGE, buffer_output_size=OUTPUT_LIMIT)
    try:
        yield s
        s.stop()
        s.check_clean()
    finally:
        s.kill_all()


@pytest.fixture
def port(node):
    """The node's port; after the test, a new client must still be served."""
    yield node.port
    assert node.proc.poll() is None, "ws_echo exited:\n" + node.sanitizer_text()[-4000:]
    run(echo_roundtrip(node.port))


@pytest.fixture
def raw(port):
    clients = []

    def make():
        c = Raw(port)
        clients.append(c)
        return c
    yield make
    for c in clients:
        c.close()


# ---- the upgrade and auth ----

def test_valid_token_gets_online_and_echo(port):
    async def go():
        ws = await ws_connect(port, token_for("agent-7@site.example"))
        try:
            event = json.loads(await asyncio.wait_for(ws.recv(), IO_TIMEOUT))
            assert event == {"event": "ONLINE", "uuid": "agent-7@site.example"}
            for text in ["hello", "你有一条新工单待处理", "x" * MAX_MESSAGE, ""]:
                await ws.send(text)
                assert await asyncio.wait_for(ws.recv(), IO_TIMEOUT) == text
        finally:
            await ws.close()
        assert ws.close_code == 1000
    run(go())


def test_no_token_opens_with_empty_uuid(port):
    async def go():
        ws = await ws_connect(port, origin=None)   # no Origin header: not a browser
        try:
            event = json.loads(await asyncio.wait_for(ws.recv(), IO_TIMEOUT))
            assert event == {"event": "ONLINE", "uuid": ""}
        finally:
            await ws.close()
    run(go())


def test_token_percent_encoded(raw):
    tok = token_for("agent-1").replace(".", "%2E")
    r = raw()
    r.handshake(path="/ws?x=1&token=" + tok + "&y=2")
    assert online(r) == "agent-1"


@pytest.mark.parametrize("why,token", [
    ("expired", lambda: token_for("agent-1", ttl=-10)),
    ("forged", lambda: token_for("agent-1", secret="not-the-secret")),
    ("alg none", lambda: make_token({"sub": "agent-1", "exp": int(time.time()) + 60}, alg="none")),
    ("HS512", lambda: token_for("agent-1", alg="HS512")),
    ("no exp", lambda: make_token({"sub": "agent-1"})),
    ("bad sub", lambda: token_for("agent 1/../x")),
    ("garbage", lambda: "not-a-token"),
])
def test_bad_token_gets_401_before_upgrade(raw, why, token):
    r = raw()
    r.send(upgrade_request("/ws?token=" + token()))
    status, headers, body = r.read_response()
    assert status == 401, (why, status, body)
    assert headers["connection"].lower() == "close"
    assert b"unauthorized" in body
    assert r.wait_eof()


def test_wrong_version_gets_426(raw):
    r = raw()
    r.send(upgrade_request(version="8"))
    status, headers, _ = r.read_response()
    assert status == 426
    assert headers["sec-websocket-version"] == "13"
    assert r.wait_eof()


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n",                               # no key
    upgrade_request(key="c2hvcnQ="),                                     # key not 16 bytes
    upgrade_request().replace(b"Connection: Upgrade", b"Connection: keep-alive"),
    upgrade_request().replace(b"GET", b"PUT"),
    upgrade_request().replace(b"HTTP/1.1", b"HTTP/1.0"),
    upgrade_request().replace(b"Host: %s\r\n" % HOST.encode(), b""),      # HTTP/1.1 without Host
    b"GET /ws HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
])
def test_malformed_request_gets_400(raw, request_bytes):
    r = raw()
    r.send(request_bytes)
    status, headers, _ = r.read_response()
    assert status == 400
    assert headers["connection"].lower() == "close"
    assert r.wait_eof()


def test_bad_origin_gets_403(raw):
    r = raw()
    r.send(upgrade_request(origin="http://evil.example"))
    status, _, body = r.read_response()
    assert status == 403
    assert r.wait_eof()
    r2 = raw()
    r2.handshake(origin="http://other.example")   # the other allowed one
    assert online(r2) == ""


def test_slow_headers_get_408_within_header_timeout(raw):
    r = raw()
    start = time.monotonic()
    r.send(upgrade_request()[:40])
    status, headers, _ = r.read_response(timeout=HEADER_TIMEOUT_MS / 1000 + 3)
    elapsed = time.monotonic() - start
    assert status == 408
    assert HEADER_TIMEOUT_MS / 1000 - 0.2 <= elapsed <= HEADER_TIMEOUT_MS / 1000 + 2
    assert r.wait_eof()


def test_silent_client_gets_408_from_accept(raw):
    """The header clock starts at accept (the on_open hook), not at the first byte."""
    r = raw()
    start = time.monotonic()
    status, headers, _ = r.read_response(timeout=HEADER_TIMEOUT_MS / 1000 + 3)
    assert status == 408
    assert time.monotonic() - start <= HEADER_TIMEOUT_MS / 1000 + 2
    assert r.wait_eof()


def test_headers_trickling_in_still_time_out(raw):
    r = raw()
    start = time.monotonic()
    req = upgrade_request(extra="X-Pad: " + "p" * 200 + "\r\n")
    i = 0
    closed = False
    while time.monotonic() - start < HEADER_TIMEOUT_MS / 1000 + 2 and i < len(req) - 4:
        try:
            r.send(req[i:i + 4])
        except OSError:
            closed = True
            break
        i += 4
        time.sleep(0.05)
        if r.buf or r.wait_eof(0.001):
            break
    if not closed:
        status, _, _ = r.read_response(timeout=3)
        assert status == 408
    assert time.monotonic() - start < HEADER_TIMEOUT_MS / 1000 + 2


def test_oversized_headers_get_431(raw):
    r = raw()
    r.send(upgrade_request(extra="X-Big: " + "a" * MAX_HEADER_SIZE + "\r\n"))
    status, _, _ = r.read_response()
    assert status == 431
    assert r.wait_eof()


def test_oversized_url_gets_431(raw):
    r = raw()
    r.send(b"GET /" + b"a" * (MAX_HEADER_SIZE + 10))      # not even a complete request line
    status, _, _ = r.read_response()
    assert status == 431
    assert r.wait_eof()


def test_request_body_gets_413(raw):
    r = raw()
    r.send(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    status, _, _ = r.read_response()
    assert status == 413
    assert r.wait_eof()
    r2 = raw()
    r2.send(b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    status, _, _ = r2.read_response()
    assert status == 413


# ---- plain HTTP ----

def test_healthz_goes_to_the_worker(raw):
    r = raw()
    r.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = r.read_response()
    assert status == 200
    assert body == b"GET /healthz"
    assert r.wait_eof()
    r2 = raw()
    r2.send(b"GET /stats?pretty=1&x=%20 HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\n\r\n")
    status, _, body = r2.read_response()
    assert status == 200 and body == b"GET /stats?pretty=1&x=%20"
    assert r2.wait_eof()
    assert r2.buf == b""                    # one request per connection


def test_ws_path_without_upgrade_is_plain_http(raw):
    r = raw()
    r.send(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = r.read_response()
    assert status == 200 and body == b"GET /ws"


# ---- frames ----

def test_unmasked_frame_gets_1002(raw):
    r = raw()
    r.handshake()
    assert online(r) == ""
    r.send(frame(0x1, "not masked", mask=False))
    code, _, others = r.read_close()
    assert code == 1002
    assert not others                       # and no echo
    assert r.wait_eof()


def test_invalid_utf8_gets_1007(raw):
    for bad in [b"\xc0\xaf", b"ok \xed\xa0\x80", b"\xf4\x90\x80\x80", b"abc\xe4\xbd"]:
        r = raw()
        r.handshake()
        assert online(r) == ""
        r.send(frame(0x1, bad))
        code, _, others = r.read_close()
        assert code == 1007, bad
        assert not others
        assert r.wait_eof()


def test_invalid_utf8_across_fragments_gets_1007(raw):
    r = raw()
    r.handshake()
    assert online(r) == ""
    r.send(frame(0x1, b"ok \xe4", fin=False) + frame(0x0, b"\xbd", fin=False) + frame(0x0, b"\x41", fin=True))
    code, _, others = r.read_close()
    assert code == 1007
    assert not others


def test_message_over_max_message_gets_1009(raw):
    r = raw()
    r.handshake()
    assert online(r) == ""
    r.send(frame(0x1, "y" * (MAX_MESSAGE + 1)))
    code, _, others = r.read_close()
    assert code == 1009
    assert not others
    assert r.wait_eof()


def test_fragments_over_max_message_get_1009(raw):
    r = raw()
    r.handshake()
    assert online(r) == ""
    half = MAX_MESSAGE // 2 + 1
    r.send(frame(0x1, "a" * half, fin=False) + frame(0x0, "b" * half, fin=True))
    code, _, _ = r.read_close()
    assert code == 1009


def test_binary_gets_1003(raw):
    r = raw()
    r.handshake()
    assert online(r) == ""
    r.send(frame(0x2, b"\x00\x01\x02"))
    code, _, others = r.read_close()
    assert code == 1003
    assert not others
    assert r.wait_eof()


def test_fragmented_text_is_joined_with_ping_between(raw):
    r = raw()
    r.handshake()
    assert online(r) == ""
    r.send(frame(0x1, "hel", fin=False))
    r.send(frame(0x9, b"in-between"))             # control frames may come between fragments
    r.send(frame(0x0, "lo ", fin=False))
    r.send(frame(0x0, "w\u00f6rld", fin=True))
    payload, others = r.read_until(0x1)
    assert payload.decode() == "hello w\u00f6rld"
    assert others == [(0xA, b"in-between")]


def test_ping_gets_pong(raw):
    r = raw()
    r.handshake()
    assert online(r) == ""
    r.send(frame(0x9, b"are you there"))
    payload, others = r.read_until(0xA)
    assert payload == b"are you there"
    r.send(frame(0x1, "after ping"))
    payload, _ = r.read_until(0x1)
    assert payload == b"after ping"


def test_frames_sent_with_the_handshake_are_read(raw):
    r = raw()
    r.send(upgrade_request() + frame(0x1, "early") + frame(0x1, "bird"))
    status, headers, _ = r.read_response()
    assert status == 101
    texts = [r.read_until(0x1)[0] for _ in range(3)]
    assert json.loads(texts[0])["event"] == "ONLINE"
    assert texts[1:] == [b"early", b"bird"]


def test_frames_split_byte_by_byte(raw):
    r = raw()
    r.handshake()
    assert online(r) == ""
    data = frame(0x1, "slow " * 30)
    for i in range(len(data)):
        r.send(data[i:i + 1])
    payload, _ = r.read_until(0x1)
    assert payload == ("slow " * 30).encode()


# An idle connection holds no wslay context: it is made when a frame header is
# complete or a message must go out, and freed at a frame boundary with no
# fragmented message and nothing queued.  These cross that boundary in the
# awkward places: a header cut anywhere, the server sending while a header is
# half here, fragments and pings with pauses between them.

def trickle(r, data, pause=0.002):
    """One byte per send with a pause, so the server reads them one by one."""
    for i in range(len(data)):
        r.send(data[i:i + 1])
        time.sleep(pause)


def test_frames_of_every_length_form_split_byte_by_byte(raw):
    r = raw()
    r.handshake()
    assert online(r) == ""
    texts = ["s", "m" * 125, "x" * 126, "y" * 1000, ""]
    data = b"".join(frame(0x1, t) for t in texts[:2]) + frame(0x9, b"p") + \
        b"".join(frame(0x1, t) for t in texts[2:])
    trickle(r, data)
    got, others = [], []
    while len(got) < len(texts):
        payload, more = r.read_until(0x1)
        got.append(payload.decode())
        others += more
    assert got == texts
    assert others == [(0xA, b"p")]


def test_header_cut_while_the_server_sends(raw):
    """A frame and the first bytes of the next one's header (into its
    16-bit length) come together: the echo of the first goes out while
    the rest of the header waits; then the rest comes."""
    r = raw()
    r.handshake()
    assert online(r) == ""
    second = frame(0x1, "z" * 300)
    for cut in (1, 2, 3, 5, 7):
        r.send(frame(0x1, "first %d" % cut) + second[:cut])
        payload, _ = r.read_until(0x1)
        assert payload == b"first %d" % cut
        time.sleep(0.02)
        r.send(second[cut:])
        payload, _ = r.read_until(0x1)
        assert payload == b"z" * 300


def test_fragments_with_pings_and_pauses_between(raw):
    """Each fragment and ping in its own read, answered before the next is
    sent, with an echo of an earlier message going out in the middle."""
    r = raw()
    r.handshake()
    assert online(r) == ""
    r.send(frame(0x1, "before") + frame(0x1, "fr", fin=False))
    payload, _ = r.read_until(0x1)
    assert payload == b"before"                 # sent while a message is half here
    for i, part in enumerate(["ag", "me", "nt\u00e9"]):
        r.send(frame(0x9, b"ping %d" % i))
        payload, _ = r.read_until(0xA)
        assert payload == b"ping %d" % i
        time.sleep(0.02)
        trickle(r, frame(0x0, part, fin=(i == 2)))
    payload, others = r.read_until(0x1)
    assert payload.decode() == "fragment\u00e9"
    assert not others
    r.send(frame(0x9, b"after"))                # and the connection goes on
    assert r.read_until(0xA)[0] == b"after"


def test_utf8_and_size_checks_span_pauses_between_fragments(raw):
    r = raw()
    r.handshake()
    assert online(r) == ""
    r.send(frame(0x1, b"ok \xe4", fin=False))
    r.send(frame(0x9, b"wait"))
    assert r.read_until(0xA)[0] == b"wait"
    r.send(frame(0x0, b"\xbd", fin=False))
    r.send(frame(0x9, b"wait"))
    assert r.read_until(0xA)[0] == b"wait"
    r.send(frame(0x0, b"\x41", fin=True))       # \xe4\xbd\x41: broken across the pauses
    code, _, others = r.read_close()
    assert code == 1007
    assert not others

    r = raw()
    r.handshake()
    assert online(r) == ""
    half = MAX_MESSAGE // 2 + 1
    r.send(frame(0x1, "a" * half, fin=False))
    r.send(frame(0x9, b"wait"))
    assert r.read_until(0xA)[0] == b"wait"
    r.send(frame(0x0, "b" * half, fin=True))
    code, _, _ = r.read_close()
    assert code == 1009


def test_protocol_violations_get_1002(raw):
    """Reserved opcode, RSV bit, continuation without a start, a new message
    inside a fragmented one, fragmented or oversized control frames, close
    frames with a 1-byte payload or a code that must not be sent."""
    for f in [frame(0x3, b"x"), frame(0x1, b"x", rsv=0x40), frame(0x0, b"orphan continuation"),
              frame(0x1, b"a", fin=False) + frame(0x1, b"b"),
              frame(0x9, b"fragmented ping", fin=False), frame(0x9, b"p" * 126),
              frame(0x8, b"\x03"), frame(0x8, struct.pack(">H", 1005)),
              frame(0x8, struct.pack(">H", 999))]:
        r = raw()
        r.handshake()
        assert online(r) == ""
        r.send(f)
        code, _, _ = r.read_close()
        assert code == 1002, f[:2]


def test_client_close_is_echoed_and_connection_closed(raw):
    r = raw()
    r.handshake()
    assert online(r) == ""
    r.send(frame(0x8, struct.pack(">H", 1000) + b"done"))
    code, reason, _ = r.read_close()
    assert code == 1000
    assert r.wait_eof()


def test_worker_close_sends_4001(port):
    async def go():
        ws = await ws_connect(port)
        try:
            await asyncio.wait_for(ws.recv(), IO_TIMEOUT)
            await ws.send("close")
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), IO_TIMEOUT)
            assert ws.close_code == 4001
            assert ws.close_reason == "bye"
        finally:
            await ws.close()
    run(go())


def test_many_clients_at_once(port):
    async def one(i):
        ws = await ws_connect(port, token_for("agent-%d" % i))
        try:
            event = json.loads(await asyncio.wait_for(ws.recv(), IO_TIMEOUT))
            assert event["uuid"] == "agent-%d" % i
            for k in range(5):
                await ws.send("m%d-%d" % (i, k))
                assert await asyncio.wait_for(ws.recv(), IO_TIMEOUT) == "m%d-%d" % (i, k)
        finally:
            await ws.close()

    async def go():
        await asyncio.gather(*(one(i) for i in range(40)))
    run(go(), timeout=30)


def test_abrupt_disconnects_mid_handshake_and_mid_frame(raw):
    r = raw()
    r.send(upgrade_request()[:30])
    r.close()
    r = raw()
    r.handshake()
    r.send(frame(0x1, "z" * 200)[:50])
    r.close()
    r = raw()
    r.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    r.close()


def test_slow_reader_over_buffer_output_size_is_closed(port):
    """The echoes pile up for a client that does not read: past
    buffer_output_size the engine closes the connection from inside the
    hook's send path."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(IO_TIMEOUT)
    s.connect((HOST, port))
    r = Raw.__new__(Raw)
    r.sock, r.buf, r.timeout = s, b"", IO_TIMEOUT
    try:
        r.handshake()
        msg = frame(0x1, "e" * 1000)
        deadline = time.monotonic() + 10
        closed = False
        s.setblocking(False)
        while time.monotonic() < deadline and not closed:
            try:
                s.send(msg * 16)
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                closed = True
        assert closed, "the server kept queueing for a client that does not read"
    finally:
        r.close()


# ---- stopping ----

def test_server_stop_sends_1001(bin_dir, tmp_path):
    s = start_server(bin_dir, "ws_echo", tmp_path, worker_num=1, task_worker_num=0,
                     jwt_secret=SECRET)
    s.task_worker_num = 0
    try:
        r = Raw(s.port)
        r.handshake()
        assert online(r) == ""
        half = Raw(s.port)
        half.send(b"GET /ws HTTP/1.1\r\n")          # a request still being read
        time.sleep(0.2)
        s.snapshot()
        s.stopped = True
        s.send_signal(signal.SIGTERM)
        code, reason, _ = r.read_close(timeout=10)
        assert code == 1001
        assert r.wait_eof(10)
        assert half.wait_eof(10)
        r.close()
        half.close()
        s.wait_master_exit(20)
        assert s.exit_code == 0, s.sanitizer_text()[-4000:]
        s.check_clean()
    finally:
        s.kill_all()


def test_worker_close_racing_a_client_reset(bin_dir, tmp_path):
    """Clients send "close" and reset the connection at once: the worker's
    close reaches the reactor when writing the close frame fails."""
    s = start_server(bin_dir, "ws_echo", tmp_path, worker_num=1, task_worker_num=0,
                     jwt_secret=SECRET)
    try:
        for i in range(200):
            r = Raw(s.port)
            r.handshake()
            assert online(r) == ""
            r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            r.send(frame(0x1, "close"))
            time.sleep(0.0005 * (i % 4))
            r.close()
        run(echo_roundtrip(s.port))
        s.stop()
        s.check_clean()
    finally:
        s.kill_all()

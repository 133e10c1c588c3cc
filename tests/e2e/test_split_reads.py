"""End-to-end tests of messages split across TCP reads (common/server_reactor.c:
conn_consume / conn_process), built with ASan + UBSan.

A stream of several messages is sent in two parts: stream[:k], a pause of
0.3 s, then stream[k:], for every cut k inside the stream.  Each message must
be answered within 100 ms of its last byte having been sent: a message wholly
before the cut within 100 ms of the first send, the message holding the cut
(and those after it) within 100 ms of the second send.  The contract: bytes a
protocol hook or the framing keeps are offered again as soon as anything more
arrives, so no message waits for bytes that come after it.  A cut just inside
a message after a complete one (a WebSocket frame plus the first bytes of the
next header, "one\\ntw" then "o\\n") is where a held message shows.

Covered: the gateway's WebSocket (pushgate-gateway, gateway/ws.c and
gateway/browser.c), examples/ws_echo.c (the same hook), the line protocol of
examples/echo_server.c (a protocol hook), the engine's own length and EOF
framings (echo_server's main port) and the gateway's internal port in both of
its framings (gateway/internal.c).

Every cut has its own connection and all cuts of a test run at once, so a test
takes a second or two.  Servers are started once per module and must stop
cleanly (exit 0, no sanitizer report, no process left).  Every wait is
bounded: a test may fail, never hang."""
import collections
import json
import os
import socket
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import HOST, free_port, start_server  # noqa: E402
from gateway_util import Raw, frame, start_gateway, token_for, uid  # noqa: E402

PAUSE = 0.3       # seconds between the two parts of a stream
# A message must be answered this soon after its last byte: under PAUSE, so
# that one held until the second part arrives is caught, with room for a
# loaded machine (0.1 s was seen missed by a hair there).
PROMPT = 0.25
GIVE_UP = 1.0     # an answer missing this long after the second send is reported
IO_TIMEOUT = 5.0
WS_ECHO_SECRET = "split-reads-secret-0123456789"
EOF = b"\r\n\r\n"

# data: the bytes sent; want: the answer expected (see the parse functions);
# label: how failures name it
Message = collections.namedtuple("Message", "data want label")


# ---- connections ----

class Conn:
    """A socket, the bytes read but not yet parsed, and parse(buf) ->
    (answer, rest), or None while buf holds no whole answer."""

    def __init__(self, sock, parse, buf=b""):
        self.sock = sock
        self.parse = parse
        self.buf = buf

    def send(self, data):
        self.sock.settimeout(IO_TIMEOUT)
        self.sock.sendall(data)

    def answer(self, until):
        """The next answer, or None when none is whole by until (monotonic)."""
        while True:
            got = self.parse(self.buf)
            if got is not None:
                answer, self.buf = got
                return answer
            left = until - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                raise EOFError("closed by the server")
            self.buf += chunk

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def connect(port):
    sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


# ---- answers ----

def parse_line(buf):
    i = buf.find(b"\n")
    return None if i < 0 else (buf[:i].decode(errors="replace"), buf[i + 1:])


def parse_length(buf):
    if len(buf) < 4:
        return None
    n = struct.unpack(">I", buf[:4])[0]
    return None if len(buf) < 4 + n else (buf[4:4 + n], buf[4 + n:])


def parse_eof(buf):
    i = buf.find(EOF)
    return None if i < 0 else (buf[:i], buf[i + len(EOF):])


def parse_ws(buf):
    """A server frame (never masked) as "pong <payload>", "event <name>" or
    "error <code>" (JSON text), or "text <text>"."""
    if len(buf) < 2:
        return None
    op, n, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, at = struct.unpack(">H", buf[2:4])[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, at = struct.unpack(">Q", buf[2:10])[0], 10
    if len(buf) < at + n:
        return None
    payload, rest = buf[at:at + n], buf[at + n:]
    if op == 0xA:
        return "pong " + payload.decode(errors="replace"), rest
    if op != 0x1:
        return "opcode %d %r" % (op, payload[:60]), rest
    text = payload.decode(errors="replace")
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and "event" in obj:
        return "event %s" % obj["event"], rest
    if isinstance(obj, dict) and "code" in obj:
        return "error %s" % obj["code"], rest
    return "text " + text, rest


def internal_parser(split):
    """An internal reply ({"code":..,"msg":..,"msg_id":..}) as "code <code> msg_id <id>"."""
    def parse(buf):
        got = split(buf)
        if got is None:
            return None
        obj = json.loads(got[0])
        return "code %s msg_id %s" % (obj.get("code"), obj.get("msg_id")), got[1]
    return parse


# ---- cutting ----

def where(messages, cut):
    """Words for where cut falls in the stream."""
    start = 0
    for i, m in enumerate(messages):
        end = start + len(m.data)
        if cut == end:
            return "right after message %d (%s)" % (i, m.label)
        if cut < end:
            return "at byte %d of message %d (%s, %d bytes)" % (cut - start, i, m.label, len(m.data))
        start = end
    return "at the end"


def collect(conn, got, t0, until, n):
    """Appends (seconds since t0, answer) to got until n answers or until."""
    while len(got) < n:
        answer = conn.answer(until)
        if answer is None:
            return
        got.append((time.monotonic() - t0, answer))


def run_cut(conn, messages, cut):
    """Sends the stream cut at byte cut, PAUSE apart; the problems seen."""
    stream = b"".join(m.data for m in messages)
    got, problems = [], []
    t0 = time.monotonic()
    second = None
    try:
        conn.send(stream[:cut])
        collect(conn, got, t0, t0 + PAUSE, len(messages))
        second = time.monotonic() - t0
        conn.send(stream[cut:])
        collect(conn, got, t0, t0 + second + GIVE_UP, len(messages))
    except (OSError, EOFError) as e:
        problems.append("%s: %s" % (type(e).__name__, e))
    if second is None:
        return problems
    # answers to messages in order, each to the first open one that wants it
    answered = [None] * len(messages)
    for at, answer in got:
        for i, m in enumerate(messages):
            if answered[i] is None and m.want == answer:
                answered[i] = at
                break
        else:
            problems.append("unexpected answer %r at %.3f s" % (answer, at))
    end = 0
    for i, m in enumerate(messages):
        end += len(m.data)
        base, which = (0.0, "first") if end <= cut else (second, "second")
        if answered[i] is None:
            problems.append("message %d (%s): no %r within %g s of the second send" % (
                i, m.label, m.want, GIVE_UP))
        elif answered[i] - base > PROMPT:
            problems.append("message %d (%s): answered %.3f s after the %s send (wanted <= %g s)" % (
                i, m.label, answered[i] - base, which, PROMPT))
    return problems


def check_every_cut(open_conn, messages):
    """Runs every cut of the stream at once, one connection each (open_conn()
    makes one, ready for the stream), and fails naming every late or missing
    answer."""
    stream = b"".join(m.data for m in messages)
    cuts = list(range(1, len(stream)))
    pool = ThreadPoolExecutor(max_workers=len(cuts))
    opening = []
    try:
        opening = [pool.submit(open_conn) for _ in cuts]
        conns = [f.result(timeout=30) for f in opening]
        running = [pool.submit(run_cut, c, messages, k) for c, k in zip(conns, cuts)]
        results = [f.result(timeout=PAUSE + GIVE_UP + 2 * IO_TIMEOUT + 5) for f in running]
    finally:
        pool.shutdown(wait=True)
        for f in opening:       # every connection opened, also when some failed
            if not f.cancelled() and f.exception() is None:
                f.result().close()
    failed = ["cut %s: %s" % (where(messages, k), "; ".join(p))
              for k, p in zip(cuts, results) if p]
    if failed:
        pytest.fail("%d of %d cuts of a %d-byte stream failed:\n%s" % (
            len(failed), len(cuts), len(stream), "\n".join(failed[:20]) +
            ("\n..." if len(failed) > 20 else "")), pytrace=False)


# ---- servers ----

def stopped_cleanly(server):
    server.stop()
    server.check_clean()


@pytest.fixture(scope="module")
def gateway(bin_dir, stack, tmp_path_factory):
    g = start_gateway(bin_dir, stack, tmp_path_factory.mktemp("gateway"))
    try:
        yield g
        stopped_cleanly(g)
    finally:
        g.kill_all()


@pytest.fixture(scope="module")
def gateway_eof(bin_dir, stack, tmp_path_factory):
    """A gateway whose internal frames end with \\r\\n\\r\\n."""
    g = start_gateway(bin_dir, stack, tmp_path_factory.mktemp("gateway_eof"), internal_eof=True)
    try:
        yield g
        stopped_cleanly(g)
    finally:
        g.kill_all()


@pytest.fixture(scope="module")
def ws_echo(bin_dir, tmp_path_factory):
    s = start_server(bin_dir, "ws_echo", tmp_path_factory.mktemp("ws_echo"),
                     worker_num=2, task_worker_num=0, jwt_secret=WS_ECHO_SECRET)
    try:
        yield s
        stopped_cleanly(s)
    finally:
        s.kill_all()


@pytest.fixture(scope="module")
def echo_length(bin_dir, tmp_path_factory):
    """echo_server: length-prefixed main port, and the line protocol on line_port."""
    s = start_server(bin_dir, "echo_server", tmp_path_factory.mktemp("echo_length"),
                     worker_num=2, task_worker_num=0, open_length_check=True,
                     line_port=free_port())
    s.line_port = int(s.settings["line_port"])
    try:
        yield s
        stopped_cleanly(s)
    finally:
        s.kill_all()


@pytest.fixture(scope="module")
def echo_eof(bin_dir, tmp_path_factory):
    s = start_server(bin_dir, "echo_server", tmp_path_factory.mktemp("echo_eof"),
                     worker_num=2, task_worker_num=0, open_eof_split=True,
                     package_eof="\\r\\n\\r\\n")
    try:
        yield s
        stopped_cleanly(s)
    finally:
        s.kill_all()


# ---- WebSocket ----

def ws_open(port, path, online):
    """A raw WebSocket after the upgrade and its ONLINE event (online(event)
    checks it)."""
    r = Raw(port, IO_TIMEOUT)
    try:
        r.handshake(path=path)
        payload, others = r.read_until(0x1)
        assert not others, others
        event = json.loads(payload)
        assert event["event"] == "ONLINE", event
        online(event)
    except BaseException:
        r.close()
        raise
    return Conn(r.sock, parse_ws, r.buf)


def test_gateway_websocket(gateway):
    """A ping, HEART_BEAT, ACK without an id (error 10104) and HEART_BEAT,
    from an authenticated browser."""
    heart_beat = json.dumps({"event": "HEART_BEAT"})
    messages = [
        Message(frame(0x9, b"ping-1"), "pong ping-1", "ping"),
        Message(frame(0x1, heart_beat), "event HEART_BEAT", "HEART_BEAT"),
        Message(frame(0x1, json.dumps({"event": "ACK", "data": {}})), "error 10104",
                "ACK without id"),
        Message(frame(0x1, heart_beat), "event HEART_BEAT", "HEART_BEAT"),
    ]

    def open_conn():
        u = uid("split")

        def online(event):
            assert event["data"]["uuid"] == u, event
        return ws_open(gateway.port, "/ws?token=" + token_for(u), online)
    check_every_cut(open_conn, messages)


def test_ws_echo(ws_echo):
    """A ping and text frames, one with a 16-bit length, each echoed."""
    texts = ["alpha", "b" * 126, "gamma", "delta"]
    messages = [Message(frame(0x9, b"p"), "pong p", "ping")] + [
        Message(frame(0x1, t), "text " + t, repr(t) if len(t) < 10 else "%d-byte text" % len(t))
        for t in texts]

    def online(event):
        assert event["uuid"] == "", event
    check_every_cut(lambda: ws_open(ws_echo.port, "/ws", online), messages)


# ---- echo_server ----

def test_line_protocol(echo_length):
    """echo_server's line protocol (a protocol hook): every line comes back
    as "line: <data>"."""
    lines = ["alpha", "beta", "gamma", "delta"]
    messages = [Message(t.encode() + b"\n", "line: " + t, repr(t)) for t in lines]
    check_every_cut(lambda: Conn(connect(echo_length.line_port), parse_line), messages)


def test_length_framing(echo_length):
    packets = [b"alpha", b"beta", b"gamma", b"delta"]
    messages = [Message(struct.pack(">I", len(p)) + p, p, repr(p)) for p in packets]
    check_every_cut(lambda: Conn(connect(echo_length.port), parse_length), messages)


def test_eof_framing(echo_eof):
    packets = [b"alpha", b"beta", b"gamma", b"delta"]
    messages = [Message(p + EOF, p, repr(p)) for p in packets]
    check_every_cut(lambda: Conn(connect(echo_eof.port), parse_eof), messages)


# ---- the gateway's internal port ----

def internal_messages(wrap):
    """Requests answered at once, without MySQL: an unknown url (10202),
    malformed JSON (10102), no url (10104), an unknown url again."""
    requests = [
        (b'{"url":"/no/such/url","msg_id":"m0"}', "code 10202 msg_id m0", "unknown url"),
        (b'{"url": not json', "code 10102 msg_id None", "malformed JSON"),
        (b'{"msg_id":"m2"}', "code 10104 msg_id m2", "no url"),
        (b'{"url":"/no/such/url","msg_id":"m3"}', "code 10202 msg_id m3", "unknown url"),
    ]
    return [Message(wrap(data), want, label) for data, want, label in requests]


def test_internal_length_framing(gateway):
    messages = internal_messages(lambda d: struct.pack(">I", len(d)) + d)
    check_every_cut(lambda: Conn(connect(gateway.internal_port), internal_parser(parse_length)),
                    messages)


def test_internal_eof_framing(gateway_eof):
    messages = internal_messages(lambda d: d + EOF)
    check_every_cut(lambda: Conn(connect(gateway_eof.internal_port), internal_parser(parse_eof)),
                    messages)

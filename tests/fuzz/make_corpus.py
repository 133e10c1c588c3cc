#!/usr/bin/env python3
"""Writes the seed corpora in tests/fuzz/corpus/<target>/ from the messages
the test suite uses (tests/e2e/ws_client.py's frames and handshakes,
tests/e2e/test_gateway.py's internal requests and browser events,
tests/unit/test_token.c's forged tokens, config/*.ini).  Run it again after
changing it; inputs kept from fuzzing (regression cases) are files named
crash-*, leak-*, timeout-* or regress-* and are left alone."""
import base64, glob, hashlib, hmac, json, os, struct, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
import ws_client  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SECRET = b"fuzz-secret"     # the secret the targets check tokens with
EXP = 4102444800            # 2100-01-01: valid at any time the fuzzers use

def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")

def token(payload, secret=SECRET, alg="HS256", header=None):
    h = b64url(json.dumps(header or {"alg": alg, "typ": "JWT"}).encode())
    p = b64url(json.dumps(payload).encode())
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}.get(alg)
    sig = b64url(hmac.new(secret, h + b"." + p, digest).digest()) if digest else b""
    return h + b"." + p + b"." + sig

def frame(opcode, payload=b"", fin=True, mask=True):
    """ws_client's frame with a fixed masking key, so the seeds stay the same."""
    return ws_client.frame(opcode, payload, fin=fin, mask=mask, key=b"\x37\xfa\x21\x3d")

def upgrade(path="/ws", version="13", key="dGhlIHNhbXBsZSBub25jZQ==", origin=None, extra=""):
    r = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    r += f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n"
    if origin:
        r += f"Origin: {origin}\r\n"
    return (r + extra + "\r\n").encode()

def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

def js(o):
    return json.dumps(o, ensure_ascii=False).encode()

good = token({"sub": "agent-42", "exp": EXP})

# ---- jwt (tests/unit/test_token.c, issue 21's forged tokens) ----
jwt = {
    "valid": good,
    "valid_nbf": token({"sub": "a@b.c", "exp": EXP, "nbf": 1}),
    "alg_none": token({"sub": "agent", "exp": EXP}, alg="none"),
    "alg_None": token({"sub": "agent", "exp": EXP}, header={"alg": "None"}, alg="none"),
    "wrong_secret": token({"sub": "agent", "exp": EXP}, secret=b"another-secret"),
    "expired": token({"sub": "agent", "exp": 1}),
    "nbf_future": token({"sub": "agent", "exp": EXP, "nbf": EXP - 1}),
    "no_exp": token({"sub": "agent"}),
    "string_exp": token({"sub": "agent", "exp": str(EXP)}),
    "no_sub": token({"exp": EXP}),
    "sub_control": token({"sub": "age\nnt", "exp": EXP}),
    "sub_nul": token({"sub": "age\u0000nt", "exp": EXP}),
    "sub_long": token({"sub": "a" * 200, "exp": EXP}),
    "sub_number": token({"sub": 42, "exp": EXP}),
    "hs512": token({"sub": "agent", "exp": EXP}, alg="HS512"),
    "rs256": token({"sub": "agent", "exp": EXP}, header={"alg": "RS256", "typ": "JWT"}, alg="HS256"),
    "extra_segment": good + b".abc",
    "bad_shape": b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
    "junk": b"a..c",
}
for k, v in jwt.items():
    write("jwt", k, v)

# ---- ws_frames: what a browser sends after the handshake (tests/e2e/test_ws_hook.py) ----
hello = js({"event": "HEART_BEAT"})
ws = {
    "text": frame(1, hello),
    "text_empty": frame(1),
    "fragments": frame(1, b'{"event":', fin=False) + frame(0, b'"HEART_', fin=False) + frame(0, b'BEAT"}'),
    "ping_between_fragments": frame(1, b"ab", fin=False) + frame(9, b"p") + frame(0, b"cd"),
    "ping_pong": frame(9, b"ping") + frame(10, b"pong"),
    "close_1000": frame(8, struct.pack(">H", 1000) + b"bye"),
    "close_1byte": frame(8, b"\x03"),
    "close_1005": frame(8, struct.pack(">H", 1005)),
    "close_bad_utf8": frame(8, struct.pack(">H", 1000) + b"\xff"),
    "close_empty": frame(8),
    "unmasked": frame(1, hello, mask=False),
    "binary": frame(2, b"\x00\x01\x02"),
    "bad_utf8": frame(1, b"\xc3\x28"),
    "utf8_split": frame(1, "你有".encode()[:4], fin=False) + frame(0, "你有".encode()[4:]),
    "overlong": frame(1, b"\xc0\xaf"),
    "surrogate": frame(1, b"\xed\xa0\x80"),
    "too_big": frame(1, b"x" * 1100),
    "len16": frame(1, b"y" * 300),
    "len64_top_bit": b"\x81\xff\x80" + b"\0" * 7 + b"\x37\xfa\x21\x3d",
    "many_fragments": frame(1, b"a", fin=False) + b"".join(frame(0, b"b", fin=False) for _ in range(20)) + frame(0, b"c"),
    "control_fragmented": frame(9, b"p", fin=False),
    "control_long": frame(9, b"p" * 126),
    "continuation_first": frame(0, b"x"),
    "rsv": bytes([0xc1]) + frame(1, b"x")[1:],
    "reserved_opcode": frame(3, b"x"),
    "new_msg": frame(1, js({"event": "NEW_MSG", "data": {"to": "agent-7", "msg": "你好"}})),
    "two_messages": frame(1, hello) + frame(1, js({"event": "ACK", "data": {"id": "1-0"}})),
    "partial_header": frame(1, hello)[:1],
}
for k, v in ws.items():
    write("ws_frames", k, v)

# ---- http_upgrade: handshakes (tests/e2e/ws_client.py, test_ws_hook.py) ----
q = "/ws?token=" + good.decode()
http = {
    "upgrade": upgrade(),
    "upgrade_token": upgrade(q),
    "upgrade_token_escaped": upgrade("/ws?a=1&token=" + good.decode().replace(".", "%2E")),
    "upgrade_bad_token": upgrade("/ws?token=" + jwt["alg_none"].decode()),
    "upgrade_expired": upgrade("/ws?token=" + jwt["expired"].decode()),
    "upgrade_broken_escape": upgrade("/ws?token=ab%2"),
    "upgrade_origin_ok": upgrade(origin="https://app.example"),
    "upgrade_origin_bad": upgrade(origin="https://evil.example"),
    "upgrade_two_origins": upgrade(extra="Origin: https://app.example\r\nOrigin: http://x\r\n"),
    "upgrade_version_8": upgrade(version="8"),
    "upgrade_bad_key": upgrade(key="dGhlIHNhbXBsZSBub25jZQ="),
    "upgrade_keep_alive": upgrade(extra="").replace(b"Connection: Upgrade", b"Connection: keep-alive, Upgrade"),
    "upgrade_then_frames": upgrade() + frame(1, hello) + frame(8, struct.pack(">H", 1000)),
    "upgrade_post": upgrade().replace(b"GET", b"POST", 1),
    "upgrade_http10": upgrade().replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    "no_host": b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    "body": b"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    "chunked": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "healthz": b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "metrics_head": b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    "static": b"GET /index.html?x=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    "big_header": b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2100 + b"\r\n\r\n",
    "long_field": upgrade(extra="Sec-WebSocket-Extensions-And-Much-More: x\r\n"),
    "bad_request": b"GARBAGE\r\n\r\n",
    "connect": b"CONNECT host:443 HTTP/1.1\r\nHost: host:443\r\n\r\n",
}
for k, v in http.items():
    write("http_upgrade", k, v)

# ---- framing: first byte = options (framing.c), then the stream (tests/unit/test_frame.c) ----
def length_packets(*bodies):
    return b"".join(struct.pack(">I", len(b)) + b for b in bodies)

req = js({"url": "/worksheet/send-message", "chat_token": "demo-app-token", "msg_id": "1-0",
          "data": [{"uuid": "agent-1", "data": {"type": "new_worksheet_to_deal", "infos": "你有一条新工单待处理"}}]})
LEN, EOF = 0, 1
def opt(kind, marker=0, maxlen=5, one_byte_reads=False):
    return bytes([kind | marker << 1 | maxlen << 4 | (0x80 if one_byte_reads else 0)])
framing = {
    "length_one": opt(LEN) + length_packets(req),
    "length_two": opt(LEN) + length_packets(b"hello", b""),
    "length_partial": opt(LEN) + length_packets(req)[:20],
    "length_too_big": opt(LEN, maxlen=2) + length_packets(b"x" * 100),
    "length_bytewise": opt(LEN, one_byte_reads=True) + length_packets(b"abc", b"defg"),
    "eof_crlf2": opt(EOF, 0) + req + b"\r\n\r\n" + b"ping\r\n\r\n",
    "eof_newline": opt(EOF, 1) + b"a\nbb\n\nccc",
    "eof_nul": opt(EOF, 2) + b"x\0y\0",
    "eof_overlap": opt(EOF, 4) + b"aaabaab" + b"xaab",
    "eof_split_marker": opt(EOF, 0, one_byte_reads=True) + b"abc\r\n\r\ndef\r\n\r",
    "eof_too_long": opt(EOF, 0, maxlen=1) + b"x" * 40,
    "eof_ff": opt(EOF, 6) + b"a" + b"\xff" * 8 + b"b",
}
for k, v in framing.items():
    write("framing", k, v)

# ---- internal_request (tests/e2e/test_gateway.py, test_proxy.py) ----
APP = "demo-app-token"
cid = base64.b64encode(b"127.0.0.1_9503_4294967297").decode()
internal = {
    "send_message": req,
    "send_message_two": js({"url": "/worksheet/send-message", "chat_token": APP, "msg_id": "2-0", "handoff": True,
                            "data": [{"uuid": "u1", "data": {"infos": "a"}}, {"uuid": "u2", "data": "b"}]}),
    "no_data": js({"url": "/worksheet/send-message", "chat_token": APP, "msg_id": "r4"}),
    "empty_data": js({"url": "/worksheet/send-message", "chat_token": APP, "msg_id": "r5", "data": []}),
    "data_not_array": js({"url": "/worksheet/send-message", "chat_token": APP, "msg_id": "r6", "data": {"uuid": "x"}}),
    "no_uuid": js({"url": "/worksheet/send-message", "chat_token": APP, "msg_id": "r7", "data": [{"data": {}}]}),
    "long_uuid": js({"url": "/worksheet/send-message", "chat_token": APP, "msg_id": "r8", "data": [{"uuid": "u" * 64, "data": {}}]}),
    "no_msg_id": js({"url": "/worksheet/send-message", "chat_token": APP, "data": [{"uuid": "u", "data": {}}]}),
    "msg_id_number": js({"url": "/worksheet/send-message", "chat_token": APP, "msg_id": 7, "data": [{"uuid": "u", "data": {}}]}),
    "too_many": js({"url": "/worksheet/send-message", "chat_token": APP, "msg_id": "r", "data": [0] * 1001}),
    "deep": b'{"url":"/worksheet/send-message","chat_token":"t","msg_id":"d","data":[{"uuid":"u","data":' + b"[" * 500 + b"]" * 500 + b"}]}",
    "push_local": js({"url": "/chat/push-local", "chat_token": APP, "client_id": cid, "uuid": "agent-1",
                      "remote_data": {"event": "WorksheetMsg", "response": {"infos": "x"}, "id": "3-0"}, "msg_id": "3-0", "req_id": 5}),
    "push_local_chat": js({"url": "/chat/push-local", "chat_token": APP, "client_id": cid, "uuid": "agent-1",
                           "remote_data": {"event": "NEW_MSG", "data": {"from": "a", "msg": "hi", "id": "chat-1"}}}),
    "push_local_missing": js({"url": "/chat/push-local", "chat_token": APP, "msg_id": "r9"}),
    "unknown_url": js({"url": "/nope", "msg_id": "r10"}),
    "no_url": js({"chat_token": APP}),
    "url_number": js({"url": 1}),
    "not_object": b"[1,2,3]",
    "bad_json": b'{"url": "/worksheet/send-message",',
    "bad_json_msg_id_last": b'{"url":"/worksheet/send-message","x":tru,"handoff":true,"msg_id":"5-1@2"}',
}
for k, v in internal.items():
    write("internal_request", k, v)

# ---- browser_event: what tabs send (tests/e2e/test_gateway.py, test_gateway_limits.py) ----
browser = {
    "heart_beat": js({"event": "HEART_BEAT"}),
    "ack": js({"event": "ACK", "data": {"id": "o8ffac90001-1517"}}),
    "ack_no_id": js({"event": "ACK", "data": {}}),
    "ack_id_array": js({"event": "ACK", "data": {"id": ["x"]}}),
    "connect": js({"event": "CONNECT", "data": {"client_token": good.decode() if isinstance(good, bytes) else good}}),
    "connect_number": js({"event": "CONNECT", "data": {"client_token": 42}}),
    "chat": js({"event": "NEW_MSG", "data": {"to": "agent-2", "msg": "hi"}}),
    "chat_bad_to": js({"event": "NEW_MSG", "data": {"to": "bad uuid\n", "msg": 1}}),
    "chat_unicode": js({"event": "NEW_MSG", "data": {"to": "a@b.c", "msg": "\u00e9\U0001f600"}}),
    "unknown_event": js({"event": "PING"}),
    "no_event": js({"data": {}}),
    "array": b"[1,2]",
    "not_json": b"not json",
}
for k, v in browser.items():
    write("browser_event", k, v)

# ---- config: the example INI files, and --set lines ----
for path in sorted(glob.glob(os.path.join(ROOT, "config", "*.ini"))):
    with open(path, "rb") as f:
        write("config", os.path.basename(path), f.read()[:4000])
config = {
    "every_type": "[mine]\ncount = 7\nflag = yes\nsize = 2M\nname = \"quoted ; value\"\nmarker = \\r\\n\\x00\nlevel = warn\n",
    "set_lines": "worker_num=2\nreactor_num=1\nsize=64KiB\nmarker=\\xff\\\\\n",
    "errors": "count = 1001\nflag = maybe\nsize = 1T\nlevel = loud\nunknown = 1\n",
    "unterminated": "name = \"abc ; comment\"\n",
    "indent_sections": "[a]\n  count = -10\n[b]\n\tname =\n",
    "long_line": "name = " + "x" * 300 + "\n",
    "syntax": "[unclosed\nnovalue\n= 3\n",
}
for k, v in config.items():
    write("config", k, v)

# ---- sentinel: sentinels' and servers' answers (tests/unit/test_redis_sentinel.c) ----
def bulk(s):
    return b"$%d\r\n%s\r\n" % (len(s), s)

sentinel = {
    "master_addr": b"*2\r\n" + bulk(b"127.0.0.1") + bulk(b"6380"),
    "master_v6": b"*2\r\n" + bulk(b"fe80::1") + bulk(b"6380"),
    "master_unknown": b"*-1\r\n",
    "master_error": b"-ERR unknown command 'SENTINEL'\r\n",
    "master_bad_port": b"*2\r\n" + bulk(b"127.0.0.1") + bulk(b"999999"),
    "master_int_port": b"*2\r\n" + bulk(b"127.0.0.1") + b":6379\r\n",
    "master_nested": b"*2\r\n*1\r\n" + bulk(b"a") + bulk(b"6379"),
    "role_master": b"*3\r\n" + bulk(b"master") + b":3129659\r\n*1\r\n*3\r\n" +
                   bulk(b"127.0.0.1") + bulk(b"6380") + bulk(b"3129242"),
    "role_replica": b"*5\r\n" + bulk(b"slave") + bulk(b"127.0.0.1") + b":6379\r\n" +
                    bulk(b"connected") + b":3167038\r\n",
    "role_sentinel": b"*2\r\n" + bulk(b"sentinel") + b"*1\r\n" + bulk(b"pushgate"),
    "two_replies": b"+OK\r\n*2\r\n" + bulk(b"10.0.0.2") + bulk(b"6379"),
    "switch_master": b"pushgate 127.0.0.1 6379 127.0.0.1 6380",
    "switch_other": b"other 10.0.0.1 6379 10.0.0.2 6379",
    "settings": b"10.0.0.11:26379, sentinel-2:26379,[::1]:26379",
}
for k, v in sentinel.items():
    write("sentinel", k, v)
# ---- route_task: the route task and its answer (gateway/route_task.c) ----
def rstr(s):
    if s is None:
        return struct.pack("<I", 0xFFFFFFFF)
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<I", len(b)) + b + b"\0"

def rhead(op, t0=123456, t_in=0):
    return struct.pack("<BQQ", op, t0, t_in)

def route_task(orders, batch=7):
    out = rhead(1) + struct.pack("<QI", batch, len(orders))
    for token, kind, sender, msg_id, to, uuids in orders:
        out += rstr(token) + struct.pack("<BQ", kind, sender) + rstr(msg_id) + rstr(to)
        out += struct.pack("<I", len(uuids)) + b"".join(rstr(u) for u in uuids)
    return out

def routed(orders, batch=7):
    out = rhead(2) + struct.pack("<QI", batch, len(orders))
    for kind, sender, msg_id, to, code, entries in orders:
        out += struct.pack("<BQ", kind, sender) + rstr(msg_id) + rstr(to) + struct.pack("<II", code, len(entries))
        for item, where, session, port, ip, client_id in entries:
            out += struct.pack("<IBQI", item, where, session, port) + rstr(ip) + rstr(client_id)
    return out

route = {
    "task_worksheet": route_task([("token-1", 0, 5, "1700000000000-0", "", ["agent-1", "agent-2"])]),
    "task_chat": route_task([(None, 1, 9, "c-1", "agent-3", ["agent-3"])]),
    "task_two": route_task([("t", 0, 5, "m-1", "", ["a"]), ("t", 0, 5, "m-2", "", [])]),
    "answer": routed([(0, 5, "m-1", "", 0, [(0, 0, 11, 9501, None, None),
                                             (1, 1, 12, 9601, "10.0.0.2", "10.0.0.2:9601:c"),
                                             (1, 2, 0, 0, None, None)])]),
    "answer_error": routed([(1, 9, "c-1", "agent-3", 2, [])]),
}
for k, v in route.items():
    write("route_task", k, v)
# ---- store_task: the store task and its answer (gateway/store_task.c) ----
def store_task(items, capped=1, keep_away=0):
    out = rhead(3) + struct.pack("<BQI", capped, keep_away, len(items))
    for uuid, msg_id, payload, ticket, hint, waiters in items:
        out += rstr(uuid) + rstr(msg_id) + rstr(payload) + struct.pack("<Q", ticket)
        out += rstr(hint[0] if hint else None) + struct.pack("<I", hint[1] if hint else 0)
        out += struct.pack("<I", len(waiters)) + b"".join(struct.pack("<IQ", w, t) for w, t in waiters)
    return out

def stored(code, n, pushes, waiters, tickets):
    out = rhead(4, 0) + struct.pack("<IQI", code, n, len(pushes))
    for session, uuid, msg_id, payload, ticket in pushes:
        out += struct.pack("<Q", session) + rstr(uuid) + rstr(msg_id) + rstr(payload) + struct.pack("<Q", ticket)
    out += struct.pack("<I", len(waiters)) + b"".join(struct.pack("<IQ", w, t) for w, t in waiters)
    out += struct.pack("<I", len(tickets)) + b"".join(struct.pack("<QII", *t) for t in tickets)
    return out

store = {
    "task_routed": store_task([("agent-1", "m-1", '{"id":"m-1"}', 3, None, []),
                               ("agent-2", "m-1:1", '{"id":"m-1:1"}', 3, ("10.0.0.2", 9601), [])]),
    "task_given_back": store_task([("agent-1", "m-2", "{}", 0, None, [(1, 77), (0, 78)])],
                                  capped=0, keep_away=12),
    "answer": stored(0, 2, [(5, "agent-1", "m-1", "{}", 3)], [(1, 77)], [(3, 2, 1)]),
    "answer_failed": stored(10500, 0, [], [(1, 77)], []),
}
for k, v in store.items():
    write("store_task", k, v)
# ---- session_task: the sessions' tasks and answers (gateway/session_task.c) ----
def sessions_task(op, items):
    out = rhead(op) + struct.pack("<I", len(items))
    for session, uuid, client_id, again in items:
        out += struct.pack("<Q", session) + rstr(uuid) + rstr(client_id) + struct.pack("<B", again)
    return out

def pages(op, task_worker, items):
    out = rhead(op, 0) + struct.pack("<II", task_worker, len(items))
    for session, uuid, code, again, online, more, after, messages in items:
        out += struct.pack("<Q", session) + rstr(uuid)
        out += struct.pack("<IBBBqI", code, again, online, more, after, len(messages))
        out += b"".join(rstr(m) + rstr(p) for m, p in messages)
    return out

def strings_task(op, pairs):
    return rhead(op) + struct.pack("<I", len(pairs)) + b"".join(b"".join(rstr(x) for x in p) for p in pairs)

session = {
    "register": sessions_task(5, [(11, "agent-1", "MTI3LjAuMC4xXzk1MDFfMTE=", 0),
                                  (12, "agent-2", "MTI3LjAuMC4xXzk1MDFfMTI=", 1)]),
    "unregister": sessions_task(9, [(11, "agent-1", "MTI3LjAuMC4xXzk1MDFfMTE=", 0)]),
    "page_asked": rhead(7) + struct.pack("<Q", 11) + rstr("agent-1") + struct.pack("<qB", 40, 1),
    "registered": pages(6, 1, [(11, "agent-1", 0, 0, 0, 1, 41, [("m-1", '{"id":"m-1"}'), ("m-2", "{}")]),
                               (12, "agent-2", 10500, 1, 0, 0, 0, [])]),
    "paged": pages(8, 1, [(11, "agent-1", 0, 0, 1, 0, 42, [("m-3", "{}")])]),
    "acks": strings_task(11, [("agent-1", "m-1"), ("agent-2", "m-9")]),
    "unregistered": strings_task(10, [("agent-1",), ("agent-2",)]),
    "token": rhead(14, t_in=99) + struct.pack("<Q", 3) + rstr("app-token") + struct.pack("<I", 0),
}
for k, v in session.items():
    write("session_task", k, v)
# ---- cluster_rows: the cluster view's answer (gateway/admin.c) ----
def col(v):
    if v is None:
        return struct.pack("<B", 0)
    if isinstance(v, int):
        return struct.pack("<Bq", 1, v)
    return struct.pack("<B", 2) + rstr(v)

def cluster_rows(nodes, daemons, ok=1, error=""):
    out = rhead(17, 0) + struct.pack("<QBB", 9, 0, ok) + rstr(error)
    for rows in (nodes, daemons):
        out += struct.pack("<I", len(rows)) + b"".join(b"".join(col(v) for v in row) for row in rows)
    return out

cluster_answers = {
    "rows": cluster_rows([("node-a", "10.0.0.1", 9501, 9601, "up", 120, "2026-12-05 10:00:00", 900,
                           '{"sessions":3}'),
                          ("node-b", "10.0.0.2", 9501, 9601, "down", 99000, None, None, None)],
                         [("consumer c1", "consumer", 400, '{"entries":1}'),
                          ("proxy p1", "proxy", 300, "[1]")]),
    "failed": cluster_rows([], [], ok=0, error="no connection to MySQL"),
}
for k, v in cluster_answers.items():
    write("cluster_rows", k, v)
print("corpus written")

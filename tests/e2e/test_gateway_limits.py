"""What one browser, or one odd row in the shared tables, can make a gateway
spend (pushgate-gateway, ASan + UBSan build, real MariaDB):

- a message sent as tiny fragments, before any token, must not make the
  master allocate many times the message limit, and all the incomplete
  messages of the node together stay under max_incomplete_bytes;
- ACKs of ids a session never received cost no MySQL work, so a flood of
  them delays no other browser's registration;
- a tab past browser_rate is told (10105) and closed with 1008, while ACKs
  of what it was pushed never count; chat messages past chat_per_minute or
  chat_max_bytes are refused; a uuid's tab past max_tabs_per_uuid is closed
  with 1008;
- an online_clients row whose uuid is cut inside a character, once
  truncated, and a chat message to a uuid no token could name, are refused
  cleanly.

Every wait is bounded; every gateway stopped must exit cleanly with no
sanitizer report."""
import asyncio
import json
import os
import socket
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import websockets  # noqa: E402
from gateway_util import (Internal, Raw, closed_with, db_exec, decode_client_id, frame,  # noqa: E402
                          http_get, offline_rows, online, recv_json, run, running_gateway,
                          send_json, token_for, uid, upgrade_request,
                          work_order, ws_connect)

APP_TOKEN = uid("app")
PACKAGE_MAX = 256 * 1024
FRAGMENT_COST = 64        # GW_WS_FRAGMENT_COST in gateway/ws.h


@pytest.fixture(scope="module")
def app(stack):
    stack.add_app(APP_TOKEN, name="limits")
    return APP_TOKEN


@pytest.fixture(scope="module")
def node(bin_dir, stack, app, tmp_path_factory):
    """One gateway: 2 workers, 2 task workers (1 is the writer of every
    session), messages up to 256 KB, 300 KB for all incomplete ones, no
    message rate (what a flood costs, when nothing cuts it off)."""
    with running_gateway(bin_dir, stack, tmp_path_factory.mktemp("limits"),
                         package_max_length="256K", max_incomplete_bytes="300K",
                         auth_timeout_ms=10000, worker_num=2, task_worker_num=2,
                         browser_rate=0) as g:
        yield g


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def opened(port):
    """A raw WebSocket without a token, past its handshake and ONLINE-less
    open (the gateway waits for CONNECT)."""
    r = Raw(port, timeout=10)
    r.send(upgrade_request())
    status, headers, _ = r.read_response()
    assert status == 101, (status, headers)
    return r


def tiny_fragments(total):
    """One text message of total bytes, sent as 1-byte fragments."""
    parts = [frame(0x1, b"x", fin=False)]
    parts += [frame(0x0, b"x", fin=False)] * (total - 2)
    parts.append(frame(0x0, b"x", fin=True))
    return b"".join(parts)


def send_all_quietly(sock, data):
    """Sends data until the peer closes (it may stop reading half way)."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass


# ---- fragments ----

def test_tiny_fragments_do_not_balloon_the_master(node):
    master = node.proc.pid
    before = rss_kb(master)
    data = tiny_fragments(PACKAGE_MAX)
    for _ in range(4):
        c = opened(node.port)
        sender = threading.Thread(target=send_all_quietly, args=(c.sock, data))
        sender.start()
        code, text, _ = c.read_close(timeout=30)
        assert code == 1009, (code, text)
        # The node's FIN: the connection has left the protocol, and its
        # charge the node's total; the next one must not meet it (1013).
        assert c.wait_eof(10), "no FIN after the close frame"
        c.close()
        sender.join(30)
    grown = rss_kb(master) - before
    # Without the per-fragment charge each connection held its 262,144
    # fragments: the master grew 35 MB per connection (ASan build).  With it,
    # a connection is refused after PACKAGE_MAX / (1 + FRAGMENT_COST)
    # fragments: about 0.8 MB each, most of it ASan's redzones and its
    # quarantine of freed blocks.
    assert grown < 4 * 4 * PACKAGE_MAX // 1024, "master grew %d KB" % grown


def test_incomplete_messages_share_a_bounded_total(node):
    g = node
    body = b"y" * (200 * 1024)
    big = frame(0x1, json.dumps({"event": "HEART_BEAT", "pad": body.decode()}).encode())
    cut = len(big) // 2
    a, b, c = opened(g.port), opened(g.port), opened(g.port)
    a.send(big[:cut])           # 200 KB charged at its header
    time.sleep(0.2)
    b.send(big[:cut])           # 400 KB would pass 300 KB
    code, text, _ = b.read_close(timeout=10)
    assert code == 1013, (code, text)
    a.send(big[cut:])           # a's message completes and is answered
    payload, _ = a.read_until(0x1, timeout=10)
    assert json.loads(payload)["code"] == 10103   # not signed in
    c.send(big)                 # the room is back
    payload, _ = c.read_until(0x1, timeout=10)
    assert json.loads(payload)["code"] == 10103
    for r in (a, b, c):
        r.close()


# ---- ACKs ----

def home_worker(session, worker_num):
    """The worker that sees a session's messages (server_internal.h)."""
    x = (session * 0x9E3779B97F4A7C15) % (1 << 64)
    return (x >> 32) % worker_num


def tasks_done(node):
    """Tasks the node's task workers have run so far."""
    status, _, body = http_get(node.port, "/stats")
    assert status == 200
    return sum(w["requests"] for w in json.loads(body)["task_workers"])


def test_unknown_acks_cost_nothing(node):
    """30,000 ACKs of ids never sent: no task for any of them, and browsers
    signing in meanwhile (on the other worker, so that only the task workers
    are shared) get ONLINE as fast as ever."""
    r = Raw(node.port, timeout=10)
    r.send(upgrade_request("/ws?token=" + token_for(uid("flood"))))
    status, _, _ = r.read_response()
    assert status == 101
    ev = json.loads(r.read_until(0x1)[0])
    assert ev["event"] == "ONLINE"
    flood_home = home_worker(decode_client_id(ev["data"]["client_id"])[2], 2)
    acks = b"".join(frame(0x1, json.dumps({"event": "ACK", "data": {"id": "x%d" % i}}))
                    for i in range(30000))
    tasks_before = tasks_done(node)

    async def onlines_during(sender):
        """Seconds to ONLINE of each browser on the other worker, and how
        many browsers in all, one after another while the flood is sent and
        for a second after."""
        took, browsers, end = [], 0, None
        while end is None or time.monotonic() < end:
            if end is None and not sender.is_alive():
                end = time.monotonic() + 1
            started = time.monotonic()
            ws, data = await online(node.port, uid("other"))
            elapsed = time.monotonic() - started
            browsers += 1
            await ws.close()
            if home_worker(decode_client_id(data["client_id"])[2], 2) != flood_home:
                took.append(elapsed)
        return took, browsers

    sender = threading.Thread(target=send_all_quietly, args=(r.sock, acks))
    sender.start()
    took, browsers = run(onlines_during(sender), timeout=60)
    sender.join(30)
    # the flooder is still served, after all its ACKs
    r.send(frame(0x1, json.dumps({"event": "HEART_BEAT"})))
    while json.loads(r.read_until(0x1, timeout=30)[0]).get("event") != "HEART_BEAT":
        pass
    r.close()
    assert took and max(took) < 0.5, "ONLINE took up to %.2f s during the flood" % max(took)
    # a registration and an unregister per browser: far below one per ACK
    assert tasks_done(node) - tasks_before < 2 * browsers + 100


def test_ack_of_a_message_gone_back_to_the_store_deletes_it(node, stack):
    """A message not ACKed within ack_timeout goes back to the store; its
    late ACK still deletes it, while an ACK of an id never sent is ignored."""
    g = node
    agent = uid("late")

    async def scenario():
        ws, _ = await online(g.port, agent)
        with Internal(g.internal_port) as internal:
            reply = await asyncio.to_thread(internal.call, work_order(
                "m-late-1", [(agent, {"type": "t", "infos": "late"})], APP_TOKEN))
        assert reply["code"] == 0, reply
        ev = await recv_json(ws)
        assert ev["id"] == "m-late-1"
        await wait_until_async(lambda: [m for m, _, _ in offline_rows(stack, agent)]
                               == ["m-late-1"], 10)
        await send_json(ws, {"event": "ACK", "data": {"id": "never-sent"}})
        await send_json(ws, {"event": "ACK", "data": {"id": "m-late-1"}})
        await wait_until_async(lambda: offline_rows(stack, agent) == [], 10)
        await ws.close()
    run(scenario())


async def wait_until_async(cond, timeout):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "not in %s s" % timeout
        await asyncio.sleep(0.05)


# ---- odd input from the tables and from browsers ----

def test_online_row_with_uuid_cut_inside_a_character(node, stack):
    """A table shared with other writers may compare uuids without regard to
    case (the seed's schema did): a row of KELVIN SIGNs then matches an
    order for "k"s, and cut to 63 bytes it is no longer UTF-8.  The order
    must be stored, and the task worker must survive it."""
    g = node
    agent = "a" + "k" * 39
    row_uuid = "a" + "\u212a" * 39            # 118 bytes, 40 characters
    db_exec(stack, "ALTER TABLE online_clients MODIFY uuid VARCHAR(64) "
                   "COLLATE utf8mb4_unicode_ci NOT NULL")
    try:
        db_exec(stack, "INSERT INTO online_clients (client_id, uuid, node_ip, node_port, "
                       "session_id) VALUES (%s, %s, '127.0.0.9', 1, 1)",
                ("cid-" + uid("k"), row_uuid))
        with Internal(g.internal_port) as internal:
            reply = internal.call(work_order("m-kelvin", [(agent, {"type": "t"})], APP_TOKEN))
        assert reply["code"] == 0, reply
        assert reply["stored"] == 1, reply
    finally:
        db_exec(stack, "DELETE FROM online_clients WHERE uuid = %s", (row_uuid,))
        db_exec(stack, "ALTER TABLE online_clients MODIFY uuid VARCHAR(64) "
                       "COLLATE utf8mb4_bin NOT NULL")
        db_exec(stack, "DELETE FROM offline_messages WHERE msg_id = 'm-kelvin'")


@pytest.mark.parametrize("to", ["bob\u0001'\"; drop", "with space", "x" * 64, "é", ""])
def test_chat_to_must_be_a_uuid_a_token_could_name(node, stack, to):
    g = node

    async def scenario():
        ws, _ = await online(g.port, uid("chat"))
        await send_json(ws, {"event": "NEW_MSG", "data": {"to": to, "msg": "hi"}})
        ev = await recv_json(ws)
        assert ev.get("code") == 10104, ev
        await ws.close()
    run(scenario())
    assert offline_rows(stack, to) == []


@pytest.fixture(scope="module")
def strict(bin_dir, stack, app, tmp_path_factory):
    """A gateway with small per-browser limits."""
    with running_gateway(bin_dir, stack, tmp_path_factory.mktemp("strict"), worker_num=2,
                         task_worker_num=2, browser_rate=5, browser_burst=10, chat_per_minute=3,
                         chat_max_bytes=64, max_tabs_per_uuid=2, flood_penalty_s=2) as g:
        yield g


async def heart_beat_round_trip(ws):
    started = time.monotonic()
    await send_json(ws, {"event": "HEART_BEAT"})
    assert (await recv_json(ws))["event"] == "HEART_BEAT"
    return time.monotonic() - started


def test_a_flooding_tab_is_told_then_closed_and_others_do_not_notice(strict):
    """HEART_BEATs every 2 ms (rate 5/s, burst 10): about the burst are
    answered, then error 10105 and a close with 1008; another tab's
    heartbeat is answered as fast as before, before and after.  The flood
    reads as it sends, as a browser does: a client that never reads could
    lose the close to the reset its next frames cause."""
    async def scenario():
        other, _ = await online(strict.port, uid("calm"))
        before = await heart_beat_round_trip(other)
        flooder = uid("flood")
        ws, _ = await online(strict.port, flooder)

        async def flood():
            for _ in range(1000):
                try:
                    await send_json(ws, {"event": "HEART_BEAT"})
                except websockets.ConnectionClosed:
                    return
                await asyncio.sleep(0.002)
        flooding = asyncio.create_task(flood())
        code, got = await closed_with(ws)
        await flooding
        events = [json.loads(m) for m in got]
        answered = sum(1 for e in events if e.get("event") == "HEART_BEAT")
        assert code == 1008, (code, events[-3:])
        assert events[-1].get("code") == 10105, events[-1]
        assert 10 <= answered <= 20, answered
        after = await heart_beat_round_trip(other)
        assert before < 0.5 and after < 0.5, (before, after)
        # its uuid is refused for flood_penalty_s (2 s), then let in again
        again = await ws_connect(strict.port, token_for(flooder))
        code, got = await closed_with(again)
        assert code == 1008 and got == [], (code, got)
        await asyncio.sleep(2.2)
        back, _ = await online(strict.port, flooder)
        await back.close()
        await other.close()
    run(scenario())


def test_acks_of_pushed_messages_never_count(strict, stack, app):
    """40 work orders pushed and ACKed as fast as they come: four times the
    burst, and the tab stays open with nothing left stored."""
    u = uid("acker")
    c = Internal(strict.internal_port)

    async def scenario():
        ws, _ = await online(strict.port, u)
        for i in range(40):
            msg_id = "ack-%d" % i
            reply = await asyncio.to_thread(c.call, work_order(msg_id, [(u, {"i": i})], app))
            assert reply["code"] == 0, reply
            assert (await recv_json(ws))["id"] == msg_id
            await send_json(ws, {"event": "ACK", "data": {"id": msg_id}})
        assert await heart_beat_round_trip(ws) < 1
        await ws.close()
    run(scenario())
    assert offline_rows(stack, u) == []


def test_chat_rate_and_size(strict, stack):
    """chat_per_minute 3: the fourth chat message within the minute gets
    10105, from the sender's other tab too, and a text over chat_max_bytes
    gets 10106; neither is stored."""
    to, sender = uid("inbox"), uid("chatty")

    async def scenario():
        ws, _ = await online(strict.port, sender)
        await send_json(ws, {"event": "NEW_MSG", "data": {"to": to, "msg": "x" * 65}})
        assert (await recv_json(ws)).get("code") == 10106
        codes = []
        for i in range(4):
            await send_json(ws, {"event": "NEW_MSG", "data": {"to": to, "msg": "hi %d" % i}})
            ev = await recv_json(ws)
            codes.append(ev["data"]["status"] if ev.get("event") == "NEW_MSG_STATUS"
                         else ev.get("code"))
        assert codes == ["stored", "stored", "stored", 10105], codes
        await ws.close()
        other_tab, _ = await online(strict.port, sender)
        await send_json(other_tab, {"event": "NEW_MSG", "data": {"to": to, "msg": "again"}})
        assert (await recv_json(other_tab)).get("code") == 10105
        await other_tab.close()
    run(scenario())
    assert sorted(r[1]["data"]["msg"] for r in offline_rows(stack, to)) == \
        ["hi 0", "hi 1", "hi 2"]


def test_tabs_past_max_tabs_per_uuid_are_closed(strict):
    """max_tabs_per_uuid 2: the third tab of a uuid is closed with 1008; once
    one of the two closes, a new one is let in."""
    u = uid("tabs")

    async def scenario():
        first, _ = await online(strict.port, u)
        second, _ = await online(strict.port, u)
        third = await ws_connect(strict.port, token_for(u))
        code, got = await closed_with(third)
        assert code == 1008 and got == [], (code, got)
        await first.close()
        for _ in range(50):
            try:
                again, _ = await online(strict.port, u)
                break
            except (AssertionError, websockets.ConnectionClosed):
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("no tab let in after one closed")
        await again.close()
        await second.close()
    run(scenario())


@pytest.fixture(scope="module")
def small_inbox(bin_dir, stack, app, tmp_path_factory):
    """A gateway whose recipients may hold 3 stored messages."""
    with running_gateway(bin_dir, stack, tmp_path_factory.mktemp("inbox"), worker_num=2,
                         task_worker_num=2, max_offline_per_uuid=3) as g:
        yield g


def test_a_full_inbox_refuses_new_messages_with_10206(small_inbox, stack, app):
    """max_offline_per_uuid 3: five chat messages to an offline uuid, three
    stored and two refused (NEW_MSG_STATUS failed, 10206); a work order for
    it then gets reply code 10206, one for another uuid is stored; the
    refusals are counted in /metrics."""
    to, other = uid("full"), uid("roomy")
    c = Internal(small_inbox.internal_port)

    async def scenario():
        ws, _ = await online(small_inbox.port, uid("sender"))
        got = []
        for i in range(5):
            await send_json(ws, {"event": "NEW_MSG", "data": {"to": to, "msg": "m%d" % i}})
            ev = await recv_json(ws)
            got.append((ev["data"]["status"], ev["data"]["code"]))
        await ws.close()
        assert got == [("stored", 0)] * 3 + [("failed", 10206)] * 2, got
    run(scenario())
    reply = c.call(work_order("full-1", [(to, {"k": 1})], app))
    assert reply["code"] == 10206, reply
    reply = c.call(work_order("roomy-1", [(other, {"k": 1})], app))
    assert reply["code"] == 0 and reply["stored"] == 1, reply
    assert len(offline_rows(stack, to)) == 3
    status, _, body = http_get(small_inbox.port, "/metrics")
    assert status == 200 and b"pushgate_inbox_refused_total 3\n" in body, body


def test_an_app_over_app_rate_gets_10207_then_is_served_again(bin_dir, stack, app, tmp_path):
    """app_rate 5, app_burst 5: of 8 work orders at once the first 5 are
    routed and 3 get 10207 (retry later); a second on, one more passes."""
    with running_gateway(bin_dir, stack, tmp_path, worker_num=2, task_worker_num=2, app_rate=5,
                         app_burst=5) as g, Internal(g.internal_port) as c:
        codes = [c.call(work_order("rate-%d" % i, [(uid("r"), {"i": i})], app))["code"]
                 for i in range(8)]
        assert codes == [0] * 5 + [10207] * 3, codes
        time.sleep(1.1)
        assert c.call(work_order("rate-8", [(uid("r"), {"i": 8})], app))["code"] == 0

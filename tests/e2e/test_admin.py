"""Operators' access to a running pushgate-gateway (ASan + UBSan build).

- /stats, /metrics and /admin/cluster on the public port need an operator
  token: admin_secret, or a JWT with "admin": true signed with jwt_secret (or
  jwt_secret_previous); no token or a forged one gets 401, a browser's token
  403; /healthz and the static pages stay public;
- the admin listener (admin_port, on loopback) serves them without a token
  and opens no WebSocket;
- /admin/cluster shows every node of gateway_nodes with its report from
  daemon_status: counters, orders per step over the last minutes, latency
  buckets of the last minute, which move when orders flow; without its
  tables it still answers, with this node alone and mysql.ok false;
- a clean stop removes the node's report; pushgate-ctl token --admin mints a
  token the gateway accepts."""
import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import ADMIN_SECRET, HOST, free_port, run_program, wait_until  # noqa: E402
from gateway_util import (SECRET, Internal, Raw, call, db_exec, db_rows, make_token,  # noqa: E402
                          online, recv_json, run, running_gateway, send_json, token_for, uid,
                          upgrade_request, work_order)
from test_tokens import FORGED, PREVIOUS  # noqa: E402

APP_TOKEN = uid("app")
OPERATOR_PATHS = ["/stats", "/metrics", "/admin/cluster"]
WWW = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                   "gateway", "www")


@pytest.fixture(scope="module")
def app(stack):
    stack.add_app(APP_TOKEN, name="admin")
    return APP_TOKEN


@pytest.fixture(scope="module")
def node_a(bin_dir, stack, app, tmp_path_factory):
    with running_gateway(bin_dir, stack, tmp_path_factory.mktemp("admin-a"),
                         jwt_secret_previous=PREVIOUS, static_dir=WWW,
                         admin_port=free_port()) as g:
        yield g


@pytest.fixture(scope="module")
def node_b(bin_dir, stack, app, tmp_path_factory):
    with running_gateway(bin_dir, stack, tmp_path_factory.mktemp("admin-b")) as g:
        yield g


def admin_jwt(name="ops", secret=SECRET, **claims):
    c = {"sub": name, "exp": int(time.time()) + 600, "admin": True}
    c.update(claims)
    return make_token({k: v for k, v in c.items() if v is not None}, secret)


def get(port, path, token=None, auth=None):
    """(status, headers, body) with Authorization: auth, or Bearer token."""
    header = auth if auth is not None else ("Bearer " + token if token else None)
    r = Raw(port)
    try:
        r.send(("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (
            path, HOST, "Authorization: %s\r\n" % header if header else "")).encode())
        return r.read_response()
    finally:
        r.close()


def cluster(port, token=ADMIN_SECRET):
    status, headers, body = get(port, "/admin/cluster", token)
    assert status == 200, (status, body)
    assert headers["content-type"] == "application/json"
    return json.loads(body)


# ---- who may read ----

@pytest.mark.parametrize("path", OPERATOR_PATHS)
def test_operator_paths_need_a_token(node_a, path):
    status, headers, body = get(node_a.port, path)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer"), (status, body)
    assert b"operator token" in body
    for auth in ("Bearer", "Bearer ", "Basic " + ADMIN_SECRET, "Bearer " + ADMIN_SECRET + "x",
                 "Bearer " + ADMIN_SECRET[:-1], "Bearer x" * 1000, ADMIN_SECRET):
        assert get(node_a.port, path, auth=auth)[0] == 401, auth
    status, _, body = get(node_a.port, path, token_for(uid()))
    assert status == 403 and b"not an operator" in body


@pytest.mark.parametrize("path", OPERATOR_PATHS)
def test_operator_tokens_open_them(node_a, path):
    for auth in ("Bearer " + ADMIN_SECRET, "bearer " + ADMIN_SECRET,
                 "Bearer " + admin_jwt(), "Bearer " + admin_jwt(secret=PREVIOUS)):
        status, _, body = get(node_a.port, path, auth=auth)
        assert status == 200, (auth, status, body[:200])


@pytest.mark.parametrize("why", sorted(FORGED))
def test_forged_tokens_get_401(node_a, why):
    """Every forgery test_tokens tries on the WebSocket, on /stats."""
    status, _, _ = get(node_a.port, "/stats", FORGED[why](uid()))
    assert status in (401, 431) if why == "oversized token" else status == 401


def test_admin_claim_must_be_true(node_a):
    for value in (False, "true", 1, None):
        status, _, _ = get(node_a.port, "/stats", admin_jwt(admin=value))
        assert status == 403, value
    assert get(node_a.port, "/stats", admin_jwt(exp=int(time.time()) - 5))[0] == 401
    assert get(node_a.port, "/stats", admin_jwt(secret="some-other-secret-0123456789"))[0] == 401


def test_public_paths_stay_public(node_a):
    assert get(node_a.port, "/healthz")[0] == 200
    for page in ("/", "/admin.html", "/pushgate.js"):
        status, _, _ = get(node_a.port, page)
        assert status in (200, 404), page     # the consoles hold no data
    assert get(node_a.port, "/index.html")[0] == 200


def test_tokens_are_not_logged(node_a):
    get(node_a.port, "/stats", admin_jwt())
    get(node_a.port, "/stats", ADMIN_SECRET)
    log = node_a.log()
    assert ADMIN_SECRET not in log and admin_jwt().split(".")[2] not in log


# ---- the admin listener ----

def test_admin_listener_serves_without_a_token(node_a):
    port = int(node_a.settings["admin_port"])
    for path in OPERATOR_PATHS + ["/healthz"]:
        status, _, body = get(port, path)
        assert status == 200, (path, status, body[:200])
    assert json.loads(get(port, "/stats")[2])["node"] == "%s:%s" % (HOST, node_a.internal_port)


def test_admin_listener_opens_no_websocket(node_a):
    port = int(node_a.settings["admin_port"])
    r = Raw(port)
    try:
        r.send(upgrade_request("/ws?token=" + token_for(uid())))
        status, _, _ = r.read_response()
        assert status == 404
    finally:
        r.close()


def test_admin_listener_is_on_loopback_only(node_a):
    port = int(node_a.settings["admin_port"])
    listening = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                listening.append(local.split(":")[0])
    assert listening == ["0100007F"], listening


def test_short_admin_secret_is_refused(bin_dir):
    r = run_program(bin_dir, "pushgate-gateway",
                    ["--set", "jwt_secret=" + SECRET, "--set", "admin_secret=short",
                     "--set", "advertised_ip=127.0.0.1"])
    assert r.returncode != 0
    assert "admin_secret must be empty or 16 characters or more" in r.stdout + r.stderr


# ---- the cluster ----

def node_of(view, g):
    want = "%s:%s" % (HOST, g.internal_port)
    found = [n for n in view["nodes"] if n["node_id"] == want]
    assert len(found) == 1, view["nodes"]
    return found[0]


def test_cluster_shows_every_node_with_its_report(node_a, node_b):
    def reported():
        view = cluster(node_a.port)
        return all(node_of(view, g)["status"] for g in (node_a, node_b)) and view
    view = wait_until(reported, 10, interval=0.5, what="both nodes' reports")
    assert view["mysql"] == {"ok": True, "error": ""}
    assert view["served_by"] == "%s:%s" % (HOST, node_a.internal_port)
    assert abs(view["now"] / 1000 - time.time()) < 5
    for g in (node_a, node_b):
        n = node_of(view, g)
        assert n["state"] == "up" and n["ws_port"] == g.port and n["ip"] == HOST
        assert 0 <= n["heartbeat_age_ms"] < 10000 and 0 <= n["status_age_ms"] < 10000
        st = n["status"]
        assert st["role"] == "gateway" and st["node"] == n["node_id"]
        assert st["mysql"]["ok"] is True
        hist = st["history"]
        assert hist["step_s"] == 2 and abs(hist["end"] - time.time()) < 10
        series = [hist[k] for k in ("in", "pushed", "forwarded", "stored", "acked")]
        assert len({len(s) for s in series}) == 1 and len(series[0]) <= 150
        lat = st["latency"]
        assert lat["window_s"] == 60 and len(lat["bounds"]) == 15
        assert lat["bounds"] == sorted(lat["bounds"])
    assert isinstance(view["daemons"], list)


def test_cluster_rates_and_latency_move_with_orders(node_a, app):
    internal = Internal(node_a.internal_port)
    agent = uid("agent")

    async def flow():
        ws, _ = await online(node_a.port, agent)
        for i in range(20):
            reply = await call(internal, work_order("m-admin-%d" % i, [(agent, {"type": "t"})], app))
            assert reply["code"] == 0, reply
            ev = await recv_json(ws)
            assert ev["event"] == "WorksheetMsg", ev
            await send_json(ws, {"event": "ACK", "data": {"id": ev["id"]}})
        await ws.close()
    try:
        run(flow())
    finally:
        internal.close()

    def moved():
        st = node_of(cluster(node_a.port), node_a)["status"]
        h, lat = st["history"], st["latency"]
        return (sum(h["in"]) >= 20 and sum(h["pushed"]) >= 20 and sum(h["acked"]) >= 20 and
                sum(lat.get("intake_to_push", [])) >= 20 and
                sum(lat.get("push_to_ack", [])) >= 20) and st
    wait_until(moved, 10, interval=0.5, what="history and latency with the 20 orders")


def test_cluster_without_its_tables_still_answers(node_a, stack):
    db_exec(stack, "RENAME TABLE daemon_status TO daemon_status_away")
    try:
        view = cluster(node_a.port)
    finally:
        db_exec(stack, "RENAME TABLE daemon_status_away TO daemon_status")
    assert view["mysql"]["ok"] is False and "daemon_status" in view["mysql"]["error"]
    assert [n["node_id"] for n in view["nodes"]] == ["%s:%s" % (HOST, node_a.internal_port)]
    assert view["nodes"][0]["status"]["connections"] >= 0 and view["daemons"] == []
    wait_until(lambda: cluster(node_a.port)["mysql"]["ok"], 10, interval=0.5,
               what="the tables back")


def test_reports_in_the_database_are_untrusted(node_a, stack):
    """A row whose report is not a JSON object shows as null, and a consumer
    row that is not one either does not break the page."""
    db_exec(stack, "REPLACE INTO daemon_status (daemon_id, role, status) VALUES "
                   "('consumer junk-1', 'consumer', '{\"lag\": [1, '), "
                   "('consumer junk-2', 'consumer', '[1, 2, 3]')")
    try:
        daemons = {d["daemon_id"]: d for d in cluster(node_a.port)["daemons"]}
        assert daemons["consumer junk-1"]["status"] is None
        assert daemons["consumer junk-2"]["status"] is None
    finally:
        db_exec(stack, "DELETE FROM daemon_status WHERE daemon_id LIKE %s", ("consumer junk-%",))


def test_a_clean_stop_removes_the_report(bin_dir, stack, tmp_path):
    with running_gateway(bin_dir, stack, tmp_path) as g:
        node_id = "gateway %s:%s" % (HOST, g.internal_port)
        wait_until(lambda: db_rows(stack, "SELECT 1 FROM daemon_status WHERE daemon_id = %s",
                                   (node_id,)), 10, interval=0.3, what="the node's report")
    assert not db_rows(stack, "SELECT 1 FROM daemon_status WHERE daemon_id = %s", (node_id,))


# ---- pushgate-ctl ----

def ctl(bin_dir, *args):
    return subprocess.run([os.path.join(bin_dir, "pushgate-ctl")] + [str(a) for a in args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)


def test_ctl_admin_token_opens_the_figures(bin_dir, node_a):
    p = ctl(bin_dir, "token", "ops-1", "--admin", "--ttl", 60, "--set", "jwt_secret=" + SECRET)
    assert p.returncode == 0, p.stderr
    token = p.stdout.strip()
    assert get(node_a.port, "/admin/cluster", token)[0] == 200
    p = ctl(bin_dir, "token", "agent-1", "--set", "jwt_secret=" + SECRET)
    assert get(node_a.port, "/stats", p.stdout.strip())[0] == 403


def test_head_of_the_cluster_has_no_body(node_a):
    """HEAD is answered after the task like GET, with its headers only."""
    import socket
    with socket.create_connection((HOST, node_a.port), timeout=10) as s:
        s.sendall(("HEAD /admin/cluster HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
                   % ADMIN_SECRET).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Length: " in head, head
    assert int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]) > 0 and body == b"", data

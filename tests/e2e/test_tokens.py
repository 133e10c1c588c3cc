"""Every way to forge or misuse a browser token is refused by a running
pushgate-gateway (ASan + UBSan build): with 401 before the upgrade when the
token is in the URL, with a close 4001 when it comes in CONNECT.  A token
signed with jwt_secret_previous is accepted (a rotation under way), and no
token, good or bad, is ever written to the node's log."""
import base64
import hashlib
import hmac
import json
import os
import sys
import time

import pytest
import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import run_program  # noqa: E402
from gateway_util import (SECRET, Raw, closed_with, make_token, online_rows, recv_json,  # noqa: E402
                          run, running_gateway, send_json, token_for, uid, upgrade_request,
                          ws_connect)

PREVIOUS = "the-secret-before-this-one-0123"


@pytest.fixture(scope="module")
def gw(bin_dir, stack, tmp_path_factory):
    with running_gateway(bin_dir, stack, tmp_path_factory.mktemp("tokens"),
                         jwt_secret_previous=PREVIOUS, log_level="debug",
                         auth_timeout_ms=5000) as g:
        yield g


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(header, payload, secret=SECRET, digest=hashlib.sha256):
    """A JWT with any header, HMAC-signed (so only the header lies)."""
    head = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    return head + "." + b64url(hmac.new(secret.encode(), head.encode(), digest).digest())


def claims(u, **kw):
    c = {"sub": u, "exp": int(time.time()) + 600}
    c.update(kw)
    return {k: v for k, v in c.items() if v is not None}


FORGED = {
    "alg none": lambda u: make_token(claims(u), alg="none"),
    "alg None": lambda u: signed({"alg": "None", "typ": "JWT"}, claims(u)).rsplit(".", 1)[0] + ".",
    "empty secret": lambda u: token_for(u, secret=""),
    "wrong secret": lambda u: token_for(u, secret="not-the-gateway-secret-at-all"),
    "RS256 header, HMAC with the secret": lambda u: signed({"alg": "RS256", "typ": "JWT"},
                                                           claims(u)),
    "HS512": lambda u: make_token(claims(u), alg="HS512"),
    "HS384": lambda u: signed({"alg": "HS384", "typ": "JWT"}, claims(u), digest=hashlib.sha384),
    "expired": lambda u: make_token(claims(u, exp=int(time.time()) - 30)),
    "nbf in the future": lambda u: make_token(claims(u, nbf=int(time.time()) + 600)),
    "no exp": lambda u: make_token(claims(u, exp=None)),
    "no sub": lambda u: make_token(claims(None)),
    "numeric sub": lambda u: make_token(claims(12345)),
    "sub with control characters": lambda u: make_token(claims(u + "\n\x01")),
    "sub of 5,000 characters": lambda u: make_token(claims("a" * 5000)),
    "oversized token": lambda u: make_token(claims(u, pad="x" * 20000)),
    "extra segment": lambda u: token_for(u) + ".eyJ9",
    "signature of another token": lambda u: (make_token(claims(u)).rsplit(".", 1)[0] + "." +
                                             token_for(uid()).rsplit(".", 1)[1]),
}


@pytest.mark.parametrize("why", sorted(FORGED))
def test_forged_token_in_the_url_gets_401(gw, stack, why):
    u = uid()
    r = Raw(gw.port)
    try:
        r.send(upgrade_request("/ws?token=" + FORGED[why](u)))
        status, headers, body = r.read_response()
        assert status in (401, 431) if why == "oversized token" else status == 401, \
            (why, status, body)
        assert "upgrade" not in headers
    finally:
        r.close()
    assert online_rows(stack, u) == ()


@pytest.mark.parametrize("why", sorted(FORGED))
def test_forged_token_in_connect_closes_4001(gw, stack, why):
    u = uid()

    async def go():
        ws = await ws_connect(gw.port)
        try:
            await send_json(ws, {"event": "CONNECT", "data": {"client_token": FORGED[why](u)}})
            code, got = await closed_with(ws)
            assert code == 4001 and got == [], (why, code, got)
        finally:
            await ws.close()
    run(go())
    assert online_rows(stack, u) == ()


def test_previous_secret_is_accepted_during_a_rotation(gw):
    """Signed with jwt_secret_previous: ONLINE, by URL and by CONNECT; signed
    with a third secret: refused."""
    async def go():
        u = uid("rotated")
        ws = await ws_connect(gw.port, token_for(u, secret=PREVIOUS))
        assert (await recv_json(ws))["event"] == "ONLINE"
        await ws.close()
        ws = await ws_connect(gw.port)
        await send_json(ws, {"event": "CONNECT",
                             "data": {"client_token": token_for(u, secret=PREVIOUS)}})
        assert (await recv_json(ws))["event"] == "ONLINE"
        await ws.close()
        with pytest.raises(websockets.InvalidStatusCode) as e:
            await ws_connect(gw.port, token_for(u, secret="a-third-secret-nobody-has-0123"))
        assert e.value.status_code == 401
    run(go())


def test_a_short_previous_secret_is_refused_at_start(bin_dir):
    r = run_program(bin_dir, "pushgate-gateway",
                    ["--set", "jwt_secret=" + SECRET, "--set", "jwt_secret_previous=short",
                     "--set", "advertised_ip=127.0.0.1"])
    assert r.returncode != 0
    assert "jwt_secret_previous must be empty or 16 characters or more" in r.stdout + r.stderr


def test_no_token_is_written_to_the_log(gw):
    """After good and forged tokens by URL and by CONNECT (log_level debug),
    no token's signature or claims appear in the node's log."""
    tokens = [token_for(uid()), token_for(uid(), secret=PREVIOUS)]
    tokens += [FORGED[w](uid()) for w in sorted(FORGED) if w != "oversized token"]

    async def go():
        for t in tokens:
            try:
                ws = await ws_connect(gw.port, t)
                await recv_json(ws)
                await ws.close()
            except websockets.InvalidStatusCode:
                pass
            ws = await ws_connect(gw.port)
            await send_json(ws, {"event": "CONNECT", "data": {"client_token": t}})
            await closed_with(ws, timeout=1) if t not in tokens[:2] else await recv_json(ws)
            await ws.close()
    run(go(), timeout=60)
    log = gw.log()
    for t in tokens:
        for part in t.split("."):
            if len(part) >= 16:
                assert part not in log, "a token part is in the log: %s" % part[:40]

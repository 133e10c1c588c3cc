#!/usr/bin/python3
"""make demo: the whole system on this machine, until Ctrl-C.

Starts a throw-away MariaDB and Redis (tests/fixture.py, schema loaded), two
gateway nodes (9501 and 9502, internal ports 9601 and 9602), the proxy (9701)
and the consumer, then a producer that publishes a sample work order to a
random demo agent every few seconds.  It prints, for each demo agent, the
URL of the agent console (served by the gateways) with a valid token, and
pushgate-ctl lines to copy as they are: publish a work order of your own, list
the nodes, list an agent's connections.  They read a settings file written
into the temporary folder (the random Redis and MariaDB ports, the app token,
the JWT secret).  Ctrl-C (or SIGTERM) stops everything it started, by PID,
and removes the temporary folder.
"""
import base64
import hashlib
import hmac
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from fixture import Stack  # noqa: E402

BIN = os.environ.get("PG_BIN", os.path.join(ROOT, "build", "release", "bin"))
SECRET = "demo-secret-change-me-0123456789"
APP_TOKEN = "demo-app-token"
ADMIN_SECRET = "demo-admin-secret-change-me-0123"
AGENTS = ["agent-1", "agent-2", "agent-3"]
PUBLISH_EVERY_S = 4


def start(args, env):
    return subprocess.Popen([os.path.join(BIN, args[0])] + args[1:], env=env)


def gateway(n, env):
    return start(["pushgate-gateway", "-c", os.path.join(ROOT, "config", "gateway.ini"),
                  "--set", f"port={9500 + n}", "--set", f"internal_port={9600 + n}",
                  "--set", "advertised_ip=127.0.0.1", "--set", f"jwt_secret={SECRET}",
                  "--set", "proxy=127.0.0.1:9701", "--set", f"chat_token={APP_TOKEN}",
                  "--set", f"admin_port={9580 + n}", "--set", f"admin_secret={ADMIN_SECRET}",
                  "--set", f"static_dir={os.path.join(ROOT, 'gateway', 'www')}",
                  "--set", "log_level=notice"], env)


def token(uuid, ttl=86400):
    """An HS256 JWT for uuid with the demo secret."""
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    head = enc(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = enc(json.dumps({"sub": uuid, "exp": int(time.time()) + ttl}).encode())
    sig = enc(hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def write_ctl_settings(stack):
    """The settings pushgate-ctl needs for this demo, for `pushgate-ctl -c`."""
    path = os.path.join(stack.dir, "ctl.ini")
    env = stack.env()
    lines = ["; pushgate-ctl settings of the running `make demo` (removed when it stops)",
             f"redis_host = {env['PUSHGATE_REDIS_HOST']}",
             f"redis_port = {env['PUSHGATE_REDIS_PORT']}",
             f"chat_token = {APP_TOKEN}",
             f"jwt_secret = {SECRET}",
             f"mysql_host = {env['PUSHGATE_MYSQL_HOST']}",
             f"mysql_port = {env['PUSHGATE_MYSQL_PORT']}",
             f"mysql_user = {env['PUSHGATE_MYSQL_USER']}",
             f"mysql_password = {env['PUSHGATE_MYSQL_PASSWORD']}",
             f"mysql_database = {env['PUSHGATE_MYSQL_DATABASE']}",
             "port = 9501",
             "admin_port = 9581"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def print_ctl_lines(settings):
    ctl = shlex.quote(os.path.join(os.path.abspath(BIN), "pushgate-ctl"))
    c = "-c " + shlex.quote(settings)
    print(f"  pushgate-ctl, with the demo's settings in {settings}:")
    print(f"    {ctl} publish {c} --uuid agent-1 --type new_worksheet_to_deal "
          "--infos 'my own work order'")
    print(f"    {ctl} nodes {c}")
    print(f"    {ctl} online agent-1 {c}")


def publish(stack):
    agent = random.choice(AGENTS)
    msg = {"url": "/worksheet/send-message", "chat_token": APP_TOKEN,
           "data": [{"uuid": agent, "data": {"type": "new_worksheet_to_deal",
                                             "infos": "你有一条新工单待处理 (%s)" % time.strftime("%H:%M:%S")}}]}
    entry = stack.redis().xadd("pushgate:worksheets", {"msg": json.dumps(msg, ensure_ascii=False)})
    print(f"published work order {entry} for {agent}", flush=True)


def main():
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    with Stack() as stack:
        stack.add_app(APP_TOKEN, "demo")
        env = dict(os.environ, **stack.env())
        procs = [gateway(1, env), gateway(2, env),
                 start(["pushgate-proxy", "-c", os.path.join(ROOT, "config", "proxy.ini"),
                        "--set", "log_level=notice"], env),
                 start(["pushgate-consumer", "-c", os.path.join(ROOT, "config", "consumer.ini"),
                        "--set", "log_level=notice"], env)]
        time.sleep(1)
        print("\npushgate demo is running (Ctrl-C stops it).")
        print(f"  MariaDB 127.0.0.1:{stack.mysql_port} (user/password/database: pushgate), "
              f"Redis 127.0.0.1:{stack.redis_port}")
        print("  cluster console: http://127.0.0.1:9581/admin.html (the admin listener of node "
              "1, loopback only, no token), or on a public port with the operator token: "
              f"http://127.0.0.1:9502/admin.html?token={ADMIN_SECRET}")
        print("  gateways' figures: http://127.0.0.1:9581/stats and http://127.0.0.1:9582/stats, "
              "/metrics beside them")
        nodes = "ws://127.0.0.1:9501/ws,ws://127.0.0.1:9502/ws"
        print("  agent consoles (open in a browser):")
        for i, agent in enumerate(AGENTS):
            port = 9501 + i % 2
            print(f"  {agent}: http://127.0.0.1:{port}/?token={token(agent)}&nodes={nodes}")
        print_ctl_lines(write_ctl_settings(stack))
        print(f"  a work order is published every {PUBLISH_EVERY_S} s\n", flush=True)
        try:
            next_publish = time.time() + 2
            while not stopping and all(p.poll() is None for p in procs):
                if time.time() >= next_publish:
                    publish(stack)
                    next_publish = time.time() + PUBLISH_EVERY_S
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    print("demo stopped")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""make demo: runs what pushgate has so far on this machine, until Ctrl-C.

Starts a throw-away MariaDB and Redis (tests/fixture.py, schema loaded) and
the engine's two example servers, then prints how to talk to them.  Ctrl-C
(or SIGTERM) stops everything it started, by PID, and removes the temporary
folder.  The gateway, proxy and consumer join this demo as they are built.
"""
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from fixture import Stack  # noqa: E402

BIN = os.environ.get("PG_BIN", os.path.join(ROOT, "build", "release", "bin"))


def main():
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    with Stack() as stack:
        env = dict(os.environ, **stack.env())
        servers = [
            subprocess.Popen([os.path.join(BIN, "echo_server"), "-c",
                              os.path.join(ROOT, "config", "echo_server.ini"),
                              "--set", "open_eof_split=true", "--set", "package_eof=\\n",
                              "--set", "line_port=9811"], env=env),
            subprocess.Popen([os.path.join(BIN, "task_server"), "-c",
                              os.path.join(ROOT, "config", "task_server.ini"),
                              "--set", "open_eof_split=true", "--set", "package_eof=\\n"], env=env),
        ]
        print(f"""
pushgate demo is running (Ctrl-C stops it).
  MariaDB  127.0.0.1:{stack.mysql_port}  user/password/database: pushgate
  Redis    127.0.0.1:{stack.redis_port}
  echo server  127.0.0.1:9801  lines in, lines out; try: printf 'hello\\npid\\nstats\\n' | nc -q1 127.0.0.1 9801
  line hook    127.0.0.1:9811  the protocol hook; replies 'line: ...'; 'quit' says bye
  task server  127.0.0.1:9802  each line goes through a task worker; 'fire TEXT' logs an event
Reload the workers: kill -USR1 {servers[0].pid}
""", flush=True)
        try:
            while not stopping and all(p.poll() is None for p in servers):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        for p in servers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in servers:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    print("demo stopped")


if __name__ == "__main__":
    main()

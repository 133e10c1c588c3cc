#!/usr/bin/python3
"""Throw-away MariaDB + Redis for pushgate's tests and demo.

As a module::

    from fixture import Stack
    with Stack() as s:                  # or: s = Stack(); s.start(); ...; s.stop()
        env = dict(os.environ, **s.env())   # PUSHGATE_MYSQL_* / PUSHGATE_REDIS_*
        db = s.mysql()                  # pymysql connection as the pushgate user
        r = s.redis()                   # redis.Redis (decode_responses=True)

    # Redis with an append-only file (appendfsync everysec, files in
    # DIR/redis), restarted the hard way on the same port with the same data:
    with Stack(redis_aof=True, mysql=False) as s:   # mysql=False: Redis only
        ...
        s.restart_redis("kill")         # SIGKILL, then start again and wait

    # Redis with Sentinel: a primary, one replica and three sentinels
    # (SentinelSet; the MariaDB stays a Stack's):
    with SentinelSet() as rs:
        env = rs.env()                  # PUSHGATE_REDIS_SENTINELS, ..._MASTER_NAME
        old = rs.kill_primary()         # kill -9; rs.wait_failover(old), rs.restart(old)

    # A 3-node MariaDB Galera cluster (GaleraCluster; Redis stays a Stack's):
    with GaleraCluster() as g:
        env = g.env()                   # PUSHGATE_MYSQL_HOSTS (node 1 first), ...
        g.kill(0)                       # kill -9 of node 1; g.restart(0) rejoins (IST)

As a command (servers keep running after `start` returns)::

    eval "$(python3 tests/fixture.py start --dir /tmp/pg-stack)"
    ...
    python3 tests/fixture.py restart-redis --dir /tmp/pg-stack [--how kill|nosave|term]
    python3 tests/fixture.py stop --dir /tmp/pg-stack

What `start` does: a private MariaDB datadir made by mariadb-install-db, a
mariadbd on a free loopback port and its own Unix socket, a redis-server with no
persistence on another free loopback port (with `--redis-aof` / redis_aof=True:
appendonly yes, appendfsync everysec, the AOF files in DIR/redis, as in
production); database `pushgate`, user
`pushgate`/`pushgate` (from 127.0.0.1 and localhost) with all privileges on it,
and every sql/*.sql file loaded in name order. Nothing reads the system's
MariaDB or Redis configuration and no system service is used. `stop` ends only
the processes this fixture started (checked by PID and process start time) and
removes the folder.

Needs only Debian's python3-pymysql and python3-redis. Works as root.
"""

import argparse
import atexit
import ctypes
import glob
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pymysql

try:
    import redis as _redis_mod
except ImportError:  # only Stack.redis() needs it
    _redis_mod = None

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SQL_DIR = os.path.join(REPO_ROOT, "sql")

DB_NAME = "pushgate"
DB_USER = "pushgate"
DB_PASSWORD = "pushgate"
LOOPBACK = "127.0.0.1"

# Small and quick: the data is thrown away, so durability settings are relaxed.
MARIADB_SETTINGS = [
    "--innodb-buffer-pool-size=64M",
    "--innodb-log-file-size=16M",
    "--innodb-log-buffer-size=4M",
    "--innodb-use-native-aio=0",
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-doublewrite=0",
    "--aria-pagecache-buffer-size=8M",
    "--key-buffer-size=4M",
    "--performance-schema=OFF",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_unicode_ci",
    "--skip-name-resolve",
    "--skip-log-bin",
    "--max-connections=512",
    "--table-open-cache=400",
    "--open-files-limit=8192",
]

SOCKET_PATH_MAX = 100  # sun_path is 108 bytes including the NUL


class FixtureError(RuntimeError):
    """The stack could not be started or stopped."""


class _PortInUse(FixtureError):
    pass


# ---------------------------------------------------------------- helpers


# Ports handed out by free_port() in this process.  A port is picked below
# the kernel's ephemeral range, so no outgoing connection (to MariaDB, Redis,
# another node) can take it between the pick and the server's bind; and never
# twice, so two servers started from one test are not given one port.
_handed_out = set()


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A loopback TCP port free now, outside the ephemeral range, and not
    handed out before by this process."""
    high = _ephemeral_low()
    low = max(1024, high - 20000)
    for _ in range(500):
        port = random.randrange(low, high)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise FixtureError("no free port in %d-%d after 500 tries" % (low, high - 1))


def _free_ports(n):
    """n distinct free TCP ports on the loopback address."""
    return [free_port() for _ in range(n)]


def _tail(path, lines=30):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return "(no log: %s)" % e
    return "\n".join(data.splitlines()[-lines:])


def _proc_stat(pid):
    """(state, starttime) of a process, or None if there is no such process."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rfind(")") + 2:].split()
    # rest[0] is field 3 (state); starttime is field 22.
    return rest[0], int(rest[19])


def _alive(pid, starttime=None):
    """True if pid runs (not a zombie) and, when given, started at starttime."""
    if not pid:
        return False
    st = _proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    if starttime is not None and st[1] != starttime:
        return False
    return True


def _die_with_parent(parent_pid):
    """preexec_fn: SIGTERM the child when the process that started it dies."""
    def fn():
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        except Exception:
            pass
        if os.getppid() != parent_pid:
            os._exit(1)
    return fn


# ---------------------------------------------------------------- Stack


class Stack:
    """A throw-away MariaDB and Redis on loopback ports.

    dir:     folder for everything (datadir, socket, logs, stack.json). Default:
             a new temp folder. A folder that did not exist before is removed by
             stop(); in a folder that existed, only what start() made is removed.
    keep:    stop() leaves the files (logs, datadir) in place.
    detach:  servers do not die with this process (used by the CLI).
    redis_aof: Redis keeps an append-only file (appendonly yes, appendfsync
             everysec) in DIR/redis, so restart_redis() keeps its data.
             Default: no persistence (a restart starts empty).
    mysql:   False: Redis only, no MariaDB (e.g. a Redis of a test's own next
             to the session's stack); env() then names Redis only.
    host:    the address both servers bind and the daemons are given
             (default 127.0.0.1; tests/netns.py gives a namespace's address,
             and the pushgate user may then connect from any address).
    """

    def __init__(self, dir=None, sql_dir=SQL_DIR, timeout=60.0, keep=False,
                 detach=False, redis_aof=False, mysql=True, host=LOOPBACK):
        if dir is None:
            self.dir = tempfile.mkdtemp(prefix="pushgate-stack-")
            self._owns_dir = True
        else:
            self.dir = os.path.abspath(dir)
            self._owns_dir = not os.path.exists(self.dir)
        self.sql_dir = sql_dir
        self.timeout = float(timeout)
        self.keep = keep
        self.detach = detach
        self.redis_aof = bool(redis_aof)
        self.with_mysql = bool(mysql)

        self.mysql_host = host
        self.mysql_port = None
        self.mysql_socket = None
        self.mysql_user = DB_USER
        self.mysql_password = DB_PASSWORD
        self.mysql_db = DB_NAME
        self.redis_host = host
        self.redis_port = None

        self.mysql_pid = None
        self.redis_pid = None
        self._mysql_start = None   # /proc starttime, to recognise our processes
        self._redis_start = None
        self._mysql_proc = None    # Popen objects when started by this process
        self._redis_proc = None
        self._sock_dir = None      # separate short folder if dir is too long
        self._running = False

    # -- paths
    def _p(self, *names):
        return os.path.join(self.dir, *names)

    @property
    def mysql_datadir(self):
        return self._p("mysql-data")

    @property
    def mysql_log(self):
        return self._p("mysqld.log")

    @property
    def redis_log(self):
        return self._p("redis.log")

    @property
    def redis_dir(self):
        """Redis's working folder: its AOF files (appendonlydir/) with redis_aof."""
        return self._p("redis")

    # -- context manager
    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- public API
    def start(self):
        """Start both servers, create the database and user, load sql/*.sql."""
        if self._running:
            return self
        self._running = True
        atexit.register(self._atexit)
        t0 = time.monotonic()
        try:
            os.makedirs(self.dir, exist_ok=True)
            for name in ("mysql-data", "redis", "tmp"):
                shutil.rmtree(self._p(name), ignore_errors=True)
            os.makedirs(self._p("redis"))
            os.makedirs(self._p("tmp"))
            sock = self._p("mysql.sock")
            if len(sock) > SOCKET_PATH_MAX:
                self._sock_dir = tempfile.mkdtemp(prefix="pgsock-", dir="/tmp")
                sock = os.path.join(self._sock_dir, "mysql.sock")
            self.mysql_socket = sock
            self.mysql_port, self.redis_port = _free_ports(2)
            if not self.with_mysql:
                self.mysql_port = None

            self._launch_redis()          # starts while the datadir is made
            if self.with_mysql:
                self._install_mysql()
                self._launch_mysql()
            self._wait_redis()
            if self.with_mysql:
                self._wait_mysql()
                self._bootstrap_mysql()
            self._write_state()
        except BaseException:
            try:
                self.stop()
            except Exception as e:
                sys.stderr.write("fixture: cleanup after failed start: %s\n" % e)
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self):
        """Stop both servers (only ours, by PID) and remove the folder."""
        errors = []
        for what in ("redis", "mysql"):
            try:
                self._stop_one(what)
            except Exception as e:  # keep going: stop the other one too
                errors.append(str(e))
        self._running = False
        try:
            atexit.unregister(self._atexit)
        except Exception:
            pass
        if not self.keep:
            self._remove_files()
        if errors:
            raise FixtureError("; ".join(errors))

    def env(self):
        """PUSHGATE_* settings that point the daemons at this stack (Redis
        only for a stack started with mysql=False)."""
        env = {}
        if self.with_mysql:
            env.update({
                "PUSHGATE_MYSQL_HOST": self.mysql_host,
                "PUSHGATE_MYSQL_PORT": str(self.mysql_port),
                "PUSHGATE_MYSQL_USER": self.mysql_user,
                "PUSHGATE_MYSQL_PASSWORD": self.mysql_password,
                "PUSHGATE_MYSQL_DATABASE": self.mysql_db,
            })
        env.update({
            "PUSHGATE_REDIS_HOST": self.redis_host,
            "PUSHGATE_REDIS_PORT": str(self.redis_port),
        })
        return env

    def mysql(self, root=False, **kwargs):
        """A new pymysql connection (autocommit) as the pushgate user over
        TCP, or as MariaDB's root over the Unix socket with root=True."""
        args = dict(charset="utf8mb4", autocommit=True, connect_timeout=10)
        if root:
            args.update(unix_socket=self.mysql_socket, user="root", password="")
        else:
            args.update(host=self.mysql_host, port=self.mysql_port,
                        user=self.mysql_user, password=self.mysql_password,
                        database=self.mysql_db)
        args.update(kwargs)
        return pymysql.connect(**args)

    def redis(self, **kwargs):
        """A redis.Redis client (decode_responses=True unless overridden)."""
        if _redis_mod is None:
            raise FixtureError("python3-redis is not installed")
        args = dict(host=self.redis_host, port=self.redis_port,
                    decode_responses=True, socket_timeout=10)
        args.update(kwargs)
        return _redis_mod.Redis(**args)

    def add_app(self, chat_token, name="test", enabled=True):
        """Register an application token in `apps` (replaces an existing one)."""
        conn = self.mysql()
        try:
            with conn.cursor() as c:
                c.execute("REPLACE INTO apps (chat_token, name, enabled) "
                          "VALUES (%s, %s, %s)", (chat_token, name, int(enabled)))
        finally:
            conn.close()

    # Restart helpers for tests of reconnection (same ports, same data).
    def stop_mysql(self):
        self._stop_one("mysql")

    def start_mysql(self):
        self._launch_mysql()
        self._wait_mysql()
        self._write_state()

    def freeze_mysql(self, frozen=True):
        """SIGSTOP (frozen) or SIGCONT the MariaDB this fixture started: a
        server that hangs instead of refusing, as one whose host stalls.
        Connections and queries then wait for their timeouts."""
        self._freeze("mariadbd", self._mysql_proc, frozen)

    def freeze_redis(self, frozen=True):
        """The same for Redis: commands wait, connections stay open."""
        self._freeze("redis-server", self._redis_proc, frozen)

    @staticmethod
    def _freeze(name, proc, frozen):
        if proc is None or proc.poll() is not None:
            raise FixtureError("%s was not started by this fixture: not signalling it" % name)
        os.kill(proc.pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def stop_redis(self, how="term"):
        """Stops Redis. how: "term" (SIGTERM: a clean shutdown, which with
        redis_aof writes and fsyncs the AOF), "kill" (SIGKILL: a crash; what
        Redis had written to the AOF is in the kernel, an fsync or not) or
        "nosave" (SHUTDOWN NOSAVE: no RDB snapshot; the AOF is still flushed)."""
        if how == "term":
            self._stop_one("redis")
        elif how == "kill":
            self._kill_redis()
        elif how == "nosave":
            self._shutdown_redis_nosave()
        else:
            raise ValueError("how must be term, kill or nosave, not %r" % (how,))

    def start_redis(self):
        """Starts Redis again on the same port with the same folder (with
        redis_aof: the data it had) and waits until it answers PING, which it
        does only once the AOF is loaded."""
        self._launch_redis()
        self._wait_redis(same_port=True)
        self._write_state()

    def restart_redis(self, how="kill"):
        """stop_redis(how), then start_redis(): same port, same data folder.
        Returns the new redis-server's pid."""
        self.stop_redis(how)
        self.start_redis()
        return self.redis_pid

    def state(self):
        """Everything about the stack, as written to DIR/stack.json."""
        return {
            "dir": self.dir,
            "owns_dir": self._owns_dir,
            "sock_dir": self._sock_dir,
            "mysql_host": self.mysql_host,
            "mysql_port": self.mysql_port,
            "mysql_socket": self.mysql_socket,
            "mysql_user": self.mysql_user,
            "mysql_password": self.mysql_password,
            "mysql_db": self.mysql_db,
            "mysql_datadir": self.mysql_datadir,
            "mysql_pid": self.mysql_pid,
            "mysql_starttime": self._mysql_start,
            "mysql_log": self.mysql_log,
            "redis_host": self.redis_host,
            "redis_port": self.redis_port,
            "redis_pid": self.redis_pid,
            "redis_starttime": self._redis_start,
            "redis_log": self.redis_log,
            "redis_aof": self.redis_aof,
            "with_mysql": self.with_mysql,
            "env": self.env(),
        }

    @classmethod
    def load(cls, dir):
        """The stack described by DIR/stack.json (e.g. started by the CLI)."""
        path = os.path.join(os.path.abspath(dir), "stack.json")
        with open(path) as f:
            st = json.load(f)
        s = cls(dir=st["dir"], detach=True, redis_aof=st.get("redis_aof", False),
                mysql=st.get("with_mysql", True))
        s._owns_dir = st.get("owns_dir", False)
        s._sock_dir = st.get("sock_dir")
        for k in ("mysql_host", "mysql_port", "mysql_socket", "mysql_user",
                  "mysql_password", "mysql_db", "redis_host", "redis_port",
                  "mysql_pid", "redis_pid"):
            setattr(s, k, st.get(k))
        s._mysql_start = st.get("mysql_starttime")
        s._redis_start = st.get("redis_starttime")
        s._running = True
        return s

    def is_running(self):
        return (_alive(self.mysql_pid, self._mysql_start)
                or _alive(self.redis_pid, self._redis_start))

    # -- internals
    def _atexit(self):
        if self._running:
            try:
                self.stop()
            except Exception as e:
                sys.stderr.write("fixture: stop at exit: %s\n" % e)

    def _popen(self, argv, log):
        out = open(log, "ab")
        try:
            kw = dict(stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                      start_new_session=True, close_fds=True, cwd=self.dir)
            if not self.detach:
                kw["preexec_fn"] = _die_with_parent(os.getpid())
            try:
                return subprocess.Popen(argv, **kw)
            except FileNotFoundError:
                raise FixtureError("%s not found: run scripts/install-deps" % argv[0])
        finally:
            out.close()

    def _deadline_loop(self, what, proc, log, probe):
        deadline = time.monotonic() + self.timeout
        last = None
        while True:
            if proc.poll() is not None:
                tail = _tail(log)
                if "Address already in use" in tail or "Bind on TCP/IP port" in tail:
                    raise _PortInUse(what)
                raise FixtureError("%s exited with status %s during start; "
                                   "last lines of %s:\n%s"
                                   % (what, proc.returncode, log, tail))
            try:
                probe()
                return
            except Exception as e:
                last = e
            if time.monotonic() > deadline:
                raise FixtureError("%s did not answer within %.0f s (%s); "
                                   "last lines of %s:\n%s"
                                   % (what, self.timeout, last, log, _tail(log)))
            time.sleep(0.05)

    # redis
    def _launch_redis(self):
        # No RDB snapshots either way; with redis_aof the append-only file
        # (Redis 7: DIR/redis/appendonlydir/) is the only persistence, as in
        # docker-compose.yml.
        aof = (["--appendonly", "yes", "--appendfsync", "everysec"] if self.redis_aof
               else ["--appendonly", "no"])
        argv = (["redis-server", "--port", str(self.redis_port), "--bind", self.redis_host,
                 "--save", ""] + aof +
                ["--dir", self.redis_dir,
                 "--daemonize", "no", "--protected-mode", "no",
                 "--loglevel", "notice"])
        self._redis_proc = self._popen(argv, self.redis_log)
        self.redis_pid = self._redis_proc.pid
        st = _proc_stat(self.redis_pid)
        self._redis_start = st[1] if st else None

    def _probe_redis(self):
        with socket.create_connection((self.redis_host, self.redis_port), 1) as s:
            s.sendall(b"PING\r\n")
            data = s.recv(64)
            if not data.startswith(b"+PONG"):
                raise FixtureError("unexpected answer %r" % data)

    def _wait_redis(self, same_port=False):
        """Until Redis answers PING. A port taken meanwhile: another free
        port at the first start; at a restart (same_port) the same port is
        tried again for a few seconds - clients know only that one."""
        for attempt in range(3 if not same_port else 20):
            try:
                self._deadline_loop("redis-server", self._redis_proc,
                                    self.redis_log, self._probe_redis)
                return
            except _PortInUse:
                if same_port:
                    if attempt == 19:
                        raise FixtureError("redis-server: port %d still in use after "
                                           "20 tries" % self.redis_port)
                    time.sleep(0.25)
                elif attempt == 2:
                    raise FixtureError("redis-server: no free port after 3 tries")
                else:
                    self.redis_port = _free_ports(1)[0]
                self._launch_redis()

    def _redis_ours(self):
        """The running redis-server is the one we started (pid and start
        time), or FixtureError."""
        if not self.redis_pid:
            raise FixtureError("redis-server is not running")
        if self._redis_proc is None and self._redis_start is None:
            raise FixtureError("redis-server pid %d: start time unknown, not touching it"
                               % self.redis_pid)
        return self.redis_pid, self._redis_start, self._redis_proc

    def _wait_redis_gone(self, pid, start, proc, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (proc.poll() is not None) if proc is not None else not _alive(pid, start):
                self.redis_pid = self._redis_start = self._redis_proc = None
                return
            time.sleep(0.02)
        raise FixtureError("redis-server pid %d did not exit within %.0f s" % (pid, timeout))

    def _kill_redis(self):
        """SIGKILL: nothing is flushed, as in a crash of the process."""
        pid, start, proc = self._redis_ours()
        if (proc.poll() is None) if proc is not None else _alive(pid, start):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._wait_redis_gone(pid, start, proc, 10.0)

    def _shutdown_redis_nosave(self):
        pid, start, proc = self._redis_ours()
        try:
            with socket.create_connection((self.redis_host, self.redis_port), 5) as s:
                s.sendall(b"SHUTDOWN NOSAVE\r\n")
                s.settimeout(5)
                try:
                    data = s.recv(256)      # "" once Redis closes: it is going
                except OSError:
                    data = b""
            if data.startswith(b"-"):
                raise FixtureError("SHUTDOWN NOSAVE refused: %r" % data.strip())
        except OSError as e:
            raise FixtureError("SHUTDOWN NOSAVE: cannot reach redis-server: %s" % e)
        self._wait_redis_gone(pid, start, proc, 30.0)

    # mariadb
    def _install_mysql(self):
        exe = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        if not exe:
            raise FixtureError("mariadb-install-db not found: run scripts/install-deps")
        argv = [exe, "--no-defaults", "--datadir=" + self.mysql_datadir,
                "--user=root", "--auth-root-authentication-method=normal",
                "--skip-test-db", "--skip-name-resolve",
                "--tmpdir=" + self._p("tmp")] + MARIADB_SETTINGS[:3]
        log = self._p("install-db.log")
        with open(log, "wb") as out:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT, cwd=self.dir,
                               timeout=self.timeout)
        if r.returncode != 0:
            raise FixtureError("mariadb-install-db failed (status %d); last lines "
                               "of %s:\n%s" % (r.returncode, log, _tail(log)))

    def _launch_mysql(self):
        exe = (shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin")
               or shutil.which("mysqld", path="/usr/sbin:/usr/bin"))
        if not exe:
            raise FixtureError("mariadbd not found: run scripts/install-deps")
        argv = [exe, "--no-defaults",
                "--datadir=" + self.mysql_datadir,
                "--socket=" + self.mysql_socket,
                "--port=%d" % self.mysql_port,
                "--bind-address=" + self.mysql_host,
                "--skip-networking=0",
                "--user=root",
                "--pid-file=" + self._p("mysqld.pid"),
                "--log-error=" + self.mysql_log,
                "--tmpdir=" + self._p("tmp"),
                ] + MARIADB_SETTINGS
        self._mysql_proc = self._popen(argv, self.mysql_log)
        self.mysql_pid = self._mysql_proc.pid
        st = _proc_stat(self.mysql_pid)
        self._mysql_start = st[1] if st else None

    def _probe_mysql(self):
        conn = pymysql.connect(unix_socket=self.mysql_socket, user="root",
                               password="", connect_timeout=1)
        conn.close()

    def _wait_mysql(self):
        for attempt in range(3):
            try:
                self._deadline_loop("mariadbd", self._mysql_proc, self.mysql_log,
                                    self._probe_mysql)
                return
            except _PortInUse:
                if attempt == 2:
                    raise FixtureError("mariadbd: no free port after 3 tries")
                self.mysql_port = _free_ports(1)[0]
                self._launch_mysql()

    def _bootstrap_mysql(self):
        conn = self.mysql(root=True)
        try:
            with conn.cursor() as c:
                c.execute("CREATE DATABASE IF NOT EXISTS `%s` CHARACTER SET utf8mb4 "
                          "COLLATE utf8mb4_unicode_ci" % self.mysql_db)
                hosts = ["127.0.0.1", "localhost"]
                if self.mysql_host != LOOPBACK:
                    hosts.append("%")       # daemons in other namespaces
                for host in hosts:
                    c.execute("CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s",
                              (self.mysql_user, host, self.mysql_password))
                    c.execute("GRANT ALL PRIVILEGES ON `%s`.* TO %%s@%%s"
                              % self.mysql_db, (self.mysql_user, host))
        finally:
            conn.close()
        for path in sorted(glob.glob(os.path.join(self.sql_dir, "*.sql"))):
            self._load_sql(path)
        # The way the daemons will connect: TCP, as the pushgate user.
        self.mysql().close()

    def _load_sql(self, path):
        client = shutil.which("mariadb") or shutil.which("mysql")
        if client:
            with open(path, "rb") as f:
                r = subprocess.run(
                    [client, "--no-defaults", "--socket=" + self.mysql_socket,
                     "--user=root", "--database=" + self.mysql_db,
                     "--default-character-set=utf8mb4", "--batch"],
                    stdin=f, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    timeout=self.timeout)
            if r.returncode != 0:
                raise FixtureError("loading %s failed:\n%s"
                                   % (path, r.stdout.decode("utf-8", "replace")))
            return
        # No command-line client: multi-statement query (no DELIMITER support).
        with open(path, encoding="utf-8") as f:
            sql = f.read()
        conn = self.mysql(root=True, database=self.mysql_db,
                          client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
        try:
            with conn.cursor() as c:
                c.execute(sql)
                while c.nextset():
                    pass
        except pymysql.MySQLError as e:
            raise FixtureError("loading %s failed: %s" % (path, e))
        finally:
            conn.close()

    # stopping
    def _stop_one(self, what, timeout=30.0):
        if what == "mysql":
            pid, start, proc = self.mysql_pid, self._mysql_start, self._mysql_proc
        else:
            pid, start, proc = self.redis_pid, self._redis_start, self._redis_proc
        if pid:
            self._terminate(what, pid, start, proc, timeout)
        if what == "mysql":
            self.mysql_pid = self._mysql_start = self._mysql_proc = None
        else:
            self.redis_pid = self._redis_start = self._redis_proc = None

    @staticmethod
    def _terminate(what, pid, start, proc, timeout):
        def gone():
            if proc is not None:
                return proc.poll() is not None
            return not _alive(pid, start)

        if gone():
            return
        if proc is None and start is None:
            # Started elsewhere and no start time recorded: do not guess.
            raise FixtureError("%s pid %d: start time unknown, not killing" % (what, pid))
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if gone():
                    return
                time.sleep(0.05)
        raise FixtureError("%s pid %d did not stop" % (what, pid))

    def _remove_files(self):
        if self._sock_dir:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
            self._sock_dir = None
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            return
        for name in ("mysql-data", "redis", "tmp"):
            shutil.rmtree(self._p(name), ignore_errors=True)
        for name in ("mysql.sock", "mysqld.pid", "mysqld.log", "install-db.log",
                     "redis.log", "stack.json"):
            try:
                os.unlink(self._p(name))
            except FileNotFoundError:
                pass

    def _write_state(self):
        path = self._p("stack.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state(), f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)


# ---------------------------------------------------------------- ProcessSet


class ProcessSet:
    """What SentinelSet and GaleraCluster share: a folder (made here, or
    given), start() that stops what it started when it fails, stop() that
    stops every process (only ours, by PID) even when one fails, and a stop
    at exit.  A subclass gives _start() (the processes, in order) and
    _stop_all() (a list of errors); Stack's process helpers work on it."""

    prefix = "pushgate-set-"

    def __init__(self, dir, timeout, keep):
        if dir is None:
            self.dir = tempfile.mkdtemp(prefix=self.prefix)
            self._owns_dir = True
        else:
            self.dir = os.path.abspath(dir)
            self._owns_dir = not os.path.exists(self.dir)
        self.timeout = float(timeout)
        self.keep = keep
        self.detach = False
        self.host = LOOPBACK
        self._running = False

    _popen = Stack._popen
    _deadline_loop = Stack._deadline_loop

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        if self._running:
            return self
        self._running = True
        atexit.register(self._atexit)
        t0 = time.monotonic()
        try:
            os.makedirs(self.dir, exist_ok=True)
            self._start()
        except BaseException:
            try:
                self.stop()
            except Exception as e:
                sys.stderr.write("fixture: cleanup after failed start: %s\n" % e)
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self):
        """Every process of the set (only ours, by PID); removes the folder."""
        errors = self._stop_all()
        self._running = False
        try:
            atexit.unregister(self._atexit)
        except Exception:
            pass
        if not self.keep and self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            raise FixtureError("; ".join(errors))

    def _atexit(self):
        if self._running:
            try:
                self.stop()
            except Exception as e:
                sys.stderr.write("fixture: %s stop at exit: %s\n" % (type(self).__name__, e))


# ---------------------------------------------------------------- SentinelSet

class SentinelSet(ProcessSet):
    """A Redis primary, one replica and three sentinels on loopback ports,
    for pushgate's redis_sentinels (the MariaDB stays the Stack's).

        with SentinelSet() as rs:
            env = rs.env()              # PUSHGATE_REDIS_SENTINELS, PUSHGATE_REDIS_MASTER_NAME
            r = rs.redis()              # redis.Redis on the primary the sentinels name now
            old = rs.kill_primary()     # SIGKILL of the primary: sentinel promotes the replica
            new = rs.wait_failover(old) # (host, port) of the promoted one
            rs.restart(old)             # the old primary back, as a replica of the new one

    Each server has a folder of its own under dir (AOF on, appendfsync
    everysec, as Stack(redis_aof=True)); each sentinel a generated
    sentinel.conf (monitor master_name with quorum 2, down-after-milliseconds
    down_after_ms, failover-timeout failover_timeout_ms), which it rewrites
    as sentinels do.  start() returns once the replica is in sync and every
    sentinel knows the replica and the two other sentinels, so a failover
    can start at once.  Processes are started and stopped by PID (Popen,
    start time checked), as Stack does; stop() removes a folder it made."""

    SENTINELS = 3

    prefix = "pushgate-sentinel-"

    def __init__(self, dir=None, master_name="pushgate", down_after_ms=1000,
                 failover_timeout_ms=3000, aof=True, timeout=30.0, keep=False):
        super().__init__(dir, timeout, keep)
        self.master_name = master_name
        self.down_after_ms = int(down_after_ms)
        self.failover_timeout_ms = int(failover_timeout_ms)
        self.aof = bool(aof)
        self.server_ports = []      # the two data servers (first primary, then replica)
        self.sentinel_ports = []
        self._procs = {}            # port -> (Popen, starttime, log, what)

    def _start(self):
        if _redis_mod is None:
            raise FixtureError("python3-redis is not installed")
        ports = _free_ports(2 + self.SENTINELS)
        self.server_ports, self.sentinel_ports = ports[:2], ports[2:]
        primary, replica = self.server_ports
        self._launch_server(primary)
        self._launch_server(replica, replica_of=primary)
        self._wait_in_sync(replica)
        for i, port in enumerate(self.sentinel_ports):
            self._launch_sentinel(i, port, primary)
        self._wait_sentinels_ready()

    def _stop_all(self):
        errors = []
        for port in list(self._procs):
            try:
                self._stop_port(port)
            except Exception as e:  # keep going: stop the others too
                errors.append(str(e))
        return errors

    # -- public API

    def sentinels(self):
        """"host:port,host:port,host:port", as redis_sentinels takes it."""
        return ",".join("%s:%d" % (self.host, p) for p in self.sentinel_ports)

    def env(self):
        """PUSHGATE_* settings that point the daemons at this set."""
        return {"PUSHGATE_REDIS_SENTINELS": self.sentinels(),
                "PUSHGATE_REDIS_MASTER_NAME": self.master_name}

    def primary(self):
        """(host, port) the first sentinel that answers names as the primary."""
        last = None
        for port in self.sentinel_ports:
            if port not in self._procs:
                continue
            try:
                s = _redis_mod.Redis(host=self.host, port=port, socket_timeout=2,
                                     decode_responses=True)
                host, p = s.execute_command("SENTINEL", "get-master-addr-by-name",
                                            self.master_name)
                return host, int(p)
            except Exception as e:  # noqa: BLE001 - the next sentinel
                last = e
        raise FixtureError("no sentinel names the primary of %s: %s" % (self.master_name, last))

    def redis(self, **kwargs):
        """A redis.Redis client on the primary now (decode_responses=True
        unless overridden)."""
        host, port = self.primary()
        args = dict(host=host, port=port, decode_responses=True, socket_timeout=10)
        args.update(kwargs)
        return _redis_mod.Redis(**args)

    def role(self, port):
        """ROLE's first element on a data server ("master", "slave"), or None
        when it does not answer."""
        try:
            r = _redis_mod.Redis(host=self.host, port=port, socket_timeout=2,
                                 decode_responses=True)
            return r.execute_command("ROLE")[0]
        except Exception:  # noqa: BLE001 - down
            return None

    def pid(self, port):
        entry = self._procs.get(port)
        return entry[0].pid if entry else None

    def kill_primary(self):
        """SIGKILL of the data server the sentinels name as primary (a crash:
        no shutdown, no last write).  Returns its port."""
        host, port = self.primary()
        if port not in self._procs:
            raise FixtureError("the primary %s:%d is not one of ours" % (host, port))
        proc = self._procs[port][0]
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        del self._procs[port]
        return port

    def wait_failover(self, old_port, timeout=30.0):
        """Until a sentinel names another server than old_port as primary and
        that server says ROLE master; its (host, port)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                host, port = self.primary()
                if port != old_port and self.role(port) == "master":
                    return host, port
                last = "the sentinels still name %s:%d" % (host, port)
            except FixtureError as e:
                last = str(e)
            time.sleep(0.05)
        raise FixtureError("no failover from port %d within %.0f s (%s)"
                           % (old_port, timeout, last))

    def restart(self, port):
        """Starts the data server of port again (same folder: its AOF), as a
        replica of the primary now, and waits until the pair replicates
        again.  On a loaded machine the sentinels may fail over once more
        while it starts (down-after-milliseconds is short here) and promote
        it back: then the other server is the replica that must be in sync."""
        _, primary = self.primary()
        self._launch_server(port, replica_of=primary)
        self._wait_until("a replica of the pair of %d in sync" % port,
                         lambda: any(self._link_up(p) for p in self.server_ports))

    def kill_servers(self):
        """SIGKILL of both data servers at once (all of Redis down; the
        sentinels stay).  Returns (primary port, replica port)."""
        _, primary = self.primary()
        replica = [p for p in self.server_ports if p != primary][0]
        for port in (primary, replica):
            entry = self._procs.pop(port, None)
            if entry and entry[0].poll() is None:
                os.kill(entry[0].pid, signal.SIGKILL)
            if entry:
                entry[0].wait(10)
        return primary, replica

    def start_servers(self, primary, replica):
        """Both data servers again, same ports and folders (their AOF): the
        primary first, then the replica of it, in sync.  Returns time.time()
        when the primary answered again."""
        self._launch_server(primary)
        answered = time.time()
        self._launch_server(replica, replica_of=primary)
        self._wait_in_sync(replica)
        return answered

    # -- internals
    def _record(self, port, proc, log, what):
        st = _proc_stat(proc.pid)
        self._procs[port] = (proc, st[1] if st else None, log, what)

    def _launch_server(self, port, replica_of=None):
        folder = os.path.join(self.dir, "redis-%d" % port)
        os.makedirs(folder, exist_ok=True)
        aof = (["--appendonly", "yes", "--appendfsync", "everysec"] if self.aof
               else ["--appendonly", "no"])
        argv = (["redis-server", "--port", str(port), "--bind", LOOPBACK, "--save", ""] + aof +
                ["--dir", folder, "--daemonize", "no", "--protected-mode", "no",
                 "--loglevel", "notice"])
        if replica_of:
            argv += ["--replicaof", LOOPBACK, str(replica_of)]
        log = os.path.join(self.dir, "redis-%d.log" % port)
        proc = self._popen(argv, log)
        self._record(port, proc, log, "redis-server %d" % port)
        self._deadline_loop("redis-server %d" % port, proc, log,
                            lambda: self._ping(port))

    def _launch_sentinel(self, i, port, primary):
        folder = os.path.join(self.dir, "sentinel-%d" % i)
        os.makedirs(folder, exist_ok=True)
        conf = os.path.join(folder, "sentinel.conf")
        name = self.master_name
        with open(conf, "w") as f:
            f.write("port %d\nbind %s\nprotected-mode no\ndaemonize no\ndir %s\n"
                    "sentinel monitor %s %s %d 2\n"
                    "sentinel down-after-milliseconds %s %d\n"
                    "sentinel failover-timeout %s %d\n"
                    "sentinel parallel-syncs %s 1\n"
                    % (port, LOOPBACK, folder, name, LOOPBACK, primary, name,
                       self.down_after_ms, name, self.failover_timeout_ms, name))
        log = os.path.join(self.dir, "sentinel-%d.log" % i)
        proc = self._popen(["redis-server", conf, "--sentinel"], log)
        self._record(port, proc, log, "sentinel %d" % port)
        self._deadline_loop("sentinel %d" % port, proc, log, lambda: self._ping(port))

    def _ping(self, port):
        with socket.create_connection((self.host, port), 1) as s:
            s.sendall(b"PING\r\n")
            if not s.recv(64).startswith(b"+PONG"):
                raise FixtureError("no PONG from %d" % port)

    def _wait_until(self, what, cond):
        deadline = time.monotonic() + self.timeout
        while not cond():
            if time.monotonic() > deadline:
                raise FixtureError("%s: not within %.0f s; logs in %s" % (what, self.timeout,
                                                                          self.dir))
            time.sleep(0.05)

    def _link_up(self, port):
        """port is a replica whose link to its primary is up."""
        try:
            r = _redis_mod.Redis(host=self.host, port=port, socket_timeout=2)
            return r.info("replication").get("master_link_status") == "up"
        except Exception:  # noqa: BLE001 - loading, or not yet listening
            return False

    def _wait_in_sync(self, port):
        self._wait_until("replica %d in sync" % port, lambda: self._link_up(port))

    def _wait_sentinels_ready(self):
        def ready(port):
            try:
                s = _redis_mod.Redis(host=self.host, port=port, socket_timeout=2,
                                     decode_responses=True)
                m = s.execute_command("SENTINEL", "MASTER", self.master_name)
                m = dict(zip(m[::2], m[1::2])) if isinstance(m, list) else m
                return (int(m.get("num-slaves", 0)) >= 1 and
                        int(m.get("num-other-sentinels", 0)) >= self.SENTINELS - 1)
            except Exception:  # noqa: BLE001 - not yet
                return False
        self._wait_until("sentinels that know the replica and each other",
                         lambda: all(ready(p) for p in self.sentinel_ports))

    def _stop_port(self, port):
        proc, start, _, what = self._procs.pop(port)
        Stack._terminate(what, proc.pid, start, proc, 15.0)


# ---------------------------------------------------------------- GaleraCluster

GALERA_PROVIDER = "/usr/lib/galera/libgalera_smm.so"


class GaleraCluster(ProcessSet):
    """Three MariaDB Galera nodes on loopback ports, for pushgate's
    mysql_hosts (Redis stays a Stack's or a SentinelSet's).

        with GaleraCluster() as g:
            env = g.env()               # PUSHGATE_MYSQL_HOSTS (node 1 first), _USER, ...
            db = g.mysql(node=1)        # pymysql as the pushgate user on node 2
            g.kill(0)                   # kill -9 of node 1
            how = g.restart(0)          # back, rejoined: "IST" or "SST"

    Node 1 is bootstrapped (--wsrep-new-cluster), the database, user
    (pushgate/pushgate, as Stack) and sql/*.sql are loaded there once, then
    nodes 2 and 3 join and get it all by state transfer (SST by rsync, the
    one method Debian's galera-4 and mariadb-server bring without more
    packages).  Each node has its own folder under dir with its datadir,
    socket and logs, and free ports for SQL, group communication (gcomm),
    IST and SST; wsrep_on, binlog_format=ROW, innodb_autoinc_lock_mode=2.
    A node killed with kill(i) and started with restart(i) first recovers
    its position from InnoDB (mariadbd --wsrep-recover, as galera_recovery
    does) so that it rejoins by IST from a peer's gcache.

    As root, mariadbd runs as nobody: rsync's SST daemon drops to nobody
    when started as root and must be able to write the joiner's datadir.
    Processes are started and stopped by PID (Popen, start time checked), as
    Stack does; stop() removes a folder it made.  unavailable() says why
    this machine cannot run one (no galera-4, no rsync), for a test to skip."""

    NODES = 3

    prefix = "pushgate-galera-"

    def __init__(self, dir=None, sql_dir=SQL_DIR, timeout=120.0, keep=False,
                 cluster_name="pushgate"):
        super().__init__(dir, timeout, keep)
        self.sql_dir = sql_dir
        self.cluster_name = cluster_name
        self.mysql_user = DB_USER
        self.mysql_password = DB_PASSWORD
        self.mysql_db = DB_NAME
        self.mysql_host = LOOPBACK  # Stack's bootstrap grants by it (loopback: no '%' user)
        self.nodes = []             # dicts: port, gcomm, ist, sst, folder, proc, start
        self._as_nobody = os.geteuid() == 0

    _load_sql = Stack._load_sql

    @staticmethod
    def unavailable():
        """Why a cluster cannot start here, or None."""
        if not os.path.exists(GALERA_PROVIDER):
            return "%s is missing (Debian package galera-4)" % GALERA_PROVIDER
        if not shutil.which("rsync"):
            return "rsync is missing (the SST method used)"
        if not (shutil.which("wsrep_sst_rsync") or os.path.exists("/usr/bin/wsrep_sst_rsync")):
            return "wsrep_sst_rsync is missing (Debian package mariadb-server)"
        if not _mariadbd():
            return "mariadbd is missing"
        return None

    def _start(self):
        """Bootstraps node 1, loads the schema there, then joins nodes 2 and
        3; done once all three are synced in one cluster."""
        why = self.unavailable()
        if why:
            raise FixtureError("no Galera cluster here: " + why)
        self._make_folders()
        self._install()
        self._launch(0, bootstrap=True)
        self._wait_synced(0)
        Stack._bootstrap_mysql(self)
        for i in range(1, self.NODES):
            self._launch(i)
        for i in range(1, self.NODES):
            self._wait_synced(i)
        self._wait_size(self.NODES)

    def _stop_all(self):
        errors = []
        for i in reversed(range(len(self.nodes))):
            try:
                self._stop_node(i)
            except Exception as e:  # keep going: stop the others too
                errors.append(str(e))
        return errors

    # -- public API

    def hosts(self, order=None):
        """mysql_hosts: host:port of the nodes, in order (default 0, 1, 2)."""
        order = range(len(self.nodes)) if order is None else order
        return ",".join("%s:%d" % (self.host, self.nodes[i]["port"]) for i in order)

    def env(self):
        """PUSHGATE_MYSQL_* for the daemons: every node in mysql_hosts, node
        1 first; PUSHGATE_MYSQL_HOST/PORT name node 1 for what takes one."""
        return {
            "PUSHGATE_MYSQL_HOSTS": self.hosts(),
            "PUSHGATE_MYSQL_HOST": self.host,
            "PUSHGATE_MYSQL_PORT": str(self.nodes[0]["port"]),
            "PUSHGATE_MYSQL_USER": self.mysql_user,
            "PUSHGATE_MYSQL_PASSWORD": self.mysql_password,
            "PUSHGATE_MYSQL_DATABASE": self.mysql_db,
        }

    @property
    def mysql_socket(self):
        """Node 1's socket (where the schema is loaded)."""
        return self._sock(0)

    def mysql(self, root=False, node=0, **kwargs):
        """A new pymysql connection (autocommit) to node `node` (0-based):
        the pushgate user over TCP, or root over its socket."""
        args = dict(charset="utf8mb4", autocommit=True, connect_timeout=10)
        if root:
            args.update(unix_socket=self._sock(node), user="root", password="")
        else:
            args.update(host=self.host, port=self.nodes[node]["port"], user=self.mysql_user,
                        password=self.mysql_password, database=self.mysql_db)
        args.update(kwargs)
        return pymysql.connect(**args)

    def status(self, node):
        """wsrep_* status of a node as a dict (through its socket, as root)."""
        conn = self.mysql(root=True, node=node, connect_timeout=2, read_timeout=5)
        try:
            with conn.cursor() as c:
                c.execute("SHOW GLOBAL STATUS LIKE 'wsrep%'")
                return {k: v for k, v in c.fetchall()}
        finally:
            conn.close()

    def add_app(self, chat_token, name="test", enabled=True):
        Stack.add_app(self, chat_token, name, enabled)

    def alive(self, node):
        n = self.nodes[node]
        return n["proc"] is not None and n["proc"].poll() is None

    def kill(self, node):
        """kill -9 of a node, as a crash of its server: nothing flushed.
        Returns once the process is gone."""
        n = self.nodes[node]
        if not self.alive(node):
            raise FixtureError("node %d is not running" % (node + 1))
        os.kill(n["proc"].pid, signal.SIGKILL)
        n["proc"].wait(timeout=10)
        n["proc"] = n["start"] = None

    def restart(self, node):
        """Starts a killed (or stopped) node again on the same ports and
        datadir: its position recovered first, it rejoins the others.
        Returns "IST" or "SST", how it got what it missed."""
        n = self.nodes[node]
        if self.alive(node):
            raise FixtureError("node %d is running" % (node + 1))
        position = self._recover(node)
        mark = os.path.getsize(n["error_log"]) if os.path.exists(n["error_log"]) else 0
        self._launch(node, position=position)
        self._wait_synced(node)
        with open(n["error_log"], "rb") as f:
            f.seek(mark)
            text = f.read().decode("utf-8", "replace")
        # the joiner runs the SST script either way; it says which it did
        return "SST" if "rsync SST completed on joiner" in text else "IST"

    # -- internals
    def _sock(self, node):
        return os.path.join(self.nodes[node]["folder"], "mysql.sock")

    def _make_folders(self):
        os.makedirs(self.dir, exist_ok=True)
        if self._as_nobody:
            os.chmod(self.dir, 0o755)   # nobody reaches its node folders through it
        ports = _free_ports(4 * self.NODES)
        self.nodes = []
        for i in range(self.NODES):
            folder = os.path.join(self.dir, "node%d" % (i + 1))
            if len(os.path.join(folder, "mysql.sock")) > SOCKET_PATH_MAX:
                raise FixtureError("folder %s too long for a Unix socket" % self.dir)
            shutil.rmtree(folder, ignore_errors=True)
            for sub in ("data", "tmp"):
                os.makedirs(os.path.join(folder, sub))
            self.nodes.append(dict(port=ports[4 * i], gcomm=ports[4 * i + 1],
                                   ist=ports[4 * i + 2], sst=ports[4 * i + 3], folder=folder,
                                   error_log=os.path.join(folder, "mysqld.log"),
                                   out_log=os.path.join(folder, "stdout.log"),
                                   proc=None, start=None))

    def _chown(self, path):
        if not self._as_nobody:
            return
        import pwd
        pw = pwd.getpwnam("nobody")
        for root, dirs, files in os.walk(path):
            os.chown(root, pw.pw_uid, pw.pw_gid)
            for name in files:
                os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)

    def _user(self):
        return "nobody" if self._as_nobody else pwd_name()

    def _install(self):
        """Node 1's datadir; the others start empty and get theirs by SST."""
        exe = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        if not exe:
            raise FixtureError("mariadb-install-db not found: run scripts/install-deps")
        n = self.nodes[0]
        log = os.path.join(n["folder"], "install-db.log")
        argv = [exe, "--no-defaults", "--datadir=" + os.path.join(n["folder"], "data"),
                "--user=" + self._user(), "--auth-root-authentication-method=normal",
                "--skip-test-db", "--skip-name-resolve",
                "--tmpdir=" + os.path.join(n["folder"], "tmp")] + MARIADB_SETTINGS[:3]
        for node in self.nodes:
            self._chown(node["folder"])
        with open(log, "wb") as out:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT, cwd=self.dir, timeout=self.timeout)
        if r.returncode != 0:
            raise FixtureError("mariadb-install-db failed (status %d); last lines of %s:\n%s"
                               % (r.returncode, log, _tail(log)))
        self._chown(n["folder"])

    def _argv(self, node, extra=()):
        n = self.nodes[node]
        gcomm = ",".join("%s:%d" % (self.host, m["gcomm"]) for m in self.nodes)
        provider = ("gmcast.listen_addr=tcp://%s:%d;ist.recv_addr=%s:%d;gcache.size=64M"
                    % (self.host, n["gcomm"], self.host, n["ist"]))
        return [_mariadbd(), "--no-defaults",
                "--datadir=" + os.path.join(n["folder"], "data"),
                "--socket=" + self._sock(node),
                "--port=%d" % n["port"],
                "--bind-address=" + self.host,
                "--skip-networking=0",
                "--user=" + self._user(),
                "--pid-file=" + os.path.join(n["folder"], "mysqld.pid"),
                "--log-error=" + n["error_log"],
                "--tmpdir=" + os.path.join(n["folder"], "tmp"),
                "--wsrep-on=ON",
                "--wsrep-provider=" + GALERA_PROVIDER,
                "--wsrep-cluster-name=" + self.cluster_name,
                "--wsrep-cluster-address=gcomm://" + gcomm,
                "--wsrep-node-name=node%d" % (node + 1),
                "--wsrep-node-address=%s:%d" % (self.host, n["gcomm"]),
                "--wsrep-sst-method=rsync",
                "--wsrep-sst-receive-address=%s:%d" % (self.host, n["sst"]),
                "--wsrep-provider-options=" + provider,
                "--binlog-format=ROW",
                "--innodb-autoinc-lock-mode=2",
                "--default-storage-engine=InnoDB",
                ] + MARIADB_SETTINGS + list(extra)

    def _launch(self, node, bootstrap=False, position=None):
        extra = ["--wsrep-new-cluster"] if bootstrap else []
        if position:
            extra.append("--wsrep-start-position=" + position)
        n = self.nodes[node]
        n["proc"] = self._popen(self._argv(node, extra), n["out_log"])
        st = _proc_stat(n["proc"].pid)
        n["start"] = st[1] if st else None

    def _recover(self, node):
        """The node's last committed position (uuid:seqno) from InnoDB, or
        None: mariadbd --wsrep-recover, which starts no server."""
        n = self.nodes[node]
        log = os.path.join(n["folder"], "recover.log")
        argv = [a for a in self._argv(node) if not a.startswith("--log-error=")]
        argv += ["--log-error=" + log, "--wsrep-recover"]
        if os.path.exists(log):
            os.unlink(log)
        with open(os.path.join(n["folder"], "recover.out"), "wb") as out:
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                           cwd=self.dir, timeout=self.timeout)
        try:
            with open(log, errors="replace") as f:
                found = [ln.split("Recovered position:")[1].strip() for ln in f
                         if "Recovered position:" in ln]
        except OSError:
            return None
        return found[-1] if found and not found[-1].endswith(":-1") else None

    def _wait_synced(self, node):
        """Until the node is Synced and ready (wsrep_ready ON)."""
        n = self.nodes[node]

        def probe():
            st = self.status(node)
            if st.get("wsrep_ready") != "ON" or st.get("wsrep_local_state_comment") != "Synced":
                raise FixtureError("node %d: %s" % (node + 1,
                                                    st.get("wsrep_local_state_comment")))
        self._deadline_loop("galera node %d" % (node + 1), n["proc"], n["error_log"], probe)

    def _wait_size(self, size):
        deadline = time.monotonic() + self.timeout
        while True:
            sizes = [self.status(i).get("wsrep_cluster_size") for i in range(len(self.nodes))
                     if self.alive(i)]
            if all(s == str(size) for s in sizes):
                return
            if time.monotonic() > deadline:
                raise FixtureError("cluster size %s, not %d, after %.0f s" % (sizes, size,
                                                                            self.timeout))
            time.sleep(0.1)

    def _stop_node(self, node):
        n = self.nodes[node]
        if n["proc"] is not None:
            Stack._terminate("galera node %d" % (node + 1), n["proc"].pid, n["start"], n["proc"],
                             60.0)
        n["proc"] = n["start"] = None


def _mariadbd():
    return (shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin")
            or shutil.which("mysqld", path="/usr/sbin:/usr/bin"))


def pwd_name():
    import pwd
    return pwd.getpwuid(os.geteuid()).pw_name


# ---------------------------------------------------------------- CLI


def _print_env(stack):
    for k, v in stack.env().items():
        print("export %s=%s" % (k, shlex.quote(v)))


def _cmd_restart_redis(args):
    stack = Stack.load(args.dir)
    stack.timeout = args.timeout
    stack.restart_redis(args.how)
    sys.stderr.write("fixture: redis-server restarted (%s) on %s:%d, pid %d%s\n"
                     % (args.how, stack.redis_host, stack.redis_port, stack.redis_pid,
                        ", AOF in %s" % stack.redis_dir if stack.redis_aof
                        else ", no persistence: it starts empty"))
    return 0


def _cmd_start(args):
    state_file = os.path.join(os.path.abspath(args.dir), "stack.json")
    if os.path.exists(state_file):
        old = Stack.load(args.dir)
        if old.is_running():
            sys.stderr.write("fixture: a stack is already running in %s "
                             "(run: %s stop --dir %s)\n"
                             % (args.dir, sys.argv[0], shlex.quote(args.dir)))
            return 1
        old.keep = False
        old.stop()  # stale state from a previous run: clean it up
    stack = Stack(dir=args.dir, timeout=args.timeout, detach=True, redis_aof=args.redis_aof)
    stack.start()
    # Leave the servers running: this process is only the launcher.
    stack._running = False
    atexit.unregister(stack._atexit)
    _print_env(stack)
    sys.stderr.write("fixture: MariaDB on %s:%d (socket %s), Redis on %s:%d%s, "
                     "started in %.1f s; stop with: %s stop --dir %s\n"
                     % (stack.mysql_host, stack.mysql_port, stack.mysql_socket,
                        stack.redis_host, stack.redis_port,
                        " (AOF, everysec)" if stack.redis_aof else "",
                        stack.start_seconds, sys.argv[0], shlex.quote(args.dir)))
    return 0


def _cmd_stop(args):
    try:
        stack = Stack.load(args.dir)
    except FileNotFoundError:
        sys.stderr.write("fixture: no stack.json in %s: nothing to stop\n" % args.dir)
        return 0
    stack.keep = args.keep
    stack.stop()
    return 0


def _cmd_env(args):
    _print_env(Stack.load(args.dir))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="fixture.py",
        description="Throw-away MariaDB + Redis for pushgate tests and demo.")
    sub = p.add_subparsers(dest="cmd", required=True)
    ps = sub.add_parser("start", help="start the stack, print export lines, leave it running")
    ps.add_argument("--dir", required=True, help="folder for data, logs and stack.json")
    ps.add_argument("--timeout", type=float, default=60.0,
                    help="seconds to wait for each server (default 60)")
    ps.add_argument("--redis-aof", action="store_true",
                    help="Redis with an append-only file (appendfsync everysec) in "
                         "DIR/redis, so that restart-redis keeps its data")
    pr = sub.add_parser("restart-redis",
                        help="stop Redis and start it again on the same port and folder")
    pr.add_argument("--dir", required=True)
    pr.add_argument("--how", choices=("kill", "nosave", "term"), default="kill",
                    help="kill: SIGKILL (a crash, the default); nosave: SHUTDOWN NOSAVE; "
                         "term: SIGTERM")
    pr.add_argument("--timeout", type=float, default=60.0,
                    help="seconds to wait for Redis to answer again (default 60)")
    pt = sub.add_parser("stop", help="stop the stack described by DIR/stack.json")
    pt.add_argument("--dir", required=True)
    pt.add_argument("--keep", action="store_true", help="keep data and logs")
    pe = sub.add_parser("env", help="print the export lines of a running stack")
    pe.add_argument("--dir", required=True)
    args = p.parse_args(argv)
    try:
        return {"start": _cmd_start, "stop": _cmd_stop, "env": _cmd_env,
                "restart-redis": _cmd_restart_redis}[args.cmd](args)
    except FixtureError as e:
        sys.stderr.write("fixture: %s\n" % e)
        return 1


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------- RedisCluster

class RedisCluster(ProcessSet):
    """A Redis Cluster of `primaries` primaries (no replicas) of Debian's
    redis-server on loopback ports, for pushgate's redis_cluster_nodes (the
    MariaDB stays the Stack's).

        with RedisCluster() as rc:
            env = rc.env()              # PUSHGATE_REDIS_CLUSTER_NODES
            r = rc.node_for("key")      # redis.Redis on the primary serving key's slot
            rc.owner("key")             # its port
            rc.kill(port); rc.restart(port)

    The 16384 slots are split in equal ranges (CLUSTER ADDSLOTSRANGE), the
    nodes meet the first (CLUSTER MEET; each node's bus port is a free port
    of its own, cluster-port, since port + 10000 may be taken or too high),
    and start() returns once every node
    says cluster_state:ok and knows every other.  Each node has a folder of
    its own under dir (its nodes.conf, no persistence unless aof); processes
    are started and stopped by PID (Popen, start time checked), as Stack
    does; stop() removes a folder it made."""

    prefix = "pushgate-cluster-"

    def __init__(self, dir=None, primaries=3, node_timeout_ms=2000, aof=False, timeout=30.0,
                 keep=False):
        super().__init__(dir, timeout, keep)
        self.primaries = int(primaries)
        self.node_timeout_ms = int(node_timeout_ms)
        self.aof = bool(aof)
        self.ports = []
        self.bus_ports = {}         # port -> its cluster bus port
        self._procs = {}            # port -> (Popen, starttime, log, what)

    def _start(self):
        if _redis_mod is None:
            raise FixtureError("python3-redis is not installed")
        # the bus port is given (cluster-port): port + 10000 may be taken, or above 65535
        ports = _free_ports(2 * self.primaries)
        self.ports = ports[:self.primaries]
        self.bus_ports = dict(zip(self.ports, ports[self.primaries:]))
        for port in self.ports:
            self._launch(port)
        per = 16384 // self.primaries
        for i, port in enumerate(self.ports):
            first = i * per
            last = 16383 if i == self.primaries - 1 else first + per - 1
            self._client(port).execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        for port in self.ports[1:]:
            self._client(port).execute_command("CLUSTER", "MEET", self.host, self.ports[0],
                                               self.bus_ports[self.ports[0]])
        self._wait_ok()

    def _stop_all(self):
        errors = []
        for port in list(self._procs):
            try:
                proc, start, _, what = self._procs.pop(port)
                Stack._terminate(what, proc.pid, start, proc, 15.0)
            except Exception as e:  # keep going: stop the others too
                errors.append(str(e))
        return errors

    # -- public API

    def nodes(self):
        """"host:port,host:port,...", as redis_cluster_nodes takes it."""
        return ",".join("%s:%d" % (self.host, p) for p in self.ports)

    def env(self):
        return {"PUSHGATE_REDIS_CLUSTER_NODES": self.nodes()}

    def slot(self, key):
        return int(self._client(self.ports[0]).execute_command("CLUSTER", "KEYSLOT", key))

    def owner(self, key):
        """The port of the primary serving key's slot."""
        slot = self.slot(key)
        for start, end, primary, *_ in self._client(self.ports[0]).execute_command(
                "CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                return int(primary[1])
        raise FixtureError("no node serves slot %d" % slot)

    def node_for(self, key, **kwargs):
        """A redis.Redis on the primary serving key (decode_responses=True
        unless overridden)."""
        return self._client(self.owner(key), **kwargs)

    def client(self, port, **kwargs):
        return self._client(port, **kwargs)

    def pid(self, port):
        entry = self._procs.get(port)
        return entry[0].pid if entry else None

    def kill(self, port):
        """SIGKILL of one node (a crash)."""
        proc = self._procs.pop(port)[0]
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def restart(self, port):
        """The node of port again, same folder (its nodes.conf: it rejoins
        with its slots); waits for cluster_state:ok."""
        self._launch(port)
        self._wait_ok()

    def move_slot(self, slot, to_port, batch=100, max_rounds=1000):
        """Moves slot and its keys to the node of to_port, as redis-cli
        --cluster reshard does (SETSLOT IMPORTING / MIGRATING, MIGRATE,
        SETSLOT NODE on every node); returns the port it was on."""
        src_port = None
        for start, end, primary, *_ in self._client(self.ports[0]).execute_command(
                "CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                src_port = int(primary[1])
        if src_port is None or src_port == to_port:
            raise FixtureError("slot %d: on %s, not movable to %d" % (slot, src_port, to_port))
        src, dst = self._client(src_port), self._client(to_port)
        src_id, dst_id = src.execute_command("CLUSTER", "MYID"), dst.execute_command("CLUSTER",
                                                                                     "MYID")
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        for _ in range(max_rounds):
            keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            src.execute_command("MIGRATE", self.host, to_port, "", 0, 5000, "KEYS", *keys)
        else:
            raise FixtureError("slot %d: keys still on %d after %d rounds" % (slot, src_port,
                                                                              max_rounds))
        for port in [to_port, src_port] + [p for p in self.ports if p not in (to_port, src_port)]:
            self._client(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        return src_port

    # -- internals

    def _client(self, port, **kwargs):
        args = dict(host=self.host, port=port, decode_responses=True, socket_timeout=5)
        args.update(kwargs)
        return _redis_mod.Redis(**args)

    def _launch(self, port):
        folder = os.path.join(self.dir, "node-%d" % port)
        os.makedirs(folder, exist_ok=True)
        aof = (["--appendonly", "yes", "--appendfsync", "everysec"] if self.aof
               else ["--appendonly", "no"])
        argv = (["redis-server", "--port", str(port), "--bind", LOOPBACK, "--save", ""] + aof +
                ["--dir", folder, "--daemonize", "no", "--protected-mode", "no",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-port", str(self.bus_ports[port]),
                 "--cluster-node-timeout", str(self.node_timeout_ms), "--loglevel", "notice"])
        log = os.path.join(self.dir, "node-%d.log" % port)
        proc = self._popen(argv, log)
        st = _proc_stat(proc.pid)
        what = "redis-server %d (cluster)" % port
        self._procs[port] = (proc, st[1] if st else None, log, what)
        self._deadline_loop(what, proc, log, lambda: self._client(port).ping())

    def _wait_ok(self):
        def ok(port):
            try:
                c = self._client(port)
                info = c.execute_command("CLUSTER", "INFO")
                if isinstance(info, dict):
                    state, known = info.get("cluster_state"), info.get("cluster_known_nodes")
                else:
                    fields = dict(line.split(":", 1) for line in info.split() if ":" in line)
                    state, known = fields.get("cluster_state"), fields.get("cluster_known_nodes")
                return state == "ok" and int(known or 0) >= self.primaries
            except Exception:  # noqa: BLE001 - not yet
                return False
        deadline = time.monotonic() + self.timeout
        while not all(ok(p) for p in self._procs):
            if time.monotonic() > deadline:
                raise FixtureError("redis cluster: not ok within %.0f s; logs in %s"
                                   % (self.timeout, self.dir))
            time.sleep(0.05)

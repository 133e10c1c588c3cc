"""Helpers for the engine's end-to-end tests (test_engine.py): starting an
example server (echo_server / task_server) on a free loopback port, finding
its processes through /proc, framed clients, and the checks made after every
test (clean stop, no sanitizer report, no process left behind).

Every wait here is bounded: a test may fail, never hang."""
import glob
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import time

from fixture import free_port

HOST = "127.0.0.1"
# Every test gateway's admin_secret: the operator token that opens /stats,
# /metrics and /admin/cluster on its public port.
ADMIN_SECRET = "pushgate-e2e-admin-secret-0123"
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")
# valgrind with a leak check that fails on lost blocks.  Release builds link
# jemalloc (common/memory.c); the synonym has valgrind replace its malloc as
# it replaces glibc's.
VALGRIND = ["valgrind", "--soname-synonyms=somalloc=*jemalloc*", "--leak-check=full",
            "--show-leak-kinds=definite,indirect", "--errors-for-leak-kinds=definite,indirect"]


def wait_until(cond, timeout, interval=0.05, what="condition"):
    """Polls cond() until it returns a true value (returned) or timeout
    seconds pass (AssertionError naming what)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


# ---- processes through /proc ----

def proc_stat(pid):
    """(state, ppid, starttime) of pid, or None when it does not exist."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm is in parentheses and may hold spaces: split after the last ')'
    rest = text[text.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[19])


def proc_title(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw.split(b"\0")[0].decode(errors="replace").strip()


def children(ppid):
    """Live (non-zombie) children of ppid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = proc_stat(int(d))
        if st and st[1] == ppid and st[0] != "Z":
            out.append(int(d))
    return sorted(out)


def allowed_cpus(pid):
    """The set of Cpus_allowed_list values over every thread of pid."""
    out = set()
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
            out |= {line.split()[1] for line in f if line.startswith("Cpus_allowed_list:")}
    return out


def alive(pid, starttime=None):
    """True while pid runs (a zombie counts as gone); with starttime, only
    while it is still that same process (pids are reused)."""
    st = proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return starttime is None or st[2] == starttime


# ---- framing ----

class Client:
    """A blocking TCP client speaking the server's framing: ("eof", marker),
    ("length",) or ("raw",)."""

    def __init__(self, port, framing=("length",), timeout=5.0, rcvbuf=None):
        self.framing = framing
        self.timeout = timeout
        self.buf = b""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.sock.connect((HOST, port))

    def frame(self, data):
        if self.framing[0] == "eof":
            return data + self.framing[1]
        if self.framing[0] == "length":
            return struct.pack(">I", len(data)) + data
        return data

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, *packets):
        self.sock.sendall(b"".join(self.frame(p) for p in packets))

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("no complete packet in time")
        self.sock.settimeout(left)
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("closed by the server (EOF)")
        self.buf += chunk

    def recv(self, timeout=None):
        """The next packet (without framing). Raises socket.timeout, or
        ConnectionError when the server closed the connection."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if self.framing[0] == "eof":
                i = self.buf.find(self.framing[1])
                if i >= 0:
                    packet = self.buf[:i]
                    self.buf = self.buf[i + len(self.framing[1]):]
                    return packet
            elif self.framing[0] == "length":
                if len(self.buf) >= 4:
                    n = struct.unpack(">I", self.buf[:4])[0]
                    if len(self.buf) >= 4 + n:
                        packet = self.buf[4:4 + n]
                        self.buf = self.buf[4 + n:]
                        return packet
            elif self.buf:
                packet, self.buf = self.buf, b""
                return packet
            self._fill(deadline)

    def recv_many(self, n, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        return [self.recv(max(0.01, deadline - time.monotonic())) for _ in range(n)]

    def call(self, data, timeout=None):
        self.send(data)
        return self.recv(timeout)

    def stats(self, timeout=None):
        return json.loads(self.call(b"stats", timeout))

    def wait_closed(self, timeout):
        """True when the server closes the connection (EOF or reset) within
        timeout seconds; data arriving meanwhile is kept in buf."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not chunk:
                return True
            self.buf += chunk
        return False

    def quiet(self, seconds):
        """True when nothing arrives for seconds (no stray or duplicate data)."""
        self.sock.settimeout(seconds)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            return not self.buf
        self.buf += chunk
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def send_nonblocking(sock, data, timeout):
    """Sends what it can of data within timeout seconds on a socket set
    non-blocking; returns (bytes sent, error or None)."""
    sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + timeout
    view = memoryview(data)
    while sent < len(data) and time.monotonic() < deadline:
        try:
            _, w, _ = select.select([], [sock], [], max(0.0, min(0.2, deadline - time.monotonic())))
            if not w:
                continue
            sent += sock.send(view[sent:sent + 65536])
        except BlockingIOError:
            continue
        except OSError as e:
            return sent, e
    return sent, None


# ---- servers ----

class Server:
    """One example server started by start_server."""

    def __init__(self, bin_dir, name, tmp_path, settings, wait=True, extra_args=()):
        self.name = name
        self.dir = str(tmp_path)
        tag = "%s-%d" % (name, free_port())
        self.log_path = os.path.join(self.dir, tag + ".log")
        self.stderr_path = os.path.join(self.dir, tag + ".stderr")
        self.san_prefix = os.path.join(self.dir, tag + ".san")
        settings = dict(settings)
        settings.setdefault("port", free_port())
        settings.setdefault("log_file", self.log_path)
        self.log_path = settings["log_file"]
        self.port = int(settings["port"])
        self.settings = settings
        self.pid_file = settings.get("pid_file") or None
        self.worker_num = int(settings.get("worker_num", 2))
        self.task_worker_num = int(settings.get("task_worker_num", 2))
        self.recorded = {}         # pid -> starttime of every process seen
        self.stopped = False
        self.exit_code = None
        self.expected_exit = 0     # None: any (a test killed the master itself)
        args = [os.path.join(bin_dir, name)]
        for k, v in settings.items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            args += ["--set", "%s=%s" % (k, v)]
        args += list(extra_args)
        env = dict(os.environ)
        # Reports from every process (also a daemon's, whose stderr is
        # /dev/null) land in san_prefix.PID files.
        for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
            opts = env.get(var, "")
            env[var] = (opts + ":" if opts else "") + "log_path=" + self.san_prefix
        self.stderr_file = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr_file, env=env, start_new_session=True)
        self.master_pid = self.proc.pid
        if wait:
            self.wait_ready()

    # -- start-up --

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stderr(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    def sanitizer_text(self):
        text = self.stderr()
        for path in sorted(glob.glob(self.san_prefix + "*")):
            with open(path, errors="replace") as f:
                text += "\n==== %s\n" % path + f.read()
        return text

    def record(self, pid):
        st = proc_stat(pid)
        if st and pid not in self.recorded:
            self.recorded[pid] = st[2]
        return pid

    def wait_ready(self, timeout=15):
        """Until the master logged its start and every worker and task worker
        runs with its title."""
        def ready():
            if self.proc.poll() is not None and self.proc.pid == self.master_pid:
                raise AssertionError("%s exited with %s at start:\n%s%s" % (
                    self.name, self.proc.returncode, self.stderr(), self.log()))
            return "started: master" in self.log() and self.tree_complete()
        wait_until(ready, timeout, what="%s to start" % self.name)
        self.record(self.master_pid)
        self.snapshot()

    # -- processes --

    def manager_pid(self):
        kids = [p for p in children(self.master_pid) if (proc_title(p) or "").endswith(": manager")]
        return self.record(kids[0]) if kids else None

    def workers(self):
        """{"worker 0": pid, "task 1": pid, ...} from the manager's children."""
        m = self.manager_pid()
        out = {}
        if not m:
            return out
        prefix = self.name + ": "
        for pid in children(m):
            self.record(pid)
            title = proc_title(pid) or ""
            role = title[len(prefix):] if title.startswith(prefix) else ""
            # a child just forked still has the manager's title: not counted yet
            if re.fullmatch(r"(worker|task) \d+", role):
                out[role] = pid
        return out

    def worker_pids(self):
        return {k: v for k, v in self.workers().items() if k.startswith("worker ")}

    def task_pids(self):
        return {k: v for k, v in self.workers().items() if k.startswith("task ")}

    def tree_complete(self):
        w = self.workers()
        want = ["worker %d" % i for i in range(self.worker_num)] + \
               ["task %d" % i for i in range(self.task_worker_num)]
        return all(k in w for k in want) and len(w) == len(want)

    def snapshot(self):
        """Records every process of the node now."""
        self.record(self.master_pid)
        return self.workers()

    def send_signal(self, signo):
        os.kill(self.master_pid, signo)

    # -- clients --

    def framing(self):
        if str(self.settings.get("open_length_check", "false")).lower() in ("1", "true", "yes", "on"):
            return ("length",)
        if str(self.settings.get("open_eof_split", "false")).lower() in ("1", "true", "yes", "on"):
            eof = self.settings.get("package_eof", "\\r\\n\\r\\n")
            return ("eof", eof.encode().decode("unicode_escape").encode("latin-1"))
        return ("raw",)

    def client(self, timeout=5.0, **kw):
        return Client(self.port, self.framing(), timeout=timeout, **kw)

    # -- stopping --

    def wait_master_exit(self, timeout):
        if self.proc.pid == self.master_pid:
            try:
                self.exit_code = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise AssertionError("%s master %d did not stop within %s s" % (
                    self.name, self.master_pid, timeout))
        else:   # a daemon: not our child
            wait_until(lambda: not alive(self.master_pid, self.recorded.get(self.master_pid)),
                       timeout, what="daemon master %d to exit" % self.master_pid)

    def killed(self, timeout=15):
        """For a test that ended the master itself (kill -9 of the master or
        the manager): waits for it and marks the node stopped."""
        self.stopped = True
        self.wait_master_exit(timeout)
        return self.exit_code

    def stop(self, signo=signal.SIGTERM, timeout=20):
        """Stops the node with signo, checks a clean exit (code 0 for our
        child) and returns the log text."""
        if not self.stopped:
            self.snapshot()
            self.stopped = True
            self.send_signal(signo)
            self.wait_master_exit(timeout)
        if self.proc.pid == self.master_pid and self.expected_exit is not None:
            assert self.exit_code == self.expected_exit, "%s exited with %s:\n%s" % (
                self.name, self.exit_code, self.sanitizer_text()[-4000:])
        return self.log()

    def left_behind(self, timeout=5):
        """Recorded processes still alive after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = [p for p, t in self.recorded.items() if alive(p, t)]
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.05)

    def kill_all(self):
        """Last resort after a failed test: SIGKILL every recorded process."""
        for pid, t in self.recorded.items():
            if alive(pid, t):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def check_clean(self):
        """After stop: no sanitizer report anywhere, no process left."""
        text = self.sanitizer_text() + self.log()
        marks = [m for m in SANITIZER_MARKS if m in text]
        left = self.left_behind()
        self.stderr_file.close()
        assert not marks, "sanitizer report (%s) from %s:\n%s" % (marks, self.name, text[-6000:])
        assert not left, "processes of %s still alive after stop: %s" % (
            self.name, {p: proc_title(p) for p in left})


def stop_all(servers, errors=None):
    """Stops servers in reverse start order, checking each exited cleanly
    with no sanitizer report; kills what did not.  Raises with every problem."""
    errors = list(errors or [])
    for s in reversed(servers):
        try:
            if not s.stopped:
                s.stop()
            s.check_clean()
        except AssertionError as e:
            errors.append(str(e))
            s.kill_all()
    assert not errors, "\n\n".join(errors)


def built_programs_dir(make_target):
    """The folder of the built programs, from PG_BIN (make_target names what
    sets it); the test session fails with a clear message without it."""
    import pytest
    d = os.environ.get("PG_BIN")
    if not d:
        pytest.fail("PG_BIN is not set: it must name the folder with the built "
                    "programs (%s sets it, e.g. PG_BIN=build/test/bin)" % make_target,
                    pytrace=False)
    d = os.path.abspath(d)
    if not os.path.isdir(d):
        pytest.fail("PG_BIN=%s is not a folder: build first (make BUILD=test all)" % d,
                    pytrace=False)
    return d


def start_server(bin_dir, name, tmp_path, wait=True, extra_args=(), **settings):
    """Starts bin_dir/name with --set key=value for each setting (port: a
    free one unless given; log_file: in tmp_path unless given) and waits
    until it runs (wait=False: returns at once).  Returns a Server."""
    return Server(bin_dir, name, tmp_path, settings, wait=wait, extra_args=extra_args)


def run_program(bin_dir, name, args, timeout=15, env=None):
    """Runs a program that must exit by itself; CompletedProcess (text)."""
    return subprocess.run([os.path.join(bin_dir, name)] + list(args), capture_output=True,
                          text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)

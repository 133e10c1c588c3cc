#!/usr/bin/python3
"""A cluster of hosts in Linux network namespaces, for partition tests.

Loopback tests cannot cut one node from the others, delay its packets or
lose some of them.  Net gives each host a namespace of its own with an
address in a private test subnet (10.213.N.0/24, N picked at random and
checked unused), all joined by one of two wires:

- "emulator" (default): tests/netns_link.py, a user-space learning switch
  over TAP devices that applies per link a delay (with jitter, order kept),
  a loss rate and a cut.  The kernel here has no netem, so delay and loss
  cannot come from tc.
- "bridge": veth pairs on a kernel bridge, for high packet rates; links can
  only be cut (taken down), not delayed.

The root namespace gets an address in the subnet too (.254), so a test's
browsers and clients reach every host from where the test runs.

    with Net(["db", "gw1", "gw2"], delay_ms=1, jitter_ms=0.2) as net:
        p = net.run("gw1", ["prog", "--bind", net.addr("gw1")])   # a Popen
        with net.inside("db"):          # this thread in db's namespace:
            stack.start()               # whatever it starts runs there
        net.set_link("gw1", loss=0.05)  # or cut=True; net.restore("gw1")
        net.blackhole("gw1", "db")      # gw1 cannot reach db; unblackhole()

stop() (also at exit and at the end of a with block) ends the processes
run() started, by PID, then whatever still runs inside the namespaces it
made (nothing else can be in them), deletes the namespaces, the devices
and the emulator.  unavailable() says why namespaces cannot be made here
(not root, no CAP_NET_ADMIN, no /dev/net/tun), or None.

Only root can run this."""
import atexit
import contextlib
import ctypes
import ipaddress
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
EMULATOR = os.path.join(HERE, "netns_link.py")
CLONE_NEWNET = 0x40000000
ROOT = "root"               # the name of the root namespace's link
ROOT_OCTET = 254
_libc = ctypes.CDLL(None, use_errno=True)


class NetError(RuntimeError):
    """A namespace, device or route could not be made or changed."""


def ip(*args, check=True):
    """Runs ip(8); its output, or NetError with what it said."""
    r = subprocess.run(["ip"] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=30)
    if check and r.returncode != 0:
        raise NetError("ip %s: %s" % (" ".join(args), (r.stderr or r.stdout).strip()))
    return r.stdout


def unavailable():
    """Why namespaces cannot be used here (a sentence), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN)"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    probe = "pgt-probe-%06x" % random.getrandbits(24)
    try:
        ip("netns", "add", probe)
    except (NetError, OSError, subprocess.TimeoutExpired) as e:
        return "cannot make a network namespace: %s" % e
    ip("netns", "del", probe, check=False)
    return None


def used_networks():
    """The IPv4 networks this host's addresses and routes (any table, not
    the default route) cover."""
    nets = []
    for line in ip("-4", "-o", "addr").splitlines():
        words = line.split()
        if "inet" in words:
            nets.append(ipaddress.ip_network(words[words.index("inet") + 1], strict=False))
    kinds = ("local", "broadcast", "unicast", "blackhole", "unreachable", "prohibit",
             "multicast", "anycast", "throw", "nat")
    for line in ip("-4", "route", "show", "table", "all").splitlines():
        words = line.split()
        if words and words[0] in kinds:
            words = words[1:]
        if not words or words[0] == "default":
            continue
        try:
            nets.append(ipaddress.ip_network(words[0], strict=False))
        except ValueError:
            continue
    return nets


def free_subnet():
    """10.213.N (of 10.213.N.0/24) that no address or route here overlaps."""
    used = used_networks()
    for _ in range(50):
        prefix = "10.213.%d" % random.randint(1, 250)
        mine = ipaddress.ip_network(prefix + ".0/24")
        if not any(mine.overlaps(n) for n in used):
            return prefix
    raise NetError("no free 10.213.N.0/24 subnet found")


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise NetError("setns: %s" % os.strerror(e))


def _starttime(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            text = f.read()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2:].split()
    return None if rest[0] in ("Z", "X") else int(rest[19])


def _stop_pid(pid, start, proc=None, timeout=10.0):
    """SIGTERM, then SIGKILL, of pid if it is still the process that
    started at `start`."""
    def gone():
        if proc is not None:
            return proc.poll() is not None
        return _starttime(pid) != start
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if gone():
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not gone():
            time.sleep(0.05)


def _die_with_parent():
    _libc.prctl(1, signal.SIGTERM, 0, 0, 0)     # PR_SET_PDEATHSIG


class Net:
    """Hosts in namespaces of their own on one test subnet (see the top of
    the file).  hosts: names ("db", "gw1", ...); mode: "emulator" or
    "bridge"; delay_ms, jitter_ms, loss: every link's defaults (emulator)."""

    def __init__(self, hosts, mode="emulator", delay_ms=0.0, jitter_ms=0.0, loss=0.0,
                 mtu=1500):
        if mode not in ("emulator", "bridge"):
            raise ValueError("mode is emulator or bridge, not %r" % (mode,))
        if len(set(hosts)) != len(hosts) or ROOT in hosts or not 0 < len(hosts) < ROOT_OCTET:
            raise ValueError("hosts: 1 to 253 distinct names, none named %r" % ROOT)
        self.hosts = list(hosts)
        self.mode = mode
        self.mtu = mtu
        self.default = dict(delay_ms=float(delay_ms), jitter_ms=float(jitter_ms),
                            loss=float(loss), cut=False)
        self.tag = "%04x" % random.getrandbits(16)
        self.prefix = None
        self.links = {}           # host (or ROOT) -> current properties
        self.namespaces = []      # made, in order
        self.procs = []           # (Popen, starttime) of run()
        self.blackholes = set()   # (host, address)
        self.emulator = None
        self.bridge = None
        self._lock = threading.Lock()
        self._running = False

    # -- names

    def ns(self, host):
        """The namespace of host."""
        return "pgt-%s-%s" % (self.tag, host)

    def addr(self, host):
        """host's address (ROOT: the root namespace's)."""
        if host == ROOT:
            return "%s.%d" % (self.prefix, ROOT_OCTET)
        return "%s.%d" % (self.prefix, self.hosts.index(host) + 1)

    @property
    def root_addr(self):
        return self.addr(ROOT)

    def device(self, host):
        """The device of host's link, in the root namespace's naming (the
        TAP, or the root end of the veth pair)."""
        i = ROOT_OCTET if host == ROOT else self.hosts.index(host) + 1
        return "pgt%s%s%d" % (self.tag, "t" if self.mode == "emulator" else "v", i)

    # -- life

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        if self._running:
            return self
        self._running = True
        atexit.register(self.stop)
        try:
            self.prefix = free_subnet()
            for h in self.hosts:
                ip("netns", "add", self.ns(h))
                self.namespaces.append(self.ns(h))
                ip("-n", self.ns(h), "link", "set", "lo", "up")
            if self.mode == "emulator":
                self._start_emulator()
            else:
                self._start_bridge()
            for h in self.hosts + [ROOT]:
                self.links[h] = dict(self.default)
                if self.mode == "emulator":
                    self._apply(h)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Ends everything start() and run() made; safe to call twice."""
        if not self._running:
            return
        self._running = False
        try:
            atexit.unregister(self.stop)
        except Exception:
            pass
        for proc, start in reversed(self.procs):
            _stop_pid(proc.pid, start, proc)
        self.procs = []
        for ns in reversed(self.namespaces):
            self._empty_namespace(ns)
        if self.mode == "bridge":
            for h in self.hosts:        # the pair goes with its root end
                ip("link", "del", self.device(h), check=False)
        for ns in reversed(self.namespaces):
            ip("netns", "del", ns, check=False)
        self.namespaces = []
        if self.emulator is not None:
            self._stop_emulator()
        if self.bridge is not None:
            ip("link", "del", self.bridge, check=False)
            self.bridge = None

    def _empty_namespace(self, ns):
        """Ends what still runs inside ns: only this Net's (it made ns)."""
        for _ in range(3):
            pids = [int(p) for p in ip("netns", "pids", ns, check=False).split() if p.isdigit()]
            if not pids:
                return
            for pid in pids:
                start = _starttime(pid)
                if start is not None:
                    _stop_pid(pid, start, timeout=5.0)

    # -- the emulator

    def _start_emulator(self):
        names = [self.device(h) for h in self.hosts] + [self.device(ROOT)]
        self.emulator = subprocess.Popen(
            [sys.executable, EMULATOR] + names, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=None, text=True, bufsize=1, close_fds=True, preexec_fn=_die_with_parent)
        self._emulator_start = _starttime(self.emulator.pid)
        try:
            os.setpriority(os.PRIO_PROCESS, self.emulator.pid, -5)   # the wire comes first
        except OSError:
            pass
        if self._read_answer(30) != "ready":
            raise NetError("the link emulator did not start")
        for h in self.hosts:
            dev = self.device(h)
            ip("link", "set", dev, "netns", self.ns(h))
            self._address(self.ns(h), dev)
        self._address(None, self.device(ROOT))

    def _address(self, ns, dev):
        host = [ROOT] if ns is None else [h for h in self.hosts if self.ns(h) == ns]
        pre = ["-n", ns] if ns else []
        ip(*(pre + ["link", "set", dev, "mtu", str(self.mtu)]))
        ip(*(pre + ["addr", "add", "%s/24" % self.addr(host[0]), "dev", dev]))
        ip(*(pre + ["link", "set", dev, "up"]))

    def _read_answer(self, timeout):
        r, _, _ = select.select([self.emulator.stdout], [], [], timeout)
        if not r:
            raise NetError("the link emulator did not answer within %.0f s" % timeout)
        line = self.emulator.stdout.readline()
        if not line:
            raise NetError("the link emulator exited (status %s)" % self.emulator.poll())
        return line.strip()

    def _ask(self, line, timeout=10):
        with self._lock:
            self.emulator.stdin.write(line + "\n")
            self.emulator.stdin.flush()
            return self._read_answer(timeout)

    def _apply(self, host):
        p = self.links[host]
        answer = self._ask("set %s %f %f %f %d" % (self.device(host), p["delay_ms"],
                                                  p["jitter_ms"], p["loss"], int(p["cut"])))
        if answer != "ok":
            raise NetError("link emulator: %s" % answer)

    def _stop_emulator(self):
        try:
            if self.emulator.poll() is None:
                self._ask("quit", timeout=5)
        except (NetError, OSError, ValueError):
            pass
        try:
            self.emulator.stdin.close()
        except OSError:
            pass
        _stop_pid(self.emulator.pid, self._emulator_start, self.emulator, timeout=5.0)
        self.emulator.stdout.close()
        self.emulator = None

    def emulator_stats(self):
        """The emulator's counters per device (in, out, lost, cut, queued)."""
        import json
        return json.loads(self._ask("stats"))

    # -- the bridge

    def _start_bridge(self):
        self.bridge = "pgt%sbr" % self.tag
        ip("link", "add", self.bridge, "type", "bridge")
        for h in self.hosts:
            dev = self.device(h)
            ip("link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", self.ns(h))
            ip("link", "set", dev, "mtu", str(self.mtu), "master", self.bridge, "up")
            self._address(self.ns(h), "eth0")
        ip("link", "set", self.bridge, "mtu", str(self.mtu))
        ip("addr", "add", "%s/24" % self.root_addr, "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    # -- links

    def set_link(self, host, delay_ms=None, jitter_ms=None, loss=None, cut=None):
        """Changes host's link (ROOT: the root namespace's); what is not
        given stays.  The bridge mode can only cut (the link goes down)."""
        p = dict(self.links[host])
        for k, v in (("delay_ms", delay_ms), ("jitter_ms", jitter_ms), ("loss", loss),
                     ("cut", cut)):
            if v is not None:
                p[k] = type(self.default[k])(v)
        if self.mode == "bridge":
            if (p["delay_ms"], p["jitter_ms"], p["loss"]) != (0.0, 0.0, 0.0):
                raise NetError("the bridge mode has no delay or loss: use the emulator")
            ip("link", "set", self.device(host) if host != ROOT else self.bridge,
               "down" if p["cut"] else "up")
            self.links[host] = p
            return
        self.links[host] = p
        self._apply(host)

    def cut(self, host):
        self.set_link(host, cut=True)

    def restore(self, host):
        """host's link as it was made: the defaults, not cut."""
        self.links[host] = dict(self.default)
        if self.mode == "bridge":
            self.set_link(host, cut=False)
        else:
            self._apply(host)

    def blackhole(self, host, to_host):
        """Nothing from host reaches to_host (a blackhole route in host's
        namespace); everything else still does."""
        ip("-n", self.ns(host), "route", "add", "blackhole", self.addr(to_host) + "/32")
        self.blackholes.add((host, to_host))

    def unblackhole(self, host, to_host):
        ip("-n", self.ns(host), "route", "del", "blackhole", self.addr(to_host) + "/32")
        self.blackholes.discard((host, to_host))

    def partition(self, a, b):
        """a and b cannot reach each other (blackholes both ways); each
        still reaches every other host."""
        self.blackhole(a, b)
        self.blackhole(b, a)

    def heal(self, a, b):
        self.unblackhole(a, b)
        self.unblackhole(b, a)

    # -- processes

    def run(self, host, argv, **popen_kw):
        """Popen of argv inside host's namespace (ip netns exec execs it, so
        .pid is the program's).  Stopped by stop(), by PID."""
        kw = dict(stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        kw.update(popen_kw)
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(host)] + list(argv), **kw)
        self.procs.append((proc, _starttime(proc.pid)))
        return proc

    @contextlib.contextmanager
    def inside(self, host):
        """The calling thread in host's namespace for a with block: what it
        starts (subprocess) and the sockets it makes are there.  Other
        threads stay where they are."""
        with open("/proc/thread-self/ns/net") as here, \
                open("/run/netns/" + self.ns(host)) as there:
            _setns(there.fileno())
            try:
                yield
            finally:
                _setns(here.fileno())

    def leftovers(self, wait=5.0):
        """Namespaces and devices of this Net still there after stop(): an
        empty list once the kernel finished (it removes devices of a
        deleted namespace in the background), within wait seconds."""
        deadline = time.monotonic() + wait
        while True:
            ns = [n for n in ip("netns", "list", check=False).split()
                  if n.startswith("pgt-%s-" % self.tag)]
            links = [w.rstrip(":").split("@")[0] for w in ip("-o", "link", check=False).split()
                     if w.startswith("pgt%s" % self.tag)]
            if not ns + links or time.monotonic() > deadline:
                return ns + links
            time.sleep(0.1)


def main():
    """A smoke run: two hosts, a ping-like TCP exchange between them."""
    why = unavailable()
    if why:
        print("skipped: " + why)
        return 0
    for mode in ("emulator", "bridge"):
        with Net(["a", "b"], mode=mode, delay_ms=1, jitter_ms=0.2) as net:
            srv = net.run("a", [sys.executable, "-c",
                                "import socket;s=socket.socket();s.setsockopt(1,2,1);"
                                "s.bind(('%s',7000));s.listen();c,_=s.accept();"
                                "[c.sendall(c.recv(64)) for _ in range(100)]" % net.addr("a")])
            time.sleep(0.5)
            import socket
            with net.inside("b"):
                s = socket.create_connection((net.addr("a"), 7000), 5)
            t0 = time.monotonic()
            for _ in range(100):
                s.sendall(b"x")
                s.recv(64)
            rtt = (time.monotonic() - t0) / 100
            s.close()
            srv.wait(5)
            print("%s: %s <-> %s round trip %.2f ms" % (mode, net.addr("b"), net.addr("a"),
                                                       rtt * 1e3))
            name = net.tag
        left = [n for n in ip("netns", "list").split() if name in n] + \
               [n for n in ip("-o", "link").split() if ("pgt" + name) in n]
        print("left behind: %s" % (left or "nothing"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""A user-space link emulator for tests/netns.py.

The kernel these tests run on has no netem qdisc and no tc classifiers, so
delay and loss cannot come from tc.  This program creates TAP devices (in
the namespace it runs in; the harness then moves each into its host's
namespace: the file descriptor stays valid), joins them as a learning
Ethernet switch and applies, per link, a delay (with jitter, order kept
within a link), a loss rate and a cut (everything dropped).

A frame from link A to link B goes through both: delay(A) + delay(B), lost
with either's rate, dropped when either is cut.

Usage: netns_link.py NAME [NAME...]   (TAP device names, one per link)
It prints "ready" once every TAP exists, then reads commands on stdin, one
a line, each answered by one line on stdout:

    set NAME DELAY_MS JITTER_MS LOSS CUT     -> ok
    stats                                    -> {json counters}
    quit                                     -> bye (and exits)

End of stdin (the harness died) ends it too; the TAP devices go with it."""
import collections
import errno
import fcntl
import json
import os
import random
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
READ_BURST = 64          # frames read from one TAP per wake-up, at most
FRAME_MAX = 65536


class Link:
    """One port of the switch: a TAP fd and its link's properties."""

    def __init__(self, name):
        self.name = name
        self.fd = open_tap(name)
        self.delay = 0.0        # seconds
        self.jitter = 0.0       # seconds, uniform in [-jitter, +jitter]
        self.loss = 0.0
        self.cut = False
        self.queue = collections.deque()   # (release time, frame), in order
        self.last_release = 0.0
        self.stats = collections.Counter()


def open_tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    ifr = struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI)
    fcntl.ioctl(fd, TUNSETIFF, ifr)
    return fd


class Switch:
    def __init__(self, names):
        self.links = [Link(n) for n in names]
        self.by_name = {link.name: link for link in self.links}
        self.by_fd = {link.fd: link for link in self.links}
        self.macs = {}          # MAC -> Link it was last seen on
        self.rnd = random.Random()
        self.poll = select.epoll()
        for link in self.links:
            self.poll.register(link.fd, select.EPOLLIN)
        self.poll.register(sys.stdin.fileno(), select.EPOLLIN)
        self.stdin_buf = b""
        self.running = True

    # -- frames in

    def receive(self, src):
        for _ in range(READ_BURST):
            try:
                frame = os.read(src.fd, FRAME_MAX)
            except BlockingIOError:
                return
            except OSError:
                return          # the device went (namespace deleted)
            if len(frame) < 14:
                continue
            src.stats["in"] += 1
            self.macs[frame[6:12]] = src
            for dst in self.targets(src, frame):
                self.forward(src, dst, frame)

    def targets(self, src, frame):
        dst_mac = frame[0:6]
        if not dst_mac[0] & 1:
            dst = self.macs.get(dst_mac)
            if dst is not None:
                return [dst] if dst is not src else []
        return [link for link in self.links if link is not src]

    def forward(self, src, dst, frame):
        for link in (src, dst):
            if link.cut:
                link.stats["cut"] += 1
                return
            if link.loss and self.rnd.random() < link.loss:
                link.stats["lost"] += 1
                return
        delay = src.delay + dst.delay
        if src.jitter:
            delay += self.rnd.uniform(-src.jitter, src.jitter)
        if dst.jitter:
            delay += self.rnd.uniform(-dst.jitter, dst.jitter)
        if delay <= 0 and not dst.queue:
            self.emit(dst, frame)
            return
        release = max(time.monotonic() + max(delay, 0.0), dst.last_release)
        dst.last_release = release
        dst.queue.append((release, frame))

    # -- frames out

    def emit(self, dst, frame):
        try:
            os.write(dst.fd, frame)
            dst.stats["out"] += 1
        except OSError as e:      # EIO: the device is not up yet
            dst.stats["write_failed_" + errno.errorcode.get(e.errno, str(e.errno))] += 1

    def release_due(self):
        """Writes every queued frame whose time came; returns the seconds to
        the next one (None: nothing queued)."""
        now = time.monotonic()
        nearest = None
        for link in self.links:
            q = link.queue
            while q and q[0][0] <= now:
                self.emit(link, q.popleft()[1])
            if q:
                wait = q[0][0] - now
                nearest = wait if nearest is None else min(nearest, wait)
        return nearest

    # -- commands

    def command(self, line):
        words = line.split()
        if not words:
            return None
        if words[0] == "set" and len(words) == 6:
            link = self.by_name[words[1]]
            link.delay = float(words[2]) / 1000.0
            link.jitter = float(words[3]) / 1000.0
            link.loss = float(words[4])
            link.cut = words[5] in ("1", "true", "yes")
            if link.cut:
                # what was on the wire to it is gone too
                link.stats["cut"] += len(link.queue)
                link.queue.clear()
            return "ok"
        if words[0] == "stats":
            return json.dumps({link.name: dict(link.stats, queued=len(link.queue))
                               for link in self.links})
        if words[0] == "quit":
            self.running = False
            return "bye"
        return "error: unknown command %r" % line

    def read_commands(self):
        data = os.read(sys.stdin.fileno(), 65536)
        if not data:
            self.running = False
            return
        self.stdin_buf += data
        while b"\n" in self.stdin_buf:
            line, self.stdin_buf = self.stdin_buf.split(b"\n", 1)
            try:
                answer = self.command(line.decode())
            except (KeyError, ValueError) as e:
                answer = "error: %s" % e
            if answer is not None:
                sys.stdout.write(answer + "\n")
                sys.stdout.flush()

    # -- the loop

    def run(self):
        stdin = sys.stdin.fileno()
        while self.running:
            wait = self.release_due()
            timeout = -1 if wait is None else max(wait, 0.0)
            for fd, _ in self.poll.poll(timeout):
                if fd == stdin:
                    self.read_commands()
                else:
                    self.receive(self.by_fd[fd])
        for link in self.links:
            os.close(link.fd)


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    switch = Switch(argv[1:])
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    switch.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

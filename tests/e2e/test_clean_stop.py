"""A normal start and stop is quiet: the log of each daemon (pushgate-gateway,
pushgate-proxy, pushgate-consumer) has no WARN or ERROR line after it served
a little and was stopped with SIGTERM, several times over, because an
operator's alerting reads those levels and must not fire on a deploy.

The consumer is started before the gateways, as a deploy may do: it says
once, at INFO, that it waits for a gateway.  A real outage (the gateways it
had all go away) still warns.

Each round runs the whole system against the session's MariaDB + Redis:
the consumer (its own stream), the proxy, two gateways, a browser tab on
each gateway, and work orders for both tabs, one of which crosses the
proxy.  Rounds alternate between stopping all daemons at once (a whole
deploy, `make demo`'s Ctrl-C: each sees its peers go while it stops) and
one after the other.  Every wait is bounded; only processes started here
are stopped."""
import os
import re
import signal
import socket
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import free_port, stop_all, wait_until  # noqa: E402
from gateway_util import db_exec, db_rows  # noqa: E402
from stack_util import APP_TOKEN, RUN, Cluster, order_json, users  # noqa: E402

ROUNDS = 4
NOISE = re.compile(r"^.*\[(WARN|ERROR)\].*$", re.M)
WAITING = "no gateway is up in gateway_nodes"


@pytest.fixture
def env(stack, monkeypatch):
    for k, v in stack.env().items():
        monkeypatch.setenv(k, v)
    stack.add_app(APP_TOKEN)
    forget_dead_nodes(stack)


def forget_dead_nodes(stack):
    """Rows that earlier tests' killed gateways left 'up' in gateway_nodes
    would be real outages to the consumer; none of them answers any more."""
    for node_id, ip, port in db_rows(stack, "SELECT node_id, ip, internal_port "
                                            "FROM gateway_nodes WHERE state = 'up'"):
        try:
            socket.create_connection((ip, port), timeout=1).close()
        except OSError:
            db_exec(stack, "DELETE FROM gateway_nodes WHERE node_id = %s", (node_id,))


class ConsumerFirst(Cluster):
    """Cluster's parts, started in a deploy's other order: the consumer,
    then the proxy, then gateways A and B."""

    def __init__(self, bin_dir, stack, tmp_path, stream):
        self.bin_dir, self.stack, self.tmp_path = bin_dir, stack, tmp_path
        self.gateway_settings = {}
        self.consumer_settings = {"stream": stream, "dead_letter_stream": stream + ":dead"}
        self.servers, self.consumers, self.started = [], [], []
        self.proxy_port = free_port()
        try:
            self.consumer = self.start_consumer("clean-%s" % RUN)
            wait_until(lambda: WAITING in self.consumer.log(), 10,
                       what="the consumer to say it waits for a gateway")
            self.proxy = self.start_proxy()
            self.a = self.start_gateway()
            self.b = self.start_gateway()
            for g in (self.a, self.b):
                wait_until(lambda: "gateway %s joined" % g.node_id in self.consumer.log(), 10,
                           what="the consumer to find %s" % g.node_id)
        except BaseException:
            # what did start is not left running
            for c in self.consumers:
                c.kill()
            for srv in self.servers:
                srv.kill_all()
            raise

    def start_gateway(self, **overrides):
        g = super().start_gateway(**overrides)
        self.started.append(g)
        return g

    def gateways(self):
        return [g for g in self.started if not g.stopped]

    def stop_at_once(self):
        """SIGTERM to every daemon together, as a whole deploy (or `make
        demo`'s Ctrl-C) stops them: each sees its peers go while it stops."""
        servers = [s for s in self.servers if not s.stopped]
        for s in servers:
            s.snapshot()
            s.stopped = True
            s.send_signal(signal.SIGTERM)
        self.consumer.proc.send_signal(signal.SIGTERM)
        for s in servers:
            s.wait_master_exit(20)
        self.consumer.proc.wait(timeout=30)   # a second SIGTERM would be no normal stop
        self.stop()   # checks each exit code, no sanitizer report, no process left

    def logs(self):
        return {"consumer": self.consumer.log(), "proxy": self.proxy.log(),
                "gateway A": self.a.log(), "gateway B": self.b.log()}


def noise(logs):
    """{daemon: [WARN and ERROR lines]} of the daemons that logged any."""
    lines = {name: [m.group(0) for m in NOISE.finditer(text)] for name, text in logs.items()}
    return {name: v for name, v in lines.items() if v}


def serve(c, stack, fleet, stream, tag):
    """A tab on each gateway gets a work order; one of the two went through
    the proxy (the consumer alternates between the gateways)."""
    on_a, on_b = users(tag, 2)
    tab_a, = fleet.open([on_a], c.a.port)
    tab_b, = fleet.open([on_b], c.b.port)
    r = stack.redis()
    for i, u in enumerate([on_a, on_b, on_a, on_b]):
        r.xadd(stream, {"msg": order_json(u, "%s-%d" % (tag, i))})
    wait_until(lambda: len(tab_a.got) >= 2 and len(tab_b.got) >= 2, 20,
               what="the work orders at both tabs")
    wait_until(lambda: r.xpending(stream, "pushgate")["pending"] == 0, 20,
               what="every entry to be XACKed")


def test_sigterm_stops_are_quiet(bin_dir, stack, env, fleet, tmp_path):
    stream = "pushgate:clean-stop-%s" % RUN
    r = stack.redis()
    try:
        for n in range(ROUNDS):
            folder = tmp_path / ("round%d" % n)
            folder.mkdir()
            c = ConsumerFirst(bin_dir, stack, folder, stream)
            try:
                serve(c, stack, fleet, stream, "quiet%d" % n)
                logs_before = c.consumer.log()
            except BaseException:
                c.stop()
                raise
            if n % 2:
                c.stop()   # SIGTERM to each in turn: the consumer, then B, A and the proxy
            else:
                c.stop_at_once()
            logs = c.logs()
            assert logs_before.count(WAITING) == 1, logs_before
            assert re.search(r"\[INFO\].*" + WAITING, logs_before), logs_before
            assert all("stopped" in text for text in logs.values()), logs
            assert noise(logs) == {}, "round %d of %d: %s" % (n + 1, ROUNDS, noise(logs))
    finally:
        r.delete(stream, stream + ":dead")


def test_gateways_gone_is_a_warning(bin_dir, stack, env, tmp_path):
    """An outage is not a start: the consumer had gateways, they all
    stopped, and it warns (once, rate-limited) that entries wait."""
    stream = "pushgate:clean-outage-%s" % RUN
    r = stack.redis()
    c = ConsumerFirst(bin_dir, stack, tmp_path, stream)
    try:
        stop_all([c.b, c.a])
        wait_until(lambda: re.search(r"\[WARN\].*" + WAITING, c.consumer.log()), 10,
                   what="the consumer to warn that no gateway is up")
    finally:
        c.stop()
        r.delete(stream, stream + ":dead")

"""/metrics of every daemon in the Prometheus conventions, on a small running
stack (proxy, gateways A and B, a consumer): each scrape is checked by a
strict text-format parser (promtool when Debian's prometheus package is
installed, and always the parser below), the latency histograms move when
orders flow, /healthz answers, and config/prometheus.yml and
config/grafana-dashboard.json are valid and name only metrics that exist."""
import json
import math
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_util import ADMIN_SECRET, HOST, free_port, start_server, wait_until  # noqa: E402
from stack_util import (Cluster, Orders, Tally, pending,  # noqa: E402
                        running_cluster, say, users)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"\s*(,|\Z)')
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


# ---- a strict parser of the text format 0.0.4 ----

def parse_value(text, where):
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    try:
        return float(text)
    except ValueError:
        raise AssertionError("%s: not a number: %r" % (where, text)) from None


def parse_labels(text, where):
    labels, pos = {}, 0
    while pos < len(text):
        m = LABEL.match(text, pos)
        assert m, "%s: bad labels {%s}" % (where, text)
        assert m.group(1) not in labels, "%s: label %s twice" % (where, m.group(1))
        labels[m.group(1)] = m.group(2)
        pos = m.end()
    return labels


def parse_sample(line, where):
    m = re.match(r"([^\s{]+)(?:\{(.*)\})?\s+(\S+)(?:\s+(-?\d+))?\Z", line)
    assert m, "%s: not a sample: %r" % (where, line)
    name, labels, value = m.group(1), m.group(2) or "", m.group(3)
    assert NAME.match(name), "%s: bad name %r" % (where, name)
    return name, parse_labels(labels, where), parse_value(value, where)


def family_of(sample_name, families):
    if sample_name in families:
        return sample_name
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample_name[:-len(suffix)] if sample_name.endswith(suffix) else None
        if base and families.get(base, {}).get("type") == "histogram":
            return base
    return None


def parse(text, who):
    """{family: {"type", "help", "samples": [(name, labels, value)]}}; every
    rule of the format that a scraper relies on is asserted."""
    assert text.endswith("\n"), "%s: no final newline" % who
    families, current, closed = {}, None, set()
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "%s line %d" % (who, n)
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            assert len(parts) >= 3 and parts[1] in ("HELP", "TYPE"), "%s: stray comment" % where
            name = parts[2]
            assert NAME.match(name), "%s: bad name %r" % (where, name)
            assert name not in closed, "%s: family %s split in two" % (where, name)
            if current and current != name:
                closed.add(current)
            f = families.setdefault(name, {"type": None, "help": None, "samples": []})
            assert not f["samples"], "%s: %s after the samples of %s" % (where, parts[1], name)
            if parts[1] == "HELP":
                assert f["help"] is None, "%s: second HELP of %s" % (where, name)
                assert len(parts) == 4 and parts[3].strip(), "%s: empty HELP" % where
                f["help"] = parts[3]
            else:
                assert f["type"] is None, "%s: second TYPE of %s" % (where, name)
                assert len(parts) == 4 and parts[3] in TYPES, "%s: bad TYPE" % where
                f["type"] = parts[3]
            current = name
            continue
        name, labels, value = parse_sample(line, where)
        fam = family_of(name, families)
        assert fam, "%s: sample %s without HELP and TYPE before it" % (where, name)
        assert fam == current, "%s: sample %s outside its family's block" % (where, name)
        f = families[fam]
        assert f["help"] is not None and f["type"] is not None, \
            "%s: %s needs both HELP and TYPE" % (where, fam)
        f["samples"].append((name, labels, value))
    for name, f in families.items():
        check_family(name, f, who)
    return families


def check_family(name, f, who):
    where = "%s: %s" % (who, name)
    # a family with no samples yet (labels not seen yet) is allowed by the format
    series = [(s, tuple(sorted(l.items()))) for s, l, _ in f["samples"]]
    assert len(series) == len(set(series)), "%s: a series twice" % where
    for s, labels, value in f["samples"]:
        assert all(LABEL_NAME.match(k) and not k.startswith("__") for k in labels), where
        if f["type"] == "counter":
            assert s == name and name.endswith("_total"), "%s: counters end in _total" % where
            assert value >= 0 and not math.isnan(value), "%s: counter %s" % (where, value)
        elif f["type"] == "gauge":
            assert s == name, where
    if f["type"] == "histogram":
        check_histogram(name, f["samples"], where)
    if name.endswith("_total"):
        assert f["type"] == "counter", "%s: _total names a counter" % where


def check_histogram(name, samples, where):
    groups = {}
    for s, labels, value in samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if s == name + "_bucket":
            assert "le" in labels, "%s: bucket without le" % where
            g["buckets"].append((parse_value(labels["le"], where), value))
        elif s == name + "_sum":
            g["sum"] = value
        elif s == name + "_count":
            g["count"] = value
        else:
            raise AssertionError("%s: sample %s in a histogram" % (where, s))
    for g in groups.values():
        les = [le for le, _ in g["buckets"]]
        assert les == sorted(les) and len(set(les)) == len(les), "%s: le out of order" % where
        assert les and les[-1] == math.inf, "%s: no +Inf bucket" % where
        counts = [c for _, c in g["buckets"]]
        assert counts == sorted(counts), "%s: buckets not cumulative: %s" % (where, counts)
        assert g["count"] is not None and g["sum"] is not None, "%s: _sum/_count missing" % where
        assert counts[-1] == g["count"], "%s: +Inf %s != _count %s" % (where, counts[-1], g["count"])
        assert g["sum"] >= 0, where


def promtool_check(text, who):
    """promtool's own verdict, when Debian's prometheus package is there."""
    tool = shutil.which("promtool")
    if not tool:
        return
    r = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True,
                       timeout=30)
    # exit 1 with lint hints only (e.g. "no help text") would be ours too: any output fails
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        "%s: promtool: %s%s" % (who, r.stdout, r.stderr)


def test_the_parser_refuses_what_breaks_the_format():
    good = ("# HELP a_total A.\n# TYPE a_total counter\na_total 1\n"
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
            "h_sum 0.3\nh_count 2\n")
    parse(good, "good")
    bad = [
        "a_total 1\n",                                                    # no HELP/TYPE
        "# TYPE a_total counter\na_total 1\n",                            # no HELP
        "# HELP a A.\n# TYPE a counter\na 1\n",                           # counter not _total
        "# HELP 1a A.\n# TYPE 1a gauge\n1a 1\n",                          # bad name
        good.replace('le="+Inf"} 2', 'le="+Inf"} 3'),                     # +Inf != _count
        good.replace('le="0.1"} 1', 'le="0.1"} 3'),                      # not cumulative
        "# HELP g G.\n# TYPE g gauge\ng{a=\"x} 1\n",                      # bad label
        "# HELP g G.\n# TYPE g gauge\ng 1\ng 2\n",                        # series twice
    ]
    for i, text in enumerate(bad):
        with pytest.raises(AssertionError):
            parse(text, "bad %d" % i)


# ---- the stack ----

class MetricsCluster(Cluster):
    """The usual cluster, its proxy with a metrics port."""

    def start_proxy(self):
        self.proxy_metrics_port = free_port()
        p = start_server(self.bin_dir, "pushgate-proxy", self.tmp_path, host=HOST,
                         port=self.proxy_port, worker_num=2, task_worker_num=1, reactor_num=1,
                         nodes_refresh_ms=200, stats_interval=5,
                         metrics_port=self.proxy_metrics_port)
        self.servers.append(p)
        return p


@pytest.fixture(scope="module")
def cluster(bin_dir, stack, tmp_path_factory):
    port = free_port()
    with running_cluster(bin_dir, stack, tmp_path_factory.mktemp("metrics"), cls=MetricsCluster,
                         consumer_settings={"metrics_port": port}) as c:
        c.consumer_metrics_port = port
        yield c


def get(port, path):
    """A daemon's page; the gateways' need the operator token, the others ignore it."""
    req = urllib.request.Request("http://%s:%d%s" % (HOST, port, path),
                                 headers={"Authorization": "Bearer " + ADMIN_SECRET})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()


def endpoints(c):
    return {"gateway A": c.a.port, "gateway B": c.b.port, "proxy": c.proxy_metrics_port,
            "consumer": c.consumer_metrics_port}


def scrape(c):
    """{who: families}, each checked."""
    out = {}
    for who, port in endpoints(c).items():
        status, ctype, text = get(port, "/metrics")
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), (who, ctype)
        promtool_check(text, who)
        out[who] = parse(text, who)
    return out


def value(families, name, **labels):
    """Sum of the samples of name whose labels include labels."""
    fam = family_of(name, families)
    assert fam, "no %s" % name
    return sum(v for s, l, v in families[fam]["samples"]
               if s == name and all(l.get(k) == x for k, x in labels.items()))


def both_gateways(scraped, name, **labels):
    return sum(value(scraped[g], name, **labels) for g in ("gateway A", "gateway B"))


def all_names(scraped):
    names = set()
    for families in scraped.values():
        for fam, f in families.items():
            names.add(fam)
            names.update(s for s, _, _ in f["samples"])
    return names


GATEWAY_HISTOGRAMS = ["pushgate_delivery_intake_to_push_seconds",
                      "pushgate_delivery_push_to_ack_seconds", "pushgate_route_lookup_seconds",
                      "pushgate_task_queue_wait_seconds"]


def test_every_daemon_serves_valid_metrics_and_healthz(cluster):
    scraped = scrape(cluster)
    for g in ("gateway A", "gateway B"):
        fams = scraped[g]
        for name in GATEWAY_HISTOGRAMS:
            assert fams[name]["type"] == "histogram", name
        for name in ("pushgate_messages_in_total", "pushgate_pushed_total",
                     "pushgate_forwarded_total", "pushgate_stored_total", "pushgate_acked_total",
                     "pushgate_connections", "pushgate_mysql_up"):
            assert name in fams, (g, name)
        assert value(fams, "pushgate_mysql_up") == 1
    consumer = scraped["consumer"]
    for name in ("pushgate_consumer_stream_lag", "pushgate_consumer_stream_pending",
                 "pushgate_consumer_in_flight", "pushgate_consumer_retries_total",
                 "pushgate_consumer_dead_letters_total", "pushgate_consumer_gateway_replies_total"):
        assert name in consumer, name
    assert "pushgate_proxy_forwards_total" in scraped["proxy"]
    for who, port in endpoints(cluster).items():
        status, _, body = get(port, "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok", (who, body)
    for port in (cluster.proxy_metrics_port, cluster.consumer_metrics_port):
        with pytest.raises(urllib.error.HTTPError) as e:
            get(port, "/nothing")
        assert e.value.code == 404


def test_histograms_and_counters_move_when_orders_flow(cluster, stack, fleet):
    c = cluster
    r = stack.redis()
    on_a, on_b = users("met-a", 3), users("met-b", 3)
    tabs = fleet.open(on_a, c.a.port) + fleet.open(on_b, c.b.port)
    before = scrape(c)
    orders = Orders("met")
    targets = (on_a + on_b) * 5
    orders.publish(r, targets)
    wait_until(lambda: Tally(orders, tabs).count() >= len(targets), 30,
               what="%d orders at the tabs" % len(targets))
    wait_until(lambda: pending(r) == 0, 30, what="every entry XACKed")
    # the consumer's numbers come from its poll of XINFO GROUPS, every second
    wait_until(lambda: value(scrape(c)["consumer"], "pushgate_consumer_stream_lag") == 0, 10,
               what="the consumer to report lag 0")
    after = scrape(c)

    def moved(who, name, **labels):
        if who == "gateways":
            return both_gateways(after, name, **labels) - both_gateways(before, name, **labels)
        return value(after[who], name, **labels) - value(before[who], name, **labels)

    n = len(targets)
    for name in GATEWAY_HISTOGRAMS:
        count = moved("gateways", name + "_count")
        say("%s: %d observed, mean %.6f s" % (name, count, moved("gateways", name + "_sum") /
                                               max(count, 1)))
    assert moved("gateways", "pushgate_messages_in_total") >= n
    assert moved("gateways", "pushgate_pushed_total") >= n
    assert moved("gateways", "pushgate_acked_total") >= n
    # a push through the proxy counts on the target node, from the proxy's request there
    assert moved("gateways", "pushgate_delivery_intake_to_push_seconds_count") >= n
    assert moved("gateways", "pushgate_delivery_push_to_ack_seconds_count") >= n
    assert moved("gateways", "pushgate_delivery_push_to_ack_seconds_sum") > 0
    assert moved("gateways", "pushgate_route_lookup_seconds_count") >= 1
    assert moved("gateways", "pushgate_task_queue_wait_seconds_count") >= 1
    assert moved("consumer", "pushgate_consumer_acked_total") >= n
    assert moved("consumer", "pushgate_consumer_gateway_replies_total", code="0") >= n
    assert value(after["consumer"], "pushgate_consumer_stream_pending") == 0
    assert value(after["consumer"], "pushgate_consumer_in_flight") == 0
    # round robin over two gateways: some orders cross the proxy
    assert moved("proxy", "pushgate_proxy_forwards_total", outcome="delivered") >= 1
    for g in (c.a, c.b):
        assert moved("proxy", "pushgate_proxy_forwards_total", node=g.node_id) >= 0
    assert moved("proxy", "pushgate_proxy_answer_seconds_count") >= 1
    fleet.close_tabs(tabs)


# ---- config/prometheus.yml, config/grafana-dashboard.json, the README ----

def load_yaml(path):
    try:
        import yaml
    except ImportError:  # python3-yaml not installed: a simple check of the shape
        text = open(path).read()
        assert "scrape_configs:" in text and "job_name:" in text
        return None
    with open(path) as f:
        return yaml.safe_load(f)


def test_prometheus_config_scrapes_two_gateways_the_proxy_and_the_consumer():
    conf = load_yaml(os.path.join(ROOT, "config", "prometheus.yml"))
    if conf is None:
        return
    jobs = {j["job_name"]: j for j in conf["scrape_configs"]}
    assert set(jobs) == {"pushgate-gateway", "pushgate-proxy", "pushgate-consumer"}
    targets = {name: [t for sc in j["static_configs"] for t in sc["targets"]]
               for name, j in jobs.items()}
    assert len(targets["pushgate-gateway"]) == 2
    assert len(targets["pushgate-proxy"]) == 1 and len(targets["pushgate-consumer"]) == 1
    for j in jobs.values():
        assert j.get("metrics_path", "/metrics") == "/metrics"
    tool = shutil.which("promtool")
    if tool:
        r = subprocess.run([tool, "check", "config", os.path.join(ROOT, "config", "prometheus.yml")],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr


def dashboard_exprs():
    with open(os.path.join(ROOT, "config", "grafana-dashboard.json")) as f:
        dash = json.load(f)
    assert dash["panels"], "no panels"
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs and all(exprs)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    return exprs


def test_dashboard_and_readme_name_only_metrics_that_exist(cluster):
    names = all_names(scrape(cluster))
    used = set()
    for e in dashboard_exprs():
        used.update(re.findall(r"\bpushgate_[a-z0-9_]+", e))
    assert {"pushgate_messages_in_total", "pushgate_pushed_total", "pushgate_forwarded_total",
            "pushgate_stored_total", "pushgate_acked_total", "pushgate_consumer_stream_lag",
            "pushgate_consumer_dead_letters_total"} <= used
    assert any(u.endswith("_bucket") for u in used), "no latency percentiles"
    assert not used - names, "the dashboard names metrics no daemon has: %s" % (used - names)
    readme = open(os.path.join(ROOT, "README.md")).read()
    in_readme = set(re.findall(r"\bpushgate_[a-z0-9_]+", readme))
    assert in_readme, "the README names no metric"
    assert not in_readme - names, "the README names metrics no daemon has: %s" % (
        in_readme - names)


def test_proxy_metrics_port_outlives_its_worker_0(cluster):
    """Worker 0 serves the port the master bound: its replacement serves it
    again, with the totals of before (shared memory)."""
    c = cluster
    before = value(scrape(c)["proxy"], "pushgate_proxy_forwarded_total")
    old = c.proxy.worker_pids()["worker 0"]
    os.kill(old, 9)
    wait_until(lambda: c.proxy.tree_complete() and c.proxy.worker_pids().get("worker 0") not in
               (None, old), 15, what="a new worker 0 of the proxy")

    def served():
        try:
            return get(c.proxy_metrics_port, "/metrics")[0] == 200
        except OSError:
            return False
    wait_until(served, 10, what="the proxy's metrics port again")
    assert value(scrape(c)["proxy"], "pushgate_proxy_forwarded_total") >= before

#!/usr/bin/python3
"""make bench: the engine's benchmarks, on a release build.

Runs each scenario BENCH_RUNS times (default 3) and reports the median:
  echo   - echo_server (length framing) driven by echo_bench with 100
           connections: 1 reactor + 2 workers (the best fit for a 2-core machine
           that also runs the client) at pipeline 1 and 16, and 2 reactors +
           2 workers at pipeline 1
  table  - table_bench: shared-memory table get+set per second, 1 and 4 processes
  S1-S4  - the push scenarios (bench/scenarios.py) against a whole system
           on loopback (bench/cluster.py), driven by pushgate-bench
  latency - S2's load at 1,000 and 200 orders/s: the end-to-end latency floor
  peer   - pushgate against nchan (bench/peer.py) in the same sitting: 10,000
           browsers on 2 nodes, 1 ms pace at 5,000/s, 20,000/s and as fast
           as possible, each system in turn; prints pushgate's ratios to
           nchan.  Skipped, saying what to install, without nginx and
           libnginx-mod-nchan (scripts/install-deps --bench)
BENCH_ONLY=engine,s1,s2,latency,wakeups,churn,s3,s4,s5,peer picks some of them;
BENCH_GATEWAY_SET=key=value,... adds settings to every gateway, and
BENCH_PROXY_SET to the proxy (the results file records them);
BENCH_PIN_NODES=1 runs each node of either system on a core of its own
(bench/cluster.py) and adds "-pinned" to the results file's name;
BENCH_CLIENT_PROCS=N runs S2's browsers (either system's) as N client
processes (default 2, bench/scenarios.py; another number adds
"-procsN" to the name).
Prints a table and writes bench/results/<date>.json.
"""
import datetime
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.environ.get("PG_BIN", os.path.join(HERE, "..", "build", "release", "bin"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start")


def echo_run(pipeline, packets, reactors):
    port = free_port()
    server = subprocess.Popen([os.path.join(BIN, "echo_server"), "--set", f"port={port}",
                               "--set", "open_length_check=true", "--set", "log_level=error",
                               "--set", f"reactor_num={reactors}", "--set", "worker_num=2"])
    try:
        wait_port(port)
        out = subprocess.run([os.path.join(BIN, "echo_bench"), "-p", str(port), "-c", "100",
                              "-n", str(packets), "-P", str(pipeline), "-t", "60"],
                             capture_output=True, text=True, timeout=90, check=True).stdout
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    m = re.search(r"= (\d+) packets/s; latency ms p50 ([\d.]+) p90 [\d.]+ p99 ([\d.]+)", out)
    return {"packets_per_s": int(m.group(1)), "p50_ms": float(m.group(2)),
            "p99_ms": float(m.group(3))}


def table_run():
    out = subprocess.run([os.path.join(BIN, "table_bench")], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    rates = [float(x) for x in re.findall(r"= ([\d.]+) ops/s", out)]
    return {"one_process_ops_per_s": rates[0], "four_processes_ops_per_s": rates[1]}


def median_of(runs, key):
    return statistics.median(r[key] for r in runs)


def medians(runs):
    """The median of every numeric figure of the runs (nested dicts too),
    except losses, which are the worst run's."""
    out = {}
    for key, value in runs[0].items():
        values = [r.get(key) for r in runs]
        if isinstance(value, bool):
            out[key] = all(values)
        elif isinstance(value, (int, float)) and all(isinstance(v, (int, float)) for v in values):
            # a message lost in any run is a loss: counts of those are the worst run's
            worst = key in ("missing", "duplicates", "others_missing", "connect_errors")
            out[key] = max(values) if worst else statistics.median(values)
        elif isinstance(value, dict):
            out[key] = medians([v for v in values if isinstance(v, dict)])
        else:
            out[key] = value
    return out


def engine_benches(results, rows):
    for reactors, pipeline in ((1, 1), (2, 1), (1, 16)):
        runs = [echo_run(pipeline, 300000, reactors) for _ in range(RUNS)]
        name = f"echo, {reactors} reactor(s), pipeline {pipeline}"
        results["scenarios"][name] = runs
        rows.append((name, f"{median_of(runs, 'packets_per_s'):,.0f} packets/s",
                     f"p50 {median_of(runs, 'p50_ms'):.2f} ms, p99 {median_of(runs, 'p99_ms'):.2f} ms",
                     ">= 100,000 packets/s"))
    runs = [table_run() for _ in range(RUNS)]
    results["scenarios"]["table"] = runs
    rows.append(("table get+set, 1 process", f"{median_of(runs, 'one_process_ops_per_s'):,.0f} ops/s",
                 "", ">= 2,000,000 ops/s"))
    rows.append(("table get+set, 4 processes",
                 f"{median_of(runs, 'four_processes_ops_per_s'):,.0f} ops/s", "", ""))


def ms(lat, key):
    return "%.2f ms" % lat[key] if lat and lat.get(key) is not None else "-"


def push_benches(results, rows, only):
    import scenarios as sc
    plan = [
        ("s1", "S1 10,000 idle clients, 1 node", lambda: sc.s1_idle(1, 10000),
         lambda m: ("%d B/conn (kernel, both ends: %d B), connected %s" % (
                        m["bytes_per_conn"], m["kernel_bytes_per_conn"], m["connected"]),
                    "10,000 connects in %.2f s; MariaDB %.0f us per registration, %.0f us per "
                    "unregistration" % (m["connect_seconds"], m["mariadb_us_per_registration"],
                                        m["mariadb_us_per_unregistration"]),
                    "<= 3,000 B/conn; <= 2 s")),
        ("s1", "S1 50,000 idle clients, 3 nodes", lambda: sc.s1_idle(3, 50000),
         lambda m: ("%d B/conn, connected %s" % (m["bytes_per_conn"], m["connected"]),
                    "connects in %.2f s" % m["connect_seconds"], "<= 3,000 B/conn")),
        ("s2", "S2 200,000 orders, max rate", lambda: sc.s2_push(200000, 10000, 0),
         lambda m: ("%s delivered/s" % format(int(m["delivered_per_s"] or 0), ","),
                    "missing %s, dups %s; %s us CPU/msg" % (m["missing"], m["duplicates"],
                                                            m["server_cpu_us_per_msg"]),
                    ">= 40,000/s, 0 missing")),
        ("s2", "S2 20,000 orders/s for 10 s", lambda: sc.s2_push(200000, 10000, 20000),
         lambda m: ("p50 %s, p99 %s" % (ms(m["latency_ms"], "p50"), ms(m["latency_ms"], "p99")),
                    "missing %s, dups %s" % (m["missing"], m["duplicates"]),
                    "p99 <= 10 ms, p50 <= 2 ms")),
        ("s2", "S2 5,000 orders/s for 10 s", lambda: sc.s2_push(50000, 10000, 5000),
         lambda m: ("p50 %s, p99 %s" % (ms(m["latency_ms"], "p50"), ms(m["latency_ms"], "p99")),
                    "missing %s, dups %s" % (m["missing"], m["duplicates"]),
                    "(a rate this box sustains)")),
        # the latency floor: S2's load at rates far below what the machine delivers
        ("latency", "S2 1,000 orders/s for 10 s", lambda: sc.s2_push(10000, 10000, 1000),
         lambda m: ("p50 %s, p99 %s" % (ms(m["latency_ms"], "p50"), ms(m["latency_ms"], "p99")),
                    "missing %s, dups %s" % (m["missing"], m["duplicates"]), "-")),
        ("latency", "S2 200 orders/s for 10 s", lambda: sc.s2_push(2000, 10000, 200),
         lambda m: ("p50 %s, p99 %s" % (ms(m["latency_ms"], "p50"), ms(m["latency_ms"], "p99")),
                    "missing %s, dups %s" % (m["missing"], m["duplicates"]), "-")),
        # the same 5,000/s as 5 orders every 1 ms instead of 50 every 10 ms
        ("latency", "S2 5,000 orders/s, steady (1 ms pace)",
         lambda: sc.s2_push(50000, 10000, 5000, pace_us=1000),
         lambda m: ("p50 %s, p99 %s" % (ms(m["latency_ms"], "p50"), ms(m["latency_ms"], "p99")),
                    "missing %s, dups %s; %s us CPU/msg" % (m["missing"], m["duplicates"],
                                                            m["server_cpu_us_per_msg"]), "-")),
        ("wakeups", "S2 5,000 orders/s, steady: wake-ups per order",
         lambda: sc.s2_wakeups(100000, 10000, 5000),
         lambda m: ("%.2f wake-ups, %.0f us CPU per order" % (m["wakeups_per_order"],
                                                               m["cpu_us_per_order"]),
                    "; ".join("%s %.2f" % (k, v["wakeups_per_order"])
                              for k, v in sorted(m["roles"].items())), "-")),
        ("churn", "MySQL churn: online_clients, one MariaDB",
         lambda: sc.churn(20000, 64, 2), churn_row),
        ("churn", "MySQL churn: online_clients, Galera (3 nodes)",
         lambda: sc.churn(20000, 64, 2, galera=True), churn_row),
        ("churn", "MySQL churn: online_clients, Galera (3 nodes), one row a statement",
         lambda: sc.churn(5000, 1, 2, galera=True), churn_row),
        ("s3", "S3 slow reader + 1,000 others", lambda: sc.s3_slow_reader(),
         lambda m: ("PSS +%d KB (healthy reader +%d), closed %s" % (
                        m["gateway_pss_growth"] // 1024, m["gateway_pss_growth_healthy_flood"] // 1024,
                        m["slow_closed"]),
                    "stored %s/%s, others p99 x%.2f (x%.2f vs healthy)" % (
                        m["slow_stored"], m["slow_messages"], m["p99_ratio"],
                        m["p99_ratio_vs_healthy"]),
                    "<= 2 MB + small; closed; all stored; <= 2x")),
        ("s5", "S5 a flooding tab + 1,000 others", lambda: sc.s5_flooding_tab(),
         lambda m: ("others p99 x%.2f (median of %d rounds)" % (m["p99_ratio"], m["rounds"]),
                    "tab closed %s times; missing %s" % (sum(t["closed"] for t in m["tabs"]),
                                                         m["others_missing"]),
                    "<= 1.2x")),
        ("s4", "S4 reconnect storm, 10,000", lambda: sc.s4_storm(),
         lambda m: ("%s reconnected in %s s" % (m["reconnected"], m["reconnect_seconds"]),
                    "missing %s, dups %s" % (m["missing"], m["duplicates"]),
                    "<= 5 s, 0 missing")),
    ]
    for key, name, run, show in plan:
        if only and key not in only:
            continue
        runs = [run() for _ in range(RUNS)]
        results["scenarios"][name] = runs
        rows.append((name,) + show(medians(runs)))


# the peer comparison's loads: (name, orders, rate), 10,000 browsers on 2
# nodes, orders paced every 1 ms (`publish --pace-us 1000`); rate 0 is as
# fast as possible (pipelined batches of 500)
PEER_LOADS = [("5,000/s steady", 50000, 5000), ("20,000/s steady", 200000, 20000),
              ("max rate", 200000, 0)]
PEER_USERS = 10000
PEER_PACE_US = 1000


def peer_benches(results, rows, peer_rows):
    """Each load against pushgate and against nchan, RUNS times each, the
    two systems alternating which goes first; ratios of the medians."""
    import peer
    import scenarios as sc
    gone = peer.missing()
    if gone:
        note = ("peer comparison skipped: %s missing; install with `scripts/install-deps --bench` "
                "(or apt-get install nginx libnginx-mod-nchan)" % " and ".join(gone))
        print(note, file=sys.stderr)
        results["peer"] = {"skipped": note}
        return
    results["peer"] = {"system": "nchan (nginx %s, libnginx-mod-nchan), 2 nodes on one Redis, "
                                 "nostore" % nginx_version(),
                       "users": PEER_USERS, "pace_us": PEER_PACE_US,
                       "nginx_workers_per_node": peer.WORKERS,
                       "publisher_connections": peer.CONNS, "ratios": {}}
    for name, messages, rate in PEER_LOADS:
        runs = {"pushgate": [], "nchan": []}
        for i in range(RUNS):
            order = ("pushgate", "nchan") if i % 2 == 0 else ("nchan", "pushgate")
            for system in order:
                # the machine is shared: what else ran shows in the load average
                load = list(os.getloadavg())
                if system == "pushgate":
                    run = sc.s2_push(messages, PEER_USERS, rate, pace_us=PEER_PACE_US)
                else:
                    run = peer.s2_nchan(messages, PEER_USERS, rate, pace_us=PEER_PACE_US)
                run["loadavg_before"], run["loadavg_after"] = load, list(os.getloadavg())
                runs[system].append(run)
        pg, nc = medians(runs["pushgate"]), medians(runs["nchan"])
        r = peer.ratios(pg, nc)
        if rate:
            r.pop("delivered_per_s")     # the rate is the publisher's: the max rate is its own row
        results["scenarios"]["peer " + name] = dict(runs, ratios=r)
        results["peer"]["ratios"][name] = r
        peer_rows.append((name, pg, nc, r))
        rows.append(("peer " + name, "pushgate/nchan CPU x%s" % r["cpu_per_order"],
                     "p50 x%s, p99 x%s%s" % (r["p50"], r["p99"],
                                             "" if rate else ", rate x%s" % r["delivered_per_s"]),
                     "(a ratio; no target)"))


def nginx_version():
    import peer
    out = subprocess.run([peer.NGINX, "-v"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=10).stdout.decode()
    m = re.search(r"nginx/([\d.]+)", out)
    return m.group(1) if m else "?"


def print_peer(peer_rows):
    if not peer_rows:
        return
    print("\npushgate / nchan, same sitting: %s browsers on 2 nodes, one order every %d us "
          "per batch (medians of %d run(s) each)" % (format(PEER_USERS, ","), PEER_PACE_US, RUNS))
    print("  %-16s %-34s %-30s %-30s %s" % ("load", "system CPU us/order", "p50 ms", "p99 ms",
                                           "delivered/s"))
    for name, pg, nc, r in peer_rows:
        lp, lq = pg.get("latency_ms") or {}, nc.get("latency_ms") or {}
        pair = lambda a, b, x, f: "%s / %s  x%s" % (f % a if a is not None else "-",  # noqa: E731
                                                   f % b if b is not None else "-", x)
        rate = "%s / %s" % (format(int(pg.get("delivered_per_s") or 0), ","),
                            format(int(nc.get("delivered_per_s") or 0), ","))
        if r.get("delivered_per_s") is not None:
            rate += "  x%s" % r["delivered_per_s"]
        print("  %-16s %-34s %-30s %-30s %s" % (
            name, pair(pg.get("server_cpu_us_per_msg"), nc.get("server_cpu_us_per_msg"),
                       r["cpu_per_order"], "%.1f"),
            pair(lp.get("p50"), lq.get("p50"), r["p50"], "%.2f"),
            pair(lp.get("p99"), lq.get("p99"), r["p99"], "%.2f"), rate))
        print("  %-16s pushgate: %s; missing %s/%s" % (
            "", ", ".join("%s %s" % kv for kv in (pg.get("cpu_us_per_msg") or {}).items()),
            pg.get("missing"), nc.get("missing")))
        print("  %-16s nchan:    %s" % (
            "", ", ".join("%s %s" % kv for kv in (nc.get("cpu_us_per_msg") or {}).items())))


def allocator():
    """The gateway's malloc: release builds link jemalloc (common/memory.c)."""
    from cluster import BIN
    out = subprocess.run(["ldd", os.path.join(BIN, "pushgate-gateway")], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL).stdout.decode()
    return "jemalloc" if "libjemalloc" in out else "glibc"


def source_tree():
    """The commit measured, and whether the work tree differed from it."""
    git = lambda *a: subprocess.run(["git", "-C", HERE] + list(a), stdout=subprocess.PIPE,  # noqa: E731
                                    stderr=subprocess.DEVNULL).stdout.decode().strip()
    return {"commit": git("rev-parse", "--short", "HEAD") or None,
            "modified": bool(git("status", "--porcelain", "--untracked-files=no"))}


def churn_row(m):
    if "skipped" in m:
        return ("skipped: " + m["skipped"], "-", "-")
    return ("register %d rows/s, unregister %d rows/s" % (m["register"]["rows_per_s"],
                                                          m["unregister"]["rows_per_s"]),
            "%s us of database CPU per row" % m["db_cpu_us_per_row"], "-")


def main():
    from cluster import GATEWAY_SET, PIN_NODES, PROXY_SET
    from scenarios import CLIENT_PROCS
    only = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
    results = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "runs": RUNS,
               "cpus": os.cpu_count(), "gateway_set": GATEWAY_SET,
               "proxy_set": PROXY_SET, "pin_nodes": PIN_NODES,
               "client_processes": CLIENT_PROCS, "allocator": allocator(),
               "source": source_tree(), "loadavg_start": os.getloadavg(), "scenarios": {}}
    rows, peer_rows = [], []
    if not only or "engine" in only:
        engine_benches(results, rows)
    push_benches(results, rows, only)
    if not only or "peer" in only:
        peer_benches(results, rows, peer_rows)
    print(f"\nmedians of {RUNS} run(s) on {os.cpu_count()} CPUs")
    for row in rows:
        print(f"  {row[0]:<36} {row[1]:>28}  {row[2]:<40} target {row[3]}")
    print_peer(peer_rows)
    # the machine is shared: its load over the last minute, before and after
    results["loadavg_end"] = os.getloadavg()
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    # a partial run (BENCH_ONLY) does not overwrite the day's full one, nor
    # a later run an earlier one of the same day (<name>-2.json, ...)
    suffix = (("-" + "-".join(sorted(only)) if only else "") + ("-pinned" if PIN_NODES else "")
              + ("-procs%d" % CLIENT_PROCS if CLIENT_PROCS != 2 else ""))
    stem = os.path.join(HERE, "results", datetime.date.today().isoformat() + suffix)
    path, n = stem + ".json", 1
    while os.path.exists(path):
        n += 1
        path = "%s-%d.json" % (stem, n)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"written to {os.path.relpath(path)}")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""make bench: the engine's benchmarks, on a release build.

Runs each scenario BENCH_RUNS times (default 3) and reports the median:
  echo   - echo_server (length framing) driven by echo_bench with 100
           connections: 1 reactor + 2 workers (the best fit for a 2-core machine
           that also runs the client) at pipeline 1 and 16, and 2 reactors +
           2 workers at pipeline 1
  table  - table_bench: shared-memory table get+set per second, 1 and 4 processes
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


def main():
    results = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "runs": RUNS,
               "cpus": os.cpu_count(), "scenarios": {}}
    rows = []
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
    rows.append(("table get+set, 4 processes", f"{median_of(runs, 'four_processes_ops_per_s'):,.0f} ops/s",
                 "", ""))
    print(f"\nmedians of {RUNS} run(s) on {os.cpu_count()} CPUs")
    for row in rows:
        print(f"  {row[0]:<36} {row[1]:>20}  {row[2]:<28} target {row[3]}")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", datetime.date.today().isoformat() + ".json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"written to {os.path.relpath(path)}")


if __name__ == "__main__":
    sys.exit(main())

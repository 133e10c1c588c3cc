"""runq.py - how long each thread of some processes ran, and how long it
waited in a run queue to run, over a window of a benchmark.

On a machine whose cores are nearly all busy, a thread woken by a message
waits for a core before it runs; an order pays that wait at every process
it crosses.  The kernel counts it per thread in
/proc/<pid>/task/<tid>/schedstat (time on a core, time runnable but waiting,
time slices run).  This samples those counters for every process whose
name starts with one of the given prefixes, at the start and at the end of
the window, and prints per thread: its share of a core running and waiting,
slices per second, and the mean run and wait of a slice.

    python3 bench/runq.py [--seconds 8] [--after 'pushgate-bench publish'] \\
        pushgate- redis-server nginx

--after waits (up to 120 s) for a process whose command line holds that
text, then 2 s more, so the window falls inside the load.
"""
import argparse
import os
import time


def cmdline(pid):
    """pid's command line as one line of text, or None when it is gone."""
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return None
    return " ".join(" ".join([os.path.basename(argv[0])] + argv[1:]).split())


def processes(prefixes):
    """{pid: label} of the processes whose name starts with one of prefixes."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/comm" % pid) as f:
                name = f.read().strip()
        except OSError:
            continue
        cmd = cmdline(pid) if name.startswith(tuple(prefixes)) else None
        if cmd is not None:
            out[pid] = "%s %s" % (pid, (cmd or name)[:40])
    return out


def sample(pids):
    """{(pid, tid): (run_ns, wait_ns, slices, thread name)}"""
    out = {}
    for pid in pids:
        try:
            tids = os.listdir("/proc/%s/task" % pid)
        except OSError:
            continue
        for tid in tids:
            base = "/proc/%s/task/%s/" % (pid, tid)
            try:
                with open(base + "schedstat") as f:
                    run, wait, slices = (int(v) for v in f.read().split())
                with open(base + "comm") as f:
                    name = f.read().strip()
            except (OSError, ValueError):
                continue
            out[(pid, tid)] = (run, wait, slices, name)
    return out


def wait_for(text, limit_s=120):
    end = time.time() + limit_s
    while time.time() < end:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if int(pid) != os.getpid() and text in (cmdline(pid) or ""):   # not its own
                return True
        time.sleep(0.05)
    return False


def report(labels, before, after, seconds):
    rows = []
    for key, (run, wait, slices, name) in after.items():
        if key not in before:
            continue
        r0, w0, s0, _ = before[key]
        run, wait, slices = run - r0, wait - w0, slices - s0
        if run > seconds * 1e7:      # over 1% of a core
            rows.append((run, wait, slices, "%s [%s]" % (labels[key[0]], name)))
    rows.sort(reverse=True)
    print("%-60s %6s %6s %9s %9s %9s" % ("thread", "run", "wait", "slices/s",
                                          "run/slice", "wait/sl."))

    def line(run, wait, slices, label):
        n = max(slices, 1)
        print("%-60s %5.0f%% %5.0f%% %9.0f %7.0fus %7.0fus" % (
            label, run / seconds / 1e7, wait / seconds / 1e7, slices / seconds,
            run / n / 1e3, wait / n / 1e3))
    for row in rows:
        line(*row)
    line(*(sum(r[i] for r in rows) for i in range(3)), "all of the above")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--after", help="wait for a process whose command line holds this")
    ap.add_argument("prefixes", nargs="+", help="process names (comm) to watch, by prefix")
    a = ap.parse_args()
    if a.after:
        if not wait_for(a.after):
            raise SystemExit("runq: no process with %r in its command line" % a.after)
        time.sleep(2)
    labels = processes(a.prefixes)
    before = sample(labels)
    time.sleep(a.seconds)
    report(labels, before, sample(labels), a.seconds)


if __name__ == "__main__":
    main()

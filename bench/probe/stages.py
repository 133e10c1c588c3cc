#!/usr/bin/python3
"""Where an order's time goes, stage by stage: the histograms a build with
bench/probe/stages.patch writes to $PG_PROBE_DIR, summed over processes.

    python3 bench/probe/stages.py <PG_PROBE_DIR>

One line per stage, in the order an order meets them: p50, p90 and p99 of
the time since the publisher stamped it, and the share over 1 and 2 ms.
The reactor thread's read notes only the first order of each read."""
import collections
import glob
import os
import sys

STAGES = [(0, "the consumer takes it"), (4, "the reactor thread reads it"),
          (1, "the worker takes it"), (2, "the worker pushes it"),
          (3, "the reactor thread writes it")]


def histogram(folder, stage):
    h = collections.Counter()
    for path in glob.glob(os.path.join(folder, "%d-*.txt" % stage)):
        with open(path) as f:
            for line in f:
                start_us, count = line.split()
                h[int(start_us)] += int(count)
    return h


def quantile(h, n, q):
    seen = 0
    for start_us in sorted(h):
        seen += h[start_us]
        if seen >= q * n:
            return start_us / 1000
    return None


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for stage, name in STAGES:
        h = histogram(sys.argv[1], stage)
        n = sum(h.values())
        if not n:
            continue
        over = [sum(c for s, c in h.items() if s >= ms * 1000) / n * 100 for ms in (1, 2)]
        print("%-30s %7d orders  p50 %.2f  p90 %.2f  p99 %.2f ms  over 1 ms %.2f%%  over 2 ms %.2f%%"
              % (name, n, quantile(h, n, .5), quantile(h, n, .9), quantile(h, n, .99), *over))


if __name__ == "__main__":
    main()

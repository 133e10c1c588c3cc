/* cpu_list.h - the setting cpu_affinity: the CPUs a daemon runs on.
 *
 * A list of CPU numbers and ranges, "0", "0-3", "0,2-3" (blanks around an
 * item allowed), as taskset -c and systemd's CPUAffinity= take them.  The
 * daemon sets it on itself before it starts a thread or a process, so its
 * reactor threads, workers and task workers all inherit it.
 *
 * Why a node wants it: where two nodes share a host, each on cores of its
 * own keeps a node's hand-offs (reactor thread to worker and back) on one
 * core's run queue and caches, which shortens the tail under load; but a
 * pinned node cannot move off a core that something else holds, which
 * makes the tail at light load less steady.  bench/README.md ("Nodes on
 * cores of their own") has the figures.  Empty (the default): the CPUs the
 * daemon was started with. */
#ifndef PG_CPU_LIST_H
#define PG_CPU_LIST_H

#include <sched.h>
#include <stddef.h>

/* text into out.  0, or -1 with the reason in err: an empty list or item,
 * anything but digits, '-' and ',', a range a-b with a > b, a CPU at or
 * over CPU_SETSIZE. */
int pg_cpu_list_parse(const char *text, cpu_set_t *out, char *err, size_t errlen);

/* Runs the calling process (and what it starts later) on the CPUs of text;
 * empty text: nothing to do.  0, or -1 with the reason in err (a bad list,
 * or none of its CPUs is one this process may use). */
int pg_cpu_affinity_apply(const char *text, char *err, size_t errlen);

#endif

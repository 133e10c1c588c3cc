/* reload.c - pushgate-ctl reload: SIGUSR1 (workers and task workers) or
 * SIGUSR2 (--tasks: task workers only) to a local node, which replaces them
 * one at a time without dropping a connection.  The signal only starts the
 * work, so reload then watches the node's /stats (bounded, with a dot line)
 * until every process it had has been replaced, and says so. */
#include "ctl.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#define POLL_MS 200
#define MAX_WORKERS 256

typedef struct {
    pid_t pids[MAX_WORKERS];
    size_t n;
} pid_set;

/* The pids of the processes a reload replaces, from /stats; err: why not. */
static int reloadable(bool tasks, pid_set *s, char *err, size_t errlen)
{
    json_t *st = ctl_stats_fetch(err, errlen);
    if (!st)
        return -1;
    s->n = tasks ? 0 : ctl_stats_pids(st, "workers", s->pids, MAX_WORKERS);
    s->n += ctl_stats_pids(st, "task_workers", s->pids + s->n, MAX_WORKERS - s->n);
    json_decref(st);
    return 0;
}

/* Whether every process of before has been replaced in now. */
static bool replaced(const pid_set *before, const pid_set *now)
{
    if (now->n != before->n)
        return false;
    for (size_t i = 0; i < now->n; i++) {
        if (now->pids[i] <= 0)
            return false;
        for (size_t j = 0; j < before->n; j++)
            if (now->pids[i] == before->pids[j])
                return false;
    }
    return true;
}

static int wait_reload(pid_t pid, bool tasks, const pid_set *before, long long timeout)
{
    char what[80];
    snprintf(what, sizeof(what), "reloading %zu processes of pid %ld", before->n, (long)pid);
    ctl_dots dots = {0};
    ctl_dots_tick(&dots, what);
    double deadline = ctl_now() + (double)timeout;
    pid_set now = {.n = 0};
    bool done = false;
    while (!done && ctl_now() < deadline && ctl_pid_alive(pid)) {
        ctl_sleep_ms(POLL_MS);
        ctl_dots_tick(&dots, what);
        char err[512];
        done = reloadable(tasks, &now, err, sizeof(err)) == 0 && replaced(before, &now);
    }
    ctl_dots_end(&dots, done ? "done" : "not finished");
    if (!done) {
        ctl_err("the workers of pid %ld were not all replaced within %lld s", (long)pid,
                timeout);
        return CTL_FAIL;
    }
    printf("reloaded pid %ld: %zu new processes\n", (long)pid, now.n);
    return CTL_OK;
}

int ctl_cmd_reload(const ctl_args *a)
{
    const char *path = ctl_pid_file(a);
    long long timeout = 60;
    if (!path || ctl_arg_number(a, "timeout", 0, 3600, &timeout) < 0)
        return CTL_USAGE;
    pid_t pid = ctl_pid_running(path);
    if (pid < 0)
        return CTL_FAIL;
    bool tasks = ctl_arg(a, "tasks") != NULL;
    pid_set before = {.n = 0};
    char err[512] = "";
    bool can_wait = timeout > 0 && reloadable(tasks, &before, err, sizeof(err)) == 0 &&
                    before.n > 0;
    if (timeout > 0 && !can_wait && *err)
        ctl_err("not waiting for the reload: %s", err);
    int sig = tasks ? SIGUSR2 : SIGUSR1;
    if (kill(pid, sig) < 0) {
        ctl_err("kill %ld: %s", (long)pid, strerror(errno));
        return CTL_FAIL;
    }
    if (!can_wait) {
        printf("sent %s to pid %ld: %s are replaced one at a time\n",
               tasks ? "SIGUSR2" : "SIGUSR1", (long)pid, tasks ? "task workers" : "workers");
        return CTL_OK;
    }
    return wait_reload(pid, tasks, &before, timeout);
}

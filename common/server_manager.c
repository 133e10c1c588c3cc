/* server_manager.c - the manager process: forks the workers and task workers,
 * replaces any that exit (crash, kill, max_request), reloads them one at a
 * time on SIGUSR1 (all) or SIGUSR2 (task workers), and stops them all on
 * SIGTERM: workers first, then task workers, so that what workers hand to
 * task workers while they stop (un-acknowledged messages to store, rows to
 * delete) is still done.  It is single-threaded and waits on a signalfd, so forking from it
 * is always safe.  A child that dies right after it started is restarted
 * after a pause, so a crash loop does not become a fork loop. */
#include "server_internal.h"

#include "log.h"
#include "proctitle.h"
#include "timer.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#define QUICK_DEATH_MS 1000
#define RESPAWN_PAUSE_MS 1000

typedef struct {
    pid_t pid;
    int is_task;
    int id;
    uint64_t started_ms;
    uint64_t respawn_at_ms;   /* 0: not waiting to be respawned */
    uint64_t stop_sent_ms;    /* 0: not being stopped */
} child_slot;

typedef struct {
    pg_server *s;
    child_slot *slots;
    int nslots;
    int stopping;
    int reload_next;          /* next slot to reload, -1 when no reload runs */
    int reload_end;
    int reload_current;       /* slot being replaced now, -1 none */
} manager;

static pg_shm_worker *slot_stats(manager *m, child_slot *c)
{
    return c->is_task ? &m->s->stats->task_workers[c->id] : &m->s->stats->workers[c->id];
}

static void close_unused_fds(pg_server *s, int is_task, int id)
{
    int W = s->worker_num, T = s->task_worker_num;
    for (int r = 0; r < s->reactor_num; r++)
        for (int w = 0; w < W; w++)
            if (is_task || w != id) {
                close(s->reactor_ipc[r * W + w][1]);
                s->reactor_ipc[r * W + w][1] = -1;
            }
    for (int a = 0; a < W; a++)
        for (int b = 0; b < W; b++)
            for (int j = 0; j < 2; j++)
                if (is_task || (j == 0 ? a : b) != id) {
                    close(s->worker_ipc[a * W + b][j]);
                    s->worker_ipc[a * W + b][j] = -1;
                }
    for (int w = 0; w < W; w++)
        for (int t = 0; t < T; t++) {
            int *pair = s->task_ipc[w * T + t];
            int keep = is_task ? (t == id ? 1 : -1) : (w == id ? 0 : -1);
            for (int j = 0; j < 2; j++)
                if (j != keep) {
                    close(pair[j]);
                    pair[j] = -1;
                }
        }
}

static void child_main(manager *m, child_slot *c) __attribute__((noreturn));
static void child_main(manager *m, child_slot *c)
{
    pg_server *s = m->s;
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* If the manager dies, so do we: no orphaned workers. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != s->manager_pid)
        _exit(1);
    int is_task = c->is_task, id = c->id;
    close_unused_fds(s, is_task, id);
    free(m->slots);
    int rc = is_task ? pg_task_worker_main(s, id) : pg_worker_main(s, id);
    pg_server_free(s);
    pg_log_close();
    exit(rc);
}

static int spawn(manager *m, child_slot *c)
{
    pid_t pid = fork();
    if (pid < 0) {
        pg_error("fork: %s", strerror(errno));
        c->respawn_at_ms = pg_now_ms() + RESPAWN_PAUSE_MS;
        return -1;
    }
    if (pid == 0)
        child_main(m, c);
    c->pid = pid;
    c->started_ms = pg_now_ms();
    c->respawn_at_ms = 0;
    c->stop_sent_ms = 0;
    pg_shm_worker *st = slot_stats(m, c);
    atomic_store(&st->pid, pid);
    atomic_store(&st->state, PG_WORKER_IDLE);
    return 0;
}

static void stop_child(child_slot *c)
{
    if (c->pid > 0 && !c->stop_sent_ms) {
        kill(c->pid, SIGTERM);
        c->stop_sent_ms = pg_now_ms();
    }
}

static void report_exit(manager *m, child_slot *c, int status)
{
    pg_server *s = m->s;
    const char *kind = c->is_task ? "task worker" : "worker";
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (sig == 0 && code == 0) {
        pg_info("%s %d (pid %ld) exited", kind, c->id, (long)c->pid);
        return;
    }
    pg_error("%s %d (pid %ld) died: %s %d", kind, c->id, (long)c->pid,
             sig ? "signal" : "exit status", sig ? sig : code);
    if (s->cb.on_error)
        s->cb.on_error(s, c->id, c->pid, code, sig);
    pg_server_run_hooks(s, PG_HOOK_WORKER_ERROR, c->id);
}

static void reload_step(manager *m)
{
    if (m->reload_current >= 0 || m->reload_next < 0 || m->stopping)
        return;
    while (m->reload_next < m->reload_end && m->slots[m->reload_next].pid <= 0)
        m->reload_next++;
    if (m->reload_next >= m->reload_end) {
        pg_notice("reload done");
        m->reload_next = -1;
        return;
    }
    m->reload_current = m->reload_next++;
    stop_child(&m->slots[m->reload_current]);
}

static void reap(manager *m)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        child_slot *c = NULL;
        for (int i = 0; i < m->nslots; i++)
            if (m->slots[i].pid == pid)
                c = &m->slots[i];
        if (!c)
            continue;
        report_exit(m, c, status);
        if (!c->is_task)
            pg_direct_forget_worker(m->s, c->id);   /* its connections died with it */
        atomic_store(&slot_stats(m, c)->state, PG_WORKER_EXITED);
        atomic_store(&slot_stats(m, c)->queued, 0);
        uint64_t lived = pg_now_ms() - c->started_ms;
        int crashed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        c->pid = 0;
        if (m->stopping)
            continue;
        atomic_fetch_add(&slot_stats(m, c)->respawns, 1);
        if (crashed && lived < QUICK_DEATH_MS)
            c->respawn_at_ms = pg_now_ms() + RESPAWN_PAUSE_MS;
        else
            spawn(m, c);
        if (c - m->slots == m->reload_current)
            m->reload_current = -1;
    }
    reload_step(m);
}

static void start_reload(manager *m, int task_only)
{
    if (m->reload_next >= 0 || m->reload_current >= 0) {
        pg_warn("a reload is already running; request ignored");
        return;
    }
    m->reload_next = task_only ? m->s->worker_num : 0;
    m->reload_end = m->nslots;
    reload_step(m);
}

static void on_signal(manager *m, int signo)
{
    switch (signo) {
    case SIGCHLD:
        reap(m);
        break;
    case SIGTERM:
    case SIGINT:
        if (!m->stopping)
            pg_info("stopping workers");
        m->stopping = 1;
        pg_direct_close_listeners(m->s);   /* no respawn will need them */
        for (int i = 0; i < m->s->worker_num; i++)
            stop_child(&m->slots[i]);
        break;
    case SIGUSR1:
    case SIGUSR2:
        start_reload(m, signo == SIGUSR2);
        break;
    }
}

/* Respawns due, and children that overstay a stop. Returns the poll timeout. */
static int on_tick(manager *m)
{
    uint64_t now = pg_now_ms();
    uint64_t grace = (uint64_t)m->s->settings->reload_timeout * 1000;
    int timeout = 1000;
    for (int i = 0; i < m->nslots; i++) {
        child_slot *c = &m->slots[i];
        if (!m->stopping && c->pid == 0 && c->respawn_at_ms) {
            if (now >= c->respawn_at_ms)
                spawn(m, c);
            else if ((int)(c->respawn_at_ms - now) < timeout)
                timeout = (int)(c->respawn_at_ms - now);
        }
        if (c->pid > 0 && c->stop_sent_ms && now - c->stop_sent_ms > grace) {
            pg_error("%s %d (pid %ld) did not stop within %llu ms; killing it",
                     c->is_task ? "task worker" : "worker", c->id, (long)c->pid,
                     (unsigned long long)grace);
            kill(c->pid, SIGKILL);
            c->stop_sent_ms = now;
        }
    }
    return timeout;
}

static int any_alive(manager *m, int from, int to)
{
    for (int i = from; i < to; i++)
        if (m->slots[i].pid > 0)
            return 1;
    return 0;
}

static int manager_loop(manager *m, int sfd)
{
    while (!m->stopping || any_alive(m, 0, m->nslots)) {
        if (m->stopping && !any_alive(m, 0, m->s->worker_num))
            for (int i = m->s->worker_num; i < m->nslots; i++)
                stop_child(&m->slots[i]);
        int timeout = on_tick(m);
        struct pollfd p = {.fd = sfd, .events = POLLIN};
        int n = poll(&p, 1, timeout);
        if (n < 0 && errno != EINTR) {
            pg_error("poll: %s", strerror(errno));
            return 1;
        }
        struct signalfd_siginfo si;
        while (n > 0 && read(sfd, &si, sizeof(si)) == sizeof(si))
            on_signal(m, (int)si.ssi_signo);
    }
    return 0;
}

void pg_manager_main(pg_server *s)
{
    s->role = PG_ROLE_MANAGER;
    s->manager_pid = getpid();
    /* The master's early catch of SIGTERM (server.c) is the master's: here
     * it stops the process, as always, until the signals are blocked below. */
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    pg_log_set_role("manager");
    pg_proctitle_set("%s: manager", s->name);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (s->ready_fd >= 0)
        close(s->ready_fd);
    for (int i = 0; i < s->listener_num; i++) {
        if (s->listeners[i].opts.direct)
            continue;   /* the workers it forks accept on it (server_direct.c) */
        close(s->listeners[i].fd);
        s->listeners[i].fd = -1;
    }
    for (int i = 0; i < s->reactor_num * s->worker_num; i++) {
        close(s->reactor_ipc[i][0]);
        s->reactor_ipc[i][0] = -1;
    }
    sigset_t set;
    sigemptyset(&set);
    int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGHUP};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaddset(&set, sigs[i]);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    /* The master may have died before we blocked signals. */
    if (sfd < 0 || getppid() != s->master_pid)
        _exit(1);

    manager m = {.s = s, .reload_next = -1, .reload_current = -1};
    m.nslots = s->worker_num + s->task_worker_num;
    m.slots = calloc((size_t)m.nslots, sizeof(child_slot));
    if (!m.slots)
        _exit(1);
    for (int i = 0; i < m.nslots; i++) {
        m.slots[i].is_task = i >= s->worker_num;
        m.slots[i].id = m.slots[i].is_task ? i - s->worker_num : i;
        spawn(&m, &m.slots[i]);
    }
    int rc = manager_loop(&m, sfd);
    close(sfd);
    free(m.slots);
    pg_server_free(s);
    pg_log_close();
    exit(rc);
}

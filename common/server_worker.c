/* server_worker.c - worker and task worker processes.
 *
 * A worker runs an event loop: packets and connection events come from every
 * reactor thread, task results from every task worker, and its callbacks send
 * back through the same channels without blocking.  A task worker also runs a
 * loop (for timers) but handles one task at a time, synchronously; that is
 * where blocking libraries (MySQL) belong.  Both stop on SIGTERM or after
 * max_request: a worker stops taking input and finishes the message being
 * read; a task worker first does every task already queued for it (workers
 * stop before task workers, so what they hand over while stopping is done).
 * Then the stop callbacks run, what they send is flushed, and it exits 0. */
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
#include <unistd.h>
#include <event2/event.h>

#define STOP_POLL_MS 10
#define STOP_FLUSH_MS 5000

struct pg_worker_proc {
    pg_server *s;
    int id;
    int is_task;
    struct event_base *base;
    /* worker: one per reactor, then one per other worker (NULL for itself);
     * task worker: one per worker */
    pg_ipc_channel **in;
    int nin;
    pg_ipc_channel **tasks;      /* worker only: one per task worker */
    struct event *sigterm_ev, *stop_ev;
    int stopping;
    uint64_t stop_started_ms;
    uint64_t handled;
    uint64_t task_seq;
    /* task worker: the task being handled */
    int64_t current_task;
    int current_from;
    int finished;
};

static pg_shm_worker *my_stats(struct pg_worker_proc *p)
{
    return p->is_task ? &p->s->stats->task_workers[p->id] : &p->s->stats->workers[p->id];
}

/* ---- stopping ---- */

static int reading_any(struct pg_worker_proc *p)
{
    for (int i = 0; i < p->nin; i++)
        if (p->in[i] && pg_ipc_channel_reading_message(p->in[i]))
            return 1;
    return 0;
}

/* A task worker stops only once nothing more is queued for it (or once
 * reload_timeout has passed: the manager would kill it then anyway). */
static int tasks_queued(struct pg_worker_proc *p)
{
    uint64_t limit = (uint64_t)p->s->settings->reload_timeout * 1000;
    if (!p->is_task || pg_now_ms() - p->stop_started_ms > limit)
        return 0;
    for (int i = 0; i < p->nin; i++) {
        if (pg_ipc_channel_closed(p->in[i]))
            continue;
        struct pollfd pfd = {.fd = pg_ipc_channel_fd(p->in[i]), .events = POLLIN};
        if (poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN))
            return 1;
    }
    return 0;
}

static void flush_all(struct pg_worker_proc *p)
{
    for (int i = 0; i < p->nin; i++)
        if (p->in[i])
            pg_ipc_flush_blocking(p->in[i], STOP_FLUSH_MS);
    for (int t = 0; p->tasks && t < p->s->task_worker_num; t++)
        pg_ipc_flush_blocking(p->tasks[t], STOP_FLUSH_MS);
}

static void on_stop_check(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pg_worker_proc *p = arg;
    if (reading_any(p) || tasks_queued(p))
        return;   /* a message is half in, or tasks wait: finish them first */
    event_del(p->stop_ev);
    pg_server *s = p->s;
    if (s->cb.on_stop)
        s->cb.on_stop(s, p->id);
    pg_server_run_hooks(s, PG_HOOK_WORKER_STOP, p->id);
    flush_all(p);
    pg_direct_finish(s, STOP_FLUSH_MS);
    event_base_loopbreak(p->base);
}

static void begin_stop(struct pg_worker_proc *p, const char *why)
{
    if (p->stopping)
        return;
    p->stopping = 1;
    p->stop_started_ms = pg_now_ms();
    pg_info("stopping: %s", why);
    atomic_store(&my_stats(p)->state, PG_WORKER_STOPPING);
    for (int i = 0; i < p->nin && !p->is_task; i++)
        if (p->in[i])
            pg_ipc_channel_stop(p->in[i]);
    pg_direct_stop_accepting(p->s);
    struct timeval tv = {0, STOP_POLL_MS * 1000};
    p->stop_ev = event_new(p->base, -1, EV_PERSIST, on_stop_check, p);
    event_add(p->stop_ev, &tv);
    event_active(p->stop_ev, EV_TIMEOUT, 0);
}

static void on_sigterm(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    begin_stop(arg, "SIGTERM");
}

static void count_handled(struct pg_worker_proc *p);

void pg_worker_count_handled(pg_server *s)
{
    if (s->proc)
        count_handled(s->proc);
}

static void count_handled(struct pg_worker_proc *p)
{
    const pg_server_settings *st = p->s->settings;
    long long limit = p->is_task ? st->task_max_request : st->max_request;
    atomic_fetch_add_explicit(&my_stats(p)->requests, 1, memory_order_relaxed);
    if (++p->handled == (uint64_t)limit && limit > 0)
        begin_stop(p, p->is_task ? "task_max_request reached" : "max_request reached");
}

/* ---- worker ---- */

static void on_reactor_message(pg_ipc_channel *ch, const pg_ipc_header *h, const char *data,
                               void *arg)
{
    (void)ch;
    struct pg_worker_proc *p = arg;
    pg_server *s = p->s;
    switch (h->type) {
    case PG_IPC_CONNECT:
        if (s->cb.on_connect)
            s->cb.on_connect(s, h->id, h->listener, h->length ? data : "");
        break;
    case PG_IPC_RECEIVE:
        pg_queued_done(my_stats(p));
        if (s->cb.on_receive)
            s->cb.on_receive(s, h->id, h->listener, data, h->length);
        count_handled(p);
        break;
    case PG_IPC_CLOSE:
        if (s->cb.on_close)
            s->cb.on_close(s, h->id, h->listener);
        break;
    case PG_IPC_PIPE:
        if (s->cb.on_pipe_message)
            s->cb.on_pipe_message(s, h->worker_id, data, h->length);
        break;
    case PG_IPC_SEND:       /* another worker's, for a direct session of ours */
        pg_direct_send(s, h->id, data, h->length);
        break;
    case PG_IPC_SHUTDOWN:
        pg_direct_close(s, h->id);
        break;
    default:
        pg_warn("unexpected message type %u from a reactor", h->type);
    }
}

static void on_task_result(pg_ipc_channel *ch, const pg_ipc_header *h, const char *data,
                           void *arg)
{
    (void)ch;
    struct pg_worker_proc *p = arg;
    if (h->type == PG_IPC_FINISH && p->s->cb.on_finish)
        p->s->cb.on_finish(p->s, (int64_t)h->id, data, h->length);
}

static void on_channel_closed(pg_ipc_channel *ch, void *arg)
{
    struct pg_worker_proc *p = arg;
    if (pg_ipc_channel_reset(ch) && !p->stopping)
        pg_warn("ipc fd %d: the other side closed with messages unread", pg_ipc_channel_fd(ch));
    /* The master is gone: nothing more will come. */
    begin_stop(p, "the master closed its end");
}

/* SEND, SHUTDOWN or PROBE to the reactor thread that holds the session. */
static int to_session(pg_server *s, uint16_t type, pg_session_id session, const void *data,
                      size_t len)
{
    struct pg_worker_proc *p = s->proc;
    if (!p || p->is_task || (uint32_t)(session >> PG_SESSION_COUNTER_BITS) != s->generation)
        return -1;
    pg_ipc_header h = {.id = session, .type = type, .worker_id = p->id};
    if (pg_session_is_direct(session)) {
        if (type == PG_IPC_PROBE)
            return -1;   /* framed packets: no protocol to ask */
        int owner = pg_session_home_worker(session, s->worker_num);
        if (owner == p->id)
            return type == PG_IPC_SEND ? pg_direct_send(s, session, data, len)
                                       : pg_direct_close(s, session);
        if (owner >= s->worker_num)
            return -1;
        return pg_ipc_send(p->in[s->reactor_num + owner], &h, data, len);   /* its worker writes */
    }
    return pg_ipc_send(p->in[pg_session_reactor_of(session, s->reactor_num)], &h, data, len);
}

int pg_server_send_message(pg_server *s, int dst_worker, const void *data, size_t len)
{
    struct pg_worker_proc *p = s->proc;
    if (!p || p->is_task || dst_worker < 0 || dst_worker >= s->worker_num || dst_worker == p->id)
        return -1;
    pg_ipc_header h = {.type = PG_IPC_PIPE, .worker_id = p->id};
    return pg_ipc_send(p->in[s->reactor_num + dst_worker], &h, data, len);
}

int pg_server_send(pg_server *s, pg_session_id session, const void *data, size_t len)
{
    return to_session(s, PG_IPC_SEND, session, data, len);
}

int pg_server_flush(pg_server *s)
{
    struct pg_worker_proc *p = s->proc;
    if (!p || p->is_task)
        return -1;
    int all = 1;
    for (int r = 0; r < s->reactor_num; r++)
        if (pg_ipc_flush(p->in[r]) != 1)
            all = 0;
    return all ? 0 : -1;
}

int pg_server_close(pg_server *s, pg_session_id session, const char *reason, size_t len)
{
    return to_session(s, PG_IPC_SHUTDOWN, session, reason, len);
}

int pg_server_probe(pg_server *s, pg_session_id session)
{
    return to_session(s, PG_IPC_PROBE, session, "", 0);
}

static int64_t send_task(pg_server *s, uint16_t type, const void *data, size_t len, int dst)
{
    struct pg_worker_proc *p = s->proc;
    if (!p || p->is_task || s->task_worker_num == 0 || dst >= s->task_worker_num)
        return -1;
    int t = dst >= 0 ? dst : pg_least_queued(s->stats->task_workers, s->task_worker_num);
    int64_t id = (int64_t)(((uint64_t)(p->id + 1) << 48) | (++p->task_seq & ((UINT64_C(1) << 48) - 1)));
    pg_ipc_header h = {.id = (uint64_t)id, .type = type, .worker_id = p->id};
    if (pg_ipc_send(p->tasks[t], &h, data, len) < 0)
        return -1;
    atomic_fetch_add(&s->stats->task_workers[t].queued, 1);
    atomic_fetch_add(&s->stats->task_queue, 1);
    return id;
}

int64_t pg_server_task(pg_server *s, const void *data, size_t len, int dst_task_worker)
{
    return send_task(s, PG_IPC_TASK, data, len, dst_task_worker);
}

int pg_server_fire_event(pg_server *s, const char *name, const void *data, size_t len)
{
    size_t name_len = strlen(name);
    char *msg = malloc(name_len + 1 + len);
    if (!msg)
        return -1;
    memcpy(msg, name, name_len + 1);
    memcpy(msg + name_len + 1, data, len);
    int64_t id = send_task(s, PG_IPC_EVENT, msg, name_len + 1 + len, -1);
    free(msg);
    return id < 0 ? -1 : 0;
}

/* ---- task worker ---- */

static void run_event_listeners(pg_server *s, const char *msg, size_t len)
{
    const char *end = memchr(msg, '\0', len);
    if (!end) {
        pg_warn("custom event without a name; dropped");
        return;
    }
    const char *data = end + 1;
    size_t data_len = len - (size_t)(data - msg);
    int n = 0;
    for (pg_event_listener *l = s->event_listeners; l; l = l->next)
        if (strcmp(l->name, msg) == 0) {
            l->fn(s, msg, data, data_len, l->arg);
            n++;
        }
    if (n == 0)
        pg_warn("custom event '%s' has no listener", msg);
}

static void on_task_message(pg_ipc_channel *ch, const pg_ipc_header *h, const char *data,
                            void *arg)
{
    (void)ch;
    struct pg_worker_proc *p = arg;
    pg_server *s = p->s;
    if (h->type != PG_IPC_TASK && h->type != PG_IPC_EVENT) {
        pg_warn("unexpected message type %u from a worker", h->type);
        return;
    }
    atomic_store(&my_stats(p)->state, PG_WORKER_BUSY);
    p->current_task = (int64_t)h->id;
    p->current_from = h->worker_id;
    p->finished = 0;
    if (h->type == PG_IPC_EVENT)
        run_event_listeners(s, data, h->length);
    else if (s->cb.on_task)
        s->cb.on_task(s, p->current_task, h->worker_id, data, h->length);
    p->current_task = 0;
    pg_queued_done(my_stats(p));
    atomic_fetch_sub(&s->stats->task_queue, 1);
    atomic_fetch_add(&s->stats->tasks_done, 1);
    if (!p->stopping)
        atomic_store(&my_stats(p)->state, PG_WORKER_IDLE);
    count_handled(p);
}

int pg_server_finish(pg_server *s, const void *data, size_t len)
{
    struct pg_worker_proc *p = s->proc;
    if (!p || !p->is_task || p->current_task == 0 || p->finished ||
        p->current_from < 0 || p->current_from >= s->worker_num)
        return -1;
    p->finished = 1;
    pg_ipc_header h = {.id = (uint64_t)p->current_task, .type = PG_IPC_FINISH, .worker_id = p->id};
    return pg_ipc_send(p->in[p->current_from], &h, data, len);
}

/* ---- both ---- */

struct event_base *pg_server_event_base(const pg_server *s)
{
    return s->proc ? s->proc->base : s->main_base;
}

static int setup(struct pg_worker_proc *p)
{
    pg_server *s = p->s;
    int W = s->worker_num, T = s->task_worker_num, R = s->reactor_num;
    p->nin = p->is_task ? W : R + W;
    p->in = calloc((size_t)p->nin, sizeof(*p->in));
    if (!p->in || !(p->base = event_base_new()))
        return -1;
    for (int i = 0; i < p->nin; i++) {
        int fd, peer = i - R, id = p->id;
        if (p->is_task)
            fd = s->task_ipc[i * T + id][1];
        else if (peer < 0)
            fd = s->reactor_ipc[i * W + id][1];
        else if (peer == id)
            continue;
        else
            fd = id < peer ? s->worker_ipc[id * W + peer][0] : s->worker_ipc[peer * W + id][1];
        p->in[i] = pg_ipc_channel_new(p->base, fd, s->ipc_max_message,
                                      p->is_task ? on_task_message : on_reactor_message,
                                      on_channel_closed, p);
        if (!p->in[i])
            return -1;
    }
    if (!p->is_task && T > 0) {
        p->tasks = calloc((size_t)T, sizeof(*p->tasks));
        for (int t = 0; p->tasks && t < T; t++)
            if (!(p->tasks[t] = pg_ipc_channel_new(p->base, s->task_ipc[p->id * T + t][0],
                                                   s->ipc_max_message, on_task_result, NULL, p)))
                return -1;
        if (!p->tasks)
            return -1;
    }
    if (p->is_task)
        pg_direct_close_listeners(s);   /* only workers accept on them */
    else if (pg_direct_start(s, p->base) < 0)
        return -1;
    p->sigterm_ev = evsignal_new(p->base, SIGTERM, on_sigterm, p);
    return p->sigterm_ev && evsignal_add(p->sigterm_ev, NULL) == 0 ? 0 : -1;
}

static void teardown(struct pg_worker_proc *p)
{
    pg_timer_bind(NULL);
    pg_direct_free(p->s);
    for (int i = 0; p->in && i < p->nin; i++)
        pg_ipc_channel_free(p->in[i]);
    for (int t = 0; p->tasks && t < p->s->task_worker_num; t++)
        pg_ipc_channel_free(p->tasks[t]);
    free(p->in);
    free(p->tasks);
    if (p->sigterm_ev)
        event_free(p->sigterm_ev);
    if (p->stop_ev)
        event_free(p->stop_ev);
    if (p->base)
        event_base_free(p->base);
    p->s->proc = NULL;
}

static int run(pg_server *s, int id, int is_task)
{
    struct pg_worker_proc p = {.s = s, .id = id, .is_task = is_task, .current_from = -1};
    char role[32];
    snprintf(role, sizeof(role), "%s %d", is_task ? "task" : "worker", id);
    pg_log_set_role(role);
    pg_proctitle_set("%s: %s", s->name, role);
    s->role = is_task ? PG_ROLE_TASK : PG_ROLE_WORKER;
    s->worker_id = id;
    s->proc = &p;
    signal(SIGINT, SIG_IGN);   /* Ctrl-C reaches the master, which stops us in order */
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    if (setup(&p) < 0) {
        pg_error("cannot start: %s", strerror(errno));
        teardown(&p);
        return 1;
    }
    pg_timer_bind(p.base);
    if (s->cb.on_start)
        s->cb.on_start(s, id);
    pg_server_run_hooks(s, PG_HOOK_WORKER_START, id);
    for (int i = 0; i < p.nin && !p.stopping; i++)
        if (p.in[i])
            pg_ipc_channel_start(p.in[i]);
    for (int t = 0; p.tasks && t < s->task_worker_num; t++)
        pg_ipc_channel_start(p.tasks[t]);
    event_base_dispatch(p.base);
    teardown(&p);
    return 0;
}

int pg_worker_main(pg_server *s, int worker_id)
{
    return run(s, worker_id, 0);
}

int pg_task_worker_main(pg_server *s, int task_worker_id)
{
    return run(s, task_worker_id, 1);
}

/* server_internal.h - what the engine's files share; not a public header.
 *
 * server.c          settings, creating the server, listening, start-up order
 * server_master.c   master main thread: accept, signals, stopping
 * server_reactor.c  reactor threads: connections, framing, dispatch, writes
 * server_manager.c  manager process: fork, respawn, reload
 * server_worker.c   worker and task worker processes */
#ifndef PG_SERVER_INTERNAL_H
#define PG_SERVER_INTERNAL_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

#include "ipc.h"
#include "server.h"

/* Session ids: 27 bits of boot generation, 36 bits of counter, and the top
 * bit clear, so they fit signed 64-bit integers (JSON, SQL BIGINT).  The
 * counter of reactor r runs r, r + reactor_num, r + 2 * reactor_num, ... so
 * any process can tell which reactor thread holds a session without asking. */
#define PG_SESSION_COUNTER_BITS 36
#define PG_SESSION_COUNTER_MASK ((UINT64_C(1) << PG_SESSION_COUNTER_BITS) - 1)
#define PG_GENERATION_MASK ((UINT32_C(1) << PG_SESSION_GENERATION_BITS) - 1)

/* A stop was asked for (SIGTERM, SIGINT) before the master's loop ran. */
int pg_server_stop_signalled(void);

typedef struct {
    _Atomic pid_t pid;
    _Atomic int state;
    _Atomic uint64_t requests;
    _Atomic uint64_t queued;
    _Atomic uint64_t respawns;
    _Atomic long long direct_connections[PG_SERVER_MAX_LISTENERS];   /* server_direct.c */
} pg_shm_worker;

/* Counters in shared memory, mapped before fork. */
typedef struct {
    int64_t start_time;
    _Atomic pid_t master_pid, manager_pid;
    _Atomic uint64_t connections, accepted, closed, refused;
    _Atomic uint64_t packets_in, packets_out, bytes_in, bytes_out;
    _Atomic uint64_t task_queue, tasks_done, task_seq;
    _Atomic uint64_t sessions_per_reactor[PG_SERVER_MAX_REACTORS];
    pg_shm_worker workers[PG_SERVER_MAX_WORKERS];
    pg_shm_worker task_workers[PG_SERVER_MAX_WORKERS];
} pg_shm_stats;

typedef struct {
    int fd;
    int port;
    char host[64];
    pg_listen_options opts;
    char eof[8];                      /* copy of the EOF marker opts.frame points at */
    _Atomic long long connections;    /* open now (master: accept and reactor threads;
                                         direct listeners: pg_listener_connections) */
} pg_listener;

typedef struct pg_hook_entry {
    pg_hook hook;
    pg_hook_fn fn;
    void *arg;
    struct pg_hook_entry *next;
} pg_hook_entry;

typedef struct pg_event_listener {
    char *name;
    pg_event_listener_fn fn;
    void *arg;
    struct pg_event_listener *next;
} pg_event_listener;

typedef struct pg_reactor pg_reactor;
typedef struct pg_worker_proc pg_worker_proc;
typedef struct pg_direct pg_direct;

struct pg_server {
    char name[64];
    const pg_server_settings *settings;
    pg_server_callbacks cb;
    void *data;
    uint32_t generation;
    int reactor_num, worker_num, task_worker_num;
    size_t ipc_max_message;

    pg_listener listeners[PG_SERVER_MAX_LISTENERS];
    int listener_num;
    pg_hook_entry *hooks;
    pg_event_listener *event_listeners;

    /* IPC socket pairs, [0] master/worker side, [1] far side:
     * reactor_ipc[r * worker_num + w]: reactor r <-> worker w
     * task_ipc[w * task_worker_num + t]: worker w <-> task worker t
     * worker_ipc[a * worker_num + b], a < b: worker a <-> worker b */
    int (*reactor_ipc)[2];
    int (*task_ipc)[2];
    int (*worker_ipc)[2];

    pg_shm_stats *stats;
    int ready_fd;                     /* daemonize: tells the launcher "started" */
    pg_role role;
    int worker_id;
    pid_t master_pid, manager_pid;

    /* master */
    pg_reactor *reactors;
    struct event_base *main_base;
    _Atomic int stop_requested;       /* set before the manager is told; reactors read it */
    int exit_code;

    /* worker or task worker of this process */
    pg_worker_proc *proc;
    pg_direct *direct;                /* worker: its direct listeners' connections */
};

/* server.c */
void pg_server_run_hooks(pg_server *s, pg_hook hook, int worker_id);

/* server_master.c */
int pg_master_run(pg_server *s);

/* server_reactor.c */
int pg_reactors_create(pg_server *s);
int pg_reactors_start(pg_server *s);
/* From the main thread: hand over an accepted socket. */
int pg_reactor_assign(pg_server *s, int fd, int listener);
/* From the main thread: drain, flush and stop every reactor, then join. */
void pg_reactors_stop(pg_server *s);
void pg_reactors_free(pg_server *s);

/* server_manager.c: runs in the forked manager; never returns. */
void pg_manager_main(pg_server *s) __attribute__((noreturn));

/* server_worker.c: run in forked children; return the exit code. */
int pg_worker_main(pg_server *s, int worker_id);
int pg_task_worker_main(pg_server *s, int task_worker_id);
/* A packet was handed to on_receive (counts toward max_request). */
void pg_worker_count_handled(pg_server *s);

/* server_direct.c: in a worker, the connections of its direct listeners
 * (pg_listen_options.direct), with no reactor between. */
int pg_direct_start(pg_server *s, struct event_base *base);
int pg_direct_send(pg_server *s, pg_session_id session, const void *data, size_t len);
int pg_direct_close(pg_server *s, pg_session_id session);
/* The worker begins to stop: no new connections, no more reads. */
void pg_direct_stop_accepting(pg_server *s);
/* This process's copies of the direct listeners' sockets are closed: the
 * port refuses connections once no process that accepts on it holds one
 * (a task worker never does; the manager from the server's stop on). */
void pg_direct_close_listeners(pg_server *s);
/* After on_stop: writes what is queued (waiting at most timeout_ms in all)
 * and closes every connection, without on_close. */
void pg_direct_finish(pg_server *s, int timeout_ms);
void pg_direct_free(pg_server *s);
/* In the manager, once a worker is gone: its direct connections went with
 * it, so they leave the counts (max_conn). */
void pg_direct_forget_worker(pg_server *s, int worker_id);

/* server_reactor.c: "ip:port" of a socket's peer ("?:0" when unknown). */
const char *pg_fd_peer(int fd, char *buf, size_t len);

/* Connections one wake-up of a listening socket accepts at most (the
 * master's and a direct listener's), so that other events get their turn. */
#define PG_ACCEPTS_PER_CALL 64

/* A connection closed gracefully sends FIN, then reads and drops what its
 * peer still sends, for at most this long (server_reactor.c, conn_linger). */
#define PG_LINGER_S 2

/* Direct sessions (server_direct.c): the counter's top bit set, then the
 * worker's id, then a sequence of the worker's own.  The reactors' counters
 * stay below the bit. */
#define PG_DIRECT_SESSION_BIT (UINT64_C(1) << (PG_SESSION_COUNTER_BITS - 1))
#define PG_DIRECT_SEQ_BITS 24

static inline int pg_session_is_direct(uint64_t session)
{
    return (session & PG_DIRECT_SESSION_BIT) != 0;
}

static inline int pg_session_reactor_of(uint64_t session, int reactor_num)
{
    return (int)((session & PG_SESSION_COUNTER_MASK) % (uint64_t)reactor_num);
}

/* One queued message handled.  Never below zero: a respawned worker handles
 * what its predecessor left in the socket after the count was reset. */
static inline void pg_queued_done(pg_shm_worker *w)
{
    uint64_t q = atomic_load_explicit(&w->queued, memory_order_relaxed);
    while (q > 0 && !atomic_compare_exchange_weak_explicit(&w->queued, &q, q - 1,
                                                           memory_order_relaxed,
                                                           memory_order_relaxed))
        ;
}

/* The worker (or task worker) with the fewest messages queued. */
static inline int pg_least_queued(pg_shm_worker *workers, int n)
{
    int best = 0;
    uint64_t least = UINT64_MAX;
    for (int i = 0; i < n; i++) {
        uint64_t q = atomic_load_explicit(&workers[i].queued, memory_order_relaxed);
        if (q < least) {
            least = q;
            best = i;
        }
    }
    return best;
}

/* A connection of listener came or went (stats->connections is the total). */
static inline void pg_conn_counted(pg_server *s, int listener)
{
    atomic_fetch_add(&s->stats->connections, 1);
    atomic_fetch_add(&s->listeners[listener].connections, 1);
}

static inline void pg_conn_uncounted(pg_server *s, int listener)
{
    atomic_fetch_sub(&s->stats->connections, 1);
    atomic_fetch_sub(&s->listeners[listener].connections, 1);
}

/* The worker that sees a session's connect and close (and, in fixed dispatch
 * mode, all its packets). */
static inline int pg_session_home_worker(uint64_t session, int worker_num)
{
    if (pg_session_is_direct(session))
        return (int)((session >> PG_DIRECT_SEQ_BITS) & (PG_SERVER_MAX_WORKERS - 1));
    uint64_t x = session * UINT64_C(0x9E3779B97F4A7C15);
    return (int)((x >> 32) % (uint64_t)worker_num);
}

/* A listener with a limit of its own is held to it; the others share
 * max_conn among the connections not on such listeners. */
static inline long long pg_listener_connections(pg_server *s, int listener)
{
    if (!s->listeners[listener].opts.direct)
        return atomic_load(&s->listeners[listener].connections);
    long long n = 0;   /* direct: every worker's, in shared memory */
    for (int w = 0; w < s->worker_num; w++)
        n += atomic_load(&s->stats->workers[w].direct_connections[listener]);
    return n;
}

static inline int pg_listener_at_limit(pg_server *s, int listener)
{
    const pg_listener *l = &s->listeners[listener];
    if (l->opts.max_conn > 0)
        return pg_listener_connections(s, listener) >= l->opts.max_conn;
    long long shared = (long long)atomic_load(&s->stats->connections);
    for (int i = 0; i < s->listener_num; i++)
        if (s->listeners[i].opts.max_conn > 0)
            shared -= pg_listener_connections(s, i);
    return shared >= s->settings->max_conn;
}

#endif

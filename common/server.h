/* server.h - the Swoole-style server engine every pushgate daemon runs on.
 *
 *   master process
 *     main thread     listens, accepts, hands connections to reactor threads, signals
 *     reactor threads one libevent loop each: socket I/O, framing or a protocol
 *                     hook (HTTP/WebSocket), dispatch of packets to workers, writes
 *   manager process   forks workers and task workers, respawns and reloads them
 *   worker processes  event loop: on_connect / on_receive / on_close / on_finish;
 *                     pg_server_send / pg_server_close / pg_server_task never block
 *   task workers      synchronous on_task, whose pg_server_finish result reaches
 *                     the asking worker's on_finish
 *
 * The master owns every client socket, so a worker that crashes or is reloaded
 * loses no connection.  Connections are named by a 64-bit session id that never
 * repeats on a node (boot generation and a counter); file descriptors never
 * leave the master.  Messages between processes go over Unix socket pairs
 * (ipc.h); stats live in shared memory, readable from every process.
 *
 * A daemon fills pg_server_settings (pg_server_conf_defs lists every setting
 * for config.h), creates the server, adds listening ports, sets callbacks and
 * calls pg_server_start, which returns when the server has stopped. */
#ifndef PG_SERVER_H
#define PG_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "frame.h"

struct event_base;
struct iovec;

typedef uint64_t pg_session_id;
typedef struct pg_server pg_server;
typedef struct pg_conn pg_conn;

#define PG_SERVER_MAX_WORKERS 128
#define PG_SERVER_MAX_REACTORS 64
#define PG_SERVER_MAX_LISTENERS 8
/* Session ids carry this many bits of the boot generation (the rest is a counter). */
#define PG_SESSION_GENERATION_BITS 27

enum {
    PG_DISPATCH_ROUND_ROBIN = 1,   /* each packet to the next worker */
    PG_DISPATCH_FIXED = 2,         /* every packet of a connection to one worker */
    PG_DISPATCH_IDLE = 3,          /* each packet to the worker with least queued */
};

/* Swoole's names and meanings. Sizes in bytes, times in seconds. */
typedef struct {
    long long reactor_num;
    long long worker_num;
    long long task_worker_num;
    long long max_request;            /* 0: never recycle workers */
    long long task_max_request;
    long long dispatch_mode;
    long long max_conn;
    long long backlog;
    int daemonize;
    char *pid_file;
    char *log_file;
    int log_level;                    /* pg_log_level */
    long long heartbeat_check_interval;   /* 0: no idle check */
    long long heartbeat_idle_time;
    int open_eof_split;
    pg_conf_bytes package_eof;
    int open_length_check;
    size_t package_max_length;
    size_t buffer_output_size;
    char *user;
    char *group;
    long long reload_timeout;         /* seconds a stopping worker gets before SIGKILL */
    char *cpu_affinity;               /* cpu_list.h; "": as started */
} pg_server_settings;

extern const pg_conf_def pg_server_conf_defs[];
extern const size_t pg_server_conf_ndefs;

/* A protocol layered on the reactor (the gateway's HTTP + WebSocket).  All
 * hooks run in the connection's reactor thread and must not block.
 *
 * Freeing: a connection is never freed during a hook, nor during anything a
 * hook or a protocol's own timer calls (pg_conn_write, pg_conn_close,
 * pg_conn_dispatch).  When one of those closes it, it is only marked closed:
 * later writes return -1, and on_close runs once the outermost hook has
 * returned, or, outside any hook, when the reactor's loop pass ends.  So a
 * protocol's state stays valid until its own on_close, and a protocol needs
 * no re-entry guard of its own. */
typedef struct {
    /* A connection was accepted (optional): start per-connection timers. */
    void (*on_open)(pg_conn *c);
    /* Bytes arrived: data is what the hook left last time followed by what
     * came since.  Return how many bytes at the front were consumed, or -1
     * to close the connection.  Consume every complete message: the bytes
     * left are kept by the engine and offered again, with what arrives next,
     * as soon as anything more arrives (never before: a hook that leaves an
     * incomplete header is not called again until more bytes come). */
    ssize_t (*on_data)(pg_conn *c, const char *data, size_t len);
    /* A worker sent data to this connection: frame it with pg_conn_write.
     * Return -1 to close the connection. */
    int (*on_send)(pg_conn *c, const char *data, size_t len);
    /* A worker asked to close, or (reason NULL) the server is stopping: may
     * write a last message (a close frame); the engine closes after it, once
     * the output is written. */
    void (*on_shutdown)(pg_conn *c, const char *reason, size_t len);
    /* A worker asked whether the peer is still there (optional): send what
     * makes a live peer answer (a WebSocket ping); the answer reaches the
     * worker as the protocol chooses to dispatch it. */
    void (*on_probe)(pg_conn *c);
    /* The connection is going away (closed, or closed gracefully and only
     * draining what the peer still sends): free the protocol state.  Called
     * once, never while another hook of the connection runs; no hook runs
     * after it. */
    void (*on_close)(pg_conn *c);
    void *arg;
} pg_protocol;

typedef struct {
    pg_frame_settings frame;          /* used when protocol is NULL */
    const pg_protocol *protocol;      /* NULL: frame packets per frame */
    /* 0: the server's dispatch_mode.  A listener whose requests carry their
     * own ids (an internal port) may spread one busy connection's packets
     * over every worker with PG_DISPATCH_ROUND_ROBIN or PG_DISPATCH_IDLE. */
    int dispatch_mode;
    /* 0: the listener's connections count toward max_conn.  > 0: they have
     * this limit of their own instead, kept free of max_conn, so browsers
     * filling a node cannot lock out its consumer and proxy links. */
    long long max_conn;
    /* 0: what a worker sends is written at once.  1: what workers send to a
     * connection during one pass of its reactor's loop goes out in one
     * write: for a listener whose few connections carry many replies each
     * (an internal port), not for browsers, which get one message a pass. */
    int batch_output;
    /* With PG_DISPATCH_ROUND_ROBIN, 1 deals reads instead of packets: the
     * packets of one read all go to the next worker.  A pipelined burst then
     * reaches one worker whole, which can batch its work (one routing task
     * for all its orders) where every worker would get a sliver of it. */
    int round_robin_reads;
    /* Optional, with PG_DISPATCH_ROUND_ROBIN: the worker that had best take
     * this packet (say, the home worker of the session it is for, which
     * would otherwise be handed the work by the worker that got it), or -1
     * for the round robin's turn.  A preference, never a route: the packet
     * must be handled right by any worker.  Called in reactor threads, for
     * every packet, on untrusted bytes: quick, thread-safe, bounded. */
    int (*prefer_worker)(const char *packet, size_t len, void *arg);
    void *prefer_worker_arg;
    /* 1: the workers accept and serve this listener's connections
     * themselves, with no reactor thread between (Swoole's SWOOLE_BASE
     * mode): a request and its reply each cross one process less, but a
     * connection dies with its worker.  For links whose peer reconnects and
     * owns its retries (the proxy's gateways); framed, no protocol hooks,
     * no idle check; dispatch_mode and batch_output do not apply. */
    int direct;
} pg_listen_options;

/* A daemon's "workers accept" setting (pg_listen_options.direct), one of
 * PG_DIRECT_CHOICES.  auto: on for a node of at most 2 workers, where a
 * connection's requests all landing on the one worker that accepted it
 * leaves no core idle; with more workers that one worker would cap the
 * link. */
enum { PG_DIRECT_OFF, PG_DIRECT_ON, PG_DIRECT_AUTO };
#define PG_DIRECT_CHOICES "false|true|auto"
int pg_direct_wanted(int setting, long long worker_num);

typedef struct {
    /* In workers and task workers (LaravelS's WorkerStart / WorkerStop). */
    void (*on_start)(pg_server *s, int worker_id);
    void (*on_stop)(pg_server *s, int worker_id);
    /* In the manager, after a worker or task worker died abnormally. */
    void (*on_error)(pg_server *s, int worker_id, pid_t pid, int exit_code, int signal);
    /* In workers. */
    void (*on_connect)(pg_server *s, pg_session_id session, int listener, const char *peer);
    void (*on_receive)(pg_server *s, pg_session_id session, int listener,
                       const char *data, size_t len);
    void (*on_close)(pg_server *s, pg_session_id session, int listener);
    void (*on_finish)(pg_server *s, int64_t task_id, const char *data, size_t len);
    /* In workers: a message from another worker (pg_server_send_message). */
    void (*on_pipe_message)(pg_server *s, int from_worker, const char *data, size_t len);
    /* In task workers: may call pg_server_finish once to answer. */
    void (*on_task)(pg_server *s, int64_t task_id, int from_worker, const char *data, size_t len);
    /* In the master, once the server runs, and when it begins to stop (before
     * the workers are told); may block briefly. */
    void (*on_master_start)(pg_server *s);
    void (*on_master_stop)(pg_server *s);
} pg_server_callbacks;

/* ---- setting up (before pg_server_start) ---- */

/* name: program name used in process titles and logs ("pushgate-gateway"). */
pg_server *pg_server_new(const char *name, const pg_server_settings *settings,
                         const pg_server_callbacks *callbacks);
void pg_server_free(pg_server *s);
/* Options from the settings' open_eof_split / package_eof / open_length_check. */
pg_listen_options pg_listen_options_from_settings(const pg_server_settings *settings);
/* Binds host:port now (so "address in use" is a start-up error). Returns the
 * listener index, or -1 with a logged reason. */
int pg_server_listen(pg_server *s, const char *host, int port, const pg_listen_options *opts);
/* Port actually bound (useful with port 0). */
int pg_server_listener_port(const pg_server *s, int listener);
/* Boot generation, the high part of session ids (default: from the clock). */
void pg_server_set_generation(pg_server *s, uint32_t generation);
/* Application data shared by the callbacks. */
void pg_server_set_data(pg_server *s, void *data);
void *pg_server_data(const pg_server *s);

/* Lifecycle listeners (any number, run in order after the callbacks). */
typedef enum { PG_HOOK_WORKER_START, PG_HOOK_WORKER_STOP, PG_HOOK_WORKER_ERROR } pg_hook;
typedef void (*pg_hook_fn)(pg_server *s, int worker_id, void *arg);
int pg_server_add_hook(pg_server *s, pg_hook hook, pg_hook_fn fn, void *arg);

/* Custom events (LaravelS's Event::fire): listeners run in task workers. */
typedef void (*pg_event_listener_fn)(pg_server *s, const char *name, const char *data,
                                     size_t len, void *arg);
int pg_server_add_event_listener(pg_server *s, const char *name, pg_event_listener_fn fn,
                                 void *arg);

/* Runs the server: forks, serves, and returns 0 after a clean stop, or 1 when
 * it could not start or stopped on an error. */
int pg_server_start(pg_server *s);

/* ---- in workers ---- */

/* Queue data for a session (framed by its listener). 0, or -1 (not a worker,
 * bad session id, too large, IPC queue full). Data for a session that has
 * closed meanwhile is dropped by the reactor. */
int pg_server_send(pg_server *s, pg_session_id session, const void *data, size_t len);
/* What pg_server_send and pg_server_close queued goes to the master now,
 * not at the end of the loop pass.  0 when all of it is in the kernel's
 * hands (it reaches the master even if this process dies next), -1 when
 * some still waits for room. */
int pg_server_flush(pg_server *s);
/* Close a session after its queued output; reason is handed to the protocol
 * (for WebSocket: a close code and text). */
int pg_server_close(pg_server *s, pg_session_id session, const char *reason, size_t len);
/* Ask the session's protocol to make its peer answer (on_probe).  0, or -1
 * (as pg_server_send; also: a direct listener's session, which has no
 * protocol).  A protocol without on_probe ignores it. */
int pg_server_probe(pg_server *s, pg_session_id session);
/* Hand data to a task worker (least busy one when dst_task_worker < 0).
 * Returns the task id (> 0), or -1. */
int64_t pg_server_task(pg_server *s, const void *data, size_t len, int dst_task_worker);
/* Hand data to another worker's on_pipe_message (Swoole's sendMessage), so
 * that state a worker keeps for its sessions stays with that worker.
 * 0, or -1 (dst is this worker or out of range, queue full). */
int pg_server_send_message(pg_server *s, int dst_worker, const void *data, size_t len);
/* The worker that sees a session's connect and close (its home worker; in
 * dispatch mode 2 every packet of the session). */
int pg_server_session_worker(const pg_server *s, pg_session_id session);
/* Fire a custom event; its listeners run in a task worker. */
int pg_server_fire_event(pg_server *s, const char *name, const void *data, size_t len);

/* ---- in task workers ---- */
int pg_server_finish(pg_server *s, const void *data, size_t len);

/* ---- anywhere ---- */
typedef enum { PG_ROLE_MASTER, PG_ROLE_MANAGER, PG_ROLE_WORKER, PG_ROLE_TASK } pg_role;
pg_role pg_server_role(const pg_server *s);
/* Worker or task worker id of this process (task workers: 0..task_worker_num-1), or -1. */
int pg_server_worker_id(const pg_server *s);
/* The calling process's event loop (workers, task workers). */
struct event_base *pg_server_event_base(const pg_server *s);
const pg_server_settings *pg_server_settings_of(const pg_server *s);
/* Which reactor thread holds a session. */
int pg_server_session_reactor(const pg_server *s, pg_session_id session);
/* Stop the whole server (SIGTERM to the master) / reload workers (SIGUSR1). */
int pg_server_shutdown(pg_server *s);
int pg_server_reload(pg_server *s, int task_workers_only);

enum { PG_WORKER_IDLE = 0, PG_WORKER_BUSY, PG_WORKER_STOPPING, PG_WORKER_EXITED };

typedef struct {
    pid_t pid;
    int state;
    uint64_t requests;       /* packets or tasks handled by this process */
    uint64_t queued;         /* packets or tasks sent to it, not yet handled */
    uint64_t respawns;
} pg_worker_stats;

typedef struct {
    int64_t start_time;      /* unix seconds */
    pid_t master_pid, manager_pid;
    uint64_t connections;    /* open now */
    uint64_t accepted, closed, refused;
    uint64_t packets_in, packets_out, bytes_in, bytes_out;
    uint64_t task_queue;     /* tasks handed out and not finished */
    uint64_t tasks_done;
    uint64_t sessions_per_reactor[PG_SERVER_MAX_REACTORS];
    int reactor_num, worker_num, task_worker_num;
    pg_worker_stats workers[PG_SERVER_MAX_WORKERS];
    pg_worker_stats task_workers[PG_SERVER_MAX_WORKERS];
} pg_server_stats_t;

/* A snapshot of the node's counters, from any process. */
void pg_server_stats(const pg_server *s, pg_server_stats_t *out);

/* ---- for protocol hooks, in reactor threads ---- */
pg_session_id pg_conn_session(const pg_conn *c);
int pg_conn_listener(const pg_conn *c);
int pg_conn_reactor(const pg_conn *c);
pg_server *pg_conn_server(const pg_conn *c);
/* The listener's protocol (its arg carries the protocol's configuration). */
const pg_protocol *pg_conn_protocol(const pg_conn *c);
/* Per-connection protocol state. */
void *pg_conn_get_state(const pg_conn *c);
void pg_conn_set_state(pg_conn *c, void *state);
/* Hand one complete message to a worker (as on_receive). 0 or -1. */
int pg_conn_dispatch(pg_conn *c, const char *data, size_t len);
/* As pg_conn_dispatch, but the message may wait up to within_us in the
 * reactor thread for others to the same worker (pg_ipc_send_within): for
 * messages many connections send one by one and no one waits on, so the
 * worker wakes once for many.  0: as pg_conn_dispatch. */
int pg_conn_dispatch_within(pg_conn *c, const char *data, size_t len, unsigned within_us);
/* Write bytes to the socket (queued if it is full). 0, or -1 when the
 * connection was closed for going over buffer_output_size. */
int pg_conn_write(pg_conn *c, const void *data, size_t len);
/* The same for n pieces in one system call; iov may be changed. */
int pg_conn_writev(pg_conn *c, struct iovec *iov, int n);
/* Close at once, or (graceful) after what is queued has been written: then
 * FIN, and what the peer still sends is read and dropped until it closes,
 * for at most 2 s, so that its last reply is not destroyed by a reset. */
void pg_conn_close(pg_conn *c, int graceful);
/* Peer address "ip:port". */
const char *pg_conn_peer(const pg_conn *c, char *buf, size_t len);

#endif

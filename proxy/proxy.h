/* proxy.h - what the files of pushgate-proxy share.
 *
 * The proxy relays /chat/push-local requests from a gateway to the gateway
 * that holds the browser's connection, and the answer back.  Each file has
 * one job:
 *
 * main.c     settings, the server and its port, callbacks, start-up checks
 * request.c  what gateways send: validation, error replies, hand-off
 * target.c   one persistent connection per target node per worker: requests
 *            in flight, relaying answers, timeouts, reconnect with backoff
 * nodes.c    the live nodes of gateway_nodes: a task worker reads them, every
 *            worker keeps the last answer
 * stats.c    counters in shared memory, the periodic log line, /stats
 * metrics.c  /metrics and /healthz on metrics_port (worker 0, evhttp)
 * status.c   the proxy's row in daemon_status: worker 0 builds it, a task
 *            worker writes it, the master deletes it at a clean stop
 *
 * Workers never block: MySQL is used only in task workers (and by the
 * master once at start, which is a start-up check, and once after a clean
 * stop, to delete the status row). */
#ifndef PX_PROXY_H
#define PX_PROXY_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include "codes.h"
#include "db.h"
#include "prom.h"
#include "server.h"

struct evbuffer;


typedef struct {
    char *host;
    long long port;
    int workers_accept;
    long long nodes_refresh_ms;
    long long reply_timeout_ms;
    long long handoff_timeout_ms;
    long long max_in_flight;
    long long stats_interval;
    char *metrics_host;
    long long metrics_port;         /* 0: no metrics port */
} px_settings;

/* What became of a forward, by target node (stats.c px_stats_outcome). */
enum {
    PX_OUT_DELIVERED, PX_OUT_GONE, PX_OUT_REFUSED, PX_OUT_UNREACHABLE, PX_OUT_BUSY, PX_OUTCOMES
};
/* Target nodes counted apart; the rest share one row, "other". */
#define PX_NODES_MAX 64
typedef struct {
    _Atomic int state;              /* 0 free, 1 being claimed, 2 in use */
    char node[72];                  /* "ip:port", set before state 2 */
    _Atomic uint64_t n[PX_OUTCOMES];
} px_node_counters;

/* Totals since start, shared by every process of the proxy. */
typedef struct {
    _Atomic uint64_t requests;      /* valid push-local requests taken in */
    _Atomic uint64_t forwarded;     /* written to a target node */
    _Atomic uint64_t delivered;     /* the target answered code 0 */
    _Atomic uint64_t gone;          /* the target answered gone (session closed) */
    _Atomic uint64_t refused;       /* the target answered another error */
    _Atomic uint64_t unreachable;   /* not registered, down, or no answer in time */
    _Atomic uint64_t busy;          /* past max_in_flight for the target */
    _Atomic uint64_t bad_requests;  /* malformed requests answered with an error */
    px_node_counters nodes[PX_NODES_MAX + 1];   /* the last: other */
    pg_prom_hist answer_time;       /* a forward to the target node's first answer */
    pg_db_shared mysql_where;       /* the server of mysql_hosts last reached, failovers */
} px_counters;

typedef struct {
    px_settings cfg;
    pg_server_settings server_cfg;
    pg_db_settings mysql;
    pg_db_host_list mysql_hosts;    /* the servers mysql names, checked at start */
    pg_server *server;
    px_counters *counters;
    int metrics_fd;                 /* the metrics port's socket (-1: none), bound by the master */
    pg_db *db;                      /* task workers only */
} px_context;

extern px_context px;

#define PX_COUNT(field) atomic_fetch_add_explicit(&px.counters->field, 1, memory_order_relaxed)

/* request.c (workers) */
void px_request(pg_session_id session, const char *data, size_t len);
/* Sends {"code","msg","msg_id","req_id"} plus extra (may be NULL) to session;
 * msg_id and req_id may be NULL (req_id is then left out). */
void px_answer(pg_session_id session, int code, const char *msg, json_t *msg_id, json_t *req_id,
               json_t *extra);

/* target.c (workers) */
void px_targets_start(void);
void px_targets_stop(void);
/* Forwards body (a /chat/push-local object's text without its closing
 * brace: req_id and the brace are added; drained) to ip:port; the target's
 * answer, or unreachable / busy, goes to session with req_id and msg_id
 * (both borrowed). */
void px_forward(const char *ip, int port, struct evbuffer *body, pg_session_id session,
                json_t *req_id, json_t *msg_id);
/* Frees idle connections to nodes that are no longer up. */
void px_targets_prune(void);
/* Connections and requests in flight of this worker, for /stats. */
json_t *px_targets_json(void);

/* nodes.c */
int px_nodes_load(void);            /* master, before fork: start-up check + first list */
void px_nodes_free(void);
void px_nodes_worker_start(void);
void px_nodes_worker_stop(void);
void px_nodes_finished(const char *data, size_t len);   /* worker: a task's answer */
void px_nodes_task(void);                               /* task worker: read the table */
void px_nodes_task_stop(void);
int px_node_up(const char *ip, int port);
json_t *px_nodes_json(void);        /* "ip:port" -> state, for /stats */
size_t px_nodes_known(void);        /* worker: nodes in the last list, any state */
int px_nodes_readable(void);        /* worker: the last read of gateway_nodes worked */
const char *px_mysql_server(void);  /* the server of mysql_hosts last reached ("": none yet) */
/* Task workers: MySQL, opened on first use and, while it cannot be, again
 * at most every few seconds (NULL meanwhile; the outage is logged once).
 * After each call on it, px_task_db_done says whether it worked. */
pg_db *px_task_db(void);
void px_task_db_done(int ok);

/* stats.c */
int px_stats_create(void);
void px_stats_free(void);
void px_stats_worker_start(int worker_id);
void px_stats_worker_stop(void);
json_t *px_stats_json(void);
/* Counts a forward's outcome, in the totals and under its target node. */
void px_stats_outcome(const char *ip, int port, int outcome);
/* The outcomes' names: "delivered", "gone", ... */
extern const char *const px_outcome_names[PX_OUTCOMES];

/* metrics.c */
int px_metrics_bind(void);          /* master, before fork; 0 when metrics_port is 0 */
void px_metrics_close(void);
void px_metrics_worker_start(int worker_id);   /* worker 0 serves it */
void px_metrics_worker_stop(void);

/* status.c */
void px_status_worker_start(int worker_id);    /* worker 0 reports */
void px_status_worker_stop(void);
/* A task's data or answer: 1 when it was the status row's (and is handled). */
int px_status_task(const char *data, size_t len);
int px_status_finished(int64_t task_id, const char *data, size_t len);
/* Master, after a clean stop: deletes the row (best effort, short timeouts). */
void px_status_remove(void);

#endif

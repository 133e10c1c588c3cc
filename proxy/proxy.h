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
 *
 * Workers never block: MySQL is read only in task workers (and once in the
 * master at start, which is a start-up check). */
#ifndef PX_PROXY_H
#define PX_PROXY_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include "codes.h"
#include "db.h"
#include "server.h"

struct evbuffer;


typedef struct {
    char *host;
    long long port;
    long long nodes_refresh_ms;
    long long reply_timeout_ms;
    long long handoff_timeout_ms;
    long long max_in_flight;
    long long stats_interval;
} px_settings;

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
} px_counters;

typedef struct {
    px_settings cfg;
    pg_server_settings server_cfg;
    pg_db_settings mysql;
    pg_server *server;
    px_counters *counters;
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

/* stats.c */
int px_stats_create(void);
void px_stats_free(void);
void px_stats_worker_start(int worker_id);
void px_stats_worker_stop(void);
json_t *px_stats_json(void);

#endif

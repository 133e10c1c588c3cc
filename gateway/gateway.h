/* gateway.h - what the files of pushgate-gateway share.
 *
 * main.c      settings, the server and its two ports, callbacks
 * node.c      the node's row in gateway_nodes: register, heartbeat, sweep, remove
 * rejoin.c    workers: after the node was swept while alive, only sessions
 *             that answer a ping get their rows back
 * session.c   browser sessions: shared table of the node's sessions, and the
 *             home worker's record of each (uuid, messages awaiting ACK)
 * browser.c   what browsers send: WebSocket events and plain HTTP requests
 * internal.c  the internal port: work orders from the consumer, pushes from the proxy
 * tasks.c     task workers: everything that talks to MySQL
 * batch.c     workers: tasks leave here; requests of one loop pass travel as one task
 * route.c     workers: routing requests, batched
 * store.c     workers: what reaches nobody goes to offline_messages, batched
 * awaiting.c  workers: what waits for a task worker's answer, swept when it never comes
 * reply.c     JSON the gateway writes: events for browsers, reply frames, error codes
 * proxy_link.c  a worker's connection to the proxy, for sessions on other nodes
 * metrics.c   /metrics in the Prometheus text format, and the latency histograms
 * http.c      plain HTTP on the public and admin ports: /healthz, /stats,
 *             /metrics, /admin/cluster, static files
 * admin.c     operators: who may read the node's figures, and the cluster view
 * status.c    what the node says about itself: /stats, recent history, and
 *             its row in daemon_status
 *
 * Work flows worker -> task worker -> worker as JSON objects with an "op";
 * what a worker needs back travels inside the task, so no worker keeps a
 * table of tasks in flight. */
#ifndef GW_GATEWAY_H
#define GW_GATEWAY_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "token.h"
#include "codes.h"
#include "db.h"
#include "idmap.h"
#include "log.h"
#include "prom.h"
#include "record.h"
#include "server.h"
#include "shm_table.h"
#include "ws.h"

enum { GW_LISTENER_PUBLIC = 0, GW_LISTENER_INTERNAL = 1, GW_LISTENER_ADMIN = 2 };


typedef struct {
    char *host;
    long long port;
    char *internal_host;
    long long internal_port;
    long long internal_max_conn;
    int internal_workers_accept;
    int internal_eof;              /* "\r\n\r\n"-terminated frames instead of length prefix */
    char *advertised_ip;
    char *ws_path;
    char *jwt_secret;
    char *jwt_secret_previous;
    char *allowed_origins;
    char *static_dir;
    char *admin_host;
    long long admin_port;          /* 0: no admin listener */
    char *admin_secret;            /* "": only admin JWTs open the public port's figures */
    long long auth_timeout_ms;
    long long ack_timeout;
    long long mysql_wait_ms;
    long long max_pending_acks;
    size_t max_pending_bytes;
    long long header_timeout_ms;
    size_t max_header_size;
    size_t max_incomplete_bytes;
    long long browser_input_wait_us;
    long long push_record_slots;
    long long route_cache_entries;
    char *redis_host;
    long long redis_port;
    char *redis_sentinels;         /* "": redis_host */
    char *redis_master_name;
    long long node_heartbeat_interval;
    long long node_dead_after;
    char *proxy;                   /* "host:port[,host:port...]", tried in order */
    char *chat_token;              /* app token this node presents when it relays chat */
    long long browser_rate;        /* messages per second per connection (limits.c) */
    long long browser_burst;
    long long chat_per_minute;     /* chat messages per minute per connection */
    size_t chat_max_bytes;         /* of a chat message's text */
    long long max_tabs_per_uuid;   /* connections of one uuid on this node (0: any) */
    long long max_offline_per_uuid;   /* stored messages a routed one may join (0: any) */
    long long app_rate;            /* work orders per second per chat_token on this node */
    long long app_burst;
    long long flood_penalty_s;     /* a uuid closed for flooding is refused this long */
} gw_settings;

/* The node's recent history (status.c): worker 0 samples the counters and
 * the latency histograms every GW_STATUS_STEP_MS into a ring. */
#define GW_STATUS_STEP_MS 2000
#define GW_HISTORY_STEPS 150           /* 5 minutes */
#define GW_LATENCY_WINDOW_STEPS 30     /* latency percentiles over 1 minute */
enum { GW_SERIES_IN, GW_SERIES_PUSHED, GW_SERIES_FORWARDED, GW_SERIES_STORED, GW_SERIES_ACKED,
       GW_SERIES_COUNT };
typedef struct {
    _Atomic uint64_t at_ms;                        /* wall clock; 0: never taken */
    _Atomic uint64_t count[GW_SERIES_COUNT];       /* the counters then */
    _Atomic uint64_t intake_to_push[PG_PROM_BUCKETS + 1], push_to_ack[PG_PROM_BUCKETS + 1];
} gw_sample;
typedef struct {
    _Atomic uint64_t taken;                        /* samples ever taken */
    gw_sample ring[GW_HISTORY_STEPS + 1];          /* one spare: the one being written */
} gw_history;

#define GW_REDIS_SERVER_WORDS 34           /* 272 bytes: a Redis address (redis_sentinel.h) */

/* Counters for /stats and /metrics, in shared memory. */
typedef struct {
    _Atomic uint64_t messages_in;      /* work orders and chats taken in */
    _Atomic uint64_t pushed;           /* events written to browsers */
    _Atomic uint64_t relayed;          /* pushes handed to the session's home worker */
    _Atomic uint64_t forwarded;        /* handed to the proxy */
    _Atomic uint64_t stored;           /* written to offline_messages */
    _Atomic uint64_t acked;
    _Atomic uint64_t redelivered;      /* offline messages sent at connect */
    _Atomic uint64_t repeats;          /* pushes not sent: the session had that id from this node */
    _Atomic uint64_t auth_failures;
    _Atomic uint64_t limited;          /* browsers refused or closed by limits.c's limits */
    _Atomic uint64_t inbox_refused;    /* routed messages not stored: max_offline_per_uuid */
    _Atomic int mysql_ok;              /* last MySQL call of any task worker worked */
    _Atomic uint64_t mysql_errors;
    _Atomic uint64_t mysql_overdue;    /* requests answered 10503 after mysql_wait_ms (awaiting.c) */
    pg_db_shared mysql_where;          /* the server of mysql_hosts last reached, failovers */
    _Atomic int draining;              /* the node is stopping: route around its sessions */
    _Atomic uint64_t swept_at_ms;      /* pg_now_ms() when the node found itself swept (rejoin.c) */
    _Atomic int redis_ok;              /* the route feed's link is up (route_feed.c) */
    /* "host:port" the route feed's listener uses now, NUL-padded ("": down); one
     * writer (worker 0), readers by redis_server_seq (route_feed.c) */
    _Atomic uint64_t redis_server_seq;
    _Atomic uint64_t redis_server[GW_REDIS_SERVER_WORDS];
    /* latencies (metrics.c), in every process */
    pg_prom_hist intake_to_push;       /* a message taken in to its push, on this node */
    pg_prom_hist push_to_ack;          /* a push to the browser's ACK of it */
    pg_prom_hist route_lookup;         /* a route task's round trip, worker to worker */
    pg_prom_hist task_wait;            /* a task's wait for a task worker to start it */
    gw_history history;                /* status.c */
} gw_counters;

typedef struct {
    gw_settings cfg;
    pg_server_settings server_cfg;
    pg_db_settings mysql;
    pg_db_host_list mysql_hosts;   /* the servers mysql names, checked at start */
    gw_ws_config ws;
    gw_ws_config ws_admin;         /* the admin listener's: no WebSocket */
    pg_server *server;
    pg_table *sessions;            /* session id (hex) -> uuid, connected_at */
    int col_uuid, col_connected_at;
    gw_counters *counters;
    char node_ip[64];
    char node_id[96];              /* "ip:internal_port" */
    uint32_t generation;           /* as the engine uses it (masked) */
    long long boot_generation;     /* as stored in gateway_nodes */
    pg_db *db;                     /* task workers only */
} gw_context;

extern gw_context gw;

/* node.c */
int gw_node_register(void);        /* master, before fork */
void gw_node_draining(void);       /* master, when it begins to stop */
void gw_node_unregister(void);     /* master, after stop */
void gw_node_start_heartbeat(void);/* task worker 0 */

/* handoff.c: workers.  An internal request that asks for it ("handoff")
 * is answered a second time once every browser it reached has ACKed it or
 * it is stored.  A waiter names the ticket of such a request: a push that
 * carries one reports to it, from whatever worker. */
typedef struct {
    int worker;
    uint64_t ticket;               /* 0: nothing waits */
} gw_waiter;
/* Messages between workers start with one of these bytes. */
enum { GW_PIPE_PUSH = 'P', GW_PIPE_REDELIVER = 'R' };
/* master, before fork: room for capacity open tickets, in shared memory.
 * A ticket is open from a request until its final reply; senders keep far
 * fewer requests than this in flight. */
#define GW_HANDOFF_TICKETS 16384
int gw_handoff_create(uint32_t capacity);
void gw_handoff_destroy(void);
void gw_handoff_start(void);
void gw_handoff_stop(void);
/* A ticket (0: none could be made) for a request answered on reply_to. */
uint64_t gw_handoff_open(pg_session_id reply_to, json_t *msg_id, json_t *req_id);
/* One more target to wait for: the waiter its push carries.  home: the
 * worker that will settle it (the session's home worker), -1: none. */
gw_waiter gw_handoff_expect(uint64_t ticket, int home);
/* The first reply, text (a JSON object, taken), to the request's sender
 * `to`: held in the ticket for a moment, and sent alone by whichever worker
 * settles the last target, or at the end of the hold with "pending" (the
 * targets still waiting) put before its closing '}'; then the final one
 * follows.  A ticket 0: sent now.
 * Nothing is sent for a ticket answered already (its worker was replaced
 * meanwhile, gw_handoff_start), and a ticket one of whose targets failed
 * gets its final error instead. */
void gw_handoff_reply(uint64_t ticket, pg_session_id to, char *text, size_t len);
/* The first reply is an error: the sender retries it all, nothing waits.
 * -1: send no reply, the ticket was answered already. */
int gw_handoff_drop(uint64_t ticket);
/* outcome: GW_PUSH_ACKED, GW_PUSH_STORED, or an error code. */
void gw_handoff_settled(uint64_t ticket, int outcome);
void gw_waiter_settle(const gw_waiter *w, int outcome);

/* limits.c: a token bucket (all zero: full); 1: taken, 0: over the rate
 * (per_second <= 0: no limit). */
typedef struct {
    double tokens;
    int64_t at_ms;
} gw_bucket;
int gw_bucket_take(gw_bucket *b, double per_second, double burst, int64_t now_ms);
/* master, before fork: room for capacity apps' and chat senders' buckets. */
#define GW_APPS_MAX 1024
int gw_limits_create(uint32_t capacity);
void gw_limits_destroy(void);
void gw_limits_start(void);    /* workers */
void gw_limits_stop(void);
/* 1: chat_token may send one more request now (or app_rate is 0). */
int gw_app_within_rate(const char *chat_token, int64_t now_ms);
/* 1: sender (a uuid) may send one more chat message (or chat_per_minute is 0). */
int gw_chat_within_rate(const char *sender, int64_t now_ms);
/* master, before fork: room for capacity uuids cut off for flooding. */
#define GW_PENALTIES_MAX 4096
int gw_penalties_create(uint32_t capacity);
void gw_penalties_destroy(void);
/* uuid was closed for flooding: refused for flood_penalty_s from now. */
void gw_penalize(const char *uuid, int64_t now_ms);
int gw_penalized(const char *uuid, int64_t now_ms);

/* session.c */
int gw_sessions_create(uint32_t capacity);
void gw_session_key(pg_session_id session, char key[17]);
void gw_client_id(pg_session_id session, char *out, size_t len);
/* The same for a session of the node at ip:port. */
void gw_client_id_of(const char *ip, long long port, pg_session_id session, char *out, size_t len);
int gw_client_id_parse(const char *client_id, char *ip, size_t iplen, int *port,
                       pg_session_id *session);
/* Whether session is open on this node and belongs to uuid (any process). */
int gw_session_is(pg_session_id session, const char *uuid);
void gw_session_worker_start(void);
void gw_session_worker_stop(void);
void gw_session_open(pg_session_id session, const char *uuid);
int gw_session_authenticate(pg_session_id session, const char *uuid);
/* ONLINE went to the session: the pushes held until then go now. */
void gw_session_online(pg_session_id session);
const char *gw_session_uuid(pg_session_id session);   /* NULL: not known or not authenticated */
int gw_session_known(pg_session_id session);
void gw_session_closed(pg_session_id session);
/* The answer to a batch of registrations: one result per session. */
/* A registration's or an offline page's answer (a record, session_task.c). */
void gw_session_registered(const char *data, size_t len);
/* An unregistration's answer (a record). */
void gw_session_unregistered(const char *data, size_t len);
/* Push an event to a local session from any worker; payload is the event's
 * JSON text with its id.  from_offline: the message is in offline_messages.
 * w (NULL: none) hears when the browser ACKs it or it is stored (handoff.c). */
void gw_push(pg_session_id session, const char *uuid, const char *id, const char *payload,
             int from_offline, const gw_waiter *w);
/* A push relayed by another worker (GW_PIPE_PUSH; data after that byte). */
void gw_session_pipe_message(const char *data, size_t len);
/* 1: id was pushed to this session (or stored for it) and this completes
 * it; 0: an id it never had, or one acknowledged already; -1: no such
 * session. */
int gw_session_ack(pg_session_id session, const char *id);
/* The session's message bucket (limits.c) on its home worker; NULL: not known. */
gw_bucket *gw_session_bucket(pg_session_id session);
/* On its home worker: the session is sent what is stored for its uuid, as
 * at a connect (what it has already is not pushed again). */
void gw_session_send_stored(pg_session_id session);

/* On its home worker: the session's online_clients row again, and what is
 * stored for it, without a new ONLINE (rejoin.c). */
void gw_session_register_again(pg_session_id session);

/* rejoin.c: workers.  After the node was swept while alive, a session is
 * registered again once heard from (a pong, any message); one silent for
 * 10 s is closed. */
void gw_rejoin_start(void);
void gw_rejoin_stop(void);
void gw_rejoin_heard(pg_session_id session);
void gw_rejoin_forget(pg_session_id session);

/* redeliver.c: workers.  Messages other nodes stored for this node's
 * browsers because the path here was broken ("redeliveries"). */
void gw_redeliver_start(void);
void gw_redeliver_stop(void);
/* The answer to GW_TASK_REDELIVERIES (a record). */
void gw_redeliver_answered(const char *data, size_t len);
void gw_redeliver_pipe_message(const char *data, size_t len);

/* uuid_index.c: this node's sessions of each uuid, in shared memory (any
 * process; created before fork).  A uuid's row names at most
 * GW_INDEX_SESSIONS of them. */
#define GW_INDEX_SESSIONS 4
int gw_uuid_index_create(uint32_t capacity);
void gw_uuid_index_destroy(void);
/* -1: uuid has max_tabs sessions on this node already (0: no limit), and
 * session is not added; 0: added, or the index is full (then routed
 * through MySQL only). */
int gw_uuid_index_add(const char *uuid, pg_session_id session, long long max_tabs);
void gw_uuid_index_remove(const char *uuid, pg_session_id session);
/* Up to max sessions of uuid into sessions; how many. */
size_t gw_uuid_index_get(const char *uuid, pg_session_id *sessions, size_t max);

/* push_record.c: which ids this node pushed to which session, recently,
 * in shared memory (any process; created before fork), so that no session
 * gets one id twice from this node.  slots: how many entries it holds. */
enum { GW_PUSH_NONE = 0, GW_PUSH_SENT, GW_PUSH_ACKED, GW_PUSH_STORED, GW_PUSH_QUEUED };
int gw_push_record_create(uint32_t slots);
void gw_push_record_destroy(void);
int gw_push_record_get(pg_session_id session, const char *id);
void gw_push_record_set(pg_session_id session, const char *id, int state);
/* An entry's key, for gw_push_record_promote: state from becomes to. */
uint64_t gw_push_record_key(pg_session_id session, const char *id);
void gw_push_record_promote(uint64_t key, int from, int to);
/* gw_push_record_set by key. */
void gw_push_record_set_key(uint64_t key, int state);

/* A push, as a worker sends it to the master: GW_PUSH_MARK, the push
 * record key (8 bytes, host order), then the browser's message.  The
 * reactor thread that writes it makes the record SENT (ws.c).  Every other
 * message to a browser starts with '{'. */
#define GW_PUSH_MARK 0x01
#define GW_PUSH_HEADER 9
void gw_push_header(char *out, uint64_t key);
/* 1 and the key when msg is a push (the message then starts at
 * msg + GW_PUSH_HEADER), else 0. */
int gw_push_message(const char *msg, size_t len, uint64_t *key);

/* route_cache.c: a uuid's sessions on other nodes, as a lookup answered,
 * in shared memory (any process; created before fork); trusted only while
 * the route feed works (route_feed.c). */
#define GW_ROUTE_TARGETS 4
typedef struct {
    int n;                         /* 0: none on another node */
    struct {
        char ip[64];
        int port;
        pg_session_id session;
    } t[GW_ROUTE_TARGETS];
} gw_routes;
typedef struct {
    uint32_t epoch;
    uint64_t announcements;
    int trusted;
} gw_route_mark;
typedef struct {
    _Atomic uint64_t hits, misses, fills, invalidations, evictions;
    _Atomic uint64_t flushes;      /* every entry dropped at once */
    int trusted;                   /* in a snapshot: the feed works now */
} gw_route_cache_stats;
/* capacity 0: no cache. */
int gw_route_cache_create(uint32_t capacity);
void gw_route_cache_destroy(void);
/* 1 with uuid's routes when the cache knows them and may be trusted. */
int gw_route_cache_get(const char *uuid, gw_routes *out);
/* Taken before a lookup; its answer is put only if nothing changed since. */
gw_route_mark gw_route_cache_mark(void);
void gw_route_cache_put(const char *uuid, const gw_routes *routes, gw_route_mark mark);
/* uuid's sessions changed (an announcement, a push that found one gone). */
void gw_route_cache_forget(const char *uuid);
/* Every entry goes (the feed came back, or a note could not be read:
 * announcements may be lost). */
void gw_route_cache_flush(void);
/* The feed just spoke: the cache may be trusted for a while. */
void gw_route_cache_feed_alive(void);
/* The feed is down: not trusted from now on. */
void gw_route_cache_feed_lost(void);

/* route_feed.c: workers.  Registrations and unregistrations announced to
 * every node's route cache through Redis (redis_host, or the primary the
 * redis_sentinels name). */
void gw_route_feed_start(void);
void gw_route_feed_stop(void);
/* Redis is set (redis_host or redis_sentinels): there is a feed to follow. */
int gw_route_feed_configured(void);
/* "host:port" of the server worker 0's listener uses now ("" while down),
 * from any process. */
void gw_route_feed_server(char *out, size_t len);
/* uuid's online_clients rows changed (after MySQL has them); here: it has a
 * browser on this node now, which the note names (route_note.h). */
void gw_route_feed_announce(const char *uuid, bool here);
void gw_route_cache_stats_get(gw_route_cache_stats *out);

/* browser.c */
void gw_browser_message(pg_session_id session, const char *data, size_t len);

/* http.c: workers.  An 'H' message (ws.h) without its first byte; trusted:
 * it came through the admin listener, so no operator token is asked for. */
void gw_http_request(pg_session_id session, const char *data, size_t len, int trusted);
/* The whole response to an HTTP request, which closes the connection. */
void gw_http_reply(pg_session_id session, int status, const char *type, const char *body,
                   size_t len);
/* The same for a request answered after a task: head, it was a HEAD. */
void gw_http_reply_later(pg_session_id session, int head, int status, const char *type,
                         const char *body, size_t len);

/* admin.c.  Operators: an admin_secret or a JWT with "admin": true. */
enum { GW_ADMIN_OK = 0, GW_ADMIN_NO_TOKEN = 401, GW_ADMIN_NOT_ADMIN = 403 };
/* authorization: the request's Authorization header value (NULL: none). */
int gw_admin_authorize(const char *authorization, size_t len);
/* GET (or HEAD: head) /admin/cluster: asks a task worker for the cluster's rows. */
void gw_admin_cluster(pg_session_id session, int head);
/* task workers: the answer to a cluster task (a record, layout in
 * admin.c): 0, or -1 when the task is malformed. */
int gw_admin_cluster_rows(const char *task, size_t len, pg_rec_writer *answer);
/* workers: a cluster task's answer, sent to its HTTP session. */
void gw_admin_cluster_answered(const char *data, size_t len);
/* The answer read: 0, or -1 when malformed (then not ok, with an error).
 * nodes and daemons are the JSON rows (decref them). */
typedef struct {
    pg_session_id session;
    int head, ok;
    const char *error;             /* points into the answer */
    json_t *nodes, *daemons;
} gw_cluster_answer;
int gw_admin_cluster_read(const char *data, size_t len, gw_cluster_answer *a);

/* order.c: workers.  A work order or a chat message between its intake
 * and its answer, as a record: from intake to reply on the steady path
 * (every route known, every target a session of this node), and while a
 * route task looks up its uuids.  Where it goes on to another node or the
 * store, route.c's pipeline carries it as JSON. */
typedef struct {
    char uuid[PG_UUID_MAX + 1];
    char id[96];                   /* the event's id */
    char *payload;                 /* the event's JSON text (owned) */
    int early_n;                   /* sessions of this node it was pushed to at once */
    pg_session_id early[GW_INDEX_SESSIONS];
} gw_item;

enum { GW_ORDER_WORKSHEET, GW_ORDER_CHAT };
typedef struct {
    int kind;
    pg_session_id sender;          /* the consumer's link, or the chatting browser */
    char msg_id[96];
    char *chat_token;              /* work orders (owned); chat: NULL */
    char to[PG_UUID_MAX + 1];      /* chat: the recipient */
    uint64_t ticket;               /* the hand-off ticket (handoff.c); 0: none */
    uint64_t t_in;                 /* its intake time while it waits for a task (metrics.c) */
    size_t n;
    gw_item items[];
} gw_order;

/* What the sender of an order hears (gw_internal_answer). */
typedef struct {
    int kind;
    pg_session_id sender;
    const char *msg_id, *to;
    uint64_t ticket;
    int code;
    long long delivered, forwarded, stored;
} gw_outcome;

/* An order after its route is known (route.c's steps 4 to 7): what its
 * sender will hear. */
typedef struct {
    gw_order *order;               /* owned */
    int code;
    long long delivered, forwarded, stored;
} gw_routed;

/* An item of a routed order for a session on another node (the proxy). */
typedef struct {
    uint32_t item;                 /* its index in the order */
    int port;
    char ip[64];
    char client_id[192];
} gw_remote;

/* An order of n items, all zero; NULL when out of memory. */
gw_order *gw_order_new(size_t n);
void gw_order_free(gw_order *order);
/* What the sender of the order hears, with code and no counts yet. */
gw_outcome gw_order_outcome(const gw_order *order, int code);

/* route_task.c: tasks and their answers are records (common/record.h),
 * each starting with this head.  The layouts are in route_task.c,
 * store_task.c, session_task.c and (the cluster view's) admin.c. */
enum {
    GW_TASK_ROUTE = 1, GW_TASK_ROUTED = 2, GW_TASK_STORE = 3, GW_TASK_STORED = 4,
    GW_TASK_REGISTER = 5, GW_TASK_REGISTERED = 6, GW_TASK_PAGE = 7, GW_TASK_PAGED = 8,
    GW_TASK_UNREGISTER = 9, GW_TASK_UNREGISTERED = 10, GW_TASK_ACK = 11,
    GW_TASK_REDELIVERIES = 12, GW_TASK_REDELIVER = 13, GW_TASK_TOKEN = 14,
    GW_TASK_TOKEN_CHECKED = 15, GW_TASK_CLUSTER = 16, GW_TASK_CLUSTER_ROWS = 17
};
typedef struct {
    uint8_t op;
    uint64_t t0;                   /* when the worker sent the task (histograms) */
    uint64_t t_in;                 /* the intake time of the request it serves */
} gw_task_head;
void gw_task_head_put(pg_rec_writer *w, uint8_t op, uint64_t t0, uint64_t t_in);
gw_task_head gw_task_head_get(pg_rec_reader *r);

/* Whom an order answers, as a route task carries it. */
typedef struct {
    int kind;                      /* GW_ORDER_* */
    pg_session_id sender;
    const char *msg_id, *to;
} gw_route_sender;

/* An order of a route task, as the task worker reads it: strings point
 * into the task. */
typedef struct {
    const char *chat_token;        /* NULL: a chat message */
    gw_route_sender sender;
    uint32_t n;
    const char **uuids;            /* n, any may be NULL */
} gw_route_ask;
typedef struct {
    gw_task_head head;
    uint64_t batch;
    uint32_t n;
    gw_route_ask *orders;
    const char **uuids;            /* the storage of every order's uuids */
} gw_route_task;

/* Where an item of an order goes (a route task's answer). */
enum { GW_ROUTE_LOCAL, GW_ROUTE_REMOTE, GW_ROUTE_NONE };
typedef struct {
    uint32_t item;                 /* its index in the order */
    uint8_t where;                 /* GW_ROUTE_* */
    pg_session_id session;
    int port;
    const char *ip, *client_id;    /* remote only */
} gw_route_entry;

/* The worker's side: the task (0, or -1 when out of memory). */
int gw_route_task_put(pg_rec_writer *w, uint64_t t0, uint64_t batch, gw_order *const *orders,
                      size_t n);
/* The task worker's: the task read (free it), or -1 when malformed. */
int gw_route_task_get(const char *data, size_t len, gw_route_task *t);
void gw_route_task_free(gw_route_task *t);
/* The answer: its head, then for each order of t gw_routed_order (which
 * returns where its count of entries is kept) and its entries. */
void gw_routed_begin(pg_rec_writer *w, const gw_route_task *t);
size_t gw_routed_order(pg_rec_writer *w, const gw_route_ask *a, int code);
void gw_routed_entry(pg_rec_writer *w, size_t count_at, const gw_route_entry *e);
/* The worker reads it back: 0 for a whole, well-formed answer. */
int gw_routed_check(const char *data, size_t len);
int gw_routed_head(pg_rec_reader *r, gw_task_head *head, uint64_t *batch, uint32_t *n);
/* An order's sender and code; returns its count of entries. */
uint32_t gw_routed_order_get(pg_rec_reader *r, gw_route_sender *s, int *code);
gw_route_entry gw_routed_entry_get(pg_rec_reader *r);

/* store_task.c: the store task and its answer as records (layouts there).
 * A message for offline_messages; its strings are borrowed. */
typedef struct {
    const char *uuid, *msg_id, *payload;
    uint64_t ticket;               /* the routed order it belongs to (store.c); 0: none */
    const char *hint_ip;           /* the node holding its browser, whose path broke; NULL: none */
    int hint_port;
    size_t nwaiters;
    const gw_waiter *waiters;      /* hear when it is stored (handoff.c) */
} gw_store_entry;
typedef struct {
    gw_task_head head;
    int capped;                    /* held to max_offline_per_uuid (routed orders) */
    pg_session_id keep_away;       /* not pushed to this session again; 0: none */
    uint32_t n;
    gw_store_entry *entries;       /* strings point into the task */
    gw_waiter *waiters;            /* the storage of every entry's waiters */
} gw_store_task;
/* A stored message pushed at once to a session here that registered meanwhile. */
typedef struct {
    pg_session_id session;
    gw_store_entry entry;
} gw_store_push;
typedef struct {
    uint64_t ticket;
    uint32_t items, refused;       /* refused: over max_offline_per_uuid */
} gw_store_ticket;
typedef struct {
    int code;
    uint64_t stored;
    size_t n_pushes, n_waiters, n_tickets;
    const gw_store_push *pushes;
    const gw_waiter *waiters;
    const gw_store_ticket *tickets;
} gw_stored;

/* The worker's side: a task's head, then each entry. */
size_t gw_store_task_begin(pg_rec_writer *w, int capped, pg_session_id keep_away);
void gw_store_task_entry(pg_rec_writer *w, size_t count_at, const gw_store_entry *e);
/* The task worker's: the task read (free it), or -1 when malformed. */
int gw_store_task_get(const char *data, size_t len, gw_store_task *t);
void gw_store_task_free(gw_store_task *t);
/* The answer: written (0, or -1 when out of memory), read (free it; -1:
 * malformed). */
int gw_stored_put(pg_rec_writer *w, const gw_stored *s);
int gw_stored_get(const char *data, size_t len, gw_stored *s);
void gw_stored_free(gw_stored *s);

/* session_task.c: the sessions' tasks and their answers as records
 * (layouts there).  Strings point into the record read, or, for the
 * worker's own (gw_session_ref_new, gw_ack_ref_new), into one allocation
 * with the struct: free() it. */
typedef struct {
    pg_session_id session;
    const char *uuid, *client_id;
    int again;                     /* registered before: no ONLINE again (rejoin.c) */
} gw_session_ref;
typedef struct {
    gw_task_head head;
    uint32_t n;
    gw_session_ref *sessions;
} gw_sessions_task;
typedef struct {
    const char *msg_id, *payload;
} gw_page_message;
/* A page of a session's stored messages, oldest first: asked for (session,
 * uuid, after, online) or answered. */
typedef struct {
    pg_session_id session;
    const char *uuid;
    int code, again;
    int online;                    /* ONLINE waits for this page */
    int more;                      /* a page after this one */
    int64_t after;                 /* asked: the page starts after this id; answered: its last */
    uint32_t n;
    gw_page_message *messages;
} gw_page;
typedef struct {
    gw_task_head head;             /* GW_TASK_REGISTERED or GW_TASK_PAGED */
    int task_worker;
    uint32_t n;
    gw_page *pages;
    gw_page_message *messages;     /* the storage of every page's messages */
} gw_pages;
typedef struct {
    const char *uuid, *msg_id;
} gw_ack_ref;
typedef struct {
    gw_task_head head;             /* GW_TASK_TOKEN or GW_TASK_TOKEN_CHECKED */
    uint64_t request;              /* the worker holds the request under it */
    const char *chat_token;
    int code;                      /* the verdict */
} gw_token_check;

gw_session_ref *gw_session_ref_new(pg_session_id session, const char *uuid,
                                   const char *client_id, int again);
/* op: GW_TASK_REGISTER or GW_TASK_UNREGISTER.  0, or -1 when out of memory. */
int gw_sessions_task_put(pg_rec_writer *w, uint8_t op, gw_session_ref *const *v, size_t n);
/* The task worker's side: read (free it), or -1 when malformed. */
int gw_sessions_task_get(const char *data, size_t len, gw_sessions_task *t);
void gw_sessions_task_free(gw_sessions_task *t);
int gw_page_task_put(pg_rec_writer *w, pg_session_id session, const char *uuid, int64_t after,
                     int online);
int gw_page_task_get(const char *data, size_t len, gw_task_head *head, gw_page *ask);
/* The answer: its head, then each page (gw_pages_put) with its messages,
 * written apart with gw_page_message_put (NULL: none). */
size_t gw_pages_begin(pg_rec_writer *w, uint8_t op, int task_worker);
void gw_page_message_put(pg_rec_writer *messages, const char *msg_id, size_t id_len,
                         const char *payload, size_t payload_len);
void gw_pages_put(pg_rec_writer *w, size_t count_at, const gw_page *p,
                  const pg_rec_writer *messages);
int gw_pages_get(const char *data, size_t len, gw_pages *t);
void gw_pages_free(gw_pages *t);
gw_ack_ref *gw_ack_ref_new(const char *uuid, const char *msg_id);
int gw_acks_task_put(pg_rec_writer *w, gw_ack_ref *const *v, size_t n);
/* *v: free it. */
int gw_acks_task_get(const char *data, size_t len, gw_ack_ref **v, uint32_t *n);
/* op: GW_TASK_UNREGISTERED, GW_TASK_REDELIVERIES (n = 0) or GW_TASK_REDELIVER. */
int gw_uuids_put(pg_rec_writer *w, uint8_t op, const char *const *uuids, size_t n);
/* *uuids: free it. */
int gw_uuids_get(const char *data, size_t len, const char ***uuids, uint32_t *n);
int gw_token_task_put(pg_rec_writer *w, const gw_token_check *t);
int gw_token_task_get(const char *data, size_t len, gw_token_check *t);

/* status.c */
/* The node's figures as /stats shows them (any process). */
json_t *gw_status_stats(void);
/* The node's report in daemon_status: figures, history, latency window. */
json_t *gw_status_report(void);
/* "gateway <node_id>", its daemon_status id. */
const char *gw_status_id(void);
void gw_status_start(int worker_id);       /* workers: worker 0 samples */
void gw_status_start_writer(void);         /* a task worker: writes the row */
/* A session's registration (registered) or offline page (one result). */
void gw_browser_registered(const gw_page *result, int registered);
/* Asks for the first page of uuid's stored messages for session. */
void gw_browser_ask_stored(pg_session_id session, const char *uuid);
/* The sender of a chat message learns what became of it. */
void gw_browser_routed(const gw_outcome *outcome);

/* internal.c */
void gw_internal_request(pg_session_id session, const char *data, size_t len);
/* The internal listener's prefer_worker (server.h), in reactor threads: the
 * home worker of the session a request's first target has on this node, so
 * that the worker routing it also pushes it and takes its ACK; -1: none. */
int gw_internal_worker(const char *packet, size_t len, void *arg);
/* A routed order (route.c): the sessions here have it; remote[0..n) go to
 * the proxy, offline[0..n_offline) to the store (both borrowed), then its
 * sender is answered.  r is taken. */
void gw_internal_routed(gw_routed *r, const gw_remote *remote, size_t n,
                        const gw_store_entry *offline, size_t n_offline);
/* A token task's answer (a record, session_task.c). */
void gw_internal_token_checked(const char *data, size_t len);
void gw_internal_stop(void);
/* A store task's answer (a record, store_task.c). */
void gw_internal_stored(const char *data, size_t len);
/* Stores items[0..n) (borrowed), then answers the sender of the routed
 * order (r taken). */
void gw_internal_store_then_finish(gw_routed *r, const gw_store_entry *items, size_t n);
/* Answers the sender of a routed order: every target is handed off (r and
 * its order are freed). */
void gw_internal_finish(gw_routed *r);
/* Answers the sender of an order: from the steady path, or the above. */
void gw_internal_answer(const gw_outcome *outcome);

/* store.c: workers.  Messages that reach nobody: a routed order's are
 * stored, batched, then the order is finished with its "stored" count;
 * those given back by a session or the proxy link are sent at once. */
/* A store task's size, about: a slow browser's backlog never sits in a
 * worker or a task worker as one multi-megabyte task. */
#define GW_STORE_TASK_BYTES (64 * 1024)
/* items[0..n) (borrowed) of the routed order r (taken). */
void gw_store_routed(gw_routed *r, const gw_store_entry *items, size_t n);
/* One store task now (not batched, not capped) for items[0..n) (borrowed),
 * on task worker dst: 0, or -1 (nothing was sent: their waiters are the
 * caller's to settle). */
int gw_store_send(const gw_store_entry *items, size_t n, pg_session_id keep_away, int dst);
/* A message that reached nobody after all (e borrowed): stored; its
 * waiters hear when it is, or of the failure. */
void gw_store_item(const gw_store_entry *e);
/* A store task's answer: the routed orders waiting for it are settled. */
void gw_store_answered(const gw_stored *s);
void gw_store_stop(void);
/* A growing list of store entries (borrowed strings). */
typedef struct {
    gw_store_entry *v;
    size_t n, cap;
} gw_store_list;
int gw_store_list_add(gw_store_list *l, const gw_store_entry *e);   /* 0 or -1 */
void gw_store_list_free(gw_store_list *l);

/* tokens.c: recent chat_token verdicts; -1 when not known. */
int gw_token_cached(const char *token);
void gw_token_remember(const char *token, int valid);
void gw_token_forget_all(void);

/* batch.c: workers.  Requests added to a batch during one loop pass go to
 * task worker dst (-1: the least busy) as one task when the pass ends, or
 * sooner when max_items or max_bytes are reached; the task worker answers
 * each.  A batch that holds keeps one task in flight: the next goes once
 * gw_batch_answered says it came back.  A task keyed to a session first
 * sends the batches bound for its task worker (gw_task_flush_for), so it
 * never overtakes them.
 *
 * A batch's requests are records of its owner's, which send turns into
 * one task (common/record.h). */
typedef struct gw_batch {
    const char *op;                /* for the log */
    int dst;
    size_t max_items;
    size_t max_bytes;              /* 0: package_max_length */
    int hold;
    /* Its requests are keyed to sessions (unregistrations): the other
     * batches bound for dst go first, held or not, so that
     * none of its requests overtakes its session's registration. */
    int keyed;
    /* send hands items[0..n) to task worker dst as one task and takes
     * them, 0; or answers each as failed and frees them, -1.  fail (the
     * worker stops before sending them) does the latter. */
    int (*send)(void **items, size_t n, int dst);
    void (*fail)(void **items, size_t n);
    void **items;                  /* the rest is the batch's own */
    size_t n, cap, bytes;
    int64_t hold_timer;            /* > 0: a task in flight (holding batches) */
    struct gw_batch *next;
} gw_batch;
/* item stolen (the owner's record); bytes: its rough size in the task. */
void gw_batch_add(gw_batch *b, void *item, size_t bytes);
void gw_batch_answered(gw_batch *b);
/* The worker stops: what waits is sent (send) or failed. */
void gw_batch_stop(gw_batch *b, int send);
/* Send the task record w holds (route_task.c) to task worker dst (-1: the
 * least busy): 0 or -1.  The batches bound for dst do not go first: for a
 * task keyed to a session, call gw_task_flush_for(dst) before. */
int gw_task_record(const pg_rec_writer *w, int dst);
void gw_task_flush_for(int dst);
/* The task worker of a session's tasks, which it runs in order; for
 * session 0, a writer in turn.  With two task workers or more, never task
 * worker 0, which is kept for reads (routes). */
int gw_task_worker_of(uint64_t session);

/* awaiting.c: workers.  Values waiting for a task's answer under ids handed
 * out in order (0: none could be given); drop frees a value the sweep or
 * the stop gives up on.  With overdue set, a value still waiting after
 * mysql_wait_ms is taken out and handed to it, to answer its senders "try
 * again later" (10503) and free it: a MySQL that hangs is an outage, which
 * must not cost a sender an attempt by its timeout. */
typedef struct {
    uint64_t id, due_ms;
} gw_due;
typedef struct {
    const char *what;              /* for the log: "route task(s)" */
    void (*drop)(void *value);
    void (*overdue)(void *value);
    pg_idmap *map;                 /* the rest is the map's own */
    uint64_t first_id, next_id, sweep_below;
    int64_t sweep_timer, due_timer;
    gw_due *due;                   /* the waiting ids in the order handed out */
    size_t due_head, due_n, due_cap;
    pg_ratelog overdue_log;
} gw_awaiting;
uint64_t gw_awaiting_put(gw_awaiting *a, void *value);
void *gw_awaiting_get(gw_awaiting *a, uint64_t id);
void *gw_awaiting_take(gw_awaiting *a, uint64_t id);
/* Whether id was handed out by this worker (an answer naming nothing is
 * then late, for a value given up on), not by the one it replaced. */
int gw_awaiting_ours(const gw_awaiting *a, uint64_t id);
void gw_awaiting_stop(gw_awaiting *a);   /* every value dropped */

/* route.c: workers.  An order (stolen) goes out at once when its routes
 * are known, else with the others of this loop pass; its sender hears
 * through gw_internal_answer or gw_internal_routed. */
void gw_route(gw_order *order);
void gw_route_done(const char *data, size_t len);   /* a route task's answer */
void gw_route_stop(void);

/* proxy_link.c: workers */
void gw_proxy_start(void);
void gw_proxy_stop(void);
/* Forwards remote[0..n) (borrowed) through the proxy; what is not
 * confirmed is stored with offline[0..n_offline) (borrowed); then
 * gw_internal_store_then_finish (r taken). */
void gw_proxy_forward(gw_routed *r, const gw_remote *remote, size_t n,
                      const gw_store_entry *offline, size_t n_offline, const char *chat_token);

/* tasks.c */
void gw_tasks_start(int task_worker_id);
void gw_tasks_stop(void);
void gw_task_handle(int64_t task_id, const char *data, size_t len);
/* The task worker's connection, opened on first use; NULL when MySQL is down. */
pg_db *gw_db(void);
/* How a call on gw_db() went (rc < 0: failed, see its error), for the log
 * and /stats; returns rc. */
long long gw_mysql_result(long long rc);
/* The code of a request that failed for MySQL: PG_ERR_UNAVAILABLE while it
 * cannot be reached, else PG_ERR_INTERNAL. */
int gw_mysql_failure_code(void);
/* The text of the server of mysql_hosts the node last reached ("" before any). */
const char *gw_mysql_server(void);

/* metrics.c: the text of /metrics, and where the histograms are fed.
 * Intake to push: the worker notes when it took in the message it is
 * handling (main.c, around each request), route.c keeps that time on an
 * order that waits for a route task, and gw_push carries it to the push. */
struct evbuffer;
void gw_metrics_text(struct evbuffer *out);
/* The intake time (pg_prom_now_us) of what this worker handles now; 0: none. */
void gw_metrics_intake_set(uint64_t us);
uint64_t gw_metrics_intake(void);
/* tasks.c: a task's send time goes with it (its head's t0), for the queue
 * wait and, echoed by a route task's answer, the lookup's round trip.  A
 * token task's head carries the intake time too (t_in), and its answer
 * echoes it. */
void gw_metrics_task_waited(uint64_t t0);
void gw_metrics_route_answered(uint64_t t0);

/* reply.c */
char *gw_error_json(int code, const char *msg);
char *gw_event_json(const char *event, json_t *data);   /* data stolen */
/* The event a work order's target gets: {"event":"WorksheetMsg",...}, its
 * response the JSON text body[0..body_len); *len: the event's length. */
char *gw_worksheet_json(const char *body, size_t body_len, const char *id, size_t *len);

#endif

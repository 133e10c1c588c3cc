/* consumer.h - what the modules of pushgate-consumer share.
 *
 * The consumer is one process with one libevent loop, so its modules share a
 * single context (cs) instead of passing handles around.  An entry read from
 * the Redis Stream lives in memory from XREADGROUP (or XAUTOCLAIM) until its
 * XACK is confirmed, and is always in exactly one state:
 *
 *   COUNTING  reclaimed from a dead consumer; waiting for its delivery count
 *   READY     in cs.ready, waiting for a gateway with room
 *   SENT      in one gateway's in-flight list, waiting for the reply
 *   BACKOFF   an attempt failed; a timer puts it back in READY
 *   DEAD      in cs.to_dead, or its XADD to the dead-letter stream is out
 *   DONE      in its shard's to_ack, or its XACK is out; freed when Redis confirms
 *
 * Memory is bounded: entries held plus entries asked for (reserved) never
 * exceed max_in_flight.
 *
 * Files: main.c (start, signals, stop), settings.c (the settings table),
 * util.c (clock, lists, retry timers), entries.c (the table of entries),
 * shards.c (the streams and the Redis links that serve them),
 * intake.c (checking an entry read from Redis), flow.c (what happens to an
 * entry after each event), gateway.c (one gateway connection), nodes.c (the
 * set of gateways: static or from MySQL), hints.c (which gateway holds a
 * uuid's browser, from the route feed), stream.c (XREADGROUP, XAUTOCLAIM,
 * keep-alive of held entries), acks.c (XACK batches, dead letters, delivery
 * counters), metrics.c (/metrics and /healthz on metrics_port), status.c
 * (the consumer's row in daemon_status, for the cluster console).  Two Redis
 * links (common/redis_link.c): "reader" for XREADGROUP ... BLOCK alone (a
 * blocked command holds up everything behind it on its connection) and
 * "control" for XACK, XADD, XCLAIM, XAUTOCLAIM, XPENDING and XINFO.  With
 * redis_sentinels each finds the primary and follows a failover by itself;
 * their on_up (group check, reclaim, flush of what waits) is all the
 * consumer needs to resume on the new primary.  shards.c makes the links:
 * with several streams and a Redis Cluster, a control link per node and a
 * reader per stream. */
#ifndef CS_CONSUMER_H
#define CS_CONSUMER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "log.h"
#include "redis_cluster.h"
#include "redis_link.h"

struct event_base;
struct redisReply;

#define CS_ID_MAX 64            /* stream entry ids are at most 41 characters */
#define CS_REPLY_MAX (1 << 20)  /* largest reply frame accepted from a gateway */

/* ---- settings (settings.c) ---- */

typedef struct {
    char *redis_host;
    long long redis_port;
    char *redis_sentinels;          /* "": redis_host and redis_port */
    char *redis_master_name;
    char *redis_cluster_nodes;      /* "": no cluster */
    char *stream;
    char *group;
    char *consumer;
    long long count;
    long long block_ms;
    char *gateways;
    long long nodes_refresh_ms;
    long long max_in_flight;
    long long reply_timeout_ms;
    int wait_for_acks;
    long long handoff_timeout_ms;
    long long max_deliveries;
    long long claim_min_idle_ms;
    long long trim_interval_ms;     /* 0: the streams are never trimmed */
    char *dead_letter_stream;
    size_t max_message_size;
    int log_level;
    char *log_file;
    char *metrics_host;
    long long metrics_port;         /* 0: no metrics port */
    long long route_hints;          /* slots of hints.c's table; 0: round robin only */
    char *cpu_affinity;             /* common/cpu_list.h; "": as started */
} cs_settings;

/* Parses the command line into cs.cfg. 0 go on, 1 --help/--version, -1 error. */
int cs_settings_load(int argc, char **argv);
void cs_settings_free(void);

/* ---- util.c ---- */

uint64_t cs_now_ms(void);

typedef struct cs_entry cs_entry;

typedef struct {
    cs_entry *head, *tail;
    size_t n;
} cs_list;

void cs_list_push(cs_list *l, cs_entry *e);
void cs_list_remove(cs_entry *e);   /* from whatever list holds it; no-op if none */
cs_entry *cs_list_pop(cs_list *l);

/* A one-shot retry timer armed at most once: *timer is its id, 0 while not
 * armed (fn sets it back to 0 when it fires).  cs_timer_clear disarms it. */
#define CS_RETRY_MS 1000
void cs_retry_later(int64_t *timer, void (*fn)(int64_t timer_id, void *arg));
void cs_timer_clear(int64_t *timer);

/* A Redis link to at, or (at NULL) as the settings say (redis_host, or the
 * primary the sentinels name); NULL: out of memory. */
typedef struct {
    void (*on_up)(pg_redis *r, void *arg);
    void (*on_down)(pg_redis *r, void *arg);
    void (*on_redirect)(pg_redis *r, void *arg);
    void *arg;
} cs_link_events;
pg_redis *cs_redis_link(const char *role, const pg_redis_addr *at, const cs_link_events *ev);
/* The value of field name in a RESP2 map reply (name, value, ...: one
 * group of XINFO GROUPS), or NULL when map is not one or has no such field. */
const struct redisReply *cs_reply_field(const struct redisReply *map, const char *name);
/* "host:port", or "the primary of NAME (sentinels ...)", for the log. */
void cs_redis_where(char *out, size_t len);

/* ---- entries (entries.c) ---- */

typedef enum {
    CS_E_COUNTING,
    CS_E_READY,
    CS_E_SENT,
    CS_E_BACKOFF,
    CS_E_DEAD,
    CS_E_DONE,
} cs_entry_state;

struct cs_gateway;
struct cs_shard;

struct cs_entry {
    char id[CS_ID_MAX];     /* the stream entry id */
    char key[CS_ID_MAX];    /* id plus its shard's tag ("@3"): unique among all shards */
    char msg_id[CS_ID_MAX]; /* the request's msg_id: key, or a replayed entry's original id */
    struct cs_shard *shard; /* the stream it was read from */
    char *msg;              /* the entry's msg field as read (NULL: none) */
    size_t msg_len;
    char *fields;           /* no msg field: every field as JSON, kept for the dead letter */
    char *body;             /* the request for a gateway: msg plus msg_id (NULL: malformed) */
    size_t body_len;
    char *reason;           /* DEAD: why */
    long long deliveries;   /* Redis's delivery counter: the attempt in progress or next */
    unsigned waits;         /* retries in a row that did not count (the gateway could not try) */
    cs_entry_state state;
    struct cs_gateway *gw;  /* SENT: where */
    uint64_t last_gw;       /* id of the gateway of the last attempt (0: none) */
    uint64_t hint_key;      /* hash of its first uuid, for hints.c (0: none) */
    uint64_t deadline_ms;   /* SENT: when the reply is overdue */
    uint64_t touched_ms;    /* when Redis last reset its idle time */
    int64_t timer;          /* BACKOFF: the retry timer */
    cs_list *list;
    cs_entry *prev, *next;
    cs_entry *hnext;        /* hash chain */
};

int cs_entries_init(size_t max_entries);
/* Frees every entry (at exit; timers must be cleared already). */
void cs_entries_done(void);
/* A new entry of shard s (COUNTING state, no list), or NULL when it is held
 * already or memory ran out. */
cs_entry *cs_entry_new(struct cs_shard *s, const char *id);
cs_entry *cs_entry_find(const struct cs_shard *s, const char *id);
/* By key (a gateway's reply names the entry by it). */
cs_entry *cs_entry_find_key(const char *key);
/* Forgets and frees it (after its XACK). */
void cs_entry_release(cs_entry *e);
size_t cs_entries_held(void);
/* Calls fn for every entry; fn must not add or release entries. */
void cs_entries_foreach(void (*fn)(cs_entry *e, void *arg), void *arg);

/* Entries that may still be asked for from Redis (max_in_flight - held - reserved). */
size_t cs_room(void);

/* ---- intake (intake.c) ---- */

/* Takes one [id, [field, value, ...]] element of an XREADGROUP or XAUTOCLAIM
 * reply of shard s.  deliveries 0: unknown (reclaimed) - asked with
 * XPENDING first. */
void cs_intake(struct cs_shard *s, const struct redisReply *item, long long deliveries);

/* ---- flow (flow.c) ---- */

void cs_flow_ready(cs_entry *e);            /* to READY, then dispatch */
void cs_flow_dispatch(void);                /* READY entries to gateways with room */
/* A gateway's reply; pending > 0: its browsers' ACKs are still awaited, and
 * a final reply follows (final: this is it). */
void cs_flow_reply(cs_entry *e, struct cs_gateway *g, int code, const char *msg, long long pending,
                   bool final);
void cs_flow_failed(cs_entry *e, const char *why);  /* an attempt failed: retry or give up */
void cs_flow_dead(cs_entry *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cs_flow_done(cs_entry *e);             /* handed off: XACK */
void cs_flow_counted(cs_entry *e, long long deliveries);  /* COUNTING -> READY or DEAD */
/* Clears the retry timer of e, if any. */
void cs_flow_forget(cs_entry *e);

/* ---- one gateway connection (gateway.c) ---- */

typedef enum { CS_GW_DOWN, CS_GW_CONNECTING, CS_GW_UP } cs_gw_state;

typedef struct cs_gateway {
    uint64_t id;
    char name[80];          /* "ip:port" */
    char ip[64];
    int port;
    struct bufferevent *bev;
    struct event *flush_ev; /* made active to write the loop pass's requests from the loop */
    bool write_waiting;     /* the socket was full: libevent writes the rest */
    cs_gw_state state;
    bool removed;           /* no longer a live node: drain, then free */
    cs_list inflight;       /* in send order: waiting for the first reply */
    cs_list accepted;       /* in order of their first reply: waiting for the final one */
    int64_t retry_timer, reply_timer;
    unsigned failures;      /* failures since the last reply: the reconnect backoff */
    uint64_t last_reply_ms;
    pg_ratelog down_log;
} cs_gateway;

/* NULL when ip:port is not a numeric address (error logged). Connects at once. */
cs_gateway *cs_gateway_new(const char *ip, int port);
bool cs_gateway_has_room(const cs_gateway *g);
/* Queues e's request on g (which must have room) and makes e SENT (taking
 * it out of cs.ready).  0, or -1 (out of memory; e untouched). */
int cs_gateway_send(cs_gateway *g, cs_entry *e);
/* Takes e (SENT on g) out of g's in-flight list; the caller sets its new state. */
void cs_gateway_forget(cs_gateway *g, cs_entry *e);
/* e (SENT on g) was routed and waits for its browsers: it moves to g's
 * accepted list, with handoff_timeout_ms for the final reply. */
void cs_gateway_accept(cs_gateway *g, cs_entry *e);
/* No longer a live node: no new requests; freed once nothing is in flight. */
void cs_gateway_retire(cs_gateway *g);
/* Closes and frees g; in-flight entries go back to READY without an attempt counted. */
void cs_gateway_free(cs_gateway *g);

/* ---- the set of gateways (nodes.c) ---- */

int cs_nodes_start(void);           /* -1: bad gateways setting */
void cs_nodes_stop(void);
/* A gateway with room for e: the one its route hint names, else round
 * robin; other than the one of its last attempt when possible; NULL when
 * none is up. */
cs_gateway *cs_nodes_pick(const cs_entry *e);
/* A retired gateway has drained (called by gateway.c; frees it). */
void cs_nodes_retired(cs_gateway *g);
size_t cs_nodes_up(void);

/* ---- MySQL, on a thread of its own (mysql.c) ---- */

enum { CS_MYSQL_SKIPPED = -2 };    /* a job's rc: backing off or no connection, nothing ran */

/* A statement for the MySQL thread: the caller's static object, queued by
 * cs_mysql_submit and handed back through its done callback. */
typedef struct cs_mysql_job cs_mysql_job;
struct cs_mysql_job {
    const char *what;                   /* "reading gateway_nodes": for the log */
    int (*run)(pg_db *db, void *arg);   /* on the thread: 0, or -1 (db's error says why) */
    void (*done)(int rc, void *arg);    /* on the loop, after: run's rc, or CS_MYSQL_SKIPPED */
    void *arg;
    bool drop_on_error;                 /* any error, not only a lost connection, backs off */
    /* mysql.c's own */
    int rc;
    bool queued;                        /* queued or running: not queued again */
    cs_mysql_job *next;
};

int cs_mysql_start(void);           /* -1: no thread (logged) */
/* Queues job; false when it is still queued or running (or no thread). */
bool cs_mysql_submit(cs_mysql_job *job);
/* Runs what is queued, ends the thread, then calls the done callbacks left. */
void cs_mysql_stop(void);
/* No connection or statement failed since the last that worked (true
 * until one fails): what the next status row says of MySQL. */
bool cs_mysql_ok(void);
/* The server of mysql_hosts the consumer last reached ("": none yet). */
const char *cs_mysql_server(void);

/* ---- trimming the streams (trim.c) ---- */

int cs_trim_start(void);            /* -1: no timer */
void cs_trim_stop(void);            /* no new rounds */

/* ---- route hints (hints.c) ---- */

int cs_hints_start(void);           /* -1: out of memory or a bad cluster seed */
void cs_hints_stop(void);
/* The feed is heard: hints are kept and given. */
bool cs_hints_listening(void);
/* The gateway (*ip, *port) that holds the browser of the uuid with hash key:
 * 0, or -1 when none is known. */
int cs_hints_find(uint64_t key, const char **ip, int *port);

/* ---- shards and Redis nodes (shards.c) ----
 *
 * The setting stream names one stream or a set of them (shards); each entry
 * keeps its shard.  Without a cluster one node (redis_host, or the primary
 * the sentinels name) serves them all, through one reader and one control
 * link.  With redis_cluster_nodes the slot map (CLUSTER SLOTS) says which
 * node serves each shard: one control link per node, one reader per shard
 * (a blocked XREADGROUP holds its connection, and a cluster refuses one
 * command over keys of several slots). */

struct cs_node;

typedef struct cs_reader {
    pg_redis *link;             /* NULL: no node known for it (yet) */
    struct cs_shard **shards;   /* the shards its XREADGROUP reads */
    size_t n;
    bool reading;               /* an XREADGROUP is out */
    size_t reserved;
    size_t groups_out;          /* XGROUP CREATEs out */
    bool groups_failed;
    int64_t retry_timer;
    pg_ratelog log;
} cs_reader;

typedef struct cs_shard {
    size_t index;
    const char *name;
    char tag[8];                /* "@<index>" with several streams, "" with one */
    int slot;                   /* the cluster key slot of name */
    struct cs_node *node;       /* whose control link serves it (NULL: not known yet) */
    cs_reader *reader;
    cs_list to_ack;             /* DONE entries waiting for their XACK (acks.c) */
    bool claiming, claim_due;   /* stream.c: XAUTOCLAIM */
    size_t claim_reserved;
    char cursor[CS_ID_MAX];
    long long lag, pending;     /* metrics.c: XINFO GROUPS */
    uint64_t polled_ms;
    bool polling;
    bool trimming;              /* trim.c: a round is out */
} cs_shard;

int cs_shards_start(void);      /* -1: out of memory */
void cs_shards_stop_reading(void);
void cs_shards_done(void);
/* The control link of s's node (NULL or down while not known). */
pg_redis *cs_shard_control(const cs_shard *s);
/* The control link of the dead-letter stream's node. */
pg_redis *cs_dead_control(void);
/* Calls fn for each control link (each node), for /metrics. */
void cs_shards_links(void (*fn)(const char *role, pg_redis *r, void *arg), void *arg);
/* Every control link is up (with a cluster: every node serving a shard). */
bool cs_shards_up(void);
/* With a cluster: read the slot map again soon (a node was lost, a redirect). */
void cs_shards_refresh(void);

/* ---- the stream (stream.c) ---- */

int cs_stream_start(void);
void cs_stream_stop_reading(void);  /* shutdown: no more XREADGROUP/XAUTOCLAIM */
void cs_stream_done(void);
/* Room for more entries appeared: read again if the reader was waiting. */
void cs_stream_room(void);
/* A control link is (again) up: reclaim now. */
void cs_stream_control_up(void);
/* Asks XPENDING for the delivery count of a reclaimed entry. */
void cs_stream_count(cs_entry *e);
/* A reader's link is (again) up: check the groups, then read. */
void cs_stream_reader_up(cs_reader *rd);

/* ---- acks and dead letters (acks.c) ---- */

int cs_acks_start(void);
void cs_acks_done(void);
void cs_acks_queue_ack(cs_entry *e);   /* e is DONE */
void cs_acks_queue_dead(cs_entry *e);  /* e is DEAD with a reason */
/* Stores e->deliveries as Redis's delivery counter (and resets its idle time). */
void cs_acks_set_deliveries(cs_entry *e);
/* Resets the idle time of held entries so no consumer reclaims them. */
void cs_acks_touch(cs_entry **entries, size_t n);
/* Nothing of ours is out on the control links and nothing is queued for them. */
bool cs_acks_idle(void);
/* Every control link is up. */
bool cs_acks_link_up(void);
/* A control link is (again) up: flush what waits. */
void cs_acks_flush(void);

/* ---- /metrics and /healthz (metrics.c) ---- */

/* The XINFO poll always, the port when metrics_port is set; -1: cannot listen. */
int cs_metrics_start(void);
void cs_metrics_stop(void);         /* before the control link goes */
void cs_metrics_reply(int code);    /* a gateway replied */
/* The group's lag and pending count as Redis last told them (-1: not known
 * or not asked for a while). */
void cs_metrics_group(long long *lag, long long *pending);
/* The same for shard i alone. */
void cs_metrics_shard(size_t i, long long *lag, long long *pending);
/* Calls fn for each reply code counted so far ("0", "10503", ..., "other"). */
void cs_metrics_replies(void (*fn)(const char *code, unsigned long long n, void *arg), void *arg);

/* ---- the status row in daemon_status (status.c) ---- */

int cs_status_start(void);          /* -1: no timer */
/* Clears the timer and queues the row's removal (best effort), before cs_mysql_stop. */
void cs_status_stop(void);
/* An entry goes to the dead-letter stream (flow.c), for why. */
void cs_status_dead(const char *id, const char *reason);

/* ---- the context ---- */

typedef struct {
    unsigned long long read, claimed, sent, acked, dead, retried, waited;
    unsigned long long hinted;      /* requests sent to the gateway a hint named */
    unsigned long long hint_notes;  /* notes of the route feed that named a node */
    unsigned long long trimmed;     /* entries XTRIM took out of the streams */
} cs_stats;

typedef struct {
    cs_settings cfg;
    pg_db_settings mysql;
    pg_db_host_list mysql_hosts;    /* the servers mysql names, checked at start */
    struct event_base *base;
    bool stopping;
    pg_stream_set streams;  /* the setting stream, parsed */
    cs_shard *shards;       /* one per stream */
    size_t nshards;
    cs_list ready;
    cs_list to_dead;
    size_t reserved;        /* entries asked for by a read or claim still out */
    size_t sent;            /* entries in SENT state */
    cs_stats stats;
} cs_context;

extern cs_context cs;

/* main.c: during shutdown, see whether everything is finished. */
void cs_check_finished(void);

#endif

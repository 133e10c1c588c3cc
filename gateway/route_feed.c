/* route_feed.c - workers: every node hears of every registration and
 * unregistration, so that its route cache (route_cache.c) stays exactly as
 * good as a lookup in MySQL.
 *
 * The feed is a Redis pub/sub channel, PG_ROUTE_CHANNEL, and its notes are
 * common/route_note.h's.  A worker announces a uuid once MySQL has its new
 * online_clients row, or has lost the old one; session.c and main.c call
 * gw_route_feed_announce when the task that wrote it answers.  The note
 * names this node while the uuid has a browser here ("u <uuid> <node>"):
 * the consumer sends the uuid's orders to the node named last.  Worker 0 of
 * each node listens, and drops each announced uuid's entry.  It also
 * announces a heartbeat ("h <node>")
 * every HEARTBEAT_MS and hears it come back: the cache is trusted only
 * while the feed has spoken within route_cache.c's silence limit.  When the
 * listening link drops, the cache stops being trusted at once; when it is
 * back, every entry is flushed first, as announcements may have been lost
 * meanwhile; so is every entry when a note cannot be read, as it may have
 * named any uuid.  Announcements a worker could not send (its link down) wait,
 * a bounded number, for the link to come back; the other nodes' entries
 * expire anyway after a minute.
 *
 * With redis_sentinels every link finds the primary itself and follows it
 * through a failover (common/redis_link.c): to the listener a failover is a
 * drop and a reconnect like any other, so the cache is untrusted from the
 * drop until the new primary confirms the subscription.  Which server the
 * listener uses is kept in shared memory (a sequence-numbered copy with
 * one writer, worker 0) for /stats and /metrics in any process. */
#include "gateway.h"

#include "log.h"
#include "redis_link.h"
#include "route_note.h"
#include "timer.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEARTBEAT_MS 500
#define WAITING_MAX 10000

static pg_redis *publisher, *listener;
static int64_t heartbeat_timer;
static char **waiting;             /* announcements not sent yet */
static size_t nwaiting;

int gw_route_feed_configured(void)
{
    return (gw.cfg.redis_host && *gw.cfg.redis_host) ||
           (gw.cfg.redis_sentinels && *gw.cfg.redis_sentinels);
}

static int feed_enabled(void)
{
    return gw_route_feed_configured() && gw.cfg.route_cache_entries > 0;
}

static pg_redis *feed_link(const char *role, void (*on_up)(pg_redis *r, void *arg),
                           void (*on_down)(pg_redis *r, void *arg))
{
    pg_redis_config cfg = {.host = gw.cfg.redis_host, .port = (int)gw.cfg.redis_port,
                           .sentinels = gw.cfg.redis_sentinels,
                           .master_name = gw.cfg.redis_master_name, .role = role,
                           .base = pg_server_event_base(gw.server), .on_up = on_up,
                           .on_down = on_down};
    return pg_redis_new(&cfg);
}

/* ---- which server the listener uses, for every process ---- */

#define SERVER_BYTES (GW_REDIS_SERVER_WORDS * 8)

/* Worker 0 only.  An odd sequence number marks a write under way; one left
 * odd by a worker 0 that died mid-write is skipped past. */
static void server_set(const char *server)
{
    gw_counters *c = gw.counters;
    uint64_t seq = atomic_load_explicit(&c->redis_server_seq, memory_order_relaxed);
    seq += seq & 1;
    atomic_store_explicit(&c->redis_server_seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    char bytes[SERVER_BYTES] = {0};
    snprintf(bytes, sizeof(bytes), "%s", server);
    for (int i = 0; i < GW_REDIS_SERVER_WORDS; i++) {
        uint64_t w;
        memcpy(&w, bytes + 8 * i, 8);
        atomic_store_explicit(&c->redis_server[i], w, memory_order_relaxed);
    }
    atomic_store_explicit(&c->redis_server_seq, seq + 2, memory_order_release);
}

void gw_route_feed_server(char *out, size_t len)
{
    gw_counters *c = gw.counters;
    char bytes[SERVER_BYTES + 1];
    for (int tries = 0; tries < 100; tries++) {
        uint64_t before = atomic_load_explicit(&c->redis_server_seq, memory_order_acquire);
        for (int i = 0; i < GW_REDIS_SERVER_WORDS; i++) {
            uint64_t w = atomic_load_explicit(&c->redis_server[i], memory_order_relaxed);
            memcpy(bytes + 8 * i, &w, 8);
        }
        atomic_thread_fence(memory_order_acquire);
        if (!(before & 1) &&
            atomic_load_explicit(&c->redis_server_seq, memory_order_relaxed) == before) {
            bytes[SERVER_BYTES] = '\0';
            snprintf(out, len, "%s", bytes);
            return;
        }
    }
    snprintf(out, len, "%s", "");     /* a writer stuck mid-way: say nothing */
}

static void on_published(struct redisReply *reply, void *priv)
{
    (void)reply;
    (void)priv;
}

static int publish(const char *text)
{
    const char *argv[] = {"PUBLISH", PG_ROUTE_CHANNEL, text};
    return pg_redis_argv(publisher, on_published, NULL, 3, argv, NULL);
}

/* The link is back: what waited goes now. */
static void flush_waiting(pg_redis *r, void *arg)
{
    (void)r;
    (void)arg;
    if (nwaiting == 0)
        return;
    size_t sent = 0;
    while (sent < nwaiting && publish(waiting[sent]) == 0)
        free(waiting[sent++]);
    memmove(waiting, waiting + sent, (nwaiting - sent) * sizeof(*waiting));
    nwaiting -= sent;
}

void gw_route_feed_announce(const char *uuid, bool here)
{
    char text[PG_ROUTE_NOTE_MAX];
    if (!publisher || !uuid || pg_route_note_format(text, uuid, here ? gw.node_id : NULL) < 0)
        return;
    if (nwaiting == 0 && publish(text) == 0)
        return;
    if (nwaiting == 0)
        waiting = calloc(WAITING_MAX, sizeof(*waiting));
    if (!waiting || nwaiting == WAITING_MAX) {
        pg_warn("route feed: announcement of %s dropped (Redis down long); other nodes' "
                "entries for it expire within a minute", uuid);
        return;
    }
    waiting[nwaiting++] = strdup(text);
}

/* ---- worker 0: listening ---- */

static void on_feed(struct redisReply *reply, void *priv)
{
    (void)priv;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    if (strcmp(kind, "subscribe") == 0) {
        /* from now on nothing is missed: what came before may have been */
        gw_route_cache_flush();
        gw_route_cache_feed_alive();
        pg_info("route feed: listening on %s; the route cache is trusted", PG_ROUTE_CHANNEL);
        return;
    }
    if (strcmp(kind, "message") != 0 || reply->element[2]->type != REDIS_REPLY_STRING)
        return;
    pg_route_note note;
    const redisReply *text = reply->element[2];
    if (pg_route_note_parse(text->str, text->len, &note) < 0) {
        /* It may have named any uuid (a newer node's note, say): no entry
         * can be trusted to be current. */
        static pg_ratelog unreadable_log;
        pg_log_limited(&unreadable_log, PG_LOG_WARN, "route feed: a note this node cannot read "
                       "(%zu bytes, \"%.40s\"): every route cache entry dropped",
                       text->len, text->str);
        gw_route_cache_flush();
    } else if (note.kind == 'u' && strcmp(note.node_id, gw.node_id) != 0) {
        /* A note naming this node changed only this node's rows, which the
         * cache does not hold (the uuid index does): the entry a
         * registration here has just filled (tasks.c) stays. */
        gw_route_cache_forget(note.uuid);
    }
    gw_route_cache_feed_alive();
}

static void listen_up(pg_redis *r, void *arg)
{
    (void)arg;
    server_set(pg_redis_server(r));
    atomic_store(&gw.counters->redis_ok, 1);
    if (pg_redis_subscribe(r, PG_ROUTE_CHANNEL, on_feed, NULL) < 0)
        pg_warn("route feed: cannot subscribe to %s", PG_ROUTE_CHANNEL);
}

static void listen_down(pg_redis *r, void *arg)
{
    (void)r;
    (void)arg;
    atomic_store(&gw.counters->redis_ok, 0);
    server_set("");
    gw_route_cache_feed_lost();   /* untrusted now, not after the silence */
}

static void beat(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    char text[128];
    snprintf(text, sizeof(text), "h %s", gw.node_id);
    publish(text);
}

void gw_route_feed_start(void)
{
    if (!feed_enabled())
        return;
    publisher = feed_link("route feed", flush_waiting, NULL);
    if (pg_server_worker_id(gw.server) != 0)
        return;
    listener = feed_link("route feed listener", listen_up, listen_down);
    heartbeat_timer = pg_timer_tick(HEARTBEAT_MS, beat, NULL);
}

void gw_route_feed_stop(void)
{
    if (heartbeat_timer > 0)
        pg_timer_clear(heartbeat_timer);
    heartbeat_timer = 0;
    if (listener) {
        gw_route_cache_feed_lost();
        server_set("");
    }
    pg_redis_free(listener);
    pg_redis_free(publisher);
    listener = publisher = NULL;
    for (size_t i = 0; i < nwaiting; i++)
        free(waiting[i]);
    free(waiting);
    waiting = NULL;
    nwaiting = 0;
}

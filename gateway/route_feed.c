/* route_feed.c - workers: every node hears of every registration and
 * unregistration, so that its route cache (route_cache.c) stays exactly as
 * good as a lookup in MySQL.
 *
 * The feed is a Redis pub/sub channel, ROUTE_CHANNEL.  A worker announces a
 * uuid ("u <uuid>") once MySQL has its new online_clients row, or has lost
 * the old one (session.c calls gw_route_feed_announce when the task that
 * wrote it answers).  Worker 0 of each node listens, and drops each
 * announced uuid's entry.  It also announces a heartbeat ("h <node>")
 * every HEARTBEAT_MS and hears it come back: the cache is trusted only
 * while the feed has spoken within route_cache.c's silence limit.  When the
 * listening link drops, the cache stops being trusted at once; when it is
 * back, every entry is flushed first, as announcements may have been lost
 * meanwhile.  Announcements a worker could not send (its link down) wait,
 * a bounded number, for the link to come back; the other nodes' entries
 * expire anyway after a minute. */
#include "gateway.h"

#include "log.h"
#include "redis_link.h"
#include "timer.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUTE_CHANNEL "pushgate:routes"
#define HEARTBEAT_MS 500
#define WAITING_MAX 10000

static pg_redis *publisher, *listener;
static int64_t heartbeat_timer;
static char **waiting;             /* announcements not sent yet */
static size_t nwaiting;

static int feed_enabled(void)
{
    return gw.cfg.redis_host && *gw.cfg.redis_host && gw.cfg.route_cache_entries > 0;
}

static void on_published(struct redisReply *reply, void *priv)
{
    (void)reply;
    (void)priv;
}

static int publish(const char *text)
{
    const char *argv[] = {"PUBLISH", ROUTE_CHANNEL, text};
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

void gw_route_feed_announce(const char *uuid)
{
    if (!publisher)
        return;
    char text[PG_UUID_MAX + 3];
    snprintf(text, sizeof(text), "u %s", uuid);
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
        pg_info("route feed: listening on %s; the route cache is trusted", ROUTE_CHANNEL);
        return;
    }
    if (strcmp(kind, "message") != 0 || reply->element[2]->type != REDIS_REPLY_STRING)
        return;
    const char *text = reply->element[2]->str;
    size_t len = reply->element[2]->len;
    if (len > 2 && text[0] == 'u' && text[1] == ' ' && len - 2 <= PG_UUID_MAX)
        gw_route_cache_forget(text + 2);
    gw_route_cache_feed_alive();
}

static void listen_up(pg_redis *r, void *arg)
{
    (void)arg;
    atomic_store(&gw.counters->redis_ok, 1);
    if (pg_redis_subscribe(r, ROUTE_CHANNEL, on_feed, NULL) < 0)
        pg_warn("route feed: cannot subscribe to %s", ROUTE_CHANNEL);
}

static void listen_down(pg_redis *r, void *arg)
{
    (void)r;
    (void)arg;
    atomic_store(&gw.counters->redis_ok, 0);
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
    pg_redis_config cfg = {.host = gw.cfg.redis_host, .port = (int)gw.cfg.redis_port,
                           .role = "route feed", .base = pg_server_event_base(gw.server),
                           .on_up = flush_waiting};
    publisher = pg_redis_new(&cfg);
    if (pg_server_worker_id(gw.server) != 0)
        return;
    pg_redis_config listen = {.host = gw.cfg.redis_host, .port = (int)gw.cfg.redis_port,
                              .role = "route feed listener",
                              .base = pg_server_event_base(gw.server), .on_up = listen_up,
                              .on_down = listen_down};
    listener = pg_redis_new(&listen);
    heartbeat_timer = pg_timer_tick(HEARTBEAT_MS, beat, NULL);
}

void gw_route_feed_stop(void)
{
    if (heartbeat_timer > 0)
        pg_timer_clear(heartbeat_timer);
    heartbeat_timer = 0;
    if (listener)
        gw_route_cache_feed_lost();
    pg_redis_free(listener);
    pg_redis_free(publisher);
    listener = publisher = NULL;
    for (size_t i = 0; i < nwaiting; i++)
        free(waiting[i]);
    free(waiting);
    waiting = NULL;
    nwaiting = 0;
}

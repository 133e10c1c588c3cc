/* shards.c - the streams the consumer reads (shards) and the Redis links
 * that serve them.
 *
 * Without a cluster one server (redis_host, or the primary the sentinels
 * name) holds every shard: one control link, and one reader whose
 * XREADGROUP names every shard, so a single blocked read wakes for an
 * entry in any of them and a single stream works exactly as it always did.
 *
 * With redis_cluster_nodes each shard lives on the primary serving its key
 * slot.  The slot map comes from CLUSTER SLOTS, asked over any control link
 * that is up, else over a link to one of the configured nodes; it is asked
 * again every REFRESH_IDLE_MS, every REFRESH_MS while a shard has no node
 * or its node's link is down (a node lost: the cluster promotes a replica,
 * and the map names it), and at once after a MOVED or ASK reply (the
 * command failed and is retried by its owner, by then towards the node the
 * new map names).  One control link per node (XACK, XADD, XCLAIM,
 * XAUTOCLAIM, XPENDING, XINFO), one reader per shard: a blocked XREADGROUP
 * holds its connection, and a cluster refuses one command over keys of
 * several slots.  A shard that moves gets a new reader link to its new
 * node; what was out on the old one is answered NULL and asked again.
 * Links to nodes that no longer serve a shard stay: a cluster has few. */
#include "consumer.h"

#include "log.h"
#include "timer.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REFRESH_MS 1000
#define REFRESH_IDLE_MS 10000

typedef struct cs_node {
    pg_redis_addr addr;
    pg_redis *control;
    struct cs_node *next;
} cs_node;

static bool cluster;
static cs_node *nodes;
static cs_node *dead_node;          /* serves dead_letter_stream */
static int dead_slot;
static cs_reader *readers;
static size_t nreaders;
static pg_redis *seeds[PG_CLUSTER_NODES_MAX];
static pg_redis_addr seed_addrs[PG_CLUSTER_NODES_MAX];
static size_t nseeds;
static pg_cluster_map map;
static pg_redis_addr asked;         /* the node CLUSTER SLOTS is out to */
static bool asking, want_map;
static uint64_t map_ms;             /* when the map was last read */
static int64_t map_timer;
static pg_ratelog map_log, unserved_log;

/* ---- link events ---- */

static void control_up(pg_redis *r, void *arg)
{
    (void)r;
    (void)arg;
    cs_acks_flush();
    cs_stream_control_up();
}

static void lost(pg_redis *r, void *arg)
{
    (void)r;
    (void)arg;
    if (cluster)
        cs_shards_refresh();
}

static void reader_up(pg_redis *r, void *arg)
{
    (void)r;
    cs_stream_reader_up(arg);
}

static void redirected(pg_redis *r, void *arg)
{
    (void)r;
    (void)arg;
    cs_shards_refresh();
}

static void ask_map(void);

static void seed_up(pg_redis *r, void *arg)
{
    (void)r;
    (void)arg;
    if (want_map || map.n == 0)
        ask_map();
}

/* ---- nodes ---- */

static cs_node *node_for(const pg_redis_addr *a)
{
    for (cs_node *n = nodes; n; n = n->next)
        if (pg_redis_addr_equal(&n->addr, a))
            return n;
    cs_node *n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    n->addr = *a;
    char where[PG_REDIS_ADDR_MAX], role[PG_REDIS_ADDR_MAX + 16];
    pg_redis_addr_format(a, where, sizeof(where));
    snprintf(role, sizeof(role), "control %s", where);
    cs_link_events ev = {control_up, lost, redirected, n};
    n->control = cs_redis_link(role, a, &ev);
    if (!n->control) {
        free(n);
        return NULL;
    }
    n->next = nodes;
    nodes = n;
    return n;
}

pg_redis *cs_shard_control(const cs_shard *s)
{
    return s && s->node ? s->node->control : NULL;
}

pg_redis *cs_dead_control(void)
{
    return dead_node ? dead_node->control : NULL;
}

bool cs_shards_up(void)
{
    if (!dead_node || !pg_redis_up(dead_node->control))
        return false;
    for (size_t i = 0; i < cs.nshards; i++)
        if (!pg_redis_up(cs_shard_control(&cs.shards[i])))
            return false;
    return true;
}

void cs_shards_links(void (*fn)(const char *role, pg_redis *r, void *arg), void *arg)
{
    for (size_t i = 0; i < nreaders; i++) {
        char role[PG_STREAM_NAME_MAX + 16];
        if (cluster)
            snprintf(role, sizeof(role), "reader %s", readers[i].shards[0]->name);
        else
            snprintf(role, sizeof(role), "reader");
        fn(role, readers[i].link, arg);
    }
    for (cs_node *n = nodes; n; n = n->next) {
        char role[PG_REDIS_ADDR_MAX + 16];
        pg_redis_addr_format(&n->addr, role + 8, sizeof(role) - 8);
        memcpy(role, "control ", 8);
        fn(cluster ? role : "control", n->control, arg);
    }
}

/* ---- the slot map ---- */

/* A shard's reader goes to node (a new link; what was out on the old one
 * is answered NULL). */
static void move_reader(cs_shard *s, cs_node *node)
{
    cs_reader *rd = s->reader;
    pg_redis *old = rd->link;
    rd->link = NULL;
    pg_redis_free(old);
    cs_timer_clear(&rd->retry_timer);
    if (cs.stopping)
        return;
    char where[PG_REDIS_ADDR_MAX], role[PG_STREAM_NAME_MAX + PG_REDIS_ADDR_MAX + 16];
    pg_redis_addr_format(&node->addr, where, sizeof(where));
    snprintf(role, sizeof(role), "reader of %s at %s", s->name, where);
    cs_link_events ev = {reader_up, lost, redirected, rd};
    rd->link = cs_redis_link(role, &node->addr, &ev);
    if (!rd->link)
        pg_error("no reader link for %s (out of memory): retried with the next slot map", s->name);
}

static void place_shard(cs_shard *s)
{
    const pg_redis_addr *owner = pg_cluster_map_owner(&map, s->slot);
    if (!owner) {
        pg_log_limited(&unserved_log, PG_LOG_WARN, "redis cluster: no node serves slot %d "
                       "(stream %s)", s->slot, s->name);
        return;
    }
    cs_node *node = node_for(owner);
    if (!node) {
        pg_error("redis cluster: no link to a node (out of memory)");
        return;
    }
    if (node == s->node && s->reader->link)
        return;
    char where[PG_REDIS_ADDR_MAX];
    pg_redis_addr_format(owner, where, sizeof(where));
    pg_info("redis cluster: stream %s (slot %d) is served by %s", s->name, s->slot, where);
    s->node = node;
    move_reader(s, node);
}

/* Places every shard and the dead-letter stream; what waits for a node
 * that was just named goes out now. */
static void apply_map(void)
{
    for (size_t i = 0; i < cs.nshards; i++)
        place_shard(&cs.shards[i]);
    const pg_redis_addr *owner = pg_cluster_map_owner(&map, dead_slot);
    cs_node *node = owner ? node_for(owner) : NULL;
    if (node)
        dead_node = node;
    cs_acks_flush();
}

static void on_slots(struct redisReply *reply, void *priv)
{
    (void)priv;
    asking = false;
    if (!reply)
        return;     /* the link dropped: its on_down asks again */
    pg_cluster_map m;
    char why[256];
    if (pg_cluster_slots_parse(reply, &asked, &m, why, sizeof(why)) < 0) {
        char where[PG_REDIS_ADDR_MAX];
        pg_redis_addr_format(&asked, where, sizeof(where));
        pg_log_limited(&map_log, PG_LOG_WARN, "redis cluster %s: %s", where, why);
        want_map = true;
        return;
    }
    pg_cluster_map_free(&map);
    map = m;
    map_ms = cs_now_ms();
    want_map = false;
    map_log = (pg_ratelog){0};
    if (!cs.stopping)
        apply_map();
}

/* The first link that is up: a node's control link, else a seed. */
static pg_redis *map_link(pg_redis_addr *at)
{
    for (cs_node *n = nodes; n; n = n->next)
        if (pg_redis_up(n->control)) {
            *at = n->addr;
            return n->control;
        }
    for (size_t i = 0; i < nseeds; i++)
        if (pg_redis_up(seeds[i])) {
            *at = seed_addrs[i];
            return seeds[i];
        }
    return NULL;
}

static void ask_map(void)
{
    want_map = true;
    if (asking || cs.stopping)
        return;
    pg_redis_addr at;
    pg_redis *r = map_link(&at);
    const char *argv[] = {"CLUSTER", "SLOTS"};
    if (r && pg_redis_argv(r, on_slots, NULL, 2, argv, NULL) == 0) {
        asking = true;
        asked = at;
    }
}

void cs_shards_refresh(void)
{
    if (cluster)
        ask_map();
}

static bool unserved(void)
{
    for (size_t i = 0; i < cs.nshards; i++)
        if (!pg_redis_up(cs_shard_control(&cs.shards[i])) ||
            !pg_redis_up(cs.shards[i].reader->link))
            return true;
    return !dead_node || !pg_redis_up(dead_node->control);
}

static void on_map_tick(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    if (want_map || unserved() || cs_now_ms() - map_ms >= REFRESH_IDLE_MS)
        ask_map();
}

/* ---- start and stop ---- */

static int make_shards(void)
{
    cs.nshards = cs.streams.n;
    cs.shards = calloc(cs.nshards, sizeof(*cs.shards));
    if (!cs.shards)
        return -1;
    for (size_t i = 0; i < cs.nshards; i++) {
        cs_shard *s = &cs.shards[i];
        s->index = i;
        s->name = cs.streams.names[i];
        if (cs.nshards > 1)
            snprintf(s->tag, sizeof(s->tag), "@%u", (unsigned)(i % 10000));
        s->slot = pg_cluster_key_slot(s->name, strlen(s->name));
        strcpy(s->cursor, "0-0");
        s->lag = s->pending = -1;
    }
    return 0;
}

/* One reader for shards [first, first + n). */
static int make_reader(cs_reader *rd, size_t first, size_t n)
{
    rd->shards = calloc(n, sizeof(*rd->shards));
    if (!rd->shards)
        return -1;
    rd->n = n;
    for (size_t i = 0; i < n; i++) {
        rd->shards[i] = &cs.shards[first + i];
        cs.shards[first + i].reader = rd;
    }
    return 0;
}

static int start_plain(void)
{
    nodes = calloc(1, sizeof(*nodes));
    readers = calloc(1, sizeof(*readers));
    if (!nodes || !readers || make_reader(&readers[0], 0, cs.nshards) < 0)
        return -1;
    nreaders = 1;
    cs_link_events control_ev = {control_up, NULL, NULL, nodes};
    nodes->control = cs_redis_link("control", NULL, &control_ev);
    cs_link_events reader_ev = {reader_up, NULL, NULL, &readers[0]};
    readers[0].link = cs_redis_link("reader", NULL, &reader_ev);
    if (!nodes->control || !readers[0].link)
        return -1;
    dead_node = nodes;
    for (size_t i = 0; i < cs.nshards; i++)
        cs.shards[i].node = nodes;
    return 0;
}

static int start_cluster(void)
{
    cluster = true;
    char err[256];
    int n = pg_cluster_nodes_parse(cs.cfg.redis_cluster_nodes, seed_addrs, PG_CLUSTER_NODES_MAX,
                                   err, sizeof(err));
    readers = calloc(cs.nshards, sizeof(*readers));
    if (n <= 0 || !readers)
        return -1;
    for (size_t i = 0; i < cs.nshards; i++)
        if (make_reader(&readers[i], i, 1) < 0)
            return -1;
    nreaders = cs.nshards;
    dead_slot = pg_cluster_key_slot(cs.cfg.dead_letter_stream, strlen(cs.cfg.dead_letter_stream));
    for (int i = 0; i < n; i++) {
        char where[PG_REDIS_ADDR_MAX], role[PG_REDIS_ADDR_MAX + 16];
        pg_redis_addr_format(&seed_addrs[i], where, sizeof(where));
        snprintf(role, sizeof(role), "slot map %s", where);
        cs_link_events ev = {seed_up, NULL, NULL, NULL};
        if (!(seeds[i] = cs_redis_link(role, &seed_addrs[i], &ev)))
            return -1;
        nseeds++;
    }
    map_timer = pg_timer_tick(REFRESH_MS, on_map_tick, NULL);
    return map_timer < 0 ? -1 : 0;
}

int cs_shards_start(void)
{
    if (make_shards() < 0)
        return -1;
    return *cs.cfg.redis_cluster_nodes ? start_cluster() : start_plain();
}

void cs_shards_stop_reading(void)
{
    cs_timer_clear(&map_timer);
    for (size_t i = 0; i < nreaders; i++) {
        pg_redis *r = readers[i].link;
        readers[i].link = NULL;
        pg_redis_free(r);   /* an XREADGROUP still blocked is dropped unanswered */
        cs_timer_clear(&readers[i].retry_timer);
    }
    for (size_t i = 0; i < nseeds; i++) {
        pg_redis_free(seeds[i]);
        seeds[i] = NULL;
    }
    nseeds = 0;
}

void cs_shards_done(void)
{
    cs_shards_stop_reading();
    while (nodes) {
        cs_node *n = nodes;
        nodes = n->next;
        pg_redis *r = n->control;
        n->control = NULL;
        pg_redis_free(r);   /* callbacks still out put their entries back in the lists */
        free(n);
    }
    dead_node = NULL;
    for (size_t i = 0; i < nreaders; i++)
        free(readers[i].shards);
    free(readers);
    readers = NULL;
    nreaders = 0;
    for (size_t i = 0; i < cs.nshards; i++)
        cs.shards[i].node = NULL;
    pg_cluster_map_free(&map);
}

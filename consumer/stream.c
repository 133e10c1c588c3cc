/* stream.c - taking entries from the Redis Stream.
 *
 * New entries come from XREADGROUP ... BLOCK on the reader connection, only
 * while there is room (held + asked-for < max_in_flight), so memory stays
 * bounded and a stalled gateway side stops the reading instead of piling up.
 * Entries left pending by a consumer that died are taken over with
 * XAUTOCLAIM (idle >= claim_min_idle_ms) on the control connection; their
 * delivery counter (XPENDING) says how many attempts were made already, so
 * the limit holds across restarts.  Entries we hold for long (waiting for a
 * gateway) get their idle time reset (XCLAIM JUSTID, which leaves the
 * counter alone) so no other consumer reclaims them while we still work.
 * A missing group (first start, or Redis restarted without its data) is
 * created with MKSTREAM from the stream's start, so nothing already in the
 * stream is skipped.  With several streams (shards.c) each has its group,
 * its XAUTOCLAIM cursor and its own commands; a reader reads all of its
 * shards in one XREADGROUP, and with one reader per shard (a cluster) each
 * takes an equal share of max_in_flight, so all can wait at once. */
#include "consumer.h"

#include "log.h"
#include "timer.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLAIM_BATCH 100
#define TOUCH_BATCH 1000
#define STATS_MS 10000

static int64_t claim_timer, touch_timer, stats_timer;
static pg_ratelog claim_log;
static cs_stats last_stats;
static size_t claim_next;       /* the shard whose claim round is next */

static void create_groups(cs_reader *rd);
static void claim_round(void);

static void on_retry(int64_t timer_id, void *arg)
{
    (void)timer_id;
    cs_reader *rd = arg;
    rd->retry_timer = 0;
    create_groups(rd);
}

static void retry_later(cs_reader *rd)
{
    if (rd->retry_timer > 0)
        return;
    rd->retry_timer = pg_timer_after(CS_RETRY_MS, on_retry, rd);
    if (rd->retry_timer < 0)
        rd->retry_timer = 0;
}

/* A reader's share of max_in_flight: every reader can have a read out. */
static size_t read_share(void)
{
    size_t share = (size_t)cs.cfg.max_in_flight / (cs.nshards && cs.shards[0].reader->n == 1
                                                       ? cs.nshards : 1);
    if (share > (size_t)cs.cfg.count)
        share = (size_t)cs.cfg.count;
    return share ? share : 1;
}

/* Reads again once this much room is free: no dribble of one-entry reads. */
static size_t read_threshold(void)
{
    size_t t = (size_t)cs.cfg.max_in_flight / 4;
    if (t > read_share())
        t = read_share();
    return t ? t : 1;
}

static void on_read(struct redisReply *reply, void *priv);

static void read_more(cs_reader *rd)
{
    if (cs.stopping || rd->reading || rd->groups_out || rd->retry_timer > 0 ||
        !pg_redis_up(rd->link))
        return;
    size_t room = cs_room();
    if (room == 0 || (room < read_threshold() && cs_entries_held() > 0))
        return;     /* cs_stream_room() calls again when entries leave */
    size_t k = room < read_share() ? room : read_share();
    char count[24], block[24];
    snprintf(count, sizeof(count), "%zu", k);
    snprintf(block, sizeof(block), "%lld", cs.cfg.block_ms);
    size_t argc = 9 + 2 * rd->n;
    const char **argv = malloc(argc * sizeof(char *));
    if (!argv)
        return;
    const char *head[] = {"XREADGROUP", "GROUP", cs.cfg.group, cs.cfg.consumer, "COUNT", count,
                          "BLOCK", block, "STREAMS"};
    memcpy(argv, head, sizeof(head));
    for (size_t i = 0; i < rd->n; i++) {
        argv[9 + i] = rd->shards[i]->name;
        argv[9 + rd->n + i] = ">";
    }
    int rc = pg_redis_argv(rd->link, on_read, rd, (int)argc, argv, NULL);
    free(argv);
    if (rc < 0)
        return;     /* the link is down: its on_up starts again */
    rd->reading = true;
    rd->reserved = k;
    cs.reserved += k;
}

static void read_all(void)
{
    for (size_t i = 0; i < cs.nshards; i++)
        if (cs.shards[i].reader->shards[0] == &cs.shards[i])
            read_more(cs.shards[i].reader);
}

/* The shard of rd named name (len bytes), or NULL. */
static cs_shard *shard_named(cs_reader *rd, const redisReply *name)
{
    if (name->type != REDIS_REPLY_STRING)
        return NULL;
    for (size_t i = 0; i < rd->n; i++)
        if (strlen(rd->shards[i]->name) == name->len &&
            memcmp(rd->shards[i]->name, name->str, name->len) == 0)
            return rd->shards[i];
    return NULL;
}

/* [[stream, [[id, [field, value, ...]], ...]], ...] */
static void take_entries(cs_reader *rd, const redisReply *reply)
{
    for (size_t s = 0; s < reply->elements; s++) {
        const redisReply *st = reply->element[s];
        if (st->type != REDIS_REPLY_ARRAY || st->elements < 2 ||
            st->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        cs_shard *shard = shard_named(rd, st->element[0]);
        if (!shard) {
            pg_error("XREADGROUP answered for a stream not asked for: skipped");
            continue;
        }
        const redisReply *items = st->element[1];
        for (size_t i = 0; i < items->elements; i++) {
            cs.stats.read++;
            cs_intake(shard, items->element[i], 1);
        }
    }
}

static void on_read(struct redisReply *reply, void *priv)
{
    cs_reader *rd = priv;
    rd->reading = false;
    cs.reserved -= rd->reserved;
    rd->reserved = 0;
    if (!reply)
        return;     /* connection lost */
    if (reply->type == REDIS_REPLY_ERROR) {
        if (strncmp(reply->str, "NOGROUP", 7) == 0) {
            pg_warn("consumer group %s of stream %s is gone (Redis restarted without its data?): "
                    "creating it again", cs.cfg.group, rd->shards[0]->name);
            create_groups(rd);
        } else {
            pg_log_limited(&rd->log, PG_LOG_WARN, "XREADGROUP on %s failed: %s; retrying",
                           rd->shards[0]->name, reply->str);
            cs_shards_refresh();    /* a cluster: the stream may have moved (UNBLOCKED) */
            retry_later(rd);
        }
        return;
    }
    if (reply->type == REDIS_REPLY_ARRAY)
        take_entries(rd, reply);
    read_more(rd);
}

typedef struct {
    cs_reader *rd;
    cs_shard *shard;
} group_ask;

static void on_group(struct redisReply *reply, void *priv)
{
    group_ask *g = priv;
    cs_reader *rd = g->rd;
    cs_shard *s = g->shard;
    free(g);
    rd->groups_out--;
    if (!reply) {
        rd->groups_failed = true;
    } else if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "BUSYGROUP", 9) != 0) {
        pg_log_limited(&rd->log, PG_LOG_WARN, "XGROUP CREATE %s %s failed: %s; retrying",
                       s->name, cs.cfg.group, reply->str);
        rd->groups_failed = true;
    } else if (reply->type != REDIS_REPLY_ERROR) {
        pg_info("created consumer group %s on stream %s", cs.cfg.group, s->name);
    }
    if (rd->groups_out)
        return;
    if (rd->groups_failed && reply)
        retry_later(rd);
    else if (!rd->groups_failed)
        read_more(rd);
}

/* XGROUP CREATE ... MKSTREAM for each of rd's shards; reading starts when
 * all have answered. */
static void create_groups(cs_reader *rd)
{
    if (rd->groups_out)
        return;
    rd->groups_failed = false;
    for (size_t i = 0; i < rd->n; i++) {
        group_ask *g = malloc(sizeof(*g));
        if (!g) {
            rd->groups_failed = true;
            break;
        }
        *g = (group_ask){rd, rd->shards[i]};
        const char *argv[] = {"XGROUP", "CREATE", rd->shards[i]->name, cs.cfg.group, "0",
                              "MKSTREAM"};
        if (pg_redis_argv(rd->link, on_group, g, 6, argv, NULL) < 0) {
            free(g);
            rd->groups_failed = true;
            break;
        }
        rd->groups_out++;
    }
    if (rd->groups_failed && !rd->groups_out && pg_redis_up(rd->link))
        retry_later(rd);
}

/* Each (re)connect of a reader: the groups may be gone (Redis restarted
 * without its data), so make sure of them first, then read. */
void cs_stream_reader_up(cs_reader *rd)
{
    create_groups(rd);
}

/* ---- reclaiming from dead consumers ---- */

/* Takes the entries of an XAUTOCLAIM reply; false when the scan is over. */
static bool take_claimed(cs_shard *s, const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_ARRAY) {
        if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOGROUP", 7) != 0)
            pg_log_limited(&claim_log, PG_LOG_WARN, "XAUTOCLAIM on %s failed: %s", s->name,
                           reply->str);
        strcpy(s->cursor, "0-0");
        return false;
    }
    const redisReply *items = reply->element[1];
    size_t taken = 0;
    for (size_t i = 0; i < items->elements; i++) {
        const redisReply *it = items->element[i];
        if (it->type == REDIS_REPLY_ARRAY && it->elements >= 1 &&
            it->element[0]->type == REDIS_REPLY_STRING && !cs_entry_find(s, it->element[0]->str)) {
            taken++;
            cs_intake(s, it, 0);
        }
    }
    if (taken) {
        cs.stats.claimed += taken;
        pg_info("reclaimed %zu entries left pending over %lld ms (by a stopped consumer) in %s",
                taken, cs.cfg.claim_min_idle_ms, s->name);
    }
    if (reply->element[0]->len < sizeof(s->cursor))
        snprintf(s->cursor, sizeof(s->cursor), "%s", reply->element[0]->str);
    else
        strcpy(s->cursor, "0-0");
    return strcmp(s->cursor, "0-0") != 0;
}

static void claim_shard(cs_shard *s);

static void on_claim(struct redisReply *reply, void *priv)
{
    cs_shard *s = priv;
    s->claiming = false;
    cs.reserved -= s->claim_reserved;
    s->claim_reserved = 0;
    if (reply && take_claimed(s, reply))
        claim_shard(s);     /* the scan goes on while there is room */
    read_all();             /* the room it had reserved is free again */
}

/* One XAUTOCLAIM on s; a round that finds no room goes before the next read. */
static void claim_shard(cs_shard *s)
{
    pg_redis *control = cs_shard_control(s);
    if (cs.stopping || s->claiming || !pg_redis_up(control))
        return;
    size_t room = cs_room();
    s->claim_due = room == 0;
    if (room == 0)
        return;
    size_t k = room < CLAIM_BATCH ? room : CLAIM_BATCH;
    char idle[24], count[24];
    snprintf(idle, sizeof(idle), "%lld", cs.cfg.claim_min_idle_ms);
    snprintf(count, sizeof(count), "%zu", k);
    const char *argv[] = {"XAUTOCLAIM", s->name, cs.cfg.group, cs.cfg.consumer, idle, s->cursor,
                          "COUNT", count};
    if (pg_redis_argv(control, on_claim, s, 8, argv, NULL) < 0)
        return;
    s->claiming = true;
    s->claim_reserved = k;
    cs.reserved += k;
}

/* A round over every shard, starting at a different one each time so
 * that a small max_in_flight does not favour the first. */
static void claim_round(void)
{
    size_t first = claim_next++ % (cs.nshards ? cs.nshards : 1);
    for (size_t i = 0; i < cs.nshards; i++)
        claim_shard(&cs.shards[(first + i) % cs.nshards]);
}

static void on_claim_tick(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    claim_round();
}

static void on_count(struct redisReply *reply, void *priv)
{
    cs_entry *e = priv;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 0) {
        pg_debug("entry %s is no longer pending (acknowledged elsewhere): dropped", e->key);
        e->state = CS_E_DONE;
        cs_entry_release(e);
        return;
    }
    long long n = 2; /* unknown: it was delivered before, and claimed now */
    if (reply && reply->type == REDIS_REPLY_ARRAY) {
        const redisReply *row = reply->element[0];
        if (row->type == REDIS_REPLY_ARRAY && row->elements >= 4 &&
            row->element[3]->type == REDIS_REPLY_INTEGER)
            n = row->element[3]->integer;
    }
    cs_flow_counted(e, n);
}

void cs_stream_count(cs_entry *e)
{
    e->state = CS_E_COUNTING;
    const char *argv[] = {"XPENDING", e->shard->name, cs.cfg.group, e->id, e->id, "1"};
    if (pg_redis_argv(cs_shard_control(e->shard), on_count, e, 6, argv, NULL) < 0)
        cs_flow_counted(e, 2);
}

/* ---- keeping held entries ours ---- */

typedef struct {
    cs_entry **v;
    size_t n, cap;
    uint64_t before;
} stale_set;

static void collect_stale(cs_entry *e, void *arg)
{
    stale_set *s = arg;
    if (s->n < s->cap && e->touched_ms <= s->before)
        s->v[s->n++] = e;
}

static int by_shard(const void *a, const void *b)
{
    size_t x = (*(cs_entry *const *)a)->shard->index, y = (*(cs_entry *const *)b)->shard->index;
    return x < y ? -1 : x > y;
}

static void on_touch_tick(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    size_t held = cs_entries_held();
    if (held == 0)
        return;
    stale_set s = {malloc(held * sizeof(cs_entry *)), 0, held,
                   cs_now_ms() - (uint64_t)cs.cfg.claim_min_idle_ms / 3};
    if (!s.v)
        return;
    cs_entries_foreach(collect_stale, &s);
    qsort(s.v, s.n, sizeof(*s.v), by_shard);
    for (size_t i = 0; i < s.n;) {     /* batches of one shard each */
        size_t n = 1;
        while (i + n < s.n && n < TOUCH_BATCH && s.v[i + n]->shard == s.v[i]->shard)
            n++;
        cs_acks_touch(s.v + i, n);
        i += n;
    }
    free(s.v);
}

/* ---- stats ---- */

static void on_stats_tick(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    if (memcmp(&last_stats, &cs.stats, sizeof(cs.stats)) == 0)
        return;
    last_stats = cs.stats;
    pg_info("stats: read %llu, reclaimed %llu, sent %llu, acked %llu, dead-lettered %llu, "
            "retried %llu, waited %llu; held %zu, in flight %zu, gateways up %zu",
            cs.stats.read, cs.stats.claimed, cs.stats.sent, cs.stats.acked, cs.stats.dead,
            cs.stats.retried, cs.stats.waited, cs_entries_held(), cs.sent, cs_nodes_up());
}

/* ---- start and stop ---- */

void cs_stream_room(void)
{
    for (size_t i = 0; i < cs.nshards; i++)
        if (cs.shards[i].claim_due)
            claim_shard(&cs.shards[i]);
    read_all();
}

void cs_stream_control_up(void)
{
    claim_round();
}

static int64_t tick(long long ms, pg_timer_fn fn)
{
    if (ms < 100)
        ms = 100;
    return pg_timer_tick((uint32_t)ms, fn, NULL);
}

int cs_stream_start(void)
{
    long long claim_ms = cs.cfg.claim_min_idle_ms / 2;
    if (claim_ms > 5000)
        claim_ms = 5000;
    claim_timer = tick(claim_ms, on_claim_tick);
    touch_timer = tick(cs.cfg.claim_min_idle_ms / 3, on_touch_tick);
    stats_timer = tick(STATS_MS, on_stats_tick);
    if (claim_timer < 0 || touch_timer < 0 || stats_timer < 0 || cs_shards_start() < 0) {
        pg_error("cannot start reading the stream (out of memory)");
        return -1;
    }
    return 0;
}

void cs_stream_stop_reading(void)
{
    cs_timer_clear(&claim_timer);
    cs_timer_clear(&touch_timer);
    cs_shards_stop_reading();
}

void cs_stream_done(void)
{
    cs_stream_stop_reading();
    cs_timer_clear(&stats_timer);
    on_stats_tick(0, NULL);
}

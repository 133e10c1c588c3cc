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
 * stream is skipped. */
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

static pg_redis *reader;
static bool reading;            /* an XREADGROUP is out */
static size_t read_reserved;
static bool claiming;           /* an XAUTOCLAIM is out */
static size_t claim_reserved;
static char cursor[CS_ID_MAX] = "0-0";
static int64_t retry_timer, claim_timer, touch_timer, stats_timer;
static pg_ratelog read_log, claim_log;
static cs_stats last_stats;

static void create_group(void);
static void claim_round(void);

static void on_retry(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    retry_timer = 0;
    create_group();
}


/* Reads again once this much room is free: no dribble of one-entry reads. */
static size_t read_threshold(void)
{
    size_t t = (size_t)cs.cfg.max_in_flight / 4;
    if (t > (size_t)cs.cfg.count)
        t = (size_t)cs.cfg.count;
    return t ? t : 1;
}

static void on_read(struct redisReply *reply, void *priv);

static void read_more(void)
{
    if (cs.stopping || reading || retry_timer > 0 || !pg_redis_up(reader))
        return;
    size_t room = cs_room();
    if (room == 0 || (room < read_threshold() && cs_entries_held() > 0))
        return;     /* cs_stream_room() calls again when entries leave */
    size_t k = room < (size_t)cs.cfg.count ? room : (size_t)cs.cfg.count;
    char count[24], block[24];
    snprintf(count, sizeof(count), "%zu", k);
    snprintf(block, sizeof(block), "%lld", cs.cfg.block_ms);
    const char *argv[] = {"XREADGROUP", "GROUP", cs.cfg.group, cs.cfg.consumer, "COUNT", count,
                          "BLOCK", block, "STREAMS", cs.cfg.stream, ">"};
    if (pg_redis_argv(reader, on_read, NULL, 11, argv, NULL) < 0)
        return;     /* the link is down: its on_up starts again */
    reading = true;
    read_reserved = k;
    cs.reserved += k;
}

/* [[stream, [[id, [field, value, ...]], ...]], ...] */
static void take_entries(const redisReply *reply)
{
    for (size_t s = 0; s < reply->elements; s++) {
        const redisReply *st = reply->element[s];
        if (st->type != REDIS_REPLY_ARRAY || st->elements < 2 ||
            st->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        const redisReply *items = st->element[1];
        for (size_t i = 0; i < items->elements; i++) {
            cs.stats.read++;
            cs_intake(items->element[i], 1);
        }
    }
}

static void on_read(struct redisReply *reply, void *priv)
{
    (void)priv;
    reading = false;
    cs.reserved -= read_reserved;
    read_reserved = 0;
    if (!reply)
        return;     /* connection lost */
    if (reply->type == REDIS_REPLY_ERROR) {
        if (strncmp(reply->str, "NOGROUP", 7) == 0) {
            pg_warn("consumer group %s of stream %s is gone (Redis restarted without its data?): "
                    "creating it again", cs.cfg.group, cs.cfg.stream);
            create_group();
        } else {
            pg_log_limited(&read_log, PG_LOG_WARN, "XREADGROUP on %s failed: %s; retrying",
                       cs.cfg.stream, reply->str);
            cs_retry_later(&retry_timer, on_retry);
        }
        return;
    }
    if (reply->type == REDIS_REPLY_ARRAY)
        take_entries(reply);
    read_more();
}

static void on_group(struct redisReply *reply, void *priv)
{
    (void)priv;
    if (!reply)
        return;
    if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "BUSYGROUP", 9) != 0) {
        pg_log_limited(&read_log, PG_LOG_WARN, "XGROUP CREATE %s %s failed: %s; retrying",
                       cs.cfg.stream, cs.cfg.group, reply->str);
        cs_retry_later(&retry_timer, on_retry);
        return;
    }
    if (reply->type != REDIS_REPLY_ERROR)
        pg_info("created consumer group %s on stream %s", cs.cfg.group, cs.cfg.stream);
    read_more();
}

static void create_group(void)
{
    const char *argv[] = {"XGROUP", "CREATE", cs.cfg.stream, cs.cfg.group, "0", "MKSTREAM"};
    pg_redis_argv(reader, on_group, NULL, 6, argv, NULL);
}

/* Each (re)connect of the reader: the group may be gone (Redis restarted
 * without its data), so make sure of it first, then read. */
static void on_reader_up(pg_redis *r, void *arg)
{
    (void)r;
    (void)arg;
    create_group();
}

/* ---- reclaiming from dead consumers ---- */

/* Takes the entries of an XAUTOCLAIM reply; false when the scan is over. */
static bool take_claimed(const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_ARRAY) {
        if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOGROUP", 7) != 0)
            pg_log_limited(&claim_log, PG_LOG_WARN, "XAUTOCLAIM on %s failed: %s", cs.cfg.stream,
                           reply->str);
        strcpy(cursor, "0-0");
        return false;
    }
    const redisReply *items = reply->element[1];
    size_t taken = 0;
    for (size_t i = 0; i < items->elements; i++) {
        const redisReply *it = items->element[i];
        if (it->type == REDIS_REPLY_ARRAY && it->elements >= 1 &&
            it->element[0]->type == REDIS_REPLY_STRING && !cs_entry_find(it->element[0]->str)) {
            taken++;
            cs_intake(it, 0);
        }
    }
    if (taken) {
        cs.stats.claimed += taken;
        pg_info("reclaimed %zu entries left pending over %lld ms (by a stopped consumer)", taken,
                cs.cfg.claim_min_idle_ms);
    }
    snprintf(cursor, sizeof(cursor), "%s", reply->element[0]->str);
    return strcmp(cursor, "0-0") != 0;
}

static void on_claim(struct redisReply *reply, void *priv)
{
    (void)priv;
    claiming = false;
    cs.reserved -= claim_reserved;
    claim_reserved = 0;
    if (reply && take_claimed(reply))
        claim_round();  /* the scan goes on while there is room */
    read_more();        /* the room it had reserved is free again */
}

/* A claim round is due but found no room: it goes before the next read. */
static bool claim_due;

static void claim_round(void)
{
    if (cs.stopping || claiming || !cs_acks_link_up())
        return;
    size_t room = cs_room();
    claim_due = room == 0;
    if (room == 0)
        return;
    size_t k = room < CLAIM_BATCH ? room : CLAIM_BATCH;
    char idle[24], count[24];
    snprintf(idle, sizeof(idle), "%lld", cs.cfg.claim_min_idle_ms);
    snprintf(count, sizeof(count), "%zu", k);
    const char *argv[] = {"XAUTOCLAIM", cs.cfg.stream, cs.cfg.group, cs.cfg.consumer, idle, cursor,
                          "COUNT", count};
    if (pg_redis_argv(cs_acks_link(), on_claim, NULL, 8, argv, NULL) < 0)
        return;
    claiming = true;
    claim_reserved = k;
    cs.reserved += k;
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
        pg_debug("entry %s is no longer pending (acknowledged elsewhere): dropped", e->id);
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
    const char *argv[] = {"XPENDING", cs.cfg.stream, cs.cfg.group, e->id, e->id, "1"};
    if (pg_redis_argv(cs_acks_link(), on_count, e, 6, argv, NULL) < 0)
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

static void on_touch_tick(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    size_t held = cs_entries_held();
    if (held == 0 || !cs_acks_link_up())
        return;
    stale_set s = {malloc(held * sizeof(cs_entry *)), 0, held,
                   cs_now_ms() - (uint64_t)cs.cfg.claim_min_idle_ms / 3};
    if (!s.v)
        return;
    cs_entries_foreach(collect_stale, &s);
    for (size_t i = 0; i < s.n; i += TOUCH_BATCH)
        cs_acks_touch(s.v + i, s.n - i < TOUCH_BATCH ? s.n - i : TOUCH_BATCH);
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
    if (claim_due)
        claim_round();
    read_more();
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
    reader = cs_redis_link("reader", on_reader_up);
    if (claim_timer < 0 || touch_timer < 0 || stats_timer < 0 || !reader) {
        pg_error("cannot start reading the stream (out of memory)");
        return -1;
    }
    return 0;
}

pg_redis *cs_stream_link(void)
{
    return reader;
}

void cs_stream_stop_reading(void)
{
    cs_timer_clear(&claim_timer);
    cs_timer_clear(&touch_timer);
    cs_timer_clear(&retry_timer);
    pg_redis *r = reader;
    reader = NULL;
    pg_redis_free(r);   /* an XREADGROUP still blocked is dropped unanswered */
}

void cs_stream_done(void)
{
    cs_stream_stop_reading();
    cs_timer_clear(&stats_timer);
    on_stats_tick(0, NULL);
}

/* trim.c - the streams shed what every consumer group has finished.
 *
 * An XACK takes an entry out of its group's pending list, not out of the
 * stream: without a trim every order ever published stays in Redis.  Every
 * trim_interval_ms each stream is trimmed with XTRIM MINID ~ <bound>, where
 * bound is the least, over every group of the stream (XINFO GROUPS; other
 * readers' groups too, not only ours), of
 *   - the group's last-delivered-id: what it has not read is above it;
 *   - its oldest pending entry (XPENDING's summary), when it has any: read
 *     and not XACKed yet, so still needed.
 * MINID keeps every entry at or above the bound, and "~" lets Redis keep
 * more (it drops whole nodes of its radix tree only), never less.  Entries
 * only leave a pending list and groups only read forward, so a bound found
 * a moment ago is still safe when the XTRIM arrives.  A round in which any
 * answer is missing or unreadable trims nothing; a stream without a group,
 * or a group that has read nothing (0-0), keeps everything.  Several
 * consumers of a group may all trim: the same bound, the same result.
 * Dead letters are not trimmed: an operator replays or deletes them. */
#include "consumer.h"

#include "log.h"
#include "timer.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t ms, seq;
} stream_id;

typedef struct {
    cs_shard *shard;
    size_t waiting;             /* answers still out */
    bool failed;                /* one could not be read: no trim this round */
    bool known;                 /* bound holds a group's figure */
    stream_id bound;
} trim_round;

static int64_t tick_timer;
static pg_ratelog trim_log;

/* "<ms>-<seq>" into *id: true, or false when text is not a stream id. */
static bool id_parse(const char *text, size_t len, stream_id *id)
{
    char buf[CS_ID_MAX];
    int used = 0;
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, text, len);
    buf[len] = '\0';
    return buf[0] >= '0' && buf[0] <= '9' &&
           sscanf(buf, "%" SCNu64 "-%" SCNu64 "%n", &id->ms, &id->seq, &used) == 2 &&
           (size_t)used == len;
}

static bool id_less(stream_id a, stream_id b)
{
    return a.ms < b.ms || (a.ms == b.ms && a.seq < b.seq);
}

/* Lowers the round's bound to the id in reply (a string); a missing or
 * malformed id fails the round. */
static void lower_bound(trim_round *t, const redisReply *reply)
{
    stream_id id;
    if (!reply || reply->type != REDIS_REPLY_STRING || !id_parse(reply->str, reply->len, &id)) {
        t->failed = true;
        return;
    }
    if (!t->known || id_less(id, t->bound))
        t->bound = id;
    t->known = true;
}

static void on_trimmed(struct redisReply *reply, void *priv)
{
    cs_shard *s = priv;
    s->trimming = false;
    if (reply && reply->type == REDIS_REPLY_INTEGER) {
        cs.stats.trimmed += (unsigned long long)reply->integer;
        if (reply->integer > 0)
            pg_debug("stream %s: %lld finished entries trimmed", s->name, reply->integer);
    } else if (reply) {
        pg_log_limited(&trim_log, PG_LOG_WARN, "XTRIM %s MINID failed: %s", s->name,
                       reply->type == REDIS_REPLY_ERROR ? reply->str : "an unexpected reply");
    }
}

/* The last answer of a round is in: trim, or not this time. */
static void finish(trim_round *t)
{
    cs_shard *s = t->shard;
    bool trim = !t->failed && t->known && !cs.stopping && (t->bound.ms || t->bound.seq);
    char bound[CS_ID_MAX];
    snprintf(bound, sizeof(bound), "%" PRIu64 "-%" PRIu64, t->bound.ms, t->bound.seq);
    free(t);
    const char *argv[] = {"XTRIM", s->name, "MINID", "~", bound};
    if (!trim || pg_redis_argv(cs_shard_control(s), on_trimmed, s, 5, argv, NULL) < 0)
        s->trimming = false;
}

static void answered(trim_round *t)
{
    if (--t->waiting == 0)
        finish(t);
}

/* XPENDING <stream> <group>: [count, oldest id, newest id, consumers]. */
static void on_pending(struct redisReply *reply, void *priv)
{
    trim_round *t = priv;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER)
        t->failed = true;
    else if (reply->element[0]->integer > 0)
        lower_bound(t, reply->element[1]);
    answered(t);
}

/* One group of XINFO GROUPS: its last-delivered-id, and when it has
 * entries pending, an XPENDING for the oldest of them. */
static void take_group(trim_round *t, const redisReply *group)
{
    const redisReply *name = cs_reply_field(group, "name");
    const redisReply *pending = cs_reply_field(group, "pending");
    lower_bound(t, cs_reply_field(group, "last-delivered-id"));
    if (!name || name->type != REDIS_REPLY_STRING || !pending ||
        pending->type != REDIS_REPLY_INTEGER) {
        t->failed = true;
        return;
    }
    if (pending->integer == 0)
        return;
    const char *argv[] = {"XPENDING", t->shard->name, name->str};
    if (pg_redis_argv(cs_shard_control(t->shard), on_pending, t, 3, argv, NULL) < 0)
        t->failed = true;
    else
        t->waiting++;
}

static void on_groups(struct redisReply *reply, void *priv)
{
    trim_round *t = priv;
    if (!reply || reply->type != REDIS_REPLY_ARRAY)
        t->failed = true;
    for (size_t i = 0; !t->failed && i < reply->elements; i++)
        take_group(t, reply->element[i]);
    answered(t);
}

static void start_round(cs_shard *s)
{
    trim_round *t = calloc(1, sizeof(*t));
    if (!t)
        return;
    t->shard = s;
    t->waiting = 1;
    const char *argv[] = {"XINFO", "GROUPS", s->name};
    if (pg_redis_argv(cs_shard_control(s), on_groups, t, 3, argv, NULL) < 0) {
        free(t);
        return;
    }
    s->trimming = true;
}

static void on_tick(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    for (size_t i = 0; i < cs.nshards && !cs.stopping; i++)
        if (!cs.shards[i].trimming)
            start_round(&cs.shards[i]);
}

int cs_trim_start(void)
{
    if (cs.cfg.trim_interval_ms <= 0)
        return 0;
    tick_timer = pg_timer_tick((uint32_t)cs.cfg.trim_interval_ms, on_tick, NULL);
    if (tick_timer < 0) {
        pg_error("no timer for trimming the streams");
        return -1;
    }
    return 0;
}

void cs_trim_stop(void)
{
    if (tick_timer > 0)
        pg_timer_clear(tick_timer);
    tick_timer = 0;
}

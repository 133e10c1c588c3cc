/* limits.c - how fast one browser, or one producing app, may make the
 * node work.
 *
 * Every signed-in tab could otherwise make the node, MySQL and another
 * agent's inbox do unbounded work: a flood of frames, of chat messages, or
 * of tabs.  Each connection has a token bucket for what it sends, kept by
 * its home worker (session.c; ACKs of messages it was really sent are free,
 * they are the work the node asked for); a uuid cut off for flooding is
 * refused for a while.  A sender's chat messages (all its tabs) and an
 * app's work orders (by chat_token) have buckets of the node's, in shared
 * memory.  A bucket is pure arithmetic on a clock the caller gives, so it
 * is unit tested without a server. */
#include "gateway.h"

#include "log.h"
#include "timer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int gw_bucket_take(gw_bucket *b, double per_second, double burst, int64_t now_ms)
{
    if (per_second <= 0)
        return 1;   /* no limit */
    if (b->at_ms == 0 || now_ms < b->at_ms) {
        b->tokens = burst;   /* a new bucket, or a clock that went back: full */
    } else {
        b->tokens += (double)(now_ms - b->at_ms) * per_second / 1000.0;
        if (b->tokens > burst)
            b->tokens = burst;
    }
    b->at_ms = now_ms;
    if (b->tokens < 1.0)
        return 0;
    b->tokens -= 1.0;
    return 1;
}

/* ---- buckets in shared memory: an app's work orders, a sender's chat ----
 *
 * Any worker may take an app's request, and a sender's tabs have different
 * home workers, so these buckets are the node's: a row per app ('a') or
 * sender ('c'), named by a 64-bit FNV-1a of the token or uuid (either may be
 * longer than a key).  A sender's row idle for a minute holds a full bucket
 * again, so worker 0 drops such rows each minute. */

#define SWEEP_MS 60000

static pg_table *shared;
static int col_micro, col_at;
static int64_t sweep_timer;

int gw_limits_create(uint32_t capacity)
{
    if (!(shared = pg_table_new(capacity)))
        return -1;
    col_micro = pg_table_column(shared, "micro_tokens", PG_TABLE_INT, 0);
    col_at = pg_table_column(shared, "at_ms", PG_TABLE_INT, 0);
    return col_micro < 0 || col_at < 0 ? -1 : pg_table_create(shared);
}

void gw_limits_destroy(void)
{
    pg_table_destroy(shared);
    shared = NULL;
}

typedef struct {
    double per_second, burst;
    int64_t now_ms;
    int taken;
} shared_take;

static pg_table_verdict take_row(void *row, int found, void *arg)
{
    shared_take *a = arg;
    gw_bucket b = {.tokens = found ? (double)pg_table_row_get_int(shared, row, col_micro) / 1e6 : 0,
                   .at_ms = found ? pg_table_row_get_int(shared, row, col_at) : 0};
    a->taken = gw_bucket_take(&b, a->per_second, a->burst, a->now_ms);
    pg_table_row_set_int(shared, row, col_micro, (int64_t)(b.tokens * 1e6));
    pg_table_row_set_int(shared, row, col_at, b.at_ms);
    return PG_TABLE_KEEP;
}

static int shared_take_one(char kind, const char *name, double per_second, double burst,
                           int64_t now_ms)
{
    if (per_second <= 0 || !shared || !name)
        return 1;
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    char key[18];
    snprintf(key, sizeof(key), "%c%016llx", kind, (unsigned long long)h);
    shared_take a = {.per_second = per_second, .burst = burst, .now_ms = now_ms, .taken = 1};
    if (pg_table_update(shared, key, take_row, &a) < 0)
        return 1;   /* table full: not limited rather than refused */
    if (!a.taken)
        atomic_fetch_add(&gw.counters->limited, 1);
    return a.taken;
}

int gw_app_within_rate(const char *chat_token, int64_t now_ms)
{
    return shared_take_one('a', chat_token, (double)gw.cfg.app_rate, (double)gw.cfg.app_burst,
                           now_ms);
}

int gw_chat_within_rate(const char *sender, int64_t now_ms)
{
    return shared_take_one('c', sender, (double)gw.cfg.chat_per_minute / 60.0,
                           (double)gw.cfg.chat_per_minute, now_ms);
}

typedef struct {
    int64_t before_ms;
    char (*keys)[PG_TABLE_KEY_MAX + 1];
    size_t n, cap;
} idle_rows;

static int note_idle(const char *key, const void *row, void *arg)
{
    idle_rows *idle = arg;
    if (key[0] == 'c' && pg_table_row_get_int(shared, row, col_at) < idle->before_ms &&
        idle->n < idle->cap)
        snprintf(idle->keys[idle->n++], PG_TABLE_KEY_MAX + 1, "%s", key);
    return 0;
}

static void sweep(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    idle_rows idle = {.before_ms = (int64_t)pg_now_ms() - SWEEP_MS, .cap = 4096};
    idle.keys = malloc(idle.cap * sizeof(*idle.keys));
    if (!idle.keys)
        return;
    pg_table_iterate(shared, note_idle, &idle);
    for (size_t i = 0; i < idle.n; i++)
        pg_table_del(shared, idle.keys[i]);
    free(idle.keys);
}

void gw_limits_start(void)
{
    if (pg_server_worker_id(gw.server) == 0 && shared)
        sweep_timer = pg_timer_tick(SWEEP_MS, sweep, NULL);
}

void gw_limits_stop(void)
{
    if (sweep_timer > 0)
        pg_timer_clear(sweep_timer);
    sweep_timer = 0;
}

/* ---- flood_penalty_s: a uuid cut off for flooding stays off a while ---- */

/* A tab closed for flooding that connects again at once would cost a
 * registration in MySQL each time (bench S5: some 300 a second); its uuid
 * is refused right after the handshake for flood_penalty_s instead. */
static pg_table *penalties;          /* uuid -> until_ms */
static int col_until;

int gw_penalties_create(uint32_t capacity)
{
    if (!(penalties = pg_table_new(capacity)))
        return -1;
    col_until = pg_table_column(penalties, "until_ms", PG_TABLE_INT, 0);
    return col_until < 0 ? -1 : pg_table_create(penalties);
}

void gw_penalties_destroy(void)
{
    pg_table_destroy(penalties);
    penalties = NULL;
}

void gw_penalize(const char *uuid, int64_t now_ms)
{
    char row[sizeof(int64_t)] = {0};
    if (!penalties || gw.cfg.flood_penalty_s <= 0 || !uuid)
        return;
    pg_table_row_set_int(penalties, row, col_until, now_ms + gw.cfg.flood_penalty_s * 1000);
    if (pg_table_set(penalties, uuid, row) < 0)
        pg_warn("penalty table full: %s may connect again at once", uuid);
}

int gw_penalized(const char *uuid, int64_t now_ms)
{
    char row[sizeof(int64_t)];
    if (!penalties || pg_table_row_size(penalties) > sizeof(row) ||
        pg_table_get(penalties, uuid, row) < 0)
        return 0;
    if (pg_table_row_get_int(penalties, row, col_until) > now_ms)
        return 1;
    pg_table_del(penalties, uuid);
    return 0;
}

/* limits.c - how fast one browser, or one producing app, may make the
 * node work.
 *
 * Every signed-in tab could otherwise make the node, MySQL and another
 * agent's inbox do unbounded work: a flood of frames, of chat messages, or
 * of tabs.  Each connection has two token buckets, kept by its home worker
 * (session.c): one for what it sends (ACKs of messages it was really sent
 * are free, they are the work the node asked for), one for its chat
 * messages.  An app's work orders (by chat_token) share one bucket per
 * node, in shared memory, since any worker may take a request.  A bucket is
 * pure arithmetic on a clock the caller gives, so it is unit tested without
 * a server. */
#include "gateway.h"

#include "log.h"

#include <stdio.h>
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

/* ---- app_rate: work orders per chat_token on this node ---- */

static pg_table *apps;               /* token hash -> bucket (micro-tokens, at_ms) */
static int col_micro, col_at;

int gw_app_limits_create(uint32_t capacity)
{
    if (!(apps = pg_table_new(capacity)))
        return -1;
    col_micro = pg_table_column(apps, "micro_tokens", PG_TABLE_INT, 0);
    col_at = pg_table_column(apps, "at_ms", PG_TABLE_INT, 0);
    return col_micro < 0 || col_at < 0 ? -1 : pg_table_create(apps);
}

void gw_app_limits_destroy(void)
{
    pg_table_destroy(apps);
    apps = NULL;
}

typedef struct {
    int64_t now_ms;
    int taken;
} app_take;

static pg_table_verdict take_row(void *row, int found, void *arg)
{
    app_take *a = arg;
    gw_bucket b = {.tokens = found ? (double)pg_table_row_get_int(apps, row, col_micro) / 1e6 : 0,
                   .at_ms = found ? pg_table_row_get_int(apps, row, col_at) : 0};
    a->taken = gw_bucket_take(&b, (double)gw.cfg.app_rate, (double)gw.cfg.app_burst, a->now_ms);
    pg_table_row_set_int(apps, row, col_micro, (int64_t)(b.tokens * 1e6));
    pg_table_row_set_int(apps, row, col_at, b.at_ms);
    return PG_TABLE_KEEP;
}

int gw_app_within_rate(const char *chat_token, int64_t now_ms)
{
    if (gw.cfg.app_rate <= 0 || !apps || !chat_token)
        return 1;
    /* tokens may be longer than a key: a 64-bit FNV-1a of it names its row */
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = chat_token; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    char key[17];
    snprintf(key, sizeof(key), "%016llx", (unsigned long long)h);
    app_take a = {.now_ms = now_ms, .taken = 1};
    if (pg_table_update(apps, key, take_row, &a) < 0)
        return 1;   /* table full: more apps than app_rate_apps; not limited */
    if (!a.taken)
        atomic_fetch_add(&gw.counters->limited, 1);
    return a.taken;
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

/* status.c - the consumer's row in daemon_status (common/daemon_status.h).
 *
 * Every PG_STATUS_EVERY_MS the row is replaced with what the consumer knows
 * of itself - counters (cs.stats), Redis's lag and pending and the replies
 * by code (metrics.c), dead letters, and how Redis, MySQL and the gateways
 * look from here - so that the cluster console of any gateway shows it.
 * The REPLACE is a job of the MySQL thread (mysql.c), with its timeouts and
 * its back-off: an outage is logged there at its rate and holds up no
 * delivery; a write still waiting when the next is due makes that one be
 * skipped.  A clean stop deletes the row.
 *
 * Dead letters are counted here as flow.c decides them: by kind of reason,
 * which the console groups by, and the RECENT_MAX newest with their full
 * reason, entry id and time. */
#include "consumer.h"

#include "daemon_status.h"
#include "log.h"
#include "timer.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define RECENT_MAX 20
#define REASON_MAX 512          /* flow.c's reasons are no longer */

enum { K_MALFORMED, K_TOO_BIG, K_REFUSED, K_GAVE_UP, K_OTHER, K_KINDS };
static const char *const kind_names[K_KINDS] = {"malformed", "too big", "refused", "gave up",
                                                "other"};

typedef struct {
    int64_t at;                 /* wall clock, ms */
    char id[CS_ID_MAX];
    char reason[REASON_MAX];    /* valid UTF-8 */
} dead_letter;

static struct {
    unsigned long long total, by_kind[K_KINDS];
    dead_letter recent[RECENT_MAX];   /* a ring: next is the slot of the next one */
    size_t next, n;
} dead;

static char daemon_id[PG_STATUS_ID_MAX + 1];   /* "": not started */
static uint64_t started_ms;
static int64_t timer;
static pg_ratelog write_log;

static bool starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The reasons flow.c and intake.c give, by kind. */
static int kind_of(const char *reason)
{
    if (starts(reason, "malformed") || strcmp(reason, "out of memory reading msg") == 0)
        return K_MALFORMED;
    if (starts(reason, "msg is ") && strstr(reason, "over max_message_size"))
        return K_TOO_BIG;
    if (starts(reason, "refused by gateway"))
        return K_REFUSED;
    if (starts(reason, "gave up"))
        return K_GAVE_UP;
    return K_OTHER;
}

void cs_status_dead(const char *id, const char *reason)
{
    dead.total++;
    dead.by_kind[kind_of(reason)]++;
    dead_letter *d = &dead.recent[dead.next];
    d->at = (int64_t)pg_wall_ms();
    pg_status_utf8(d->id, sizeof(d->id), id);
    pg_status_utf8(d->reason, sizeof(d->reason), reason);
    dead.next = (dead.next + 1) % RECENT_MAX;
    if (dead.n < RECENT_MAX)
        dead.n++;
}

static json_t *dead_json(void)
{
    json_t *by = json_object(), *recent = json_array();
    for (int k = 0; k < K_KINDS; k++)
        json_object_set_new(by, kind_names[k], json_integer((json_int_t)dead.by_kind[k]));
    for (size_t i = 1; i <= dead.n; i++) {   /* newest first */
        const dead_letter *d = &dead.recent[(dead.next + RECENT_MAX - i) % RECENT_MAX];
        json_array_append_new(recent, json_pack("{s:I,s:s,s:s}", "at", (json_int_t)d->at, "id",
                                                d->id, "reason", d->reason));
    }
    return json_pack("{s:I,s:o,s:o}", "total", (json_int_t)dead.total, "by_reason", by, "recent",
                     recent);
}

static json_t *counters_json(void)
{
    const cs_stats *s = &cs.stats;
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "read", (json_int_t)s->read, "claimed",
                     (json_int_t)s->claimed, "sent", (json_int_t)s->sent, "acked",
                     (json_int_t)s->acked, "dead", (json_int_t)s->dead, "retried",
                     (json_int_t)s->retried);
}

static void add_reply(const char *code, unsigned long long n, void *arg)
{
    json_object_set_new(arg, code, json_integer((json_int_t)n));
}

/* With several streams: each one's name, lag and pending ("stream" is the
 * setting, lag and pending their sums). */
static json_t *streams_json(void)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < cs.nshards; i++) {
        long long lag, pending;
        cs_metrics_shard(i, &lag, &pending);
        json_array_append_new(a, json_pack("{s:o,s:I,s:I}", "name",
                                           pg_status_string(cs.shards[i].name), "lag",
                                           (json_int_t)lag, "pending", (json_int_t)pending));
    }
    return a;
}

/* The report, in the shape the cluster console reads (README, "Operators"). */
static json_t *report(void)
{
    long long lag, pending;
    cs_metrics_group(&lag, &pending);
    json_t *replies = json_object();
    if (replies)
        cs_metrics_replies(add_reply, replies);
    json_t *r = json_pack("{s:s,s:I,s:o,s:o,s:o,s:I,s:I,s:I,s:I,s:o,s:o,s:o,s:{s:b},s:{s:b,s:s},s:I}",
                     "role", "consumer", "at", (json_int_t)(int64_t)pg_wall_ms(), "name",
                     pg_status_string(cs.cfg.consumer), "stream", pg_status_string(cs.cfg.stream),
                     "group", pg_status_string(cs.cfg.group), "uptime",
                     (json_int_t)((cs_now_ms() - started_ms) / 1000), "lag", (json_int_t)lag,
                     "pending", (json_int_t)pending, "in_flight", (json_int_t)cs.sent, "counters",
                     counters_json(), "replies", replies, "dead_letters", dead_json(), "redis",
                     "ok", cs_acks_link_up(), "mysql", "ok", cs_mysql_ok(), "host",
                     cs_mysql_server(), "gateways",
                     (json_int_t)cs_nodes_up());
    if (r && cs.nshards > 1)
        json_object_set_new(r, "streams", streams_json());
    return r;
}

static char *row_text;           /* the report being written, owned by write_job */

static int write_row(pg_db *db, void *arg)
{
    (void)arg;
    return pg_status_write(db, daemon_id, "consumer", row_text);
}

static void row_written(int rc, void *arg)
{
    (void)rc;
    (void)arg;
    free(row_text);
    row_text = NULL;
}

static int remove_row(pg_db *db, void *arg)
{
    (void)arg;
    return pg_status_remove(db, daemon_id);
}

static cs_mysql_job write_job = {.what = "writing the status row", .run = write_row,
                                 .done = row_written};
static cs_mysql_job remove_job = {.what = "removing the status row", .run = remove_row};

static void publish(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    if (write_job.queued)
        return;   /* the last one still waits for MySQL */
    json_t *r = report();
    row_text = r ? json_dumps(r, JSON_COMPACT) : NULL;
    json_decref(r);
    if (!row_text) {
        pg_log_limited(&write_log, PG_LOG_ERROR, "status report not built (out of memory)");
        return;
    }
    cs_mysql_submit(&write_job);
}

int cs_status_start(void)
{
    pg_status_id(daemon_id, sizeof(daemon_id), "consumer", cs.cfg.consumer);
    started_ms = cs_now_ms();
    timer = pg_timer_tick(PG_STATUS_EVERY_MS, publish, NULL);
    if (timer < 0) {
        pg_error("no timer for the status row");
        return -1;
    }
    return 0;
}

void cs_status_stop(void)
{
    if (!*daemon_id)
        return;
    cs_timer_clear(&timer);
    cs_mysql_submit(&remove_job);   /* after a write still queued; runs before the thread ends */
}

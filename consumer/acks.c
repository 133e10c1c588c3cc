/* acks.c - the writes that settle entries, on the control connection.
 *
 * XACK goes out in batches (every entry finished in one loop iteration, up
 * to ACK_BATCH ids per command) and an entry is freed only when Redis
 * confirms it.  A dead letter is XADDed first and XACKed only after the XADD
 * succeeded, so an entry is never lost between the two streams.  Work that
 * cannot be written now (Redis down) stays queued and goes out when the
 * connection is back; a command Redis refuses is tried again after a pause,
 * never in a tight loop.  Also here: setting an entry's delivery counter
 * after a failed attempt (XCLAIM ... RETRYCOUNT n JUSTID), and resetting the
 * idle time of held entries (XCLAIM ... JUSTID). */
#include "consumer.h"

#include "log.h"
#include "timer.h"

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ACK_BATCH 1000

static pg_redis *control;
static struct event *flush_ev;
static bool flush_pending;
static int64_t retry_timer;
static size_t out;              /* entries whose XACK or XADD is out */
static pg_ratelog ack_log, dead_log;

typedef struct {
    size_t n;
    cs_entry *e[];
} batch;

static void schedule_flush(void)
{
    if (flush_pending || !flush_ev)
        return;
    flush_pending = true;
    event_active(flush_ev, EV_TIMEOUT, 1);
}

static void on_retry(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    retry_timer = 0;
    schedule_flush();
}


/* ---- XACK ---- */

static void on_ack(struct redisReply *reply, void *priv)
{
    batch *b = priv;
    out -= b->n;
    bool gone = reply && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOGROUP", 7) == 0;
    bool ok = reply && (reply->type == REDIS_REPLY_INTEGER || gone);
    if (reply && !ok)
        pg_log_limited(&ack_log, PG_LOG_WARN, "XACK on %s failed: %s; retrying", cs.cfg.stream,
                       reply->str);
    for (size_t i = 0; i < b->n; i++) {
        cs_entry *e = b->e[i];
        if (ok) {
            cs.stats.acked++;
            cs_entry_release(e);
        } else {
            cs_list_push(&cs.to_ack, e);
        }
    }
    free(b);
    if (reply && !ok)
        cs_retry_later(&retry_timer, on_retry);
    cs_check_finished();
}

static int send_ack_batch(void)
{
    size_t n = cs.to_ack.n < ACK_BATCH ? cs.to_ack.n : ACK_BATCH;
    batch *b = malloc(sizeof(*b) + n * sizeof(cs_entry *));
    const char **argv = malloc((3 + n) * sizeof(char *));
    if (!b || !argv) {
        free(b);
        free(argv);
        return -1;
    }
    argv[0] = "XACK";
    argv[1] = cs.cfg.stream;
    argv[2] = cs.cfg.group;
    b->n = n;
    cs_entry *e = cs.to_ack.head;
    for (size_t i = 0; i < n; i++, e = e->next) {
        b->e[i] = e;
        argv[3 + i] = e->id;
    }
    int rc = pg_redis_argv(control, on_ack, b, (int)(3 + n), argv, NULL);
    free(argv);
    if (rc < 0) {
        free(b);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        cs_list_remove(b->e[i]);
    out += n;
    return 0;
}

/* ---- dead letters ---- */

static void on_dead(struct redisReply *reply, void *priv)
{
    cs_entry *e = priv;
    out--;
    if (reply && reply->type == REDIS_REPLY_STRING) {
        cs.stats.dead++;
        cs_flow_done(e);
        return;
    }
    cs_list_push(&cs.to_dead, e);
    if (reply) {
        pg_log_limited(&dead_log, PG_LOG_ERROR,
                       "XADD to the dead-letter stream %s failed: %s; retrying",
                       cs.cfg.dead_letter_stream,
                       reply->type == REDIS_REPLY_ERROR ? reply->str : "?");
        cs_retry_later(&retry_timer, on_retry);
    }
    cs_check_finished();
}

static int send_dead(cs_entry *e)
{
    char deliveries[24];
    snprintf(deliveries, sizeof(deliveries), "%lld", e->deliveries);
    const char *reason = e->reason ? e->reason : "unknown";
    const char *argv[] = {"XADD", cs.cfg.dead_letter_stream, "*", "msg", e->msg ? e->msg : "",
                          "reason", reason, "source_id", e->id, "source_stream", cs.cfg.stream,
                          "deliveries", deliveries, "fields", e->fields};
    size_t lens[15];
    for (int i = 0; i < 15; i++)
        lens[i] = argv[i] ? strlen(argv[i]) : 0;
    lens[4] = e->msg ? e->msg_len : 0;  /* msg may hold NUL bytes */
    int argc = e->fields ? 15 : 13;
    if (pg_redis_argv(control, on_dead, e, argc, argv, lens) < 0)
        return -1;
    cs_list_remove(e);
    out++;
    return 0;
}

/* ---- flushing ---- */

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    flush_pending = false;
    while (cs.to_dead.head && send_dead(cs.to_dead.head) == 0)
        ;
    while (cs.to_ack.head && send_ack_batch() == 0)
        ;
}

void cs_acks_queue_ack(cs_entry *e)
{
    cs_list_push(&cs.to_ack, e);
    schedule_flush();
}

void cs_acks_queue_dead(cs_entry *e)
{
    cs_list_push(&cs.to_dead, e);
    schedule_flush();
}

/* ---- delivery counters and idle times ---- */

static void on_claim_reply(struct redisReply *reply, void *priv)
{
    (void)priv;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        pg_debug("XCLAIM JUSTID on %s: %s", cs.cfg.stream, reply->str);
}

void cs_acks_set_deliveries(cs_entry *e)
{
    char n[24];
    snprintf(n, sizeof(n), "%lld", e->deliveries);
    const char *argv[] = {"XCLAIM", cs.cfg.stream, cs.cfg.group, cs.cfg.consumer, "0",
                          e->id, "RETRYCOUNT", n, "JUSTID"};
    if (pg_redis_argv(control, on_claim_reply, NULL, 9, argv, NULL) == 0)
        e->touched_ms = cs_now_ms();
}

void cs_acks_touch(cs_entry **entries, size_t n)
{
    const char **argv = malloc((6 + n) * sizeof(char *));
    if (!argv)
        return;
    argv[0] = "XCLAIM";
    argv[1] = cs.cfg.stream;
    argv[2] = cs.cfg.group;
    argv[3] = cs.cfg.consumer;
    argv[4] = "0";
    for (size_t i = 0; i < n; i++)
        argv[5 + i] = entries[i]->id;
    argv[5 + n] = "JUSTID";
    if (pg_redis_argv(control, on_claim_reply, NULL, (int)(6 + n), argv, NULL) == 0) {
        uint64_t now = cs_now_ms();
        for (size_t i = 0; i < n; i++)
            entries[i]->touched_ms = now;
    }
    free(argv);
}

/* ---- the link ---- */

static void on_control_up(pg_redis *r, void *arg)
{
    (void)r;
    (void)arg;
    schedule_flush();
    cs_stream_control_up();
}

int cs_acks_start(void)
{
    flush_ev = event_new(cs.base, -1, 0, on_flush, NULL);
    if (!flush_ev)
        return -1;
    control = cs_redis_link("control", on_control_up);
    return control ? 0 : -1;
}

void cs_acks_done(void)
{
    cs_timer_clear(&retry_timer);
    pg_redis *r = control;
    control = NULL;
    pg_redis_free(r);   /* callbacks still out put their entries back in the lists */
    if (flush_ev)
        event_free(flush_ev);
    flush_ev = NULL;
    flush_pending = false;
}

bool cs_acks_idle(void)
{
    return out == 0 && cs.to_ack.n == 0 && cs.to_dead.n == 0;
}

bool cs_acks_link_up(void)
{
    return pg_redis_up(control) != 0;
}

pg_redis *cs_acks_link(void)
{
    return control;
}

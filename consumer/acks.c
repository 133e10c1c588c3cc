/* acks.c - the writes that settle entries, on the control connection.
 *
 * XACK goes out in batches (every entry finished within ACK_DELAY_MS of the
 * first of them, up to ACK_BATCH ids per command) and an entry is freed only
 * when Redis confirms it.  The delay is for steady traffic: each command
 * wakes Redis, and at 5,000 orders/s an XACK per loop pass meant one for
 * every two entries.  The browsers have the orders already, and what a crash
 * leaves un-XACKed is delivered again and dropped by id, as at-least-once
 * allows.  A dead letter is XADDed first and XACKed only after the XADD
 * succeeded, so an entry is never lost between the two streams.  Work that
 * cannot be written now (Redis down) stays queued and goes out when the
 * connection is back; a command Redis refuses is tried again after a pause,
 * never in a tight loop.  Also here: setting an entry's delivery counter
 * after a failed attempt (XCLAIM ... RETRYCOUNT n JUSTID), and resetting the
 * idle time of held entries (XCLAIM ... JUSTID).
 *
 * Each shard has its own list of entries to XACK, sent over the control
 * link of the node serving it; the dead-letter stream may live on another
 * node (a cluster).  Since the dead letter's XADD and the source's XACK are
 * two commands, one after the other and never a MULTI, they work across
 * nodes as they do on one server.  Dead letters name their source stream. */
#include "consumer.h"

#include "log.h"
#include "timer.h"

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ACK_BATCH 1000
#define ACK_DELAY_MS 5

static struct event *flush_ev;
static bool flush_pending;
static int64_t retry_timer, delay_timer;
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

static void on_delay(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    delay_timer = 0;
    schedule_flush();
}

/* An XACK for s's list: at once when a batch is full or the consumer
 * stops, else once ACK_DELAY_MS have gathered more. */
static void schedule_ack(const cs_shard *s)
{
    if (flush_pending)
        return;
    if (cs.stopping || s->to_ack.n >= ACK_BATCH) {
        schedule_flush();
    } else if (delay_timer <= 0 &&
               (delay_timer = pg_timer_after(ACK_DELAY_MS, on_delay, NULL)) < 0) {
        delay_timer = 0;
        schedule_flush();
    }
}


/* ---- XACK ---- */

static void queue_ack(cs_entry *e)
{
    cs_list_push(&e->shard->to_ack, e);
}

static void on_ack(struct redisReply *reply, void *priv)
{
    batch *b = priv;
    out -= b->n;
    bool gone = reply && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOGROUP", 7) == 0;
    bool ok = reply && (reply->type == REDIS_REPLY_INTEGER || gone);
    if (reply && !ok)
        pg_log_limited(&ack_log, PG_LOG_WARN, "XACK on %s failed: %s; retrying",
                       b->n ? b->e[0]->shard->name : "?", reply->str);
    for (size_t i = 0; i < b->n; i++) {
        cs_entry *e = b->e[i];
        if (ok) {
            cs.stats.acked++;
            cs_entry_release(e);
        } else {
            queue_ack(e);
        }
    }
    free(b);
    if (reply && !ok)
        cs_retry_later(&retry_timer, on_retry);
    cs_check_finished();
}

/* One XACK of up to ACK_BATCH entries of shard s. */
static int send_ack_batch(cs_shard *s)
{
    size_t n = s->to_ack.n < ACK_BATCH ? s->to_ack.n : ACK_BATCH;
    batch *b = malloc(sizeof(*b) + n * sizeof(cs_entry *));
    const char **argv = malloc((3 + n) * sizeof(char *));
    if (!b || !argv) {
        free(b);
        free(argv);
        return -1;
    }
    argv[0] = "XACK";
    argv[1] = s->name;
    argv[2] = cs.cfg.group;
    b->n = n;
    cs_entry *e = s->to_ack.head;
    for (size_t i = 0; i < n; i++, e = e->next) {
        b->e[i] = e;
        argv[3 + i] = e->id;
    }
    int rc = pg_redis_argv(cs_shard_control(s), on_ack, b, (int)(3 + n), argv, NULL);
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
                          "reason", reason, "source_id", e->id, "source_stream", e->shard->name,
                          "deliveries", deliveries, "fields", e->fields};
    size_t lens[15];
    for (int i = 0; i < 15; i++)
        lens[i] = argv[i] ? strlen(argv[i]) : 0;
    lens[4] = e->msg ? e->msg_len : 0;  /* msg may hold NUL bytes */
    int argc = e->fields ? 15 : 13;
    if (pg_redis_argv(cs_dead_control(), on_dead, e, argc, argv, lens) < 0)
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
    for (size_t i = 0; i < cs.nshards; i++)
        while (cs.shards[i].to_ack.head && send_ack_batch(&cs.shards[i]) == 0)
            ;
}

void cs_acks_queue_ack(cs_entry *e)
{
    queue_ack(e);
    schedule_ack(e->shard);
}

void cs_acks_flush(void)
{
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
        pg_debug("XCLAIM JUSTID: %s", reply->str);
}

void cs_acks_set_deliveries(cs_entry *e)
{
    char n[24];
    snprintf(n, sizeof(n), "%lld", e->deliveries);
    const char *argv[] = {"XCLAIM", e->shard->name, cs.cfg.group, cs.cfg.consumer, "0",
                          e->id, "RETRYCOUNT", n, "JUSTID"};
    if (pg_redis_argv(cs_shard_control(e->shard), on_claim_reply, NULL, 9, argv, NULL) == 0)
        e->touched_ms = cs_now_ms();
}

/* entries: all of one shard. */
void cs_acks_touch(cs_entry **entries, size_t n)
{
    const char **argv = malloc((6 + n) * sizeof(char *));
    if (!argv)
        return;
    argv[0] = "XCLAIM";
    argv[1] = entries[0]->shard->name;
    argv[2] = cs.cfg.group;
    argv[3] = cs.cfg.consumer;
    argv[4] = "0";
    for (size_t i = 0; i < n; i++)
        argv[5 + i] = entries[i]->id;
    argv[5 + n] = "JUSTID";
    if (pg_redis_argv(cs_shard_control(entries[0]->shard), on_claim_reply, NULL, (int)(6 + n),
                      argv, NULL) == 0) {
        uint64_t now = cs_now_ms();
        for (size_t i = 0; i < n; i++)
            entries[i]->touched_ms = now;
    }
    free(argv);
}

/* ---- start and stop ---- */

int cs_acks_start(void)
{
    flush_ev = event_new(cs.base, -1, 0, on_flush, NULL);
    return flush_ev ? 0 : -1;
}

void cs_acks_done(void)
{
    cs_timer_clear(&retry_timer);
    cs_timer_clear(&delay_timer);
    if (flush_ev)
        event_free(flush_ev);
    flush_ev = NULL;
    flush_pending = false;
}

bool cs_acks_idle(void)
{
    for (size_t i = 0; i < cs.nshards; i++)
        if (cs.shards[i].to_ack.n)
            return false;
    return out == 0 && cs.to_dead.n == 0;
}

bool cs_acks_link_up(void)
{
    return cs_shards_up();
}

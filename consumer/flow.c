/* flow.c - what happens to an entry after each event: sent to a gateway,
 * answered, failed, given up.  Kept in one place so the rules of
 * at-least-once delivery can be read together:
 *   - XACK only after a gateway answered code 0 (or the dead letter is written),
 *     and, with wait_for_acks, only once it confirmed that the browsers
 *     ACKed it or it is stored: a first reply with "pending" waits for the
 *     final one, and a final error is a failed attempt;
 *   - a reply that can never change (bad token, malformed request) is final:
 *     dead letter at once;
 *   - no reply in time, a lost connection, or any other code is a failed
 *     attempt: retried on another gateway after a backoff, until Redis's
 *     delivery counter reaches max_deliveries, then dead letter;
 *   - a gateway that could not try (MySQL unreachable, busy) answers so: the
 *     entry is retried after a backoff, for as long as that lasts, and the
 *     attempt is not counted: an outage of the store dead-letters nothing;
 *   - an entry waiting because no gateway is up makes no attempt. */
#include "consumer.h"

#include "codes.h"
#include "log.h"
#include "timer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_MAX_MS 10000
#define WAIT_MAX_MS 5000      /* retries that do not count: MySQL back within 5 s of it */

void cs_flow_forget(cs_entry *e)
{
    if (e->timer > 0)
        pg_timer_clear(e->timer);
    e->timer = 0;
}

void cs_flow_ready(cs_entry *e)
{
    cs_flow_forget(e);
    e->state = CS_E_READY;
    cs_list_push(&cs.ready, e);
    cs_flow_dispatch();
}

void cs_flow_dispatch(void)
{
    static bool running;
    static pg_ratelog wait_log;
    static bool had_gateway;   /* before the first gateway, waiting is the plan */
    if (running || cs.stopping)
        return;
    running = true;
    while (cs.ready.head) {
        cs_entry *e = cs.ready.head;
        cs_gateway *g = cs_nodes_pick(e);
        if (!g) {
            pg_log_limited(&wait_log, had_gateway ? PG_LOG_WARN : PG_LOG_INFO,
                           "entries waiting for a gateway: %zu (none is up)", cs.ready.n);
            break;
        }
        if (!had_gateway)
            wait_log.last_ms = 0;   /* an outage later warns at once */
        had_gateway = true;
        if (cs_gateway_send(g, e) < 0) {
            pg_error("cannot queue entry %s for gateway %s (out of memory): will try again", e->id,
                     g->name);
            break;
        }
    }
    running = false;
}

void cs_flow_done(cs_entry *e)
{
    cs_flow_forget(e);
    cs_list_remove(e);
    e->state = CS_E_DONE;
    cs_acks_queue_ack(e);
}

void cs_flow_dead(cs_entry *e, const char *fmt, ...)
{
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    cs_flow_forget(e);
    cs_list_remove(e);
    free(e->reason);
    e->reason = strdup(reason);
    e->state = CS_E_DEAD;
    pg_warn("entry %s of %s goes to the dead-letter stream %s: %s", e->id, e->shard->name,
            cs.cfg.dead_letter_stream, reason);
    cs_status_dead(e->key, reason);
    cs_acks_queue_dead(e);
}

static void on_retry(int64_t timer_id, void *arg)
{
    (void)timer_id;
    cs_entry *e = arg;
    e->timer = 0;
    cs_flow_ready(e);
}

/* BACKOFF for delay ms, then READY again. */
static void back_off(cs_entry *e, unsigned delay)
{
    cs_list_remove(e);
    e->state = CS_E_BACKOFF;
    e->timer = pg_timer_after(delay, on_retry, e);
    if (e->timer < 0) {
        e->timer = 0;
        cs_flow_ready(e);
    }
}

void cs_flow_failed(cs_entry *e, const char *why)
{
    static pg_ratelog fail_log;
    if (e->deliveries >= cs.cfg.max_deliveries) {
        cs_flow_dead(e, "gave up after %lld deliveries; last: %s", e->deliveries, why);
        return;
    }
    e->deliveries++;
    e->waits = 0;
    cs.stats.retried++;
    cs_acks_set_deliveries(e);
    unsigned delay = pg_backoff_ms((unsigned)e->deliveries - 1, RETRY_MAX_MS);
    pg_debug("entry %s: %s; attempt %lld in %u ms", e->id, why, e->deliveries, delay);
    pg_log_limited(&fail_log, PG_LOG_WARN, "entry %s: %s; attempt %lld of %lld in %u ms", e->id,
                   why, e->deliveries, cs.cfg.max_deliveries, delay);
    back_off(e, delay);
}

/* The gateway could not try: again later, not counted. */
static void flow_wait(cs_entry *e, const char *why)
{
    static pg_ratelog wait_log;
    e->waits++;
    cs.stats.waited++;
    unsigned delay = pg_backoff_ms(e->waits, WAIT_MAX_MS);
    pg_debug("entry %s: %s; again in %u ms", e->id, why, delay);
    pg_log_limited(&wait_log, PG_LOG_WARN, "entry %s: %s; again in %u ms (not counted as an attempt)",
                   e->id, why, delay);
    back_off(e, delay);
}

/* Takes e out of where it waits; false when a reply for an earlier attempt
 * is not worth acting on. */
static bool claim_for_reply(cs_entry *e, cs_gateway *g, int code)
{
    switch (e->state) {
    case CS_E_SENT:
        if (e->gw != g && code != 0)
            return false;   /* a late error; the current attempt decides */
        cs_gateway_forget(e->gw, e);
        return true;
    case CS_E_READY:
    case CS_E_BACKOFF:
        if (code != 0)
            return false;
        cs_flow_forget(e);
        cs_list_remove(e);
        return true;    /* a late success: handed off after all */
    default:
        return false;
    }
}

void cs_flow_reply(cs_entry *e, cs_gateway *g, int code, const char *msg, long long pending,
                   bool final)
{
    cs_metrics_reply(code);
    if (code == 0 && pending > 0 && !final && e->state == CS_E_SENT && e->gw == g) {
        pg_debug("entry %s routed by gateway %s; waiting for %lld browser(s)", e->id, g->name,
                 pending);
        cs_gateway_accept(g, e);
        return;
    }
    if (!claim_for_reply(e, g, code)) {
        pg_debug("late reply (code %d) for entry %s from %s ignored", code, e->id, g->name);
        return;
    }
    if (!msg)
        msg = "";
    if (code == 0) {
        pg_debug("entry %s handed off by gateway %s", e->id, g->name);
        cs_flow_done(e);
    } else if (code == PG_ERR_BAD_JSON) {
        /* intake.c leaves the parse of the usual entry to the gateway */
        cs_flow_dead(e, "malformed: msg is not JSON (gateway %s: %s)", g->name, msg);
    } else if (pg_code_final(code)) {
        cs_flow_dead(e, "refused by gateway %s: code %d: %s", g->name, code, msg);
    } else if (pg_code_wait(code)) {
        char why[300];
        snprintf(why, sizeof(why), "gateway %s answered code %d: %s", g->name, code, msg);
        flow_wait(e, why);
    } else {
        char why[300];
        snprintf(why, sizeof(why), "gateway %s answered code %d: %s", g->name, code, msg);
        cs_flow_failed(e, why);
    }
}

void cs_flow_counted(cs_entry *e, long long deliveries)
{
    e->deliveries = deliveries;
    if (deliveries > cs.cfg.max_deliveries)
        cs_flow_dead(e, "gave up: delivered %lld times (max_deliveries %lld) without success",
                     deliveries, cs.cfg.max_deliveries);
    else
        cs_flow_ready(e);
}

/* handoff.c - workers: an internal request is answered a second time once
 * every browser it reached has acknowledged it, or it is stored.
 *
 * The consumer may XACK a stream entry only when the work order can no
 * longer be lost: when each target browser has ACKed it, or it is in
 * offline_messages.  A push alone is not enough (a node killed before the
 * browser's ACK takes the message with it), so a request that asks for it
 * ("handoff": true) gets two replies:
 *
 *   {"code":0, ..., "pending":n}   routed: pushed, forwarded, stored; n
 *                                  targets still wait for their browser
 *   {"code":0|error, "msg_id", ["req_id",] "final":true, "acked", "stored"}
 *                                  sent only when n > 0, once all n are
 *                                  settled; an error: some could be neither
 *                                  acknowledged nor stored, so retry
 *
 * The worker that routes the request opens a ticket; each push that must
 * be waited for carries a waiter (this worker, the ticket) to the session's
 * home worker, which reports the outcome when the browser ACKs, or when
 * the message went back to the store (ack_timeout, close, too many
 * pending) and the store confirmed it.  A ticket not settled within
 * ack_timeout + HANDOFF_GRACE_S (a home worker killed, a store lost) is
 * answered with an error: the sender retries, and the node's push record
 * (push_record.c) keeps the retry from reaching any browser twice. */
#include "gateway.h"

#include "log.h"
#include "reply.h"
#include "timer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HANDOFF_GRACE_S 10
#define SWEEP_MS 1000

typedef struct {
    pg_session_id reply_to;    /* the connection to answer (consumer or proxy) */
    json_t *msg_id, *req_id;   /* echoed; req_id NULL: none */
    unsigned waiting;          /* targets not yet settled */
    unsigned acked, stored;
    int code;                  /* PG_OK, or the first failure */
    int replied;               /* the first reply went out */
    time_t deadline;
} ticket;

static pg_idmap *tickets;
static uint64_t next_ticket;
static int64_t sweep_timer;

static void free_ticket(ticket *t)
{
    json_decref(t->msg_id);
    json_decref(t->req_id);
    free(t);
}

static void send_final(ticket *t)
{
    char tail[96];
    snprintf(tail, sizeof(tail), ",\"final\":true,\"acked\":%u,\"stored\":%u", t->acked, t->stored);
    size_t len;
    char *text = pg_reply_json(t->code, t->code == PG_OK ? "handed off" : pg_code_text(t->code),
                               t->msg_id, t->req_id, tail, &len);
    if (text)
        pg_server_send(gw.server, t->reply_to, text, len);
    free(text);
}

/* Answers and forgets the ticket once nothing waits and the first reply is out. */
static void finish_if_settled(uint64_t id, ticket *t)
{
    if (t->waiting > 0 || !t->replied)
        return;
    pg_idmap_remove(tickets, id);
    send_final(t);
    free_ticket(t);
}

static int expire_one(uint64_t id, void *value, void *arg)
{
    ticket *t = value;
    if (t->deadline > *(time_t *)arg)
        return 0;
    if (!t->replied) {   /* its routing never ended (a task lost): the sender times out */
        pg_idmap_remove(tickets, id);
        free_ticket(t);
        return 0;
    }
    pg_warn("request %s: %u browser(s) neither acknowledged nor stored it in time; the sender retries",
            json_string_value(t->msg_id) ? json_string_value(t->msg_id) : "?", t->waiting);
    t->code = PG_ERR_INTERNAL;
    t->waiting = 0;
    finish_if_settled(id, t);
    return 0;
}

static void sweep(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    time_t now = time(NULL);
    pg_idmap_iterate(tickets, expire_one, &now);
}

void gw_handoff_start(void)
{
    tickets = pg_idmap_new(256);
    sweep_timer = pg_timer_tick(SWEEP_MS, sweep, NULL);
}

static int drop_one(uint64_t id, void *value, void *arg)
{
    (void)id;
    (void)arg;
    free_ticket(value);
    return 0;
}

/* The worker stops: its tickets go unanswered, and their senders, which
 * time out, send again. */
void gw_handoff_stop(void)
{
    if (sweep_timer > 0)
        pg_timer_clear(sweep_timer);
    sweep_timer = 0;
    pg_idmap_iterate(tickets, drop_one, NULL);
    pg_idmap_free(tickets);
    tickets = NULL;
}

uint64_t gw_handoff_open(pg_session_id reply_to, json_t *msg_id, json_t *req_id)
{
    ticket *t = calloc(1, sizeof(*t));
    uint64_t id = ++next_ticket;
    if (!t || !tickets || pg_idmap_put(tickets, id, t) < 0) {
        free(t);
        return 0;
    }
    *t = (ticket){.reply_to = reply_to, .msg_id = json_incref(msg_id), .req_id = json_incref(req_id),
                  .deadline = time(NULL) + gw.cfg.ack_timeout + HANDOFF_GRACE_S};
    return id;
}

gw_waiter gw_handoff_expect(uint64_t id)
{
    ticket *t = id ? pg_idmap_get(tickets, id) : NULL;
    if (!t)
        return (gw_waiter){0};
    t->waiting++;
    return (gw_waiter){.worker = pg_server_worker_id(gw.server), .ticket = id};
}

unsigned gw_handoff_replied(uint64_t id)
{
    ticket *t = id ? pg_idmap_get(tickets, id) : NULL;
    if (!t)
        return 0;
    unsigned waiting = t->waiting;
    t->replied = 1;
    if (waiting == 0) {   /* nothing to wait for: the first reply was the last */
        pg_idmap_remove(tickets, id);
        free_ticket(t);
    }
    return waiting;
}

void gw_handoff_drop(uint64_t id)
{
    ticket *t = id ? pg_idmap_remove(tickets, id) : NULL;
    if (t)
        free_ticket(t);
}

void gw_handoff_settled(uint64_t id, int outcome)
{
    ticket *t = id ? pg_idmap_get(tickets, id) : NULL;
    if (!t || t->waiting == 0)
        return;   /* answered already (timed out), or a worker before this one's */
    t->waiting--;
    if (outcome == GW_PUSH_ACKED)
        t->acked++;
    else if (outcome == GW_PUSH_STORED)
        t->stored++;
    else if (t->code == PG_OK)
        t->code = outcome;
    finish_if_settled(id, t);
}

/* ---- waiters on other workers ---- */

/* A waiter's outcome, worker to worker: GW_PIPE_HANDOFF, then this. */
typedef struct {
    uint64_t ticket;
    int32_t outcome;
} settled_msg;

void gw_waiter_settle(const gw_waiter *w, int outcome)
{
    if (!w || !w->ticket)
        return;
    if (w->worker == pg_server_worker_id(gw.server)) {
        gw_handoff_settled(w->ticket, outcome);
        return;
    }
    char msg[1 + sizeof(settled_msg)];
    settled_msg s = {.ticket = w->ticket, .outcome = outcome};
    msg[0] = GW_PIPE_HANDOFF;
    memcpy(msg + 1, &s, sizeof(s));
    if (pg_server_send_message(gw.server, w->worker, msg, sizeof(msg)) < 0)
        pg_warn("could not tell worker %d of a settled push; its request times out", w->worker);
}

void gw_handoff_pipe_message(const char *data, size_t len)
{
    settled_msg s;
    if (len != sizeof(s)) {
        pg_error("malformed hand-off message from another worker: %zu bytes", len);
        return;
    }
    memcpy(&s, data, sizeof(s));
    gw_handoff_settled(s.ticket, s.outcome);
}

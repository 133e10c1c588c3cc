/* store.c - workers: messages that reach nobody go to offline_messages.
 *
 * A work order or chat message whose uuid has no session, or whose push
 * through the proxy failed, is stored before its sender is answered.  The
 * route task itself writes nothing (a route never waits for an INSERT), so
 * the worker stores such items afterwards: those of one loop pass travel as
 * one task (batch.c, a record: store_task.c) of at most
 * GW_STORE_TASK_BYTES, one multi-row INSERT.  Each routed message waits
 * here under a ticket; its items carry the ticket, and the task's answer
 * says, by ticket, how many items it took and how many it refused, so a
 * message whose items were split over two tasks is answered when the last
 * comes back.  The items' strings are the routed order's, which waits here
 * until then.
 *
 * Messages that go back to the store from a session (its unacknowledged
 * pushes, session.c) or from the proxy link (a push not made) are sent at
 * once, each with the waiters that hear when it is stored. */
#include "gateway.h"

#include "log.h"
#include "memory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORE_TASK_ITEMS 500

int gw_store_list_add(gw_store_list *l, const gw_store_entry *e)
{
    if (pg_grow(&l->v, &l->cap, l->n, sizeof(*l->v)) < 0)
        return -1;
    l->v[l->n++] = *e;
    return 0;
}

void gw_store_list_free(gw_store_list *l)
{
    free(l->v);
    *l = (gw_store_list){0};
}

/* ---- routed messages, by ticket ---- */

typedef struct {
    gw_routed *routed;    /* the routed order: whom to answer, counts */
    size_t remaining;     /* items not yet answered */
    long long stored;
    long long delivered;  /* pushed after all, to a session that registered meanwhile */
    int failed;           /* the error code of a failed store, 0: none */
} waiting_message;

static void drop_waiting(void *value)
{
    waiting_message *w = value;
    gw_order_free(w->routed->order);
    free(w->routed);
    free(w);
}

/* Every item of w is answered (or given up on): its sender hears. */
static void finish(waiting_message *w)
{
    gw_routed *routed = w->routed;
    routed->stored += w->stored;
    routed->delivered += w->delivered;
    if (w->failed)
        routed->code = w->failed;
    free(w);
    gw_internal_finish(routed);
}

/* A store that MySQL holds up: the sender tries again later (the store may
 * still be made: storing twice is harmless, a unique key keeps one). */
static void store_overdue(void *value)
{
    waiting_message *w = value;
    w->failed = PG_ERR_UNAVAILABLE;
    finish(w);
}

/* ticket -> waiting_message */
static gw_awaiting waiting = {.what = "message(s) waiting for their store", .drop = drop_waiting,
                              .overdue = store_overdue};

/* count items of ticket have been answered: stored (code PG_OK) or not. */
static void settle(uint64_t ticket, size_t count, int code)
{
    waiting_message *w = gw_awaiting_get(&waiting, ticket);
    if (!w)
        return;
    w->remaining -= count < w->remaining ? count : w->remaining;
    if (code == PG_OK)
        w->stored += (long long)count;
    else
        w->failed = code;
    if (w->remaining > 0)
        return;
    gw_awaiting_take(&waiting, ticket);
    finish(w);
}

/* An item waiting in the batch: the entry, and a copy of its hint, whose
 * string may not outlive the call that stored it. */
typedef struct {
    gw_store_entry e;
    char hint_ip[64];
} held_item;

/* Not handed to a task worker: each message's sender hears of the
 * failure.  The items go first: a settled order takes its strings along. */
static void fail_items(void **items, size_t n)
{
    uint64_t *tickets = malloc((n ? n : 1) * sizeof(*tickets));
    for (size_t i = 0; i < n; i++) {
        if (tickets)
            tickets[i] = ((held_item *)items[i])->e.ticket;
        free(items[i]);
    }
    for (size_t i = 0; tickets && i < n; i++)
        settle(tickets[i], 1, PG_ERR_BUSY);
    free(tickets);
}

/* capped: routed messages are new intake, held to max_offline_per_uuid. */
static int send_items(void **items, size_t n, int dst)
{
    pg_rec_writer w = {0};
    size_t at = gw_store_task_begin(&w, 1, 0);
    for (size_t i = 0; i < n; i++)
        gw_store_task_entry(&w, at, &((held_item *)items[i])->e);
    int rc = gw_task_record(&w, dst);
    pg_rec_writer_free(&w);
    if (rc < 0) {
        fail_items(items, n);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    return 0;
}

static gw_batch stores = {.op = "store", .dst = -1, .max_items = STORE_TASK_ITEMS,
                          .max_bytes = GW_STORE_TASK_BYTES, .send = send_items,
                          .fail = fail_items};

void gw_store_routed(gw_routed *routed, const gw_store_entry *items, size_t n)
{
    waiting_message *w = calloc(1, sizeof(*w));
    uint64_t ticket = w ? gw_awaiting_put(&waiting, w) : 0;
    if (!ticket) {
        pg_error("%zu message(s) could not wait for their store", n);
        free(w);
        routed->code = PG_ERR_INTERNAL;
        gw_internal_finish(routed);
        return;
    }
    *w = (waiting_message){.routed = routed, .remaining = n};
    if (!stores.n)
        stores.dst = gw_task_worker_of(0);   /* a writer, in turn */
    for (size_t i = 0; i < n; i++) {
        held_item *h = malloc(sizeof(*h));
        if (!h) {
            settle(ticket, n - i, PG_ERR_INTERNAL);   /* its sender sends it again */
            return;
        }
        h->e = items[i];
        h->e.ticket = ticket;
        h->e.nwaiters = 0;   /* the ticket hears for the order */
        if (items[i].hint_ip) {
            snprintf(h->hint_ip, sizeof(h->hint_ip), "%s", items[i].hint_ip);
            h->e.hint_ip = h->hint_ip;
        }
        gw_batch_add(&stores, h, 128 + strlen(h->e.payload) + strlen(h->e.msg_id));
    }
}

/* A store task's answer: each ticket's items are stored (or failed with
 * code) but for those refused at max_offline_per_uuid (tasks.c). */
void gw_store_answered(const gw_stored *s)
{
    for (size_t i = 0; i < s->n_pushes; i++) {
        uint64_t ticket = s->pushes[i].entry.ticket;
        waiting_message *w = ticket ? gw_awaiting_get(&waiting, ticket) : NULL;
        if (w)
            w->delivered++;
    }
    for (size_t i = 0; i < s->n_tickets; i++) {
        const gw_store_ticket *t = &s->tickets[i];
        uint32_t out = t->refused < t->items ? t->refused : t->items;
        if (out > 0)
            settle(t->ticket, out, PG_ERR_INBOX_FULL);
        if (t->items > out)
            settle(t->ticket, t->items - out, s->code);
    }
}

/* ---- messages given back ---- */

int gw_store_send(const gw_store_entry *items, size_t n, pg_session_id keep_away, int dst)
{
    pg_rec_writer w = {0};
    size_t at = gw_store_task_begin(&w, 0, keep_away);
    for (size_t i = 0; i < n; i++)
        gw_store_task_entry(&w, at, &items[i]);
    gw_task_flush_for(dst);   /* never before a batch of its session's */
    int rc = gw_task_record(&w, dst);
    pg_rec_writer_free(&w);
    return rc;
}

void gw_store_item(const gw_store_entry *e)
{
    if (gw_store_send(e, 1, 0, gw_task_worker_of(0)) == 0)
        return;
    pg_error("a message to %s could not be handed to a task worker", e->uuid);
    for (size_t i = 0; i < e->nwaiters; i++)
        gw_waiter_settle(&e->waiters[i], PG_ERR_BUSY);
}

/* The worker stops: what waits is still stored (the answers come back to
 * nobody, so the senders time out and send again: a duplicate, never a
 * loss). */
void gw_store_stop(void)
{
    gw_batch_stop(&stores, 1);
    gw_awaiting_stop(&waiting);
}

/* store.c - workers: routed messages that reach nobody go to offline_messages.
 *
 * A work order or chat message whose uuid has no session, or whose push
 * through the proxy failed, is stored before its sender is answered.  The
 * route task itself writes nothing (a route never waits for an INSERT), so
 * the worker stores such items afterwards: those of one loop pass travel as
 * one task (batch.c) of at most GW_STORE_TASK_BYTES, one multi-row INSERT.
 * Each routed message waits here under a ticket; its items carry the
 * ticket, and the task's answer says which tickets it stored and how many
 * items of each, so a message whose items were split over two tasks is
 * answered when the last comes back. */
#include "gateway.h"

#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORE_TASK_ITEMS 500

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

/* ticket -> waiting_message */
static gw_awaiting waiting = {.what = "message(s) waiting for their store", .drop = drop_waiting};

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
    gw_routed *routed = w->routed;
    routed->stored += w->stored;
    routed->delivered += w->delivered;
    if (w->failed)
        routed->code = w->failed;
    free(w);
    gw_internal_finish(routed);
}

/* [[ticket, items of it], ...] of a batch's items, in order. */
static json_t *ticket_counts(json_t *items)
{
    json_t *counts = json_array();
    json_int_t last = 0, n = 0;
    size_t i;
    json_t *item;
    json_array_foreach(items, i, item) {
        json_int_t t = json_integer_value(json_object_get(item, "t"));
        if (t != last && n > 0)
            json_array_append_new(counts, json_pack("[I,I]", last, n));
        n = t == last ? n + 1 : 1;
        last = t;
    }
    if (n > 0)
        json_array_append_new(counts, json_pack("[I,I]", last, n));
    return counts;
}

/* capped: routed messages are new intake, held to max_offline_per_uuid. */
static json_t *store_task(json_t *items)
{
    return json_pack("{s:s,s:O,s:b,s:{s:o}}", "op", "store", "items", items, "capped", 1, "ctx",
                     "tickets", ticket_counts(items));
}

static void settle_all(json_t *counts, int code)
{
    size_t i;
    json_t *c;
    json_array_foreach(counts, i, c)
        settle((uint64_t)json_integer_value(json_array_get(c, 0)),
               (size_t)json_integer_value(json_array_get(c, 1)), code);
}

/* Not handed to a task worker: each message's sender hears of the failure. */
static void fail_items(json_t *items)
{
    json_t *counts = ticket_counts(items);
    settle_all(counts, PG_ERR_BUSY);
    json_decref(counts);
}

static gw_batch stores = {.op = "store", .field = "items", .dst = -1, .max_items = STORE_TASK_ITEMS,
                          .max_bytes = GW_STORE_TASK_BYTES, .task = store_task, .fail = fail_items};

void gw_store_routed(gw_routed *routed, json_t *items)
{
    waiting_message *w = calloc(1, sizeof(*w));
    uint64_t ticket = w ? gw_awaiting_put(&waiting, w) : 0;
    if (!ticket) {
        pg_error("%zu message(s) could not wait for their store", json_array_size(items));
        free(w);
        json_decref(items);
        routed->code = PG_ERR_INTERNAL;
        gw_internal_finish(routed);
        return;
    }
    *w = (waiting_message){.routed = routed, .remaining = json_array_size(items)};
    size_t i;
    json_t *item;
    if (!stores.n)
        stores.dst = gw_task_worker_of(0);   /* a writer, in turn */
    json_array_foreach(items, i, item) {
        json_object_set_new(item, "t", json_integer((json_int_t)ticket));
        gw_batch_add(&stores, json_incref(item),
                     128 + json_string_length(json_object_get(item, "payload")) * 2);
    }
    json_decref(items);
}

/* A store task's answer: each ticket's items are stored (or failed with
 * code) but for those refused at max_offline_per_uuid (tasks.c). */
static void settle_answered(json_t *counts, json_t *refused, int code)
{
    size_t i;
    json_t *c;
    json_array_foreach(counts, i, c) {
        char key[24];
        json_int_t ticket = json_integer_value(json_array_get(c, 0));
        size_t n = (size_t)json_integer_value(json_array_get(c, 1));
        snprintf(key, sizeof(key), "%lld", (long long)ticket);
        size_t out = (size_t)json_integer_value(json_object_get(refused, key));
        if (out > n)
            out = n;
        if (out > 0)
            settle((uint64_t)ticket, out, PG_ERR_INBOX_FULL);
        if (n > out)
            settle((uint64_t)ticket, n - out, code);
    }
}

void gw_store_answered(json_t *result)
{
    size_t i;
    json_t *pushed;
    json_array_foreach(json_object_get(result, "local"), i, pushed) {
        json_int_t ticket = json_integer_value(json_object_get(pushed, "t"));
        waiting_message *w = ticket ? gw_awaiting_get(&waiting, (uint64_t)ticket) : NULL;
        if (w)
            w->delivered++;
    }
    json_t *code = json_object_get(result, "code");
    settle_answered(json_object_get(json_object_get(result, "ctx"), "tickets"),
                    json_object_get(result, "refused"),
                    json_is_integer(code) ? (int)json_integer_value(code) : PG_ERR_INTERNAL);
}

/* The worker stops: what waits is still stored (the answers come back to
 * nobody, so the senders time out and send again: a duplicate, never a
 * loss). */
void gw_store_stop(void)
{
    gw_batch_stop(&stores, 1);
    gw_awaiting_stop(&waiting);
}

/* route.c - routing requests of one loop pass travel as one task.
 *
 * Every work order and chat message needs the uuid -> session lookup in
 * MySQL, which a task worker does.  One task and one query per message
 * would cap a node at a few thousand messages a second, so a worker
 * collects the orders that arrive while it handles one batch of input (the
 * consumer pipelines many) and hands them to a task worker together as soon
 * as the loop pass ends; the task worker resolves all their uuids with a
 * few IN queries and answers with one result per order. */
#include "gateway.h"

#include "log.h"
#include "timer.h"

#include <string.h>

#define ROUTE_BATCH_MAX 500     /* orders per task */

static json_t *orders;          /* waiting for the end of this loop pass */
static size_t orders_bytes;     /* rough size of their payloads */
static int64_t flush_timer;

/* What a failed hand-off means for each order: an error result. */
static void fail_orders(json_t *failed)
{
    size_t i;
    json_t *order;
    json_array_foreach(failed, i, order) {
        json_t *r = json_pack("{s:s,s:O,s:O,s:i,s:[],s:[],s:i}", "op", "routed", "ctx",
                              json_object_get(order, "ctx"), "msg_id", json_object_get(order, "msg_id"),
                              "code", GW_ERR_BUSY, "local", "remote", "stored", 0);
        gw_internal_routed(r);
        json_decref(r);
    }
}

static void flush(void)
{
    if (flush_timer > 0)
        pg_timer_clear(flush_timer);
    flush_timer = 0;
    json_t *batch = orders;
    orders = NULL;
    orders_bytes = 0;
    if (!batch)
        return;
    if (gw_task(json_pack("{s:s,s:O}", "op", "route", "orders", batch), 0) < 0) {
        pg_error("could not hand %zu order(s) to a task worker", json_array_size(batch));
        fail_orders(batch);
    }
    json_decref(batch);
}

static void flush_due(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    flush_timer = 0;
    flush();
}

static size_t order_bytes(json_t *order)
{
    size_t bytes = 256, i;
    json_t *item;
    json_array_foreach(json_object_get(order, "items"), i, item)
        bytes += 128 + 2 * json_string_length(json_object_get(item, "payload"));
    return bytes;
}

void gw_route(json_t *order)
{
    size_t bytes = order_bytes(order);
    /* A task must stay well inside the IPC message limit. */
    if (orders && orders_bytes + bytes > gw.server_cfg.package_max_length)
        flush();
    if (!orders)
        orders = json_array();
    json_array_append_new(orders, order);
    orders_bytes += bytes;
    if (json_array_size(orders) >= ROUTE_BATCH_MAX) {
        flush();
    } else if (flush_timer <= 0) {
        flush_timer = pg_timer_after(0, flush_due, NULL);
        if (flush_timer < 0)
            flush();
    }
}

/* The worker stops: results would come back to nobody, so the senders
 * hear "busy" now and try again (the consumer on another node). */
void gw_route_stop(void)
{
    if (flush_timer > 0)
        pg_timer_clear(flush_timer);
    flush_timer = 0;
    if (orders)
        fail_orders(orders);
    json_decref(orders);
    orders = NULL;
    orders_bytes = 0;
}

void gw_route_done(json_t *result)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(result, "results"), i, r)
        gw_internal_routed(r);
}

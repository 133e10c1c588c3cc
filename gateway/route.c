/* route.c - routing requests of one loop pass travel as one task.
 *
 * Every work order and chat message needs the uuid -> session lookup in
 * MySQL, which a task worker does.  One task and one query per message
 * would cap a node at a few thousand messages a second, so a worker
 * collects the orders that arrive while it handles one batch of input (the
 * consumer pipelines many) and hands them to a task worker together as soon
 * as the loop pass ends; the task worker resolves all their uuids with a
 * few IN queries and answers with one result per order (batch.c does the
 * collecting). */
#include "gateway.h"

#define ROUTE_BATCH_MAX 500     /* orders per task */

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

static gw_batch orders = {.op = "route", .field = "orders", .dst = -1,
                          .max_items = ROUTE_BATCH_MAX, .fail = fail_orders};

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
    gw_batch_add(&orders, order, order_bytes(order));
}

/* The worker stops: results would come back to nobody, so the senders
 * hear "busy" now and try again (the consumer on another node). */
void gw_route_stop(void)
{
    gw_batch_stop(&orders, 0);
}

void gw_route_done(json_t *result)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(result, "results"), i, r)
        gw_internal_routed(r);
}

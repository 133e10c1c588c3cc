/* order.c - an order inside a worker, as a record.
 *
 * Most orders on a busy node have every route known (route_cache.c, the
 * uuid index) and every target a browser of this node: they are pushed
 * and answered in the pass that took them in.  Building a JSON tree for
 * such an order, only to read it back a few calls later, cost more than
 * its routing, so the order is a plain record from intake to reply.  The
 * rest of the pipeline (route tasks, the proxy, the store: route.c's
 * comment lists it) works on the JSON form, which gw_order_json makes when
 * an order leaves the steady path. */
#include "gateway.h"

#include <stdlib.h>

gw_order *gw_order_new(size_t n)
{
    return calloc(1, sizeof(gw_order) + n * sizeof(gw_item));
}

void gw_order_free(gw_order *order)
{
    if (!order)
        return;
    for (size_t i = 0; i < order->n; i++)
        free(order->items[i].payload);
    free(order->chat_token);
    free(order);
}

static json_t *item_json(const gw_item *item)
{
    json_t *j = json_pack("{s:s,s:s,s:s}", "uuid", item->uuid, "id", item->id, "payload",
                          item->payload);
    if (j && item->early_n) {
        json_t *early = json_array();
        for (int k = 0; k < item->early_n; k++)
            json_array_append_new(early, json_integer((json_int_t)item->early[k]));
        json_object_set_new(j, "early", early);
    }
    return j;
}

/* consumer_fd: the seed's name for "the connection to answer". */
static json_t *ctx_json(const gw_order *order)
{
    if (order->kind == GW_ORDER_CHAT)
        return json_pack("{s:s,s:I,s:s}", "kind", "chat", "session", (json_int_t)order->sender,
                         "to", order->to);
    return json_pack("{s:s,s:I,s:s,s:s,s:I}", "kind", "worksheet", "consumer_fd",
                     (json_int_t)order->sender, "msg_id", order->msg_id, "chat_token",
                     order->chat_token, "ticket", (json_int_t)order->ticket);
}

json_t *gw_order_json(const gw_order *order)
{
    json_t *items = json_array();
    for (size_t i = 0; items && i < order->n; i++) {
        if (json_array_append_new(items, item_json(&order->items[i])) < 0) {
            json_decref(items);
            items = NULL;
        }
    }
    /* "o" steals its reference even when the packing fails */
    json_t *j = json_pack("{s:s,s:o,s:o}", "msg_id", order->msg_id, "items", items, "ctx",
                          ctx_json(order));
    if (j && order->chat_token &&
        json_object_set_new(j, "chat_token", json_string(order->chat_token)) < 0) {
        json_decref(j);
        return NULL;
    }
    return j;
}

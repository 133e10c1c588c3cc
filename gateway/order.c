/* order.c - an order inside a worker, as a record.
 *
 * Most orders on a busy node have every route known (route_cache.c, the
 * uuid index) and every target a browser of this node: they are pushed
 * and answered in the pass that took them in.  Building a JSON tree for
 * such an order, only to read it back a few calls later, cost more than
 * its routing, so the order is a plain record from intake to reply, and
 * so it stays off the steady path too: while a route task looks up its
 * uuids (route_task.c), and on its way through the proxy and the store
 * (gw_routed: route.c's comment lists the steps). */
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

gw_outcome gw_order_outcome(const gw_order *order, int code)
{
    return (gw_outcome){.kind = order->kind, .sender = order->sender, .msg_id = order->msg_id,
                        .to = order->to, .ticket = order->ticket, .code = code};
}

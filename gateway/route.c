/* route.c - routing requests of one loop pass travel as one task.
 *
 * Every work order and chat message needs the uuid -> session lookup in
 * MySQL, which a task worker does.  One task and one query per message
 * would cap a node at a few thousand messages a second, so a worker
 * collects the orders that arrive while it handles one batch of input (the
 * consumer pipelines many) and hands them to a task worker together as soon
 * as the loop pass ends; the task worker resolves all their uuids with a
 * few IN queries and answers with one result per order (batch.c does the
 * collecting).  The orders stay here meanwhile: the task carries only
 * the uuids, and the results name items by index; items that reach nobody
 * are stored afterwards (store.c).
 *
 * Sessions on this node do not wait for the lookup: the shared uuid index
 * (uuid_index.c) names them, so they get the event as the order arrives.
 * Each item keeps the sessions it reached so ("early"), and the answer
 * skips them; an item that reached one is delivered even if MySQL does not
 * list that session yet (its registration is still on the way).
 *
 * An order whose items all reached sessions here, and whose uuids the
 * route cache knows to have none on other nodes, is answered at once
 * (gw_internal_answer): the steady path of a busy node, on which the order
 * stays a record (order.c).  Any other order takes the pipeline below.
 *
 * The routing pipeline, in call order, with the shape of what each step
 * hands on:
 *
 *  1. an order, the record gw_route took (gw_order, order.c; from
 *     internal.c send_message, browser.c on_chat).  Each item pushed at
 *     once to a session of this node keeps that session in early.  An
 *     order whose items' routes are all cached goes to step 4 at once.
 *  2. the route task, batch.c -> task worker (tasks.c op_route): a record
 *     (route_task.c) of each order's chat_token, sender and uuids, under a
 *     batch id (in_task) that names the orders held here.
 *  3. its answer, on_finish -> gw_route_done: a record with one result per
 *     order, code and entries, each naming its item by index: a session
 *     on this node, one on another node (ip, port, client_id), or none.
 *     It is checked whole before any of it is acted on.
 *  4. the routed order (gw_routed), route.c -> internal.c
 *     gw_internal_routed, once the sessions here are pushed, with the
 *     items for other nodes (gw_remote: ip, port, client_id) and those for
 *     the store (gw_store_entry).
 *  5. remote -> proxy_link.c gw_proxy_forward: a /chat/push-local frame per
 *     target to the proxy, written from the record; what is not confirmed
 *     joins the store items.  On the target node, internal.c push_local
 *     sets proxy_fd: the session id of the proxy's connection, which the
 *     reply goes back on.
 *  6. store entries -> store.c gw_store_routed: each gets the ticket the
 *     routed order waits under and goes in a store task (a record,
 *     store_task.c); its answer pushes to sessions that registered
 *     meanwhile and settles the tickets.
 *  7. internal.c gw_internal_finish: the reply frame to the consumer's link, or
 *     NEW_MSG_STATUS to the chatting browser (browser.c gw_browser_routed). */
#include "gateway.h"

#include "log.h"
#include "memory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUTE_BATCH_MAX 500     /* orders per task */

/* The orders of one route task, held while a task worker routes them. */
typedef struct {
    size_t n;
    gw_order *orders[];
} route_batch;

static void free_orders(gw_order *const *orders, size_t n)
{
    for (size_t i = 0; i < n; i++)
        gw_order_free(orders[i]);
}

static void drop_batch(void *value)
{
    route_batch *b = value;
    free_orders(b->orders, b->n);
    free(b);
}

static void answer(const gw_order *order, int code, long long delivered)
{
    gw_outcome o = gw_order_outcome(order, code);
    o.delivered = delivered;
    gw_internal_answer(&o);
}

/* Orders that cannot be routed now: each sender hears code, and they go. */
static void fail_orders(gw_order *const *orders, size_t n, int code)
{
    for (size_t i = 0; i < n; i++)
        answer(orders[i], code, 0);
    free_orders(orders, n);
}

/* A route task that MySQL holds up: its senders try again later. */
static void route_overdue(void *value)
{
    route_batch *b = value;
    fail_orders(b->orders, b->n, PG_ERR_UNAVAILABLE);
    free(b);
}

/* batch id -> the orders a task worker routes */
static gw_awaiting in_task = {.what = "route task(s)", .drop = drop_batch,
                              .overdue = route_overdue};

/* Not handed off (the worker stops): each sender hears "busy". */
static void fail_unsent(void **items, size_t n)
{
    fail_orders((gw_order *const *)items, n, PG_ERR_BUSY);
}

/* The orders of one loop pass go to a task worker as one route task;
 * they wait here under its batch id. */
static int send_orders(void **items, size_t n, int dst)
{
    route_batch *b = malloc(sizeof(*b) + n * sizeof(gw_order *));
    uint64_t id = b ? gw_awaiting_put(&in_task, b) : 0;
    pg_rec_writer w = {0};
    if (b) {
        b->n = n;
        memcpy(b->orders, items, n * sizeof(gw_order *));
    }
    int rc = -1;
    if (id && gw_route_task_put(&w, pg_prom_now_us(), id, b->orders, n) == 0)
        rc = gw_task_record(&w, dst);
    pg_rec_writer_free(&w);
    if (rc < 0) {
        if (id)
            gw_awaiting_take(&in_task, id);
        free(b);
        fail_unsent(items, n);
    }
    return rc;
}

static gw_batch orders = {.op = "route", .dst = -1, .max_items = ROUTE_BATCH_MAX,
                          .send = send_orders, .fail = fail_unsent};

static size_t order_bytes(const gw_order *order)
{
    return 128 + 96 * order->n;
}

/* Only with a chat_token known to be valid (a chat message has none: its
 * sender is a signed-in browser), and not while the node drains. */
static int may_push_early(const gw_order *order)
{
    return !atomic_load(&gw.counters->draining) &&
           (order->kind == GW_ORDER_CHAT ||
            (order->chat_token && gw_token_cached(order->chat_token) == 1));
}

/* The item goes to its uuid's sessions on this node now (item->early). */
static void push_early(gw_item *item, uint64_t ticket)
{
    pg_session_id sessions[GW_INDEX_SESSIONS];
    size_t n = gw_uuid_index_get(item->uuid, sessions, GW_INDEX_SESSIONS);
    for (size_t i = 0; i < n; i++) {
        if (!gw_session_is(sessions[i], item->uuid))
            continue;   /* closed a moment ago */
        gw_waiter w = gw_handoff_expect(ticket, pg_server_session_worker(gw.server, sessions[i]));
        gw_push(sessions[i], item->uuid, item->id, item->payload, 0, &w);
        item->early[item->early_n++] = sessions[i];
    }
}

static int reached_early(const gw_item *item, pg_session_id session)
{
    for (int k = 0; k < item->early_n; k++)
        if (item->early[k] == session)
            return 1;
    return 0;
}

/* ---- an order's routes, from the cache or a route task, to step 4 ---- */

typedef struct {
    gw_order *order;
    long long delivered;
    gw_remote *remote;    /* to the proxy */
    size_t n_remote, cap_remote;
    gw_store_list offline;  /* to the store */
    int failed;           /* out of memory: the sender retries it all */
} routing;

/* Allocates nothing: an order routed to this node's sessions alone needs
 * nothing but the record. */
static void routing_begin(routing *r, gw_order *order)
{
    *r = (routing){.order = order};
    for (size_t i = 0; i < order->n; i++)
        r->delivered += order->items[i].early_n;
}

static void add_offline(routing *r, const gw_item *item)
{
    gw_store_entry e = {.uuid = item->uuid, .msg_id = item->id, .payload = item->payload};
    if (gw_store_list_add(&r->offline, &e) < 0)
        r->failed = 1;
}

static void routing_drop(routing *r)
{
    free(r->remote);
    gw_store_list_free(&r->offline);
}

static void add_remote(routing *r, const gw_route_entry *e)
{
    if (pg_grow(&r->remote, &r->cap_remote, r->n_remote, sizeof(*r->remote)) < 0) {
        r->failed = 1;
        return;
    }
    gw_remote *t = &r->remote[r->n_remote++];
    t->item = e->item;
    t->port = e->port;
    snprintf(t->ip, sizeof(t->ip), "%s", e->ip);
    snprintf(t->client_id, sizeof(t->client_id), "%s", e->client_id);
}

/* Where one item goes: a session here gets it now (unless it had it
 * early); one elsewhere goes to the proxy; none, to the store. */
static void routing_entry(routing *r, const gw_route_entry *e)
{
    gw_item *item = &r->order->items[e->item];
    if (e->where == GW_ROUTE_LOCAL) {
        if (reached_early(item, e->session))
            return;
        int worker = pg_server_session_worker(gw.server, e->session);
        gw_waiter w = gw_handoff_expect(r->order->ticket, worker);
        gw_push(e->session, item->uuid, item->id, item->payload, 0, &w);
        r->delivered++;
    } else if (e->where == GW_ROUTE_REMOTE) {
        add_remote(r, e);
    } else if (!item->early_n) {
        add_offline(r, item);
    }
}

/* Step 4 with the order's code; the order goes with it. */
static void routing_end(routing *r, int code)
{
    gw_routed *routed = r->failed ? NULL : malloc(sizeof(*routed));
    if (!routed) {
        answer(r->order, PG_ERR_INTERNAL, 0);   /* out of memory: sent again */
        gw_order_free(r->order);
        routing_drop(r);
        return;
    }
    *routed = (gw_routed){.order = r->order, .code = code, .delivered = r->delivered};
    gw_internal_routed(routed, r->remote, r->n_remote, r->offline.v, r->offline.n);
    routing_drop(r);
}

/* An order whose local sessions were reached early, routed from the cache
 * (it holds the sessions on other nodes): 0, or -1 when an item's uuid is
 * not cached (or the cache is not trusted now) and a task must route it.
 * The commonest such order, every target of which was a session here, is
 * answered at once: the steady path of a busy node. */
static int route_cached(gw_order *order)
{
    routing r;
    routing_begin(&r, order);
    for (uint32_t i = 0; i < order->n; i++) {
        gw_routes routes;
        if (!gw_route_cache_get(order->items[i].uuid, &routes)) {
            routing_drop(&r);
            return -1;
        }
        for (int t = 0; t < routes.n; t++) {
            char client_id[192];
            gw_client_id_of(routes.t[t].ip, routes.t[t].port, routes.t[t].session, client_id,
                            sizeof(client_id));
            routing_entry(&r, &(gw_route_entry){.item = i, .where = GW_ROUTE_REMOTE,
                                                .session = routes.t[t].session,
                                                .port = routes.t[t].port, .ip = routes.t[t].ip,
                                                .client_id = client_id});
        }
        if (routes.n == 0)
            routing_entry(&r, &(gw_route_entry){.item = i, .where = GW_ROUTE_NONE});
    }
    if (r.n_remote || r.offline.n || r.failed) {
        routing_end(&r, PG_OK);
        return 0;
    }
    answer(order, PG_OK, r.delivered);
    gw_order_free(order);
    return 0;
}

/* An order goes out at once when the cache knows where all its items'
 * sessions are: no task, no waiting for the loop pass to end. */
void gw_route(gw_order *order)
{
    int early = may_push_early(order);
    for (size_t i = 0; early && i < order->n; i++)
        push_early(&order->items[i], order->ticket);
    if (early && route_cached(order) == 0)
        return;
    order->t_in = gw_metrics_intake();   /* its intake time waits with it */
    gw_batch_add(&orders, order, order_bytes(order));
}

/* The worker stops: results would come back to nobody, so the senders of
 * orders not yet handed off hear "busy" now and try again (the consumer on
 * another node); those with a task worker get no answer and time out. */
void gw_route_stop(void)
{
    gw_batch_stop(&orders, 0);
    gw_awaiting_stop(&in_task);
}

/* The task worker's verdict on an order's chat_token, for may_push_early. */
static void learn_token(const gw_order *order, int code)
{
    const char *token = order->chat_token;
    if (token && (code == PG_OK || code == PG_ERR_BAD_TOKEN) &&
        gw_token_cached(token) != (code == PG_OK))
        gw_token_remember(token, code == PG_OK);
}

/* The answer to a route task of the worker this one replaced: its orders
 * died with it, and their senders are told to send them again. */
static void retry_senders(pg_rec_reader *r, uint32_t n)
{
    for (uint32_t o = 0; o < n; o++) {
        gw_route_sender s;
        int code;
        uint32_t entries = gw_routed_order_get(r, &s, &code);
        for (uint32_t e = 0; e < entries; e++)
            gw_routed_entry_get(r);
        gw_outcome out = {.kind = s.kind, .sender = s.sender, .msg_id = s.msg_id, .to = s.to,
                          .code = PG_ERR_BUSY};
        gw_internal_answer(&out);
    }
    pg_warn("routes of %u order(s) of the worker before this one came back; their senders "
            "retry them", n);
}

/* One order's result: its entries, then step 4. */
static void route_one(pg_rec_reader *r, gw_order *order)
{
    gw_route_sender s;
    int code;
    uint32_t entries = gw_routed_order_get(r, &s, &code);
    routing rt;
    learn_token(order, code);
    gw_metrics_intake_set(order->t_in);
    routing_begin(&rt, order);
    for (uint32_t e = 0; e < entries; e++) {
        gw_route_entry en = gw_routed_entry_get(r);
        if (en.item < order->n)
            routing_entry(&rt, &en);
        else
            rt.failed = 1;   /* names no item: not to be trusted */
    }
    routing_end(&rt, code);
}

void gw_route_done(const char *data, size_t len)
{
    pg_rec_reader r = pg_rec_reader_of(data, len);
    gw_task_head head;
    uint64_t id = 0;
    uint32_t n = 0;
    int ok = gw_routed_head(&r, &head, &id, &n) == 0 && gw_routed_check(data, len) == 0;
    gw_metrics_route_answered(head.t0);
    route_batch *b = gw_awaiting_take(&in_task, id);
    if (!ok || (b && b->n != n)) {
        pg_error("a malformed answer to a route task (%zu bytes); its orders are sent again", len);
        if (b)
            fail_orders(b->orders, b->n, PG_ERR_INTERNAL);
        free(b);
        return;
    }
    if (!b && gw_awaiting_ours(&in_task, id)) {
        pg_debug("a route task answered after its orders were given up on");
        return;
    }
    if (!b) {
        retry_senders(&r, n);
        return;
    }
    for (size_t o = 0; o < b->n; o++)
        route_one(&r, b->orders[o]);
    free(b);
}

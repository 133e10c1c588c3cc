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
 * hands on (JSON in a worker's memory):
 *
 *  1. an order, gw_order_json of the record gw_route took (from internal.c
 *     send_message, browser.c on_chat):
 *       {chat_token (work orders only), msg_id, items: [{uuid, id, payload}],
 *        ctx}
 *     ctx is what the answer needs and is never sent to a task worker:
 *       work order {kind: "worksheet", consumer_fd, msg_id, chat_token}
 *       chat       {kind: "chat", session, to}
 *     consumer_fd and session are session ids (pg_session_id) of the
 *     connection to answer: the consumer's link on the internal port, or
 *     the chatting browser; "consumer_fd" is the seed's name.  Each item
 *     pushed at once to a session of this node gets early: [session, ...].
 *  2. the route task, batch.c -> task worker (tasks.c op_route):
 *       {op: "route", batch: <id in in_task>, orders: [[chat_token|null, uuid, ...]]}
 *  3. its answer, on_finish -> gw_route_done: one compact result per order,
 *     items named by their index i in the order held here:
 *       {op: "routed", batch, results: [{c: code, l: [[i, session]],
 *                                        r: [[i, ip, port, client_id]], n: [i]}]}
 *     l: sessions on this node, r: sessions on other nodes, n: no session.
 *  4. routed, gw_route_done -> internal.c gw_internal_routed, once l is pushed:
 *       {op: "routed", ctx, msg_id, code, delivered,
 *        remote: [{ip, port, client_id, uuid, id, payload}],
 *        offline: [{uuid, msg_id, payload}], stored: 0}
 *  5. remote -> proxy_link.c gw_proxy_forward: a /chat/push-local frame per
 *     target to the proxy; what is not confirmed joins offline.  On the
 *     target node, internal.c push_local sets proxy_fd: the session id of
 *     the proxy's connection, which the reply goes back on.
 *  6. offline -> store.c gw_store_routed: items {uuid, msg_id, payload, t}
 *     (t: the ticket routed waits under) go in a store task, {op: "store",
 *     items, ctx: {tickets}}; its answer {op: "stored", ctx, code, stored,
 *     local: [...]} pushes to sessions that registered meanwhile and
 *     settles the tickets.
 *  7. internal.c gw_internal_finish: the reply frame to consumer_fd, or
 *     NEW_MSG_STATUS to the chatting browser (browser.c gw_browser_routed). */
#include "gateway.h"

#include "log.h"

#define ROUTE_BATCH_MAX 500     /* orders per task */

static void drop_orders(void *batch)
{
    json_decref(batch);
}

/* batch id -> the orders a task worker routes */
static gw_awaiting in_task = {.what = "route task(s)", .drop = drop_orders};

/* An order that cannot be routed now gets an error result. */
static void fail_order(json_t *order, int code)
{
    json_t *r = json_pack("{s:s,s:O,s:O,s:i,s:i}", "op", "routed", "ctx", json_object_get(order, "ctx"),
                          "msg_id", json_object_get(order, "msg_id"), "code", code, "stored", 0);
    if (r)
        gw_internal_routed(r);
    json_decref(r);
}

typedef struct {
    json_t *orders;
    uint64_t id;
} batch_search;

static int find_batch(uint64_t id, void *value, void *arg)
{
    batch_search *b = arg;
    if (value == b->orders)
        b->id = id;
    return value == b->orders;
}

/* Orders not handed off: forgotten here, and each sender hears "busy". */
static void fail_orders(json_t *failed)
{
    batch_search search = {.orders = failed};
    pg_idmap_iterate(in_task.map, find_batch, &search);
    if (search.id)
        json_decref(gw_awaiting_take(&in_task, search.id));
    size_t i;
    json_t *order;
    json_array_foreach(failed, i, order)
        fail_order(order, PG_ERR_BUSY);
}

/* What the task worker needs of the orders: [chat_token or null, uuid, ...]
 * each (tasks.c op_route). */
static json_t *task_orders(json_t *batch)
{
    json_t *out = json_array();
    size_t i, k;
    json_t *order, *item;
    json_array_foreach(batch, i, order) {
        json_t *token = json_object_get(order, "chat_token");
        json_t *task_order = json_array();
        json_array_append(task_order, token ? token : json_null());
        json_array_foreach(json_object_get(order, "items"), k, item) {
            json_t *uuid = json_object_get(item, "uuid");
            json_array_append(task_order, uuid ? uuid : json_null());   /* indexes stay */
        }
        json_array_append_new(out, task_order);
    }
    return out;
}

/* A task with the orders' tokens and items (not ctx), under a batch id
 * that names them here when the answer comes. */
/* Whom each order answers (its ctx, less the token and the hand-off
 * ticket): the task worker hands it back, so that a worker that took over
 * from one killed meanwhile can tell them to try again at once rather than
 * leave them to time out. */
static json_t *task_senders(json_t *batch)
{
    json_t *out = json_array();
    size_t i;
    json_t *order;
    json_array_foreach(batch, i, order) {
        json_t *sender = json_copy(json_object_get(order, "ctx"));
        json_object_del(sender, "chat_token");
        json_object_del(sender, "ticket");
        json_array_append_new(out, sender);
    }
    return out;
}

static json_t *route_task(json_t *batch)
{
    uint64_t id = gw_awaiting_put(&in_task, json_incref(batch));
    if (!id) {
        json_decref(batch);
        return NULL;
    }
    return json_pack("{s:s,s:I,s:o,s:o}", "op", "route", "batch", (json_int_t)id, "orders",
                     task_orders(batch), "senders", task_senders(batch));
}

static gw_batch orders = {.op = "route", .field = "orders", .dst = -1,
                          .max_items = ROUTE_BATCH_MAX, .task = route_task, .fail = fail_orders};

static size_t order_bytes(json_t *order)
{
    return 128 + 96 * json_array_size(json_object_get(order, "items"));
}

/* Only with a chat_token known to be valid (a chat message has none: its
 * sender is a signed-in browser), and not while the node drains. */
static int may_push_early(const gw_order *order)
{
    return !atomic_load(&gw.counters->draining) &&
           (order->kind == GW_ORDER_CHAT ||
            (order->chat_token && gw_token_cached(order->chat_token) == 1));
}

/* The item goes to its uuid's sessions on this node now; returns how many. */
static int push_early(gw_item *item, uint64_t ticket)
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
    return item->early_n;
}

/* ---- orders whose routes are all known (route_cache.c) ---- */

/* Every item reached a session here, and the cache says its uuid has none
 * on another node: the order is done. */
static int done_here(const gw_order *order)
{
    for (size_t i = 0; i < order->n; i++) {
        gw_routes routes;
        if (!order->items[i].early_n || !gw_route_cache_get(order->items[i].uuid, &routes) ||
            routes.n)
            return 0;
    }
    return 1;
}

static void answer(const gw_order *order, int code, long long delivered)
{
    gw_outcome o = {.kind = order->kind, .sender = order->sender, .msg_id = order->msg_id,
                    .to = order->to, .ticket = order->ticket, .code = code,
                    .delivered = delivered};
    gw_internal_answer(&o);
}

/* The compact result a route task would give the order, from the cache,
 * for an order whose local sessions were reached early: NULL when an
 * item's uuid is not cached (or the cache is not trusted now). */
static json_t *cached_result(json_t *order)
{
    json_t *result = json_pack("{s:i,s:[],s:[],s:[]}", "c", PG_OK, "l", "r", "n");
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(order, "items"), i, item) {
        gw_routes routes;
        const char *uuid = json_string_value(json_object_get(item, "uuid"));
        if (!result || !uuid || !gw_route_cache_get(uuid, &routes)) {
            json_decref(result);
            return NULL;
        }
        for (int t = 0; t < routes.n; t++) {
            char client_id[192];
            gw_client_id_of(routes.t[t].ip, routes.t[t].port, routes.t[t].session, client_id,
                            sizeof(client_id));
            json_array_append_new(json_object_get(result, "r"),
                                  json_pack("[I,s,i,s]", (json_int_t)i, routes.t[t].ip,
                                            routes.t[t].port, client_id));
        }
        if (routes.n == 0 && !json_object_get(item, "early"))
            json_array_append_new(json_object_get(result, "n"), json_integer((json_int_t)i));
    }
    return result;
}

static json_t *routed_of(json_t *order, json_t *compact);

/* A cached order with targets beyond this node's browsers: NULL when it
 * must wait for a route task after all. */
static json_t *cached_routed(json_t *order)
{
    json_t *compact = cached_result(order);
    json_t *r = compact ? routed_of(order, compact) : NULL;
    json_decref(compact);
    return r;
}

/* An order goes out at once when the cache knows where all its items'
 * sessions are: no task, no waiting for the loop pass to end.  The
 * commonest such order, all of whose targets are browsers here, is
 * answered without ever becoming JSON. */
void gw_route(gw_order *order)
{
    int early = may_push_early(order);
    long long delivered = 0;
    for (size_t i = 0; early && i < order->n; i++)
        delivered += push_early(&order->items[i], order->ticket);
    if (early && done_here(order)) {
        answer(order, PG_OK, delivered);
        gw_order_free(order);
        return;
    }
    json_t *j = gw_order_json(order);
    if (!j)
        answer(order, PG_ERR_BUSY, 0);
    gw_order_free(order);
    if (!j)
        return;
    json_t *r = early ? cached_routed(j) : NULL;
    if (r) {
        gw_internal_routed(r);
        json_decref(r);
        json_decref(j);
        return;
    }
    gw_metrics_stamp(j);   /* its intake time waits with it */
    gw_batch_add(&orders, j, order_bytes(j));
}

/* The worker stops: results would come back to nobody, so the senders of
 * orders not yet handed off hear "busy" now and try again (the consumer on
 * another node); those with a task worker get no answer and time out. */
void gw_route_stop(void)
{
    gw_batch_stop(&orders, 0);
    gw_awaiting_stop(&in_task);
}

static json_t *item_of(json_t *order, json_t *index)
{
    return json_array_get(json_object_get(order, "items"), (size_t)json_integer_value(index));
}

static int reached_early(json_t *item, json_t *session)
{
    size_t k;
    json_t *s;
    json_array_foreach(json_object_get(item, "early"), k, s)
        if (json_integer_value(s) == json_integer_value(session))
            return 1;
    return 0;
}

static json_int_t early_count(json_t *order)
{
    json_int_t n = 0;
    size_t k;
    json_t *item;
    json_array_foreach(json_object_get(order, "items"), k, item)
        n += (json_int_t)json_array_size(json_object_get(item, "early"));
    return n;
}

/* The hand-off ticket of an order (handoff.c), 0: none. */
static uint64_t order_ticket(json_t *order)
{
    return (uint64_t)json_integer_value(json_object_get(json_object_get(order, "ctx"), "ticket"));
}

/* Local sessions not reached early get the event now, straight from the
 * compact result: no intermediate target objects on the busiest path.
 * Returns how many. */
static json_int_t push_local(json_t *order, json_t *compact)
{
    size_t k;
    json_t *e;
    json_int_t pushed = 0;
    json_array_foreach(json_object_get(compact, "l"), k, e) {
        json_t *item = item_of(order, json_array_get(e, 0));
        if (reached_early(item, json_array_get(e, 1)))
            continue;
        pg_session_id session = (pg_session_id)json_integer_value(json_array_get(e, 1));
        gw_waiter w = gw_handoff_expect(order_ticket(order), pg_server_session_worker(gw.server, session));
        gw_push(session,
                json_string_value(json_object_get(item, "uuid")),
                json_string_value(json_object_get(item, "id")),
                json_string_value(json_object_get(item, "payload")), 0, &w);
        pushed++;
    }
    return pushed;
}

/* An order's result in the form gw_internal_routed takes, from the task
 * worker's compact one (tasks.c order_results) and the order held here;
 * local targets are pushed meanwhile. */
static json_t *routed_of(json_t *order, json_t *compact)
{
    json_t *remote = json_array(), *offline = json_array();
    size_t k;
    json_t *e;
    int ok = json_integer_value(json_object_get(compact, "c")) == PG_OK;
    json_int_t delivered = early_count(order) + (ok ? push_local(order, compact) : 0);
    json_array_foreach(json_object_get(compact, "r"), k, e) {
        json_t *item = item_of(order, json_array_get(e, 0));
        json_array_append_new(remote, json_pack("{s:O,s:O,s:O,s:O,s:O,s:O}", "ip", json_array_get(e, 1),
                                                "port", json_array_get(e, 2), "client_id",
                                                json_array_get(e, 3), "uuid", json_object_get(item, "uuid"),
                                                "id", json_object_get(item, "id"), "payload",
                                                json_object_get(item, "payload")));
    }
    json_array_foreach(json_object_get(compact, "n"), k, e) {
        json_t *item = item_of(order, e);
        if (json_object_get(item, "early"))
            continue;
        json_array_append_new(offline, json_pack("{s:O,s:O,s:O}", "uuid", json_object_get(item, "uuid"),
                                                 "msg_id", json_object_get(item, "id"), "payload",
                                                 json_object_get(item, "payload")));
    }
    return json_pack("{s:s,s:O,s:O,s:O,s:I,s:o,s:o,s:i}", "op", "routed", "ctx",
                     json_object_get(order, "ctx"), "msg_id", json_object_get(order, "msg_id"), "code",
                     json_object_get(compact, "c"), "delivered", delivered, "remote", remote, "offline",
                     offline, "stored", 0);
}

/* The task worker's verdict on an order's chat_token, for may_push_early. */
static void learn_token(json_t *order, json_t *compact)
{
    const char *token = json_string_value(json_object_get(order, "chat_token"));
    json_int_t code = json_integer_value(json_object_get(compact, "c"));
    if (token && (code == PG_OK || code == PG_ERR_BAD_TOKEN) &&
        gw_token_cached(token) != (code == PG_OK))
        gw_token_remember(token, code == PG_OK);
}

/* The answer to a route task of the worker this one replaced: its orders
 * died with it, and their senders are told to send them again. */
static void retry_senders(json_t *senders)
{
    size_t i;
    json_t *ctx;
    json_array_foreach(senders, i, ctx) {
        json_t *r = json_pack("{s:s,s:O,s:O?,s:i,s:i,s:i,s:i}", "op", "routed", "ctx", ctx,
                              "msg_id", json_object_get(ctx, "msg_id"), "code", PG_ERR_BUSY,
                              "delivered", 0, "forwarded", 0, "stored", 0);
        if (r)
            gw_internal_finish(r);
        json_decref(r);
    }
    pg_warn("routes of %zu order(s) of the worker before this one came back; their senders "
            "retry them", json_array_size(senders));
}

void gw_route_done(json_t *result)
{
    uint64_t id = (uint64_t)json_integer_value(json_object_get(result, "batch"));
    json_t *batch = gw_awaiting_take(&in_task, id);
    if (!batch) {
        retry_senders(json_object_get(result, "senders"));
        return;
    }
    size_t o;
    json_t *order;
    json_array_foreach(batch, o, order) {
        json_t *compact = json_array_get(json_object_get(result, "results"), o);
        learn_token(order, compact);
        gw_metrics_resume(order);
        json_t *r = json_is_integer(json_object_get(compact, "c")) ? routed_of(order, compact) : NULL;
        if (r)
            gw_internal_routed(r);
        else
            fail_order(order, PG_ERR_INTERNAL);
        json_decref(r);
    }
    json_decref(batch);
}

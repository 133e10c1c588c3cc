/* internal.c - the internal port: work orders from the consumer and pushes
 * relayed by the proxy.  Every request gets one reply frame on the same
 * connection: {"code":0|error,"msg":...,"msg_id":...}; a work order's reply
 * comes only once every target has been handed off (pushed to a local
 * session, accepted by the proxy, or stored in offline_messages), so a
 * consumer that acknowledges its queue entry on code 0 loses nothing.
 *
 * A request with "handoff": true is answered a second time once the
 * browsers it was pushed to have ACKed it or it is stored (handoff.c): the
 * first reply then says how many targets still wait ("pending").
 *
 * A push's event (remote_data) reaches the browser as the bytes it came in:
 * the request's parse checked them, and printing them again from the tree
 * would cost more than the push. */
#include "gateway.h"

#include "json_slice.h"
#include "log.h"
#include "reply.h"
#include "timer.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TARGETS 1000

/* The reply to request (its msg_id and, when the sender gave one, its
 * req_id: the proxy matches replies by it); with a hand-off ticket, the
 * first reply, which handoff.c may hold a moment (0: none, sent now). */
static void reply_held(uint64_t ticket, pg_session_id session, int code, const char *msg,
                       json_t *request, const char *tail)
{
    size_t len;
    char *text = pg_reply_json(code, msg ? msg : pg_code_text(code), json_object_get(request, "msg_id"),
                               json_object_get(request, "req_id"), tail, &len);
    gw_handoff_reply(ticket, session, text, len);
}

static void reply(pg_session_id session, int code, const char *msg, json_t *request, const char *tail)
{
    reply_held(0, session, code, msg, request, tail);
}

static void reply_error(pg_session_id session, int code, const char *msg, json_t *request)
{
    pg_warn("internal request refused: %s", msg ? msg : pg_code_text(code));
    reply(session, code, msg, request, ",\"data\":[]");
}

/* The event for one data entry, its response the bytes the entry's data
 * came in (elements: the request's data array, in step with the tree;
 * NULL once they cannot be told: then printed from the tree). */
static char *worksheet_event(pg_json_elements *elements, json_t *body, const char *id, size_t *len)
{
    const char *entry, *text;
    size_t entry_len, text_len;
    if (elements && pg_json_elements_next(elements, &entry, &entry_len) == PG_SLICE_FOUND &&
        pg_json_member_slice(entry, entry_len, "data", &text, &text_len) == PG_SLICE_FOUND)
        return gw_worksheet_json(text, text_len, id, len);
    char *printed = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    char *event = printed ? gw_worksheet_json(printed, strlen(printed), id, len) : NULL;
    free(printed);
    return event;
}

/* An order with one item per data entry: the event the browser will get.
 * raw: the request's text (parsed already), whose data entries' bytes are
 * the events' responses. */
static gw_order *worksheet_order(const char *msg_id, json_t *data, const char *raw, size_t raw_len,
                                 const char **problem)
{
    size_t n = json_array_size(data);
    if (!json_is_array(data) || n == 0 || n > MAX_TARGETS) {
        *problem = "data must be an array of 1 to 1000 targets";
        return NULL;
    }
    const char *data_text;
    size_t data_len;
    pg_json_elements elements, *raw_elements = NULL;
    if (pg_json_member_slice(raw, raw_len, "data", &data_text, &data_len) == PG_SLICE_FOUND &&
        pg_json_elements_begin(&elements, data_text, data_len) == 0)
        raw_elements = &elements;
    gw_order *order = gw_order_new(n);
    if (!order) {
        *problem = "out of memory";
        return NULL;
    }
    snprintf(order->msg_id, sizeof(order->msg_id), "%s", msg_id);
    for (size_t i = 0; i < n; i++) {
        json_t *entry = json_array_get(data, i);
        const char *uuid = json_string_value(json_object_get(entry, "uuid"));
        json_t *body = json_object_get(entry, "data");
        if (!uuid || !*uuid || strlen(uuid) > PG_UUID_MAX || !body) {
            *problem = "every data entry needs a uuid (1 to 63 characters) and data";
            gw_order_free(order);
            return NULL;
        }
        gw_item *item = &order->items[order->n++];
        snprintf(item->uuid, sizeof(item->uuid), "%s", uuid);
        if (n == 1)
            snprintf(item->id, sizeof(item->id), "%s", msg_id);
        else
            snprintf(item->id, sizeof(item->id), "%s:%zu", msg_id, i);
        size_t payload_len;
        item->payload = worksheet_event(raw_elements, body, item->id, &payload_len);
        if (!item->payload) {
            *problem = "out of memory";
            gw_order_free(order);
            return NULL;
        }
    }
    return order;
}

/* A send-message request that passed internal_check, and its order. */
static void send_message(pg_session_id session, json_t *req, gw_order *order)
{
    if (!gw_app_within_rate(order->chat_token, (int64_t)pg_now_ms())) {
        gw_order_free(order);
        reply_error(session, PG_ERR_RATE_LIMITED, NULL, req);
        return;
    }
    atomic_fetch_add(&gw.counters->messages_in, 1);
    order->sender = session;
    order->ticket = json_is_true(json_object_get(req, "handoff"))
                        ? gw_handoff_open(session, json_object_get(req, "msg_id"), NULL) : 0;
    gw_route(order);
}

/* The event's id: top-level for work orders, in data for chat (NEW_MSG). */
static const char *push_id(json_t *req)
{
    json_t *remote_data = json_object_get(req, "remote_data");
    const char *id = json_string_value(json_object_get(remote_data, "id"));
    if (!id)
        id = json_string_value(json_object_get(json_object_get(remote_data, "data"), "id"));
    return id ? id : json_string_value(json_object_get(req, "msg_id"));
}

/* The event's JSON text: its bytes as they came in the request text raw
 * (checked by the request's parse, never printed again), else printed from
 * the tree: its member names are escaped (json_slice.h). */
static char *remote_data_text(json_t *req, const char *raw, size_t raw_len)
{
    const char *value;
    size_t len;
    if (pg_json_member_slice(raw, raw_len, "remote_data", &value, &len) == PG_SLICE_FOUND)
        return strndup(value, len);
    return json_dumps(json_object_get(req, "remote_data"), JSON_COMPACT);
}

/* code: the verdict on the push's chat_token; raw: the request's text. */
static void push_checked(json_t *req, int code, const char *raw, size_t raw_len)
{
    pg_session_id session = (pg_session_id)json_integer_value(json_object_get(req, "proxy_fd"));
    if (code != PG_OK) {
        reply_error(session, code, NULL, req);
        return;
    }
    const char *uuid = json_string_value(json_object_get(req, "uuid"));
    char ip[64];
    int port;
    pg_session_id target;
    if (gw_client_id_parse(json_string_value(json_object_get(req, "client_id")), ip, sizeof(ip),
                           &port, &target) < 0 ||
        strcmp(ip, gw.node_ip) != 0 || port != gw.cfg.internal_port ||
        atomic_load(&gw.counters->draining) || !gw_session_is(target, uuid)) {
        reply(session, PG_ERR_GONE, NULL, req, "");
    } else {
        uint64_t ticket = json_is_true(json_object_get(req, "handoff"))
                              ? gw_handoff_open(session, json_object_get(req, "msg_id"),
                                                json_object_get(req, "req_id")) : 0;
        gw_waiter w = gw_handoff_expect(ticket, pg_server_session_worker(gw.server, target));
        char *payload = remote_data_text(req, raw, raw_len);
        gw_push(target, uuid, push_id(req), payload, 0, &w);
        free(payload);
        reply_held(ticket, session, PG_OK, "delivered", req, "");
    }
}

/* A push-local request waiting for the verdict on its chat_token, with its
 * text. */
typedef struct {
    json_t *req;
    pg_session_id session;         /* whom to answer: the proxy's connection */
    size_t raw_len;
    char raw[];
} token_wait;

static void drop_token_wait(void *value)
{
    token_wait *t = value;
    json_decref(t->req);
    free(t);
}

/* A token check that MySQL holds up: the proxy tries again later. */
static void token_overdue(void *value)
{
    token_wait *t = value;
    reply(t->session, PG_ERR_UNAVAILABLE, "MySQL did not answer in time", t->req, ",\"data\":[]");
    drop_token_wait(t);
}

static gw_awaiting token_checks = {.what = "push(es) waiting for their token check",
                                   .drop = drop_token_wait, .overdue = token_overdue};

/* The request waits here; the task carries its token alone.  0 or -1. */
static int check_token(pg_session_id session, json_t *req, const char *token, const char *raw,
                       size_t raw_len)
{
    token_wait *t = malloc(sizeof(*t) + raw_len + 1);
    uint64_t id = t ? gw_awaiting_put(&token_checks, t) : 0;
    if (!id) {
        free(t);
        return -1;
    }
    *t = (token_wait){.req = json_incref(req), .session = session, .raw_len = raw_len};
    memcpy(t->raw, raw, raw_len);
    t->raw[raw_len] = '\0';
    gw_token_check c = {.head = {.op = GW_TASK_TOKEN, .t0 = pg_prom_now_us(),
                                 .t_in = gw_metrics_intake()},
                        .request = id, .chat_token = token};
    pg_rec_writer w = {0};
    int rc = gw_token_task_put(&w, &c) == 0 ? gw_task_record(&w, -1) : -1;
    pg_rec_writer_free(&w);
    if (rc < 0)
        drop_token_wait(gw_awaiting_take(&token_checks, id));
    return rc;
}

/* A push-local request that passed internal_check; raw: its text. */
static void push_local(pg_session_id session, json_t *req, const char *raw, size_t raw_len)
{
    const char *token = json_string_value(json_object_get(req, "chat_token"));
    /* proxy_fd: the seed's name for "the connection to answer". */
    json_object_set_new(req, "proxy_fd", json_integer((json_int_t)session));
    int cached = gw_token_cached(token);
    if (cached >= 0) {
        /* a verdict from a moment ago: no task round trip */
        push_checked(req, cached ? PG_OK : PG_ERR_BAD_TOKEN, raw, raw_len);
    } else if (check_token(session, req, token, raw, raw_len) < 0) {
        reply_error(session, PG_ERR_BUSY, "could not queue the push", req);
    }
}

/* The task worker's verdict on a push's token: remembered, then acted on,
 * with the request's intake time (the head's t_in) for the push's. */
void gw_internal_token_checked(const char *data, size_t len)
{
    gw_token_check c;
    if (gw_token_task_get(data, len, &c) < 0) {
        pg_error("a malformed answer to a token task (%zu bytes)", len);
        return;
    }
    if (c.code == PG_OK || c.code == PG_ERR_BAD_TOKEN)
        gw_token_remember(c.chat_token, c.code == PG_OK);
    token_wait *t = gw_awaiting_get(&token_checks, c.request);
    const char *asked = t ? json_string_value(json_object_get(t->req, "chat_token")) : NULL;
    if (!asked || strcmp(asked, c.chat_token) != 0)
        return;   /* asked by the worker before this one: its sender sends again */
    gw_awaiting_take(&token_checks, c.request);
    gw_metrics_intake_set(c.head.t_in);
    push_checked(t->req, c.code, t->raw, t->raw_len);
    drop_token_wait(t);
}

/* The worker stops: the pushes waiting for a verdict get none; their
 * senders time out and send again. */
void gw_internal_stop(void)
{
    gw_awaiting_stop(&token_checks);
}

/* Back from end past spaces: the last byte before them, or NULL. */
static const char *before_space(const char *start, const char *end)
{
    while (end > start && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
        end--;
    return end > start ? end - 1 : NULL;
}

/* A request that is not JSON has no msg_id to answer with, except where
 * its sender wrote "msg_id":"..." as its last member, as the consumer does
 * (it leaves the parse of a producer's text to the gateway): then the
 * refusal names that id, and the consumer knows which entry it is for.
 * The id as an object {"msg_id": id} for the reply, or NULL. */
static json_t *trailing_msg_id(const char *text, size_t len)
{
    static const char name[] = "\"msg_id\"";
    const char *p = before_space(text, text + len);
    if (!p || *p != '}' || !(p = before_space(text, p)) || *p != '"')
        return NULL;
    const char *id_end = p;
    while (p > text && p[-1] != '"' && p[-1] != '\\' && (unsigned char)p[-1] >= 0x20 &&
           id_end - p < 64)
        p--;
    const char *id = p;
    if (p == text || p[-1] != '"' || id == id_end || !(p = before_space(text, p - 1)) ||
        *p != ':' || !(p = before_space(text, p)) || p - text + 1 < (ptrdiff_t)sizeof(name) - 1)
        return NULL;
    p -= sizeof(name) - 2;   /* at the name's opening quote */
    const char *member_start = before_space(text, p);
    if (memcmp(p, name, sizeof(name) - 1) != 0 || !member_start ||
        (*member_start != ',' && *member_start != '{'))
        return NULL;
    return json_pack("{s:s%}", "msg_id", id, (size_t)(id_end - id));
}

/* A request decoded and checked, before anything acts on it.  Kept apart
 * from the acting and pure (no server, no state) so that the fuzz target
 * tests/fuzz/internal_request.c can feed it. */
enum { INTERNAL_REFUSED, INTERNAL_SEND_MESSAGE, INTERNAL_PUSH_LOCAL };
typedef struct {
    int kind;
    json_t *req;                   /* the request object (the caller decrefs), or NULL;
                                      text that is not JSON: {"msg_id"} or NULL */
    gw_order *order;               /* send-message: its order (the caller's) */
    int code;                      /* refused: the error code, */
    const char *problem;           /* its text (NULL: the code's own) */
    char why[200];
} internal_req;

static void internal_check(const char *data, size_t len, internal_req *r)
{
    json_error_t err;
    *r = (internal_req){.kind = INTERNAL_REFUSED, .code = PG_ERR_BAD_REQUEST};
    r->req = json_loadb(data, len, 0, &err);
    const char *url = json_string_value(json_object_get(r->req, "url"));
    if (!json_is_object(r->req)) {
        json_decref(r->req);
        r->req = trailing_msg_id(data, len);
        snprintf(r->why, sizeof(r->why), "not a JSON object: %s", err.text);
        r->code = PG_ERR_BAD_JSON;
        r->problem = r->why;
    } else if (!url) {
        r->problem = "url is missing";
    } else if (strcmp(url, "/worksheet/send-message") == 0) {
        const char *token = json_string_value(json_object_get(r->req, "chat_token"));
        const char *msg_id = json_string_value(json_object_get(r->req, "msg_id"));
        r->problem = "chat_token and msg_id (1 to 48 characters) are required";
        if (token && msg_id && *msg_id && strlen(msg_id) <= 48 &&
            (r->order = worksheet_order(msg_id, json_object_get(r->req, "data"), data, len,
                                        &r->problem))) {
            r->order->kind = GW_ORDER_WORKSHEET;
            r->order->chat_token = strdup(token);
            r->kind = r->order->chat_token ? INTERNAL_SEND_MESSAGE : INTERNAL_REFUSED;
        }
        if (r->kind == INTERNAL_REFUSED && r->order) {
            gw_order_free(r->order);
            r->order = NULL;
            r->problem = "out of memory";
        }
    } else if (strcmp(url, "/chat/push-local") == 0) {
        r->problem = "chat_token, client_id, uuid and remote_data with an id are required";
        if (json_is_string(json_object_get(r->req, "chat_token")) &&
            json_is_string(json_object_get(r->req, "client_id")) &&
            json_is_string(json_object_get(r->req, "uuid")) &&
            json_is_object(json_object_get(r->req, "remote_data")) && push_id(r->req))
            r->kind = INTERNAL_PUSH_LOCAL;
    } else {
        r->code = PG_ERR_UNKNOWN_URL;
        r->problem = NULL;
    }
}

/* ---- the worker a request is for ---- */

/* Where the reactor thread looks for a target; the consumer's and the
 * proxy's requests name it in their first bytes. */
#define PEEK_BYTES 2048

/* The string value of the first member named key within text's first
 * PEEK_BYTES, copied to out: its length, or -1.  No JSON is parsed or
 * validated (the worker does that), so the answer is a guess, good enough
 * for a preference: a value with escapes, or longer than out, is none. */
static const char *past_space(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static int peek_string(const char *text, size_t len, const char *key, char *out, size_t out_size)
{
    char quoted[32];
    int qlen = snprintf(quoted, sizeof(quoted), "\"%s\"", key);
    const char *end = text + (len < PEEK_BYTES ? len : PEEK_BYTES);
    for (const char *p = text; p < end;) {
        const char *hit = memmem(p, (size_t)(end - p), quoted, (size_t)qlen);
        if (!hit)
            return -1;
        p = past_space(hit + qlen, end);
        if (p >= end || *p != ':')
            continue;
        p = past_space(p + 1, end);
        if (p >= end || *p != '"')
            continue;
        size_t n = 0;
        for (p++; p < end && *p != '"'; p++) {
            if (*p == '\\' || (unsigned char)*p < 0x20 || n + 1 >= out_size)
                return -1;
            out[n++] = *p;
        }
        if (p >= end)
            return -1;
        out[n] = '\0';
        return (int)n;
    }
    return -1;
}

int gw_internal_worker(const char *packet, size_t len, void *arg)
{
    (void)arg;
    char text[200], ip[64];
    int port;
    pg_session_id session;
    if (peek_string(packet, len, "client_id", text, sizeof(text)) > 0 &&
        gw_client_id_parse(text, ip, sizeof(ip), &port, &session) == 0)
        return pg_server_session_worker(gw.server, session);
    if (peek_string(packet, len, "uuid", text, PG_UUID_MAX + 1) > 0 &&
        gw_uuid_index_get(text, &session, 1) == 1)
        return pg_server_session_worker(gw.server, session);
    return -1;
}

void gw_internal_request(pg_session_id session, const char *data, size_t len)
{
    internal_req r;
    internal_check(data, len, &r);
    if (r.kind == INTERNAL_SEND_MESSAGE)
        send_message(session, r.req, r.order);
    else if (r.kind == INTERNAL_PUSH_LOCAL)
        push_local(session, r.req, data, len);
    else
        reply_error(session, r.code, r.problem, r.req);
    json_decref(r.req);
}

/* ---- after routing ---- */

/* Everything is handed off: answer the consumer, or tell the chat sender. */
void gw_internal_answer(const gw_outcome *o)
{
    if (o->kind == GW_ORDER_CHAT) {
        gw_browser_routed(o);
        return;
    }
    if (o->ticket && o->code != PG_OK && gw_handoff_drop(o->ticket) < 0)
        return;   /* on an error the sender retries it all, and nothing waits */
    char counts[128];
    snprintf(counts, sizeof(counts), ",\"delivered\":%lld,\"forwarded\":%lld,\"stored\":%lld",
             o->delivered, o->forwarded, o->stored);
    json_t *msg_id = o->msg_id ? json_string(o->msg_id) : NULL;
    size_t len;
    char *text = pg_reply_json(o->code, pg_code_text(o->code), msg_id, NULL, counts, &len);
    json_decref(msg_id);
    gw_handoff_reply(o->code == PG_OK ? o->ticket : 0, o->sender, text, len);
}

void gw_internal_finish(gw_routed *r)
{
    gw_outcome o = gw_order_outcome(r->order, r->code);
    o.delivered = r->delivered;
    o.forwarded = r->forwarded;
    o.stored = r->stored;
    gw_internal_answer(&o);
    gw_order_free(r->order);
    free(r);
}

void gw_internal_store_then_finish(gw_routed *r, const gw_store_entry *items, size_t n)
{
    if (n == 0)
        gw_internal_finish(r);
    else
        gw_store_routed(r, items, n);
}

/* The route is known and the local sessions have the event ("delivered"):
 * remote ones go to the proxy (or are stored when that is impossible). */
void gw_internal_routed(gw_routed *r, const gw_remote *remote, size_t n,
                        const gw_store_entry *offline, size_t n_offline)
{
    if (r->code != PG_OK) {
        gw_internal_finish(r);
    } else if (n == 0) {
        gw_internal_store_then_finish(r, offline, n_offline);
    } else {
        const char *token = r->order->chat_token;
        gw_proxy_forward(r, remote, n, offline, n_offline, token ? token : gw.cfg.chat_token);
    }
}

/* A store's answer: sessions that registered meanwhile get the messages
 * now (marked stored: their ACK deletes the stored copy); the waiters and
 * the routed orders it settles hear. */
void gw_internal_stored(const char *data, size_t len)
{
    gw_stored st;
    if (gw_stored_get(data, len, &st) < 0) {
        pg_error("a malformed answer to a store task (%zu bytes)", len);
        return;
    }
    for (size_t i = 0; i < st.n_pushes; i++) {
        const gw_store_push *p = &st.pushes[i];
        gw_push(p->session, p->entry.uuid, p->entry.msg_id, p->entry.payload, 1, NULL);
    }
    for (size_t i = 0; i < st.n_waiters; i++)
        if (st.waiters[i].worker >= 0 && st.waiters[i].worker < gw.server_cfg.worker_num)
            gw_waiter_settle(&st.waiters[i], st.code == PG_OK ? GW_PUSH_STORED : st.code);
    gw_store_answered(&st);
    gw_stored_free(&st);
}

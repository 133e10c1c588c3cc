/* browser.c - what browsers send on the public port.
 *
 * WebSocket events (the seed's): CONNECT {client_token} authenticates when
 * the token was not in the URL; HEART_BEAT is answered; ACK {id} completes a
 * pushed message; NEW_MSG {to, msg} is a chat message, routed exactly like a
 * work order.  Anything else gets the seed's error object.  Plain HTTP
 * requests go to http.c. */
#include "gateway.h"

#include "token.h"
#include "log.h"
#include "timer.h"

#include <event2/buffer.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STATIC_FILE_MAX (4 * 1024 * 1024)

static void send_text(pg_session_id session, char *text)
{
    if (text)
        pg_server_send(gw.server, session, text, strlen(text));
    free(text);
}

static void send_error(pg_session_id session, int code)
{
    send_text(session, gw_error_json(code, NULL));
}

static void close_unauthorized(pg_session_id session, const char *why)
{
    char reason[128];
    atomic_fetch_add(&gw.counters->auth_failures, 1);
    size_t n = gw_ws_close_reason(reason, sizeof(reason), 4001, why);
    pg_server_close(gw.server, session, reason, n);
}

/* ---- decoding: pure (no server, no state), so that the fuzz target
 * tests/fuzz/browser_event.c can feed it ---- */

typedef enum {
    EVENT_BAD_JSON,        /* not a JSON object */
    EVENT_NONE,            /* no "event" string */
    EVENT_UNKNOWN,         /* an event this gateway does not know */
    EVENT_CONNECT,
    EVENT_HEART_BEAT,
    EVENT_ACK,
    EVENT_NEW_MSG,
} browser_event_kind;

typedef struct {
    browser_event_kind kind;
    json_t *msg;           /* the message (the caller decrefs), NULL when not JSON */
    const char *token;     /* CONNECT: data.client_token, or NULL */
    const char *ack_id;    /* ACK: data.id, or NULL */
    const char *to;        /* NEW_MSG: data.to when a uuid a token could name, else NULL */
    json_t *text;          /* NEW_MSG: data.msg when a string, else NULL */
} browser_event;

static void browser_decode(const char *text, size_t len, browser_event *ev)
{
    *ev = (browser_event){.kind = EVENT_BAD_JSON, .msg = json_loadb(text, len, 0, NULL)};
    if (!json_is_object(ev->msg))
        return;
    const char *event = json_string_value(json_object_get(ev->msg, "event"));
    json_t *data = json_object_get(ev->msg, "data");
    ev->kind = EVENT_NONE;
    if (!event)
        return;
    if (strcmp(event, "CONNECT") == 0) {
        ev->kind = EVENT_CONNECT;
        ev->token = json_string_value(json_object_get(data, "client_token"));
    } else if (strcmp(event, "HEART_BEAT") == 0) {
        ev->kind = EVENT_HEART_BEAT;
    } else if (strcmp(event, "ACK") == 0) {
        ev->kind = EVENT_ACK;
        ev->ack_id = json_string_value(json_object_get(data, "id"));
    } else if (strcmp(event, "NEW_MSG") == 0) {
        json_t *to = json_object_get(data, "to");
        ev->kind = EVENT_NEW_MSG;
        if (json_is_string(to) && pg_token_uuid_ok(json_string_value(to), json_string_length(to)))
            ev->to = json_string_value(to);
        if (json_is_string(json_object_get(data, "msg")))
            ev->text = json_object_get(data, "msg");
    } else {
        ev->kind = EVENT_UNKNOWN;
    }
}

/* ---- acting ---- */

static void on_connect_event(pg_session_id session, const char *token)
{
    char uuid[PG_UUID_MAX + 1];
    const char *why = "no client_token";
    if (gw_session_uuid(session)) {
        send_error(session, PG_ERR_BAD_REQUEST);   /* already authenticated */
        return;
    }
    if (!token || gw_ws_token_verify(&gw.ws, token, strlen(token), uuid, &why) < 0) {
        close_unauthorized(session, why);
        return;
    }
    gw_session_authenticate(session, uuid);
}

/* Whether the session may send one more message; limits.c says why. */
static int within_rate(pg_session_id session)
{
    gw_bucket *b = gw_session_bucket(session);
    if (!b || gw_bucket_take(b, (double)gw.cfg.browser_rate, (double)gw.cfg.browser_burst,
                             (int64_t)pg_now_ms()))
        return 1;
    atomic_fetch_add(&gw.counters->limited, 1);
    return 0;
}

/* Past browser_rate a browser is told why, then closed. */
static void close_flooding(pg_session_id session)
{
    char reason[128];
    send_error(session, PG_ERR_TOO_MANY);
    size_t n = gw_ws_close_reason(reason, sizeof(reason), 1008, "message rate exceeded");
    const char *uuid = gw_session_uuid(session);
    pg_info("session %016" PRIx64 " (%s) closed: over browser_rate %lld/s", session,
            uuid ? uuid : "not signed in", gw.cfg.browser_rate);
    gw_penalize(uuid, (int64_t)pg_now_ms());
    pg_server_close(gw.server, session, reason, n);
}

/* A chat message goes to a uuid a browser could sign in as, or nowhere. */
static void on_chat(pg_session_id session, const char *from, const char *to, json_t *msg)
{
    if (!to || !msg) {
        send_error(session, PG_ERR_BAD_REQUEST);
        return;
    }
    if (json_string_length(msg) > gw.cfg.chat_max_bytes) {
        send_error(session, PG_ERR_TOO_LARGE);
        return;
    }
    if (!gw_chat_within_rate(from, (int64_t)pg_now_ms())) {
        send_error(session, PG_ERR_TOO_MANY);
        return;
    }
    /* Unique per recipient: boot generation, worker, clock and a counter. */
    static uint64_t seq;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    char id[64];
    snprintf(id, sizeof(id), "chat-%" PRIx32 "-%d-%" PRIx64 "-%" PRIx64, gw.generation,
             pg_server_worker_id(gw.server),
             (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000, ++seq);
    gw_order *order = gw_order_new(1);
    if (!order) {
        send_error(session, PG_ERR_BUSY);
        return;
    }
    *order = (gw_order){.kind = GW_ORDER_CHAT, .sender = session, .n = 1};
    snprintf(order->msg_id, sizeof(order->msg_id), "%s", id);
    snprintf(order->to, sizeof(order->to), "%s", to);
    snprintf(order->items[0].uuid, sizeof(order->items[0].uuid), "%s", to);
    snprintf(order->items[0].id, sizeof(order->items[0].id), "%s", id);
    order->items[0].payload = gw_event_json("NEW_MSG", json_pack("{s:s,s:O,s:s}", "from", from,
                                                                 "msg", msg, "id", id));
    if (!order->items[0].payload) {
        gw_order_free(order);
        send_error(session, PG_ERR_BUSY);
        return;
    }
    atomic_fetch_add(&gw.counters->messages_in, 1);
    gw_route(order);
}

/* An ACK of a message the session was sent is free; anything else counts
 * against browser_rate. */
static void on_text(pg_session_id session, const char *text, size_t len)
{
    browser_event ev;
    browser_decode(text, len, &ev);
    const char *uuid = gw_session_uuid(session);
    if (ev.kind == EVENT_ACK && uuid && ev.ack_id && gw_session_ack(session, ev.ack_id) == 1) {
        json_decref(ev.msg);
        return;
    }
    if (!within_rate(session))
        close_flooding(session);
    else if (ev.kind == EVENT_BAD_JSON)
        send_error(session, PG_ERR_BAD_JSON);
    else if (ev.kind == EVENT_CONNECT)
        on_connect_event(session, ev.token);
    else if (ev.kind == EVENT_NONE)
        send_error(session, PG_ERR_EVENT_NULL);
    else if (!uuid)
        send_error(session, PG_ERR_NOT_AUTHENTICATED);
    else if (ev.kind == EVENT_HEART_BEAT)
        send_text(session, gw_event_json("HEART_BEAT", json_pack("{s:I}", "time", (json_int_t)time(NULL))));
    else if (ev.kind == EVENT_ACK && !ev.ack_id)
        send_error(session, PG_ERR_BAD_REQUEST);   /* else: an id it never had */
    else if (ev.kind == EVENT_NEW_MSG)
        on_chat(session, uuid, ev.to, ev.text);
    else if (ev.kind == EVENT_UNKNOWN)
        send_error(session, PG_ERR_EVENT_NULL);
    json_decref(ev.msg);
}

void gw_browser_message(pg_session_id session, const char *data, size_t len)
{
    if (len == 0)
        return;
    if (data[0] == GW_MSG_OPEN) {
        char uuid[PG_UUID_MAX + 1];
        snprintf(uuid, sizeof(uuid), "%.*s", (int)(len - 1), data + 1);
        gw_session_open(session, uuid);
    } else if (data[0] == GW_MSG_TEXT) {
        gw_rejoin_heard(session);
        on_text(session, data + 1, len - 1);
    } else if (data[0] == GW_MSG_PONG) {
        gw_rejoin_heard(session);
    } else if (data[0] == GW_MSG_HTTP) {
        gw_http_request(session, data + 1, len - 1, 0);
    }
}

/* ---- answers from task workers ---- */

/* The page of uuid's stored messages after `after`; online: it is the
 * first, and ONLINE waits for it.  After the session's registration,
 * which may still wait in its batch. */
static void ask_page(pg_session_id session, const char *uuid, int64_t after, int online)
{
    int dst = gw_task_worker_of(session);
    pg_rec_writer w = {0};
    gw_task_flush_for(dst);
    if (gw_page_task_put(&w, session, uuid, after, online) < 0 || gw_task_record(&w, dst) < 0)
        pg_warn("%s: its stored messages wait for its next connect", uuid);
    pg_rec_writer_free(&w);
}

void gw_browser_ask_stored(pg_session_id session, const char *uuid)
{
    ask_page(session, uuid, 0, 0);
}

/* Stored messages, oldest first; the next page is asked for when there is more. */
static void push_offline_page(const gw_page *r)
{
    for (uint32_t i = 0; i < r->n; i++) {
        gw_push(r->session, r->uuid, r->messages[i].msg_id, r->messages[i].payload, 1, NULL);
        atomic_fetch_add(&gw.counters->redelivered, 1);
    }
    if (r->more)
        ask_page(r->session, r->uuid, r->after, 0);
}

static void send_online(const gw_page *r)
{
    char client_id[192];
    gw_client_id(r->session, client_id, sizeof(client_id));
    json_t *online = json_pack("{s:s,s:s,s:s,s:I}", "uuid", r->uuid, "client_id", client_id,
                               "node", gw.node_id, "offline", (json_int_t)r->n);
    if (r->more)
        json_object_set_new(online, "more_offline", json_true());
    send_text(r->session, gw_event_json("ONLINE", online));
    gw_session_online(r->session);
}

/* ONLINE, then what waited in offline_messages, oldest first.  A first
 * page that did not fit its batch's answer (none, but more: tasks.c) is
 * asked for on its own, and ONLINE goes with it. */
void gw_browser_registered(const gw_page *r, int registered)
{
    if (!gw_session_known(r->session))
        return;   /* closed meanwhile; its close queued the unregister after this */
    if (r->code != PG_OK) {
        char reason[64];
        size_t n = gw_ws_close_reason(reason, sizeof(reason), 1011, "registration failed");
        pg_server_close(gw.server, r->session, reason, n);
        return;
    }
    /* registered again after the node was swept (rejoin.c): it had ONLINE */
    int first = registered && !r->again;
    if (registered && r->n == 0 && r->more) {
        ask_page(r->session, r->uuid, r->after, first);
        return;
    }
    if (first || r->online)
        send_online(r);
    push_offline_page(r);
}

void gw_browser_routed(const gw_outcome *o)
{
    const char *status = o->code != PG_OK ? "failed"
                         : o->delivered ? "delivered"
                         : o->forwarded ? "forwarded"
                         : o->stored ? "stored" : "failed";
    send_text(o->sender, gw_event_json("NEW_MSG_STATUS",
                                       json_pack("{s:s?,s:s?,s:s,s:i}", "id", o->msg_id, "to", o->to,
                                                 "status", status, "code", o->code)));
}

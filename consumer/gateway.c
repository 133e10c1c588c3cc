/* gateway.c - one persistent connection to a gateway's internal port.
 *
 * Requests are pipelined: each is a 4-byte big-endian length then the JSON,
 * and many are in flight at once (up to max_in_flight).  The gateway answers
 * each with one frame {"code","msg","msg_id",...}; replies are matched by
 * msg_id (a gateway may answer out of order: its task workers run in
 * parallel).  A reply without msg_id (a refusal of text that is not JSON,
 * from a gateway that cannot tell the id) is taken as the request's only
 * when one request is in flight; else no entry can be blamed, and the one
 * it was for times out and is retried.
 * In-flight entries are kept in send order, so the oldest one has the
 * earliest deadline and one timer per connection covers them all.  A lost
 * connection fails every request in flight (each is retried elsewhere) and
 * reconnects with backoff; a connection that stays silent past
 * reply_timeout_ms is treated as lost.
 *
 * With wait_for_acks, a request asks for the browsers' ACKs ("handoff"): a
 * first reply with "pending" moves the entry to the accepted list, in the
 * order of those replies, to wait handoff_timeout_ms for the final reply.
 * Its silence there is no sign of a hung gateway: browsers take their time. */
#include "consumer.h"

#include "log.h"
#include "timer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define RECONNECT_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 2000

static uint64_t next_gateway_id = 1;

static void connect_now(cs_gateway *g);

static void on_retry(int64_t timer_id, void *arg)
{
    (void)timer_id;
    cs_gateway *g = arg;
    g->retry_timer = 0;
    connect_now(g);
}

static void schedule_reconnect(cs_gateway *g)
{
    unsigned delay = pg_backoff_ms(g->failures, RECONNECT_MAX_MS);
    g->retry_timer = pg_timer_after(delay, on_retry, g);
    if (g->retry_timer < 0) {
        g->retry_timer = 0;
        pg_error("gateway %s: no timer for the reconnect (out of memory)", g->name);
    }
}

static void close_connection(cs_gateway *g)
{
    if (g->bev)
        bufferevent_free(g->bev);
    g->bev = NULL;
    g->write_waiting = false;
    if (g->reply_timer > 0)
        pg_timer_clear(g->reply_timer);
    g->reply_timer = 0;
    g->state = CS_GW_DOWN;
}

/* Every request in flight or accepted failed (an attempt each). */
static void fail_inflight(cs_gateway *g, const char *why)
{
    char text[300];
    snprintf(text, sizeof(text), "connection to gateway %s lost: %s", g->name, why);
    cs_entry *e;
    while ((e = g->inflight.head) != NULL || (e = g->accepted.head) != NULL) {
        cs_gateway_forget(g, e);
        cs_flow_failed(e, text);
    }
}

/* Frees g when it was retired and has nothing in flight. true: g is gone. */
static bool free_if_drained(cs_gateway *g)
{
    if (!g->removed || g->inflight.n > 0 || g->accepted.n > 0)
        return false;
    cs_nodes_retired(g);
    return true;
}

/* The connection failed or dropped. true: g is gone (it was retired).
 * A gateway that stops closes its links with nothing in flight: that is a
 * deploy, not an outage, and alerting reads WARN; reconnecting to a node
 * that does not come back still warns. */
static bool connection_lost(cs_gateway *g, const char *why, bool clean)
{
    bool was_up = g->state == CS_GW_UP;
    size_t n = g->inflight.n + g->accepted.n;
    close_connection(g);
    if (was_up && clean && n == 0)
        pg_notice("gateway %s closed the link with nothing in flight (stopping?)", g->name);
    else if (was_up)
        pg_warn("gateway %s: connection lost (%s); %zu requests in flight will be retried", g->name,
                why, n);
    else
        pg_log_limited(&g->down_log, PG_LOG_WARN, "gateway %s unavailable: %s; retrying", g->name,
                       why);
    fail_inflight(g, why);
    if (free_if_drained(g))
        return true;
    if (!g->removed) {
        g->failures++;
        schedule_reconnect(g);
    }
    return false;
}

static void arm_reply_timer(cs_gateway *g);

static void on_reply_timer(int64_t timer_id, void *arg)
{
    (void)timer_id;
    cs_gateway *g = arg;
    g->reply_timer = 0;
    uint64_t now = cs_now_ms();
    uint64_t timeout = (uint64_t)cs.cfg.reply_timeout_ms;
    /* No reply at all since the oldest expired request went out: hung. */
    bool silent = g->inflight.head && g->inflight.head->deadline_ms <= now &&
                  g->last_reply_ms + timeout <= g->inflight.head->deadline_ms;
    cs_entry *e;
    while ((e = g->inflight.head) != NULL && e->deadline_ms <= now) {
        char why[200];
        snprintf(why, sizeof(why), "no reply from gateway %s within %lld ms", g->name,
                 cs.cfg.reply_timeout_ms);
        cs_gateway_forget(g, e);
        cs_flow_failed(e, why);
    }
    while ((e = g->accepted.head) != NULL && e->deadline_ms <= now) {
        char why[200];
        snprintf(why, sizeof(why), "gateway %s did not confirm the browsers' ACKs within %lld ms",
                 g->name, cs.cfg.handoff_timeout_ms);
        cs_gateway_forget(g, e);
        cs_flow_failed(e, why);
    }
    if (silent && g->bev && connection_lost(g, "no reply at all for reply_timeout_ms", false))
        return;
    if (!free_if_drained(g))
        arm_reply_timer(g);
}

static void arm_reply_timer(cs_gateway *g)
{
    if (g->reply_timer > 0 || (!g->inflight.head && !g->accepted.head))
        return;
    uint64_t now = cs_now_ms();
    uint64_t due = g->inflight.head ? g->inflight.head->deadline_ms : UINT64_MAX;
    if (g->accepted.head && g->accepted.head->deadline_ms < due)
        due = g->accepted.head->deadline_ms;
    uint32_t delay = due > now ? (uint32_t)(due - now) : 1;
    g->reply_timer = pg_timer_after(delay, on_reply_timer, g);
    if (g->reply_timer < 0)
        g->reply_timer = 0;
}

/* The entry a reply is for: by msg_id, the entry's key or, for a
 * replayed entry, its original id (then it is one of g's, in flight or
 * waiting for its final reply); without one, the only entry in flight. */
static cs_entry *reply_entry(cs_gateway *g, const char *msg_id)
{
    if (!msg_id)
        return g->inflight.n == 1 ? g->inflight.head : NULL;
    cs_entry *e = cs_entry_find_key(msg_id);
    for (cs_entry *f = g->inflight.head; !e && f; f = f->next)
        if (strcmp(f->msg_id, msg_id) == 0)
            e = f;
    for (cs_entry *f = g->accepted.head; !e && f; f = f->next)
        if (strcmp(f->msg_id, msg_id) == 0)
            e = f;
    return e;
}

static void handle_reply(cs_gateway *g, json_t *r)
{
    json_t *code_j = json_object_get(r, "code");
    int code = json_is_integer(code_j) ? (int)json_integer_value(code_j) : -1;
    const char *msg_id = json_string_value(json_object_get(r, "msg_id"));
    const char *msg = json_string_value(json_object_get(r, "msg"));
    cs_entry *e = reply_entry(g, msg_id);
    if (!e) {
        pg_debug("gateway %s: reply (code %d) for %s, which is no longer held", g->name, code,
                 msg_id ? msg_id : "(no msg_id)");
        return;
    }
    cs_flow_reply(e, g, code, msg ? msg : "", json_integer_value(json_object_get(r, "pending")),
                  json_is_true(json_object_get(r, "final")));
}

/* One frame from the input, parsed.  0: got one in *out; 1: need more; -1: bad. */
static int next_frame(struct evbuffer *in, json_t **out, const char **why)
{
    size_t avail = evbuffer_get_length(in);
    unsigned char h[4];
    if (avail < 4 || evbuffer_copyout(in, h, 4) != 4)
        return 1;
    size_t len = ((size_t)h[0] << 24) | ((size_t)h[1] << 16) | ((size_t)h[2] << 8) | h[3];
    if (len == 0 || len > CS_REPLY_MAX) {
        *why = "reply frame of a bad length";
        return -1;
    }
    if (avail < 4 + len)
        return 1;
    unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)(4 + len));
    *out = p ? json_loadb((const char *)p + 4, len, 0, NULL) : NULL;
    evbuffer_drain(in, 4 + len);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        *why = "reply is not a JSON object";
        return -1;
    }
    return 0;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    cs_gateway *g = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    json_t *r = NULL;
    const char *why = NULL;
    int rc;
    bool got = false;
    while ((rc = next_frame(in, &r, &why)) == 0) {
        got = true;
        handle_reply(g, r);
        json_decref(r);
    }
    if (got) {
        g->last_reply_ms = cs_now_ms();
        g->failures = 0;
    }
    if (rc < 0 && connection_lost(g, why, false))
        return;
    if (free_if_drained(g))
        return;
    arm_reply_timer(g);
    if (got)
        cs_flow_dispatch();
}

/* Requests are written from the loop once per pass (flush_ev), all that
 * the pass queued in one write, and libevent's write event is armed only
 * while the socket is full: a bufferevent would arm it (an epoll_ctl), wait
 * a pass, write and disarm it (another) for every batch. */
static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    cs_gateway *g = arg;
    if (!g->bev || g->state != CS_GW_UP || g->write_waiting)
        return;
    struct evbuffer *out = bufferevent_get_output(g->bev);
    while (evbuffer_get_length(out) > 0) {
        /* A socket bufferevent freezes its output's start, so that only it
         * drains it; unfrozen for the write, as its own write callback does. */
        evbuffer_unfreeze(out, 1);
        int n = evbuffer_write(out, bufferevent_getfd(g->bev));
        int err = errno;
        evbuffer_freeze(out, 1);
        if (n < 0 && err != EAGAIN && err != EWOULDBLOCK && err != EINTR) {
            connection_lost(g, strerror(err), false);
            return;
        }
        if (n <= 0)
            break;
    }
    if (evbuffer_get_length(out) > 0) {
        g->write_waiting = true;
        if (bufferevent_enable(g->bev, EV_WRITE) < 0)
            connection_lost(g, "cannot watch the socket", false);
    }
}

/* libevent wrote what the socket had no room for. */
static void on_written(struct bufferevent *bev, void *arg)
{
    cs_gateway *g = arg;
    bufferevent_disable(bev, EV_WRITE);
    g->write_waiting = false;
}

static void on_connected(cs_gateway *g)
{
    int one = 1;
    evutil_socket_t fd = bufferevent_getfd(g->bev);
    if (fd >= 0 && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
        pg_debug("gateway %s: TCP_NODELAY: %s", g->name, strerror(errno));
    g->state = CS_GW_UP;
    g->last_reply_ms = cs_now_ms();
    bufferevent_set_timeouts(g->bev, NULL, NULL);
    if (bufferevent_enable(g->bev, EV_READ) < 0) {
        connection_lost(g, "cannot watch the socket", false);
        return;
    }
    pg_info("gateway %s: connected", g->name);
    g->down_log.last_ms = 0;
    g->down_log.suppressed = 0;
    if (!free_if_drained(g))
        cs_flow_dispatch();
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    cs_gateway *g = arg;
    if (what & BEV_EVENT_CONNECTED) {
        on_connected(g);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        int err = EVUTIL_SOCKET_ERROR();
        const char *why = (what & BEV_EVENT_TIMEOUT) ? "connect timed out"
                          : (what & BEV_EVENT_EOF)   ? "closed by the gateway"
                                                     : evutil_socket_error_to_string(err);
        connection_lost(g, why, (what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR));
    }
}

static int gateway_addr(const cs_gateway *g, struct sockaddr_storage *ss, int *len)
{
    char spec[100];
    if (strchr(g->ip, ':'))
        snprintf(spec, sizeof(spec), "[%s]:%d", g->ip, g->port);
    else
        snprintf(spec, sizeof(spec), "%s:%d", g->ip, g->port);
    *len = (int)sizeof(*ss);
    return evutil_parse_sockaddr_port(spec, (struct sockaddr *)ss, len);
}

static void connect_now(cs_gateway *g)
{
    struct sockaddr_storage ss;
    int len;
    if (gateway_addr(g, &ss, &len) < 0) {   /* checked in cs_gateway_new */
        connection_lost(g, "bad address", false);
        return;
    }
    g->bev = bufferevent_socket_new(cs.base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!g->bev) {
        connection_lost(g, "out of memory", false);
        return;
    }
    bufferevent_setcb(g->bev, on_read, on_written, on_event, g);
    /* the kernel would try for minutes against a host that drops SYNs */
    struct timeval tv = {CONNECT_TIMEOUT_MS / 1000, (CONNECT_TIMEOUT_MS % 1000) * 1000};
    bufferevent_set_timeouts(g->bev, NULL, &tv);
    g->state = CS_GW_CONNECTING;
    if (bufferevent_socket_connect(g->bev, (struct sockaddr *)&ss, len) < 0)
        connection_lost(g, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()), false);
}

cs_gateway *cs_gateway_new(const char *ip, int port)
{
    cs_gateway *g = calloc(1, sizeof(*g));
    if (!g) {
        pg_error("gateway %s:%d: out of memory", ip, port);
        return NULL;
    }
    struct sockaddr_storage ss;
    int len;
    snprintf(g->ip, sizeof(g->ip), "%s", ip);
    g->port = port;
    snprintf(g->name, sizeof(g->name), "%s:%d", ip, port);
    if (strlen(ip) >= sizeof(g->ip) || gateway_addr(g, &ss, &len) < 0) {
        pg_error("gateway %s:%d: not a numeric IP address and port", ip, port);
        free(g);
        return NULL;
    }
    g->flush_ev = event_new(cs.base, -1, 0, on_flush, g);
    if (!g->flush_ev) {
        pg_error("gateway %s: out of memory", g->name);
        free(g);
        return NULL;
    }
    g->id = next_gateway_id++;
    connect_now(g);
    return g;
}

bool cs_gateway_has_room(const cs_gateway *g)
{
    return g->state == CS_GW_UP && !g->removed &&
           g->inflight.n < (size_t)cs.cfg.max_in_flight;
}

/* The request: the entry's body, "handoff" and all (intake.c). */
int cs_gateway_send(cs_gateway *g, cs_entry *e)
{
    struct evbuffer *out = bufferevent_get_output(g->bev);
    size_t len = e->body_len;
    unsigned char h[4] = {(unsigned char)(len >> 24), (unsigned char)(len >> 16),
                          (unsigned char)(len >> 8), (unsigned char)len};
    /* Room first, so the frame is added whole or not at all. */
    if (evbuffer_expand(out, 4 + len) < 0 || evbuffer_add(out, h, 4) < 0 ||
        evbuffer_add(out, e->body, len) < 0)
        return -1;
    uint64_t now = cs_now_ms();
    e->state = CS_E_SENT;
    e->gw = g;
    e->last_gw = g->id;
    e->deadline_ms = now + (uint64_t)cs.cfg.reply_timeout_ms;
    cs_list_push(&g->inflight, e);
    if (!g->write_waiting)
        event_active(g->flush_ev, EV_TIMEOUT, 1);
    cs.sent++;
    cs.stats.sent++;
    arm_reply_timer(g);
    return 0;
}

void cs_gateway_accept(cs_gateway *g, cs_entry *e)
{
    cs_list_remove(e);
    e->deadline_ms = cs_now_ms() + (uint64_t)cs.cfg.handoff_timeout_ms;
    cs_list_push(&g->accepted, e);
    arm_reply_timer(g);
}

void cs_gateway_forget(cs_gateway *g, cs_entry *e)
{
    (void)g;
    cs_list_remove(e);
    e->gw = NULL;
    cs.sent--;
    cs_check_finished();
}

void cs_gateway_retire(cs_gateway *g)
{
    g->removed = true;
    if (g->state != CS_GW_UP) {
        close_connection(g);
        if (g->retry_timer > 0)
            pg_timer_clear(g->retry_timer);
        g->retry_timer = 0;
    }
    free_if_drained(g);
}

void cs_gateway_free(cs_gateway *g)
{
    close_connection(g);
    if (g->retry_timer > 0)
        pg_timer_clear(g->retry_timer);
    cs_entry *e;
    while ((e = g->inflight.head) != NULL || (e = g->accepted.head) != NULL) {
        cs_gateway_forget(g, e);
        e->state = CS_E_READY;  /* not answered: stays pending in Redis */
        cs_list_push(&cs.ready, e);
    }
    event_free(g->flush_ev);
    free(g);
}

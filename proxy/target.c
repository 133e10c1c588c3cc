/* target.c - a worker's persistent connections to the target nodes.
 *
 * One connection per target node per worker, never one per message: pushes
 * are pipelined on it, each with the proxy's own req_id (a gateway's req_ids
 * are only unique on its own connection), and the node's answers are matched
 * back and relayed with the asking gateway's req_id.  A node that refuses
 * the connection, drops it, or stays silent past reply_timeout_ms makes its
 * pushes unreachable at once - the gateway then stores them offline - and is
 * retried after a pause that doubles with each failure.  At most
 * max_in_flight pushes wait per node; past it the answer is busy, so a stuck
 * node cannot grow the proxy's memory.
 *
 * A push whose gateway waits for the browser's ACK ("handoff") is answered
 * twice by the node: "delivered" with a "pending" count, then "final" once
 * the browser ACKed it or the node stored it.  Both answers are relayed;
 * between them the push waits in the target's `accepted` list, apart from
 * those in flight (a node busy waiting for browsers is not a silent one),
 * for at most handoff_timeout_ms.  A lost link answers them with a final
 * error, and the asking gateway stores them. */
#include "proxy.h"

#include "idmap.h"
#include "json_out.h"
#include "log.h"
#include "timer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

typedef struct target target;

typedef struct pending pending;

typedef struct {
    pending *head, *tail;         /* oldest first */
    size_t count;
} pending_list;

struct pending {
    uint64_t id;                  /* the proxy's req_id */
    target *t;
    pending_list *list;           /* the target's in_flight or accepted */
    pg_session_id session;        /* the asking gateway's connection */
    json_t *req_id, *msg_id;      /* echoed in the answer (NULL: none) */
    uint64_t sent_ms;             /* accepted: when it was */
    uint64_t sent_us;             /* when it went out, for the answer-time histogram */
    pending *prev, *next;
};

enum { LINK_IDLE, LINK_CONNECTING, LINK_UP };

struct target {
    char ip[64];
    int port;
    struct bufferevent *bev;
    int state;
    uint32_t backoff_ms;          /* next pause after a failure */
    uint64_t retry_at_ms;         /* no new connection before this */
    uint64_t last_rx_ms;          /* when the node last sent anything */
    pending_list in_flight;       /* waiting for the first answer */
    pending_list accepted;        /* delivered, waiting for the final answer */
    target *next;
};

static target *targets;
static pg_idmap *by_id;           /* proxy req_id -> pending */
static uint64_t next_id;
static int64_t sweep_timer;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- requests in flight ---- */

static void list_append(pending_list *l, pending *p)
{
    p->list = l;
    p->prev = l->tail;
    p->next = NULL;
    if (l->tail)
        l->tail->next = p;
    else
        l->head = p;
    l->tail = p;
    l->count++;
}

static void list_remove(pending *p)
{
    pending_list *l = p->list;
    if (p->prev)
        p->prev->next = p->next;
    else
        l->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        l->tail = p->prev;
    l->count--;
    p->list = NULL;
}

static void unlink_pending(pending *p)
{
    list_remove(p);
    pg_idmap_remove(by_id, p->id);
}

static void free_pending(pending *p)
{
    json_decref(p->req_id);
    json_decref(p->msg_id);
    free(p);
}

/* Answers the gateway with unreachable and forgets the push; an accepted
 * one's answer is its final one. */
static void fail_pending(pending *p, const char *why)
{
    json_t *final = p->list == &p->t->accepted ? json_pack("{s:b}", "final", 1) : NULL;
    unlink_pending(p);
    px_stats_outcome(p->t->ip, p->t->port, PX_OUT_UNREACHABLE);
    px_answer(p->session, PG_ERR_UNREACHABLE, why, p->msg_id, p->req_id, final);
    json_decref(final);
    free_pending(p);
}

static void fail_all(target *t, const char *why)
{
    size_t n = t->in_flight.count + t->accepted.count;
    if (n > 0)
        pg_warn("node %s:%d: %zu push(es) unanswered (%s)", t->ip, t->port, n, why);
    while (t->in_flight.head)
        fail_pending(t->in_flight.head, why);
    while (t->accepted.head)
        fail_pending(t->accepted.head, why);
}

/* ---- the connection ---- */

static void close_link(target *t)
{
    if (t->bev)
        bufferevent_free(t->bev);
    t->bev = NULL;
    t->state = LINK_IDLE;
}

/* The connection failed or was lost: everything in flight is unreachable,
 * and no new connection before the pause is over. */
static void link_failed(target *t, const char *why)
{
    if (t->state == LINK_UP)
        pg_warn("node %s:%d: connection lost (%s)", t->ip, t->port, why);
    else
        pg_info("node %s:%d: cannot connect (%s); next try in %u ms", t->ip, t->port, why,
                t->backoff_ms);
    close_link(t);
    t->retry_at_ms = now_ms() + t->backoff_ms;
    t->backoff_ms = t->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : t->backoff_ms * 2;
    fail_all(t, "target node unreachable");
}

/* The node's answer to one push: relayed with the gateway's own ids. */
static void on_answer(target *t, const char *data, size_t len)
{
    json_t *r = json_loadb(data, len, 0, NULL);
    json_int_t id = json_integer_value(json_object_get(r, "req_id"));
    pending *p = id > 0 ? pg_idmap_get(by_id, (uint64_t)id) : NULL;
    if (!json_is_object(r) || !p || p->t != t) {
        pg_debug("node %s:%d: answer to no push in flight (late, after a timeout?)", t->ip, t->port);
        json_decref(r);
        return;
    }
    int code = (int)json_integer_value(json_object_get(r, "code"));
    int first = p->list == &t->in_flight;
    json_int_t waiting = json_integer_value(json_object_get(r, "pending"));
    json_t *extra = first ? (waiting > 0 ? json_pack("{s:I}", "pending", waiting) : NULL)
                          : json_pack("{s:b,s:O?,s:O?}", "final", 1, "acked",
                                      json_object_get(r, "acked"), "stored",
                                      json_object_get(r, "stored"));
    if (first)
        pg_prom_observe_since(&px.counters->answer_time, p->sent_us);
    if (first && code == PG_OK)
        px_stats_outcome(t->ip, t->port, PX_OUT_DELIVERED);
    else if (code == PG_ERR_GONE)
        px_stats_outcome(t->ip, t->port, PX_OUT_GONE);
    else if (code != PG_OK)
        px_stats_outcome(t->ip, t->port, PX_OUT_REFUSED);
    json_t *msg_id = json_object_get(r, "msg_id");
    px_answer(p->session, code, json_string_value(json_object_get(r, "msg")),
              msg_id ? msg_id : p->msg_id, p->req_id, extra);
    json_decref(extra);
    json_decref(r);
    if (first && code == PG_OK && waiting > 0) {   /* the final answer comes later */
        list_remove(p);
        p->sent_ms = now_ms();
        list_append(&t->accepted, p);
        return;
    }
    unlink_pending(p);
    free_pending(p);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    target *t = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    t->last_rx_ms = now_ms();
    for (;;) {
        unsigned char head[4];
        if (evbuffer_copyout(in, head, 4) < 4)
            return;
        size_t len = (size_t)head[0] << 24 | (size_t)head[1] << 16 | (size_t)head[2] << 8 | head[3];
        if (len > px.server_cfg.package_max_length) {
            link_failed(t, "answer over package_max_length");
            return;
        }
        if (evbuffer_get_length(in) < 4 + len)
            return;
        evbuffer_drain(in, 4);
        on_answer(t, (const char *)evbuffer_pullup(in, (ssize_t)len), len);
        evbuffer_drain(in, len);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    target *t = arg;
    if (what & BEV_EVENT_CONNECTED) {
        t->state = LINK_UP;
        t->backoff_ms = BACKOFF_MIN_MS;
        pg_info("node %s:%d: connected", t->ip, t->port);
        return;
    }
    if (t->state == LINK_UP && t->in_flight.count + t->accepted.count == 0) {
        /* An idle connection closed by the node (its idle check, a restart):
         * not a failure; the next push connects again. */
        pg_info("node %s:%d: idle connection closed by the node", t->ip, t->port);
        close_link(t);
        return;
    }
    int err = EVUTIL_SOCKET_ERROR();
    link_failed(t, (what & BEV_EVENT_EOF) ? "closed by the node"
                   : err ? evutil_socket_error_to_string(err) : "error");
}

static int address_of(const target *t, struct sockaddr_storage *ss, int *sslen)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, t->ip, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)t->port);
        *sslen = (int)sizeof(*sin);
        return 0;
    }
    if (inet_pton(AF_INET6, t->ip, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)t->port);
        *sslen = (int)sizeof(*sin6);
        return 0;
    }
    return -1;
}

/* Starts connecting (pushes written meanwhile wait in the output buffer).
 * 0, or -1 when it failed at once (then t->bev is NULL). */
static int open_link(target *t)
{
    struct sockaddr_storage ss;
    int sslen;
    if (address_of(t, &ss, &sslen) < 0) {
        pg_warn("node %s:%d: not an IP address", t->ip, t->port);
        return -1;
    }
    struct bufferevent *bev =
        bufferevent_socket_new(pg_server_event_base(px.server), -1, BEV_OPT_CLOSE_ON_FREE);
    if (!bev)
        return -1;
    t->bev = bev;
    t->state = LINK_CONNECTING;
    t->last_rx_ms = 0;
    bufferevent_setcb(bev, on_read, NULL, on_event, t);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    /* On an immediate failure libevent may already have called on_event,
     * which frees the bufferevent: only fail here when it did not. */
    if (bufferevent_socket_connect(bev, (struct sockaddr *)&ss, sslen) < 0 && t->bev == bev)
        link_failed(t, "connect failed");
    return t->bev ? 0 : -1;
}

/* ---- targets ---- */

static target *find_target(const char *ip, int port)
{
    for (target *t = targets; t; t = t->next)
        if (t->port == port && strcmp(t->ip, ip) == 0)
            return t;
    return NULL;
}

static target *get_target(const char *ip, int port)
{
    target *t = find_target(ip, port);
    if (t || !(t = calloc(1, sizeof(*t))))
        return t;
    snprintf(t->ip, sizeof(t->ip), "%s", ip);
    t->port = port;
    t->backoff_ms = BACKOFF_MIN_MS;
    t->next = targets;
    targets = t;
    return t;
}

static void free_target(target *t)
{
    fail_all(t, "proxy worker stopping");
    close_link(t);
    free(t);
}

/* Gets the connection ready for one more push (connecting when needed).
 * NULL, or why the push cannot be sent now with its code in *code. */
static const char *prepare(target *t, int *code)
{
    *code = PG_ERR_BUSY;
    if (t->in_flight.count + t->accepted.count >= (size_t)px.cfg.max_in_flight)
        return "too many pushes in flight to the target node";
    if (t->bev && evbuffer_get_length(bufferevent_get_output(t->bev)) >
                      px.server_cfg.buffer_output_size)
        return "the target node does not read its input";
    *code = PG_ERR_UNREACHABLE;
    if (!t->bev && now_ms() < t->retry_at_ms)
        return "target node down (retrying soon)";
    if (!t->bev && open_link(t) < 0)
        return "target node unreachable";
    return NULL;
}

/* Writes the push with a new req_id of the proxy's and keeps it in flight. */
static int send_push(target *t, struct evbuffer *body, pg_session_id session, json_t *req_id,
                     json_t *msg_id)
{
    uint64_t id = ++next_id;
    pending *p = calloc(1, sizeof(*p));
    if (!p || pg_json_put(body, NULL, ",\"req_id\":%llu}", (unsigned long long)id) < 0 ||
        pg_idmap_put(by_id, id, p) < 0) {
        free(p);
        return -1;
    }
    if (pg_json_frame(bufferevent_get_output(t->bev), body) < 0) {
        pg_idmap_remove(by_id, id);
        free(p);
        return -1;
    }
    *p = (pending){.id = id, .t = t, .session = session, .sent_ms = now_ms(),
                   .sent_us = pg_prom_now_us(),
                   .req_id = json_incref(req_id), .msg_id = json_incref(msg_id)};
    list_append(&t->in_flight, p);
    return 0;
}

void px_forward(const char *ip, int port, struct evbuffer *body, pg_session_id session,
                json_t *req_id, json_t *msg_id)
{
    int code = PG_ERR_UNREACHABLE;
    const char *why;
    target *t;
    if (!px_node_up(ip, port)) {
        why = "target node not registered or not up";
    } else if (!(t = get_target(ip, port))) {
        why = "out of memory";
    } else if (!(why = prepare(t, &code))) {
        if (send_push(t, body, session, req_id, msg_id) == 0) {
            PX_COUNT(forwarded);
            return;
        }
        why = "could not queue the push";
    }
    px_stats_outcome(ip, port, code == PG_ERR_BUSY ? PX_OUT_BUSY : PX_OUT_UNREACHABLE);
    px_answer(session, code, why, msg_id, req_id, NULL);
}

/* ---- timeouts ---- */

/* Pushes older than reply_timeout_ms are unreachable.  When the node has
 * sent nothing at all since the oldest of them went out, the connection
 * itself is taken for dead (a hung node, a lost network): it is closed. */
static void sweep_target(target *t, uint64_t now)
{
    uint64_t timeout = (uint64_t)px.cfg.reply_timeout_ms;
    while (t->in_flight.head && t->in_flight.head->sent_ms + timeout <= now) {
        if (t->last_rx_ms < t->in_flight.head->sent_ms) {
            link_failed(t, "no answer in time");
            return;
        }
        fail_pending(t->in_flight.head, "no answer from the target node in time");
    }
    uint64_t handoff = (uint64_t)px.cfg.handoff_timeout_ms;
    while (t->accepted.head && t->accepted.head->sent_ms + handoff <= now)
        fail_pending(t->accepted.head, "the browser did not acknowledge it in time");
}

static void sweep(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    uint64_t now = now_ms();
    for (target *t = targets; t; t = t->next)
        sweep_target(t, now);
}

void px_targets_prune(void)
{
    target **link = &targets;
    while (*link) {
        target *t = *link;
        if (t->in_flight.count + t->accepted.count == 0 && !px_node_up(t->ip, t->port)) {
            if (t->bev)
                pg_info("node %s:%d: no longer up; connection closed", t->ip, t->port);
            *link = t->next;
            free_target(t);
        } else {
            link = &t->next;
        }
    }
}

json_t *px_targets_json(void)
{
    static const char *states[] = {"idle", "connecting", "up"};
    json_t *o = json_object();
    for (target *t = targets; t; t = t->next) {
        char key[80];
        snprintf(key, sizeof(key), "%s:%d", t->ip, t->port);
        json_object_set_new(o, key, json_pack("{s:s,s:I,s:I}", "link", states[t->state],
                                              "in_flight", (json_int_t)t->in_flight.count,
                                              "accepted", (json_int_t)t->accepted.count));
    }
    return o;
}

void px_targets_start(void)
{
    by_id = pg_idmap_new(1024);
    uint32_t every = (uint32_t)(px.cfg.reply_timeout_ms / 4);
    sweep_timer = pg_timer_tick(every < 25 ? 25 : every > 250 ? 250 : every, sweep, NULL);
    if (!by_id || sweep_timer < 0)
        pg_error("cannot set up the target table");
}

void px_targets_stop(void)
{
    if (sweep_timer > 0)
        pg_timer_clear(sweep_timer);
    sweep_timer = 0;
    while (targets) {
        target *t = targets;
        targets = t->next;
        free_target(t);
    }
    pg_idmap_free(by_id);
    by_id = NULL;
}

/* proxy_link.c - a worker's persistent connection to the proxy, for pushes to
 * sessions on other nodes.
 *
 * One connection per worker, to the first proxy of the list that answers;
 * when it drops, the next one is tried, with a growing pause.  Requests are
 * length-prefixed /chat/push-local frames carrying a req_id that the reply
 * echoes.  Whatever is not confirmed - no proxy connected, an error reply
 * (gone, unreachable, busy), no reply within the timeout, the connection
 * lost - goes to offline_messages, so a cross-node message is never lost;
 * a late success after a timeout can only mean a duplicate, which browsers
 * drop by id.
 *
 * An order whose sender waits for the browsers' ACKs (handoff.c) asks the
 * target node for them too: its push is answered "delivered" with a
 * "pending" count, and again ("final") once the browser ACKed it or the
 * node stored it.  Meanwhile it waits in `finals` with the waiter of the
 * order's ticket; a refusal, no final answer in time or a lost link make
 * this node store it, and the waiter hears when that is done.
 *
 * A push stored because the path to its node is broken (no proxy, a lost
 * link, no answer, the node unreachable) is for a browser that is online
 * over there: the stored item names that node ("hint"), which then hears
 * of it through MySQL and delivers it without waiting for a reconnect
 * (redeliver.c).  Such an episode is logged when it begins and, with a
 * count, when the path works again, not once per push. */
#include "gateway.h"

#include "idmap.h"
#include "json_out.h"
#include "log.h"
#include "memory.h"
#include "timer.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#define REPLY_TIMEOUT_S 5
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define MAX_IN_FLIGHT 100000
#define FINAL_GRACE_S 15       /* past ack_timeout: the target node had time to store it */

/* The pushes of one routed order. */
typedef struct {
    gw_routed *routed;       /* its order has the items */
    gw_remote *targets;      /* a copy of those to forward */
    gw_store_list to_store;  /* those that could not be, and the order's offline items */
    long long forwarded;
    int outstanding;
} batch;

typedef struct {
    batch *b;
    const gw_remote *target; /* in b->targets: stored on failure */
    time_t sent_at;
} in_flight;

/* A push that waits for its browser's ACK over there; it may outlive its
 * order's answer, so it holds a copy of what storing it takes. */
typedef struct {
    char *uuid, *id, *payload;
    char ip[64];
    int port;
    gw_waiter w;
    time_t deadline;
} final_wait;

static struct bufferevent *link_bev;
static int link_up;
static int proxy_index;
static uint32_t backoff_ms = BACKOFF_MIN_MS;
static int64_t reconnect_timer, timeout_timer;
static pg_idmap *requests;   /* req_id -> in_flight */
static pg_idmap *finals;     /* req_id -> final_wait */
static uint64_t next_req_id;

static void connect_next(void);
static void fail_finals(const char *why);

/* Every target is settled: store what was not forwarded, then answer. */
static void release(batch *b)
{
    if (--b->outstanding > 0)
        return;
    b->routed->forwarded = b->forwarded;
    gw_internal_store_then_finish(b->routed, b->to_store.v, b->to_store.n);
    gw_store_list_free(&b->to_store);
    free(b->targets);
    free(b);
}

/* ---- paths that are down ---- */

static unsigned long stored_while_down;   /* in the current episode */

static void path_down(const char *uuid)
{
    if (stored_while_down++ == 0)
        pg_warn("proxy: the path to another node is down (first: an order for %s); orders for "
                "browsers online there are stored, and their node delivers them", uuid);
}

static void path_up(void)
{
    if (stored_while_down == 0)
        return;
    pg_notice("proxy: the path to other nodes works again; %lu order(s) for online browsers were "
              "stored meanwhile", stored_while_down);
    stored_while_down = 0;
}

/* The entry to store for a push not made (strings borrowed): with
 * path_broken, it names the node that holds the browser (ip, port), so that
 * node delivers it. */
static gw_store_entry store_entry(const char *uuid, const char *id, const char *payload,
                                  const char *ip, int port, int path_broken)
{
    gw_store_entry e = {.uuid = uuid, .msg_id = id, .payload = payload};
    if (path_broken) {
        path_down(uuid);
        e.hint_ip = ip;
        e.hint_port = port;
    }
    return e;
}

static const gw_item *item_of(const batch *b, const gw_remote *target)
{
    return &b->routed->order->items[target->item];
}

enum { PUSH_FORWARDED, PUSH_GONE, PUSH_PATH_BROKEN };

/* One target settled: forwarded, or to be stored. */
static void settle(batch *b, const gw_remote *target, int outcome)
{
    if (outcome == PUSH_FORWARDED) {
        b->forwarded++;
        atomic_fetch_add(&gw.counters->forwarded, 1);
        path_up();
    } else {
        const gw_item *item = item_of(b, target);
        gw_store_entry e = store_entry(item->uuid, item->id, item->payload, target->ip,
                                       target->port, outcome == PUSH_PATH_BROKEN);
        if (gw_store_list_add(&b->to_store, &e) < 0) {
            pg_error("proxy: a push for %s could not be stored", item->uuid);
            b->routed->code = PG_ERR_INTERNAL;   /* its sender sends it again */
        }
    }
    release(b);
}

static int fail_one(uint64_t id, void *value, void *arg)
{
    (void)id;
    (void)arg;
    in_flight *f = value;
    settle(f->b, f->target, PUSH_PATH_BROKEN);
    free(f);
    return 0;
}

static void fail_all(const char *why)
{
    if (pg_idmap_count(requests) > 0)
        pg_warn("proxy: %zu push(es) not confirmed (%s); storing them", pg_idmap_count(requests), why);
    pg_idmap *old = requests;
    requests = pg_idmap_new(256);
    pg_idmap_iterate(old, fail_one, NULL);
    pg_idmap_free(old);
    fail_finals(why);
}

/* ---- the final answers ---- */

static uint64_t batch_ticket(const batch *b)
{
    return b->routed->order->ticket;
}

static void free_final(final_wait *fw)
{
    free(fw->uuid);
    free(fw->id);
    free(fw->payload);
    free(fw);
}

/* The target node took the push and waits for its browser: so do we. */
static void await_final(uint64_t req_id, const batch *b, const gw_remote *target)
{
    const gw_item *item = item_of(b, target);
    final_wait *fw = calloc(1, sizeof(*fw));
    /* settled here, when the final arrives: this worker is its home */
    gw_waiter w = gw_handoff_expect(batch_ticket(b), pg_server_worker_id(gw.server));
    if (fw) {
        *fw = (final_wait){.uuid = strdup(item->uuid), .id = strdup(item->id),
                           .payload = strdup(item->payload), .port = target->port, .w = w,
                           .deadline = time(NULL) + gw.cfg.ack_timeout + FINAL_GRACE_S};
        snprintf(fw->ip, sizeof(fw->ip), "%s", target->ip);
    }
    if (!fw || !fw->uuid || !fw->id || !fw->payload || pg_idmap_put(finals, req_id, fw) < 0) {
        if (fw)
            free_final(fw);
        gw_store_entry e = store_entry(item->uuid, item->id, item->payload, NULL, 0, 0);
        e.nwaiters = w.ticket ? 1 : 0;
        e.waiters = &w;
        gw_store_item(&e);
    }
}

/* How a final answer's push ended: acknowledged or stored over there
 * (code 0), else stored here, and then the waiter hears. */
static void end_final(final_wait *fw, int code, json_t *answer)
{
    if (code == PG_OK) {
        int stored = json_integer_value(json_object_get(answer, "stored")) > 0;
        gw_waiter_settle(&fw->w, stored ? GW_PUSH_STORED : GW_PUSH_ACKED);
    } else {
        gw_store_entry e = store_entry(fw->uuid, fw->id, fw->payload, fw->ip, fw->port,
                                       code != PG_ERR_GONE);
        e.nwaiters = fw->w.ticket ? 1 : 0;
        e.waiters = &fw->w;
        gw_store_item(&e);
    }
    free_final(fw);
}

static int fail_final(uint64_t id, void *value, void *arg)
{
    (void)id;
    (void)arg;
    end_final(value, PG_ERR_UNREACHABLE, NULL);
    return 0;
}

static void fail_finals(const char *why)
{
    if (pg_idmap_count(finals) > 0)
        pg_warn("proxy: %zu push(es) waiting for their browser's ACK lost track of (%s); "
                "storing them", pg_idmap_count(finals), why);
    pg_idmap *old = finals;
    finals = pg_idmap_new(256);
    pg_idmap_iterate(old, fail_final, NULL);
    pg_idmap_free(old);
}

static void on_reply(const char *data, size_t len)
{
    json_t *r = json_loadb(data, len, 0, NULL);
    json_int_t req_id = json_integer_value(json_object_get(r, "req_id"));
    int code = (int)json_integer_value(json_object_get(r, "code"));
    in_flight *f = req_id > 0 ? pg_idmap_remove(requests, (uint64_t)req_id) : NULL;
    final_wait *fw = req_id > 0 && !f ? pg_idmap_remove(finals, (uint64_t)req_id) : NULL;
    if (f) {
        const char *uuid = item_of(f->b, f->target)->uuid;
        if (code != PG_OK)
            pg_info("proxy: push to %s refused (%d %s); storing it", uuid, code,
                    json_string_value(json_object_get(r, "msg")));
        if (code == PG_ERR_GONE)   /* the route was stale: not from the cache again */
            gw_route_cache_forget(uuid);
        else if (json_integer_value(json_object_get(r, "pending")) > 0 && batch_ticket(f->b))
            await_final((uint64_t)req_id, f->b, f->target);
        settle(f->b, f->target, code == PG_OK     ? PUSH_FORWARDED
                                : code == PG_ERR_GONE ? PUSH_GONE
                                                      : PUSH_PATH_BROKEN);
        free(f);
    } else if (fw) {
        end_final(fw, code, r);
    }
    json_decref(r);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        unsigned char head[4];
        if (evbuffer_copyout(in, head, 4) < 4)
            return;
        size_t len = (size_t)head[0] << 24 | (size_t)head[1] << 16 | (size_t)head[2] << 8 | head[3];
        if (len > gw.server_cfg.package_max_length) {
            pg_error("proxy: reply of %zu bytes is over package_max_length; reconnecting", len);
            bufferevent_free(link_bev);
            link_bev = NULL;
            link_up = 0;
            fail_all("bad reply");
            connect_next();
            return;
        }
        if (evbuffer_get_length(in) < 4 + len)
            return;
        evbuffer_drain(in, 4);
        char *body = (char *)evbuffer_pullup(in, (ssize_t)len);
        on_reply(body, len);
        evbuffer_drain(in, len);
    }
}

static void reconnect_due(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    reconnect_timer = 0;
    connect_next();
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)arg;
    if (what & BEV_EVENT_CONNECTED) {
        link_up = 1;
        backoff_ms = BACKOFF_MIN_MS;
        pg_info("proxy: connected to proxy %d of the list", proxy_index);
        return;
    }
    int was_up = link_up;
    bufferevent_free(link_bev);
    link_bev = NULL;
    link_up = 0;
    fail_all("connection lost");
    if (was_up) {
        /* An established link closed (the proxy's idle check, or a restart):
         * the same proxy first, at once. */
        pg_info("proxy: connection closed; reconnecting");
        reconnect_timer = pg_timer_after(BACKOFF_MIN_MS, reconnect_due, NULL);
        return;
    }
    proxy_index++;   /* could not connect: fail over to the next one */
    reconnect_timer = pg_timer_after(backoff_ms, reconnect_due, NULL);
    backoff_ms = backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff_ms * 2;
}

/* host:port number index of the comma-separated list, wrapping around. */
static int proxy_address(int index, struct sockaddr_in *sin)
{
    int count = 1;
    for (const char *p = gw.cfg.proxy; *p; p++)
        count += *p == ',';
    const char *p = gw.cfg.proxy;
    for (int i = index % count; i > 0; i--)
        p = strchr(p, ',') + 1;
    char host[64];
    int port;
    if (sscanf(p, " %63[^:,]:%d", host, &port) != 2 || port <= 0 || port > 65535)
        return -1;
    *sin = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    return inet_pton(AF_INET, host, &sin->sin_addr) == 1 ? 0 : -1;
}

static void connect_next(void)
{
    struct sockaddr_in sin;
    if (!gw.cfg.proxy || !*gw.cfg.proxy)
        return;
    if (proxy_address(proxy_index, &sin) < 0) {
        pg_error("proxy: '%s' is not a list of ip:port", gw.cfg.proxy);
        return;
    }
    link_bev = bufferevent_socket_new(pg_server_event_base(gw.server), -1, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(link_bev, on_read, NULL, on_event, NULL);
    bufferevent_enable(link_bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(link_bev, (struct sockaddr *)&sin, sizeof(sin)) < 0)
        on_event(link_bev, BEV_EVENT_ERROR, NULL);
}

typedef struct {
    time_t limit;
    int finals;              /* the values are final_wait, not in_flight */
    uint64_t *ids;
    size_t n, cap;
} expired_list;

static int collect_expired(uint64_t id, void *value, void *arg)
{
    expired_list *e = arg;
    time_t due = e->finals ? ((final_wait *)value)->deadline
                           : ((in_flight *)value)->sent_at + REPLY_TIMEOUT_S;
    if (due > e->limit)
        return 0;
    if (pg_grow(&e->ids, &e->cap, e->n, sizeof(*e->ids)) < 0)
        return 1;   /* the rest at the next check */
    e->ids[e->n++] = id;
    return 0;
}

static void check_timeouts(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    expired_list e = {.limit = time(NULL)};
    pg_idmap_iterate(requests, collect_expired, &e);
    if (e.n > 0)
        pg_warn("proxy: %zu push(es) without a reply in %d s; storing them", e.n, REPLY_TIMEOUT_S);
    for (size_t i = 0; i < e.n; i++) {
        in_flight *f = pg_idmap_remove(requests, e.ids[i]);
        settle(f->b, f->target, PUSH_PATH_BROKEN);
        free(f);
    }
    expired_list late = {.limit = e.limit, .finals = 1, .ids = e.ids, .cap = e.cap};
    pg_idmap_iterate(finals, collect_expired, &late);
    if (late.n > 0)
        pg_warn("proxy: %zu push(es) not acknowledged by their browser in time; storing them",
                late.n);
    for (size_t i = 0; i < late.n; i++)
        end_final(pg_idmap_remove(finals, late.ids[i]), PG_ERR_UNREACHABLE, NULL);
    free(late.ids);
}

void gw_proxy_start(void)
{
    requests = pg_idmap_new(256);
    finals = pg_idmap_new(256);
    if (!gw.cfg.proxy || !*gw.cfg.proxy)
        return;
    timeout_timer = pg_timer_tick(1000, check_timeouts, NULL);
    connect_next();
}

void gw_proxy_stop(void)
{
    if (reconnect_timer > 0)
        pg_timer_clear(reconnect_timer);
    if (timeout_timer > 0)
        pg_timer_clear(timeout_timer);
    if (link_bev)
        bufferevent_free(link_bev);
    link_bev = NULL;
    link_up = 0;
    fail_all("worker stopping");
    pg_idmap_free(requests);
    pg_idmap_free(finals);
    requests = finals = NULL;
}

/* Sends one /chat/push-local frame; 0, or -1 when it could not be queued.
 * It is written member by member into a scratch buffer (one per target of
 * every cross-node order: a jansson object for each cost more than the
 * routing), and the payload, already the event's JSON text, is spliced in
 * as remote_data rather than parsed and printed again. */
static int send_push(uint64_t req_id, const batch *b, const gw_remote *target,
                     const char *chat_token)
{
    static struct evbuffer *body;
    const gw_item *item = item_of(b, target);
    if (!body && !(body = evbuffer_new()))
        return -1;
    evbuffer_drain(body, evbuffer_get_length(body));
    const char *handoff = batch_ticket(b) ? ",\"handoff\":true" : "";
    int failed = pg_json_put_str(body, chat_token,
                                 "{\"url\":\"/chat/push-local\",\"chat_token\":") < 0 ||
                 pg_json_put_str(body, target->ip, ",\"proxy_info\":{\"ip\":") < 0 ||
                 pg_json_put(body, NULL, ",\"port\":%d", target->port) < 0 ||
                 pg_json_put_str(body, target->client_id, "},\"client_id\":") < 0 ||
                 pg_json_put_str(body, item->uuid, ",\"uuid\":") < 0 ||
                 pg_json_put_str(body, item->id, ",\"msg_id\":") < 0 ||
                 pg_json_put(body, NULL, ",\"req_id\":%llu%s,\"remote_data\":",
                             (unsigned long long)req_id, handoff) < 0 ||
                 evbuffer_add(body, item->payload, strlen(item->payload)) < 0 ||
                 evbuffer_add(body, "}", 1) < 0;
    return failed ? -1 : pg_json_frame(bufferevent_get_output(link_bev), body);
}

void gw_proxy_forward(gw_routed *r, const gw_remote *remote, size_t n,
                      const gw_store_entry *offline, size_t n_offline, const char *chat_token)
{
    batch *b = calloc(1, sizeof(*b));
    gw_remote *targets = malloc(n * sizeof(*targets));
    int copied = b && targets;
    for (size_t i = 0; copied && i < n_offline; i++)
        copied = gw_store_list_add(&b->to_store, &offline[i]) == 0;
    if (!copied) {
        if (b)
            gw_store_list_free(&b->to_store);
        free(b);
        free(targets);
        r->code = PG_ERR_INTERNAL;   /* its sender sends it again */
        gw_internal_finish(r);
        return;
    }
    memcpy(targets, remote, n * sizeof(*targets));
    b->routed = r;
    b->targets = targets;
    b->outstanding = (int)n + 1;   /* +1 held until all are sent */
    int can_send = link_up && chat_token && *chat_token;
    for (size_t i = 0; i < n; i++) {
        in_flight *f = NULL;
        uint64_t req_id = ++next_req_id;
        if (can_send && pg_idmap_count(requests) < MAX_IN_FLIGHT && (f = malloc(sizeof(*f))) &&
            send_push(req_id, b, &targets[i], chat_token) == 0) {
            *f = (in_flight){.b = b, .target = &targets[i], .sent_at = time(NULL)};
            pg_idmap_put(requests, req_id, f);
        } else {
            free(f);
            settle(b, &targets[i], PUSH_PATH_BROKEN);
        }
    }
    release(b);   /* the +1: sending is over */
}

/* redis_link.c - a hiredis async connection that keeps itself up (see
 * redis_link.h).
 *
 * Design notes
 *  - hiredis 0.14 has no timeout for async connects, so each attempt arms a
 *    timer of our own; a failed or timed-out attempt arms the retry timer
 *    (pg_backoff_ms).  Both are libevent timers on the link's base, made
 *    once in pg_redis_new, so a link needs no pg_timer_bind and arming a
 *    retry cannot fail for want of memory.
 *  - An attempt that fails inside redisAsyncConnect is reported from the
 *    loop (the connect timer, armed with 0 ms), like any other failed
 *    attempt: on_down never runs inside pg_redis_new.
 *  - ac->data points to the link until we free the context ourselves; it is
 *    cleared first, so the disconnect callback hiredis may still run then
 *    (also later, when pg_redis_free was called from a reply callback and
 *    hiredis defers the free) never touches a link that is gone.
 *  - A command's callback: hiredis calls it once, so its {fn, priv} box is
 *    freed after that call.  A SUBSCRIBE's callback: hiredis keeps it in its
 *    table of channels and calls it for the confirmation and every message,
 *    and once more with NULL when the context is freed (link lost or
 *    pg_redis_free); its box is freed only on that NULL call.  Neither box
 *    points back to the link.
 *  - A subscribed connection takes no other command: hiredis 0.14 would match
 *    the reply of one (PING answers "pong" as an array) against the channel
 *    table, find nothing and call whatever callback it used last.  For the
 *    same reason (UN)SUBSCRIBE and MONITOR never go through pg_redis_argv,
 *    whose box lives for one call only. */
#include "redis_link.h"

#include "log.h"
#include "timer.h"

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONNECT_TIMEOUT_MS 2000
#define RECONNECT_MAX_MS 5000

struct pg_redis {
    char *host;
    int port;
    char role[32];
    struct event_base *base;
    void (*on_up)(pg_redis *r, void *arg);
    void (*on_down)(pg_redis *r, void *arg);
    void *arg;
    redisAsyncContext *ac;      /* NULL between attempts */
    bool up;
    bool subscribed;            /* this connection carries a subscription */
    unsigned failures;          /* attempts failed in a row: the backoff */
    char why[128];              /* why the attempt failed at once */
    struct event *connect_ev;   /* the attempt's timeout */
    struct event *retry_ev;     /* the next attempt */
    pg_ratelog down_log;
};

typedef struct {
    pg_redis_cb fn;
    void *priv;
} box;

static void connect_now(pg_redis *r);

static struct timeval ms_tv(unsigned ms)
{
    return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
}

/* The connection is gone (or never came): log, and try again later. */
static void link_down(pg_redis *r, const char *why)
{
    bool was_up = r->up;
    r->up = false;
    r->subscribed = false;
    r->ac = NULL;
    evtimer_del(r->connect_ev);
    r->failures++;
    if (was_up)
        pg_warn("redis %s:%d: %s connection lost (%s); reconnecting", r->host, r->port, r->role,
                why);
    else
        pg_log_limited(&r->down_log, PG_LOG_WARN,
                       "redis %s:%d unavailable (%s connection): %s; retrying", r->host, r->port,
                       r->role, why);
    struct timeval tv = ms_tv(pg_backoff_ms(r->failures, RECONNECT_MAX_MS));
    if (evtimer_add(r->retry_ev, &tv) < 0)
        pg_error("redis %s connection: cannot arm the reconnect timer", r->role);
    if (r->on_down)
        r->on_down(r, r->arg);  /* last: it may free r */
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    pg_redis *r = ac->data;
    if (!r)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees ac after this */
        link_down(r, ac->errstr && ac->errstr[0] ? ac->errstr : "connect failed");
        return;
    }
    evtimer_del(r->connect_ev);
    r->up = true;
    r->failures = 0;
    r->down_log = (pg_ratelog){0};
    pg_info("redis %s:%d: %s connection up", r->host, r->port, r->role);
    if (r->on_up)
        r->on_up(r, r->arg);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    pg_redis *r = ac->data;
    if (!r)
        return;     /* we are freeing it ourselves */
    link_down(r, ac->errstr && ac->errstr[0] ? ac->errstr : "closed by the server");
}

/* Frees the context of the current attempt, unheard (see the design notes). */
static void drop_context(pg_redis *r)
{
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    if (ac) {
        ac->data = NULL;
        redisAsyncFree(ac);
    }
}

static void on_connect_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pg_redis *r = arg;
    if (r->up)
        return;
    if (!r->ac) {
        link_down(r, r->why);  /* failed inside redisAsyncConnect */
        return;
    }
    drop_context(r);
    link_down(r, "connect timed out");
}

static void on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    connect_now(arg);
}

/* An attempt that cannot start is reported by the connect timer at once. */
static void fail_soon(pg_redis *r, const char *why)
{
    snprintf(r->why, sizeof(r->why), "%s", why);
    struct timeval now = {0, 0};
    if (evtimer_add(r->connect_ev, &now) < 0)
        pg_error("redis %s connection: cannot arm the connect timer", r->role);
}

static void connect_now(pg_redis *r)
{
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
    if (!ac) {
        fail_soon(r, "out of memory");
        return;
    }
    if (ac->err) {
        fail_soon(r, ac->errstr);
        redisAsyncFree(ac);
        return;
    }
    if (redisLibeventAttach(ac, r->base) != REDIS_OK) {
        redisAsyncFree(ac);
        fail_soon(r, "cannot attach to the event loop");
        return;
    }
    ac->data = r;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    struct timeval tv = ms_tv(CONNECT_TIMEOUT_MS);
    if (evtimer_add(r->connect_ev, &tv) < 0)
        pg_error("redis %s connection: cannot arm the connect timer", r->role);
}

pg_redis *pg_redis_new(const pg_redis_config *cfg)
{
    if (!cfg || !cfg->host || !cfg->base)
        return NULL;
    pg_redis *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->host = strdup(cfg->host);
    r->connect_ev = evtimer_new(cfg->base, on_connect_timer, r);
    r->retry_ev = evtimer_new(cfg->base, on_retry_timer, r);
    if (!r->host || !r->connect_ev || !r->retry_ev) {
        pg_redis_free(r);
        return NULL;
    }
    r->port = cfg->port;
    snprintf(r->role, sizeof(r->role), "%s", cfg->role ? cfg->role : "redis");
    r->base = cfg->base;
    r->on_up = cfg->on_up;
    r->on_down = cfg->on_down;
    r->arg = cfg->arg;
    connect_now(r);
    return r;
}

void pg_redis_free(pg_redis *r)
{
    if (!r)
        return;
    if (r->connect_ev)
        event_free(r->connect_ev);
    if (r->retry_ev)
        event_free(r->retry_ev);
    r->up = false;
    drop_context(r);    /* pending callbacks get NULL */
    free(r->host);
    free(r);
}

int pg_redis_up(const pg_redis *r)
{
    return r && r->up;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    box *b = privdata;
    b->fn(reply, b->priv);
    free(b);
}

static void on_message(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    box *b = privdata;
    b->fn(reply, b->priv);
    if (!reply)
        free(b);    /* hiredis's last call: the context is being freed */
}

/* Commands whose callback hiredis keeps for more than one reply. */
static bool is_pubsub(const char *name, size_t len)
{
    static const char *const names[] = {"SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE",
                                        "PUNSUBSCRIBE", "MONITOR"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (len == strlen(names[i]) && strncasecmp(name, names[i], len) == 0)
            return true;
    return false;
}

static box *box_new(pg_redis_cb fn, void *priv)
{
    box *b = malloc(sizeof(*b));
    if (b)
        *b = (box){fn, priv};
    return b;
}

int pg_redis_argv(pg_redis *r, pg_redis_cb fn, void *priv, int argc, const char **argv,
                  const size_t *lens)
{
    if (!r || !r->up || !r->ac || r->subscribed || !fn || argc < 1 || !argv || !argv[0])
        return -1;
    if (is_pubsub(argv[0], lens ? lens[0] : strlen(argv[0])))
        return -1;
    box *b = box_new(fn, priv);
    if (!b)
        return -1;
    if (redisAsyncCommandArgv(r->ac, on_reply, b, argc, argv, lens) != REDIS_OK) {
        free(b);
        return -1;
    }
    return 0;
}

int pg_redis_subscribe(pg_redis *r, const char *channel, pg_redis_cb fn, void *priv)
{
    if (!r || !r->up || !r->ac || r->subscribed || !fn || !channel)
        return -1;
    box *b = box_new(fn, priv);
    if (!b)
        return -1;
    const char *argv[] = {"SUBSCRIBE", channel};
    if (redisAsyncCommandArgv(r->ac, on_message, b, 2, argv, NULL) != REDIS_OK) {
        free(b);
        return -1;
    }
    r->subscribed = true;
    return 0;
}

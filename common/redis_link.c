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
 *    whose box lives for one call only.
 *  - With sentinels one context slot serves the whole attempt: first the
 *    sentinel asked (phase ASK), then the primary it named (CONNECT, then
 *    ROLE); the connect timer bounds each step, answers included, so a
 *    server that accepts and never answers is a failed attempt, not a
 *    hang.  The commands of the handshake are ours (their callbacks ignore
 *    NULL: the context's disconnect callback, or our own drop, says what
 *    happened), and the user's commands are refused until ROLE said master.
 *  - hiredis 0.14 runs the connect callback outside its "in a callback"
 *    guard, so a context is never freed from there (its caller would go on
 *    using it): a command that cannot be sent from on_connect fails the
 *    attempt through the connect timer, armed with 0 ms.  From reply
 *    callbacks a free is deferred by hiredis, so the handshake's answers
 *    drop their context right there.
 *  - +switch-master and READONLY only mark a move (move_ev, from the loop):
 *    the one place that closes a working link on purpose.
 *  - MOVED and ASK (Redis Cluster) are only reported (on_redirect, after
 *    the reply's callback): which server holds a key is the owner's
 *    business (the consumer's slot map), not the link's.
 *  - The +switch-master subscription is a link of its own in plain mode
 *    (the watch), whose on_down points it at the next sentinel before its
 *    retry timer fires; its messages carry the parent as priv, and the
 *    parent frees it first. */
#include "redis_link.h"

#include "log.h"
#include "redis_cluster.h"
#include "redis_events.h"
#include "redis_sentinel.h"
#include "timer.h"

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONNECT_TIMEOUT_MS 2000
#define RECONNECT_MAX_MS 5000

typedef enum {
    PH_IDLE,        /* no connection: the retry timer is armed (or the link is going) */
    PH_ASK,         /* to a sentinel: connecting, or get-master-addr-by-name out */
    PH_CONNECT,     /* to target: connecting */
    PH_ROLE,        /* to target, connected: ROLE out (with sentinels only) */
    PH_UP,
} phase;

struct pg_redis {
    pg_redis_addr target;       /* the server: as configured, or the primary last named */
    pg_redis_addr peer;         /* what the current attempt or connection is to */
    char server[PG_REDIS_ADDR_MAX];     /* peer while up, else "" */
    char role[64];
    struct event_base *base;
    void (*on_up)(pg_redis *r, void *arg);
    void (*on_down)(pg_redis *r, void *arg);
    void (*on_redirect)(pg_redis *r, void *arg);
    void *arg;
    redisAsyncContext *ac;      /* NULL between attempts */
    phase phase;
    bool subscribed;            /* this connection carries a subscription */
    unsigned failures;          /* attempts failed in a row: the backoff */
    char why[128];              /* why the attempt failed at once */
    struct event *connect_ev;   /* the attempt's timeout */
    struct event *retry_ev;     /* the next attempt */
    pg_ratelog down_log;
    /* with sentinels (sentinels NULL: plain) */
    pg_redis_addr *sentinels;
    size_t nsentinels;
    char master_name[PG_REDIS_NAME_MAX];
    size_t ask_at;              /* the sentinel asked first next time */
    size_t asked;               /* sentinels asked in this round */
    bool named;                 /* target was just named: connect without asking */
    char move_why[512];         /* why move_ev was activated */
    struct event *move_ev;      /* leave the server: +switch-master or READONLY */
    pg_redis *watch;            /* the +switch-master subscription */
    size_t watch_at;
    pg_ratelog ask_log, switch_log;
};

typedef struct {
    pg_redis_cb fn;
    void *priv;
} box;

static void start_attempt(pg_redis *r);

static struct timeval ms_tv(unsigned ms)
{
    return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
}

static bool with_sentinels(const pg_redis *r)
{
    return r->sentinels != NULL;
}

/* The connection is gone (or never came): log, and try again - after the
 * backoff, or at once when we left a server on purpose (at_once). */
static void link_down(pg_redis *r, const char *why, bool at_once)
{
    bool was_up = r->phase == PH_UP;
    char peer[PG_REDIS_ADDR_MAX];
    pg_redis_addr_format(&r->peer, peer, sizeof(peer));
    r->phase = PH_IDLE;
    r->subscribed = false;
    r->ac = NULL;
    r->server[0] = '\0';
    evtimer_del(r->connect_ev);
    if (!at_once)
        r->failures++;
    if (was_up)
        pg_warn("redis %s: %s connection %s (%s); %s", peer, r->role, at_once ? "left" : "lost",
                why, with_sentinels(r) && !at_once ? "asking the sentinels" : "reconnecting");
    else if (with_sentinels(r))
        pg_log_limited(&r->down_log, PG_LOG_WARN,
                       "redis primary of %s unavailable (%s connection): %s; retrying",
                       r->master_name, r->role, why);
    else
        pg_log_limited(&r->down_log, PG_LOG_WARN,
                       "redis %s unavailable (%s connection): %s; retrying", peer, r->role, why);
    struct timeval tv = ms_tv(at_once ? 0 : pg_backoff_ms(r->failures, RECONNECT_MAX_MS));
    if (evtimer_add(r->retry_ev, &tv) < 0)
        pg_error("redis %s connection: cannot arm the reconnect timer", r->role);
    if (r->on_down)
        r->on_down(r, r->arg);  /* last: it may free r */
}

static void ask_sentinel(pg_redis *r);

/* An attempt that did not come up (its context is gone or being freed by
 * hiredis): with sentinels, the next sentinel is asked while some in this
 * round were not; else the link is down. */
static void attempt_failed(pg_redis *r, const char *why)
{
    r->ac = NULL;
    evtimer_del(r->connect_ev);
    char peer[PG_REDIS_ADDR_MAX], reason[512];
    pg_redis_addr_format(&r->peer, peer, sizeof(peer));
    if (r->phase == PH_ASK) {
        r->ask_at = (r->ask_at + 1) % r->nsentinels;
        if (++r->asked < r->nsentinels) {
            pg_log_limited(&r->ask_log, PG_LOG_WARN,
                           "redis sentinel %s (%s connection): %s; asking the next", peer,
                           r->role, why);
            ask_sentinel(r);
            return;
        }
        snprintf(reason, sizeof(reason), "no sentinel named it (the last, %s: %s)", peer, why);
    } else if (with_sentinels(r)) {
        /* the server named failed: the next round starts at another
         * sentinel, in case the one that named it is behind the others */
        r->ask_at = (r->ask_at + 1) % r->nsentinels;
        snprintf(reason, sizeof(reason), "%s: %s", peer, why);
    } else {
        snprintf(reason, sizeof(reason), "%s", why);
    }
    link_down(r, reason, false);
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

/* The link works: from on_connect (plain) or from ROLE's answer. */
static void link_up(pg_redis *r)
{
    evtimer_del(r->connect_ev);
    r->phase = PH_UP;
    r->failures = 0;
    r->down_log = (pg_ratelog){0};
    r->ask_log = (pg_ratelog){0};
    pg_redis_addr_format(&r->peer, r->server, sizeof(r->server));
    if (with_sentinels(r))
        pg_info("redis %s: %s connection up (the primary of %s)", r->server, r->role,
                r->master_name);
    else
        pg_info("redis %s: %s connection up", r->server, r->role);
    if (r->on_up)
        r->on_up(r, r->arg);
}

/* A handshake command failed to go out from on_connect: the connect timer
 * ends the attempt from the loop (see the design notes). */
static void fail_soon(pg_redis *r, const char *why)
{
    snprintf(r->why, sizeof(r->why), "%s", why);
    struct timeval now = {0, 0};
    if (evtimer_add(r->connect_ev, &now) < 0)
        pg_error("redis %s connection: cannot arm the connect timer", r->role);
}

static void on_master_named(redisAsyncContext *ac, void *reply, void *privdata);
static void on_role(redisAsyncContext *ac, void *reply, void *privdata);

static void on_connect(const redisAsyncContext *ac, int status)
{
    pg_redis *r = ac->data;
    if (!r)
        return;
    if (status != REDIS_OK) {
        r->ac = NULL;   /* hiredis frees it after this */
        attempt_failed(r, ac->errstr[0] ? ac->errstr : "connect failed");
        return;
    }
    if (!with_sentinels(r)) {
        link_up(r);
        return;
    }
    int rc;
    if (r->phase == PH_ASK) {
        const char *argv[] = {"SENTINEL", "get-master-addr-by-name", r->master_name};
        rc = redisAsyncCommandArgv(r->ac, on_master_named, NULL, 3, argv, NULL);
    } else {
        const char *argv[] = {"ROLE"};
        r->phase = PH_ROLE;
        rc = redisAsyncCommandArgv(r->ac, on_role, NULL, 1, argv, NULL);
    }
    if (rc != REDIS_OK)
        fail_soon(r, "cannot send a command (out of memory)");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    pg_redis *r = ac->data;
    if (!r)
        return;     /* we are freeing it ourselves */
    const char *why = ac->errstr[0] ? ac->errstr : "closed by the server";
    if (r->phase == PH_UP)
        link_down(r, why, false);
    else
        attempt_failed(r, why);     /* closed during the handshake */
}

static void on_connect_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pg_redis *r = arg;
    if (r->phase == PH_UP || r->phase == PH_IDLE)
        return;
    char why[128];
    if (r->why[0])
        snprintf(why, sizeof(why), "%s", r->why);
    else
        snprintf(why, sizeof(why), "no answer within %d ms", CONNECT_TIMEOUT_MS);
    drop_context(r);
    attempt_failed(r, why);
}

static void on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_attempt(arg);
}

/* Opens a context to a; what fails from here on comes back through
 * attempt_failed, from the loop. */
static void open_context(pg_redis *r, const pg_redis_addr *a)
{
    r->peer = *a;
    r->why[0] = '\0';
    redisAsyncContext *ac = redisAsyncConnect(a->host, a->port);
    if (!ac) {
        fail_soon(r, "out of memory");
        return;
    }
    if (ac->err) {
        fail_soon(r, ac->errstr);
        redisAsyncFree(ac);
        return;
    }
    if (pg_redis_events_attach(ac, r->base) != REDIS_OK) {
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

static void ask_sentinel(pg_redis *r)
{
    r->phase = PH_ASK;
    open_context(r, &r->sentinels[r->ask_at]);
}

/* A new attempt: to target when it was just named (or without sentinels),
 * else the sentinels are asked first. */
static void start_attempt(pg_redis *r)
{
    if (with_sentinels(r) && !r->named) {
        r->asked = 0;
        ask_sentinel(r);
        return;
    }
    r->named = false;
    r->phase = PH_CONNECT;
    open_context(r, &r->target);
}

/* ---- the handshake with sentinels ---- */

static void on_master_named(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)privdata;
    pg_redis *r = ac->data;
    if (!r || !reply || r->phase != PH_ASK)
        return;     /* NULL: the context is going; its end is reported elsewhere */
    pg_redis_addr a;
    char why[256], peer[PG_REDIS_ADDR_MAX], named[PG_REDIS_ADDR_MAX];
    if (pg_redis_master_reply(reply, &a, why, sizeof(why)) < 0) {
        drop_context(r);
        attempt_failed(r, why);
        return;
    }
    pg_redis_addr_format(&r->peer, peer, sizeof(peer));
    pg_redis_addr_format(&a, named, sizeof(named));
    pg_info("redis sentinel %s: the primary of %s is %s (%s connection)", peer, r->master_name,
            named, r->role);
    drop_context(r);
    r->target = a;
    r->named = true;
    start_attempt(r);
}

static void on_role(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)privdata;
    pg_redis *r = ac->data;
    if (!r || !reply || r->phase != PH_ROLE)
        return;
    char why[256];
    if (!pg_redis_role_is_primary(reply, why, sizeof(why))) {
        drop_context(r);
        attempt_failed(r, why);     /* down: the sentinels are asked after the backoff */
        return;
    }
    link_up(r);
}

/* ---- moving to another primary ---- */

static void move_soon(pg_redis *r, const char *why)
{
    snprintf(r->move_why, sizeof(r->move_why), "%s", why);
    event_active(r->move_ev, EV_TIMEOUT, 1);
}

/* From the loop: leave the server now (READONLY), or go to the one just
 * named by +switch-master, whatever the link was doing. */
static void on_move(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pg_redis *r = arg;
    bool there = (r->phase == PH_UP || r->phase == PH_CONNECT || r->phase == PH_ROLE) &&
                 pg_redis_addr_equal(&r->peer, &r->target);
    if (r->named && there) {
        r->named = false;           /* already on (or going to) the new primary */
        return;
    }
    if (r->phase == PH_UP) {
        drop_context(r);            /* commands out get NULL */
        link_down(r, r->move_why, true);
        return;
    }
    if (!r->named)
        return;                     /* READONLY with the link down already: it asks anyway */
    drop_context(r);
    evtimer_del(r->connect_ev);
    evtimer_del(r->retry_ev);
    start_attempt(r);
}

/* ---- the +switch-master subscription ---- */

static void on_switch(struct redisReply *reply, void *priv)
{
    pg_redis *r = priv;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(reply->element[0]->str, "message") != 0)
        return;     /* the end, or the subscribe confirmation */
    const redisReply *text = reply->element[2];
    pg_redis_addr a;
    int rc = text->type == REDIS_REPLY_STRING
                 ? pg_redis_switch_parse(text->str, text->len, r->master_name, &a) : -1;
    if (rc < 0) {
        char shown[128] = "(not a string)";
        if (text->type == REDIS_REPLY_STRING)
            pg_redis_printable(text->str, text->len, shown, sizeof(shown));
        pg_log_limited(&r->switch_log, PG_LOG_WARN,
                       "redis sentinel: malformed %s message ignored: %s",
                       PG_REDIS_SWITCH_CHANNEL, shown);
        return;
    }
    if (rc == 0)
        return;     /* another master's */
    char named[PG_REDIS_ADDR_MAX], why[512];
    pg_redis_addr_format(&a, named, sizeof(named));
    snprintf(why, sizeof(why), "%s: the primary of %s is now %s", PG_REDIS_SWITCH_CHANNEL,
             r->master_name, named);
    pg_info("redis sentinel: %s (%s connection)", why, r->role);
    r->target = a;
    r->named = true;
    move_soon(r, why);
}

static void watch_up(pg_redis *w, void *arg)
{
    if (pg_redis_subscribe(w, PG_REDIS_SWITCH_CHANNEL, on_switch, arg) < 0)
        pg_warn("redis sentinel %s: cannot subscribe to %s", pg_redis_server(w),
                PG_REDIS_SWITCH_CHANNEL);
}

/* The watch's connection failed: the next sentinel, before its retry. */
static void watch_down(pg_redis *w, void *arg)
{
    pg_redis *r = arg;
    r->watch_at = (r->watch_at + 1) % r->nsentinels;
    w->target = r->sentinels[r->watch_at];
}

/* ---- making and freeing ---- */

/* The sentinels of cfg, and the watch on the first. */
static int setup_sentinels(pg_redis *r, const pg_redis_config *cfg)
{
    char err[256];
    if (pg_redis_sentinel_settings_check(cfg->sentinels, cfg->master_name, err,
                                         sizeof(err)) < 0) {
        pg_error("%s", err);
        return -1;
    }
    pg_redis_addr addrs[PG_REDIS_SENTINELS_MAX];
    int n = pg_redis_addrs_parse(cfg->sentinels, addrs, PG_REDIS_SENTINELS_MAX, err,
                                 sizeof(err));
    r->sentinels = malloc((size_t)n * sizeof(*addrs));
    if (!r->sentinels)
        return -1;
    memcpy(r->sentinels, addrs, (size_t)n * sizeof(*addrs));
    r->nsentinels = (size_t)n;
    snprintf(r->master_name, sizeof(r->master_name), "%s", cfg->master_name);
    char role[sizeof(r->role) + 32];
    snprintf(role, sizeof(role), "sentinel watch of %s", r->role);
    pg_redis_config wc = {.host = addrs[0].host, .port = addrs[0].port, .role = role,
                          .base = r->base, .on_up = watch_up, .on_down = watch_down, .arg = r};
    r->watch = pg_redis_new(&wc);
    return r->watch ? 0 : -1;
}

static bool sentinels_given(const pg_redis_config *cfg)
{
    const char *s = cfg->sentinels ? cfg->sentinels : "";
    return s[strspn(s, " \t")] != '\0';
}

pg_redis *pg_redis_new(const pg_redis_config *cfg)
{
    if (!cfg || !cfg->base || (!sentinels_given(cfg) && !cfg->host))
        return NULL;
    pg_redis *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->connect_ev = evtimer_new(cfg->base, on_connect_timer, r);
    r->retry_ev = evtimer_new(cfg->base, on_retry_timer, r);
    r->move_ev = event_new(cfg->base, -1, 0, on_move, r);
    snprintf(r->role, sizeof(r->role), "%s", cfg->role ? cfg->role : "redis");
    r->base = cfg->base;
    r->on_up = cfg->on_up;
    r->on_down = cfg->on_down;
    r->on_redirect = cfg->on_redirect;
    r->arg = cfg->arg;
    bool ok = r->connect_ev && r->retry_ev && r->move_ev;
    if (ok && sentinels_given(cfg)) {
        ok = setup_sentinels(r, cfg) == 0;
    } else if (ok) {
        ok = strlen(cfg->host) < sizeof(r->target.host);
        if (ok)
            snprintf(r->target.host, sizeof(r->target.host), "%s", cfg->host);
        else
            pg_error("redis %s connection: the host name is too long", r->role);
        r->target.port = cfg->port;
    }
    if (!ok) {
        pg_redis_free(r);
        return NULL;
    }
    start_attempt(r);
    return r;
}

void pg_redis_free(pg_redis *r)
{
    if (!r)
        return;
    pg_redis_free(r->watch);    /* first: its messages point at r */
    if (r->connect_ev)
        event_free(r->connect_ev);
    if (r->retry_ev)
        event_free(r->retry_ev);
    if (r->move_ev)
        event_free(r->move_ev);
    r->phase = PH_IDLE;
    drop_context(r);    /* pending callbacks get NULL */
    free(r->sentinels);
    free(r);
}

int pg_redis_up(const pg_redis *r)
{
    return r && r->phase == PH_UP;
}

const char *pg_redis_server(const pg_redis *r)
{
    return r ? r->server : "";
}

/* ---- commands ---- */

static bool is_readonly(const redisReply *reply)
{
    return reply->type == REDIS_REPLY_ERROR && reply->str && strncmp(reply->str, "READONLY", 8) == 0;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    box *b = privdata;
    b->fn(reply, b->priv);
    free(b);
    pg_redis *r = ac->data;     /* after fn: NULL if fn freed the link */
    const redisReply *rr = reply;
    if (r && rr && r->on_redirect && rr->type == REDIS_REPLY_ERROR && rr->str &&
        pg_cluster_is_redirect(rr->str, rr->len))
        r->on_redirect(r, r->arg);
    r = ac->data;               /* on_redirect may have freed it */
    if (r && reply && with_sentinels(r) && is_readonly(reply)) {
        char why[512];
        snprintf(why, sizeof(why), "READONLY: %s is no longer the primary of %s", r->server,
                 r->master_name);
        move_soon(r, why);
    }
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
    if (!r || r->phase != PH_UP || !r->ac || r->subscribed || !fn || argc < 1 || !argv || !argv[0])
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
    if (!r || r->phase != PH_UP || !r->ac || r->subscribed || !fn || !channel)
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

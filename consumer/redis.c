/* redis.c - a hiredis async connection that keeps itself up.
 *
 * The consumer uses two: "reader" for XREADGROUP ... BLOCK (a blocked command
 * holds up everything behind it on its connection) and "control" for XACK,
 * XADD, XCLAIM, XAUTOCLAIM and XPENDING.  Each connects through hiredis's
 * libevent adapter, gives up a connect attempt after a timeout (hiredis 0.14
 * has none for async connects), and reconnects with backoff when Redis is
 * down or restarts, logging at most one line per 10 s meanwhile.  Callbacks
 * of commands still out when the connection drops get reply NULL; they must
 * not send commands then (hiredis refuses them anyway) - the on_up hook of
 * the next connection picks the work up again. */
#include "consumer.h"

#include "log.h"
#include "timer.h"

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONNECT_TIMEOUT_MS 2000
#define RECONNECT_MAX_MS 5000

struct cs_redis {
    char role[16];
    redisAsyncContext *ac;
    bool up;
    bool freeing;           /* our own redisAsyncFree is running */
    unsigned failures;
    int64_t retry_timer, connect_timer;
    void (*on_up)(void);
    cs_ratelog down_log;
};

typedef struct {
    cs_redis_cb fn;
    void *priv;
} command;

static void connect_now(cs_redis *r);

static void on_retry(int64_t timer_id, void *arg)
{
    (void)timer_id;
    cs_redis *r = arg;
    r->retry_timer = 0;
    connect_now(r);
}

/* The connection is gone (or never came): log and try again later. */
static void link_down(cs_redis *r, const char *why)
{
    bool was_up = r->up;
    r->up = false;
    r->ac = NULL;
    if (r->connect_timer > 0)
        pg_timer_clear(r->connect_timer);
    r->connect_timer = 0;
    r->failures++;
    if (was_up)
        pg_warn("redis %s:%lld: %s connection lost (%s); reconnecting", cs.cfg.redis_host,
                cs.cfg.redis_port, r->role, why);
    else
        cs_log_limited(&r->down_log, PG_LOG_WARN,
                       "redis %s:%lld unavailable (%s connection): %s; retrying", cs.cfg.redis_host,
                       cs.cfg.redis_port, r->role, why);
    unsigned delay = cs_backoff_ms(r->failures, RECONNECT_MAX_MS);
    r->retry_timer = pg_timer_after(delay, on_retry, r);
    if (r->retry_timer < 0) {
        r->retry_timer = 0;
        pg_error("redis %s connection: no timer to reconnect (out of memory)", r->role);
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    cs_redis *r = ac->data;
    if (status != REDIS_OK) {
        link_down(r, ac->errstr[0] ? ac->errstr : "connect failed"); /* hiredis frees ac */
        return;
    }
    if (r->connect_timer > 0)
        pg_timer_clear(r->connect_timer);
    r->connect_timer = 0;
    r->up = true;
    r->failures = 0;
    pg_info("redis %s:%lld: %s connection up", cs.cfg.redis_host, cs.cfg.redis_port, r->role);
    r->down_log.last_ms = 0;
    r->down_log.suppressed = 0;
    if (r->on_up)
        r->on_up();
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    cs_redis *r = ac->data;
    if (r->freeing)
        return;
    link_down(r, ac->errstr[0] ? ac->errstr : "closed by the server");
}

static void on_connect_timeout(int64_t timer_id, void *arg)
{
    (void)timer_id;
    cs_redis *r = arg;
    r->connect_timer = 0;
    if (r->up || !r->ac)
        return;
    r->freeing = true;
    redisAsyncFree(r->ac);
    r->freeing = false;
    link_down(r, "connect timed out");
}

static void connect_now(cs_redis *r)
{
    redisAsyncContext *ac = redisAsyncConnect(cs.cfg.redis_host, (int)cs.cfg.redis_port);
    if (!ac) {
        link_down(r, "out of memory");
        return;
    }
    if (ac->err) {
        char why[128];
        snprintf(why, sizeof(why), "%s", ac->errstr);
        redisAsyncFree(ac);
        link_down(r, why);
        return;
    }
    ac->data = r;
    if (redisLibeventAttach(ac, cs.base) != REDIS_OK) {
        redisAsyncFree(ac);
        link_down(r, "cannot attach to the event loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    r->connect_timer = pg_timer_after(CONNECT_TIMEOUT_MS, on_connect_timeout, r);
    if (r->connect_timer < 0)
        r->connect_timer = 0;
}

cs_redis *cs_redis_new(const char *role, void (*on_up)(void))
{
    cs_redis *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    snprintf(r->role, sizeof(r->role), "%s", role);
    r->on_up = on_up;
    connect_now(r);
    return r;
}

void cs_redis_free(cs_redis *r)
{
    if (!r)
        return;
    if (r->retry_timer > 0)
        pg_timer_clear(r->retry_timer);
    if (r->connect_timer > 0)
        pg_timer_clear(r->connect_timer);
    r->up = false;
    if (r->ac) {
        r->freeing = true;
        redisAsyncFree(r->ac);  /* pending callbacks get NULL */
    }
    free(r);
}

bool cs_redis_up(const cs_redis *r)
{
    return r && r->up;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    command *c = privdata;
    c->fn(reply, c->priv);
    free(c);
}

int cs_redis_argv(cs_redis *r, cs_redis_cb fn, void *priv, int argc, const char **argv,
                  const size_t *lens)
{
    if (!r || !r->up || !r->ac)
        return -1;
    command *c = malloc(sizeof(*c));
    if (!c)
        return -1;
    *c = (command){fn, priv};
    if (redisAsyncCommandArgv(r->ac, on_reply, c, argc, argv, lens) != REDIS_OK) {
        free(c);
        return -1;
    }
    return 0;
}

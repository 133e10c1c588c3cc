/* redis_link.h - a hiredis async connection that keeps itself up.
 *
 * The consumer reads its stream and writes its acks over such links, the
 * gateway follows a pub/sub feed over one.  A link connects at once, gives
 * up a connect attempt after a timeout, and reconnects with backoff when
 * Redis is down or restarts, logging at most one "unavailable" line per
 * 10 s meanwhile.  It runs on the event_base it is given and on nothing
 * else; one thread uses it.
 *
 * Callbacks of commands still out when the link drops get reply NULL; they
 * should not send commands then (they would fail: the link is going away) -
 * on_up of the next connection picks the work up again. */
#ifndef PG_REDIS_LINK_H
#define PG_REDIS_LINK_H

#include <stddef.h>

struct event_base;
struct redisReply;

typedef struct pg_redis pg_redis;

/* A reply, valid during the call only (hiredis frees it afterwards). */
typedef void (*pg_redis_cb)(struct redisReply *reply, void *priv);

typedef struct {
    const char *host;            /* copied */
    int port;
    const char *role;            /* for the log: "reader", "control", "feed" */
    struct event_base *base;
    void (*on_up)(pg_redis *r, void *arg);    /* each time the link is (re)connected; may be NULL */
    void (*on_down)(pg_redis *r, void *arg);  /* each time it is lost or a connect fails; may be NULL */
    void *arg;
} pg_redis_config;

/* Connects at once; on_up or on_down follow from the loop, never from inside
 * this call.  NULL: out of memory or no host/base. */
pg_redis *pg_redis_new(const pg_redis_config *cfg);
/* Closes and frees r; pending callbacks get reply NULL (during this call).
 * Allowed from r's own callbacks, except from on_up. */
void pg_redis_free(pg_redis *r);
/* 1 while connected, else 0. */
int pg_redis_up(const pg_redis *r);

/* A command; fn gets its reply (NULL: the link dropped first). 0 or -1 (link
 * down, link subscribed, out of memory, or a pub/sub or MONITOR command -
 * those only through pg_redis_subscribe); fn is not called after -1. */
int pg_redis_argv(pg_redis *r, pg_redis_cb fn, void *priv, int argc, const char **argv,
                  const size_t *lens);

/* SUBSCRIBE channel, on a link used for nothing else: fn gets every reply on it (the
 * subscribe confirmation, then each message, as hiredis gives them), and NULL once if the
 * link drops (subscribe again in on_up). 0 or -1. One channel per connection: -1 when
 * this connection is subscribed already. */
int pg_redis_subscribe(pg_redis *r, const char *channel, pg_redis_cb fn, void *priv);

#endif

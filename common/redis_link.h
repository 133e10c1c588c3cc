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
 * on_up of the next connection picks the work up again.
 *
 * With Redis Sentinel (config.sentinels set) the link finds its server
 * itself, and follows it through failovers:
 *  - each connection starts by asking the sentinels, one after the other
 *    (from the last that answered, or the one after it when the server it
 *    named did not work out), SENTINEL get-master-addr-by-name
 *    <master_name>; a sentinel that cannot be reached, does not answer
 *    within the connect timeout, does not know the name or answers
 *    something malformed is logged and the next is asked; when none named a
 *    primary the link is down and asks again after the usual backoff;
 *  - the server named is checked with ROLE before the link counts as up:
 *    only "master" is taken (a replica, or a server that has not yet
 *    learned it was promoted, means: down, and ask again after a short
 *    backoff), so on_up always comes on a primary;
 *  - a second connection, to a sentinel, subscribes to +switch-master: when
 *    it names our master's new primary, the link moves there at once
 *    (on_down, then on_up from the new primary), even while it waits for a
 *    retry; that connection moves to the next sentinel when it drops;
 *  - a connection error asks the sentinels again, and so does a READONLY
 *    error in a reply (the server was demoted under us): that reply still
 *    reaches its callback, then the link moves (on_down, on_up).
 * What the link does not do: keep writes that were not replicated.  An
 * entry written to a primary that dies before its replica copied it is
 * gone after the failover (asynchronous replication); a writer that cannot
 * afford that sends WAIT after its writes.  Commands outstanding at a move
 * get NULL, like at any other drop. */
#ifndef PG_REDIS_LINK_H
#define PG_REDIS_LINK_H

#include <stddef.h>

struct event_base;
struct redisReply;

typedef struct pg_redis pg_redis;

/* A reply, valid during the call only (hiredis frees it afterwards). */
typedef void (*pg_redis_cb)(struct redisReply *reply, void *priv);

typedef struct {
    const char *host;            /* copied; ignored with sentinels */
    int port;
    const char *sentinels;       /* "host:port,..." (pg_redis_addrs_parse); NULL or "": host:port */
    const char *master_name;     /* with sentinels: the name they know the primary by */
    const char *role;            /* for the log: "reader", "control", "feed" */
    struct event_base *base;
    void (*on_up)(pg_redis *r, void *arg);    /* each time the link is (re)connected; may be NULL */
    void (*on_down)(pg_redis *r, void *arg);  /* each time it is lost or a connect fails; may be NULL */
    /* Redis Cluster: after the callback of a reply that is a MOVED or ASK
     * error (the key is served elsewhere: read the slot map again); may be
     * NULL.  The link itself does not follow redirects. */
    void (*on_redirect)(pg_redis *r, void *arg);
    void *arg;
} pg_redis_config;

/* Connects at once; on_up or on_down follow from the loop, never from inside
 * this call.  NULL: out of memory, no host/base, or sentinels that do not
 * parse or no master_name with them (logged; settings are checked earlier
 * with pg_redis_sentinel_settings_check). */
pg_redis *pg_redis_new(const pg_redis_config *cfg);
/* Closes and frees r; pending callbacks get reply NULL (during this call).
 * Allowed from r's own callbacks, except from on_up. */
void pg_redis_free(pg_redis *r);
/* 1 while connected, else 0. */
int pg_redis_up(const pg_redis *r);
/* "host:port" of the server while the link is up (with sentinels: the
 * primary it found), "" while it is down. */
const char *pg_redis_server(const pg_redis *r);

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

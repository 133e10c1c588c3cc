/* redis.c - pushgate-ctl's connection to Redis (publish, dead): to
 * redis_host:redis_port, or with redis_sentinels to the primary a sentinel
 * names.  Blocking, like all of ctl, and bounded in time: each sentinel
 * gets SENTINEL_MS to answer, the server it names is checked with ROLE,
 * and while no sentinel names a server that says "master" (a failover
 * under way) ctl asks again for up to PRIMARY_WAIT_MS before it gives up
 * and prints what each sentinel said.  Sentinel answers are read with
 * common/redis_sentinel.c, as the daemons read them.  With
 * redis_cluster_nodes a key's server is the primary the slot map (CLUSTER
 * SLOTS, asked of each node in turn until one answers) names for its slot,
 * read with common/redis_cluster.c as the consumer reads it. */
#include "ctl.h"

#include "redis_cluster.h"
#include "redis_sentinel.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONNECT_MS 5000
#define SENTINEL_MS 2000
#define IO_MS 30000
#define PRIMARY_WAIT_MS 10000
#define RETRY_MS 300

static struct timeval tv_ms(int ms)
{
    return (struct timeval){ms / 1000, (ms % 1000) * 1000};
}

/* A connection to a with timeout_ms to connect and per reply, or NULL with
 * the reason in why. */
static redisContext *open_to(const pg_redis_addr *a, int timeout_ms, char *why, size_t len)
{
    char where[PG_REDIS_ADDR_MAX];
    pg_redis_addr_format(a, where, sizeof(where));
    redisContext *c = redisConnectWithTimeout(a->host, a->port, tv_ms(timeout_ms));
    if (c && !c->err && redisSetTimeout(c, tv_ms(timeout_ms)) == REDIS_OK)
        return c;
    snprintf(why, len, "%s: %s", where, !c ? "out of memory" : c->err ? c->errstr
                                                                 : "cannot set a timeout");
    redisFree(c);
    return NULL;
}

#define UNKNOWN_NAME (-2)   /* ask: the sentinel does not monitor redis_master_name */

/* Sentinel s's primary for redis_master_name.  0, or -1 or UNKNOWN_NAME
 * with why. */
static int ask(const pg_redis_addr *s, pg_redis_addr *primary, char *why, size_t len)
{
    redisContext *c = open_to(s, SENTINEL_MS, why, len);
    if (!c)
        return -1;
    const char *argv[] = {"SENTINEL", "get-master-addr-by-name", ctl_cfg.redis_master_name};
    redisReply *r = redisCommandArgv(c, 3, argv, NULL);
    char reason[256];
    int rc = r ? pg_redis_master_reply(r, primary, reason, sizeof(reason)) : -1;
    if (!r)
        snprintf(reason, sizeof(reason), "%s", c->errstr[0] ? c->errstr : "no answer");
    if (rc < 0) {
        char where[PG_REDIS_ADDR_MAX];
        pg_redis_addr_format(s, where, sizeof(where));
        snprintf(why, len, "%s: %s", where, reason);
        if (r && (r->type == REDIS_REPLY_NIL ||
                  (r->type == REDIS_REPLY_ARRAY && r->elements == 0)))
            rc = UNKNOWN_NAME;
    }
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return rc;
}

/* The server at a, if it says it is a primary; else NULL with why. */
static redisContext *open_primary(const pg_redis_addr *a, char *why, size_t len)
{
    redisContext *c = open_to(a, CONNECT_MS, why, len);
    if (!c)
        return NULL;
    redisReply *r = redisCommand(c, "ROLE");
    char reason[256], where[PG_REDIS_ADDR_MAX];
    bool primary = r && pg_redis_role_is_primary(r, reason, sizeof(reason));
    if (!r)
        snprintf(reason, sizeof(reason), "%s", c->errstr[0] ? c->errstr : "no answer to ROLE");
    if (r)
        freeReplyObject(r);
    if (primary && redisSetTimeout(c, tv_ms(IO_MS)) == REDIS_OK)
        return c;
    pg_redis_addr_format(a, where, sizeof(where));
    snprintf(why, len, "%s: %s", where, primary ? "cannot set a timeout" : reason);
    redisFree(c);
    return NULL;
}

/* One round over the sentinels: the primary's connection, or NULL with
 * each sentinel's reason in whys; *unknown: every sentinel said it does
 * not monitor the name (a setting to fix, not a failover to wait for). */
static redisContext *one_round(const pg_redis_addr *s, int n, char (*whys)[1024],
                               bool *unknown)
{
    *unknown = true;
    for (int i = 0; i < n; i++) {
        pg_redis_addr primary;
        int rc = ask(&s[i], &primary, whys[i], sizeof(whys[i]));
        *unknown &= rc == UNKNOWN_NAME;
        if (rc < 0)
            continue;
        char why[600];
        redisContext *c = open_primary(&primary, why, sizeof(why));
        if (c)
            return c;
        char where[PG_REDIS_ADDR_MAX];
        pg_redis_addr_format(&s[i], where, sizeof(where));
        snprintf(whys[i], sizeof(whys[i]), "%s named %.400s", where, why);
    }
    return NULL;
}

static redisContext *via_sentinels(void)
{
    pg_redis_addr s[PG_REDIS_SENTINELS_MAX];
    char err[256];
    int n = pg_redis_addrs_parse(ctl_cfg.redis_sentinels, s, PG_REDIS_SENTINELS_MAX, err,
                                 sizeof(err));
    if (n <= 0) {
        ctl_err("%s", n < 0 ? err : "redis_sentinels: none given");
        return NULL;
    }
    char whys[PG_REDIS_SENTINELS_MAX][1024];
    double deadline = ctl_now() + PRIMARY_WAIT_MS / 1000.0;
    bool unknown;
    for (;;) {
        redisContext *c = one_round(s, n, whys, &unknown);
        if (c)
            return c;
        if (unknown || ctl_now() >= deadline)
            break;
        ctl_sleep_ms(RETRY_MS);
    }
    if (unknown)
        ctl_err("redis: no sentinel monitors a master named %s (redis_master_name):",
                ctl_cfg.redis_master_name);
    else
        ctl_err("redis: no primary of %s found through the sentinels within %d s:",
                ctl_cfg.redis_master_name, PRIMARY_WAIT_MS / 1000);
    for (int i = 0; i < n; i++)
        fprintf(stderr, "  %s\n", whys[i]);
    return NULL;
}

redisContext *ctl_redis_connect(void)
{
    if (*ctl_cfg.redis_sentinels)
        return via_sentinels();
    pg_redis_addr a;
    if (strlen(ctl_cfg.redis_host) >= sizeof(a.host)) {
        ctl_err("redis_host: too long");
        return NULL;
    }
    snprintf(a.host, sizeof(a.host), "%s", ctl_cfg.redis_host);
    a.port = (int)ctl_cfg.redis_port;
    char why[600];
    redisContext *c = open_to(&a, CONNECT_MS, why, sizeof(why));
    if (c && redisSetTimeout(c, tv_ms(IO_MS)) == REDIS_OK)
        return c;
    if (c) {
        snprintf(why, sizeof(why), "redis: cannot set a timeout");
        redisFree(c);
    }
    ctl_err("redis %s", why);
    return NULL;
}

/* The slot map, asked of node a (whose connection is kept in *c when it is
 * the owner of slot).  The owner's address in owner; 0, or -1 with why. */
static int owner_from(const pg_redis_addr *a, int slot, pg_redis_addr *owner, char *why,
                      size_t len)
{
    redisContext *c = open_to(a, SENTINEL_MS, why, len);
    if (!c)
        return -1;
    redisReply *r = redisCommand(c, "CLUSTER SLOTS");
    char where[PG_REDIS_ADDR_MAX], reason[256];
    pg_redis_addr_format(a, where, sizeof(where));
    pg_cluster_map m;
    int rc = r ? pg_cluster_slots_parse(r, a, &m, reason, sizeof(reason)) : -1;
    if (!r)
        snprintf(reason, sizeof(reason), "%s", c->errstr[0] ? c->errstr : "no answer");
    if (r)
        freeReplyObject(r);
    redisFree(c);
    if (rc < 0) {
        snprintf(why, len, "%s: %s", where, reason);
        return -1;
    }
    const pg_redis_addr *o = pg_cluster_map_owner(&m, slot);
    if (o)
        *owner = *o;
    else
        snprintf(why, len, "%s: no node serves slot %d", where, slot);
    pg_cluster_map_free(&m);
    return o ? 0 : -1;
}

redisContext *ctl_redis_connect_for(const char *key)
{
    if (!*ctl_cfg.redis_cluster_nodes)
        return ctl_redis_connect();
    pg_redis_addr seeds[PG_CLUSTER_NODES_MAX], owner;
    char err[256];
    int n = pg_cluster_nodes_parse(ctl_cfg.redis_cluster_nodes, seeds, PG_CLUSTER_NODES_MAX, err,
                                   sizeof(err));
    if (n <= 0) {
        ctl_err("%s", n < 0 ? err : "redis_cluster_nodes: none given");
        return NULL;
    }
    int slot = pg_cluster_key_slot(key, strlen(key));
    char whys[PG_CLUSTER_NODES_MAX][600];
    for (int i = 0; i < n; i++) {
        if (owner_from(&seeds[i], slot, &owner, whys[i], sizeof(whys[i])) < 0)
            continue;
        char why[600];
        redisContext *c = open_to(&owner, CONNECT_MS, why, sizeof(why));
        if (c && redisSetTimeout(c, tv_ms(IO_MS)) == REDIS_OK)
            return c;
        redisFree(c);
        snprintf(whys[i], sizeof(whys[i]), "slot %d: %.500s", slot, c ? "cannot set a timeout"
                                                                       : why);
    }
    ctl_err("redis: no node of the cluster (redis_cluster_nodes) named the server of %s:", key);
    for (int i = 0; i < n; i++)
        fprintf(stderr, "  %s\n", whys[i]);
    return NULL;
}

/* publish.c - pushgate-ctl publish: work orders into the Redis Stream, as a
 * business system would write them, for tests, demos and load.
 *
 * Each entry has one field, msg, holding the seed's request
 *   {"url":"/worksheet/send-message","chat_token":T,
 *    "data":[{"uuid":U,"data":{"type":TYPE,"infos":TEXT}},...]}
 * or the --raw JSON verbatim.  Many entries (--count) go out pipelined in
 * batches, so a load of a million entries takes seconds, not minutes.
 *
 * --wait-replicas N closes the window of Redis's asynchronous replication
 * for what it publishes: each batch is followed by WAIT N <--wait-timeout>,
 * and when fewer than N replicas acknowledged it publishing stops with
 * exit code 1, since a failover could lose those entries.
 *
 * When the setting stream is a set of streams (shards), an order goes to
 * the stream crc32(uuid) mod n, uuid being the first --uuid (with --raw:
 * data[0].uuid, else the whole text); crc32 is zlib's, so a producer in
 * PHP (crc32()) or any other language picks the same stream.  With
 * redis_cluster_nodes the XADDs go to the primary serving that stream. */
#include "ctl.h"

#include "redis_cluster.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 1000          /* XADDs written before their replies are read */
#define SHOW_IDS_MAX 10     /* counts up to this print every entry id */
#define COUNT_MAX 1000000000LL
#define WAIT_TIMEOUT_MS 1000LL  /* --wait-timeout's default */

/* --wait-replicas and --wait-timeout (replicas 0: no WAIT). */
typedef struct {
    long long replicas, timeout_ms;
} wait_opts;

/* The seed's request for the --uuid entries. NULL with the reason printed;
 * *rc says which exit code that is. */
static char *seed_msg(const ctl_args *a, int *rc)
{
    *rc = CTL_USAGE;
    const char **uuids = calloc(a->nseen + 1, sizeof(*uuids));
    if (!uuids) {
        ctl_err("out of memory");
        *rc = CTL_FAIL;
        return NULL;
    }
    size_t n = ctl_arg_all(a, "uuid", uuids);
    const char *type = ctl_arg(a, "type"), *infos = ctl_arg(a, "infos");
    const char *token = ctl_arg(a, "chat-token");
    if (!token)
        token = ctl_cfg.chat_token;
    char *text = NULL;
    bool empty_uuid = false;
    for (size_t i = 0; i < n; i++)
        empty_uuid |= !*uuids[i];
    if (n == 0 || !type || !infos)
        ctl_err("publish: --uuid, --type and --infos are required (or --raw JSON)");
    else if (empty_uuid)
        ctl_err("publish: --uuid must not be empty");
    else if (!*token)
        ctl_err("publish: no chat token: give --chat-token or set chat_token");
    else {
        json_t *data = json_array();
        for (size_t i = 0; data && i < n; i++) {
            if (json_array_append_new(data, json_pack("{s:s,s:{s:s,s:s}}", "uuid", uuids[i],
                                                      "data", "type", type, "infos", infos))) {
                json_decref(data);
                data = NULL;
            }
        }
        /* "o" steals data, also when the pack fails */
        json_t *o = data ? json_pack("{s:s,s:s,s:o}", "url", "/worksheet/send-message",
                                     "chat_token", token, "data", data) : NULL;
        text = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!text)
            ctl_err("publish: cannot build the message (not UTF-8?)");
        *rc = CTL_FAIL;
    }
    free(uuids);
    return text;
}

/* --raw: checked to be a JSON object, then sent as given. */
static char *raw_msg(const ctl_args *a, const char *raw, int *rc)
{
    *rc = CTL_USAGE;
    if (ctl_arg(a, "uuid") || ctl_arg(a, "type") || ctl_arg(a, "infos") ||
        ctl_arg(a, "chat-token")) {
        ctl_err("publish: --raw cannot be combined with --uuid, --type, --infos or --chat-token");
        return NULL;
    }
    *rc = CTL_FAIL;
    json_error_t e;
    json_t *o = json_loads(raw, JSON_DECODE_ANY, &e);
    if (!o)
        ctl_err("publish: --raw is not valid JSON: %s (line %d, column %d)", e.text, e.line,
                e.column);
    else if (!json_is_object(o))
        ctl_err("publish: --raw must be a JSON object");
    bool ok = json_is_object(o);
    json_decref(o);
    char *text = ok ? strdup(raw) : NULL;
    if (ok && !text)
        ctl_err("out of memory");
    return text;
}

/* The stream of msg among n: crc32 of its first uuid (data[0].uuid), or of
 * the whole text when it has none, mod n. */
static size_t shard_of(const char *msg, size_t n)
{
    if (n < 2)
        return 0;
    json_t *o = json_loads(msg, 0, NULL);
    json_t *uuid = json_object_get(json_array_get(json_object_get(o, "data"), 0), "uuid");
    size_t k = json_is_string(uuid) ? pg_stream_shard(json_string_value(uuid),
                                                      json_string_length(uuid), n)
                                    : pg_stream_shard(msg, strlen(msg), n);
    json_decref(o);
    return k;
}

/* Reads n XADD replies; prints the ids when show_ids. 0 or -1 (printed). */
static int read_replies(redisContext *c, const char *target, long long n, bool show_ids)
{
    for (long long i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
            ctl_err("redis: %s", c->err ? c->errstr : "no reply");
            return -1;
        }
        int ok = r->type == REDIS_REPLY_STRING;
        if (!ok)
            ctl_err("redis XADD %s: %s", target,
                    r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        else if (show_ids)
            printf("%s\n", r->str);
        freeReplyObject(r);
        if (!ok)
            return -1;
    }
    return 0;
}

#define WAIT_SHORT (-2)  /* send_batch: XADDed, but fewer replicas than asked have it */

/* WAIT's answer to a batch of n: 0 when enough replicas have it, else -1 or
 * WAIT_SHORT (printed). */
static int read_wait(redisContext *c, const wait_opts *w, long long n)
{
    redisReply *r = NULL;
    if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
        ctl_err("redis: %s", c->err ? c->errstr : "no reply to WAIT");
        return -1;
    }
    int rc = 0;
    if (r->type != REDIS_REPLY_INTEGER) {
        ctl_err("redis WAIT: %s", r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        rc = -1;
    } else if (r->integer < w->replicas) {
        ctl_err("WAIT %lld %lld: only %lld of %lld replicas acknowledged the last %lld entries "
                "in time: they are in the stream, but a failover now could lose them",
                w->replicas, w->timeout_ms, r->integer, w->replicas, n);
        rc = WAIT_SHORT;
    }
    freeReplyObject(r);
    return rc;
}

/* One batch: n XADDs (and WAIT) written, then their replies read. */
static int send_batch(redisContext *c, const char *target, const char *msg, size_t len,
                      long long n, bool show_ids, const wait_opts *w)
{
    for (long long i = 0; i < n; i++)
        if (redisAppendCommand(c, "XADD %s * msg %b", target, msg, len) != REDIS_OK) {
            ctl_err("redis: %s", c->err ? c->errstr : "out of memory");
            return -1;
        }
    if (w->replicas > 0 &&
        redisAppendCommand(c, "WAIT %lld %lld", w->replicas, w->timeout_ms) != REDIS_OK) {
        ctl_err("redis: %s", c->err ? c->errstr : "out of memory");
        return -1;
    }
    if (read_replies(c, target, n, show_ids) < 0)
        return -1;
    return w->replicas > 0 ? read_wait(c, w, n) : 0;
}

static int publish(redisContext *c, const char *target, const char *msg, long long count,
                   bool summary, const wait_opts *w)
{
    size_t len = strlen(msg);
    ctl_progress p;
    ctl_progress_init(&p);
    double t0 = ctl_now();
    long long done = 0;
    while (done < count) {
        long long n = count - done < BATCH ? count - done : BATCH;
        int rc = send_batch(c, target, msg, len, n, count <= SHOW_IDS_MAX, w);
        if (rc < 0) {
            ctl_progress_end(&p);
            if (rc == WAIT_SHORT)
                ctl_err("published %lld of %lld entries, the last %lld not confirmed",
                        done + n, count, n);
            else
                ctl_err("published %lld of %lld entries before the error", done, count);
            return CTL_FAIL;
        }
        done += n;
        if (count > BATCH)
            ctl_progress_update(&p, 0.25, done == count, "published %lld/%lld (%.0f%%)", done,
                                count, 100.0 * (double)done / (double)count);
    }
    ctl_progress_end(&p);
    double s = ctl_now() - t0;
    if (summary)
        printf("published %lld entries in %.2f s (%.0f/s)\n", count, s,
               (double)count / (s > 1e-6 ? s : 1e-6));
    return CTL_OK;
}

int ctl_cmd_publish(const ctl_args *a)
{
    long long count = 1;
    wait_opts w = {0, WAIT_TIMEOUT_MS};
    if (ctl_arg_number(a, "count", 1, COUNT_MAX, &count) < 0 ||
        ctl_arg_number(a, "wait-replicas", 1, 1000, &w.replicas) < 0 ||
        ctl_arg_number(a, "wait-timeout", 1, 3600000, &w.timeout_ms) < 0)
        return CTL_USAGE;
    if (ctl_arg(a, "wait-timeout") && !ctl_arg(a, "wait-replicas")) {
        ctl_err("publish: --wait-timeout goes with --wait-replicas");
        return CTL_USAGE;
    }
    if (!*ctl_cfg.stream) {
        ctl_err("publish: the setting stream is empty");
        return CTL_USAGE;
    }
    const char *raw = ctl_arg(a, "raw");
    int rc;
    char *msg = raw ? raw_msg(a, raw, &rc) : seed_msg(a, &rc);
    if (!msg)
        return rc;
    pg_stream_set set;
    char err[256];
    if (pg_stream_set_parse(ctl_cfg.stream, &set, err, sizeof(err)) < 0) {
        ctl_err("publish: %s", err);
        free(msg);
        return CTL_USAGE;
    }
    const char *target = set.names[shard_of(msg, set.n)];
    redisContext *c = ctl_redis_connect_for(target);
    rc = c ? publish(c, target, msg, count, ctl_arg(a, "count") != NULL, &w) : CTL_FAIL;
    redisFree(c);
    pg_stream_set_free(&set);
    free(msg);
    return rc;
}

/* publish.c - pushgate-ctl publish: work orders into the Redis Stream, as a
 * business system would write them, for tests, demos and load.
 *
 * Each entry has one field, msg, holding the seed's request
 *   {"url":"/worksheet/send-message","chat_token":T,
 *    "data":[{"uuid":U,"data":{"type":TYPE,"infos":TEXT}},...]}
 * or the --raw JSON verbatim.  Many entries (--count) go out pipelined in
 * batches, so a load of a million entries takes seconds, not minutes. */
#include "ctl.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 1000          /* XADDs written before their replies are read */
#define SHOW_IDS_MAX 10     /* counts up to this print every entry id */
#define COUNT_MAX 1000000000LL

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

redisContext *ctl_redis_connect(void)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout(ctl_cfg.redis_host, (int)ctl_cfg.redis_port, tv);
    if (!c || c->err) {
        ctl_err("redis %s:%lld: %s", ctl_cfg.redis_host, ctl_cfg.redis_port,
                c ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    struct timeval io = {30, 0};
    if (redisSetTimeout(c, io) != REDIS_OK) {
        ctl_err("redis: cannot set a timeout");
        redisFree(c);
        return NULL;
    }
    return c;
}

/* Reads n XADD replies; prints the ids when show_ids. 0 or -1 (printed). */
static int read_replies(redisContext *c, long long n, bool show_ids)
{
    for (long long i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
            ctl_err("redis: %s", c->err ? c->errstr : "no reply");
            return -1;
        }
        int ok = r->type == REDIS_REPLY_STRING;
        if (!ok)
            ctl_err("redis XADD %s: %s", ctl_cfg.stream,
                    r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        else if (show_ids)
            printf("%s\n", r->str);
        freeReplyObject(r);
        if (!ok)
            return -1;
    }
    return 0;
}

/* One batch: n XADDs written, then their n replies read. */
static int send_batch(redisContext *c, const char *msg, size_t len, long long n, bool show_ids)
{
    for (long long i = 0; i < n; i++)
        if (redisAppendCommand(c, "XADD %s * msg %b", ctl_cfg.stream, msg, len) != REDIS_OK) {
            ctl_err("redis: %s", c->err ? c->errstr : "out of memory");
            return -1;
        }
    return read_replies(c, n, show_ids);
}

static int publish(redisContext *c, const char *msg, long long count, bool summary)
{
    size_t len = strlen(msg);
    ctl_progress p;
    ctl_progress_init(&p);
    double t0 = ctl_now();
    long long done = 0;
    while (done < count) {
        long long n = count - done < BATCH ? count - done : BATCH;
        if (send_batch(c, msg, len, n, count <= SHOW_IDS_MAX) < 0) {
            ctl_progress_end(&p);
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
    if (ctl_arg_number(a, "count", 1, COUNT_MAX, &count) < 0)
        return CTL_USAGE;
    if (!*ctl_cfg.stream) {
        ctl_err("publish: the setting stream is empty");
        return CTL_USAGE;
    }
    const char *raw = ctl_arg(a, "raw");
    int rc;
    char *msg = raw ? raw_msg(a, raw, &rc) : seed_msg(a, &rc);
    if (!msg)
        return rc;
    redisContext *c = ctl_redis_connect();
    rc = c ? publish(c, msg, count, ctl_arg(a, "count") != NULL) : CTL_FAIL;
    redisFree(c);
    free(msg);
    return rc;
}

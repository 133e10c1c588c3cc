/* dead.c - pushgate-ctl dead list | replay: the consumer's dead-letter stream.
 *
 * Entries the consumer gave up on wait in the dead-letter stream with their
 * reason.  list shows them; replay puts them back on the work-order stream
 * once the cause is gone (a gateway back, an app token added).
 *
 * A replayed entry is the original msg plus a field msg_id holding the
 * original entry id, which the consumer sends as the request's msg_id: the
 * browsers and gateways that already have the message drop the copy.  A
 * dead letter is XDELed only after its XADD succeeded, so a failure in
 * between leaves a copy in both streams (a duplicate the id makes
 * harmless), never none.  --all takes what the stream held when it started:
 * an entry that dies again meanwhile is not replayed a second time in the
 * same run.  Dead letters are untrusted: one that is malformed is reported
 * and skipped (dead_letter.c says what is checked).
 *
 * When the setting stream is a set of streams (shards), a dead letter goes
 * back to its source stream if that is one of the set, with the msg_id the
 * browsers had: its entry id plus the shard's tag ("@3"); with
 * redis_cluster_nodes the XADD goes to the node of that stream and the XDEL
 * to the node of the dead-letter stream. */
#include "ctl.h"

#include "redis_cluster.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PAGE 50                 /* entries per XRANGE (a dead letter may be megabytes) */
#define LIST_DEFAULT 100
#define LIST_MAX 1000000LL
#define REASON_SHOWN 100        /* characters of the reason in the table */
#define MSG_SHOWN 60            /* characters of the message (its data) in the table */

typedef struct {
    redisContext *c;
    const char *dead;           /* the dead-letter stream */
    pg_stream_set streams;      /* the setting stream (replay) */
    redisContext *tc;           /* with a cluster: to the node of target */
    char target[PG_STREAM_NAME_MAX + 1];
    const char *reason;         /* --reason, or NULL */
    bool json;
    bool replaying;             /* words for what happens to a malformed one */
    long long max;              /* list: how many to show */
    long long shown, skipped, replayed, failed;
    ctl_table table;
    char last_id[CTL_ID_MAX];   /* the last entry seen: where the next page starts */
} dead_ctx;

/* Whether d is one of those --reason asks for. */
static bool selected(const dead_ctx *x, const ctl_dead_letter *d)
{
    return !x->reason || ctl_reason_matches(d->reason, x->reason);
}

/* ---- Redis ---- */

/* What went wrong with reply r, safe to print: the connection's error, or
 * Redis's error text cut and cleaned (it is untrusted too). */
static const char *what_failed(const dead_ctx *x, const redisReply *r, char *buf, size_t len)
{
    if (!r)
        return x->c->errstr[0] ? x->c->errstr : "no reply";
    if (r->type != REDIS_REPLY_ERROR)
        return "unexpected reply";
    char *clean = ctl_excerpt((ctl_bytes){r->str, r->len}, 200);
    snprintf(buf, len, "%s", clean ? clean : "error");
    free(clean);
    return buf;
}

/* The reply of an XRANGE/XREVRANGE: an array, or NULL with the reason printed. */
static redisReply *range(dead_ctx *x, const char *cmd, const char *from, const char *to,
                         long long count)
{
    redisReply *r = redisCommand(x->c, "%s %s %s %s COUNT %lld", cmd, x->dead, from, to, count);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        char buf[256];
        ctl_err("redis %s %s: %s", cmd, x->dead, what_failed(x, r, buf, sizeof(buf)));
        freeReplyObject(r);
        r = NULL;
    }
    return r;
}

/* The id of an [id, fields] entry when it is a stream entry id, else NULL. */
static const char *id_of(const redisReply *item)
{
    if (item->type != REDIS_REPLY_ARRAY || item->elements != 2)
        return NULL;
    const redisReply *id = item->element[0];
    return id->type == REDIS_REPLY_STRING && ctl_stream_id_valid(id->str, id->len) ? id->str
                                                                                  : NULL;
}

/* Calls fn for each entry from the start of the stream up to id to (or "+"),
 * a page at a time.  fn returns 0 to go on, 1 to stop.  0, or -1 (printed). */
static int each_entry(dead_ctx *x, const char *to, int (*fn)(dead_ctx *x, const redisReply *item))
{
    char from[CTL_ID_MAX + 1] = "-";
    for (;;) {
        redisReply *page = range(x, "XRANGE", from, to, PAGE);
        if (!page)
            return -1;
        int stop = 0;
        size_t i;
        for (i = 0; i < page->elements && !stop; i++) {
            const redisReply *item = page->element[i];
            if (id_of(item))
                strcpy(x->last_id, id_of(item));
            stop = fn(x, item);
        }
        bool end = page->elements < PAGE;
        freeReplyObject(page);
        if (stop || end)
            return 0;
        char next[CTL_ID_MAX + 1];
        snprintf(next, sizeof(next), "(%s", x->last_id);
        if (!x->last_id[0] || strcmp(next, from) == 0) {
            ctl_err("%s: cannot page past entries without a stream id", x->dead);
            return -1;
        }
        strcpy(from, next);
    }
}

/* Whether the stream holds anything after the last entry seen. */
static bool more_after_last(dead_ctx *x)
{
    char from[CTL_ID_MAX + 1];
    snprintf(from, sizeof(from), "(%s", x->last_id);
    redisReply *r = range(x, "XRANGE", from, "+", 1);
    bool more = r && r->elements > 0;
    freeReplyObject(r);
    return more;
}

/* Parses item; false for one that cannot be used, which is reported and
 * counted as skipped unless --reason leaves it out anyway. */
static bool usable(dead_ctx *x, const redisReply *item, ctl_dead_letter *d)
{
    const char *done = x->replaying ? "not replayed" : "skipped";
    if (ctl_dead_letter_parse(item, d) < 0) {
        ctl_err("%s: %s: %s", x->dead, d->problem, done);
        x->skipped++;
        return false;
    }
    if (d->problem[0] && selected(x, d)) {
        ctl_err("dead letter %s is malformed (%s): %s", d->id, d->problem, done);
        x->skipped++;
    }
    return !d->problem[0];
}

/* ---- list ---- */

/* The entry's time (its id) as local time, or in UTC as ISO 8601. */
static void format_time(const char *id, bool utc, char *out, size_t outlen)
{
    unsigned long long ms = ctl_stream_id_ms(id);
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    size_t n = 0;
    if (ms / 1000 <= 253402300799ULL && (utc ? gmtime_r(&t, &tm) : localtime_r(&t, &tm)))
        n = strftime(out, outlen, utc ? "%Y-%m-%dT%H:%M:%S" : "%Y-%m-%d %H:%M:%S", &tm);
    if (n == 0)     /* past the year 9999 */
        snprintf(out, outlen, "?");
    else if (utc)
        snprintf(out + n, outlen - n, ".%03lluZ", ms % 1000);
}

static int print_json(const ctl_dead_letter *d)
{
    char when[40];
    format_time(d->id, true, when, sizeof(when));
    json_t *o = json_pack("{s:s,s:s,s:o*,s:o*,s:s,s:o*,s:o*,s:I}", "id", d->id, "time", when,
                          "reason", ctl_json_text(d->reason), "msg", ctl_json_text(d->msg),
                          "original_id", d->original_id, "source_id",
                          ctl_json_text(d->source_id), "source_stream",
                          ctl_json_text(d->source_stream), "deliveries",
                          (json_int_t)strtoll(d->deliveries.p, NULL, 10));
    if (o && d->fields.p)
        json_object_set_new(o, "fields", json_loadb(d->fields.p, d->fields.len, 0, NULL));
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text) {
        ctl_err("out of memory");
        return -1;
    }
    puts(text);
    free(text);
    return 0;
}

static int add_row(dead_ctx *x, const ctl_dead_letter *d)
{
    char when[40];
    format_time(d->id, false, when, sizeof(when));
    char *reason = ctl_excerpt(d->reason, REASON_SHOWN);
    char *excerpt = ctl_dead_letter_excerpt(d, MSG_SHOWN);
    const char *row[] = {d->id, when, d->original_id, reason, excerpt};
    int rc = reason && excerpt ? ctl_table_row(&x->table, row) : -1;
    if (rc < 0)
        ctl_err("out of memory");
    free(reason);
    free(excerpt);
    return rc;
}

static int list_one(dead_ctx *x, const redisReply *item)
{
    ctl_dead_letter d;
    if (!usable(x, item, &d) || !selected(x, &d))
        return 0;
    if ((x->json ? print_json(&d) : add_row(x, &d)) < 0) {
        x->failed++;
        return 1;
    }
    return ++x->shown >= x->max;
}

static int list(dead_ctx *x)
{
    static const char *const header[] = {"ID", "TIME", "ORIGINAL ID", "REASON", "MESSAGE"};
    if (ctl_table_init(&x->table, 5, header) < 0) {
        ctl_err("out of memory");
        return CTL_FAIL;
    }
    int rc = each_entry(x, "+", list_one) < 0 || x->failed ? CTL_FAIL : CTL_OK;
    if (!x->json && x->shown > 0)
        ctl_table_print(&x->table, "");
    else if (!x->json && rc == CTL_OK)
        printf("no dead letters in %s%s%s\n", x->dead, x->reason ? " match --reason " : "",
               x->reason ? x->reason : "");
    ctl_table_free(&x->table);
    if (rc == CTL_OK && x->shown >= x->max && more_after_last(x))
        fprintf(stderr, "showed the first %lld; more dead letters follow (--count)\n",
                x->shown);
    if (x->skipped)
        fprintf(stderr, "%lld malformed dead letter%s skipped\n", x->skipped,
                x->skipped == 1 ? "" : "s");
    return rc;
}

/* ---- replay ---- */

/* Where d goes back to and with which msg_id (CTL_MSG_ID_MAX bytes): the
 * setting stream; with a set, d's source stream when it is one of them and
 * its shard's tag on an id that is the source's own.  NULL: not in the set
 * (the setting's text then, for the reason). */
static const char *replay_target(const dead_ctx *x, const ctl_dead_letter *d, char *msg_id)
{
    snprintf(msg_id, CTL_MSG_ID_MAX, "%s", d->original_id);
    if (x->streams.n < 2)
        return x->streams.n ? x->streams.names[0] : ctl_cfg.stream;
    int k = d->source_stream.p ? pg_stream_set_find(&x->streams, d->source_stream.p,
                                                    d->source_stream.len) : -1;
    if (k < 0)
        return NULL;
    char tag[8];
    snprintf(tag, sizeof(tag), "@%d", k % 10000);
    size_t n = strlen(msg_id);
    if (!d->id_from_fields && n + strlen(tag) < CTL_MSG_ID_MAX)
        memcpy(msg_id + n, tag, strlen(tag) + 1);   /* source_id: 41 bytes at most */
    return x->streams.names[k];
}

/* The connection for an XADD to target: the one of the dead-letter stream,
 * or with a cluster one to target's node (kept while target is the same). */
static redisContext *target_link(dead_ctx *x, const char *target)
{
    if (!*ctl_cfg.redis_cluster_nodes)
        return x->c;
    if (x->tc && strcmp(x->target, target) == 0)
        return x->tc;
    redisFree(x->tc);
    x->tc = ctl_redis_connect_for(target);
    snprintf(x->target, sizeof(x->target), "%s", target);
    return x->tc;
}

/* XADD to the work-order stream, then XDEL from the dead-letter stream.
 * 0, or -1 with the reason printed. */
static int replay_one(dead_ctx *x, const ctl_dead_letter *d)
{
    char buf[256], msg_id[CTL_MSG_ID_MAX];
    const char *target = replay_target(x, d, msg_id);
    const char *why = ctl_dead_letter_unreplayable(d, target ? target : ctl_cfg.stream, buf,
                                                   sizeof(buf));
    if (!why && !target)
        why = "its source stream is not one of the setting stream";
    if (why) {
        ctl_err("dead letter %s not replayed: %s", d->id, why);
        return -1;
    }
    redisContext *tc = target_link(x, target);
    if (!tc)
        return -1;
    redisReply *r = redisCommand(tc, "XADD %s * msg %b msg_id %s", target, d->msg.p, d->msg.len,
                                 msg_id);
    if (!r || r->type != REDIS_REPLY_STRING) {
        dead_ctx on = *x;
        on.c = tc;
        ctl_err("dead letter %s not replayed: XADD %s: %s", d->id, target,
                what_failed(&on, r, buf, sizeof(buf)));
        freeReplyObject(r);
        return -1;
    }
    char *new_id = ctl_excerpt((ctl_bytes){r->str, r->len}, CTL_ID_MAX);
    freeReplyObject(r);
    r = redisCommand(x->c, "XDEL %s %s", x->dead, d->id);
    int rc = 0;
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        ctl_err("dead letter %s was replayed as %s but not deleted from %s (%s): delete it, or "
                "it will be replayed again", d->id, new_id ? new_id : "?", x->dead,
                what_failed(x, r, buf, sizeof(buf)));
        rc = -1;
    } else {
        if (r->integer == 0)
            ctl_err("dead letter %s was gone from %s already (replayed twice at once?)", d->id,
                    x->dead);
        printf("replayed %s as %s (msg_id %s)\n", d->id, new_id ? new_id : "?", msg_id);
    }
    freeReplyObject(r);
    free(new_id);
    return rc;
}

/* Counts the outcome of one selected dead letter. */
static void replay_counted(dead_ctx *x, const ctl_dead_letter *d)
{
    if (replay_one(x, d) == 0)
        x->replayed++;
    else
        x->failed++;
}

static int replay_any(dead_ctx *x, const redisReply *item)
{
    ctl_dead_letter d;
    long long skipped = x->skipped;
    if (usable(x, item, &d) && selected(x, &d))
        replay_counted(x, &d);
    x->failed += x->skipped - skipped;  /* a malformed one reported */
    return x->c->err != 0;     /* the connection is gone: every next one would fail */
}

/* --all: what the stream holds now (up to its last entry), filtered by --reason. */
static int replay_all(dead_ctx *x)
{
    redisReply *last = range(x, "XREVRANGE", "+", "-", 1);
    if (!last)
        return -1;
    char to[CTL_ID_MAX] = "";
    if (last->elements == 1 && id_of(last->element[0]))
        strcpy(to, id_of(last->element[0]));
    bool empty = last->elements == 0;
    freeReplyObject(last);
    if (empty)
        return 0;
    if (!to[0]) {
        ctl_err("%s: its last entry has no stream id", x->dead);
        return -1;
    }
    return each_entry(x, to, replay_any);
}

/* --id ID (each of them). */
static int replay_ids(dead_ctx *x, const char *const *ids, size_t n)
{
    for (size_t i = 0; i < n && !x->c->err; i++) {
        redisReply *r = range(x, "XRANGE", ids[i], ids[i], 1);
        if (!r)
            return -1;
        ctl_dead_letter d;
        if (r->elements == 0) {
            ctl_err("no dead letter %s in %s", ids[i], x->dead);
            x->failed++;
        } else if (ctl_dead_letter_parse(r->element[0], &d) < 0 || d.problem[0]) {
            ctl_err("dead letter %s is malformed (%s): not replayed", ids[i], d.problem);
            x->failed++;
        } else if (!selected(x, &d)) {
            ctl_err("dead letter %s: its reason does not match --reason %s: not replayed",
                    ids[i], x->reason);
        } else {
            replay_counted(x, &d);
        }
        freeReplyObject(r);
    }
    return x->c->err ? -1 : 0;
}

static int replay(dead_ctx *x, const char *const *ids, size_t nids)
{
    int rc = nids ? replay_ids(x, ids, nids) : replay_all(x);
    printf("replayed %lld dead letter%s from %s to %s", x->replayed, x->replayed == 1 ? "" : "s",
           x->dead, ctl_cfg.stream);
    if (x->failed)
        printf("; %lld failed", x->failed);
    printf("\n");
    return rc < 0 || x->failed ? CTL_FAIL : CTL_OK;
}

/* ---- the command ---- */

/* The options that fit the subcommand.  0, or -1 with the reason printed. */
static int check_options(const ctl_args *a, bool is_list, const char *const *ids, size_t nids)
{
    static const char *const list_only[] = {"count", "json"};
    static const char *const replay_only[] = {"id", "all"};
    const char *const *wrong = is_list ? replay_only : list_only;
    for (size_t i = 0; i < 2; i++) {
        if (ctl_arg(a, wrong[i])) {
            ctl_err("dead %s: --%s is for dead %s", is_list ? "list" : "replay", wrong[i],
                    is_list ? "replay" : "list");
            return -1;
        }
    }
    const char *reason = ctl_arg(a, "reason");
    if (reason && !*reason) {
        ctl_err("dead: --reason must not be empty");
        return -1;
    }
    if (is_list)
        return 0;
    if (!nids == !ctl_arg(a, "all")) {
        ctl_err("dead replay: give --id ID (repeatable) or --all");
        return -1;
    }
    for (size_t i = 0; i < nids; i++) {
        if (!ctl_stream_id_valid(ids[i], strlen(ids[i]))) {
            ctl_err("dead replay: --id '%s' is not a stream entry id (like 1700000000000-0)",
                    ids[i]);
            return -1;
        }
    }
    return 0;
}

static int check_streams(bool is_list)
{
    if (!*ctl_cfg.dead_letter_stream) {
        ctl_err("dead: the setting dead_letter_stream is empty");
        return -1;
    }
    if (is_list)
        return 0;
    if (!*ctl_cfg.stream) {
        ctl_err("dead replay: the setting stream is empty");
        return -1;
    }
    pg_stream_set set;
    char err[256];
    if (pg_stream_set_parse(ctl_cfg.stream, &set, err, sizeof(err)) < 0) {
        ctl_err("dead replay: %s", err);
        return -1;
    }
    bool same = pg_stream_set_find(&set, ctl_cfg.dead_letter_stream,
                                   strlen(ctl_cfg.dead_letter_stream)) >= 0;
    pg_stream_set_free(&set);
    if (same) {
        ctl_err("dead replay: stream and dead_letter_stream are the same stream (%s)",
                ctl_cfg.dead_letter_stream);
        return -1;
    }
    return 0;
}

int ctl_cmd_dead(const ctl_args *a)
{
    const char *sub = a->pos[0];
    bool is_list = strcmp(sub, "list") == 0;
    if (!is_list && strcmp(sub, "replay") != 0) {
        ctl_err("dead: unknown subcommand '%s' (list or replay)", sub);
        return CTL_USAGE;
    }
    const char **ids = calloc(a->nseen + 1, sizeof(*ids));
    if (!ids) {
        ctl_err("out of memory");
        return CTL_FAIL;
    }
    size_t nids = ctl_arg_all(a, "id", ids);
    dead_ctx x = {.dead = ctl_cfg.dead_letter_stream, .reason = ctl_arg(a, "reason"),
                  .json = ctl_arg(a, "json") != NULL, .replaying = !is_list,
                  .max = LIST_DEFAULT};
    int rc = CTL_USAGE;
    char err[256];
    if (check_options(a, is_list, ids, nids) == 0 &&
        ctl_arg_number(a, "count", 1, LIST_MAX, &x.max) == 0 && check_streams(is_list) == 0 &&
        (is_list || pg_stream_set_parse(ctl_cfg.stream, &x.streams, err, sizeof(err)) == 0)) {
        x.c = ctl_redis_connect_for(x.dead);
        rc = !x.c ? CTL_FAIL : is_list ? list(&x) : replay(&x, ids, nids);
    }
    redisFree(x.c);
    redisFree(x.tc);
    pg_stream_set_free(&x.streams);
    free(ids);
    return rc;
}

/* publish.c - `pushgate-bench publish`: work orders into the Redis Stream,
 * exactly as a business system writes them (ctl/publish.c: field msg, the
 * seed's JSON), each for one random user of the connect run and carrying
 * its sequence number and send time:
 *
 *   {"url":"/worksheet/send-message","chat_token":T,"data":[{"uuid":U,
 *    "data":{"type":"bench","infos":"...","seq":I,"ts":<CLOCK_REALTIME us>}}]}
 *
 * The gateway hands that data object to the browser unchanged as
 * WorksheetMsg.response, so the receiver reads seq and ts back.  XADDs go
 * out pipelined in batches, paced to --rate when one is given: one batch
 * every --pace-us (10 ms: 50 orders at a time at 5,000/s).  A smaller pace
 * is a steadier stream, and the system's own batches shrink with it
 * (bench/README.md, "Steady arrivals").
 *
 * With --nchan-url http://HOST:PORT/pub/ the same orders go to the peer
 * system of bench/peer.py instead: each is an HTTP POST of the data object
 * alone ({"type":"bench","infos":"...","seq":I,"ts":T}) to
 * <path><prefix><user>, the user's nchan channel, pipelined over --conns
 * keep-alive connections (httpc.c) in the same batches, at the same pace,
 * to the same users (the same --seed draws the same sequence).
 *
 * Paced batches go out at their time whatever came back (an open loop):
 * replies are taken while waiting for the next batch's time.  A publisher
 * that waited for one batch's replies before sending the next would let a
 * system that answers late (nchan answers a POST only once it has published
 * it) hold it back, and that system's backlog would never show as latency
 * (coordinated omission).  Only past MAX_UNANSWERED orders without a reply
 * does it wait; a batch held back so carries the time it was due as its ts,
 * not the time it went.  As fast as possible (no --rate), each batch waits
 * for its replies: that run measures throughput. */
#include "bench.h"
#include "httpc.h"
#include "net.h"
#include "report.h"
#include "seqmap.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdbool.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MSG_MAX 4096
#define MAX_UNANSWERED 100000
#define REPLY_WAIT_US 30000000ull     /* a reply, or room under MAX_UNANSWERED, within */

typedef struct {
    uint64_t messages, users, first, batch, seed, infos_len, first_seq, pace_us;
    double rate, timeout;
    const char *prefix, *stream, *token;
    pb_url redis;
    pb_url nchan;               /* --nchan-url: POST here instead of XADD */
    uint64_t conns;
    int json, quiet;
} pub_opts;

typedef struct {
    const pub_opts *o;
    redisContext *redis;
    pb_httpc *http;             /* --nchan-url */
    char *token_json;           /* the chat token as a JSON string */
    char *infos;
    uint64_t rnd, sent, errors;
    uint64_t appended;          /* orders queued (XADDs or POSTs); sent + errors are answered */
    uint64_t t0, t_end;
    uint64_t batch_ts;          /* the ts of the batch being appended */
    uint64_t late;              /* batches held back past their time, and their orders */
    uint64_t late_orders;
    int timed_out;
    char last_id[64];
} pub_run;

static void pub_usage(FILE *out)
{
    fprintf(out,
        "usage: " PB_NAME " publish -m M --users N --chat-token TOKEN [--prefix bench-user-]\n"
        "         [--first 0] [--redis 127.0.0.1:6379] [--stream pushgate:worksheets]\n"
        "         [--rate R] [--pace-us 10000] [--batch 500] [--seed 1] [--infos-len 16]\n"
        "         [--first-seq 0]\n"
        "         [--timeout 120] [--quiet] [--json]\n"
        "       " PB_NAME " publish -m M --users N --nchan-url http://127.0.0.1:8080/pub/ [--conns 4]\n"
        "         [the options above but --redis, --stream and --chat-token]\n"
        "M work orders (XADD <stream> * msg <json>), each for a random user\n"
        "<prefix><first + 0..N-1>, with seq and a CLOCK_REALTIME us ts in its data.\n"
        "--redis defaults to PUSHGATE_REDIS_HOST/PORT, --chat-token to PUSHGATE_CHAT_TOKEN.\n"
        "--nchan-url: instead, POST each order's data to <url path><prefix><user> (an nchan\n"
        "publisher location), pipelined over --conns keep-alive HTTP/1.1 connections.\n");
}

static int pub_option(pub_opts *o, int c, const char *arg)
{
    switch (c) {
    case 'm': return pb_parse_u64("-m", arg, 1, PB_SEQ_LIMIT, &o->messages);
    case 'U': return pb_parse_u64("--users", arg, 1, 100000000, &o->users);
    case 'p': o->prefix = arg; return 0;
    case 'f': return pb_parse_u64("--first", arg, 0, 1000000000000ull, &o->first);
    case 'r': return pb_url_parse(arg, "tcp", "", &o->redis);
    case 's': o->stream = arg; return 0;
    case 'k': o->token = arg; return 0;
    case 'R': return pb_parse_double("--rate", arg, 0, 1e8, &o->rate);
    case 'b': return pb_parse_u64("--batch", arg, 1, 100000, &o->batch);
    case 'P': return pb_parse_u64("--pace-us", arg, 10, 1000000, &o->pace_us);
    case 'S': return pb_parse_u64("--seed", arg, 0, UINT64_MAX, &o->seed);
    case 'i': return pb_parse_u64("--infos-len", arg, 0, 2048, &o->infos_len);
    case 'F': return pb_parse_u64("--first-seq", arg, 0, 1ull << 50, &o->first_seq);
    case 't': return pb_parse_double("--timeout", arg, 1, 86400 * 7, &o->timeout);
    case 'N':
        if (pb_url_parse(arg, "http", "/pub/", &o->nchan) < 0)
            return -1;
        if (strcmp(o->nchan.scheme, "http") != 0) {
            pb_err("publish: --nchan-url %s: only http:// URLs", arg);
            return -1;
        }
        return 0;
    case 'C': return pb_parse_u64("--conns", arg, 1, PB_HTTPC_CONNS_MAX, &o->conns);
    case 'q': o->quiet = 1; return 0;
    case 'j': o->json = 1; return 0;
    default: return -1;
    }
}

static int pub_defaults(pub_opts *o)
{
    const char *host = getenv("PUSHGATE_REDIS_HOST"), *port = getenv("PUSHGATE_REDIS_PORT");
    char text[128];
    if (!o->token)
        o->token = getenv("PUSHGATE_CHAT_TOKEN");
    int need_token = !o->nchan.scheme[0];       /* nchan takes no chat token */
    if (!o->messages || !o->users || (need_token && (!o->token || !*o->token)) || !*o->stream) {
        pb_err("publish: -m, --users and --chat-token (or PUSHGATE_CHAT_TOKEN) are required"
               " (--nchan-url: -m and --users)");
        return -1;
    }
    if (strlen(o->prefix) > 40 || !pb_uuid_chars_ok(o->prefix)) {
        pb_err("publish: --prefix: at most 40 characters of [A-Za-z0-9_.:@-]");
        return -1;
    }
    if (o->redis.scheme[0])
        return 0;
    snprintf(text, sizeof(text), "%s:%s", host ? host : "127.0.0.1", port ? port : "6379");
    return pb_url_parse(text, "tcp", "", &o->redis);
}

static int pub_parse(pub_opts *o, int argc, char **argv)
{
    static const struct option longs[] = {
        {"messages", required_argument, NULL, 'm'}, {"users", required_argument, NULL, 'U'},
        {"prefix", required_argument, NULL, 'p'}, {"first", required_argument, NULL, 'f'},
        {"redis", required_argument, NULL, 'r'}, {"stream", required_argument, NULL, 's'},
        {"chat-token", required_argument, NULL, 'k'}, {"rate", required_argument, NULL, 'R'},
        {"batch", required_argument, NULL, 'b'}, {"pace-us", required_argument, NULL, 'P'},
        {"seed", required_argument, NULL, 'S'},
        {"infos-len", required_argument, NULL, 'i'}, {"first-seq", required_argument, NULL, 'F'},
        {"timeout", required_argument, NULL, 't'}, {"quiet", no_argument, NULL, 'q'},
        {"nchan-url", required_argument, NULL, 'N'}, {"conns", required_argument, NULL, 'C'},
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    memset(o, 0, sizeof(*o));
    o->prefix = "bench-user-";
    o->stream = "pushgate:worksheets";
    o->batch = 500;
    o->pace_us = 10000;
    o->seed = 1;
    o->infos_len = 16;
    o->timeout = 120;
    o->conns = 4;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:", longs, NULL)) != -1) {
        if (c == 'h') {
            pub_usage(stdout);
            return 1;
        }
        if (c == '?' || pub_option(o, c, optarg) < 0) {
            pub_usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        pb_err("publish: unexpected argument '%s'", argv[optind]);
        return -1;
    }
    return pub_defaults(o);
}

/* ---- Redis ---- */

static int pub_connect(pub_run *r)
{
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &r->o->redis.addr.sin_addr, ip, sizeof(ip));
    struct timeval tv = {5, 0};
    r->redis = redisConnectWithTimeout(ip, ntohs(r->o->redis.addr.sin_port), tv);
    if (!r->redis || r->redis->err) {
        pb_err("publish: redis %s: %s", r->o->redis.hostport,
               r->redis ? r->redis->errstr : "out of memory");
        return -1;
    }
    struct timeval io = {30, 0};
    return redisSetTimeout(r->redis, io) == REDIS_OK ? 0 : -1;
}

/* The peer's publisher: the same data object, POSTed to the user's channel. */
static int pub_append_nchan(pub_run *r, uint64_t user, uint64_t seq)
{
    const pub_opts *o = r->o;
    char body[MSG_MAX], path[sizeof(o->nchan.path) + 64];
    int n = snprintf(body, sizeof(body),
                     "{\"type\":\"bench\",\"infos\":\"%s\",\"seq\":%llu,\"ts\":%llu}", r->infos,
                     (unsigned long long)seq, (unsigned long long)r->batch_ts);
    int m = snprintf(path, sizeof(path), "%s%s%llu", o->nchan.path, o->prefix,
                     (unsigned long long)user);
    if (n < 0 || (size_t)n >= sizeof(body) || m < 0 || (size_t)m >= sizeof(path))
        return -1;
    return pb_httpc_post(r->http, path, "application/json", body, (size_t)n);
}

static int pub_append(pub_run *r, uint64_t seq)
{
    const pub_opts *o = r->o;
    char msg[MSG_MAX];
    uint64_t user = o->first + pb_rand(&r->rnd) % o->users;
    if (r->http)
        return pub_append_nchan(r, user, seq);
    int n = snprintf(msg, sizeof(msg),
                     "{\"url\":\"/worksheet/send-message\",\"chat_token\":%s,\"data\":[{\"uuid\":"
                     "\"%s%llu\",\"data\":{\"type\":\"bench\",\"infos\":\"%s\",\"seq\":%llu,"
                     "\"ts\":%llu}}]}",
                     r->token_json, o->prefix, (unsigned long long)user, r->infos,
                     (unsigned long long)seq, (unsigned long long)r->batch_ts);
    if (n < 0 || (size_t)n >= sizeof(msg))
        return -1;
    return redisAppendCommand(r->redis, "XADD %s * msg %b", o->stream, msg, (size_t)n) == REDIS_OK
               ? 0 : -1;
}

static void pub_count_reply(pub_run *r, redisReply *reply)
{
    if (reply->type == REDIS_REPLY_STRING) {
        r->sent++;
        snprintf(r->last_id, sizeof(r->last_id), "%s", reply->str);
    } else if (r->errors++ == 0) {
        pb_err("publish: XADD %s: %s", r->o->stream,
               reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
    }
    freeReplyObject(reply);
}

/* Writes the queued XADDs, then takes their replies as they come until all
 * are in (0) or deadline passes (1: the rest stay in flight).  -1 when the
 * connection failed. */
static int pub_redis_replies(pub_run *r, uint64_t deadline)
{
    redisContext *c = r->redis;
    int written = 0;
    while (!written)
        if (redisBufferWrite(c, &written) != REDIS_OK)
            goto failed;
    while (r->sent + r->errors < r->appended) {
        void *reply = NULL;
        if (redisGetReplyFromReader(c, &reply) != REDIS_OK)
            goto failed;
        if (reply) {
            pub_count_reply(r, reply);
            continue;
        }
        uint64_t now = pb_mono_us();
        if (now >= deadline)
            return 1;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        struct timespec wait = pb_timespec_us(deadline - now);
        int n = ppoll(&p, 1, &wait, NULL);
        if ((n < 0 && errno != EINTR) || (n > 0 && redisBufferRead(c) != REDIS_OK))
            goto failed;
    }
    return 0;
failed:
    pb_err("publish: redis: %s", c->err ? c->errstr : strerror(errno));
    return -1;
}

/* Replies until all are in (0) or deadline (1); ids (2xx) count as sent,
 * the rest as errors.  -1 when the connection failed. */
static int pub_replies(pub_run *r, uint64_t deadline)
{
    if (!r->http)
        return pub_redis_replies(r, deadline);
    int rc = pb_httpc_wait(r->http, deadline);
    const pb_httpc_stats *s = pb_httpc_stats_of(r->http);
    r->sent = s->ok;
    r->errors = s->errors;
    return rc;
}

/* Replies for up to REPLY_WAIT_US: 0 when all are in, 1 when some came and
 * some are still out, -1 when none came (or the connection failed). */
static int pub_more_replies(pub_run *r)
{
    uint64_t answered = r->sent + r->errors;
    int rc = pub_replies(r, pb_mono_us() + REPLY_WAIT_US);
    if (rc > 0 && r->sent + r->errors == answered) {
        pb_err("publish: %s: no reply within %llu s (%llu orders unanswered)",
               r->http ? r->o->nchan.hostport : r->o->redis.hostport,
               REPLY_WAIT_US / 1000000, (unsigned long long)(r->appended - answered));
        return -1;
    }
    return rc;
}

/* Every reply, each within REPLY_WAIT_US of the one before. */
static int pub_all_replies(pub_run *r)
{
    int rc;
    while ((rc = pub_more_replies(r)) > 0)
        ;
    return rc;
}

/* ---- pacing ---- */

static uint64_t pub_chunk(const pub_opts *o, uint64_t done)
{
    uint64_t k = o->batch;
    double per_pace = o->rate * (double)o->pace_us / 1e6;   /* orders due in one pace */
    if (o->rate > 0 && per_pace < (double)k)
        k = per_pace >= 1 ? (uint64_t)per_pace : 1;
    return k < o->messages - done ? k : o->messages - done;
}

/* Until the batch of order done is due, taking replies meanwhile; past
 * MAX_UNANSWERED unanswered orders, until there is room.  The batch's ts:
 * now, or when it was due if it was held back. */
static int pub_wait_turn(pub_run *r, uint64_t done)
{
    const pub_opts *o = r->o;
    uint64_t due = r->t0 + (uint64_t)((double)done * 1e6 / o->rate);
    int rc = pub_replies(r, due);
    if (rc == 0)
        pb_sleep_until_us(due);
    bool held = false;
    while (rc >= 0 && r->appended - r->sent - r->errors >= MAX_UNANSWERED) {
        held = true;
        rc = pub_more_replies(r);
    }
    r->batch_ts = pb_wall_us();
    uint64_t now = pb_mono_us();
    if (held && now > due) {
        r->batch_ts -= now - due;     /* late since due */
        r->late++;
        r->late_orders += pub_chunk(o, done);
    }
    return rc < 0 ? -1 : 0;
}

static int pub_loop(pub_run *r)
{
    const pub_opts *o = r->o;
    uint64_t done = 0, next_show = r->t0 + 1000000, limit = r->t0 + (uint64_t)(o->timeout * 1e6);
    while (done < o->messages) {
        if (o->rate > 0 && pub_wait_turn(r, done) < 0)
            return -1;
        if (o->rate <= 0)
            r->batch_ts = pb_wall_us();
        if (pb_mono_us() >= limit) {
            r->timed_out = 1;
            break;
        }
        uint64_t k = pub_chunk(o, done);
        for (uint64_t i = 0; i < k; i++, r->appended++)
            if (pub_append(r, o->first_seq + done + i) < 0) {
                pb_err("publish: cannot queue %s (out of memory?)",
                       r->http ? "a POST" : "an XADD");
                return -1;
            }
        /* Paced: written now, answered while waiting for the next batch's turn. */
        if ((o->rate > 0 ? pub_replies(r, 0) : pub_all_replies(r)) < 0)
            return -1;
        done += k;
        if (!o->quiet && pb_mono_us() >= next_show) {
            fprintf(stderr, "[%6.1fs] published %llu/%llu\n", (double)(pb_mono_us() - r->t0) / 1e6,
                    (unsigned long long)done, (unsigned long long)o->messages);
            next_show += 1000000;
        }
    }
    return pub_all_replies(r);
}

/* ---- report ---- */

static int pub_report(const pub_run *r)
{
    const pub_opts *o = r->o;
    double secs = (double)(r->t_end - r->t0) / 1e6;
    int ok = r->sent == o->messages && r->errors == 0 && !r->timed_out;
    json_t *rep = json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:I,s:f,s:f,s:b,s:b}",
                            "mode", "publish",
                            "messages", (json_int_t)o->messages, "users", (json_int_t)o->users,
                            "first_seq", (json_int_t)o->first_seq,
                            "sent", (json_int_t)r->sent, "errors", (json_int_t)r->errors,
                            "seed", (json_int_t)o->seed, "rate_target", o->rate,
                            "pace_us", (json_int_t)o->pace_us,
                            "seconds", secs, "rate", secs > 0 ? (double)r->sent / secs : 0.0,
                            "timed_out", r->timed_out, "ok", ok);
    if (rep) {
        json_object_set_new(rep, "late_batches", json_integer((json_int_t)r->late));
        json_object_set_new(rep, "late_orders", json_integer((json_int_t)r->late_orders));
    }
    if (rep && r->http) {
        const pb_httpc_stats *s = pb_httpc_stats_of(r->http);
        char url[400];
        snprintf(url, sizeof(url), "http://%s%s", o->nchan.hostport, o->nchan.path);
        json_object_set_new(rep, "nchan_url", json_string(url));
        json_object_set_new(rep, "connections", json_integer((json_int_t)o->conns));
        json_object_set_new(rep, "no_subscriber", json_integer((json_int_t)s->accepted));
        json_object_set_new(rep, "reconnects", json_integer((json_int_t)s->reconnects));
        json_object_set_new(rep, "first_error_status", json_integer(s->first_status));
    } else if (rep) {
        json_object_set_new(rep, "redis", json_string(o->redis.hostport));
        json_object_set_new(rep, "stream", json_string(o->stream));
        json_object_set_new(rep, "last_id", json_string(r->last_id));
    }
    if (pb_report_print(stdout, rep, o->json) < 0)
        ok = 0;
    json_decref(rep);
    return ok ? PB_OK : PB_INCOMPLETE;
}

int pb_publish_main(int argc, char **argv)
{
    pub_opts o;
    int rc = pub_parse(&o, argc, argv);
    if (rc != 0)
        return rc > 0 ? PB_OK : PB_USAGE;
    pub_run r = {.o = &o, .rnd = o.seed};
    json_t *tok = json_string(o.token ? o.token : "");
    r.token_json = tok ? json_dumps(tok, JSON_ENCODE_ANY) : NULL;
    json_decref(tok);
    r.infos = malloc(o.infos_len + 1);
    rc = PB_INCOMPLETE;
    if (!r.token_json || !r.infos) {
        pb_err("publish: the chat token is not UTF-8, or out of memory");
    } else if (o.nchan.scheme[0] ? (r.http = pb_httpc_new(&o.nchan, (int)o.conns, 5000)) != NULL
                                 : pub_connect(&r) == 0) {
        memset(r.infos, 'x', o.infos_len);
        r.infos[o.infos_len] = '\0';
        r.t0 = pb_mono_us();
        int failed = pub_loop(&r) < 0;
        r.t_end = pb_mono_us();
        rc = pub_report(&r);
        if (failed)
            rc = PB_INCOMPLETE;
    }
    if (r.redis)
        redisFree(r.redis);
    pb_httpc_free(r.http);
    free(r.token_json);
    free(r.infos);
    return rc;
}

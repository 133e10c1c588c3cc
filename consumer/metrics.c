/* metrics.c - the consumer's /metrics and /healthz on metrics_host:metrics_port
 * (common/metrics_http.c, libevent's evhttp on the consumer's one loop).
 *
 * Counters come from cs.stats and the replies counted here by code; the
 * stream's lag and pending count are Redis's own (XINFO GROUPS: entries
 * not yet read by the group, and read but not XACKed), asked every
 * POLL_MS on the control link, so a scrape is answered from memory and
 * never waits for Redis.  The status row (status.c) reports the same
 * numbers, so they are polled with or without a metrics port.  With
 * several streams each is polled on its node's link; lag and pending are
 * their sums (not known while one is not), and each stream's own are
 * labelled samples of pushgate_consumer_shard_lag and
 * pushgate_consumer_shard_pending. */
#include "consumer.h"

#include "metrics_http.h"
#include "prom.h"
#include "redis_sentinel.h"
#include "timer.h"

#include <event2/buffer.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define POLL_MS 1000
#define STALE_MS (5 * POLL_MS)  /* lag and pending older than this are not known */
#define CODES_MAX 32            /* distinct reply codes counted; more share "other" */

static pg_metrics_http *http;
static int64_t poll_timer;
static struct {
    int code;
    unsigned long long n;
} replies[CODES_MAX + 1];       /* the last: other codes */
static size_t ncodes;

void cs_metrics_reply(int code)
{
    size_t i = 0;
    while (i < ncodes && replies[i].code != code)
        i++;
    if (i == ncodes && ncodes < CODES_MAX)
        replies[ncodes++].code = code;
    replies[i < CODES_MAX ? i : CODES_MAX].n++;
}

static bool fresh(const cs_shard *s)
{
    return s->polled_ms && pg_now_ms() - s->polled_ms <= STALE_MS;
}

/* A shard's lag and pending (-1: not known, or not asked for a while). */
static void shard_group(const cs_shard *s, long long *lag, long long *pending)
{
    *lag = fresh(s) ? s->lag : -1;
    *pending = fresh(s) ? s->pending : -1;
}

void cs_metrics_group(long long *lag, long long *pending)
{
    *lag = *pending = 0;
    for (size_t i = 0; i < cs.nshards; i++) {
        long long l, p;
        shard_group(&cs.shards[i], &l, &p);
        *lag = *lag < 0 || l < 0 ? -1 : *lag + l;
        *pending = *pending < 0 || p < 0 ? -1 : *pending + p;
    }
    if (cs.nshards == 0)
        *lag = *pending = -1;
}

void cs_metrics_shard(size_t i, long long *lag, long long *pending)
{
    shard_group(&cs.shards[i], lag, pending);
}

void cs_metrics_replies(void (*fn)(const char *code, unsigned long long n, void *arg), void *arg)
{
    char code[16];
    for (size_t i = 0; i < ncodes; i++) {
        snprintf(code, sizeof(code), "%d", replies[i].code);
        fn(code, replies[i].n, arg);
    }
    if (replies[CODES_MAX].n)
        fn("other", replies[CODES_MAX].n, arg);
}

/* One group of XINFO GROUPS: ours, its lag and pending count. */
static void take_group(cs_shard *s, const redisReply *g)
{
    const redisReply *name = cs_reply_field(g, "name"), *lag = cs_reply_field(g, "lag"),
                     *pending = cs_reply_field(g, "pending");
    if (!name || name->type != REDIS_REPLY_STRING || strcmp(name->str, cs.cfg.group) != 0)
        return;
    /* nil (-1) when Redis cannot tell the lag, after deletions */
    s->lag = lag && lag->type == REDIS_REPLY_INTEGER ? lag->integer : -1;
    s->pending = pending && pending->type == REDIS_REPLY_INTEGER ? pending->integer : -1;
    s->polled_ms = pg_now_ms();
}

static void on_groups(struct redisReply *reply, void *priv)
{
    cs_shard *s = priv;
    s->polling = false;
    for (size_t i = 0; reply && reply->type == REDIS_REPLY_ARRAY && i < reply->elements; i++)
        take_group(s, reply->element[i]);
}

static void poll_group(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    for (size_t i = 0; i < cs.nshards; i++) {
        cs_shard *s = &cs.shards[i];
        const char *argv[] = {"XINFO", "GROUPS", s->name};
        if (!s->polling && pg_redis_argv(cs_shard_control(s), on_groups, s, 3, argv, NULL) == 0)
            s->polling = true;
    }
}

/* Oldest answer of all shards (0: one never answered). */
static uint64_t polled_ms(void)
{
    uint64_t oldest = UINT64_MAX;
    for (size_t i = 0; i < cs.nshards; i++)
        if (cs.shards[i].polled_ms < oldest)
            oldest = cs.shards[i].polled_ms;
    return cs.nshards ? oldest : 0;
}

static void counters(struct evbuffer *out)
{
    pg_prom_counter(out, "pushgate_consumer_read_total", "Entries read with XREADGROUP.",
                    cs.stats.read);
    pg_prom_counter(out, "pushgate_consumer_claimed_total",
                    "Entries reclaimed from dead consumers (XAUTOCLAIM).", cs.stats.claimed);
    pg_prom_counter(out, "pushgate_consumer_sent_total", "Requests sent to gateways.",
                    cs.stats.sent);
    pg_prom_counter(out, "pushgate_consumer_acked_total", "Entries XACKed: handed off.",
                    cs.stats.acked);
    pg_prom_counter(out, "pushgate_consumer_retries_total",
                    "Attempts that failed and were tried again.", cs.stats.retried);
    pg_prom_counter(out, "pushgate_consumer_waits_total",
                    "Retries that did not count: no gateway could try.", cs.stats.waited);
    pg_prom_counter(out, "pushgate_consumer_trimmed_total",
                    "Entries trimmed from the streams: read and XACKed by every group.",
                    cs.stats.trimmed);
    pg_prom_counter(out, "pushgate_consumer_dead_letters_total",
                    "Entries moved to the dead-letter stream.", cs.stats.dead);
    pg_prom_counter(out, "pushgate_consumer_hinted_total",
                    "Requests sent to the gateway that holds their first uuid's browser.",
                    cs.stats.hinted);
    pg_prom_counter(out, "pushgate_consumer_route_notes_total",
                    "Notes of the route feed that named a node: registrations, mostly.", cs.stats.hint_notes);
    pg_prom_head(out, "pushgate_consumer_gateway_replies_total", "counter",
                 "Replies of gateways, first and final, by code (0: ok).");
    for (size_t i = 0; i <= CODES_MAX; i++) {
        char label[32];
        if (i < ncodes)
            snprintf(label, sizeof(label), "code=\"%d\"", replies[i].code);
        else if (i == CODES_MAX && replies[i].n)
            snprintf(label, sizeof(label), "code=\"other\"");
        else
            continue;
        pg_prom_sample(out, "pushgate_consumer_gateway_replies_total", label, replies[i].n);
    }
}

static void gauges(struct evbuffer *out)
{
    pg_prom_gauge(out, "pushgate_consumer_held", "Entries in memory, read and not yet XACKed.",
                  (int64_t)cs_entries_held());
    pg_prom_gauge(out, "pushgate_consumer_in_flight",
                  "Entries sent to a gateway, waiting for its reply.", (int64_t)cs.sent);
    pg_prom_gauge(out, "pushgate_consumer_ready", "Entries waiting for a gateway with room.",
                  (int64_t)cs.ready.n);
    pg_prom_gauge(out, "pushgate_consumer_gateways_up", "Gateways connected.",
                  (int64_t)cs_nodes_up());
    pg_prom_gauge(out, "pushgate_consumer_redis_up",
                  "1 while the control link to Redis is up (every node's, with a cluster).",
                  cs_acks_link_up());
    pg_prom_gauge(out, "pushgate_consumer_route_feed_up",
                  "1 while the route feed is heard, so that orders follow their route hints.",
                  cs_hints_listening());
    long long lag, pending;
    cs_metrics_group(&lag, &pending);
    pg_prom_gauge(out, "pushgate_consumer_stream_lag",
                  "Entries of the stream the group has not read yet, all streams (-1: not known).",
                  lag);
    pg_prom_gauge(out, "pushgate_consumer_stream_pending",
                  "Entries the group read and has not XACKed, all consumers and streams "
                  "(-1: not known).", pending);
    uint64_t polled = polled_ms();
    double age = polled ? (double)(pg_now_ms() - polled) / 1000 : -1;
    pg_prom_head(out, "pushgate_consumer_stream_info_age_seconds", "gauge",
                 "Age of the lag and pending numbers (-1: never read).");
    evbuffer_add_printf(out, "pushgate_consumer_stream_info_age_seconds %.3f\n", age);
}

/* Each stream's own lag and pending (one sample with one stream). */
static void shards(struct evbuffer *out)
{
    static const char *const names[2] = {"pushgate_consumer_shard_lag",
                                         "pushgate_consumer_shard_pending"};
    static const char *const helps[2] = {
        "Entries of one stream the group has not read yet (-1: not known).",
        "Entries of one stream the group read and has not XACKed (-1: not known)."};
    for (int m = 0; m < 2; m++) {
        pg_prom_head(out, names[m], "gauge", helps[m]);
        for (size_t i = 0; i < cs.nshards; i++) {
            long long v[2];
            cs_metrics_shard(i, &v[0], &v[1]);
            char stream[2 * PG_STREAM_NAME_MAX + 8], labels[sizeof(stream) + 16];
            pg_prom_label_value(stream, sizeof(stream), cs.shards[i].name);
            snprintf(labels, sizeof(labels), "stream=\"%s\"", stream);
            evbuffer_add_printf(out, "%s{%s} %lld\n", names[m], labels, v[m]);
        }
    }
}

static void server_sample(const char *role, pg_redis *r, void *arg)
{
    if (!pg_redis_up(r))
        return;
    char server[2 * PG_REDIS_ADDR_MAX], link[2 * (PG_STREAM_NAME_MAX + PG_REDIS_ADDR_MAX)];
    char labels[sizeof(server) + sizeof(link) + 32];
    pg_prom_label_value(server, sizeof(server), pg_redis_server(r));
    pg_prom_label_value(link, sizeof(link), role);
    snprintf(labels, sizeof(labels), "link=\"%s\",server=\"%s\"", link, server);
    pg_prom_sample(arg, "pushgate_consumer_redis_server_info", labels, 1);
}

/* Which server each link uses now: with sentinels, the primary they named. */
static void servers(struct evbuffer *out)
{
    pg_prom_head(out, "pushgate_consumer_redis_server_info", "gauge",
                 "The Redis server each link uses now (with redis_sentinels: the primary "
                 "found), always 1; no sample while the link is down.");
    cs_shards_links(server_sample, out);
}

/* Which MySQL server the consumer reads gateway_nodes from, and how often
 * its connection moved to another one. */
static void mysql(struct evbuffer *out)
{
    pg_prom_counter(out, "pushgate_consumer_mysql_failovers_total",
                    "Times the MySQL connection moved to the next server of mysql_hosts.",
                    pg_db_process_failovers());
    pg_prom_info(out, "pushgate_consumer_mysql_host_info",
                 "1 for the MySQL server (of mysql_hosts) the consumer last reached.", "host",
                 cs_mysql_server());
}

static void write_metrics(struct evbuffer *out, void *arg)
{
    (void)arg;
    counters(out);
    gauges(out);
    shards(out);
    servers(out);
    mysql(out);
}

static bool healthy(const char **why, void *arg)
{
    (void)arg;
    if (cs.stopping)
        *why = "stopping";
    else if (!cs_acks_link_up())
        *why = "redis down";
    return !cs.stopping && cs_acks_link_up();
}

int cs_metrics_start(void)
{
    poll_timer = pg_timer_tick(POLL_MS, poll_group, NULL);
    if (poll_timer < 0) {
        pg_error("no timer for XINFO GROUPS");
        return -1;
    }
    if (cs.cfg.metrics_port <= 0)
        return 0;
    int fd = pg_metrics_http_bind(cs.cfg.metrics_host, (int)cs.cfg.metrics_port);
    if (fd < 0)
        return -1;
    if (!(http = pg_metrics_http_new(cs.base, fd, write_metrics, healthy, NULL))) {
        close(fd);
        return -1;
    }
    pg_info("metrics on http://%s:%lld/metrics", cs.cfg.metrics_host, cs.cfg.metrics_port);
    return 0;
}

void cs_metrics_stop(void)
{
    if (poll_timer > 0)
        pg_timer_clear(poll_timer);
    poll_timer = 0;
    pg_metrics_http_free(http);
    http = NULL;
}

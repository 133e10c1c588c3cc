/* metrics.c - the consumer's /metrics and /healthz on metrics_host:metrics_port
 * (common/metrics_http.c, libevent's evhttp on the consumer's one loop).
 *
 * Counters come from cs.stats and the replies counted here by code; the
 * stream's lag and pending count are Redis's own (XINFO GROUPS: entries
 * not yet read by the group, and read but not XACKed), asked every
 * POLL_MS on the control link, so a scrape is answered from memory and
 * never waits for Redis.  The status row (status.c) reports the same
 * numbers, so they are polled with or without a metrics port. */
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
    long long lag, pending;     /* -1: not known (yet) */
    uint64_t polled_ms;         /* when Redis last answered (0: never) */
    bool polling;               /* an XINFO is out */
} group = {-1, -1, 0, false};
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

void cs_metrics_group(long long *lag, long long *pending)
{
    bool fresh = group.polled_ms && pg_now_ms() - group.polled_ms <= STALE_MS;
    *lag = fresh ? group.lag : -1;
    *pending = fresh ? group.pending : -1;
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

/* One group of XINFO GROUPS: name, value, ... (RESP2). */
static void take_group(const redisReply *g)
{
    bool ours = false;
    long long lag = -1, pending = -1;
    for (size_t k = 0; g->type == REDIS_REPLY_ARRAY && k + 1 < g->elements; k += 2) {
        const redisReply *key = g->element[k], *v = g->element[k + 1];
        if (key->type != REDIS_REPLY_STRING)
            continue;
        if (strcmp(key->str, "name") == 0)
            ours = v->type == REDIS_REPLY_STRING && strcmp(v->str, cs.cfg.group) == 0;
        else if (strcmp(key->str, "lag") == 0 && v->type == REDIS_REPLY_INTEGER)
            lag = v->integer;
        else if (strcmp(key->str, "pending") == 0 && v->type == REDIS_REPLY_INTEGER)
            pending = v->integer;
    }
    if (ours) {
        group.lag = lag;   /* nil (-1) when Redis cannot tell, after deletions */
        group.pending = pending;
        group.polled_ms = pg_now_ms();
    }
}

static void on_groups(struct redisReply *reply, void *priv)
{
    (void)priv;
    group.polling = false;
    for (size_t i = 0; reply && reply->type == REDIS_REPLY_ARRAY && i < reply->elements; i++)
        take_group(reply->element[i]);
}

static void poll_group(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    const char *argv[] = {"XINFO", "GROUPS", cs.cfg.stream};
    if (!group.polling && cs_acks_link_up() &&
        pg_redis_argv(cs_acks_link(), on_groups, NULL, 3, argv, NULL) == 0)
        group.polling = true;
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
    pg_prom_counter(out, "pushgate_consumer_dead_letters_total",
                    "Entries moved to the dead-letter stream.", cs.stats.dead);
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
    pg_prom_gauge(out, "pushgate_consumer_redis_up", "1 while the control link to Redis is up.",
                  cs_acks_link_up());
    pg_prom_gauge(out, "pushgate_consumer_stream_lag",
                  "Entries of the stream the group has not read yet (-1: not known).", group.lag);
    pg_prom_gauge(out, "pushgate_consumer_stream_pending",
                  "Entries the group read and has not XACKed, all consumers (-1: not known).",
                  group.pending);
    double age = group.polled_ms ? (double)(pg_now_ms() - group.polled_ms) / 1000 : -1;
    pg_prom_head(out, "pushgate_consumer_stream_info_age_seconds", "gauge",
                 "Age of the lag and pending numbers (-1: never read).");
    evbuffer_add_printf(out, "pushgate_consumer_stream_info_age_seconds %.3f\n", age);
}

/* Which server each link uses now: with sentinels, the primary they named. */
static void servers(struct evbuffer *out)
{
    pg_prom_head(out, "pushgate_consumer_redis_server_info", "gauge",
                 "The Redis server each link uses now (with redis_sentinels: the primary "
                 "found), always 1; no sample while the link is down.");
    const struct {
        const char *name;
        pg_redis *r;
    } links[] = {{"reader", cs_stream_link()}, {"control", cs_acks_link()}};
    for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
        if (!pg_redis_up(links[i].r))
            continue;
        char server[2 * PG_REDIS_ADDR_MAX], labels[sizeof(server) + 64];
        pg_prom_label_value(server, sizeof(server), pg_redis_server(links[i].r));
        snprintf(labels, sizeof(labels), "link=\"%s\",server=\"%s\"", links[i].name, server);
        pg_prom_sample(out, "pushgate_consumer_redis_server_info", labels, 1);
    }
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
                 cs_nodes_mysql_server());
}

static void write_metrics(struct evbuffer *out, void *arg)
{
    (void)arg;
    counters(out);
    gauges(out);
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

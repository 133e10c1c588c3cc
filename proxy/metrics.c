/* metrics.c - the proxy's /metrics and /healthz on metrics_host:metrics_port.
 *
 * The master binds the port before fork, so a port in use stops the start
 * with a clear error; worker 0 serves it on its own loop with evhttp
 * (common/metrics_http.c), and a worker 0 that is replaced serves it again.
 * Every number is in shared memory (stats.c), so worker 0 reports the
 * whole proxy. */
#include "proxy.h"

#include "log.h"
#include "metrics_http.h"

#include <event2/buffer.h>
#include <unistd.h>

static pg_metrics_http *http;

int px_metrics_bind(void)
{
    px.metrics_fd = -1;
    if (px.cfg.metrics_port <= 0)
        return 0;
    px.metrics_fd = pg_metrics_http_bind(px.cfg.metrics_host, (int)px.cfg.metrics_port);
    if (px.metrics_fd >= 0)
        pg_info("metrics on http://%s:%lld/metrics", px.cfg.metrics_host, px.cfg.metrics_port);
    return px.metrics_fd < 0 ? -1 : 0;
}

void px_metrics_close(void)
{
    if (px.metrics_fd >= 0)
        close(px.metrics_fd);
    px.metrics_fd = -1;
}

static uint64_t get(const _Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

static void forwards(struct evbuffer *out)
{
    pg_prom_head(out, "pushgate_proxy_forwards_total", "counter",
                 "Pushes by target node and outcome: delivered, gone (session closed), refused "
                 "(another error), unreachable, busy (past max_in_flight).");
    for (int i = 0; i <= PX_NODES_MAX; i++) {
        px_node_counters *r = &px.counters->nodes[i];
        if (i < PX_NODES_MAX && atomic_load(&r->state) != 2)
            continue;
        char node[2 * sizeof(r->node)], labels[3 * sizeof(r->node)];
        pg_prom_label_value(node, sizeof(node), r->node);
        for (int o = 0; o < PX_OUTCOMES; o++) {
            uint64_t n = get(&r->n[o]);
            if (n == 0 && i == PX_NODES_MAX)
                continue;   /* "other" only once it counts */
            snprintf(labels, sizeof(labels), "node=\"%s\",outcome=\"%s\"", node,
                     px_outcome_names[o]);
            pg_prom_sample(out, "pushgate_proxy_forwards_total", labels, n);
        }
    }
}

/* Which MySQL server the task workers use: a failover counter and an
 * info gauge naming the server (no sample before any). */
static void mysql_metrics(struct evbuffer *out, px_counters *c)
{
    pg_prom_counter(out, "pushgate_proxy_mysql_failovers_total",
                    "Times a MySQL connection moved to the next server of mysql_hosts.",
                    (uint64_t)atomic_load(&c->mysql_where.failovers));
    pg_prom_info(out, "pushgate_proxy_mysql_host_info",
                 "1 for the MySQL server (of mysql_hosts) the proxy last reached.", "host",
                 px_mysql_server());
}

static void write_metrics(struct evbuffer *out, void *arg)
{
    (void)arg;
    px_counters *c = px.counters;
    pg_prom_counter(out, "pushgate_proxy_requests_total", "Valid push-local requests taken in.",
                    get(&c->requests));
    pg_prom_counter(out, "pushgate_proxy_bad_requests_total",
                    "Malformed requests answered with an error.", get(&c->bad_requests));
    pg_prom_counter(out, "pushgate_proxy_forwarded_total", "Pushes written to a target node.",
                    get(&c->forwarded));
    forwards(out);
    pg_prom_histogram(out, "pushgate_proxy_answer_seconds",
                      "From a push written to a target node to its first answer.",
                      &c->answer_time);
    mysql_metrics(out, c);
}

void px_metrics_worker_start(int worker_id)
{
    if (worker_id != 0 || px.metrics_fd < 0)
        return;
    /* a copy: evhttp closes what it serves, and a replaced worker 0 needs it again */
    int fd = dup(px.metrics_fd);
    if (fd < 0 || !(http = pg_metrics_http_new(pg_server_event_base(px.server), fd, write_metrics,
                                                NULL, NULL))) {
        pg_error("worker 0 cannot serve the metrics port");
        if (fd >= 0)
            close(fd);
    }
}

void px_metrics_worker_stop(void)
{
    pg_metrics_http_free(http);
    http = NULL;
}

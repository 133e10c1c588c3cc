/* metrics.c - the gateway's /metrics (Prometheus text format 0.0.4).
 *
 * Every family has # HELP and # TYPE, counters end in _total and times are
 * in seconds.  The numbers are the node's: engine counters, gw_counters and
 * the route cache's, all in shared memory, so whichever worker answers the
 * scrape reports the same.  The four latency histograms are fed where the
 * events happen, each with one relaxed add per bucket hit (common/prom.c):
 *
 *   intake to push   main.c notes the intake time of the request a worker
 *                    handles; an order that waits for a route task keeps it
 *                    (gw_order's t_in), and so does a token check's task
 *                    (its head's t_in, which the answer echoes); gw_push carries
 *                    it, to another worker too; push_here observes it
 *   push to ACK      session.c: pushed_us of a pending ACK, at its ACK
 *   route lookup     each task carries its send time, t0; a route task's answer
 *                    echoes it, and the worker observes the round trip
 *   task queue wait  the task worker observes t0 when it starts a task
 *
 * Messages delivered from the offline store are left out of intake to
 * push: their intake was long before (they measure the agent's absence). */
#include "gateway.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

static uint64_t intake_us;      /* this worker's: what it handles now */

void gw_metrics_intake_set(uint64_t us)
{
    intake_us = us;
}

uint64_t gw_metrics_intake(void)
{
    return intake_us;
}

void gw_metrics_task_waited(uint64_t t0)
{
    pg_prom_observe_since(&gw.counters->task_wait, t0);
}

void gw_metrics_route_answered(uint64_t t0)
{
    pg_prom_observe_since(&gw.counters->route_lookup, t0);
}

static uint64_t get(const _Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

static void engine_metrics(struct evbuffer *out, const pg_server_stats_t *st)
{
    uint64_t respawns = 0;
    for (int i = 0; i < st->worker_num; i++)
        respawns += st->workers[i].respawns;
    for (int i = 0; i < st->task_worker_num; i++)
        respawns += st->task_workers[i].respawns;
    pg_prom_gauge(out, "pushgate_connections", "Connections open now, both ports.",
                  (int64_t)st->connections);
    pg_prom_counter(out, "pushgate_accepted_total", "Connections accepted.", st->accepted);
    pg_prom_counter(out, "pushgate_closed_total", "Connections closed.", st->closed);
    pg_prom_counter(out, "pushgate_refused_total", "Connections refused (max_conn, open files).",
                    st->refused);
    pg_prom_counter(out, "pushgate_received_bytes_total", "Bytes read from connections.",
                    st->bytes_in);
    pg_prom_counter(out, "pushgate_sent_bytes_total", "Bytes written to connections.",
                    st->bytes_out);
    pg_prom_gauge(out, "pushgate_task_queue", "Tasks handed to task workers and not finished.",
                  (int64_t)st->task_queue);
    pg_prom_counter(out, "pushgate_worker_respawns_total",
                    "Workers and task workers replaced after they died.", respawns);
    pg_prom_gauge(out, "pushgate_start_time_seconds", "When the node started, unix seconds.",
                  st->start_time);
}

static void message_metrics(struct evbuffer *out, gw_counters *c)
{
    pg_prom_counter(out, "pushgate_messages_in_total", "Work orders and chat messages taken in.",
                    get(&c->messages_in));
    pg_prom_counter(out, "pushgate_pushed_total", "Events written to browsers.", get(&c->pushed));
    pg_prom_counter(out, "pushgate_pushes_relayed_total",
                    "Pushes handed by the worker that routed them to the session's home worker.",
                    get(&c->relayed));
    pg_prom_counter(out, "pushgate_forwarded_total",
                    "Messages handed to the proxy for other nodes.", get(&c->forwarded));
    pg_prom_counter(out, "pushgate_stored_total", "Messages written to offline_messages.",
                    get(&c->stored));
    pg_prom_counter(out, "pushgate_acked_total", "Pushes ACKed by browsers.", get(&c->acked));
    pg_prom_counter(out, "pushgate_redelivered_total", "Stored messages sent at a connect.",
                    get(&c->redelivered));
    pg_prom_counter(out, "pushgate_repeats_dropped_total",
                    "Pushes not sent: the session had that id from this node.", get(&c->repeats));
    pg_prom_counter(out, "pushgate_auth_failures_total", "Browsers refused for their token.",
                    get(&c->auth_failures));
    pg_prom_counter(out, "pushgate_limited_total", "Browsers refused or closed by their limits.",
                    get(&c->limited));
    pg_prom_counter(out, "pushgate_inbox_refused_total",
                    "Routed messages refused: max_offline_per_uuid.", get(&c->inbox_refused));
}

static void health_metrics(struct evbuffer *out, gw_counters *c)
{
    gw_route_cache_stats rc;
    gw_route_cache_stats_get(&rc);
    pg_prom_gauge(out, "pushgate_mysql_up", "1 when the last MySQL call of a task worker worked.",
                  atomic_load(&c->mysql_ok));
    pg_prom_counter(out, "pushgate_mysql_errors_total", "MySQL calls that failed.",
                    get(&c->mysql_errors));
    pg_prom_counter(out, "pushgate_mysql_overdue_total",
                    "Requests answered 10503 (try again later) after waiting mysql_wait_ms for "
                    "MySQL.", get(&c->mysql_overdue));
    pg_prom_counter(out, "pushgate_mysql_failovers_total",
                    "Times a MySQL connection moved to the next server of mysql_hosts.",
                    (uint64_t)atomic_load(&c->mysql_where.failovers));
    pg_prom_info(out, "pushgate_mysql_host_info",
                 "1 for the MySQL server (of mysql_hosts) the task workers last reached.", "host",
                 gw_mysql_server());
    pg_prom_gauge(out, "pushgate_draining", "1 while the node stops.", atomic_load(&c->draining));
    pg_prom_counter(out, "pushgate_route_cache_hits_total", "Route cache lookups answered.",
                    get(&rc.hits));
    pg_prom_counter(out, "pushgate_route_cache_misses_total", "Route cache lookups not answered.",
                    get(&rc.misses));
    pg_prom_counter(out, "pushgate_route_cache_invalidations_total",
                    "Route cache entries dropped by announcements.", get(&rc.invalidations));
    pg_prom_counter(out, "pushgate_route_cache_evictions_total",
                    "Route cache entries dropped for room.", get(&rc.evictions));
    pg_prom_counter(out, "pushgate_route_cache_flushes_total",
                    "Times every route cache entry was dropped: the feed came back, or a note "
                    "could not be read.", get(&rc.flushes));
    pg_prom_gauge(out, "pushgate_route_cache_trusted", "1 while the route feed works.",
                  rc.trusted);
    char server[GW_REDIS_SERVER_WORDS * 8];
    gw_route_feed_server(server, sizeof(server));
    pg_prom_info(out, "pushgate_redis_server_info",
                 "The Redis server of the route feed now (with redis_sentinels: the primary "
                 "found), always 1; no sample while the feed is down.", "server", server);
}

static void latency_metrics(struct evbuffer *out, gw_counters *c)
{
    pg_prom_histogram(out, "pushgate_delivery_intake_to_push_seconds",
                      "From a message's intake on this node to its push to a browser here.",
                      &c->intake_to_push);
    pg_prom_histogram(out, "pushgate_delivery_push_to_ack_seconds",
                      "From a push to the browser's ACK of it.", &c->push_to_ack);
    pg_prom_histogram(out, "pushgate_route_lookup_seconds",
                      "Round trip of a route task (a batch of lookups) from a worker.",
                      &c->route_lookup);
    pg_prom_histogram(out, "pushgate_task_queue_wait_seconds",
                      "From a task's send to its start in a task worker.", &c->task_wait);
}

void gw_metrics_text(struct evbuffer *out)
{
    pg_server_stats_t st;
    pg_server_stats(gw.server, &st);
    char node[sizeof(gw.node_id) * 2];
    pg_prom_label_value(node, sizeof(node), gw.node_id);
    pg_prom_head(out, "pushgate_node_info", "gauge", "The node's id (ip:internal_port), always 1.");
    evbuffer_add_printf(out, "pushgate_node_info{node=\"%s\",version=\"%s\"} 1\n", node,
                        PG_VERSION);
    engine_metrics(out, &st);
    message_metrics(out, gw.counters);
    health_metrics(out, gw.counters);
    latency_metrics(out, gw.counters);
}

/* status.c - what this node says about itself.
 *
 * Three readers, one source (the counters in shared memory):
 *   /stats          the figures now, as JSON (gw_status_stats)
 *   the history     worker 0 copies the counters and the latency histograms
 *                   every GW_STATUS_STEP_MS into a ring in shared memory, so
 *                   that orders per second over the last minutes and the
 *                   latency of the last minute can be told by any process,
 *                   and survive the restart of any one of them
 *   daemon_status   a task worker writes the report (figures, history,
 *                   latency window) into the node's row every step, where
 *                   the cluster console of any gateway reads it (admin.c)
 *
 * The ring has one writer.  A sample is written whole before `taken` counts
 * it, and a reader reads only counted samples and at most GW_HISTORY_STEPS of
 * them, so the slot being written is never among them. */
#include "gateway.h"

#include "daemon_status.h"
#include "log.h"
#include "timer.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define LOAD(v) atomic_load_explicit(&(v), memory_order_relaxed)
#define STORE(v, x) atomic_store_explicit(&(v), (x), memory_order_relaxed)

static const char *const series_names[GW_SERIES_COUNT] = {"in", "pushed", "forwarded", "stored",
                                                          "acked"};

const char *gw_status_id(void)
{
    static char id[PG_STATUS_ID_MAX + 1];
    if (!id[0])
        pg_status_id(id, sizeof(id), "gateway", gw.node_id);
    return id;
}

/* ---- /stats ---- */

static json_t *workers_json(const pg_worker_stats *w, int n)
{
    static const char *states[] = {"idle", "busy", "stopping", "exited"};
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_pack("{s:i,s:s,s:I,s:I,s:I}", "pid", (int)w[i].pid, "state",
                                           states[w[i].state & 3], "requests", (json_int_t)w[i].requests,
                                           "queued", (json_int_t)w[i].queued,
                                           "respawns", (json_int_t)w[i].respawns));
    return a;
}

static json_t *route_cache_json(void)
{
    gw_route_cache_stats rc;
    gw_route_cache_stats_get(&rc);
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:b}", "hits", (json_int_t)rc.hits, "misses",
                     (json_int_t)rc.misses, "fills", (json_int_t)rc.fills, "invalidations",
                     (json_int_t)rc.invalidations, "evictions", (json_int_t)rc.evictions,
                     "flushes", (json_int_t)rc.flushes, "trusted", rc.trusted);
}

static json_t *redis_json(void)
{
    char server[GW_REDIS_SERVER_WORDS * 8];
    gw_route_feed_server(server, sizeof(server));
    return json_pack("{s:b,s:b,s:s}", "configured", gw_route_feed_configured(), "ok",
                     atomic_load(&gw.counters->redis_ok), "server", server);
}

/* MySQL as the task workers see it: the last call worked, the failed
 * calls, the server (of mysql_hosts) they last reached, their failovers;
 * and the requests that waited too long for it. */
static json_t *mysql_json(gw_counters *c)
{
    return json_pack("{s:b,s:I,s:s,s:I,s:I}", "ok", atomic_load(&c->mysql_ok), "errors",
                     (json_int_t)atomic_load(&c->mysql_errors), "host", gw_mysql_server(),
                     "failovers", (json_int_t)atomic_load(&c->mysql_where.failovers),
                     "overdue", (json_int_t)atomic_load(&c->mysql_overdue));
}

json_t *gw_status_stats(void)
{
    pg_server_stats_t st;
    pg_server_stats(gw.server, &st);
    gw_counters *c = gw.counters;
    json_t *per_reactor = json_array();
    for (int i = 0; i < st.reactor_num; i++)
        json_array_append_new(per_reactor, json_integer((json_int_t)st.sessions_per_reactor[i]));
    return json_pack(
        "{s:s,s:I,s:I,s:I,s:I,s:I,s:o,s:{s:I,s:I,s:I,s:I},s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I},"
        "s:o,s:o,s:I,s:o,s:o,s:o}",
        "node", gw.node_id, "uptime", (json_int_t)(time(NULL) - st.start_time),
        "connections", (json_int_t)st.connections, "accepted", (json_int_t)st.accepted,
        "closed", (json_int_t)st.closed, "refused", (json_int_t)st.refused,
        "sessions_per_reactor", per_reactor,
        "traffic", "packets_in", (json_int_t)st.packets_in, "packets_out", (json_int_t)st.packets_out,
        "bytes_in", (json_int_t)st.bytes_in, "bytes_out", (json_int_t)st.bytes_out,
        "messages", "in", (json_int_t)c->messages_in, "pushed", (json_int_t)c->pushed,
        "relayed", (json_int_t)c->relayed,
        "forwarded", (json_int_t)c->forwarded, "stored", (json_int_t)c->stored,
        "acked", (json_int_t)c->acked, "redelivered", (json_int_t)c->redelivered,
        "repeats_dropped", (json_int_t)c->repeats,
        "auth_failures", (json_int_t)c->auth_failures, "limited", (json_int_t)c->limited,
        "inbox_refused", (json_int_t)c->inbox_refused,
        "workers", workers_json(st.workers, st.worker_num),
        "task_workers", workers_json(st.task_workers, st.task_worker_num),
        "task_queue", (json_int_t)st.task_queue,
        "mysql", mysql_json(c), "redis", redis_json(), "route_cache", route_cache_json());
}

/* ---- the history ---- */

static void copy_hist(_Atomic uint64_t *to, const pg_prom_hist *h)
{
    for (int b = 0; b <= PG_PROM_BUCKETS; b++)
        STORE(to[b], LOAD(h->bucket[b]));
}

static void sample(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    gw_counters *c = gw.counters;
    gw_history *h = &c->history;
    uint64_t taken = atomic_load(&h->taken);
    gw_sample *s = &h->ring[taken % (GW_HISTORY_STEPS + 1)];
    const _Atomic uint64_t *now[GW_SERIES_COUNT] = {&c->messages_in, &c->pushed, &c->forwarded,
                                                    &c->stored, &c->acked};
    for (int i = 0; i < GW_SERIES_COUNT; i++)
        STORE(s->count[i], LOAD(*now[i]));
    copy_hist(s->intake_to_push, &c->intake_to_push);
    copy_hist(s->push_to_ack, &c->push_to_ack);
    STORE(s->at_ms, pg_wall_ms());
    atomic_store_explicit(&h->taken, taken + 1, memory_order_release);
}

void gw_status_start(int worker_id)
{
    if (worker_id != 0)
        return;
    sample(0, NULL);
    if (pg_timer_tick(GW_STATUS_STEP_MS, sample, NULL) < 0)
        pg_warn("no status timer: the node's history stays empty");
}

/* The k-th sample back from the newest (0: the newest) of n counted ones. */
static const gw_sample *back(const gw_history *h, uint64_t taken, uint64_t k)
{
    return &h->ring[(taken - 1 - k) % (GW_HISTORY_STEPS + 1)];
}

/* Counts per step, oldest first: one array per series. */
static json_t *history_json(const gw_history *h, uint64_t taken)
{
    uint64_t n = taken < GW_HISTORY_STEPS ? taken : GW_HISTORY_STEPS;
    json_t *o = json_pack("{s:i,s:I}", "step_s", GW_STATUS_STEP_MS / 1000, "end",
                          (json_int_t)(n ? LOAD(back(h, taken, 0)->at_ms) / 1000 : 0));
    for (int i = 0; i < GW_SERIES_COUNT; i++) {
        json_t *a = json_array();
        for (uint64_t k = n - 1; n > 1 && k >= 1; k--) {
            uint64_t later = LOAD(back(h, taken, k - 1)->count[i]);
            uint64_t earlier = LOAD(back(h, taken, k)->count[i]);
            json_array_append_new(a, json_integer((json_int_t)(later - earlier)));
        }
        json_object_set_new(o, series_names[i], a);
    }
    return o;
}

static json_t *bucket_deltas(const _Atomic uint64_t *newer, const _Atomic uint64_t *older)
{
    json_t *a = json_array();
    for (int b = 0; b <= PG_PROM_BUCKETS; b++)
        json_array_append_new(a, json_integer((json_int_t)(LOAD(newer[b]) - LOAD(older[b]))));
    return a;
}

/* Per-bucket counts (not cumulative) of the last minute or what there is. */
static json_t *latency_json(const gw_history *h, uint64_t taken)
{
    json_t *bounds = json_array();
    for (int b = 0; b < PG_PROM_BUCKETS; b++)
        json_array_append_new(bounds, json_real(pg_prom_bounds[b]));
    json_t *o = json_pack("{s:o,s:i}", "bounds", bounds, "window_s",
                          GW_LATENCY_WINDOW_STEPS * GW_STATUS_STEP_MS / 1000);
    if (taken < 2)
        return o;
    uint64_t k = taken - 1 < GW_LATENCY_WINDOW_STEPS ? taken - 1 : GW_LATENCY_WINDOW_STEPS;
    const gw_sample *newest = back(h, taken, 0), *oldest = back(h, taken, k);
    json_object_set_new(o, "intake_to_push",
                        bucket_deltas(newest->intake_to_push, oldest->intake_to_push));
    json_object_set_new(o, "push_to_ack", bucket_deltas(newest->push_to_ack, oldest->push_to_ack));
    return o;
}

json_t *gw_status_report(void)
{
    json_t *o = gw_status_stats();
    const gw_history *h = &gw.counters->history;
    uint64_t taken = atomic_load_explicit(&h->taken, memory_order_acquire);
    json_object_set_new(o, "role", json_string("gateway"));
    json_object_set_new(o, "at", json_integer((json_int_t)pg_wall_ms()));
    json_object_set_new(o, "history", history_json(h, taken));
    json_object_set_new(o, "latency", latency_json(h, taken));
    return o;
}

/* ---- the row ---- */

static void write_row(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    pg_db *db = gw_db();
    json_t *report = db ? gw_status_report() : NULL;
    if (report)
        gw_mysql_result(pg_status_write_json(db, gw_status_id(), "gateway", report));
    json_decref(report);
}

void gw_status_start_writer(void)
{
    if (pg_timer_tick(PG_STATUS_EVERY_MS, write_row, NULL) < 0)
        pg_warn("no status timer: the node's row in daemon_status is not written");
}

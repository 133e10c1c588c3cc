/* stats.c - the proxy's counters.
 *
 * Totals live in shared memory (mapped before fork), as atomics, so every
 * worker adds to the same numbers and any worker can report them: worker 0
 * writes a line to the log every stats_interval seconds, and a
 * {"url":"/stats"} request gets them as JSON. */
#include "proxy.h"

#include "log.h"
#include "shm.h"
#include "timer.h"

#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

static int64_t log_timer;

const char *const px_outcome_names[PX_OUTCOMES] = {"delivered", "gone", "refused", "unreachable",
                                                   "busy"};

int px_stats_create(void)
{
    px.counters = pg_shm_alloc(sizeof(*px.counters));
    if (!px.counters)
        pg_error("cannot map the shared counters");
    else
        snprintf(px.counters->nodes[PX_NODES_MAX].node, sizeof(px.counters->nodes[0].node),
                 "other");
    if (px.counters)
        pg_db_share(&px.counters->mysql_where);   /* before the fork: every process counts there */
    return px.counters ? 0 : -1;
}

void px_stats_free(void)
{
    if (px.counters)
        pg_shm_free(px.counters, sizeof(*px.counters));
    px.counters = NULL;
}

static unsigned long long get(_Atomic uint64_t *counter)
{
    return (unsigned long long)atomic_load_explicit(counter, memory_order_relaxed);
}

static void log_line(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    px_counters *c = px.counters;
    pg_info("stats: requests %llu forwarded %llu delivered %llu gone %llu refused %llu "
            "unreachable %llu busy %llu bad_requests %llu",
            get(&c->requests), get(&c->forwarded), get(&c->delivered), get(&c->gone),
            get(&c->refused), get(&c->unreachable), get(&c->busy), get(&c->bad_requests));
}

void px_stats_worker_start(int worker_id)
{
    if (worker_id != 0 || px.cfg.stats_interval <= 0)
        return;
    log_timer = pg_timer_tick((uint32_t)(px.cfg.stats_interval * 1000), log_line, NULL);
    if (log_timer < 0)
        pg_error("cannot start the stats timer");
}

void px_stats_worker_stop(void)
{
    if (log_timer > 0)
        pg_timer_clear(log_timer);
    log_timer = 0;
}

/* A row's state once any claim of it has ended: 0 free, 2 named; 1 when a
 * claim does not end (its process died half way). */
static int settled_state(px_node_counters *r)
{
    int state = atomic_load(&r->state);
    for (int spin = 0; state == 1 && spin < 1000; spin++) {
        sched_yield();
        state = atomic_load(&r->state);
    }
    return state;
}

/* The row of ip:port, claimed on first use.  Two rows of one node would be
 * one series twice in /metrics, so a row another process claims meanwhile
 * (its CAS won) is looked at again rather than passed: it may be this
 * node's.  A claim that never ends sends the count to "other". */
static px_node_counters *node_row(const char *ip, int port)
{
    char node[sizeof(px.counters->nodes[0].node)];
    snprintf(node, sizeof(node), "%s:%d", ip, port);
    uint32_t h = 2166136261u;
    for (const char *p = node; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    px_node_counters *other = &px.counters->nodes[PX_NODES_MAX];
    for (int i = 0; i < PX_NODES_MAX; i++) {
        px_node_counters *r = &px.counters->nodes[(h + (uint32_t)i) % PX_NODES_MAX];
        int state;
        while ((state = settled_state(r)) == 0) {
            int expected = 0;
            if (atomic_compare_exchange_strong(&r->state, &expected, 1)) {
                memcpy(r->node, node, sizeof(node));
                atomic_store(&r->state, 2);
                return r;
            }
        }
        if (state == 1)
            return other;
        if (strcmp(r->node, node) == 0)
            return r;
    }
    return other;
}

void px_stats_outcome(const char *ip, int port, int outcome)
{
    static const size_t totals[PX_OUTCOMES] = {
        offsetof(px_counters, delivered), offsetof(px_counters, gone),
        offsetof(px_counters, refused), offsetof(px_counters, unreachable),
        offsetof(px_counters, busy)};
    if (outcome < 0 || outcome >= PX_OUTCOMES)
        return;
    atomic_fetch_add_explicit((_Atomic uint64_t *)((char *)px.counters + totals[outcome]), 1,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&node_row(ip, port)->n[outcome], 1, memory_order_relaxed);
}

json_t *px_stats_json(void)
{
    px_counters *c = px.counters;
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "requests", (json_int_t)get(&c->requests),
                     "forwarded", (json_int_t)get(&c->forwarded), "delivered",
                     (json_int_t)get(&c->delivered), "gone", (json_int_t)get(&c->gone), "refused",
                     (json_int_t)get(&c->refused), "unreachable", (json_int_t)get(&c->unreachable),
                     "busy", (json_int_t)get(&c->busy), "bad_requests",
                     (json_int_t)get(&c->bad_requests));
}

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

static int64_t log_timer;

int px_stats_create(void)
{
    px.counters = pg_shm_alloc(sizeof(*px.counters));
    if (!px.counters)
        pg_error("cannot map the shared counters");
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

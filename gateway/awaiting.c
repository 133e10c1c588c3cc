/* awaiting.c - workers: what waits for a task worker's answer.
 *
 * A worker keeps route batches (route.c) and messages being stored
 * (store.c) under ids handed out in order, and takes each back when its
 * task's answer names it.  A task worker that dies takes its answers with
 * it, so a sweep every GW_AWAITING_MAX_MS drops what a whole period left
 * unanswered (the senders have timed out and sent again by then).
 *
 * Answers to the tasks of a worker that was replaced (reload, crash)
 * reach the worker after it, so ids start from the clock in milliseconds
 * times 65,536: the new worker's ids are above every id the old one gave
 * out, unless it gave out more than 65,536 a millisecond, and an old answer
 * names nothing here. */
#include "gateway.h"

#include "log.h"
#include "timer.h"

#define GW_AWAITING_MAX_MS 60000

static void sweep(int64_t timer_id, void *arg)
{
    (void)timer_id;
    gw_awaiting *a = arg;
    size_t n = pg_idmap_drop_below(a->map, a->sweep_below, a->drop);
    if (n)
        pg_warn("%zu %s unanswered for %d s dropped (a task worker died?)", n, a->what,
                GW_AWAITING_MAX_MS / 1000);
    a->sweep_below = a->next_id + 1;
}

uint64_t gw_awaiting_put(gw_awaiting *a, void *value)
{
    if (!a->map && !(a->map = pg_idmap_new(64)))
        return 0;
    if (!a->next_id)
        a->next_id = pg_now_ms() << 16;
    if (a->sweep_timer <= 0)
        a->sweep_timer = pg_timer_tick(GW_AWAITING_MAX_MS, sweep, a);
    uint64_t id = ++a->next_id;
    return pg_idmap_put(a->map, id, value) == 0 ? id : 0;
}

void *gw_awaiting_get(gw_awaiting *a, uint64_t id)
{
    return a->map ? pg_idmap_get(a->map, id) : NULL;
}

void *gw_awaiting_take(gw_awaiting *a, uint64_t id)
{
    return a->map ? pg_idmap_remove(a->map, id) : NULL;
}

void gw_awaiting_stop(gw_awaiting *a)
{
    if (a->sweep_timer > 0)
        pg_timer_clear(a->sweep_timer);
    a->sweep_timer = 0;
    pg_idmap_drop_below(a->map, UINT64_MAX, a->drop);
    pg_idmap_free(a->map);
    a->map = NULL;
}

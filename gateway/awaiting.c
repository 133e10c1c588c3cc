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
#include "memory.h"
#include "timer.h"

#include <stdlib.h>
#include <string.h>

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

/* ---- overdue: waited longer than mysql_wait_ms ---- */

static void check_due(int64_t timer_id, void *arg);

static void arm_due(gw_awaiting *a, uint64_t now)
{
    if (a->due_timer > 0 || a->due_head == a->due_n)
        return;
    uint64_t due = a->due[a->due_head].due_ms;
    a->due_timer = pg_timer_after((uint32_t)(due > now ? due - now : 0) + 1, check_due, a);
    if (a->due_timer < 0)
        a->due_timer = 0;
}

/* Ids fall due in the order they were handed out: those due leave the
 * front, and the values still waiting under them are overdue. */
static void check_due(int64_t timer_id, void *arg)
{
    (void)timer_id;
    gw_awaiting *a = arg;
    a->due_timer = 0;
    uint64_t now = pg_now_ms();
    size_t n = 0;
    for (; a->due_head < a->due_n && a->due[a->due_head].due_ms <= now; a->due_head++) {
        void *value = gw_awaiting_take(a, a->due[a->due_head].id);
        if (value) {
            a->overdue(value);
            n++;
        }
    }
    if (a->due_head == a->due_n)
        a->due_head = a->due_n = 0;
    atomic_fetch_add(&gw.counters->mysql_overdue, n);
    if (n)
        pg_log_limited(&a->overdue_log, PG_LOG_WARN,
                       "%zu %s waited over %lld ms for MySQL; their senders try again later",
                       n, a->what, gw.cfg.mysql_wait_ms);
    arm_due(a, now);
}

/* -1: out of memory. */
static int note_due(gw_awaiting *a, uint64_t id)
{
    if (a->due_head > 0 && a->due_n == a->due_cap) {   /* room at the front: slide down */
        memmove(a->due, a->due + a->due_head, (a->due_n - a->due_head) * sizeof(*a->due));
        a->due_n -= a->due_head;
        a->due_head = 0;
    }
    if (pg_grow(&a->due, &a->due_cap, a->due_n, sizeof(*a->due)) < 0)
        return -1;
    uint64_t now = pg_now_ms();
    a->due[a->due_n++] = (gw_due){.id = id, .due_ms = now + (uint64_t)gw.cfg.mysql_wait_ms};
    arm_due(a, now);
    return 0;
}

uint64_t gw_awaiting_put(gw_awaiting *a, void *value)
{
    if (!a->map && !(a->map = pg_idmap_new(64)))
        return 0;
    if (!a->next_id)
        a->first_id = a->next_id = pg_now_ms() << 16;
    if (a->sweep_timer <= 0)
        a->sweep_timer = pg_timer_tick(GW_AWAITING_MAX_MS, sweep, a);
    uint64_t id = ++a->next_id;
    if (pg_idmap_put(a->map, id, value) < 0)
        return 0;
    if (a->overdue && note_due(a, id) < 0) {
        pg_idmap_remove(a->map, id);
        return 0;
    }
    return id;
}

int gw_awaiting_ours(const gw_awaiting *a, uint64_t id)
{
    return a->first_id && id > a->first_id;
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
    if (a->due_timer > 0)
        pg_timer_clear(a->due_timer);
    a->sweep_timer = a->due_timer = 0;
    free(a->due);
    a->due = NULL;
    a->due_head = a->due_n = a->due_cap = 0;
    pg_idmap_drop_below(a->map, UINT64_MAX, a->drop);
    pg_idmap_free(a->map);
    a->map = NULL;
}

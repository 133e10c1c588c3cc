/* timer.c - millisecond timers on the calling thread's libevent loop (see
 * timer.h).
 *
 * Design notes
 *  - Everything is thread-local: the bound event_base, an idmap from timer id
 *    to timer, and the id counter (starting at 1, never reused).  A timer is
 *    only touched by the thread that created it, so there are no locks.
 *  - Each timer owns one libevent timer event (event_new with fd -1):
 *    EV_PERSIST for tick, one-shot for after.  libevent keeps the timeouts.
 *  - A timer may be cleared from inside its own callback (or by another
 *    timer's callback, or by clear_all / bind(NULL) from a callback).  The
 *    timer whose callback is running is never freed under its feet: clearing
 *    it deletes the event, takes it out of the map and marks it; on_fire
 *    frees it once the callback has returned.  An after timer stays in the
 *    map (and in the count) while its callback runs, and leaves afterwards.
 *  - Binding a different base clears the timers of the old one first.
 *  - pg_backoff_ms lives here because every reconnecting client arms its
 *    retry timer with it; its jitter comes from random(). */
#include "timer.h"

#include "idmap.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

typedef struct pg_timer {
    struct event *ev;
    int64_t id;
    pg_timer_fn fn;
    void *arg;
    bool persist;
    bool running;   /* its callback is on the stack */
    bool cleared;   /* cleared while running: on_fire frees it */
} pg_timer;

static _Thread_local struct event_base *tl_base;
static _Thread_local pg_idmap *tl_map;
static _Thread_local int64_t tl_next_id = 1;

static void timer_free(pg_timer *t)
{
    event_free(t->ev); /* also deletes it when pending or active */
    free(t);
}

/* t is already out of the map. */
static void timer_stop(pg_timer *t)
{
    if (t->running) {
        event_del(t->ev);
        t->cleared = true;
    } else {
        timer_free(t);
    }
}

static void on_fire(evutil_socket_t fd, short what, void *p)
{
    (void)fd;
    (void)what;
    pg_timer *t = p;
    t->running = true;
    t->fn(t->id, t->arg);
    t->running = false;
    if (t->cleared) {
        timer_free(t);
    } else if (!t->persist) {
        pg_idmap_remove(tl_map, t->id);
        timer_free(t);
    }
}

static int stop_one(uint64_t id, void *value, void *arg)
{
    (void)id;
    (void)arg;
    timer_stop(value);
    return 0;
}

void pg_timer_clear_all(void)
{
    pg_idmap *m = tl_map;
    if (m == NULL)
        return;
    tl_map = NULL; /* callbacks running now see an empty set */
    pg_idmap_iterate(m, stop_one, NULL);
    pg_idmap_free(m);
}

void pg_timer_bind(struct event_base *base)
{
    if (base == tl_base)
        return;
    pg_timer_clear_all();
    tl_base = base;
}

struct event_base *pg_timer_base(void)
{
    return tl_base;
}

static int64_t add(uint32_t ms, bool persist, pg_timer_fn fn, void *arg)
{
    if (tl_base == NULL || fn == NULL)
        return -1;
    if (tl_map == NULL && (tl_map = pg_idmap_new(16)) == NULL)
        return -1;
    pg_timer *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -1;
    t->ev = event_new(tl_base, -1, persist ? EV_PERSIST : 0, on_fire, t);
    if (t->ev == NULL) {
        free(t);
        return -1;
    }
    t->id = tl_next_id;
    t->fn = fn;
    t->arg = arg;
    t->persist = persist;
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000 };
    if (pg_idmap_put(tl_map, (uint64_t)t->id, t) != 0) {
        timer_free(t);
        return -1;
    }
    if (event_add(t->ev, &tv) != 0) {
        pg_idmap_remove(tl_map, (uint64_t)t->id);
        timer_free(t);
        return -1;
    }
    tl_next_id++;
    return t->id;
}

int64_t pg_timer_tick(uint32_t ms, pg_timer_fn fn, void *arg)
{
    if (ms == 0)
        return -1;
    return add(ms, true, fn, arg);
}

int64_t pg_timer_after(uint32_t ms, pg_timer_fn fn, void *arg)
{
    return add(ms, false, fn, arg);
}

int pg_timer_clear(int64_t timer_id)
{
    if (timer_id <= 0 || tl_map == NULL)
        return -1;
    pg_timer *t = pg_idmap_remove(tl_map, (uint64_t)timer_id);
    if (t == NULL)
        return -1;
    timer_stop(t);
    return 0;
}

int pg_timer_count(void)
{
    return (int)pg_idmap_count(tl_map);
}

uint64_t pg_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t pg_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

unsigned pg_backoff_ms(unsigned n, unsigned max_ms)
{
    unsigned ms = 200;
    for (unsigned i = 1; i < n && ms < max_ms; i++)
        ms *= 2;
    if (ms > max_ms)
        ms = max_ms;
    unsigned jitter = ms / 4;
    if (jitter)
        ms = ms - jitter + (unsigned)(random() % (2 * jitter + 1));
    return ms ? ms : 1;
}

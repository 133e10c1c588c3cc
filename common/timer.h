/* timer.h - millisecond timers on the calling thread's libevent loop.
 *
 * Swoole's tick/after/clear, built on libevent timer events (no timer heap of
 * our own).  Each process or thread that runs a loop binds it once with
 * pg_timer_bind(base); ids are unique within that thread and never 0. */
#ifndef PG_TIMER_H
#define PG_TIMER_H

#include <stdint.h>

struct event_base;

typedef void (*pg_timer_fn)(int64_t timer_id, void *arg);

/* Binds the calling thread's timers to base (NULL unbinds after clearing all). */
void pg_timer_bind(struct event_base *base);
struct event_base *pg_timer_base(void);

/* Calls fn every ms milliseconds until cleared. Returns the id, or -1. */
int64_t pg_timer_tick(uint32_t ms, pg_timer_fn fn, void *arg);
/* Calls fn once after ms milliseconds (then the id is gone). Returns id or -1. */
int64_t pg_timer_after(uint32_t ms, pg_timer_fn fn, void *arg);
/* Stops a timer (also allowed from its own callback). 0, or -1 unknown id. */
int pg_timer_clear(int64_t timer_id);
/* Stops every timer of the calling thread (at shutdown). */
void pg_timer_clear_all(void);
/* Number of active timers of the calling thread. */
int pg_timer_count(void);

/* Milliseconds on the monotonic clock (for durations and deadlines). */
uint64_t pg_now_ms(void);
/* The wall clock in ms since the epoch, for reports read on other hosts. */
uint64_t pg_wall_ms(void);

/* Delay before retrying after the n-th failure in a row (0 counts as 1): 200 ms,
 * doubling up to max_ms, +-25 % so that clients which lost the same server
 * do not all come back in the same millisecond.  Never 0. */
unsigned pg_backoff_ms(unsigned n, unsigned max_ms);

#endif

/* redis_events.h - hiredis's event hooks on a libevent loop, with fewer
 * system calls than hiredis's own adapter (hiredis/adapters/libevent.h).
 *
 * That adapter's read event is one-shot, so every reply costs an epoll_ctl
 * to take the socket out and one to put it back, and every command arms
 * the write event (an epoll_ctl), waits a loop pass for the socket to be
 * writable, writes, and disarms it (another).  Here the read event
 * persists, and the commands of one loop pass are written from the loop
 * in the same pass, at once; the write event is armed only while the
 * socket is full (and while connecting, which hiredis learns from it).
 *
 * Contract: as redisLibeventAttach (REDIS_OK, or REDIS_ERR when something
 * is attached already or memory ran out); the context's cleanup frees
 * what this made. */
#ifndef PG_REDIS_EVENTS_H
#define PG_REDIS_EVENTS_H

#include <event2/event.h>
#include <hiredis/async.h>

int pg_redis_events_attach(redisAsyncContext *ac, struct event_base *base);

#endif

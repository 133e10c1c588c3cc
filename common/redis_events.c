/* redis_events.c - hiredis's event hooks on libevent, written for fewer
 * system calls (see redis_events.h).
 *
 * Design notes
 *  - hiredis asks for writing (addWrite) each time it queues a command.  The
 *    first ask of a loop pass makes flush_ev active, an event with no file
 *    descriptor, which libevent runs later in the same pass: by then the
 *    pass's other commands are queued too, and one write sends them all.
 *  - A flush that cannot write everything makes hiredis ask again while it
 *    writes; only then is the real write event armed, until hiredis says
 *    it is done (delWrite).  `writing` tells those two asks apart.
 *  - redisAsyncHandleRead and redisAsyncHandleWrite may free the context
 *    and with it these events (its cleanup), so nothing here touches them
 *    after either call; `writing` is the thread's, not the context's, and
 *    the cleanup clears it. */
#include "redis_events.h"

#include <stdbool.h>
#include <stdlib.h>

typedef struct {
    redisAsyncContext *ac;
    struct event *read_ev;     /* persistent */
    struct event *write_ev;    /* persistent; added only while the socket is full */
    struct event *flush_ev;    /* no descriptor: made active to write from the loop */
    bool reading, write_armed, want_write;
} redis_events;

/* The context whose redisAsyncHandleWrite runs now on this thread. */
static _Thread_local redis_events *writing;

static void handle_write(redis_events *e)
{
    writing = e;
    redisAsyncHandleWrite(e->ac);   /* may free e */
    writing = NULL;
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    redis_events *e = arg;
    redisAsyncHandleRead(e->ac);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    handle_write(arg);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    redis_events *e = arg;
    if (e->want_write && !e->write_armed)
        handle_write(e);
}

static void add_read(void *arg)
{
    redis_events *e = arg;
    if (!e->reading && event_add(e->read_ev, NULL) == 0)
        e->reading = true;
}

static void del_read(void *arg)
{
    redis_events *e = arg;
    if (e->reading)
        event_del(e->read_ev);
    e->reading = false;
}

static void add_write(void *arg)
{
    redis_events *e = arg;
    e->want_write = true;
    if (e->write_armed)
        return;
    if (writing == e) {
        if (event_add(e->write_ev, NULL) == 0)   /* the socket is full: wait for room */
            e->write_armed = true;
    } else {
        event_active(e->flush_ev, EV_TIMEOUT, 1);
    }
}

static void del_write(void *arg)
{
    redis_events *e = arg;
    e->want_write = false;
    if (e->write_armed)
        event_del(e->write_ev);
    e->write_armed = false;
}

static void cleanup(void *arg)
{
    redis_events *e = arg;
    if (writing == e)
        writing = NULL;
    struct event *evs[] = {e->read_ev, e->write_ev, e->flush_ev};
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
        if (evs[i])
            event_free(evs[i]);
    free(e);
}

int pg_redis_events_attach(redisAsyncContext *ac, struct event_base *base)
{
    if (ac->ev.data)
        return REDIS_ERR;
    redis_events *e = calloc(1, sizeof(*e));
    if (!e)
        return REDIS_ERR;
    e->ac = ac;
    int fd = ac->c.fd;
    e->read_ev = event_new(base, fd, EV_READ | EV_PERSIST, on_read, e);
    e->write_ev = event_new(base, fd, EV_WRITE | EV_PERSIST, on_write, e);
    e->flush_ev = event_new(base, -1, 0, on_flush, e);
    /* hiredis learns that a connect completed from the write event */
    if (!e->read_ev || !e->write_ev || !e->flush_ev || event_add(e->read_ev, NULL) < 0 ||
        event_add(e->write_ev, NULL) < 0) {
        cleanup(e);
        return REDIS_ERR;
    }
    e->reading = e->write_armed = e->want_write = true;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    ac->ev.data = e;
    return REDIS_OK;
}

/* batch.c - workers: every task leaves here; requests of one loop pass
 * travel together.
 *
 * Work orders, chat messages and browser registrations each need MySQL,
 * which only task workers talk to.  One task and a few queries for each of
 * them would cap a node at a few thousand a second (a round trip to a task
 * worker and to MySQL per request), and they come in bursts: the consumer
 * pipelines orders, and browsers reconnect all at once after a node or the
 * network went away.  So a worker collects such requests in a batch while it
 * handles one batch of input and hands each batch to a task worker as one
 * task when the loop pass ends (a 0 ms timer), or earlier when it is full;
 * the task worker runs a few statements for all of them and answers with
 * one result per request (route.c: routing, session.c: registration).
 *
 * A batch that holds (registration) keeps one task in flight: what arrives
 * meanwhile waits for its answer (gw_batch_answered) and then goes as the
 * next task, so the batches grow with the load instead of a burst becoming
 * thousands of one-request tasks.  Should an answer never come (a task
 * worker died), the hold ends after HOLD_MAX_MS.
 *
 * Order: the tasks of one session go to one task worker
 * (gw_task_worker_of(session)), which runs them in the order they were sent.  A
 * batch bound for a task worker is sent, held or not, before any keyed task
 * for that worker, so that, say, the unregister of a browser that closed in
 * the same loop pass never overtakes its registration waiting here. */
#include "gateway.h"

#include "log.h"
#include "memory.h"
#include "timer.h"

#include <stdlib.h>
#include <string.h>

#define HOLD_MAX_MS 1000

static gw_batch *waiting;      /* batches holding requests, oldest first */
static int64_t pass_timer;     /* fires when the loop pass ends */

int gw_task_record(const pg_rec_writer *w, int dst)
{
    int64_t id = pg_rec_written(w) == 0 ? pg_server_task(gw.server, w->data, w->len, dst) : -1;
    if (id < 0)
        pg_error("could not hand a task to a task worker");
    return id < 0 ? -1 : 0;
}

/* Takes b's requests (n = 0: none) and forgets it among the waiting. */
static void **take(gw_batch *b, size_t *n)
{
    void **items = b->items;
    *n = b->n;
    b->items = NULL;
    b->n = b->cap = b->bytes = 0;
    for (gw_batch **p = &waiting; *p; p = &(*p)->next)
        if (*p == b) {
            *p = b->next;
            break;
        }
    b->next = NULL;
    return items;
}

static void end_hold(gw_batch *b)
{
    if (b->hold_timer > 0)
        pg_timer_clear(b->hold_timer);
    b->hold_timer = 0;
}

static void flush(gw_batch *b);

static void hold_over(int64_t timer_id, void *arg)
{
    (void)timer_id;
    gw_batch *b = arg;
    b->hold_timer = 0;
    pg_warn("no answer to a %s task within %d ms; sending the next", b->op, HOLD_MAX_MS);
    flush(b);
}

static void flush_bound_for(int dst);

static void flush(gw_batch *b)
{
    size_t n;
    void **items = take(b, &n);
    if (!n) {
        free(items);
        return;
    }
    if (b->keyed)
        flush_bound_for(b->dst);   /* b is out of the waiting list: not again */
    if (b->send(items, n, b->dst) < 0) {   /* failed: each heard of it */
        pg_error("%zu %s request(s) not handed to a task worker", n, b->op);
    } else if (b->hold) {
        end_hold(b);
        b->hold_timer = pg_timer_after(HOLD_MAX_MS, hold_over, b);
    }
    free(items);
}

static void pass_end(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    pass_timer = 0;
    for (gw_batch *b = waiting; b;) {
        if (b->hold_timer > 0) {
            b = b->next;   /* waits for the answer */
        } else {
            flush(b);
            b = waiting;   /* the list changed: from the start */
        }
    }
}

void gw_batch_add(gw_batch *b, void *item, size_t bytes)
{
    /* A task must stay well inside the IPC message limit. */
    size_t max_bytes = b->max_bytes ? b->max_bytes : gw.server_cfg.package_max_length;
    if (b->n && b->bytes + bytes > max_bytes)
        flush(b);
    if (pg_grow(&b->items, &b->cap, b->n, sizeof(*b->items)) < 0) {
        pg_error("a %s request could not wait for its task", b->op);
        b->fail(&item, 1);
        return;
    }
    if (!b->n) {
        gw_batch **tail = &waiting;
        while (*tail)
            tail = &(*tail)->next;
        *tail = b;
    }
    b->items[b->n++] = item;
    b->bytes += bytes;
    if (b->n >= b->max_items) {
        flush(b);
    } else if (pass_timer <= 0 && b->hold_timer <= 0) {
        pass_timer = pg_timer_after(0, pass_end, NULL);
        if (pass_timer < 0) {
            pass_timer = 0;
            flush(b);
        }
    }
}

void gw_batch_answered(gw_batch *b)
{
    end_hold(b);
    flush(b);
}

void gw_batch_stop(gw_batch *b, int send)
{
    if (send) {
        flush(b);
    } else {
        size_t n;
        void **items = take(b, &n);
        if (n)
            b->fail(items, n);   /* never sent: each hears of it */
        free(items);
    }
    end_hold(b);
    if (!waiting && pass_timer > 0) {
        pg_timer_clear(pass_timer);
        pass_timer = 0;
    }
}

/* Which task worker does what.  MySQL is at times slow to write: under a
 * flood of stores, INSERTs were seen to take over 100 ms on both task
 * workers at once, and every route queued behind them waited as long.  So
 * with two task workers or more, task worker 0 never writes.  Routes, which
 * only read, go to the least busy task worker: task worker 0 whenever the
 * others are held up by writes.  The writers, 1 and up, take each session's
 * tasks (registration, pages, ACKs, unregister: all on one, in order) and
 * the stores, in turn when they belong to no session. */
int gw_task_worker_of(uint64_t session)
{
    static uint64_t turn;
    uint64_t n = (uint64_t)gw.server_cfg.task_worker_num;
    if (n < 2)
        return 0;
    return 1 + (int)((session ? session : ++turn) % (n - 1));
}

/* Every batch waiting for task worker dst goes now, held or not. */
static void flush_bound_for(int dst)
{
    for (gw_batch *b = waiting; dst >= 0 && b;) {
        if (b->dst == dst) {
            flush(b);
            b = waiting;   /* the list changed: from the start */
        } else {
            b = b->next;
        }
    }
}

void gw_task_flush_for(int dst)
{
    flush_bound_for(dst);
}

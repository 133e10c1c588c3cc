/* store_task.c - the store task and its answer as records
 * (common/record.h): their layout is written down, written and read here
 * and nowhere else.  Both start with the head of every task record
 * (gw_task_head, route_task.c).
 *
 * The task, worker -> task worker (GW_TASK_STORE):
 *   head, u8 capped (routed orders: held to max_offline_per_uuid),
 *   u64 keep_away (a session not to push them to again; 0: none), u32 items,
 *   each: str uuid, str msg_id, str payload,
 *         u64 ticket (the routed order it belongs to, store.c; 0: none),
 *         str hint_ip (the node holding the browser when the path to it
 *         was broken; NULL: none), u32 hint_port,
 *         u32 waiters, each: u32 worker, u64 ticket (handoff.c)
 * Its answer, task worker -> worker (GW_TASK_STORED):
 *   head, u32 code, u64 stored,
 *   u32 pushes (sessions here that registered meanwhile: pushed now, the
 *   message marked stored), each: u64 session, str uuid, str msg_id,
 *   str payload, u64 ticket,
 *   u32 waiters, each: u32 worker, u64 ticket,
 *   u32 tickets, each: u64 ticket, u32 items, u32 refused
 *
 * A reader takes a whole record or refuses it: the arrays it fills are
 * sized by what the record can hold, never by a count it states. */
#include "gateway.h"

#include <stdlib.h>

#define STR_MIN 4        /* a NULL string: its length alone */
#define ENTRY_MIN (3 * STR_MIN + 8 + STR_MIN + 4 + 4)
#define WAITER_MIN (4 + 8)
#define PUSH_MIN (8 + 3 * STR_MIN + 8)
#define TICKET_MIN (8 + 4 + 4)

static void waiters_put(pg_rec_writer *w, const gw_waiter *v, size_t n)
{
    pg_rec_put_u32(w, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        pg_rec_put_u32(w, (uint32_t)v[i].worker);
        pg_rec_put_u64(w, v[i].ticket);
    }
}

/* n waiters into v[*used..], at most max in all; 0 or -1 (r then bad). */
static int waiters_get(pg_rec_reader *r, gw_waiter *v, size_t *used, size_t max, uint32_t n)
{
    for (uint32_t i = 0; i < n && pg_rec_read_ok(r); i++) {
        if (*used == max) {
            r->bad = 1;
            break;
        }
        v[*used].worker = (int)pg_rec_u32(r);
        v[(*used)++].ticket = pg_rec_u64(r);
    }
    return pg_rec_read_ok(r) ? 0 : -1;
}

/* ---- the task ---- */

size_t gw_store_task_begin(pg_rec_writer *w, int capped, pg_session_id keep_away)
{
    gw_task_head_put(w, GW_TASK_STORE, pg_prom_now_us(), 0);
    pg_rec_put_u8(w, capped ? 1 : 0);
    pg_rec_put_u64(w, keep_away);
    return pg_rec_put_count(w);
}

void gw_store_task_entry(pg_rec_writer *w, size_t count_at, const gw_store_entry *e)
{
    pg_rec_put_str(w, e->uuid);
    pg_rec_put_str(w, e->msg_id);
    pg_rec_put_str(w, e->payload);
    pg_rec_put_u64(w, e->ticket);
    pg_rec_put_str(w, e->hint_ip);
    pg_rec_put_u32(w, (uint32_t)e->hint_port);
    waiters_put(w, e->waiters, e->nwaiters);
    pg_rec_count_one(w, count_at);
}

int gw_store_task_get(const char *data, size_t len, gw_store_task *t)
{
    pg_rec_reader r = pg_rec_reader_of(data, len);
    *t = (gw_store_task){.head = gw_task_head_get(&r)};
    t->capped = pg_rec_u8(&r);
    t->keep_away = pg_rec_u64(&r);
    t->n = pg_rec_count(&r, ENTRY_MIN);
    size_t waiters_max = r.left / WAITER_MIN, used = 0;
    t->entries = calloc(t->n ? t->n : 1, sizeof(*t->entries));
    t->waiters = calloc(waiters_max ? waiters_max : 1, sizeof(*t->waiters));
    if (!t->entries || !t->waiters) {
        gw_store_task_free(t);
        return -1;
    }
    for (uint32_t i = 0; i < t->n && pg_rec_read_ok(&r); i++) {
        gw_store_entry *e = &t->entries[i];
        e->uuid = pg_rec_str(&r, NULL);
        e->msg_id = pg_rec_str(&r, NULL);
        e->payload = pg_rec_str(&r, NULL);
        e->ticket = pg_rec_u64(&r);
        e->hint_ip = pg_rec_str(&r, NULL);
        e->hint_port = (int)pg_rec_u32(&r);
        e->nwaiters = pg_rec_u32(&r);
        e->waiters = t->waiters + used;
        waiters_get(&r, t->waiters, &used, waiters_max, (uint32_t)e->nwaiters);
        if (!e->uuid || !e->msg_id || !e->payload)
            r.bad = 1;   /* nothing to store */
    }
    if (t->head.op != GW_TASK_STORE || !pg_rec_read_whole(&r)) {
        gw_store_task_free(t);
        return -1;
    }
    return 0;
}

void gw_store_task_free(gw_store_task *t)
{
    free(t->entries);
    free(t->waiters);
    t->entries = NULL;
    t->waiters = NULL;
}

/* ---- its answer ---- */

int gw_stored_put(pg_rec_writer *w, const gw_stored *s)
{
    gw_task_head_put(w, GW_TASK_STORED, 0, 0);
    pg_rec_put_u32(w, (uint32_t)s->code);
    pg_rec_put_u64(w, s->stored);
    pg_rec_put_u32(w, (uint32_t)s->n_pushes);
    for (size_t i = 0; i < s->n_pushes; i++) {
        const gw_store_push *p = &s->pushes[i];
        pg_rec_put_u64(w, p->session);
        pg_rec_put_str(w, p->entry.uuid);
        pg_rec_put_str(w, p->entry.msg_id);
        pg_rec_put_str(w, p->entry.payload);
        pg_rec_put_u64(w, p->entry.ticket);
    }
    waiters_put(w, s->waiters, s->n_waiters);
    pg_rec_put_u32(w, (uint32_t)s->n_tickets);
    for (size_t i = 0; i < s->n_tickets; i++) {
        pg_rec_put_u64(w, s->tickets[i].ticket);
        pg_rec_put_u32(w, s->tickets[i].items);
        pg_rec_put_u32(w, s->tickets[i].refused);
    }
    return pg_rec_written(w);
}

int gw_stored_get(const char *data, size_t len, gw_stored *s)
{
    pg_rec_reader r = pg_rec_reader_of(data, len);
    gw_task_head head = gw_task_head_get(&r);
    *s = (gw_stored){.code = (int)pg_rec_u32(&r), .stored = pg_rec_u64(&r)};
    s->n_pushes = pg_rec_count(&r, PUSH_MIN);
    gw_store_push *pushes = calloc(s->n_pushes ? s->n_pushes : 1, sizeof(*pushes));
    for (size_t i = 0; pushes && i < s->n_pushes; i++) {
        pushes[i].session = pg_rec_u64(&r);
        pushes[i].entry.uuid = pg_rec_str(&r, NULL);
        pushes[i].entry.msg_id = pg_rec_str(&r, NULL);
        pushes[i].entry.payload = pg_rec_str(&r, NULL);
        pushes[i].entry.ticket = pg_rec_u64(&r);
        if (!pushes[i].entry.uuid || !pushes[i].entry.msg_id || !pushes[i].entry.payload)
            r.bad = 1;
    }
    s->pushes = pushes;
    s->n_waiters = pg_rec_count(&r, WAITER_MIN);
    gw_waiter *waiters = calloc(s->n_waiters ? s->n_waiters : 1, sizeof(*waiters));
    size_t used = 0;
    if (waiters)
        waiters_get(&r, waiters, &used, s->n_waiters, (uint32_t)s->n_waiters);
    s->waiters = waiters;
    s->n_tickets = pg_rec_count(&r, TICKET_MIN);
    gw_store_ticket *tickets = calloc(s->n_tickets ? s->n_tickets : 1, sizeof(*tickets));
    for (size_t i = 0; tickets && i < s->n_tickets; i++) {
        tickets[i].ticket = pg_rec_u64(&r);
        tickets[i].items = pg_rec_u32(&r);
        tickets[i].refused = pg_rec_u32(&r);
    }
    s->tickets = tickets;
    if (head.op != GW_TASK_STORED || !pushes || !waiters || !tickets || !pg_rec_read_whole(&r)) {
        gw_stored_free(s);
        return -1;
    }
    return 0;
}

void gw_stored_free(gw_stored *s)
{
    free((void *)s->pushes);
    free((void *)s->waiters);
    free((void *)s->tickets);
    s->pushes = NULL;
    s->waiters = NULL;
    s->tickets = NULL;
}

/* route_task.c - the route task and its answer as records
 * (common/record.h): their layout is written down, written and read here
 * and nowhere else.
 *
 * Every task record starts with the same head (gw_task_head): u8 op, u64
 * t0 (when the worker sent it: the lookup's histograms), u64 t_in (the
 * intake time of the request it serves).
 *
 * The task, worker -> task worker (GW_TASK_ROUTE):
 *   head, u64 batch (names the orders the worker holds: route.c), u32 orders,
 *   each: str chat_token (NULL: a chat message, whose sender signed in),
 *         u8 kind, u64 sender, str msg_id, str to (whom it answers),
 *         u32 items, each: str uuid
 * Its answer, task worker -> worker (GW_TASK_ROUTED):
 *   head (the task's t0 and t_in), u64 batch, u32 orders,
 *   each: u8 kind, u64 sender, str msg_id, str to (echoed: a worker that
 *         replaced the one that asked tells the senders to retry),
 *         u32 code, u32 entries,
 *         each: u32 item (its index in the order), u8 where
 *               (GW_ROUTE_LOCAL, _REMOTE, _NONE), u64 session, u32 port,
 *               str ip, str client_id (remote only; else NULL)
 *
 * A reader checks a whole record before anything acts on it
 * (gw_routed_check), so a malformed one is refused whole rather than
 * half-routed. */
#include "gateway.h"

#include <stdlib.h>
#include <string.h>

#define STR_MIN 4        /* a string's least size: a NULL one, its length alone */
/* the least sizes of a task's order, an answer's order and an entry */
#define ASKED_MIN (3 * STR_MIN + 1 + 8 + 4)
#define ANSWERED_MIN (2 * STR_MIN + 1 + 8 + 4 + 4)
#define ENTRY_MIN (4 + 1 + 8 + 4 + 2 * STR_MIN)

void gw_task_head_put(pg_rec_writer *w, uint8_t op, uint64_t t0, uint64_t t_in)
{
    pg_rec_put_u8(w, op);
    pg_rec_put_u64(w, t0);
    pg_rec_put_u64(w, t_in);
}

gw_task_head gw_task_head_get(pg_rec_reader *r)
{
    gw_task_head h;
    h.op = pg_rec_u8(r);
    h.t0 = pg_rec_u64(r);
    h.t_in = pg_rec_u64(r);
    return h;
}

static void sender_put(pg_rec_writer *w, const gw_route_sender *s)
{
    pg_rec_put_u8(w, (uint8_t)s->kind);
    pg_rec_put_u64(w, s->sender);
    pg_rec_put_str(w, s->msg_id);
    pg_rec_put_str(w, s->to);
}

static gw_route_sender sender_get(pg_rec_reader *r)
{
    gw_route_sender s;
    s.kind = pg_rec_u8(r);
    s.sender = pg_rec_u64(r);
    s.msg_id = pg_rec_str(r, NULL);
    s.to = pg_rec_str(r, NULL);
    return s;
}

/* ---- the task ---- */

int gw_route_task_put(pg_rec_writer *w, uint64_t t0, uint64_t batch, gw_order *const *orders,
                      size_t n)
{
    gw_task_head_put(w, GW_TASK_ROUTE, t0, 0);
    pg_rec_put_u64(w, batch);
    pg_rec_put_u32(w, (uint32_t)n);
    for (size_t o = 0; o < n; o++) {
        const gw_order *order = orders[o];
        gw_route_sender s = {.kind = order->kind, .sender = order->sender,
                             .msg_id = order->msg_id, .to = order->to};
        pg_rec_put_str(w, order->chat_token);
        sender_put(w, &s);
        pg_rec_put_u32(w, (uint32_t)order->n);
        for (size_t i = 0; i < order->n; i++)
            pg_rec_put_str(w, order->items[i].uuid);
    }
    return pg_rec_written(w);
}

int gw_route_task_get(const char *data, size_t len, gw_route_task *t)
{
    pg_rec_reader r = pg_rec_reader_of(data, len);
    *t = (gw_route_task){.head = gw_task_head_get(&r)};
    t->batch = pg_rec_u64(&r);
    t->n = pg_rec_count(&r, ASKED_MIN);
    /* every uuid takes STR_MIN bytes at least: the record bounds their count */
    size_t uuids_max = r.left / STR_MIN;
    t->orders = calloc(t->n ? t->n : 1, sizeof(*t->orders));
    t->uuids = calloc(uuids_max ? uuids_max : 1, sizeof(*t->uuids));
    if (!t->orders || !t->uuids) {
        gw_route_task_free(t);
        return -1;
    }
    size_t used = 0;
    for (uint32_t o = 0; o < t->n && pg_rec_read_ok(&r); o++) {
        gw_route_ask *a = &t->orders[o];
        a->chat_token = pg_rec_str(&r, NULL);
        a->sender = sender_get(&r);
        a->n = pg_rec_count(&r, STR_MIN);
        a->uuids = t->uuids + used;
        for (uint32_t i = 0; i < a->n && pg_rec_read_ok(&r); i++) {
            if (used == uuids_max)
                r.bad = 1;   /* more than the record can hold */
            else
                t->uuids[used++] = pg_rec_str(&r, NULL);
        }
    }
    if (t->head.op != GW_TASK_ROUTE || !pg_rec_read_whole(&r)) {
        gw_route_task_free(t);
        return -1;
    }
    return 0;
}

void gw_route_task_free(gw_route_task *t)
{
    free(t->orders);
    free(t->uuids);
    t->orders = NULL;
    t->uuids = NULL;
}

/* ---- its answer ---- */

void gw_routed_begin(pg_rec_writer *w, const gw_route_task *t)
{
    gw_task_head_put(w, GW_TASK_ROUTED, t->head.t0, t->head.t_in);
    pg_rec_put_u64(w, t->batch);
    pg_rec_put_u32(w, t->n);
}

size_t gw_routed_order(pg_rec_writer *w, const gw_route_ask *a, int code)
{
    sender_put(w, &a->sender);
    pg_rec_put_u32(w, (uint32_t)code);
    return pg_rec_put_count(w);
}

void gw_routed_entry(pg_rec_writer *w, size_t count_at, const gw_route_entry *e)
{
    pg_rec_put_u32(w, e->item);
    pg_rec_put_u8(w, e->where);
    pg_rec_put_u64(w, e->session);
    pg_rec_put_u32(w, (uint32_t)e->port);
    pg_rec_put_str(w, e->where == GW_ROUTE_REMOTE ? e->ip : NULL);
    pg_rec_put_str(w, e->where == GW_ROUTE_REMOTE ? e->client_id : NULL);
    pg_rec_count_one(w, count_at);
}

int gw_routed_head(pg_rec_reader *r, gw_task_head *head, uint64_t *batch, uint32_t *n)
{
    *head = gw_task_head_get(r);
    *batch = pg_rec_u64(r);
    *n = pg_rec_count(r, ANSWERED_MIN);
    return head->op == GW_TASK_ROUTED && pg_rec_read_ok(r) ? 0 : -1;
}

uint32_t gw_routed_order_get(pg_rec_reader *r, gw_route_sender *s, int *code)
{
    *s = sender_get(r);
    *code = (int)pg_rec_u32(r);
    return pg_rec_count(r, ENTRY_MIN);
}

gw_route_entry gw_routed_entry_get(pg_rec_reader *r)
{
    gw_route_entry e;
    e.item = pg_rec_u32(r);
    e.where = pg_rec_u8(r);
    e.session = pg_rec_u64(r);
    e.port = (int)pg_rec_u32(r);
    e.ip = pg_rec_str(r, NULL);
    e.client_id = pg_rec_str(r, NULL);
    if (e.where > GW_ROUTE_NONE || (e.where == GW_ROUTE_REMOTE && (!e.ip || !e.client_id)))
        r->bad = 1;
    return e;
}

int gw_routed_check(const char *data, size_t len)
{
    pg_rec_reader r = pg_rec_reader_of(data, len);
    gw_task_head head;
    uint64_t batch;
    uint32_t n;
    if (gw_routed_head(&r, &head, &batch, &n) < 0)
        return -1;
    for (uint32_t o = 0; o < n && pg_rec_read_ok(&r); o++) {
        gw_route_sender s;
        int code;
        uint32_t entries = gw_routed_order_get(&r, &s, &code);
        for (uint32_t e = 0; e < entries && pg_rec_read_ok(&r); e++)
            gw_routed_entry_get(&r);
    }
    return pg_rec_read_whole(&r) ? 0 : -1;
}

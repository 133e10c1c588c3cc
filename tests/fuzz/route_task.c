/* route_task.c - fuzzes the route task's records (gateway/route_task.c):
 * the task a worker sends and the answer a task worker gives, as bytes of
 * any shape.
 *
 * Checked: a task that reads is answered (one entry of each kind per
 * order) with a record that gw_routed_check accepts and that reads back
 * to the same senders, codes and entries; any input gw_routed_check
 * accepts reads to its end with every string inside the input; anything
 * else is refused, never read past its end (ASan). */
#include "../../gateway/gateway.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

gw_context gw;                     /* gateway/main.c's; nothing here reads it */

static void same_str(const char *a, const char *b)
{
    if ((a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0))
        abort();
}

static void inside(const char *s, const uint8_t *data, size_t size)
{
    if (s && (s < (const char *)data || s + strlen(s) >= (const char *)data + size))
        abort();
}

/* Reads an accepted answer to its end. */
static void walk_answer(const uint8_t *data, size_t size)
{
    pg_rec_reader r = pg_rec_reader_of((const char *)data, size);
    gw_task_head head;
    uint64_t batch;
    uint32_t n;
    if (gw_routed_head(&r, &head, &batch, &n) < 0)
        abort();
    for (uint32_t o = 0; o < n; o++) {
        gw_route_sender s;
        int code;
        uint32_t entries = gw_routed_order_get(&r, &s, &code);
        inside(s.msg_id, data, size);
        inside(s.to, data, size);
        for (uint32_t e = 0; e < entries; e++) {
            gw_route_entry en = gw_routed_entry_get(&r);
            if (en.where == GW_ROUTE_REMOTE && (!en.ip || !en.client_id))
                abort();
            inside(en.ip, data, size);
            inside(en.client_id, data, size);
        }
    }
    if (!pg_rec_read_ok(&r) || r.left)
        abort();
}

/* Answers a task that reads and checks the answer reads back the same. */
static void answer_task(const gw_route_task *t)
{
    pg_rec_writer w = {0};
    gw_routed_begin(&w, t);
    for (uint32_t o = 0; o < t->n; o++) {
        size_t at = gw_routed_order(&w, &t->orders[o], (int)o);
        for (uint32_t i = 0; i < t->orders[o].n; i++) {
            const char *uuid = t->orders[o].uuids[i];
            gw_route_entry e = {.item = i, .where = i % 3, .session = i, .port = 9501,
                                .ip = "10.0.0.2", .client_id = uuid ? uuid : ""};
            gw_routed_entry(&w, at, &e);
        }
    }
    if (pg_rec_written(&w) < 0 || gw_routed_check(w.data, w.len) < 0)
        abort();
    pg_rec_reader r = pg_rec_reader_of(w.data, w.len);
    gw_task_head head;
    uint64_t batch;
    uint32_t n;
    if (gw_routed_head(&r, &head, &batch, &n) < 0 || batch != t->batch || n != t->n ||
        head.t0 != t->head.t0)
        abort();
    for (uint32_t o = 0; o < n; o++) {
        gw_route_sender s;
        int code;
        uint32_t entries = gw_routed_order_get(&r, &s, &code);
        same_str(s.msg_id, t->orders[o].sender.msg_id);
        same_str(s.to, t->orders[o].sender.to);
        if (code != (int)o || entries != t->orders[o].n || s.sender != t->orders[o].sender.sender)
            abort();
        for (uint32_t e = 0; e < entries; e++) {
            gw_route_entry en = gw_routed_entry_get(&r);
            if (en.item != e || en.where != e % 3)
                abort();
        }
    }
    pg_rec_writer_free(&w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gw_route_task t;
    if (gw_route_task_get((const char *)data, size, &t) == 0) {
        for (uint32_t o = 0; o < t.n; o++) {
            inside(t.orders[o].chat_token, data, size);
            for (uint32_t i = 0; i < t.orders[o].n; i++)
                inside(t.orders[o].uuids[i], data, size);
        }
        answer_task(&t);
        gw_route_task_free(&t);
    }
    if (gw_routed_check((const char *)data, size) == 0)
        walk_answer(data, size);
    return 0;
}

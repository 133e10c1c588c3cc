/* store_task.c - fuzzes the store task's records (gateway/store_task.c):
 * the task a worker sends and the answer a task worker gives, as bytes of
 * any shape.
 *
 * Checked: a task that reads has every string inside the input, and an
 * answer made of it (each entry pushed once, its waiters, a ticket each)
 * reads back the same; any input read as an answer has every string inside
 * the input; anything else is refused, never read past its end (ASan). */
#include "../../gateway/gateway.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

gw_context gw;                     /* gateway/main.c's; nothing here reads it */

static void inside(const char *s, const uint8_t *data, size_t size)
{
    if (s && (s < (const char *)data || s + strlen(s) >= (const char *)data + size))
        abort();
}

static void same_entry(const gw_store_entry *a, const gw_store_entry *b)
{
    if (strcmp(a->uuid, b->uuid) || strcmp(a->msg_id, b->msg_id) ||
        strcmp(a->payload, b->payload) || a->ticket != b->ticket)
        abort();
}

static void answer_task(const gw_store_task *t)
{
    gw_store_push *pushes = calloc(t->n + 1, sizeof(*pushes));
    gw_store_ticket *tickets = calloc(t->n + 1, sizeof(*tickets));
    size_t n_waiters = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        pushes[i] = (gw_store_push){.session = i, .entry = t->entries[i]};
        tickets[i] = (gw_store_ticket){.ticket = t->entries[i].ticket, .items = 1, .refused = i % 2};
        n_waiters += t->entries[i].nwaiters;
    }
    gw_stored s = {.code = 3, .stored = t->n, .n_pushes = t->n, .pushes = pushes,
                   .n_waiters = n_waiters, .waiters = t->waiters, .n_tickets = t->n,
                   .tickets = tickets};
    pg_rec_writer w = {0};
    gw_stored back;
    if (gw_stored_put(&w, &s) < 0 || gw_stored_get(w.data, w.len, &back) < 0)
        abort();
    if (back.code != 3 || back.stored != t->n || back.n_pushes != t->n ||
        back.n_waiters != n_waiters || back.n_tickets != t->n)
        abort();
    for (uint32_t i = 0; i < t->n; i++) {
        same_entry(&back.pushes[i].entry, &t->entries[i]);
        if (back.pushes[i].session != i || back.tickets[i].refused != i % 2)
            abort();
    }
    for (size_t i = 0; i < n_waiters; i++)
        if (back.waiters[i].worker != t->waiters[i].worker ||
            back.waiters[i].ticket != t->waiters[i].ticket)
            abort();
    gw_stored_free(&back);
    pg_rec_writer_free(&w);
    free(pushes);
    free(tickets);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gw_store_task t;
    if (gw_store_task_get((const char *)data, size, &t) == 0) {
        for (uint32_t i = 0; i < t.n; i++) {
            inside(t.entries[i].uuid, data, size);
            inside(t.entries[i].msg_id, data, size);
            inside(t.entries[i].payload, data, size);
            inside(t.entries[i].hint_ip, data, size);
        }
        answer_task(&t);
        gw_store_task_free(&t);
    }
    gw_stored s;
    if (gw_stored_get((const char *)data, size, &s) == 0) {
        for (size_t i = 0; i < s.n_pushes; i++) {
            inside(s.pushes[i].entry.uuid, data, size);
            inside(s.pushes[i].entry.msg_id, data, size);
            inside(s.pushes[i].entry.payload, data, size);
        }
        gw_stored_free(&s);
    }
    return 0;
}

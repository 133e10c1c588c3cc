/* session_task.c - fuzzes the sessions' task records
 * (gateway/session_task.c): registrations, offline pages, their answers,
 * ACK deletes, uuid lists and token checks, as bytes of any shape.
 *
 * Checked: whatever reads has every string inside the input, and the same
 * fields written again read back the same; anything else is refused, never
 * read past its end (ASan). */
#include "../../gateway/gateway.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

gw_context gw;                     /* gateway/main.c's; nothing here reads it */

static const uint8_t *input;
static size_t input_size;

static void inside(const char *s)
{
    if (s && (s < (const char *)input || s + strlen(s) >= (const char *)input + input_size))
        abort();
}

static void same(const char *a, const char *b)
{
    if (strcmp(a, b) != 0)
        abort();
}

static void sessions(const char *data, size_t size)
{
    gw_sessions_task t;
    if (gw_sessions_task_get(data, size, &t) < 0)
        return;
    gw_session_ref **v = calloc(t.n + 1, sizeof(*v));
    for (uint32_t i = 0; i < t.n; i++) {
        inside(t.sessions[i].uuid);
        inside(t.sessions[i].client_id);
        v[i] = &t.sessions[i];
    }
    pg_rec_writer w = {0};
    gw_sessions_task back;
    if (gw_sessions_task_put(&w, t.head.op, v, t.n) < 0 ||
        gw_sessions_task_get(w.data, w.len, &back) < 0 || back.n != t.n)
        abort();
    for (uint32_t i = 0; i < t.n; i++) {
        same(back.sessions[i].uuid, t.sessions[i].uuid);
        same(back.sessions[i].client_id, t.sessions[i].client_id);
        if (back.sessions[i].session != t.sessions[i].session ||
            back.sessions[i].again != t.sessions[i].again)
            abort();
    }
    gw_sessions_task_free(&back);
    pg_rec_writer_free(&w);
    gw_sessions_task_free(&t);
    free(v);
}

static void same_page(const gw_page *a, const gw_page *b)
{
    same(a->uuid, b->uuid);
    if (a->session != b->session || a->code != b->code || a->again != b->again ||
        a->online != b->online || a->more != b->more || a->after != b->after || a->n != b->n)
        abort();
    for (uint32_t k = 0; k < a->n; k++) {
        same(a->messages[k].msg_id, b->messages[k].msg_id);
        same(a->messages[k].payload, b->messages[k].payload);
    }
}

static void pages(const char *data, size_t size)
{
    gw_pages t;
    if (gw_pages_get(data, size, &t) < 0)
        return;
    pg_rec_writer w = {0};
    size_t count_at = gw_pages_begin(&w, t.head.op, t.task_worker);
    for (uint32_t i = 0; i < t.n; i++) {
        gw_page *p = &t.pages[i];
        inside(p->uuid);
        pg_rec_writer messages = {0};
        for (uint32_t k = 0; k < p->n; k++) {
            inside(p->messages[k].msg_id);
            inside(p->messages[k].payload);
            gw_page_message_put(&messages, p->messages[k].msg_id, strlen(p->messages[k].msg_id),
                                p->messages[k].payload, strlen(p->messages[k].payload));
        }
        gw_pages_put(&w, count_at, p, &messages);
        pg_rec_writer_free(&messages);
    }
    gw_pages back;
    if (pg_rec_written(&w) < 0 || gw_pages_get(w.data, w.len, &back) < 0 || back.n != t.n ||
        back.task_worker != t.task_worker)
        abort();
    for (uint32_t i = 0; i < t.n; i++)
        same_page(&back.pages[i], &t.pages[i]);
    gw_pages_free(&back);
    pg_rec_writer_free(&w);
    gw_pages_free(&t);
}

static void page_asked(const char *data, size_t size)
{
    gw_task_head head;
    gw_page ask, back;
    if (gw_page_task_get(data, size, &head, &ask) < 0)
        return;
    inside(ask.uuid);
    pg_rec_writer w = {0};
    if (gw_page_task_put(&w, ask.session, ask.uuid, ask.after, ask.online) < 0 ||
        gw_page_task_get(w.data, w.len, &head, &back) < 0)
        abort();
    same(back.uuid, ask.uuid);
    if (back.session != ask.session || back.after != ask.after || back.online != ask.online)
        abort();
    pg_rec_writer_free(&w);
}

static void acks(const char *data, size_t size)
{
    gw_ack_ref *v, *back;
    uint32_t n, n_back;
    if (gw_acks_task_get(data, size, &v, &n) < 0)
        return;
    gw_ack_ref **refs = calloc(n + 1, sizeof(*refs));
    for (uint32_t i = 0; i < n; i++) {
        inside(v[i].uuid);
        inside(v[i].msg_id);
        refs[i] = &v[i];
    }
    pg_rec_writer w = {0};
    if (gw_acks_task_put(&w, refs, n) < 0 || gw_acks_task_get(w.data, w.len, &back, &n_back) < 0 ||
        n_back != n)
        abort();
    for (uint32_t i = 0; i < n; i++) {
        same(back[i].uuid, v[i].uuid);
        same(back[i].msg_id, v[i].msg_id);
    }
    free(back);
    pg_rec_writer_free(&w);
    free(refs);
    free(v);
}

static void uuids(const char *data, size_t size)
{
    const char **v, **back;
    uint32_t n, n_back;
    if (gw_uuids_get(data, size, &v, &n) < 0)
        return;
    for (uint32_t i = 0; i < n; i++)
        inside(v[i]);
    pg_rec_writer w = {0};
    if (gw_uuids_put(&w, (uint8_t)data[0], v, n) < 0 ||
        gw_uuids_get(w.data, w.len, &back, &n_back) < 0 || n_back != n)
        abort();
    for (uint32_t i = 0; i < n; i++)
        same(back[i], v[i]);
    free(back);
    pg_rec_writer_free(&w);
    free(v);
}

static void token(const char *data, size_t size)
{
    gw_token_check t, back;
    if (gw_token_task_get(data, size, &t) < 0)
        return;
    inside(t.chat_token);
    pg_rec_writer w = {0};
    if (gw_token_task_put(&w, &t) < 0 || gw_token_task_get(w.data, w.len, &back) < 0)
        abort();
    same(back.chat_token, t.chat_token);
    if (back.request != t.request || back.code != t.code || back.head.t_in != t.head.t_in)
        abort();
    pg_rec_writer_free(&w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input = data;
    input_size = size;
    const char *d = (const char *)data;
    sessions(d, size);
    pages(d, size);
    page_asked(d, size);
    acks(d, size);
    uuids(d, size);
    token(d, size);
    return 0;
}

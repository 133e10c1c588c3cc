/* session_task.c - the sessions' tasks and their answers as records
 * (common/record.h): their layout is written down, written and read here
 * and nowhere else.  Each starts with the head of every task record
 * (gw_task_head, route_task.c).
 *
 * Registrations and unregistrations, worker -> task worker
 * (GW_TASK_REGISTER, GW_TASK_UNREGISTER):
 *   head, u32 sessions, each: u64 session, str uuid, str client_id, u8 again
 * A page of a session's stored messages asked for (GW_TASK_PAGE):
 *   head, u64 session, str uuid, i64 after, u8 online
 * The answers to both, task worker -> worker (GW_TASK_REGISTERED,
 * GW_TASK_PAGED):
 *   head, u32 task_worker, u32 pages,
 *   each: u64 session, str uuid, u32 code, u8 again, u8 online, u8 more,
 *         i64 after, u32 messages, each: str msg_id, str payload
 * The stored copies of acknowledged messages to delete (GW_TASK_ACK, no
 * answer):
 *   head, u32 acks, each: str uuid, str msg_id
 * Lists of uuids: those whose sessions closed (GW_TASK_UNREGISTERED), those
 * other nodes stored messages for while the path here was broken
 * (GW_TASK_REDELIVER, the answer to GW_TASK_REDELIVERIES, a head alone):
 *   head, u32 uuids, each: str uuid
 * A chat_token to check (GW_TASK_TOKEN) and the verdict (GW_TASK_TOKEN_CHECKED):
 *   head (t_in: the request's intake time), u64 request (what the worker
 *   holds it under), str chat_token, u32 code (the verdict; 0 in the task)
 *
 * A reader takes a whole record or refuses it: the arrays it fills are
 * sized by what the record can hold, never by a count it states. */
#include "gateway.h"

#include <stdlib.h>
#include <string.h>

#define STR_MIN 4        /* a NULL string: its length alone */
#define SESSION_MIN (8 + 2 * STR_MIN + 1)
#define PAGE_MIN (8 + STR_MIN + 4 + 3 + 8 + 4)
#define MESSAGE_MIN (2 * STR_MIN)
#define ACK_MIN (2 * STR_MIN)

/* One allocation holding the struct and copies of its strings. */
static void *with_strings(size_t size, const char *a, const char *b, char **a_copy,
                          char **b_copy)
{
    size_t alen = strlen(a) + 1, blen = strlen(b) + 1;
    char *v = malloc(size + alen + blen);
    if (!v)
        return NULL;
    *a_copy = memcpy(v + size, a, alen);
    *b_copy = memcpy(v + size + alen, b, blen);
    return v;
}

/* ---- registrations and unregistrations ---- */

gw_session_ref *gw_session_ref_new(pg_session_id session, const char *uuid,
                                   const char *client_id, int again)
{
    char *u, *c;
    gw_session_ref *s = with_strings(sizeof(*s), uuid, client_id, &u, &c);
    if (s)
        *s = (gw_session_ref){.session = session, .uuid = u, .client_id = c, .again = again};
    return s;
}

int gw_sessions_task_put(pg_rec_writer *w, uint8_t op, gw_session_ref *const *v, size_t n)
{
    gw_task_head_put(w, op, pg_prom_now_us(), 0);
    pg_rec_put_u32(w, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        pg_rec_put_u64(w, v[i]->session);
        pg_rec_put_str(w, v[i]->uuid);
        pg_rec_put_str(w, v[i]->client_id);
        pg_rec_put_u8(w, v[i]->again ? 1 : 0);
    }
    return pg_rec_written(w);
}

int gw_sessions_task_get(const char *data, size_t len, gw_sessions_task *t)
{
    pg_rec_reader r = pg_rec_reader_of(data, len);
    *t = (gw_sessions_task){.head = gw_task_head_get(&r)};
    t->n = pg_rec_count(&r, SESSION_MIN);
    t->sessions = calloc(t->n ? t->n : 1, sizeof(*t->sessions));
    for (uint32_t i = 0; t->sessions && i < t->n; i++) {
        gw_session_ref *s = &t->sessions[i];
        s->session = pg_rec_u64(&r);
        s->uuid = pg_rec_str(&r, NULL);
        s->client_id = pg_rec_str(&r, NULL);
        s->again = pg_rec_u8(&r) != 0;
        if (!s->uuid || !s->client_id)
            r.bad = 1;
    }
    if (t->sessions && pg_rec_read_whole(&r))
        return 0;
    gw_sessions_task_free(t);
    return -1;
}

void gw_sessions_task_free(gw_sessions_task *t)
{
    free(t->sessions);
    t->sessions = NULL;
    t->n = 0;
}

/* ---- pages of stored messages ---- */

int gw_page_task_put(pg_rec_writer *w, pg_session_id session, const char *uuid, int64_t after,
                     int online)
{
    gw_task_head_put(w, GW_TASK_PAGE, pg_prom_now_us(), 0);
    pg_rec_put_u64(w, session);
    pg_rec_put_str(w, uuid);
    pg_rec_put_i64(w, after);
    pg_rec_put_u8(w, online ? 1 : 0);
    return pg_rec_written(w);
}

int gw_page_task_get(const char *data, size_t len, gw_task_head *head, gw_page *ask)
{
    pg_rec_reader r = pg_rec_reader_of(data, len);
    *head = gw_task_head_get(&r);
    *ask = (gw_page){.session = pg_rec_u64(&r)};
    ask->uuid = pg_rec_str(&r, NULL);
    ask->after = pg_rec_i64(&r);
    ask->online = pg_rec_u8(&r) != 0;
    return ask->uuid && pg_rec_read_whole(&r) ? 0 : -1;
}

void gw_page_message_put(pg_rec_writer *messages, const char *msg_id, size_t id_len,
                         const char *payload, size_t payload_len)
{
    pg_rec_put_strn(messages, msg_id, id_len);
    pg_rec_put_strn(messages, payload, payload_len);
}

size_t gw_pages_begin(pg_rec_writer *w, uint8_t op, int task_worker)
{
    gw_task_head_put(w, op, pg_prom_now_us(), 0);
    pg_rec_put_u32(w, (uint32_t)task_worker);
    return pg_rec_put_count(w);
}

void gw_pages_put(pg_rec_writer *w, size_t count_at, const gw_page *p,
                  const pg_rec_writer *messages)
{
    pg_rec_put_u64(w, p->session);
    pg_rec_put_str(w, p->uuid ? p->uuid : "");
    pg_rec_put_u32(w, (uint32_t)p->code);
    pg_rec_put_u8(w, p->again ? 1 : 0);
    pg_rec_put_u8(w, p->online ? 1 : 0);
    pg_rec_put_u8(w, p->more ? 1 : 0);
    pg_rec_put_i64(w, p->after);
    pg_rec_put_u32(w, p->n);
    if (messages)
        pg_rec_put_part(w, messages);
    pg_rec_count_one(w, count_at);
}

/* A page's messages into t->messages[*used..]; 0 or -1 (r then bad). */
static int page_messages_get(pg_rec_reader *r, gw_pages *t, size_t *used, size_t max, gw_page *p)
{
    p->n = pg_rec_count(r, MESSAGE_MIN);
    p->messages = t->messages + *used;
    for (uint32_t i = 0; i < p->n && pg_rec_read_ok(r); i++) {
        if (*used == max) {
            r->bad = 1;
            break;
        }
        gw_page_message *m = &t->messages[(*used)++];
        m->msg_id = pg_rec_str(r, NULL);
        m->payload = pg_rec_str(r, NULL);
        if (!m->msg_id || !m->payload)
            r->bad = 1;
    }
    return pg_rec_read_ok(r) ? 0 : -1;
}

int gw_pages_get(const char *data, size_t len, gw_pages *t)
{
    pg_rec_reader r = pg_rec_reader_of(data, len);
    *t = (gw_pages){.head = gw_task_head_get(&r)};
    t->task_worker = (int)pg_rec_u32(&r);
    t->n = pg_rec_count(&r, PAGE_MIN);
    size_t max_messages = r.left / MESSAGE_MIN, used = 0;
    t->pages = calloc(t->n ? t->n : 1, sizeof(*t->pages));
    t->messages = calloc(max_messages ? max_messages : 1, sizeof(*t->messages));
    for (uint32_t i = 0; t->pages && t->messages && i < t->n && pg_rec_read_ok(&r); i++) {
        gw_page *p = &t->pages[i];
        p->session = pg_rec_u64(&r);
        p->uuid = pg_rec_str(&r, NULL);
        p->code = (int)pg_rec_u32(&r);
        p->again = pg_rec_u8(&r) != 0;
        p->online = pg_rec_u8(&r) != 0;
        p->more = pg_rec_u8(&r) != 0;
        p->after = pg_rec_i64(&r);
        if (!p->uuid || page_messages_get(&r, t, &used, max_messages, p) < 0)
            r.bad = 1;
    }
    if (t->pages && t->messages && pg_rec_read_whole(&r))
        return 0;
    gw_pages_free(t);
    return -1;
}

void gw_pages_free(gw_pages *t)
{
    free(t->pages);
    free(t->messages);
    t->pages = NULL;
    t->messages = NULL;
    t->n = 0;
}

/* ---- acknowledged messages ---- */

gw_ack_ref *gw_ack_ref_new(const char *uuid, const char *msg_id)
{
    char *u, *m;
    gw_ack_ref *a = with_strings(sizeof(*a), uuid, msg_id, &u, &m);
    if (a)
        *a = (gw_ack_ref){.uuid = u, .msg_id = m};
    return a;
}

int gw_acks_task_put(pg_rec_writer *w, gw_ack_ref *const *v, size_t n)
{
    gw_task_head_put(w, GW_TASK_ACK, pg_prom_now_us(), 0);
    pg_rec_put_u32(w, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        pg_rec_put_str(w, v[i]->uuid);
        pg_rec_put_str(w, v[i]->msg_id);
    }
    return pg_rec_written(w);
}

int gw_acks_task_get(const char *data, size_t len, gw_ack_ref **v, uint32_t *n)
{
    pg_rec_reader r = pg_rec_reader_of(data, len);
    gw_task_head_get(&r);
    *n = pg_rec_count(&r, ACK_MIN);
    *v = calloc(*n ? *n : 1, sizeof(**v));
    for (uint32_t i = 0; *v && i < *n; i++) {
        (*v)[i].uuid = pg_rec_str(&r, NULL);
        (*v)[i].msg_id = pg_rec_str(&r, NULL);
        if (!(*v)[i].uuid || !(*v)[i].msg_id)
            r.bad = 1;
    }
    if (*v && pg_rec_read_whole(&r))
        return 0;
    free(*v);
    *v = NULL;
    *n = 0;
    return -1;
}

/* ---- lists of uuids ---- */

int gw_uuids_put(pg_rec_writer *w, uint8_t op, const char *const *uuids, size_t n)
{
    gw_task_head_put(w, op, pg_prom_now_us(), 0);
    pg_rec_put_u32(w, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        pg_rec_put_str(w, uuids[i]);
    return pg_rec_written(w);
}

int gw_uuids_get(const char *data, size_t len, const char ***uuids, uint32_t *n)
{
    pg_rec_reader r = pg_rec_reader_of(data, len);
    gw_task_head_get(&r);
    *n = pg_rec_count(&r, STR_MIN);
    *uuids = calloc(*n ? *n : 1, sizeof(**uuids));
    for (uint32_t i = 0; *uuids && i < *n; i++)
        if (!((*uuids)[i] = pg_rec_str(&r, NULL)))
            r.bad = 1;
    if (*uuids && pg_rec_read_whole(&r))
        return 0;
    free(*uuids);
    *uuids = NULL;
    *n = 0;
    return -1;
}

/* ---- token checks ---- */

int gw_token_task_put(pg_rec_writer *w, const gw_token_check *t)
{
    gw_task_head_put(w, t->head.op, t->head.t0, t->head.t_in);
    pg_rec_put_u64(w, t->request);
    pg_rec_put_str(w, t->chat_token);
    pg_rec_put_u32(w, (uint32_t)t->code);
    return pg_rec_written(w);
}

int gw_token_task_get(const char *data, size_t len, gw_token_check *t)
{
    pg_rec_reader r = pg_rec_reader_of(data, len);
    t->head = gw_task_head_get(&r);
    t->request = pg_rec_u64(&r);
    t->chat_token = pg_rec_str(&r, NULL);
    t->code = (int)pg_rec_u32(&r);
    return t->chat_token && pg_rec_read_whole(&r) ? 0 : -1;
}

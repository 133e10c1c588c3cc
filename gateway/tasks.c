/* tasks.c - task workers: everything that talks to MySQL.
 *
 * Each task is a record (route_task.c, store_task.c, session_task.c, and
 * admin.c for the operators' cluster view); the
 * answer (pg_server_finish) carries back what the asking worker needs.  A failed
 * query answers with code PG_ERR_INTERNAL so that the sender can retry: no
 * work order is acknowledged that was not handed off. */
#include "gateway.h"

#include "db_health.h"
#include "utf8.h"
#include "log.h"
#include "memory.h"
#include "timer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IN_BATCH 256          /* uuids per SELECT ... IN (...), a power of two */
#define ROWS_MAX 64           /* rows per multi-row statement, a power of two */
#define SLOW_TASK_MS 100   /* a task this long is logged */
#define BIG_TASK_BYTES (32 * 1024)

/* ---- MySQL's health: an outage is logged once, not once a task ---- */

static pg_db_health mysql_health;

const char *gw_mysql_server(void)
{
    int at = atomic_load(&gw.counters->mysql_where.host);
    return at >= 0 && at < gw.mysql_hosts.n ? gw.mysql_hosts.v[at].text : "";
}

/* Records how a call went (err: why no connection could be made, when
 * gw.db is NULL); returns rc. */
static long long db_result(long long rc, const char *err)
{
    if (rc >= 0) {
        pg_db_health_ok(&mysql_health);
    } else {
        pg_db_health_failed(&mysql_health, gw.db, err);
        atomic_fetch_add(&gw.counters->mysql_errors, 1);
    }
    atomic_store(&gw.counters->mysql_ok, !mysql_health.down);
    return rc;
}

long long gw_mysql_result(long long rc)
{
    return db_result(rc, NULL);
}

int gw_mysql_failure_code(void)
{
    return mysql_health.down ? PG_ERR_UNAVAILABLE : PG_ERR_INTERNAL;
}

pg_db *gw_db(void)
{
    if (gw.db)
        return gw.db;
    char err[256];
    gw.db = pg_db_connect(&gw.mysql, 3, 10, err, sizeof(err));
    db_result(gw.db ? 0 : -1, err);
    return gw.db;
}

/* Each statement is its own transaction.  Two task workers writing
 * offline_messages at once can deadlock (an offline page's UPDATE locks
 * index records past its uuid's range, up to the next uuid's, whose ACK
 * DELETE holds its row), and so can two gateways on two Galera nodes
 * (a certification conflict); the statement was rolled back whole and
 * pg_db_exec runs it again after a short backoff (db.h), so an ACK is not
 * lost and a batch of registrations does not fail.  Every write here is
 * safe to run twice (db.h): REPLACE by primary key, DELETE, UPDATE to a
 * value, INSERT IGNORE on a unique key. */
static int exec_sql(const char *sql, const pg_db_value *params, int n)
{
    if (!gw_db())
        return -1;
    return (int)gw_mysql_result(pg_db_exec(gw.db, sql, params, n, NULL, NULL));
}

static int first_int(void *arg, const pg_db_value *cols, int ncols)
{
    *(int *)arg = ncols > 0 && cols[0].type == PG_DB_INT && cols[0].i != 0;
    return 0;
}

/* -1: the database failed; 0: unknown or disabled; 1: valid. */
static int token_valid(const char *token)
{
    int cached = gw_token_cached(token);
    if (cached >= 0)
        return cached;
    if (!gw_db())
        return -1;
    int enabled = 0;
    pg_db_value p = PG_DB_STR_VALUE(token);
    long long rows = gw_mysql_result(pg_db_query(gw.db, "SELECT enabled FROM apps WHERE chat_token = ?",
                                                 &p, 1, first_int, &enabled));
    if (rows < 0)
        return -1;
    gw_token_remember(token, rows > 0 && enabled);
    return rows > 0 && enabled;
}

#define FIXED_MAX 2

/* Runs `head IN (?,...) tail` for list[0..n), IN_BATCH at a time, after
 * the fixed parameters first[0..fixed); fn sees every row of a SELECT, or
 * (fn NULL) the statement is a write.  0 or -1. */
static int run_in_strings(const char *head, const char *tail, const pg_db_value *first, int fixed,
                          const char *const *list, size_t n, pg_db_row_fn fn, void *arg)
{
    if (fixed > FIXED_MAX)
        return -1;
    for (size_t from = 0; from < n; from += IN_BATCH) {
        size_t count = n - from < IN_BATCH ? n - from : IN_BATCH;
        /* The list is padded to a power of two with its last string, so a
         * few prepared statements serve every batch size instead of each
         * size being prepared again (a round trip and server work each time). */
        size_t padded = 1;
        while (padded < count)
            padded *= 2;
        char sql[256 + IN_BATCH * 2];
        int len = snprintf(sql, sizeof(sql), "%s IN (", head);
        pg_db_value params[FIXED_MAX + IN_BATCH];
        for (int k = 0; k < fixed; k++)
            params[k] = first[k];
        for (size_t k = 0; k < padded; k++) {
            params[fixed + k] = PG_DB_STR_VALUE(list[from + (k < count ? k : count - 1)]);
            len += snprintf(sql + len, sizeof(sql) - (size_t)len, k ? ",?" : "?");
        }
        snprintf(sql + len, sizeof(sql) - (size_t)len, ")%s", tail);
        int nparams = fixed + (int)padded;
        if (!fn) {
            if (exec_sql(sql, params, nparams) < 0)
                return -1;
        } else if (gw_mysql_result(pg_db_query(gw.db, sql, params, nparams, fn, arg)) < 0) {
            return -1;
        }
    }
    return 0;
}

/* ---- storing ---- */

/* INSERT IGNORE of (uuid, msg_id, payload) objects: a message already stored
 * for that uuid (a redelivery) is kept once. Returns rows handed to MySQL, or -1. */
/* Rows for the next multi-row statement: the largest power of two at most
 * left and ROWS_MAX.  So there are only a few distinct statements, which
 * all stay prepared in the connection's cache (a statement per row count
 * would evict and prepare again all the time), and any number of rows
 * takes at most log2(ROWS_MAX) + 1 statements. */
static size_t rows_next(size_t left)
{
    size_t rows = ROWS_MAX;
    while (rows > left)
        rows /= 2;
    return rows;
}

/* Runs head followed by one parenthesized group of cols placeholders for
 * each of rows rows, with params in row order.  0 or -1. */
static int exec_rows(const char *head, int cols, size_t rows, const pg_db_value *params)
{
    char sql[160 + ROWS_MAX * 16];   /* up to 7 columns a row */
    size_t len = (size_t)snprintf(sql, sizeof(sql), "%s", head);
    for (size_t r = 0; r < rows && len + 2 * (size_t)cols + 2 < sizeof(sql); r++) {
        sql[len++] = r ? ',' : ' ';
        sql[len++] = '(';
        for (int c = 0; c < cols; c++) {
            if (c)
                sql[len++] = ',';
            sql[len++] = '?';
        }
        sql[len++] = ')';
    }
    sql[len] = '\0';
    return exec_sql(sql, params, (int)rows * cols);
}

static long long store_rows(const gw_store_entry *const *items, size_t n)
{
    for (size_t from = 0, count; from < n; from += count) {
        count = rows_next(n - from);
        pg_db_value params[ROWS_MAX * 3];
        for (size_t i = 0; i < count; i++) {
            params[3 * i] = PG_DB_STR_VALUE(items[from + i]->uuid);
            params[3 * i + 1] = PG_DB_STR_VALUE(items[from + i]->msg_id);
            params[3 * i + 2] = PG_DB_STR_VALUE(items[from + i]->payload);
        }
        if (exec_rows("INSERT IGNORE INTO offline_messages (uuid, msg_id, payload) VALUES", 3, count,
                      params) < 0)
            return -1;
    }
    atomic_fetch_add(&gw.counters->stored, n);
    return (long long)n;
}

/* A uuid stored for while another node holds its browser: that node reads
 * these rows and delivers (redeliver.c). */
typedef struct {
    const char *uuid, *ip;
    int port;
} redelivery;

/* 0 or -1. */
static int note_redeliveries(const redelivery *v, size_t n)
{
    int rc = 0;
    for (size_t from = 0, count; rc == 0 && from < n; from += count) {
        count = rows_next(n - from);
        pg_db_value params[ROWS_MAX * 3];
        for (size_t k = 0; k < count; k++) {
            params[3 * k] = PG_DB_STR_VALUE(v[from + k].ip);
            params[3 * k + 1] = PG_DB_INT_VALUE(v[from + k].port);
            params[3 * k + 2] = PG_DB_STR_VALUE(v[from + k].uuid);
        }
        rc = exec_rows("INSERT IGNORE INTO redeliveries (node_ip, node_port, uuid) VALUES", 3, count,
                       params);
    }
    return rc;
}

/* Items stored because the path to the node holding their browser was
 * broken name that node (their hint); it delivers them.  0 or -1. */
static int note_hinted(const gw_store_entry *const *items, size_t n)
{
    redelivery *v = malloc((n ? n : 1) * sizeof(*v));
    size_t count = 0;
    for (size_t i = 0; v && i < n; i++)
        if (items[i]->hint_ip)
            v[count++] = (redelivery){items[i]->uuid, items[i]->hint_ip, items[i]->hint_port};
    int rc = v ? note_redeliveries(v, count) : -1;
    free(v);
    return rc;
}

/* ---- counts by uuid ---- */

static int by_string(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    return x && y ? strcmp(x, y) : (x != NULL) - (y != NULL);
}

/* uuids[0..n) sorted, without NULLs or repeats; returns how many are left. */
static size_t distinct(const char **uuids, size_t n)
{
    qsort(uuids, n, sizeof(*uuids), by_string);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (uuids[i] && (k == 0 || strcmp(uuids[k - 1], uuids[i]) != 0))
            uuids[k++] = uuids[i];
    return k;
}

/* A uuid's stored messages, as counted. */
typedef struct {
    const char *uuid;
    long long n;
} uuid_count;

typedef struct {
    uuid_count *v;
    size_t n;
} uuid_counts;

static uuid_count *count_of(const uuid_counts *c, const char *uuid, size_t len)
{
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strncmp(c->v[mid].uuid, uuid, len);
        if (cmp == 0 && c->v[mid].uuid[len] != '\0')
            cmp = 1;
        if (cmp == 0)
            return &c->v[mid];
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int count_row(void *arg, const pg_db_value *cols, int ncols)
{
    uuid_count *c = ncols == 2 && cols[0].type == PG_DB_STRING && cols[1].type == PG_DB_INT
                        ? count_of(arg, cols[0].s, cols[0].len)
                        : NULL;
    if (c)
        c->n = cols[1].i;
    return 0;
}

/* The counts of uuids[0..n) (distinct) by `head` IN (...) GROUP BY uuid, a
 * SELECT of uuid and a count: into counts (free its v); 0 or -1. */
static int count_uuids(const char *const *uuids, size_t n, const char *head, uuid_counts *counts)
{
    *counts = (uuid_counts){.v = malloc((n ? n : 1) * sizeof(uuid_count))};
    for (size_t i = 0; counts->v && i < n; i++)
        counts->v[counts->n++] = (uuid_count){uuids[i], 0};
    return !counts->v ? -1 : run_in_strings(head, " GROUP BY uuid", NULL, 0, uuids, n, count_row,
                                             counts);
}

/* ---- sessions ---- */

/* Stored messages go out in pages that fit a task result: a browser with a
 * large backlog gets them page after page, oldest first.  The pages of a
 * batch of registrations share the budget of one (spent: bytes of the
 * pages before); a page that does not fit whole is left for later (empty,
 * more, after 0), so a browser's pages are the same whatever its batch. */
typedef struct {
    pg_rec_writer messages;          /* gw_page_message_put */
    uint32_t n;
    size_t bytes, spent;
    long long last_id;
    int more;
} offline_page;

static int collect_offline(void *arg, const pg_db_value *cols, int ncols)
{
    offline_page *p = arg;
    if (ncols < 3 || cols[0].type != PG_DB_INT || cols[1].type != PG_DB_STRING ||
        cols[2].type != PG_DB_STRING)
        return 0;
    if (p->bytes > 0 && p->bytes + cols[2].len > gw.server_cfg.package_max_length) {
        p->more = 1;
        return 1;
    }
    gw_page_message_put(&p->messages, cols[1].s, cols[1].len, cols[2].s, cols[2].len);
    p->n++;
    p->bytes += cols[2].len + cols[1].len;
    p->last_id = cols[0].i;
    return 0;
}

#define OFFLINE_PAGE_ROWS 500

/* Leaves the page for later: it does not fit the answer. */
static void defer_page(offline_page *p, long long after)
{
    p->messages.len = 0;
    p->n = 0;
    p->bytes = 0;
    p->last_id = after;
    p->more = 1;
}

/* One page of uuid's stored messages after id `after`, marked delivered. */
static int read_offline_page(const char *uuid, long long after, offline_page *p)
{
    size_t budget = gw.server_cfg.package_max_length;
    p->last_id = after;
    if (p->spent >= budget) {
        defer_page(p, after);
        return 0;
    }
    pg_db_value q[] = {PG_DB_STR_VALUE(uuid), PG_DB_INT_VALUE(after)};
    long long rows = pg_db_query(gw.db, "SELECT id, msg_id, payload FROM offline_messages "
                                        "WHERE uuid = ? AND id > ? AND acked_at IS NULL "
                                        "ORDER BY id LIMIT 500", q, 2, collect_offline, p);
    if (rows < 0)
        return -1;
    if (rows == OFFLINE_PAGE_ROWS)
        p->more = 1;
    if (p->spent > 0 && p->spent + p->bytes > budget)
        defer_page(p, after);
    if (p->n == 0)
        return 0;
    pg_db_value upto[] = {PG_DB_STR_VALUE(uuid), PG_DB_INT_VALUE(after), PG_DB_INT_VALUE(p->last_id)};
    return exec_sql("UPDATE offline_messages SET delivered_at = CURRENT_TIMESTAMP(3) "
                    "WHERE uuid = ? AND id > ? AND id <= ? AND delivered_at IS NULL", upto, 3);
}

/* The answer's page for `asked` (session, uuid, again, online): p, or
 * (p NULL) none. */
static void put_page(pg_rec_writer *w, size_t count_at, gw_page asked, int code,
                     const offline_page *p)
{
    asked.code = code;
    asked.more = p && p->more;
    asked.after = p ? p->last_id : 0;
    asked.n = p ? p->n : 0;
    gw_pages_put(w, count_at, &asked, p ? &p->messages : NULL);
}

static void finish_record(pg_rec_writer *w, const char *what)
{
    if (pg_rec_written(w) < 0 || pg_server_finish(gw.server, w->data, w->len) < 0)
        pg_error("could not answer a %s task", what);
    pg_rec_writer_free(w);
}

/* The sessions' online_clients rows, in statements of rows_next rows.  0 or -1. */
static int replace_online(const gw_sessions_task *t)
{
    for (size_t from = 0, count; from < t->n; from += count) {
        count = rows_next(t->n - from);
        pg_db_value params[ROWS_MAX * 5];
        for (size_t i = 0; i < count; i++) {
            const gw_session_ref *s = &t->sessions[from + i];
            pg_db_value *row = params + 5 * i;
            row[0] = PG_DB_STR_VALUE(s->client_id);
            row[1] = PG_DB_STR_VALUE(s->uuid);
            row[2] = PG_DB_STR_VALUE(gw.node_ip);
            row[3] = PG_DB_INT_VALUE(gw.cfg.internal_port);
            row[4] = PG_DB_INT_VALUE((long long)s->session);
        }
        if (exec_rows("REPLACE INTO online_clients (client_id, uuid, node_ip, node_port, session_id) "
                      "VALUES", 5, count, params) < 0)
            return -1;
    }
    return 0;
}

/* The task's uuids, distinct and sorted (free it); NULL when out of memory. */
static const char **session_uuids(const gw_sessions_task *t, size_t *n)
{
    const char **uuids = malloc((t->n ? t->n : 1) * sizeof(*uuids));
    for (size_t i = 0; uuids && i < t->n; i++)
        uuids[i] = t->sessions[i].uuid;
    *n = uuids ? distinct(uuids, t->n) : 0;
    return uuids;
}

/* Which of the sessions' uuids have stored messages: those with a count
 * of 1 in *waiting (free its v).  Only whether a uuid has any matters, so
 * the query selects 1, as SELECT DISTINCT uuid did, rather than COUNT(*). */
static int find_waiting(const char **uuids, size_t n, uuid_counts *waiting)
{
    return count_uuids(uuids, n, "SELECT uuid, 1 FROM offline_messages "
                                 "WHERE acked_at IS NULL AND uuid", waiting);
}

static void warm_routes(const char **uuids, size_t n, gw_route_mark mark);   /* below */

/* The sessions' pages: their first, for those of waiting; every session
 * hears code (PG_ERR_INTERNAL: a failed batch, whose sessions browser.c
 * closes with 1011 and whose unregister removes the rows they may have
 * got).  0, or -1 when MySQL failed on the way. */
static int put_first_pages(pg_rec_writer *w, const gw_sessions_task *t,
                           const uuid_counts *waiting, int code)
{
    size_t count_at = gw_pages_begin(w, GW_TASK_REGISTERED, pg_server_worker_id(gw.server));
    size_t spent = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        const gw_session_ref *s = &t->sessions[i];
        gw_page asked = {.session = s->session, .uuid = s->uuid, .again = s->again};
        offline_page page = {.spent = spent};
        uuid_count *c = code == PG_OK ? count_of(waiting, s->uuid, strlen(s->uuid)) : NULL;
        int rc = c && c->n > 0 ? read_offline_page(s->uuid, 0, &page) : 0;
        spent += page.bytes;
        put_page(w, count_at, asked, code, code == PG_OK ? &page : NULL);
        pg_rec_writer_free(&page.messages);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Registrations of one loop pass (session.c): every session's
 * online_clients row, one query for which of their uuids have stored
 * messages, and the first page only for those.  One result per session, in
 * one answer. */
static void op_register(const char *data, size_t len)
{
    gw_sessions_task t;
    if (gw_sessions_task_get(data, len, &t) < 0) {
        pg_error("a malformed registration task of %zu bytes", len);
        return;
    }
    gw_route_mark mark = gw_route_cache_mark();
    uuid_counts waiting = {0};
    size_t n = 0;
    const char **uuids = session_uuids(&t, &n);
    int ok = uuids && gw_db() && replace_online(&t) == 0 && find_waiting(uuids, n, &waiting) == 0;
    if (ok)
        warm_routes(uuids, n, mark);
    pg_rec_writer w = {0};
    if (!ok || put_first_pages(&w, &t, &waiting, PG_OK) < 0) {
        pg_rec_writer_free(&w);
        w = (pg_rec_writer){0};
        put_first_pages(&w, &t, NULL, PG_ERR_INTERNAL);
    }
    finish_record(&w, "registration");
    free(waiting.v);
    free(uuids);
    gw_sessions_task_free(&t);
}

static void op_offline_page(const char *data, size_t len)
{
    gw_task_head head;
    gw_page asked;
    if (gw_page_task_get(data, len, &head, &asked) < 0) {
        pg_error("a malformed offline page task of %zu bytes", len);
        return;
    }
    offline_page page = {0};
    int code = gw_db() && read_offline_page(asked.uuid, asked.after, &page) == 0 ? PG_OK
                                                                               : PG_ERR_INTERNAL;
    pg_rec_writer w = {0};
    put_page(&w, gw_pages_begin(&w, GW_TASK_PAGED, pg_server_worker_id(gw.server)), asked, code,
             code == PG_OK ? &page : NULL);
    pg_rec_writer_free(&page.messages);
    finish_record(&w, "offline page");
}

/* The rows of a loop pass's closed sessions go in one statement (per
 * IN_BATCH); the worker then announces their uuids to every node. */
static void op_unregister(const char *data, size_t len)
{
    gw_sessions_task t;
    if (gw_sessions_task_get(data, len, &t) < 0) {
        pg_error("a malformed unregistration task of %zu bytes", len);
        return;
    }
    const char **client_ids = malloc((t.n ? t.n : 1) * sizeof(*client_ids));
    for (uint32_t i = 0; client_ids && i < t.n; i++)
        client_ids[i] = t.sessions[i].client_id;
    if (client_ids && t.n > 0 && gw_db())
        run_in_strings("DELETE FROM online_clients WHERE client_id", "", NULL, 0, client_ids, t.n,
                       NULL, NULL);
    free(client_ids);
    size_t n = 0;
    const char **uuids = session_uuids(&t, &n);
    pg_rec_writer w = {0};
    gw_uuids_put(&w, GW_TASK_UNREGISTERED, uuids, n);
    finish_record(&w, "unregistration");
    free(uuids);
    gw_sessions_task_free(&t);
}

/* The stored copies of acknowledged messages (session.c): {uuid, msg_id}
 * each, deleted with one statement per uuid (a session's ACKs share it). */
static int by_ack_uuid(const void *a, const void *b)
{
    return strcmp(((const gw_ack_ref *)a)->uuid, ((const gw_ack_ref *)b)->uuid);
}

static void op_ack(const char *data, size_t len)
{
    gw_ack_ref *acks;
    uint32_t n;
    if (gw_acks_task_get(data, len, &acks, &n) < 0) {
        pg_error("a malformed ACK task of %zu bytes", len);
        return;
    }
    qsort(acks, n, sizeof(*acks), by_ack_uuid);
    const char **ids = malloc((n ? n : 1) * sizeof(*ids));
    for (uint32_t from = 0, to; ids && from < n && gw_db(); from = to) {
        size_t count = 0;
        for (to = from; to < n && strcmp(acks[to].uuid, acks[from].uuid) == 0; to++)
            ids[count++] = acks[to].msg_id;
        pg_db_value u = PG_DB_STR_VALUE(acks[from].uuid);
        run_in_strings("DELETE FROM offline_messages WHERE uuid = ? AND msg_id", "", &u, 1, ids,
                       count, NULL, NULL);
    }
    free(ids);
    free(acks);
}

/* ---- routing ---- */

/* A row of online_clients; text holds the three strings. */
typedef struct {
    const char *uuid, *client_id, *ip;
    int port;
    long long session;
    size_t seq;          /* its place in the answer, among its uuid's rows */
    char *text;
} route_row;

/* The rows of a lookup, by uuid (sorted once the lookup is done). */
typedef struct {
    route_row *v;
    size_t n, cap;
} route_rows;

static void route_rows_free(route_rows *rows)
{
    for (size_t i = 0; i < rows->n; i++)
        free(rows->v[i].text);
    free(rows->v);
    *rows = (route_rows){0};
}

#define CLIENT_ID_MAX 128   /* online_clients.client_id */
#define NODE_IP_MAX 64

/* A column to keep: a string of at most max bytes of UTF-8. */
static int text_column(const pg_db_value *c, size_t max)
{
    return c->type == PG_DB_STRING && c->len <= max && gw_utf8_valid(c->s, c->len);
}

/* A row of online_clients.  The table is shared with other writers (the
 * seed's PHP gateways), so a row is checked like any input: one whose uuid
 * no order can name (too long, not UTF-8), or whose node or client_id
 * could not be sent on, is skipped. */
static int collect_route(void *arg, const pg_db_value *c, int ncols)
{
    route_rows *r = arg;
    if (ncols < 5 || !text_column(&c[0], CLIENT_ID_MAX) || !text_column(&c[1], PG_UUID_MAX) ||
        !text_column(&c[2], NODE_IP_MAX) || c[3].type != PG_DB_INT || c[4].type != PG_DB_INT) {
        pg_warn("online_clients: a malformed row is skipped");
        return 0;
    }
    if (pg_grow(&r->v, &r->cap, r->n, sizeof(*r->v)) < 0)
        return 1;
    char *text = malloc(c[0].len + c[1].len + c[2].len + 3);
    if (!text)
        return 1;
    route_row *row = &r->v[r->n];
    *row = (route_row){.port = (int)c[3].i, .session = c[4].i, .seq = r->n, .text = text};
    const pg_db_value *cols[] = {&c[1], &c[0], &c[2]};
    const char **into[] = {&row->uuid, &row->client_id, &row->ip};
    for (int k = 0; k < 3; k++) {
        memcpy(text, cols[k]->s, cols[k]->len);
        text[cols[k]->len] = '\0';
        *into[k] = text;
        text += cols[k]->len + 1;
    }
    r->n++;
    return 0;
}

static int by_uuid(const void *a, const void *b)
{
    const route_row *x = a, *y = b;
    int c = strcmp(x->uuid, y->uuid);
    return c ? c : (x->seq > y->seq) - (x->seq < y->seq);
}

/* Where every uuid of uuids[0..*n) is connected: one query per IN_BATCH
 * of them.  The list is made distinct on the way (*n: how many are left). */
static int lookup_routes(const char **uuids, size_t *n, route_rows *rows)
{
    *n = distinct(uuids, *n);
    int rc = *n ? run_in_strings("SELECT client_id, uuid, node_ip, node_port, session_id "
                                 "FROM online_clients WHERE uuid", "", NULL, 0, uuids, *n,
                                 collect_route, rows)
                : 0;
    if (rows->n)
        qsort(rows->v, rows->n, sizeof(*rows->v), by_uuid);
    return rc;
}

/* Called for each target of a uuid: a row of online_clients, local when
 * the session is on this node. */
typedef void (*target_fn)(const route_row *row, int local, void *arg);

static int row_is_local(const route_row *row)
{
    return strcmp(row->ip, gw.node_ip) == 0 && row->port == gw.cfg.internal_port;
}

/* Calls fn for each target of uuid: its sessions here that are still open,
 * still that uuid and not keep_away (none while this node stops: their rows
 * are about to go), and its clients on other nodes.  Returns how many. */
static size_t each_target(const route_rows *rows, const char *uuid, long long keep_away,
                          target_fn fn, void *arg)
{
    size_t lo = 0, hi = rows->n, reached = 0;
    while (lo < hi) {   /* the first row of uuid */
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(rows->v[mid].uuid, uuid) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t t = lo; t < rows->n && strcmp(rows->v[t].uuid, uuid) == 0; t++) {
        const route_row *row = &rows->v[t];
        int local = row_is_local(row);
        if (local && (row->session == keep_away || atomic_load(&gw.counters->draining) ||
                      !gw_session_is((pg_session_id)row->session, uuid)))
            continue;
        fn(row, local, arg);
        reached++;
    }
    return reached;
}

/* What a recheck of stored items finds: pushes for the asking worker, and
 * nodes to tell. */
typedef struct {
    const gw_store_entry *item;
    gw_store_push *pushes;
    size_t n_pushes, cap_pushes;
    redelivery *hints;
    size_t n_hints, cap_hints;
    int failed;        /* out of memory: some were left out */
} recheck;

/* A stored message's session here gets it now, marked stored; its ticket
 * tells the worker whom it reached (store.c).  A session on another node
 * is hinted to that node. */
static void push_stored(const route_row *row, int local, void *arg)
{
    recheck *rc = arg;
    if (local && pg_grow(&rc->pushes, &rc->cap_pushes, rc->n_pushes, sizeof(*rc->pushes)) == 0)
        rc->pushes[rc->n_pushes++] = (gw_store_push){.session = (pg_session_id)row->session,
                                                    .entry = *rc->item};
    else if (!local && pg_grow(&rc->hints, &rc->cap_hints, rc->n_hints, sizeof(*rc->hints)) == 0)
        rc->hints[rc->n_hints++] = (redelivery){rc->item->uuid, row->ip, row->port};
    else
        rc->failed = 1;
}

/* A browser that registered between the lookup and the store (or whose
 * route was stale: a cached one, a lookup a moment old) may have read its
 * offline messages before the store's insert: look again.  Its sessions
 * here get the message now (pushes, at most max each of items[0..n) may
 * have); those on other nodes are named to their node (redeliveries),
 * which sends it to them.  The message stays stored and the push says so,
 * so the browser's ACK deletes it; a session that has it already is not
 * sent it again (push_record.c).  Returns the pushes (free them) and their
 * count in *n_pushes; NULL when there are none or the lookup failed. */
static gw_store_push *recheck_stored(const gw_store_entry *const *items, size_t n,
                                     long long keep_away, size_t *n_pushes)
{
    *n_pushes = 0;
    route_rows rows = {0};
    const char **uuids = malloc((n ? n : 1) * sizeof(*uuids));
    size_t nu = n;
    for (size_t i = 0; uuids && i < n; i++)
        uuids[i] = items[i]->uuid;
    if (!uuids || lookup_routes(uuids, &nu, &rows) < 0 || rows.n == 0) {
        free(uuids);
        route_rows_free(&rows);
        return NULL;
    }
    recheck rc = {0};
    for (size_t i = 0; i < n; i++) {
        rc.item = items[i];
        each_target(&rows, items[i]->uuid, keep_away, push_stored, &rc);
    }
    if (rc.failed)   /* stored all the same: delivered at the next connect */
        pg_error("out of memory: stored messages not offered to browsers that just connected");
    if (rc.n_hints > 0 && note_redeliveries(rc.hints, rc.n_hints) < 0)
        pg_error("could not tell other nodes of stored messages for their browsers");
    free(rc.hints);
    free(uuids);
    route_rows_free(&rows);
    *n_pushes = rc.n_pushes;
    return rc.pushes;
}

/* The refused count of ticket, in tickets[0..*n) (added when new). */
static gw_store_ticket *ticket_of(gw_store_ticket *tickets, size_t *n, uint64_t ticket)
{
    for (size_t i = *n; i > 0; i--)   /* a task's items come ticket by ticket */
        if (tickets[i - 1].ticket == ticket)
            return &tickets[i - 1];
    tickets[*n] = (gw_store_ticket){.ticket = ticket};
    return &tickets[(*n)++];
}

/* Routed messages for a uuid holding max_offline_per_uuid stored ones
 * already are refused, not stored: a flood to one agent (a chat tab, a
 * runaway producer) cannot grow its inbox without bound.  Keeps in
 * kept[0..) the items to store and returns how many, counting the rest in
 * their tickets' refused; -1 when MySQL failed.  What a session gives back
 * (it was accepted before) is never refused. */
static long long within_inbox_cap(const gw_store_task *t, const gw_store_entry **kept,
                                  gw_store_ticket *tickets, size_t *n_tickets)
{
    long long cap = gw.cfg.max_offline_per_uuid, n = 0;
    const char **uuids = malloc((t->n ? t->n : 1) * sizeof(*uuids));
    uuid_counts counts = {0};
    for (size_t i = 0; uuids && i < t->n; i++)
        uuids[i] = t->entries[i].uuid;
    int rc = !uuids ? -1
             : cap > 0 ? count_uuids(uuids, distinct(uuids, t->n),
                                     "SELECT uuid, COUNT(*) FROM offline_messages WHERE uuid",
                                     &counts)
                       : 0;
    for (size_t i = 0; rc == 0 && i < t->n; i++) {
        const gw_store_entry *e = &t->entries[i];
        uuid_count *c = count_of(&counts, e->uuid, strlen(e->uuid));
        if (cap <= 0 || !c || c->n < cap) {
            kept[n++] = e;
            if (c)
                c->n++;
        } else {
            ticket_of(tickets, n_tickets, e->ticket)->refused++;
            atomic_fetch_add(&gw.counters->inbox_refused, 1);
        }
    }
    if (rc == 0 && (size_t)n < t->n)
        pg_warn("%zu message(s) refused: their recipient has max_offline_per_uuid (%lld) stored",
                t->n - (size_t)n, cap);
    free(uuids);
    free(counts.v);
    return rc == 0 ? n : -1;
}

/* The answer's count of items of each ticket, with the refused ones
 * counted already. */
static void count_tickets(const gw_store_task *t, gw_store_ticket *tickets, size_t *n_tickets)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->entries[i].ticket)
            ticket_of(tickets, n_tickets, t->entries[i].ticket)->items++;
}

/* Stores items, then looks up their uuids once more: a browser that
 * connected meanwhile (say, on this node after its old node stopped) gets
 * them now rather than at its next connect; the pushes say the message is
 * stored, so their ACK deletes it.  The asking worker is answered when its
 * items are routed messages (tickets), wait (waiters) or have somewhere to
 * go now. */
static void op_store(const char *data, size_t len)
{
    gw_store_task t;
    if (gw_store_task_get(data, len, &t) < 0) {
        pg_error("a malformed store task of %zu bytes", len);
        return;
    }
    size_t n_tickets = 0, n_pushes = 0;
    const gw_store_entry **kept = calloc(t.n ? t.n : 1, sizeof(*kept));
    gw_store_ticket *tickets = calloc(t.n ? t.n : 1, sizeof(*tickets));
    long long n = -1;
    if (kept && tickets && t.capped) {
        n = within_inbox_cap(&t, kept, tickets, &n_tickets);
    } else if (kept && tickets) {
        for (n = 0; (size_t)n < t.n; n++)
            kept[n] = &t.entries[n];
    }
    long long stored = n >= 0 ? store_rows(kept, (size_t)n) : -1;
    if (stored < 0)
        pg_error("could not store %u message(s)", t.n);
    else if (note_hinted(kept, (size_t)n) < 0)
        pg_error("could not tell other nodes of %lld stored message(s) for their browsers", stored);
    gw_store_push *pushes = stored > 0 ? recheck_stored(kept, (size_t)n, (long long)t.keep_away,
                                                        &n_pushes) : NULL;
    if (tickets)
        count_tickets(&t, tickets, &n_tickets);
    size_t n_waiters = 0;
    for (uint32_t i = 0; i < t.n; i++)
        n_waiters += t.entries[i].nwaiters;
    if (n_tickets || n_pushes || n_waiters) {
        gw_stored answer = {.code = stored < 0 ? gw_mysql_failure_code() : PG_OK,
                            .stored = stored < 0 ? 0 : (uint64_t)stored, .n_pushes = n_pushes,
                            .pushes = pushes, .n_waiters = n_waiters, .waiters = t.waiters,
                            .n_tickets = n_tickets, .tickets = tickets};
        pg_rec_writer w = {0};
        if (gw_stored_put(&w, &answer) < 0 || pg_server_finish(gw.server, w.data, w.len) < 0)
            pg_error("could not answer a store task");
        pg_rec_writer_free(&w);
    }
    free(pushes);
    free(tickets);
    free(kept);
    gw_store_task_free(&t);
}

/* ---- route tasks (route.c, the layout in route_task.c) ---- */

static int order_code(const gw_route_ask *a)
{
    int valid = a->chat_token ? token_valid(a->chat_token) : 1;
    return valid > 0 ? PG_OK : valid < 0 ? gw_mysql_failure_code() : PG_ERR_BAD_TOKEN;
}

typedef struct {
    pg_rec_writer *w;
    size_t count_at;   /* where the order's count of entries is */
    uint32_t index;    /* the item's index in its order */
} route_target;

static void add_target(const route_row *row, int local, void *arg)
{
    route_target *rt = arg;
    gw_route_entry e = {.item = rt->index, .where = local ? GW_ROUTE_LOCAL : GW_ROUTE_REMOTE,
                        .session = (pg_session_id)row->session, .port = row->port,
                        .ip = row->ip, .client_id = row->client_id};
    gw_routed_entry(rt->w, rt->count_at, &e);
}

/* One order's answer: where each of its items goes, or that it goes
 * nowhere (GW_ROUTE_NONE: the worker stores it, see store.c). */
static void order_result(pg_rec_writer *w, const gw_route_ask *a, int code, const route_rows *rows)
{
    route_target rt = {.w = w, .count_at = gw_routed_order(w, a, code)};
    for (uint32_t i = 0; code == PG_OK && i < a->n; i++) {
        rt.index = i;
        if (!a->uuids[i] || each_target(rows, a->uuids[i], 0, add_target, &rt) == 0)
            gw_routed_entry(w, rt.count_at, &(gw_route_entry){.item = i, .where = GW_ROUTE_NONE});
    }
}

/* The lookup's answer for each uuid goes to the route cache
 * (route_cache.c): its sessions on other nodes, or none.  Not when it has
 * more sessions than an entry or the uuid index holds: those are looked
 * up every time.  uuids: distinct, as lookup_routes left them. */
static void cache_routes(const char *const *uuids, size_t n, const route_rows *rows,
                         gw_route_mark mark)
{
    size_t t = 0;
    for (size_t u = 0; u < n; u++) {   /* both sorted by uuid */
        gw_routes routes = {0};
        int local = 0, fits = 1;
        while (t < rows->n && strcmp(rows->v[t].uuid, uuids[u]) < 0)
            t++;
        for (; t < rows->n && strcmp(rows->v[t].uuid, uuids[u]) == 0; t++) {
            const route_row *row = &rows->v[t];
            if (row_is_local(row)) {
                fits &= ++local <= GW_INDEX_SESSIONS;
            } else if ((fits &= routes.n < GW_ROUTE_TARGETS)) {
                snprintf(routes.t[routes.n].ip, sizeof(routes.t[routes.n].ip), "%s", row->ip);
                routes.t[routes.n].port = row->port;
                routes.t[routes.n++].session = (pg_session_id)row->session;
            }
        }
        if (fits)
            gw_route_cache_put(uuids[u], &routes, mark);
    }
}

/* The routes of uuids that have just registered here, looked up with their
 * registration (one IN query a batch): the consumer sends a uuid's orders
 * to the node it registered on (consumer/hints.c), so its first order
 * finds its routes cached.  Best effort: on failure, its first order looks
 * them up. */
static void warm_routes(const char **uuids, size_t n, gw_route_mark mark)
{
    route_rows rows = {0};
    if (lookup_routes(uuids, &n, &rows) == 0)
        cache_routes(uuids, n, &rows, mark);
    route_rows_free(&rows);
}

/* A batch of orders (route.c): the uuids of all of them in a few IN
 * queries, one result each.  Nothing is written here: what has no target
 * comes back to the worker, which stores it in a task of its own, so a
 * route never waits for an INSERT (a browser that stopped reading sends
 * thousands of its orders that way while the others' are routed). */
static void op_route(const char *data, size_t len)
{
    gw_route_task t;
    if (gw_route_task_get(data, len, &t) < 0) {
        pg_error("a malformed route task of %zu bytes", len);
        return;
    }
    int *codes = calloc(t.n ? t.n : 1, sizeof(*codes));
    size_t n = 0, total = 0;
    for (uint32_t o = 0; o < t.n; o++)
        total += t.orders[o].n;
    const char **uuids = malloc((total ? total : 1) * sizeof(*uuids));
    for (uint32_t o = 0; codes && uuids && o < t.n; o++) {
        codes[o] = order_code(&t.orders[o]);
        for (uint32_t i = 0; codes[o] == PG_OK && i < t.orders[o].n; i++)
            uuids[n++] = t.orders[o].uuids[i];
    }
    route_rows rows = {0};
    gw_route_mark mark = gw_route_cache_mark();
    int failed = !codes || !uuids || (n > 0 && (!gw_db() || lookup_routes(uuids, &n, &rows) < 0));
    if (!failed)
        cache_routes(uuids, n, &rows, mark);
    pg_rec_writer w = {0};
    gw_routed_begin(&w, &t);
    for (uint32_t o = 0; o < t.n; o++) {
        int code = !codes ? PG_ERR_INTERNAL : failed && codes[o] == PG_OK ? gw_mysql_failure_code()
                                                                          : codes[o];
        order_result(&w, &t.orders[o], code, &rows);
    }
    if (pg_rec_written(&w) < 0 || pg_server_finish(gw.server, w.data, w.len) < 0)
        pg_error("could not answer a route task");
    pg_rec_writer_free(&w);
    route_rows_free(&rows);
    free(uuids);
    free(codes);
    gw_route_task_free(&t);
}

/* The uuids other nodes stored messages for while the path to this node
 * was broken (note_redeliveries): taken, so each is delivered once. */
#define REDELIVER_MAX 256

typedef struct {
    char *v[REDELIVER_MAX];
    size_t n;
} taken_uuids;

static int take_uuid(void *arg, const pg_db_value *cols, int ncols)
{
    taken_uuids *t = arg;
    if (t->n < REDELIVER_MAX && ncols > 0 && cols[0].type == PG_DB_STRING &&
        cols[0].len <= PG_UUID_MAX && (t->v[t->n] = strndup(cols[0].s, cols[0].len)))
        t->n++;
    return 0;
}

static void op_redeliveries(void)
{
    taken_uuids taken = {.n = 0};
    pg_db_value node[] = {PG_DB_STR_VALUE(gw.node_ip), PG_DB_INT_VALUE(gw.cfg.internal_port)};
    int ok = gw_db() && gw_mysql_result(pg_db_query(gw.db, "SELECT uuid FROM redeliveries WHERE "
                                                           "node_ip = ? AND node_port = ? LIMIT 256",
                                                    node, 2, take_uuid, &taken)) >= 0;
    if (ok && taken.n > 0)
        ok = run_in_strings("DELETE FROM redeliveries WHERE node_ip = ? AND node_port = ? AND uuid",
                            "", node, 2, (const char *const *)taken.v, taken.n, NULL, NULL) == 0;
    pg_rec_writer w = {0};
    /* on failure the rows stay for the next time */
    gw_uuids_put(&w, GW_TASK_REDELIVER, (const char *const *)taken.v, ok ? taken.n : 0);
    finish_record(&w, "redeliveries");
    for (size_t i = 0; i < taken.n; i++)
        free(taken.v[i]);
}

static void op_cluster(const char *data, size_t len)
{
    pg_rec_writer w = {0};
    if (gw_admin_cluster_rows(data, len, &w) < 0) {
        pg_error("a malformed cluster task of %zu bytes", len);
        pg_rec_writer_free(&w);
        return;
    }
    finish_record(&w, "cluster");
}

static void op_token(const char *data, size_t len)
{
    gw_token_check t;
    if (gw_token_task_get(data, len, &t) < 0) {
        pg_error("a malformed token task of %zu bytes", len);
        return;
    }
    int valid = token_valid(t.chat_token);
    /* the head's t_in goes back: the push the worker makes next has its intake time */
    t.head.op = GW_TASK_TOKEN_CHECKED;
    t.code = valid < 0 ? gw_mysql_failure_code() : valid ? PG_OK : PG_ERR_BAD_TOKEN;
    pg_rec_writer w = {0};
    gw_token_task_put(&w, &t);
    finish_record(&w, "token");
}

/* ---- dispatch ---- */

/* A task (a record: route_task.c); its op's name for the log. */
static const char *handle_record(const char *data, size_t len)
{
    pg_rec_reader r = pg_rec_reader_of(data, len);
    gw_task_head head = gw_task_head_get(&r);
    gw_metrics_task_waited(head.t0);
    switch (head.op) {
    case GW_TASK_ROUTE:
        op_route(data, len);
        return "route";
    case GW_TASK_STORE:
        op_store(data, len);
        return "store";
    case GW_TASK_REGISTER:
        op_register(data, len);
        return "register";
    case GW_TASK_PAGE:
        op_offline_page(data, len);
        return "offline page";
    case GW_TASK_UNREGISTER:
        op_unregister(data, len);
        return "unregister";
    case GW_TASK_ACK:
        op_ack(data, len);
        return "ack";
    case GW_TASK_TOKEN:
        op_token(data, len);
        return "token";
    case GW_TASK_REDELIVERIES:
        op_redeliveries();
        return "redeliveries";
    case GW_TASK_CLUSTER:
        op_cluster(data, len);
        return "cluster";
    }
    pg_error("unknown task record op %u", head.op);
    return NULL;
}

void gw_task_handle(int64_t task_id, const char *data, size_t len)
{
    (void)task_id;
    uint64_t started = pg_now_ms();
    const char *op = handle_record(data, len);
    /* Tasks are meant to take milliseconds: the worker's requests behind
     * one that does not wait meanwhile, so say which one it was. */
    uint64_t took = pg_now_ms() - started;
    if (took >= SLOW_TASK_MS)
        pg_warn("slow task: %s of %zu bytes took %llu ms", op ? op : "?", len, (unsigned long long)took);
    /* A big task (a slow browser's backlog going back to the store) leaves
     * megabytes of freed heap the allocator would keep: give it back. */
    if (len > BIG_TASK_BYTES)
        pg_memory_trim();
}

void gw_tasks_start(int task_worker_id)
{
    gw_db();
    if (task_worker_id == gw.server_cfg.task_worker_num - 1) {
        gw_node_start_heartbeat();   /* writes: on a writer (batch.c) */
        gw_status_start_writer();
    }
}

void gw_tasks_stop(void)
{
    gw_token_forget_all();
    pg_db_close(gw.db);
    gw.db = NULL;
}

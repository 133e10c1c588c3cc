/* admin.c - operators: who may read the figures, and the cluster view.
 *
 * The figures (/stats, /metrics, /admin/cluster) say how busy the node is,
 * which nodes exist and what the dead letters hold: not for browsers.  On
 * the public port they need `Authorization: Bearer T`, T being admin_secret
 * or a JWT signed like a browser's (jwt_secret, or jwt_secret_previous
 * during a rotation) whose claims hold "admin": true.  The admin listener
 * (admin_port, loopback by default) asks for nothing: whoever reaches it is
 * on the node's host, or where the operator chose to expose it.
 *
 * /admin/cluster: every daemon writes its report into daemon_status
 * (status.c here, the consumer's and the proxy's own); a task worker reads
 * them with gateway_nodes in two queries into a record, and the worker
 * sends them as they are, each report parsed once to check that it is an
 * object.  Without
 * MySQL the answer still comes: mysql.ok false, and this node alone, live. */
#include "gateway.h"

#include "daemon_status.h"
#include "log.h"
#include "timer.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define NODES_MAX "512"             /* rows shown, as SQL text */
#define DAEMONS_MAX "128"
#define STALE_DAEMON_S 3600        /* a consumer or proxy silent this long is not shown */

/* ---- who may read ---- */

static int secret_matches(const char *token, size_t len)
{
    const char *secret = gw.cfg.admin_secret;
    return secret && *secret && strlen(secret) == len && CRYPTO_memcmp(secret, token, len) == 0;
}

int gw_admin_authorize(const char *authorization, size_t len)
{
    static const char scheme[] = "Bearer ";
    size_t n = sizeof(scheme) - 1;
    if (!authorization || len <= n || strncasecmp(authorization, scheme, n) != 0)
        return GW_ADMIN_NO_TOKEN;
    const char *token = authorization + n;
    len -= n;
    if (secret_matches(token, len))
        return GW_ADMIN_OK;
    const char *secrets[] = {gw.cfg.jwt_secret, gw.cfg.jwt_secret_previous};
    int verdict = GW_ADMIN_NO_TOKEN;
    for (size_t i = 0; i < 2 && verdict != GW_ADMIN_OK; i++) {
        if (!secrets[i] || !*secrets[i])
            continue;
        const char *why;
        int rc = pg_token_verify_admin(token, len, secrets[i], time(NULL), NULL, &why);
        if (rc == 0)
            verdict = GW_ADMIN_OK;
        else if (rc == 1)
            verdict = GW_ADMIN_NOT_ADMIN;
    }
    return verdict;
}

/* ---- the cluster view's task and answer, as records ----
 *
 * The task, worker -> task worker (GW_TASK_CLUSTER):
 *   head, u64 session (the HTTP request's), u8 head_only (a HEAD request)
 * Its answer (GW_TASK_CLUSTER_ROWS):
 *   head, u64 session, u8 head_only, u8 ok, str error,
 *   u32 nodes, each NODE_COLS columns; u32 daemons, each DAEMON_COLS columns;
 *   a column: u8 COL_*, then an i64 (COL_INT) or a str (COL_STR).
 * A row's last column is the daemon's report, as MySQL holds it; the
 * worker sends it as JSON if it is an object, else null. */

enum { COL_NULL, COL_INT, COL_STR };

static const char *const node_cols[] = {"node_id", "ip", "ws_port", "internal_port", "state",
                                        "heartbeat_age_ms", "started_at", "status_age_ms",
                                        "status"};
static const char *const daemon_cols[] = {"daemon_id", "role", "age_ms", "status"};
#define NODE_COLS (int)(sizeof(node_cols) / sizeof(node_cols[0]))
#define DAEMON_COLS (int)(sizeof(daemon_cols) / sizeof(daemon_cols[0]))

static void put_col(pg_rec_writer *w, const pg_db_value *v)
{
    if (v->type == PG_DB_INT) {
        pg_rec_put_u8(w, COL_INT);
        pg_rec_put_i64(w, v->i);
    } else if (v->type == PG_DB_STRING) {
        pg_rec_put_u8(w, COL_STR);
        pg_rec_put_strn(w, v->s, v->len);
    } else {
        pg_rec_put_u8(w, COL_NULL);
    }
}

/* ---- the cluster, in a task worker ---- */

typedef struct {
    pg_rec_writer *w;
    size_t count_at;
    int ncols;
    size_t budget;                 /* bytes of reports still to take (one task result) */
} rows_acc;

static int put_row(void *arg, const pg_db_value *c, int ncols)
{
    rows_acc *acc = arg;
    if (ncols < acc->ncols)
        return 1;
    for (int i = 0; i < acc->ncols - 1; i++)
        put_col(acc->w, &c[i]);
    const pg_db_value *report = &c[acc->ncols - 1];
    if (report->type == PG_DB_STRING && report->len <= acc->budget) {
        acc->budget -= report->len;
        put_col(acc->w, report);
    } else {
        pg_rec_put_u8(acc->w, COL_NULL);
    }
    pg_rec_count_one(acc->w, acc->count_at);
    return 0;
}

#define AGE_MS(col) "TIMESTAMPDIFF(MICROSECOND, " col ", CURRENT_TIMESTAMP(3)) DIV 1000"

/* The rows of the nodes, then of the other daemons, into the answer. */
static long long query_rows(pg_db *db, pg_rec_writer *w, size_t budget)
{
    rows_acc acc = {.w = w, .count_at = pg_rec_put_count(w), .ncols = NODE_COLS,
                    .budget = budget};
    long long rc = db ? pg_db_query(db,
        "SELECT n.node_id, n.ip, n.ws_port, n.internal_port, n.state, " AGE_MS("n.heartbeat_at")
        ", CAST(n.started_at AS CHAR), " AGE_MS("s.updated_at") ", s.status "
        "FROM gateway_nodes n LEFT JOIN daemon_status s ON s.daemon_id = CONCAT('gateway ', "
        "n.node_id) ORDER BY n.node_id LIMIT " NODES_MAX, NULL, 0, put_row, &acc) : -1;
    acc.count_at = pg_rec_put_count(w);
    acc.ncols = DAEMON_COLS;
    pg_db_value stale = PG_DB_INT_VALUE(STALE_DAEMON_S);
    if (rc >= 0)
        rc = pg_db_query(db, "SELECT daemon_id, role, " AGE_MS("updated_at") ", status "
                             "FROM daemon_status WHERE role <> 'gateway' AND updated_at > "
                             "CURRENT_TIMESTAMP(3) - INTERVAL ? SECOND ORDER BY role, daemon_id "
                             "LIMIT " DAEMONS_MAX, &stale, 1, put_row, &acc);
    return rc;
}

int gw_admin_cluster_rows(const char *task, size_t len, pg_rec_writer *answer)
{
    pg_rec_reader r = pg_rec_reader_of(task, len);
    gw_task_head head = gw_task_head_get(&r);
    uint64_t session = pg_rec_u64(&r);
    int head_only = pg_rec_u8(&r) != 0;
    if (!pg_rec_read_whole(&r))
        return -1;
    pg_rec_writer rows = {0};
    pg_db *db = gw_db();
    long long rc = query_rows(db, &rows, gw.server_cfg.package_max_length);
    if (db)
        gw_mysql_result(rc);
    gw_task_head_put(answer, GW_TASK_CLUSTER_ROWS, head.t0, 0);
    pg_rec_put_u64(answer, session);
    pg_rec_put_u8(answer, (uint8_t)head_only);
    pg_rec_put_u8(answer, rc >= 0);
    pg_rec_put_str(answer, rc >= 0 ? "" : db ? pg_db_error(db) : "no connection to MySQL");
    if (rc >= 0) {
        pg_rec_put_part(answer, &rows);
    } else {   /* no rows */
        pg_rec_put_u32(answer, 0);
        pg_rec_put_u32(answer, 0);
    }
    pg_rec_writer_free(&rows);
    return pg_rec_written(answer);
}

/* ---- the request and its answer, in a worker ---- */

void gw_admin_cluster(pg_session_id session, int head)
{
    pg_rec_writer w = {0};
    gw_task_head_put(&w, GW_TASK_CLUSTER, pg_prom_now_us(), 0);
    pg_rec_put_u64(&w, session);
    pg_rec_put_u8(&w, head ? 1 : 0);
    if (gw_task_record(&w, gw_task_worker_of(session)) < 0)
        gw_http_reply(session, 503, "text/plain", "no task worker\n", 15);
    pg_rec_writer_free(&w);
}

/* A column of the answer as JSON; a report only if it is an object. */
static json_t *col_get(pg_rec_reader *r, int report)
{
    uint8_t kind = pg_rec_u8(r);
    if (kind == COL_INT) {
        json_int_t v = (json_int_t)pg_rec_i64(r);
        return report ? json_null() : json_integer(v);
    }
    if (kind != COL_STR)
        return json_null();
    size_t len;
    const char *s = pg_rec_str(r, &len);
    if (!s)
        return json_null();
    if (!report)
        return json_stringn(s, len);
    json_t *o = json_loadb(s, len, 0, NULL);
    if (json_is_object(o))
        return o;
    json_decref(o);
    return json_null();
}

/* A count of rows of ncols named columns, as a JSON array. */
static json_t *rows_get(pg_rec_reader *r, const char *const *names, int ncols)
{
    uint32_t n = pg_rec_count(r, (size_t)ncols);
    json_t *rows = json_array();
    for (uint32_t i = 0; i < n && pg_rec_read_ok(r); i++) {
        json_t *row = json_object();
        for (int c = 0; c < ncols; c++)
            json_object_set_new(row, names[c], col_get(r, c == ncols - 1));
        json_array_append_new(rows, row);
    }
    return rows;
}

/* This node alone, live: what a gateway without MySQL can still say. */
static json_t *this_node(void)
{
    return json_pack("[{s:s,s:s,s:I,s:I,s:s,s:i,s:n,s:i,s:o}]", "node_id", gw.node_id, "ip",
                     gw.node_ip, "ws_port", (json_int_t)gw.cfg.port, "internal_port",
                     (json_int_t)gw.cfg.internal_port, "state",
                     atomic_load(&gw.counters->draining) ? "draining" : "up", "heartbeat_age_ms",
                     0, "started_at", "status_age_ms", 0, "status", gw_status_report());
}

int gw_admin_cluster_read(const char *data, size_t len, gw_cluster_answer *a)
{
    pg_rec_reader r = pg_rec_reader_of(data, len);
    gw_task_head_get(&r);
    *a = (gw_cluster_answer){.session = pg_rec_u64(&r)};
    a->head = pg_rec_u8(&r) != 0;
    a->ok = pg_rec_u8(&r) != 0;
    a->error = pg_rec_str(&r, NULL);
    a->nodes = rows_get(&r, node_cols, NODE_COLS);
    a->daemons = rows_get(&r, daemon_cols, DAEMON_COLS);
    if (pg_rec_read_whole(&r) && a->error)
        return 0;
    a->ok = 0;
    a->error = "malformed answer from the task worker";
    return -1;
}

void gw_admin_cluster_answered(const char *data, size_t len)
{
    gw_cluster_answer a;
    if (gw_admin_cluster_read(data, len, &a) < 0)
        pg_error("a malformed answer to a cluster task (%zu bytes)", len);
    json_t *o = json_pack("{s:I,s:s,s:{s:b,s:s},s:o,s:o}", "now", (json_int_t)pg_wall_ms(),
                          "served_by", gw.node_id, "mysql", "ok", a.ok, "error", a.error,
                          "nodes", a.ok ? json_incref(a.nodes) : this_node(),
                          "daemons", a.ok ? json_incref(a.daemons) : json_array());
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (body)
        gw_http_reply_later(a.session, a.head, 200, "application/json", body, strlen(body));
    else
        gw_http_reply_later(a.session, a.head, 500, "text/plain", "out of memory\n", 14);
    free(body);
    json_decref(o);
    json_decref(a.nodes);
    json_decref(a.daemons);
}

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
 * them with gateway_nodes in two queries and the worker sends them as they
 * are, each report parsed once to check that it is an object.  Without
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

/* ---- the cluster, in a task worker ---- */

typedef struct {
    json_t *rows;
    size_t budget;                 /* bytes of reports still to take */
} rows_acc;

static json_t *str_col(const pg_db_value *v)
{
    return v->type == PG_DB_STRING ? json_stringn(v->s, v->len) : json_null();
}

static json_t *int_col(const pg_db_value *v)
{
    return v->type == PG_DB_INT ? json_integer(v->i) : json_null();
}

/* A daemon's report, from the database: an object, else null. */
static json_t *report_col(const pg_db_value *v, rows_acc *acc)
{
    if (v->type != PG_DB_STRING || v->len > acc->budget)
        return json_null();
    json_t *o = json_loadb(v->s, v->len, 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return json_null();
    }
    acc->budget -= v->len;
    return o;
}

static int node_row(void *arg, const pg_db_value *c, int ncols)
{
    rows_acc *acc = arg;
    if (ncols < 9)
        return 1;
    json_array_append_new(acc->rows, json_pack(
        "{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "node_id", str_col(&c[0]), "ip", str_col(&c[1]),
        "ws_port", int_col(&c[2]), "internal_port", int_col(&c[3]), "state", str_col(&c[4]),
        "heartbeat_age_ms", int_col(&c[5]), "started_at", str_col(&c[6]),
        "status_age_ms", int_col(&c[7]), "status", report_col(&c[8], acc)));
    return 0;
}

static int daemon_row(void *arg, const pg_db_value *c, int ncols)
{
    rows_acc *acc = arg;
    if (ncols < 4)
        return 1;
    json_array_append_new(acc->rows, json_pack("{s:o,s:o,s:o,s:o}", "daemon_id", str_col(&c[0]),
                                               "role", str_col(&c[1]), "age_ms", int_col(&c[2]),
                                               "status", report_col(&c[3], acc)));
    return 0;
}

#define AGE_MS(col) "TIMESTAMPDIFF(MICROSECOND, " col ", CURRENT_TIMESTAMP(3)) DIV 1000"

json_t *gw_admin_cluster_rows(json_t *task)
{
    json_t *nodes = json_array(), *daemons = json_array();
    /* the answer travels to the worker as one task result */
    rows_acc acc = {nodes, gw.server_cfg.package_max_length};
    pg_db *db = gw_db();
    long long rc = db ? pg_db_query(db,
        "SELECT n.node_id, n.ip, n.ws_port, n.internal_port, n.state, " AGE_MS("n.heartbeat_at")
        ", CAST(n.started_at AS CHAR), " AGE_MS("s.updated_at") ", s.status "
        "FROM gateway_nodes n LEFT JOIN daemon_status s ON s.daemon_id = CONCAT('gateway ', "
        "n.node_id) ORDER BY n.node_id LIMIT " NODES_MAX, NULL, 0, node_row, &acc) : -1;
    acc.rows = daemons;
    pg_db_value stale = PG_DB_INT_VALUE(STALE_DAEMON_S);
    if (rc >= 0)
        rc = pg_db_query(db, "SELECT daemon_id, role, " AGE_MS("updated_at") ", status "
                             "FROM daemon_status WHERE role <> 'gateway' AND updated_at > "
                             "CURRENT_TIMESTAMP(3) - INTERVAL ? SECOND ORDER BY role, daemon_id "
                             "LIMIT " DAEMONS_MAX, &stale, 1, daemon_row, &acc);
    if (db)
        gw_mysql_result(rc);
    return json_pack("{s:s,s:O,s:O?,s:b,s:s,s:o,s:o}", "op", "cluster", "session",
                     json_object_get(task, "session"), "head", json_object_get(task, "head"),
                     "ok", rc >= 0, "error",
                     rc >= 0 ? "" : db ? pg_db_error(db) : "no connection to MySQL", "nodes",
                     nodes, "daemons", daemons);
}

/* ---- the request and its answer, in a worker ---- */

void gw_admin_cluster(pg_session_id session, int head)
{
    json_t *task = json_pack("{s:s,s:I,s:b}", "op", "cluster", "session", (json_int_t)session,
                             "head", head);
    if (gw_task(task, gw_task_worker_of(session)) < 0)
        gw_http_reply(session, 503, "text/plain", "no task worker\n", 15);
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

void gw_admin_cluster_answered(json_t *result)
{
    pg_session_id session = (pg_session_id)json_integer_value(json_object_get(result, "session"));
    int ok = json_is_true(json_object_get(result, "ok"));
    json_t *o = json_pack("{s:I,s:s,s:{s:b,s:O},s:o,s:o}", "now", (json_int_t)pg_wall_ms(),
                          "served_by", gw.node_id, "mysql", "ok", ok, "error",
                          json_object_get(result, "error"), "nodes",
                          ok ? json_incref(json_object_get(result, "nodes")) : this_node(),
                          "daemons",
                          ok ? json_incref(json_object_get(result, "daemons")) : json_array());
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    int head = json_is_true(json_object_get(result, "head"));
    if (body)
        gw_http_reply_later(session, head, 200, "application/json", body, strlen(body));
    else
        gw_http_reply_later(session, head, 500, "text/plain", "out of memory\n", 14);
    free(body);
    json_decref(o);
}

/* cluster.c - pushgate-ctl nodes and online: what the cluster's shared
 * tables say (gateway_nodes, online_clients), read through common/db.h so
 * ctl sees exactly what the gateways, the proxy and the consumer see. */
#include "ctl.h"

#include "db.h"

#include <stdio.h>
#include <string.h>

#define MAX_COLS 8

static const char NODES_SQL[] =
    "SELECT n.node_id, n.ip, n.ws_port, n.internal_port, n.state, "
    "CAST(ROUND(TIMESTAMPDIFF(MICROSECOND, n.heartbeat_at, NOW(3)) / 1000000, 1) AS CHAR), "
    "(SELECT COUNT(*) FROM online_clients o WHERE o.node_ip = n.ip "
    "AND o.node_port = n.internal_port) "
    "FROM gateway_nodes n ORDER BY n.node_id";

static const char ONLINE_SQL[] =
    "SELECT client_id, CONCAT(node_ip, ':', node_port), CAST(session_id AS CHAR), "
    "CAST(connected_at AS CHAR) FROM online_clients WHERE uuid = ? "
    "ORDER BY connected_at, client_id";

static pg_db *open_db(void)
{
    pg_db_config cfg = {.hosts = ctl_cfg.mysql_hosts, .host = ctl_cfg.mysql_host,
                        .port = (int)ctl_cfg.mysql_port, .socket = ctl_cfg.mysql_socket,
                        .user = ctl_cfg.mysql_user, .password = ctl_cfg.mysql_password,
                        .database = ctl_cfg.mysql_database, .connect_timeout_s = 5,
                        .read_timeout_s = 10, .write_timeout_s = 10};
    char err[512];
    pg_db *db = pg_db_open(&cfg, err, sizeof(err));
    if (!db)
        ctl_err("mysql: %s", err);
    return db;
}

typedef struct {
    ctl_table t;
    bool failed;
} rows_ctx;

/* A row of values as text into the table. */
static int add_values(void *arg, const pg_db_value *cols, int ncols)
{
    rows_ctx *c = arg;
    char text[MAX_COLS][160];
    const char *cells[MAX_COLS];
    for (int i = 0; i < ncols && i < MAX_COLS; i++) {
        if (cols[i].type == PG_DB_INT)
            snprintf(text[i], sizeof(text[i]), "%lld", cols[i].i);
        else if (cols[i].type == PG_DB_STRING)
            snprintf(text[i], sizeof(text[i]), "%.*s", (int)cols[i].len, cols[i].s);
        else
            snprintf(text[i], sizeof(text[i]), "-");
        cells[i] = text[i];
    }
    if (ncols != (int)c->t.ncols || ctl_table_row(&c->t, cells) < 0)
        c->failed = true;
    return c->failed;
}

/* Runs sql into a table with header and prints it, or empty when no row. */
static int query_table(const char *sql, const pg_db_value *params, int nparams,
                       const char *const *header, size_t ncols, const char *empty)
{
    pg_db *db = open_db();
    if (!db)
        return CTL_FAIL;
    rows_ctx c = {.failed = false};
    int rc = CTL_FAIL;
    if (ncols > MAX_COLS || ctl_table_init(&c.t, ncols, header) < 0) {
        ctl_err("out of memory");
    } else {
        long long rows = pg_db_query(db, sql, params, nparams, add_values, &c);
        if (rows < 0)
            ctl_err("mysql: %s", pg_db_error(db));
        else if (c.failed)
            ctl_err("out of memory");
        else {
            if (rows == 0)
                printf("%s\n", empty);
            else
                ctl_table_print(&c.t, "");
            rc = CTL_OK;
        }
    }
    ctl_table_free(&c.t);
    pg_db_close(db);
    return rc;
}

int ctl_cmd_nodes(const ctl_args *a)
{
    (void)a;
    static const char *const header[] = {"NODE", "IP", "WS PORT", "INTERNAL PORT", "STATE",
                                         "HEARTBEAT AGE (s)", "ONLINE"};
    return query_table(NODES_SQL, NULL, 0, header, 7, "no gateway nodes registered");
}

int ctl_cmd_online(const ctl_args *a)
{
    static const char *const header[] = {"CLIENT ID", "NODE", "SESSION ID", "CONNECTED AT"};
    const char *uuid = a->pos[0];
    pg_db_value p = PG_DB_STR_VALUE(uuid);
    char empty[200];
    snprintf(empty, sizeof(empty), "%.120s is not online", uuid);
    return query_table(ONLINE_SQL, &p, 1, header, 4, empty);
}

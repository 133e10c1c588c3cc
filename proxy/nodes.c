/* nodes.c - which gateway nodes are live, from the gateway_nodes table.
 *
 * The proxy forwards only to nodes registered there with state 'up': a
 * client_id naming any other address is stale, and answering unreachable at
 * once (the gateway stores the message) beats connecting to whatever now
 * listens there.  Workers must not block, so each asks a task worker on a
 * timer (nodes_refresh_ms) and keeps the last good answer.  The master reads
 * the table once before it forks, which checks MySQL at start and gives
 * every worker a list from its first moment. */
#include "proxy.h"

#include "db_health.h"
#include "log.h"
#include "timer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ASK_AGAIN_AFTER_S 30   /* an answer that never came (task worker died) */
#define REOPEN_AFTER_S 5

static json_t *nodes;          /* "ip:port" -> "up" | "draining" */
static int64_t refresh_timer;
static time_t asked_at;        /* 0: no question outstanding */
static int failing;            /* the last answer was an error (logged once) */

static void node_key(char *key, size_t len, const char *ip, int port)
{
    snprintf(key, len, "%s:%d", ip, port);
}

int px_node_up(const char *ip, int port)
{
    char key[96];
    node_key(key, sizeof(key), ip, port);
    const char *state = json_string_value(json_object_get(nodes, key));
    return state && strcmp(state, "up") == 0;
}

json_t *px_nodes_json(void)
{
    return nodes ? json_deep_copy(nodes) : json_object();
}

const char *px_mysql_server(void)
{
    int at = atomic_load(&px.counters->mysql_where.host);
    return at >= 0 && at < px.mysql_hosts.n ? px.mysql_hosts.v[at].text : "";
}

size_t px_nodes_known(void)
{
    return json_object_size(nodes);
}

int px_nodes_readable(void)
{
    return !failing;
}

/* ---- reading the table (master and task workers) ---- */

static pg_db *open_db(unsigned connect_timeout_s, char *err, size_t errlen)
{
    return pg_db_connect(&px.mysql, connect_timeout_s, 10, err, errlen);
}

static int collect_node(void *arg, const pg_db_value *c, int ncols)
{
    if (ncols < 3 || c[0].type != PG_DB_STRING || c[1].type != PG_DB_INT ||
        c[2].type != PG_DB_STRING)
        return 0;
    char ip[64], key[96];
    snprintf(ip, sizeof(ip), "%.*s", (int)c[0].len, c[0].s);
    node_key(key, sizeof(key), ip, (int)c[1].i);
    json_object_set_new(arg, key, json_stringn(c[2].s, c[2].len));
    return 0;
}

/* The table as "ip:port" -> state, or NULL when MySQL failed. */
static json_t *read_nodes(pg_db *db)
{
    json_t *list = json_object();
    if (pg_db_query(db, "SELECT ip, internal_port, state FROM gateway_nodes", NULL, 0,
                    collect_node, list) < 0) {
        json_decref(list);
        return NULL;
    }
    return list;
}

int px_nodes_load(void)
{
    char err[512];
    pg_db *db = open_db(5, err, sizeof(err));
    if (!db) {
        pg_error("%s", err);
        return -1;
    }
    nodes = read_nodes(db);
    if (!nodes)
        pg_error("reading gateway_nodes: %s", pg_db_error(db));
    pg_db_close(db);
    if (!nodes)
        return -1;
    pg_notice("%zu gateway node(s) registered", json_object_size(nodes));
    return 0;
}

void px_nodes_free(void)
{
    json_decref(nodes);
    nodes = NULL;
}

/* ---- MySQL in a task worker: its outages are logged once, not at every call ---- */

static time_t next_open;       /* MySQL down: try again after a pause, not at every task */
static pg_db_health health;

pg_db *px_task_db(void)
{
    char err[512] = "";
    if (!px.db && time(NULL) >= next_open && !(px.db = open_db(3, err, sizeof(err)))) {
        next_open = time(NULL) + REOPEN_AFTER_S;
        pg_db_health_failed(&health, NULL, err);
    }
    return px.db;
}

void px_task_db_done(int ok)
{
    if (ok)
        pg_db_health_ok(&health);
    else
        pg_db_health_failed(&health, px.db, NULL);
}

void px_nodes_task(void)
{
    pg_db *db = px_task_db();
    json_t *list = db ? read_nodes(db) : NULL;
    if (db)
        px_task_db_done(list != NULL);
    json_t *answer = list ? json_pack("{s:i,s:o}", "code", PG_OK, "nodes", list)
                          : json_pack("{s:i}", "code", PG_ERR_INTERNAL);
    char *text = answer ? json_dumps(answer, JSON_COMPACT) : NULL;
    if (!text || pg_server_finish(px.server, text, strlen(text)) < 0)
        pg_error("could not answer a nodes task");
    free(text);
    json_decref(answer);
}

void px_nodes_task_stop(void)
{
    pg_db_close(px.db);
    px.db = NULL;
}

/* ---- the worker's copy ---- */

/* Worker 0 logs each change at info (the others see the same at debug). */
static void log_changes(json_t *before, json_t *after)
{
    pg_log_level level = pg_server_worker_id(px.server) == 0 ? PG_LOG_INFO : PG_LOG_DEBUG;
    const char *key;
    json_t *state;
    json_object_foreach(after, key, state) {
        if (!json_equal(state, json_object_get(before, key)))
            pg_log(level, "node %s is %s", key, json_string_value(state));
    }
    json_object_foreach(before, key, state) {
        if (!json_object_get(after, key))
            pg_log(level, "node %s is no longer registered", key);
    }
}

void px_nodes_finished(const char *data, size_t len)
{
    asked_at = 0;
    json_t *answer = json_loadb(data, len, 0, NULL);
    json_t *list = json_object_get(answer, "nodes");
    if (json_integer_value(json_object_get(answer, "code")) != PG_OK || !json_is_object(list)) {
        if (!failing)
            pg_warn("gateway_nodes cannot be read; keeping the last list until it can");
        failing = 1;
        json_decref(answer);
        return;
    }
    if (failing)
        pg_notice("gateway_nodes can be read again");
    failing = 0;
    log_changes(nodes, list);
    json_decref(nodes);
    nodes = json_incref(list);
    json_decref(answer);
    px_targets_prune();
}

static void ask(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    time_t now = time(NULL);
    if (asked_at && now - asked_at < ASK_AGAIN_AFTER_S)
        return;   /* MySQL is slow: do not pile up questions */
    if (pg_server_task(px.server, "nodes", 5, -1) < 0) {
        pg_warn("could not ask a task worker for gateway_nodes");
        return;
    }
    asked_at = now;
}

void px_nodes_worker_start(void)
{
    refresh_timer = pg_timer_tick((uint32_t)px.cfg.nodes_refresh_ms, ask, NULL);
    if (refresh_timer < 0)
        pg_error("cannot start the gateway_nodes refresh timer");
    ask(0, NULL);   /* a respawned worker's inherited list may be old */
}

void px_nodes_worker_stop(void)
{
    if (refresh_timer > 0)
        pg_timer_clear(refresh_timer);
    refresh_timer = 0;
    px_nodes_free();
}

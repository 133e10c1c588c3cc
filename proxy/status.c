/* status.c - the proxy's row in daemon_status (common/daemon_status.h).
 *
 * Workers never block and only task workers talk to MySQL, so the work is
 * split: every PG_STATUS_EVERY_MS worker 0 builds the report from the
 * shared counters (stats.c) and its list of nodes, and hands it to a task
 * worker, which REPLACEs the row on its MySQL connection (nodes.c's, with
 * its outage logging) and answers whether MySQL answered.  One report is out
 * at a time: a slow MySQL gets no pile of them.  The master deletes the row
 * after a clean stop, when no worker can write it again. */
#include "proxy.h"

#include "daemon_status.h"
#include "log.h"
#include "timer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TASK_PREFIX "status "
#define ASK_AGAIN_AFTER_S 30    /* an answer that never came (task worker died) */

static int64_t timer;
static int64_t task_id;         /* the report out (0: none) */
static time_t asked_at;
static int mysql_down;          /* the last write found MySQL unreachable */

/* "proxy host:port"; a wildcard address says nothing, the host name does. */
static const char *daemon_id(void)
{
    static char id[PG_STATUS_ID_MAX + 1];
    if (*id)
        return id;
    const char *host = px.cfg.host;
    char name[256] = "";
    if (!*host || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0) {
        if (gethostname(name, sizeof(name) - 1) < 0 || !*name)
            snprintf(name, sizeof(name), "localhost");
        host = name;
    }
    int v6 = strchr(host, ':') != NULL;
    char where[300];
    snprintf(where, sizeof(where), "%s%s%s:%lld", v6 ? "[" : "", host, v6 ? "]" : "",
             px.cfg.port);
    pg_status_id(id, sizeof(id), "proxy", where);
    return id;
}

static unsigned long long get(const _Atomic uint64_t *v)
{
    return (unsigned long long)atomic_load_explicit(v, memory_order_relaxed);
}

/* [{"target","outcome","count"}] of every count there is; a delivered
 * forward is "ok", the other outcomes keep their /metrics names. */
static json_t *forwards_json(void)
{
    json_t *list = json_array();
    for (int i = 0; list && i <= PX_NODES_MAX; i++) {
        px_node_counters *r = &px.counters->nodes[i];
        if (i < PX_NODES_MAX && atomic_load(&r->state) != 2)
            continue;
        for (int o = 0; o < PX_OUTCOMES; o++) {
            unsigned long long n = get(&r->n[o]);
            if (n)
                json_array_append_new(
                    list, json_pack("{s:o,s:s,s:I}", "target", pg_status_string(r->node),
                                    "outcome", o == PX_OUT_DELIVERED ? "ok" : px_outcome_names[o],
                                    "count", (json_int_t)n));
        }
    }
    return list;
}

/* The report, in the shape the cluster console reads (README, "Operators"). */
static json_t *report(void)
{
    pg_server_stats_t st;
    pg_server_stats(px.server, &st);
    long long uptime = st.start_time ? (long long)time(NULL) - st.start_time : 0;
    return json_pack("{s:s,s:I,s:I,s:I,s:o,s:I,s:{s:b,s:s}}", "role", "proxy", "at",
                     (json_int_t)(int64_t)pg_wall_ms(), "uptime", (json_int_t)uptime, "requests",
                     (json_int_t)get(&px.counters->requests), "forwards", forwards_json(), "nodes",
                     (json_int_t)px_nodes_known(), "mysql", "ok",
                     px_nodes_readable() && !mysql_down, "host", px_mysql_server());
}

/* Worker 0: the report, to a task worker. */
static void send_report(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    time_t now = time(NULL);
    if (task_id && now - asked_at < ASK_AGAIN_AFTER_S)
        return;
    json_t *r = report();
    char *text = r ? json_dumps(r, JSON_COMPACT) : NULL;
    json_decref(r);
    size_t len = text ? strlen(text) : 0;
    char *data = text ? malloc(sizeof(TASK_PREFIX) + len) : NULL;
    if (data) {
        memcpy(data, TASK_PREFIX, sizeof(TASK_PREFIX) - 1);
        memcpy(data + sizeof(TASK_PREFIX) - 1, text, len + 1);
        task_id = pg_server_task(px.server, data, sizeof(TASK_PREFIX) - 1 + len, -1);
        asked_at = now;
        if (task_id < 0)
            task_id = 0;   /* the queue is full: the next tick tries again */
    }
    free(data);
    free(text);
}

int px_status_finished(int64_t id, const char *data, size_t len)
{
    if (!task_id || id != task_id)
        return 0;
    task_id = 0;
    json_t *answer = json_loadb(data, len, 0, NULL);
    mysql_down = json_integer_value(json_object_get(answer, "code")) == PG_ERR_UNAVAILABLE;
    json_decref(answer);
    return 1;
}

/* Task worker: REPLACEs the row; answers PG_OK, PG_ERR_UNAVAILABLE (MySQL
 * cannot be reached: nodes.c logs the outage) or PG_ERR_INTERNAL (a
 * statement refused, e.g. no table yet: logged at most every 10 s). */
static int write_row(const char *json)
{
    static pg_ratelog refused_log;
    pg_db *db = px_task_db();
    if (!db)
        return PG_ERR_UNAVAILABLE;
    if (pg_status_write(db, daemon_id(), "proxy", json) == 0) {
        px_task_db_done(1);
        refused_log = (pg_ratelog){0};
        return PG_OK;
    }
    if (pg_db_unreachable(db)) {
        px_task_db_done(0);
        return PG_ERR_UNAVAILABLE;
    }
    pg_log_limited(&refused_log, PG_LOG_WARN, "status row not written: %s", pg_db_error(db));
    return PG_ERR_INTERNAL;
}

int px_status_task(const char *data, size_t len)
{
    size_t plen = sizeof(TASK_PREFIX) - 1;
    if (len < plen || memcmp(data, TASK_PREFIX, plen) != 0)
        return 0;
    char *json = strndup(data + plen, len - plen);
    int code = json ? write_row(json) : PG_ERR_INTERNAL;
    free(json);
    char answer[32];
    int n = snprintf(answer, sizeof(answer), "{\"code\":%d}", code);
    if (pg_server_finish(px.server, answer, (size_t)n) < 0)
        pg_error("could not answer a status task");
    return 1;
}

void px_status_worker_start(int worker_id)
{
    if (worker_id != 0)
        return;
    timer = pg_timer_tick(PG_STATUS_EVERY_MS, send_report, NULL);
    if (timer < 0)
        pg_error("cannot start the status timer");
}

void px_status_worker_stop(void)
{
    if (timer > 0)
        pg_timer_clear(timer);
    timer = 0;
}

void px_status_remove(void)
{
    char err[256];
    pg_db *db = pg_db_connect(&px.mysql, 2, 2, err, sizeof(err));
    if (!db || pg_status_remove(db, daemon_id()) < 0)
        pg_notice("status row of %s not removed: %s", daemon_id(), db ? pg_db_error(db) : err);
    pg_db_close(db);
}

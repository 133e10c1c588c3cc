/* task_server.c - the seed's second example: Receive -> task -> Finish.
 *
 * A worker hands each packet to a task worker; the task worker (synchronous,
 * where blocking work belongs) answers "task N: " followed by the packet, and
 * the worker's on_finish sends that back to the connection that asked.  A
 * packet "fire TEXT" fires the custom event "audit" instead, whose listener
 * runs in a task worker and logs TEXT; worker start and stop hooks log too.
 *
 *   task_server [-c FILE] [--set key=value ...]    (--help lists the settings) */
#include "daemon.h"
#include "idmap.h"
#include "log.h"
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *host;
    long long port;
} task_settings;

static const pg_conf_def task_defs[] = {
    {"host", PG_CONF_STRING, offsetof(task_settings, host), "127.0.0.1", 0, 0, NULL,
     "address to listen on"},
    {"port", PG_CONF_INT, offsetof(task_settings, port), "9802", 0, 65535, NULL,
     "port to listen on"},
};

/* Worker-local: which session asked for which task. */
static pg_idmap *pending_tasks;

static void on_start(pg_server *s, int worker_id)
{
    if (pg_server_role(s) == PG_ROLE_WORKER)
        pending_tasks = pg_idmap_new(64);
    pg_info("%s %d started", pg_server_role(s) == PG_ROLE_TASK ? "task worker" : "worker", worker_id);
}

static void on_stop(pg_server *s, int worker_id)
{
    if (pg_server_role(s) == PG_ROLE_TASK)
        pg_info("task worker %d stopping", worker_id);
    else
        pg_info("worker %d stopping with %zu task(s) unanswered", worker_id,
                pg_idmap_count(pending_tasks));
    pg_idmap_free(pending_tasks);
    pending_tasks = NULL;
}

static void on_receive(pg_server *s, pg_session_id session, int listener, const char *data,
                       size_t len)
{
    (void)listener;
    if (len > 5 && memcmp(data, "fire ", 5) == 0) {
        pg_server_fire_event(s, "audit", data + 5, len - 5);
        pg_server_send(s, session, "fired", 5);
        return;
    }
    int64_t task_id = pg_server_task(s, data, len, -1);
    /* Session ids are never 0, so they fit the map as values. */
    if (task_id < 0 || pg_idmap_put(pending_tasks, (uint64_t)task_id, (void *)(uintptr_t)session) < 0)
        pg_server_send(s, session, "error: task refused", 19);
}

static void on_task(pg_server *s, int64_t task_id, int from_worker, const char *data, size_t len)
{
    (void)task_id;
    (void)from_worker;
    char prefix[32];
    int n = snprintf(prefix, sizeof(prefix), "task %d: ", pg_server_worker_id(s));
    char *result = malloc((size_t)n + len);
    if (!result)
        return;
    memcpy(result, prefix, (size_t)n);
    memcpy(result + n, data, len);
    if (pg_server_finish(s, result, (size_t)n + len) < 0)
        pg_error("finish of a %zu-byte result failed", len);
    free(result);
}

static void on_finish(pg_server *s, int64_t task_id, const char *data, size_t len)
{
    void *session = pg_idmap_remove(pending_tasks, (uint64_t)task_id);
    if (session)
        pg_server_send(s, (pg_session_id)(uintptr_t)session, data, len);
}

static void on_audit(pg_server *s, const char *name, const char *data, size_t len, void *arg)
{
    (void)arg;
    pg_notice("event %s in task worker %d: %.*s", name, pg_server_worker_id(s), (int)len, data);
}

static void on_worker_error(pg_server *s, int worker_id, void *arg)
{
    (void)s;
    (void)arg;
    pg_warn("hook: worker %d failed", worker_id);
}

int main(int argc, char **argv)
{
    pg_server_settings settings;
    task_settings own;
    pg_conf_table tables[] = {
        {pg_server_conf_defs, pg_server_conf_ndefs, &settings},
        {task_defs, sizeof(task_defs) / sizeof(task_defs[0]), &own},
    };
    int rc = pg_daemon_init(argc, argv, "task_server", tables, 2);
    if (rc != 0)
        return rc < 0 ? 2 : 0;
    pg_server_callbacks cb = {.on_start = on_start, .on_stop = on_stop, .on_receive = on_receive,
                              .on_task = on_task, .on_finish = on_finish};
    pg_server *s = pg_server_new("task_server", &settings, &cb);
    pg_listen_options opts = pg_listen_options_from_settings(&settings);
    rc = 1;
    if (s && pg_server_add_event_listener(s, "audit", on_audit, NULL) == 0 &&
        pg_server_add_hook(s, PG_HOOK_WORKER_ERROR, on_worker_error, NULL) == 0 &&
        pg_server_listen(s, own.host, (int)own.port, &opts) >= 0)
        rc = pg_server_start(s);
    pg_server_free(s);
    pg_daemon_done(tables, 2);
    return rc;
}

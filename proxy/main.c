/* main.c - pushgate-proxy: relays pushes to the node that holds the browser.
 *
 * Gateways send /chat/push-local requests (length-prefixed JSON frames) for
 * sessions on other nodes; the proxy forwards each to the target node's
 * internal port over one persistent connection per node and worker, and
 * relays the answer.  This file holds the settings, the server and its
 * callbacks; proxy.h says what the other files do. */
#include "proxy.h"

#include "daemon.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

px_context px;

#define P(field) offsetof(px_settings, field)

static const pg_conf_def proxy_defs[] = {
    {"host", PG_CONF_STRING, P(host), "127.0.0.1", 0, 0, NULL, "address gateways connect to"},
    {"port", PG_CONF_INT, P(port), "9701", 1, 65535, NULL,
     "port of length-prefixed /chat/push-local frames from gateways"},
    {"workers_accept", PG_CONF_ENUM, P(workers_accept), "auto", 0, 0, PG_DIRECT_CHOICES,
     "true: the workers serve the gateways' links themselves, one process hop less each way, "
     "but a link closes with its worker (crash, reload) and the gateway stores what was in "
     "flight (false: through the reactor threads, which keep links across worker restarts); "
     "auto: true with worker_num <= 2"},
    {"nodes_refresh_ms", PG_CONF_INT, P(nodes_refresh_ms), "2000", 100, 3600000, NULL,
     "how often each worker rereads gateway_nodes (through a task worker)"},
    {"reply_timeout_ms", PG_CONF_INT, P(reply_timeout_ms), "3000", 100, 600000, NULL,
     "a target node that has not answered a push this long is unreachable"},
    {"handoff_timeout_ms", PG_CONF_INT, P(handoff_timeout_ms), "60000", 1000, 3600000, NULL,
     "a push delivered to a browser whose gateway waits for its ACK waits this long for the "
     "target node's final answer (more than the gateways' ack_timeout)"},
    {"max_in_flight", PG_CONF_INT, P(max_in_flight), "10000", 1, 10000000, NULL,
     "pushes awaiting an answer per target node and worker; past it: busy"},
    {"stats_interval", PG_CONF_INT, P(stats_interval), "60", 0, 86400, NULL,
     "seconds between stats lines in the log (0: none)"},
    {"metrics_host", PG_CONF_STRING, P(metrics_host), "127.0.0.1", 0, 0, NULL,
     "address of the HTTP port for /metrics and /healthz"},
    {"metrics_port", PG_CONF_INT, P(metrics_port), "0", 0, 65535, NULL,
     "HTTP port for /metrics (Prometheus) and /healthz (0: none)"},
};

static void on_start(pg_server *s, int id)
{
    if (pg_server_role(s) != PG_ROLE_WORKER)
        return;   /* task workers open MySQL on first use */
    px_targets_start();
    px_nodes_worker_start();
    px_stats_worker_start(id);
    px_metrics_worker_start(id);
    px_status_worker_start(id);
}

static void on_stop(pg_server *s, int id)
{
    (void)id;
    if (pg_server_role(s) == PG_ROLE_TASK) {
        px_nodes_task_stop();
        return;
    }
    px_status_worker_stop();
    px_metrics_worker_stop();
    px_stats_worker_stop();
    px_nodes_worker_stop();
    px_targets_stop();
}

static void on_receive(pg_server *s, pg_session_id session, int listener, const char *data,
                       size_t len)
{
    (void)s;
    (void)listener;
    px_request(session, data, len);
}

/* Two tasks: the status row's, and reading gateway_nodes. */
static void on_task(pg_server *s, int64_t task_id, int from, const char *data, size_t len)
{
    (void)s;
    (void)task_id;
    (void)from;
    if (!px_status_task(data, len))
        px_nodes_task();
}

static void on_finish(pg_server *s, int64_t task_id, const char *data, size_t len)
{
    (void)s;
    if (!px_status_finished(task_id, data, len))
        px_nodes_finished(data, len);
}

static int check_settings(void)
{
    char why[256];
    if (pg_db_settings_hosts(&px.mysql, &px.mysql_hosts, why, sizeof(why)) < 0) {
        pg_error("%s", why);
        return -1;
    }
    if (px.server_cfg.task_worker_num < 1) {
        pg_error("the proxy needs task_worker_num >= 1 (gateway_nodes is read in task workers)");
        return -1;
    }
    return 0;
}

/* Frames are always length-prefixed, whatever open_eof_split says: that is
 * what gateways send. */
static int listen_port(void)
{
    pg_listen_options opts = {.frame = {.kind = PG_FRAME_LENGTH,
                                        .max_length = px.server_cfg.package_max_length},
                              .batch_output = 1,
                              .direct = pg_direct_wanted(px.cfg.workers_accept,
                                                        px.server_cfg.worker_num)};
    return pg_server_listen(px.server, px.cfg.host, (int)px.cfg.port, &opts) < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
    pg_conf_table tables[] = {
        {pg_server_conf_defs, pg_server_conf_ndefs, &px.server_cfg},
        {proxy_defs, sizeof(proxy_defs) / sizeof(proxy_defs[0]), &px.cfg},
        {pg_db_conf_defs, pg_db_conf_ndefs, &px.mysql},
    };
    size_t ntables = sizeof(tables) / sizeof(tables[0]);
    int rc = pg_daemon_init(argc, argv, "pushgate-proxy", tables, ntables);
    if (rc != 0)
        return rc < 0 ? 2 : 0;
    pg_server_callbacks cb = {.on_start = on_start, .on_stop = on_stop, .on_receive = on_receive,
                              .on_task = on_task, .on_finish = on_finish};
    rc = 1;
    px.metrics_fd = -1;
    if (check_settings() == 0 && px_stats_create() == 0 && px_metrics_bind() == 0 &&
        (px.server = pg_server_new("pushgate-proxy", &px.server_cfg, &cb)) != NULL &&
        listen_port() == 0 && px_nodes_load() == 0)
        rc = pg_server_start(px.server);
    if (rc == 0)
        px_status_remove();
    pg_server_free(px.server);
    px_nodes_free();
    px_metrics_close();
    px_stats_free();
    pg_daemon_done(tables, ntables);
    return rc;
}

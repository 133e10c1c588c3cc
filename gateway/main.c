/* main.c - pushgate-gateway: the node browsers connect to.
 *
 * Public port (default 9501): HTTP and WebSocket for browsers (ws.c in the
 * reactor threads, browser.c and http.c in the workers).  Internal port
 * (default 9601, loopback unless configured): length-prefixed JSON frames
 * from the consumer and the proxy (internal.c).  Admin listener (admin_port,
 * loopback): the operators' HTTP without a token (http.c, admin.c).  Task
 * workers hold the MySQL connections (tasks.c).  See gateway.h for how the
 * files divide the work. */
#include "gateway.h"

#include "daemon.h"
#include "log.h"
#include "redis_sentinel.h"
#include "shm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

gw_context gw;

#define G(field) offsetof(gw_settings, field)

static const pg_conf_def gateway_defs[] = {
    {"host", PG_CONF_STRING, G(host), "0.0.0.0", 0, 0, NULL, "address of the public port"},
    {"port", PG_CONF_INT, G(port), "9501", 1, 65535, NULL, "public port: WebSocket at ws_path, HTTP"},
    {"internal_host", PG_CONF_STRING, G(internal_host), "127.0.0.1", 0, 0, NULL,
     "address of the internal port (consumer and proxy)"},
    {"internal_port", PG_CONF_INT, G(internal_port), "9601", 1, 65535, NULL, "internal port"},
    {"internal_eof", PG_CONF_BOOL, G(internal_eof), "false", 0, 0, NULL,
     "internal frames end with package_eof instead of a 4-byte length prefix"},
    {"internal_max_conn", PG_CONF_INT, G(internal_max_conn), "256", 1, 65536, NULL,
     "connections the internal port accepts (consumers, proxies), apart from max_conn, so "
     "browsers filling the node never lock them out"},
    {"internal_workers_accept", PG_CONF_ENUM, G(internal_workers_accept), "false", 0, 0,
     PG_DIRECT_CHOICES,
     "true: the workers serve the internal port's connections themselves, one process hop "
     "less each way, but each connection's orders go to one worker and it closes with its "
     "worker (the consumer and the proxy then send again what had no answer); auto: true "
     "with worker_num <= 2.  Off by default: one worker then takes a consumer's whole "
     "intake, and orders wait for it"},
    {"advertised_ip", PG_CONF_STRING, G(advertised_ip), "", 0, 0, NULL,
     "address other nodes and the proxy use to reach the internal port (empty: first non-loopback IPv4)"},
    {"ws_path", PG_CONF_STRING, G(ws_path), "/ws", 0, 0, NULL, "path of the WebSocket endpoint"},
    {"jwt_secret", PG_CONF_STRING, G(jwt_secret), "", 0, 0, NULL,
     "HS256 secret of browser tokens (required, 16 characters or more)"},
    {"jwt_secret_previous", PG_CONF_STRING, G(jwt_secret_previous), "", 0, 0, NULL,
     "the secret before jwt_secret, still accepted while a rotation is under way (empty: "
     "none; else 16 characters or more)"},
    {"allowed_origins", PG_CONF_STRING, G(allowed_origins), "", 0, 0, NULL,
     "comma-separated Origins allowed to open a WebSocket (empty: any)"},
    {"static_dir", PG_CONF_STRING, G(static_dir), "", 0, 0, NULL,
     "folder served at / (the agent console, and the cluster console at /admin.html); "
     "empty: none"},
    {"admin_secret", PG_CONF_STRING, G(admin_secret), "", 0, 0, NULL,
     "operator token for /stats, /metrics and /admin/cluster on the public port (Authorization: "
     "Bearer ...; 16 characters or more); a JWT with \"admin\": true signed with jwt_secret is "
     "one too (pushgate-ctl token --admin); empty: JWTs only"},
    {"admin_host", PG_CONF_STRING, G(admin_host), "127.0.0.1", 0, 0, NULL,
     "address of the admin listener"},
    {"admin_port", PG_CONF_INT, G(admin_port), "0", 0, 65535, NULL,
     "admin listener: /stats, /metrics, /admin/cluster and the consoles without a token, no "
     "WebSocket (for Prometheus and the operator's own host; 0: none)"},
    {"auth_timeout_ms", PG_CONF_INT, G(auth_timeout_ms), "10000", 100, 600000, NULL,
     "time a WebSocket opened without a token has to send CONNECT"},
    {"ack_timeout", PG_CONF_INT, G(ack_timeout), "30", 1, 86400, NULL,
     "seconds a pushed message may wait for its ACK before it goes back to the store"},
    {"mysql_wait_ms", PG_CONF_INT, G(mysql_wait_ms), "2000", 100, 600000, NULL,
     "how long an order or a relayed push waits for a task worker's MySQL work (its route, "
     "store or token check) before its sender hears 10503, try again later, which does "
     "not count as a failed attempt; below the consumer's and the proxy's reply_timeout_ms "
     "by more than the 0.5 s a first reply may be held"},
    {"max_pending_acks", PG_CONF_INT, G(max_pending_acks), "1000", 1, 1000000, NULL,
     "unacknowledged messages kept per connection; older ones go back to the store"},
    {"max_pending_bytes", PG_CONF_SIZE, G(max_pending_bytes), "256K", 4096, 1LL << 30, NULL,
     "bytes of unacknowledged messages kept per connection; older ones go back to the store"},
    {"header_timeout_ms", PG_CONF_INT, G(header_timeout_ms), "10000", 100, 600000, NULL,
     "time a client has to send its HTTP request headers"},
    {"max_header_size", PG_CONF_SIZE, G(max_header_size), "8K", 1024, 1 << 20, NULL,
     "largest HTTP request head"},
    {"max_incomplete_bytes", PG_CONF_SIZE, G(max_incomplete_bytes), "256M", 0, 1LL << 40, NULL,
     "bytes all browsers' WebSocket messages not yet complete may hold in the master, payload "
     "plus 64 per fragment (over: the browser is closed with 1013; 0: no limit)"},
    {"browser_input_wait_us", PG_CONF_INT, G(browser_input_wait_us), "1000", 0, 1000000, NULL,
     "microseconds a browser's message (mostly ACKs) may wait in the master for others to its "
     "worker, which then wakes once for many (0: no wait; rounded up to 1 ms)"},
    {"push_record_slots", PG_CONF_INT, G(push_record_slots), "1048576", 1024, 1LL << 28, NULL,
     "recent pushes remembered, 8 bytes each in shared memory, so that no browser gets one "
     "message twice from this node"},
    {"route_cache_entries", PG_CONF_INT, G(route_cache_entries), "65536", 0, 1LL << 24, NULL,
     "uuids whose sessions on other nodes are cached, 128 bytes each in shared memory once used, "
     "trusted while the route feed works (0: every order is looked up in MySQL)"},
    {"redis_host", PG_CONF_STRING, G(redis_host), "", 0, 0, NULL,
     "Redis of the route feed, which tells every node of every registration (empty: no "
     "feed, so no route cache: every order is looked up in MySQL)"},
    {"redis_port", PG_CONF_INT, G(redis_port), "6379", 1, 65535, NULL, "its port"},
    {"redis_sentinels", PG_CONF_STRING, G(redis_sentinels), "", 0, 0, NULL,
     "Redis Sentinel for the route feed: host:port[,host:port...] of sentinels, asked for the "
     "primary of redis_master_name and followed through failovers (empty: redis_host)"},
    {"redis_master_name", PG_CONF_STRING, G(redis_master_name), "pushgate", 0, 0, NULL,
     "with redis_sentinels: the name the sentinels monitor the primary by"},
    {"node_heartbeat_interval", PG_CONF_INT, G(node_heartbeat_interval), "5", 1, 3600, NULL,
     "seconds between heartbeats of this node's gateway_nodes row"},
    {"node_dead_after", PG_CONF_INT, G(node_dead_after), "30", 2, 86400, NULL,
     "a node silent this long is swept, with its online_clients rows"},
    {"proxy", PG_CONF_STRING, G(proxy), "", 0, 0, NULL,
     "proxies for cross-node pushes, ip:port[,ip:port...] tried in order (empty: store instead)"},
    {"chat_token", PG_CONF_STRING, G(chat_token), "", 0, 0, NULL,
     "app token (apps.chat_token) this node presents when it relays chat messages"},
    {"browser_rate", PG_CONF_INT, G(browser_rate), "20", 0, 1000000, NULL,
     "messages per second one connection may send, ACKs of what it was pushed apart (over "
     "it, after browser_burst: an error object, then a close with 1008; 0: no limit)"},
    {"browser_burst", PG_CONF_INT, G(browser_burst), "100", 1, 1000000, NULL,
     "messages one connection may send at once before browser_rate applies"},
    {"chat_per_minute", PG_CONF_INT, G(chat_per_minute), "120", 0, 1000000, NULL,
     "chat messages one sender (a uuid, all its tabs) may send per minute on this node, as "
     "many at once (over: error 10105; 0: no limit)"},
    {"chat_max_bytes", PG_CONF_SIZE, G(chat_max_bytes), "8K", 1, 1LL << 30, NULL,
     "largest chat message text (over: error 10106)"},
    {"max_offline_per_uuid", PG_CONF_INT, G(max_offline_per_uuid), "10000", 0, 1LL << 40, NULL,
     "stored messages one uuid may have before a new work order or chat message for it is "
     "refused with 10206, the sender's to keep (0: no limit)"},
    {"app_rate", PG_CONF_INT, G(app_rate), "0", 0, 100000000, NULL,
     "work orders per second one chat_token may send this node, after app_burst (over: "
     "10207, retry later; 0: no limit)"},
    {"app_burst", PG_CONF_INT, G(app_burst), "1000", 1, 100000000, NULL,
     "work orders one chat_token may send at once before app_rate applies"},
    {"flood_penalty_s", PG_CONF_INT, G(flood_penalty_s), "10", 0, 86400, NULL,
     "seconds a uuid closed for going over browser_rate is refused when it connects again "
     "(1008 right after the handshake, before any MySQL work; 0: not refused)"},
    {"max_tabs_per_uuid", PG_CONF_INT, G(max_tabs_per_uuid), "16", 0, 1000000, NULL,
     "connections one uuid may hold on this node (the next is closed with 1008; 0: any)"},
};

static void on_start(pg_server *s, int id)
{
    if (pg_server_role(s) == PG_ROLE_TASK) {
        gw_tasks_start(id);
    } else {
        gw_session_worker_start();
        gw_handoff_start();
        gw_limits_start();
        gw_proxy_start();
        gw_redeliver_start();
        gw_rejoin_start();
        gw_route_feed_start();
        gw_status_start(id);
    }
}

static void on_stop(pg_server *s, int id)
{
    (void)id;
    if (pg_server_role(s) == PG_ROLE_TASK) {
        gw_tasks_stop();
    } else {
        gw_route_stop();
        gw_internal_stop();
        gw_redeliver_stop();
        gw_rejoin_stop();
        gw_route_feed_stop();
        gw_proxy_stop();
        gw_store_stop();
        gw_session_worker_stop();
        gw_handoff_stop();
        gw_limits_stop();
        gw_token_forget_all();
    }
}

static void on_receive(pg_server *s, pg_session_id session, int listener, const char *data,
                       size_t len)
{
    (void)s;
    gw_metrics_intake_set(pg_prom_now_us());   /* what this pushes: intake to push */
    if (listener == GW_LISTENER_PUBLIC)
        gw_browser_message(session, data, len);
    else if (listener == GW_LISTENER_INTERNAL)
        gw_internal_request(session, data, len);
    else if (len > 0 && data[0] == GW_MSG_HTTP)
        gw_http_request(session, data + 1, len - 1, 1);
    gw_metrics_intake_set(0);
}

static void on_close(pg_server *s, pg_session_id session, int listener)
{
    (void)s;
    if (listener == GW_LISTENER_PUBLIC)
        gw_session_closed(session);
}

static void on_task(pg_server *s, int64_t task_id, int from, const char *data, size_t len)
{
    (void)s;
    (void)from;
    gw_task_handle(task_id, data, len);
}

/* A task's answer: a record (route_task.c). */
static void on_finish(pg_server *s, int64_t task_id, const char *data, size_t len)
{
    (void)s;
    (void)task_id;
    switch (len ? data[0] : 0) {
    case GW_TASK_ROUTED:
        gw_route_done(data, len);
        gw_metrics_intake_set(0);   /* route.c resumed each order's */
        break;
    case GW_TASK_STORED:
        gw_internal_stored(data, len);
        break;
    case GW_TASK_REGISTERED:
    case GW_TASK_PAGED:
        gw_session_registered(data, len);
        break;
    case GW_TASK_UNREGISTERED:
        gw_session_unregistered(data, len);
        break;
    case GW_TASK_TOKEN_CHECKED:
        gw_internal_token_checked(data, len);
        gw_metrics_intake_set(0);   /* internal.c resumed the request's */
        break;
    case GW_TASK_REDELIVER:
        gw_redeliver_answered(data, len);
        break;
    case GW_TASK_CLUSTER_ROWS:
        gw_admin_cluster_answered(data, len);
        break;
    default:
        pg_error("an unknown task answer of %zu bytes", len);
    }
}

static void on_pipe_message(pg_server *s, int from, const char *data, size_t len)
{
    (void)s;
    (void)from;
    if (len > 0 && data[0] == GW_PIPE_PUSH)
        gw_session_pipe_message(data + 1, len - 1);
    else if (len > 0 && data[0] == GW_PIPE_REDELIVER)
        gw_redeliver_pipe_message(data + 1, len - 1);
    else
        pg_error("unknown message of %zu bytes from worker %d", len, from);
}

static void on_master_stop(pg_server *s)
{
    (void)s;
    /* From now on nothing is pushed to this node's browsers, which are about
     * to be closed: a push could land in a worker already gone, after its
     * sender said "delivered".  Their messages are routed like anyone's who
     * is not here: to their new session elsewhere, or to the store. */
    atomic_store(&gw.counters->draining, 1);
    gw_node_draining();
}

/* mysql_hosts (or mysql_host and mysql_port) into gw.mysql_hosts: a bad
 * list stops the start, and workers show the servers by their place in it. */
static int check_mysql_hosts(void)
{
    char why[256];
    if (pg_db_settings_hosts(&gw.mysql, &gw.mysql_hosts, why, sizeof(why)) < 0) {
        pg_error("%s", why);
        return -1;
    }
    return 0;
}

static int check_settings(void)
{
    if (check_mysql_hosts() < 0)
        return -1;
    if (!gw.cfg.jwt_secret || strlen(gw.cfg.jwt_secret) < 16) {
        pg_error("jwt_secret must be set, 16 characters or more");
        return -1;
    }
    if (gw.cfg.jwt_secret_previous && *gw.cfg.jwt_secret_previous &&
        strlen(gw.cfg.jwt_secret_previous) < 16) {
        pg_error("jwt_secret_previous must be empty or 16 characters or more");
        return -1;
    }
    if (gw.cfg.admin_secret && *gw.cfg.admin_secret && strlen(gw.cfg.admin_secret) < 16) {
        pg_error("admin_secret must be empty or 16 characters or more");
        return -1;
    }
    if (gw.server_cfg.dispatch_mode != PG_DISPATCH_FIXED) {
        pg_error("the gateway needs dispatch_mode = 2: a browser's messages must reach the "
                 "worker that holds its session");
        return -1;
    }
    if (gw.server_cfg.task_worker_num < 1) {
        pg_error("the gateway needs task_worker_num >= 1 (MySQL runs in task workers)");
        return -1;
    }
    char err[256];
    if (pg_redis_sentinel_settings_check(gw.cfg.redis_sentinels, gw.cfg.redis_master_name, err,
                                         sizeof(err)) < 0) {
        pg_error("%s", err);
        return -1;
    }
    return 0;
}

static int listen_ports(void)
{
    gw.ws = (gw_ws_config){.ws_path = gw.cfg.ws_path, .jwt_secret = gw.cfg.jwt_secret,
                           .jwt_secret_previous = gw.cfg.jwt_secret_previous,
                           .allowed_origins = gw.cfg.allowed_origins,
                           .max_header_size = gw.cfg.max_header_size,
                           .header_timeout_ms = (uint32_t)gw.cfg.header_timeout_ms,
                           .max_message = gw.server_cfg.package_max_length,
                           .max_incomplete_bytes = gw.cfg.max_incomplete_bytes,
                           .input_wait_us = (uint32_t)gw.cfg.browser_input_wait_us};
    pg_listen_options pub = {.protocol = gw_ws_protocol(&gw.ws)};
    /* Replies carry the request's msg_id / req_id, so the consumer's and the
     * proxy's few busy connections can be shared by every worker.  A request
     * for a browser of this node goes to that browser's home worker, which
     * pushes it and takes its ACK itself; the others of a read stay
     * together, so that they are routed in one task. */
    pg_listen_options internal = {.frame = {.kind = PG_FRAME_LENGTH,
                                            .max_length = gw.server_cfg.package_max_length},
                                  .dispatch_mode = PG_DISPATCH_ROUND_ROBIN,
                                  .max_conn = gw.cfg.internal_max_conn, .batch_output = 1,
                                  .round_robin_reads = 1, .prefer_worker = gw_internal_worker,
                                  .direct = pg_direct_wanted(gw.cfg.internal_workers_accept,
                                                            gw.server_cfg.worker_num)};
    if (gw.cfg.internal_eof) {
        internal.frame.kind = PG_FRAME_EOF;
        internal.frame.eof = gw.server_cfg.package_eof.data;
        internal.frame.eof_len = gw.server_cfg.package_eof.len;
    }
    if (pg_server_listen(gw.server, gw.cfg.host, (int)gw.cfg.port, &pub) != GW_LISTENER_PUBLIC ||
        pg_server_listen(gw.server, gw.cfg.internal_host, (int)gw.cfg.internal_port, &internal) !=
            GW_LISTENER_INTERNAL)
        return -1;
    if (gw.cfg.admin_port == 0)
        return 0;
    gw.ws_admin = gw.ws;
    gw.ws_admin.no_websocket = 1;
    pg_listen_options admin = {.protocol = gw_ws_protocol(&gw.ws_admin), .max_conn = 64};
    return pg_server_listen(gw.server, gw.cfg.admin_host, (int)gw.cfg.admin_port, &admin) ==
                   GW_LISTENER_ADMIN ? 0 : -1;
}

int main(int argc, char **argv)
{
    pg_conf_table tables[] = {
        {pg_server_conf_defs, pg_server_conf_ndefs, &gw.server_cfg},
        {gateway_defs, sizeof(gateway_defs) / sizeof(gateway_defs[0]), &gw.cfg},
        {pg_db_conf_defs, pg_db_conf_ndefs, &gw.mysql},
    };
    size_t ntables = sizeof(tables) / sizeof(tables[0]);
    int rc = pg_daemon_init(argc, argv, "pushgate-gateway", tables, ntables);
    if (rc != 0)
        return rc < 0 ? 2 : 0;
    pg_server_callbacks cb = {.on_start = on_start, .on_stop = on_stop, .on_receive = on_receive,
                              .on_close = on_close, .on_task = on_task, .on_finish = on_finish,
                              .on_pipe_message = on_pipe_message, .on_master_stop = on_master_stop};
    rc = 1;
    if (check_settings() == 0 &&
        (gw.counters = pg_shm_alloc(sizeof(*gw.counters))) != NULL &&
        gw_sessions_create((uint32_t)gw.server_cfg.max_conn) == 0 &&
        gw_uuid_index_create((uint32_t)gw.server_cfg.max_conn) == 0 &&
        gw_push_record_create((uint32_t)gw.cfg.push_record_slots) == 0 &&
        gw_route_cache_create((uint32_t)gw.cfg.route_cache_entries) == 0 &&
        gw_limits_create(GW_APPS_MAX + (uint32_t)gw.server_cfg.max_conn) == 0 &&
        gw_penalties_create(GW_PENALTIES_MAX) == 0 &&
        gw_handoff_create(GW_HANDOFF_TICKETS) == 0 &&
        (gw.server = pg_server_new("pushgate-gateway", &gw.server_cfg, &cb)) != NULL &&
        listen_ports() == 0 && gw_node_register() == 0) {
        pg_server_set_generation(gw.server, gw.generation);
        rc = pg_server_start(gw.server);
        gw_node_unregister();
    }
    pg_server_free(gw.server);
    pg_table_destroy(gw.sessions);
    gw_uuid_index_destroy();
    gw_push_record_destroy();
    gw_route_cache_destroy();
    gw_limits_destroy();
    gw_penalties_destroy();
    gw_handoff_destroy();
    if (gw.counters)
        pg_shm_free(gw.counters, sizeof(*gw.counters));
    pg_daemon_done(tables, ntables);
    return rc;
}

/* node.c - this node's row in gateway_nodes.
 *
 * The master registers the node before it forks (so a node whose MySQL is
 * unreachable fails at start, clearly), deletes the online_clients rows a
 * previous run of the same address left behind, and takes the next boot
 * generation, which makes session ids (and so client_ids) never repeat on
 * this address.  Task worker 0 heartbeats the row and sweeps nodes that
 * stopped heartbeating, with their online rows.  On SIGTERM the row is
 * marked draining, and after the stop it is removed with the node's rows. */
#include "gateway.h"

#include "log.h"
#include "timer.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static void pick_node_ip(void)
{
    if (gw.cfg.advertised_ip && *gw.cfg.advertised_ip) {
        snprintf(gw.node_ip, sizeof(gw.node_ip), "%s", gw.cfg.advertised_ip);
        return;
    }
    snprintf(gw.node_ip, sizeof(gw.node_ip), "127.0.0.1");
    struct ifaddrs *list;
    if (getifaddrs(&list) < 0)
        return;
    for (struct ifaddrs *i = list; i; i = i->ifa_next)
        if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && !(i->ifa_flags & IFF_LOOPBACK) &&
            (i->ifa_flags & IFF_UP)) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, gw.node_ip,
                      sizeof(gw.node_ip));
            break;
        }
    freeifaddrs(list);
}

static pg_db *open_db(void)
{
    pg_db_config c = {.host = gw.cfg.mysql_host, .port = (int)gw.cfg.mysql_port,
                      .socket = gw.cfg.mysql_socket, .user = gw.cfg.mysql_user,
                      .password = gw.cfg.mysql_password, .database = gw.cfg.mysql_database,
                      .connect_timeout_s = 5, .read_timeout_s = 10, .write_timeout_s = 10};
    char err[256];
    pg_db *db = pg_db_open(&c, err, sizeof(err));
    if (!db)
        pg_error("MySQL %s:%lld: %s", gw.cfg.mysql_host, gw.cfg.mysql_port, err);
    return db;
}

static int previous_generation(void *arg, const pg_db_value *cols, int ncols)
{
    if (ncols > 0 && cols[0].type == PG_DB_INT)
        *(long long *)arg = cols[0].i;
    return 0;
}

static int remove_rows(pg_db *db)
{
    pg_db_value node[] = {PG_DB_STR_VALUE(gw.node_ip), PG_DB_INT_VALUE(gw.cfg.internal_port)};
    return pg_db_exec(db, "DELETE FROM online_clients WHERE node_ip = ? AND node_port = ?", node, 2,
                      NULL, NULL);
}

int gw_node_register(void)
{
    pick_node_ip();
    snprintf(gw.node_id, sizeof(gw.node_id), "%s:%lld", gw.node_ip, gw.cfg.internal_port);
    pg_db *db = open_db();
    if (!db)
        return -1;
    long long previous = -1;
    pg_db_value id = PG_DB_STR_VALUE(gw.node_id);
    int rc = pg_db_query(db, "SELECT boot_generation FROM gateway_nodes WHERE node_id = ?", &id, 1,
                         previous_generation, &previous) < 0 ? -1 : 0;
    /* Next after the last boot; from the clock when the row was swept. */
    long long generation = previous >= 0 ? previous + 1 : (long long)time(NULL);
    gw.generation = (uint32_t)generation & ((UINT32_C(1) << PG_SESSION_GENERATION_BITS) - 1);
    pg_db_value row[] = {id, PG_DB_STR_VALUE(gw.node_ip), PG_DB_INT_VALUE(gw.cfg.port),
                         PG_DB_INT_VALUE(gw.cfg.internal_port), PG_DB_INT_VALUE(generation)};
    if (rc == 0)
        rc = remove_rows(db);
    if (rc == 0)
        rc = pg_db_exec(db, "REPLACE INTO gateway_nodes (node_id, ip, ws_port, internal_port, "
                            "boot_generation, state) VALUES (?,?,?,?,?,'up')", row, 5, NULL, NULL);
    if (rc < 0)
        pg_error("registering node %s: %s", gw.node_id, pg_db_error(db));
    else
        pg_notice("node %s registered, boot generation %lld", gw.node_id, generation);
    pg_db_close(db);
    return rc;
}

void gw_node_draining(void)
{
    pg_db *db = open_db();
    if (!db)
        return;
    pg_db_value id = PG_DB_STR_VALUE(gw.node_id);
    if (pg_db_exec(db, "UPDATE gateway_nodes SET state = 'draining' WHERE node_id = ?", &id, 1,
                   NULL, NULL) < 0)
        pg_warn("marking node %s draining: %s", gw.node_id, pg_db_error(db));
    pg_db_close(db);
}

void gw_node_unregister(void)
{
    pg_db *db = open_db();
    if (!db)
        return;
    pg_db_value id = PG_DB_STR_VALUE(gw.node_id);
    if (remove_rows(db) < 0 ||
        pg_db_exec(db, "DELETE FROM gateway_nodes WHERE node_id = ?", &id, 1, NULL, NULL) < 0)
        pg_warn("removing node %s: %s", gw.node_id, pg_db_error(db));
    else
        pg_notice("node %s removed", gw.node_id);
    pg_db_close(db);
}

static void heartbeat(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    pg_db *db = gw_db();
    if (!db)
        return;
    pg_db_value id = PG_DB_STR_VALUE(gw.node_id);
    pg_db_value dead = PG_DB_INT_VALUE(gw.cfg.node_dead_after);
    unsigned long long touched = 0, swept = 0;
    int rc = pg_db_exec(db, "UPDATE gateway_nodes SET heartbeat_at = CURRENT_TIMESTAMP(3) "
                            "WHERE node_id = ?", &id, 1, &touched, NULL);
    if (rc == 0 && touched == 0) {
        pg_warn("node %s was swept while alive (heartbeats late?); registering again", gw.node_id);
        pg_db_value row[] = {id, PG_DB_STR_VALUE(gw.node_ip), PG_DB_INT_VALUE(gw.cfg.port),
                             PG_DB_INT_VALUE(gw.cfg.internal_port), PG_DB_INT_VALUE(gw.generation)};
        rc = pg_db_exec(db, "REPLACE INTO gateway_nodes (node_id, ip, ws_port, internal_port, "
                            "boot_generation, state) VALUES (?,?,?,?,?,'up')", row, 5, NULL, NULL);
    }
    if (rc == 0)
        rc = pg_db_exec(db, "DELETE c FROM online_clients c JOIN gateway_nodes n "
                            "ON c.node_ip = n.ip AND c.node_port = n.internal_port "
                            "WHERE n.heartbeat_at < CURRENT_TIMESTAMP(3) - INTERVAL ? SECOND",
                        &dead, 1, &swept, NULL);
    if (rc == 0)
        rc = pg_db_exec(db, "DELETE FROM gateway_nodes "
                            "WHERE heartbeat_at < CURRENT_TIMESTAMP(3) - INTERVAL ? SECOND",
                        &dead, 1, NULL, NULL);
    if (swept > 0)
        pg_notice("swept %llu online row(s) of nodes silent for over %lld s", swept,
                  gw.cfg.node_dead_after);
    if (rc < 0)
        pg_warn("node heartbeat: %s", pg_db_error(db));
    gw_mysql_result(rc == 0);
}

void gw_node_start_heartbeat(void)
{
    pg_timer_tick((uint32_t)(gw.cfg.node_heartbeat_interval * 1000), heartbeat, NULL);
}

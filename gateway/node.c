/* node.c - this node's row in gateway_nodes.
 *
 * The master registers the node before it forks (so a node whose MySQL is
 * unreachable fails at start, clearly), deletes the online_clients rows a
 * previous run of the same address left behind, and takes the next boot
 * generation (node_generations keeps it across stops), which makes session
 * ids, and so client_ids, never repeat on this address.  The last task
 * worker heartbeats the row and sweeps nodes that stopped heartbeating,
 * with their online rows.  On SIGTERM the row is
 * marked draining, and after the stop it is removed with the node's rows
 * and its report in daemon_status (status.c); the sweep also removes
 * reports that no daemon has renewed for a day. */
#include "gateway.h"

#include "daemon_status.h"
#include "log.h"
#include "timer.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
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
    char err[512];
    pg_db *db = pg_db_connect(&gw.mysql, 5, 10, err, sizeof(err));
    if (!db)
        pg_error("%s", err);
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
    pg_db_share(&gw.counters->mysql_where);   /* before the fork: every process counts there */
    pg_db *db = open_db();
    if (!db)
        return -1;
    long long previous = -1;
    pg_db_value id = PG_DB_STR_VALUE(gw.node_id);
    int rc = pg_db_query(db, "SELECT boot_generation FROM node_generations WHERE node_id = ?", &id, 1,
                         previous_generation, &previous) < 0 ? -1 : 0;
    /* Next after the last boot; from the clock for a new address. */
    long long generation = previous >= 0 ? previous + 1 : (long long)time(NULL);
    gw.boot_generation = generation;
    gw.generation = (uint32_t)generation & ((UINT32_C(1) << PG_SESSION_GENERATION_BITS) - 1);
    pg_db_value row[] = {id, PG_DB_STR_VALUE(gw.node_ip), PG_DB_INT_VALUE(gw.cfg.port),
                         PG_DB_INT_VALUE(gw.cfg.internal_port), PG_DB_INT_VALUE(generation)};
    pg_db_value taken[] = {id, PG_DB_INT_VALUE(generation)};
    if (rc == 0)
        rc = pg_db_exec(db, "REPLACE INTO node_generations (node_id, boot_generation) VALUES (?,?)",
                        taken, 2, NULL, NULL);
    if (rc == 0)
        rc = remove_rows(db);
    if (rc == 0)
        rc = pg_db_exec(db, "REPLACE INTO gateway_nodes (node_id, ip, ws_port, internal_port, "
                            "boot_generation, state) VALUES (?,?,?,?,?,'up')", row, 5, NULL, NULL);
    if (rc < 0)
        pg_error("registering node %s: %s", gw.node_id, pg_db_error(db));
    else
        pg_notice("node %s registered, boot generation %lld", gw.node_id, generation);
    atomic_store(&gw.counters->mysql_ok, rc == 0);   /* /stats says so before any task ran */
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
        pg_db_exec(db, "DELETE FROM gateway_nodes WHERE node_id = ?", &id, 1, NULL, NULL) < 0 ||
        pg_status_remove(db, gw_status_id()) < 0)
        pg_warn("removing node %s: %s", gw.node_id, pg_db_error(db));
    else
        pg_notice("node %s removed", gw.node_id);
    pg_db_close(db);
}

/* The node's row again, after it was swept while alive.  Its sessions'
 * rows come back one by one as each browser shows it is still there
 * (rejoin.c): some may have moved to other nodes meanwhile. */
static int register_again(pg_db *db)
{
    pg_warn("node %s was swept while alive (heartbeats late?); registering again", gw.node_id);
    pg_db_value row[] = {PG_DB_STR_VALUE(gw.node_id), PG_DB_STR_VALUE(gw.node_ip),
                         PG_DB_INT_VALUE(gw.cfg.port), PG_DB_INT_VALUE(gw.cfg.internal_port),
                         PG_DB_INT_VALUE(gw.boot_generation)};
    int rc = pg_db_exec(db, "REPLACE INTO gateway_nodes (node_id, ip, ws_port, internal_port, "
                            "boot_generation, state) VALUES (?,?,?,?,?,'up')", row, 5, NULL, NULL);
    if (rc == 0)
        atomic_store(&gw.counters->swept_at_ms, pg_now_ms());
    return rc;
}

/* Nodes silent for node_dead_after go, with their online rows, in one
 * statement: a node's heartbeat that MySQL runs meanwhile either comes
 * first (the node stays, rows and all) or finds its row gone (touched ==
 * 0: it registers again and its browsers rejoin).  Two statements let a
 * heartbeat land between them, leaving a live node whose browsers' rows
 * were gone and which never knew it was swept. */
static int sweep(pg_db *db)
{
    pg_db_value dead = PG_DB_INT_VALUE(gw.cfg.node_dead_after);
    unsigned long long swept = 0;
    int rc = pg_db_exec(db, "DELETE n, c FROM gateway_nodes n LEFT JOIN online_clients c "
                            "ON c.node_ip = n.ip AND c.node_port = n.internal_port "
                            "WHERE n.heartbeat_at < CURRENT_TIMESTAMP(3) - INTERVAL ? SECOND",
                        &dead, 1, &swept, NULL);
    /* reports of daemons long gone (killed, never stopped cleanly) */
    if (rc == 0)
        rc = pg_db_exec(db, "DELETE FROM daemon_status "
                            "WHERE updated_at < CURRENT_TIMESTAMP(3) - INTERVAL 1 DAY", NULL, 0,
                        NULL, NULL);
    if (swept > 0)
        pg_notice("swept %llu row(s) of gateway_nodes and online_clients: nodes silent for "
                  "over %lld s", swept, gw.cfg.node_dead_after);
    return rc;
}

/* Only a node that has itself heartbeated for node_dead_after, beat after
 * beat, sweeps: after a MySQL outage every row looks stale, and live nodes
 * need a window to heartbeat again.  An outage is a failed beat, or a beat
 * that came over two intervals after the last good one: a MySQL that
 * hangs rather than refuses lets the statement in flight succeed when it
 * wakes, and this task worker's loop waits with it. */
static void heartbeat(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    static uint64_t healthy_since_ms, last_good_ms;
    uint64_t interval_ms = (uint64_t)gw.cfg.node_heartbeat_interval * 1000;
    pg_db *db = gw_db();
    pg_db_value id = PG_DB_STR_VALUE(gw.node_id);
    unsigned long long touched = 0;
    int rc = db ? pg_db_exec(db, "UPDATE gateway_nodes SET heartbeat_at = CURRENT_TIMESTAMP(3) "
                                 "WHERE node_id = ?", &id, 1, &touched, NULL) : -1;
    if (rc == 0 && touched == 0)
        rc = register_again(db);
    uint64_t now = pg_now_ms();
    if (rc < 0)
        healthy_since_ms = last_good_ms = 0;
    else if (healthy_since_ms == 0 || now - last_good_ms > 2 * interval_ms)
        healthy_since_ms = now;
    if (rc == 0)
        last_good_ms = now;
    if (rc == 0 && now - healthy_since_ms >= (uint64_t)gw.cfg.node_dead_after * 1000)
        rc = sweep(db);
    if (db)
        gw_mysql_result(rc);   /* logged there: an outage once, not at every beat */
}

void gw_node_start_heartbeat(void)
{
    pg_timer_tick((uint32_t)(gw.cfg.node_heartbeat_interval * 1000), heartbeat, NULL);
}

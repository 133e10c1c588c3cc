/* nodes.c - the gateways the consumer sends to, and which one an order goes
 * to: the one its route hint names (hints.c), else round robin.
 *
 * Either a static list (setting gateways) or the rows of gateway_nodes with
 * state 'up', read again every nodes_refresh_ms on the MySQL thread
 * (mysql.c), so a slow or hung MySQL holds up no order; when MySQL is
 * unreachable the last known list stays in use.  A node that leaves the
 * list is retired: it gets no new requests and its connection is closed
 * once its in-flight requests are answered (a draining gateway still
 * answers them). */
#include "consumer.h"

#include "db.h"
#include "log.h"
#include "timer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NODES 1024

typedef struct {
    char ip[64];
    int port;
} node_addr;

typedef struct {
    node_addr *v;
    size_t n;
} node_rows;

static cs_gateway *live[MAX_NODES];
static size_t nlive;
static cs_gateway *retiring[MAX_NODES];
static size_t nretiring;
static size_t rr;
static int64_t refresh_timer;
static pg_ratelog none_log;
static bool had_gateway;        /* gateway_nodes listed one since the start */
static node_addr row_buf[MAX_NODES];
static node_rows fetched = {.v = row_buf};  /* filled on the MySQL thread, read in done */

static int add_live(const char *ip, int port)
{
    if (nlive >= MAX_NODES) {
        pg_error("more than %d gateways: %s:%d ignored", MAX_NODES, ip, port);
        return -1;
    }
    cs_gateway *g = cs_gateway_new(ip, port);
    if (!g)
        return -1;
    live[nlive++] = g;
    return 0;
}

/* "ip:port" or "[ipv6]:port" */
static int parse_one(char *item)
{
    char *colon = strrchr(item, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (!colon || colon == item || !end || *end || port < 1 || port > 65535) {
        pg_error("gateways: '%s' is not ip:port", item);
        return -1;
    }
    *colon = '\0';
    char *ip = item;
    size_t n = strlen(ip);
    if (ip[0] == '[' && n > 2 && ip[n - 1] == ']') {
        ip[n - 1] = '\0';
        ip++;
    }
    return add_live(ip, (int)port);
}

static int parse_static(void)
{
    char *copy = strdup(cs.cfg.gateways);
    if (!copy)
        return -1;
    int rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ", \t", &save); tok && rc == 0;
         tok = strtok_r(NULL, ", \t", &save))
        rc = parse_one(tok);
    free(copy);
    if (rc == 0 && nlive == 0) {
        pg_error("gateways: no ip:port given");
        rc = -1;
    }
    if (rc == 0)
        pg_info("gateways (static): %s", cs.cfg.gateways);
    return rc;
}

static int on_row(void *arg, const pg_db_value *cols, int ncols)
{
    node_rows *rows = arg;
    if (ncols < 2 || cols[0].type != PG_DB_STRING || cols[0].len == 0 || cols[0].len >= 64 ||
        cols[1].type != PG_DB_INT || rows->n >= MAX_NODES)
        return 0;
    node_addr *a = &rows->v[rows->n++];
    memcpy(a->ip, cols[0].s, cols[0].len);
    a->ip[cols[0].len] = '\0';
    a->port = (int)cols[1].i;
    return 0;
}

static bool in_rows(const node_rows *rows, const cs_gateway *g)
{
    for (size_t i = 0; i < rows->n; i++)
        if (rows->v[i].port == g->port && strcmp(rows->v[i].ip, g->ip) == 0)
            return true;
    return false;
}

static bool is_live(const node_addr *a)
{
    for (size_t i = 0; i < nlive; i++)
        if (live[i]->port == a->port && strcmp(live[i]->ip, a->ip) == 0)
            return true;
    return false;
}

static void retire_at(size_t i)
{
    cs_gateway *g = live[i];
    live[i] = live[--nlive];
    pg_info("gateway %s left gateway_nodes (%zu requests in flight finish there)", g->name,
            g->inflight.n);
    retiring[nretiring++] = g;
    cs_gateway_retire(g);
}

/* A consumer started before the gateways waits as planned, and says so once;
 * only the gateways it had all going away is an outage worth a warning. */
static void report_none(void)
{
    static bool said_waiting;
    if (had_gateway) {
        pg_log_limited(&none_log, PG_LOG_WARN, "no gateway is up in gateway_nodes: entries wait");
    } else if (!said_waiting) {
        said_waiting = true;
        pg_info("no gateway is up in gateway_nodes yet: waiting for the first to register");
    }
}

static void apply_rows(const node_rows *rows)
{
    size_t before = nlive;
    for (size_t i = nlive; i-- > 0;)
        if (!in_rows(rows, live[i]) && nretiring < MAX_NODES)
            retire_at(i);
    for (size_t i = 0; i < rows->n; i++) {
        if (is_live(&rows->v[i]))
            continue;
        if (add_live(rows->v[i].ip, rows->v[i].port) == 0)
            pg_info("gateway %s:%d joined (gateway_nodes)", rows->v[i].ip, rows->v[i].port);
    }
    if (nlive == 0)
        report_none();
    else if (before == 0)
        none_log.last_ms = 0;
    had_gateway = had_gateway || nlive > 0;
}

static int read_rows(pg_db *db, void *arg)
{
    node_rows *into = arg;
    into->n = 0;
    return pg_db_query(db, "SELECT ip, internal_port FROM gateway_nodes WHERE state = 'up'",
                       NULL, 0, on_row, into) < 0 ? -1 : 0;
}

static void rows_read(int rc, void *arg)
{
    if (rc == 0 && !cs.stopping)
        apply_rows(arg);
}

static cs_mysql_job refresh_job = {.what = "reading gateway_nodes", .run = read_rows,
                                   .done = rows_read, .arg = &fetched, .drop_on_error = true};

static void on_refresh(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    if (!cs.stopping)
        cs_mysql_submit(&refresh_job);
}

int cs_nodes_start(void)
{
    if (*cs.cfg.gateways)
        return parse_static();
    char servers[512];
    pg_db_hosts_describe(&cs.mysql_hosts, servers, sizeof(servers));
    pg_info("gateways: from gateway_nodes in MySQL %s/%s, every %lld ms", servers,
            cs.mysql.database, cs.cfg.nodes_refresh_ms);
    cs_mysql_submit(&refresh_job);
    refresh_timer = pg_timer_tick((uint32_t)cs.cfg.nodes_refresh_ms, on_refresh, NULL);
    if (refresh_timer < 0) {
        pg_error("no timer for the gateway refresh");
        return -1;
    }
    return 0;
}

void cs_nodes_stop(void)
{
    if (refresh_timer > 0)
        pg_timer_clear(refresh_timer);
    refresh_timer = 0;
    while (nlive > 0)
        cs_gateway_free(live[--nlive]);
    while (nretiring > 0)
        cs_gateway_free(retiring[--nretiring]);
}

void cs_nodes_retired(cs_gateway *g)
{
    for (size_t i = 0; i < nretiring; i++) {
        if (retiring[i] == g) {
            retiring[i] = retiring[--nretiring];
            break;
        }
    }
    cs_gateway_free(g);
}

/* The live gateway e's hint names, if it has room and was not e's last. */
static cs_gateway *hinted(const cs_entry *e)
{
    const char *ip;
    int port;
    if (cs_hints_find(e->hint_key, &ip, &port) < 0)
        return NULL;
    for (size_t i = 0; i < nlive; i++) {
        cs_gateway *g = live[i];
        if (g->port == port && strcmp(g->ip, ip) == 0)
            return g->id != e->last_gw && cs_gateway_has_room(g) ? g : NULL;
    }
    return NULL;
}

cs_gateway *cs_nodes_pick(const cs_entry *e)
{
    cs_gateway *fallback = NULL, *g = hinted(e);
    uint64_t avoid = e->last_gw;
    if (g) {
        cs.stats.hinted++;
        return g;
    }
    for (size_t k = 0; k < nlive; k++) {
        size_t i = (rr + k) % nlive;
        g = live[i];
        if (!cs_gateway_has_room(g))
            continue;
        if (g->id != avoid) {
            rr = i + 1;
            return g;
        }
        fallback = g;
    }
    return fallback;
}

size_t cs_nodes_up(void)
{
    size_t n = 0;
    for (size_t i = 0; i < nlive; i++)
        n += live[i]->state == CS_GW_UP;
    return n;
}

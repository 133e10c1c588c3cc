/* settings.c - pushgate-consumer's settings: one table, so --help,
 * config/consumer.ini, PUSHGATE_<KEY> and --set all come from the same
 * definitions (common/config.h).  The consumer runs no server engine, so it
 * does not use pg_daemon_init and its server settings. */
#include "consumer.h"

#include "config.h"
#include "redis_cluster.h"
#include "redis_sentinel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define C(field) offsetof(cs_settings, field)

static const pg_conf_def consumer_defs[] = {
    {"redis_host", PG_CONF_STRING, C(redis_host), "127.0.0.1", 0, 0, NULL,
     "Redis host (IP address or name)"},
    {"redis_port", PG_CONF_INT, C(redis_port), "6379", 1, 65535, NULL, "Redis port"},
    {"redis_sentinels", PG_CONF_STRING, C(redis_sentinels), "", 0, 0, NULL,
     "Redis Sentinel: host:port[,host:port...] of sentinels, asked for the primary of "
     "redis_master_name and followed through failovers (empty: redis_host and redis_port)"},
    {"redis_master_name", PG_CONF_STRING, C(redis_master_name), "pushgate", 0, 0, NULL,
     "with redis_sentinels: the name the sentinels monitor the primary by"},
    {"redis_cluster_nodes", PG_CONF_STRING, C(redis_cluster_nodes), "", 0, 0, NULL,
     "Redis Cluster: host:port[,host:port...] of nodes asked for the slot map (CLUSTER SLOTS); "
     "each stream is read from the primary serving its slot (empty: no cluster)"},
    {"stream", PG_CONF_STRING, C(stream), "pushgate:worksheets", 0, 0, NULL,
     "stream the producers XADD work orders to (field msg); several (shards): a comma list, "
     "or a brace range, pushgate:worksheets:{0..7} (8 streams, each its own cluster hash tag)"},
    {"group", PG_CONF_STRING, C(group), "pushgate", 0, 0, NULL,
     "consumer group (created with MKSTREAM from the start of the stream when missing)"},
    {"consumer", PG_CONF_STRING, C(consumer), "", 0, 0, NULL,
     "name of this consumer in the group (empty: hostname-pid)"},
    {"count", PG_CONF_INT, C(count), "100", 1, 100000, NULL, "entries asked for per XREADGROUP"},
    {"block_ms", PG_CONF_INT, C(block_ms), "2000", 1, 600000, NULL,
     "XREADGROUP waits this long for new entries before asking again"},
    {"gateways", PG_CONF_STRING, C(gateways), "", 0, 0, NULL,
     "static list of gateway internal ports ip:port[,ip:port...] (empty: gateway_nodes in MySQL)"},
    {"nodes_refresh_ms", PG_CONF_INT, C(nodes_refresh_ms), "3000", 100, 3600000, NULL,
     "how often the live gateways are read from gateway_nodes (on a thread of its own, off the "
     "path of orders)"},
    {"max_in_flight", PG_CONF_INT, C(max_in_flight), "10000", 1, 1000000, NULL,
     "entries held at most: read from Redis and not yet acknowledged (also per gateway "
     "connection)"},
    {"reply_timeout_ms", PG_CONF_INT, C(reply_timeout_ms), "5000", 100, 3600000, NULL,
     "a gateway's reply must come within this time, else the entry is retried elsewhere"},
    {"wait_for_acks", PG_CONF_BOOL, C(wait_for_acks), "true", 0, 0, NULL,
     "XACK an entry only once every browser it reached has ACKed it or it is stored "
     "(false: once it is pushed)"},
    {"handoff_timeout_ms", PG_CONF_INT, C(handoff_timeout_ms), "60000", 1000, 3600000, NULL,
     "with wait_for_acks, the gateway's second reply must come within this time (more than "
     "the gateways' ack_timeout), else the entry is retried"},
    {"max_deliveries", PG_CONF_INT, C(max_deliveries), "5", 1, 1000, NULL,
     "attempts (Redis delivery count) before an entry goes to the dead-letter stream"},
    {"trim_interval_ms", PG_CONF_INT, C(trim_interval_ms), "5000", 0, 86400000, NULL,
     "how often each stream loses the entries that every consumer group of it has read and "
     "XACKed (XTRIM MINID; 0: never, the streams keep every entry)"},
    {"claim_min_idle_ms", PG_CONF_INT, C(claim_min_idle_ms), "30000", 100, 86400000, NULL,
     "entries pending this long with a (dead) consumer are reclaimed with XAUTOCLAIM"},
    {"dead_letter_stream", PG_CONF_STRING, C(dead_letter_stream), "pushgate:worksheets:dead", 0, 0,
     NULL, "stream for entries that cannot be delivered (fields msg, reason, source_id, "
     "source_stream, deliveries)"},
    {"max_message_size", PG_CONF_SIZE, C(max_message_size), "2M", 256, 1 << 30, NULL,
     "larger entries go to the dead-letter stream (keep it within the gateways' "
     "package_max_length)"},
    {"log_level", PG_CONF_ENUM, C(log_level), "info", 0, 0, "debug|info|notice|warn|error",
     "lowest level written"},
    {"log_file", PG_CONF_STRING, C(log_file), "", 0, 0, NULL, "log file (empty: stderr)"},
    {"metrics_host", PG_CONF_STRING, C(metrics_host), "127.0.0.1", 0, 0, NULL,
     "address of the HTTP port for /metrics and /healthz"},
    {"metrics_port", PG_CONF_INT, C(metrics_port), "0", 0, 65535, NULL,
     "HTTP port for /metrics (Prometheus) and /healthz (0: none)"},
    {"route_hints", PG_CONF_INT, C(route_hints), "65536", 0, 16777216, NULL,
     "uuids whose gateway is remembered from the route feed, so that their orders go to the "
     "node that holds their browser (16 bytes each, lossy; 0: round robin only)"},
    {"cpu_affinity", PG_CONF_STRING, C(cpu_affinity), "", 0, 0, NULL,
     "CPUs the consumer runs on, e.g. 0 or 0-3,6 (empty: as started)"},
};

static pg_conf_table tables[] = {
    {consumer_defs, sizeof(consumer_defs) / sizeof(consumer_defs[0]), &cs.cfg},
    {pg_db_conf_defs, 0, &cs.mysql},   /* count set at load: not a constant expression */
};
#define NTABLES (sizeof(tables) / sizeof(tables[0]))

/* hostname-pid, when no name was given. */
static int default_consumer_name(void)
{
    if (cs.cfg.consumer && *cs.cfg.consumer)
        return 0;
    char host[256] = "consumer";
    if (gethostname(host, sizeof(host) - 1) < 0)
        snprintf(host, sizeof(host), "consumer");
    host[sizeof(host) - 1] = '\0';
    char name[300];
    snprintf(name, sizeof(name), "%s-%ld", host, (long)getpid());
    char *copy = strdup(name);
    if (!copy)
        return -1;
    free(cs.cfg.consumer);
    cs.cfg.consumer = copy;
    return 0;
}

/* stream (one name or a set), the dead-letter stream apart from them,
 * and redis_cluster_nodes. */
static int check_streams(void)
{
    char err[256];
    pg_redis_addr seeds[PG_CLUSTER_NODES_MAX];
    if (pg_stream_set_parse(cs.cfg.stream, &cs.streams, err, sizeof(err)) < 0 ||
        pg_cluster_nodes_parse(cs.cfg.redis_cluster_nodes, seeds, PG_CLUSTER_NODES_MAX, err,
                               sizeof(err)) < 0) {
        fprintf(stderr, "pushgate-consumer: %s\n", err);
        return -1;
    }
    if (pg_stream_set_find(&cs.streams, cs.cfg.dead_letter_stream,
                           strlen(cs.cfg.dead_letter_stream)) >= 0) {
        fprintf(stderr, "pushgate-consumer: dead_letter_stream must differ from stream\n");
        return -1;
    }
    if (*cs.cfg.redis_cluster_nodes && *cs.cfg.redis_sentinels) {
        fprintf(stderr, "pushgate-consumer: redis_cluster_nodes and redis_sentinels exclude "
                "each other (a cluster fails over by itself)\n");
        return -1;
    }
    return 0;
}

static int check(void)
{
    char err[256];
    if (pg_redis_sentinel_settings_check(cs.cfg.redis_sentinels, cs.cfg.redis_master_name, err,
                                         sizeof(err)) < 0) {
        fprintf(stderr, "pushgate-consumer: %s\n", err);
        return -1;
    }
    const char *empty = NULL;
    if (!*cs.cfg.redis_host && !*cs.cfg.redis_sentinels)
        empty = "redis_host";
    else if (!*cs.cfg.stream)
        empty = "stream";
    else if (!*cs.cfg.group)
        empty = "group";
    else if (!*cs.cfg.dead_letter_stream)
        empty = "dead_letter_stream";
    if (empty) {
        fprintf(stderr, "pushgate-consumer: %s must not be empty\n", empty);
        return -1;
    }
    char why[256];
    if (pg_db_settings_hosts(&cs.mysql, &cs.mysql_hosts, why, sizeof(why)) < 0) {
        fprintf(stderr, "pushgate-consumer: %s\n", why);
        return -1;
    }
    if (check_streams() < 0)
        return -1;
    if (default_consumer_name() < 0) {
        fprintf(stderr, "pushgate-consumer: out of memory\n");
        return -1;
    }
    return 0;
}

int cs_settings_load(int argc, char **argv)
{
    tables[1].ndefs = pg_db_conf_ndefs;
    int rc = pg_config_from_args(argc, argv, "pushgate-consumer", PG_VERSION, tables, NTABLES);
    if (rc != 0)
        return rc;
    if (check() < 0) {
        cs_settings_free();
        return -1;
    }
    return 0;
}

void cs_settings_free(void)
{
    pg_stream_set_free(&cs.streams);
    pg_config_free(tables, NTABLES);
}

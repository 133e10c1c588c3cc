/* settings.c - the settings pushgate-ctl reads (common/config.h).
 *
 * ctl is pointed at a daemon's own INI file (-c config/gateway.ini), which
 * holds many settings ctl has no use for, while pg_config refuses unknown
 * keys.  So before the file is loaded its keys are listed, and those ctl does
 * not know get a throw-away string slot in a second table: the file is then
 * read by pg_config itself (same quoting, same "file:line" errors) and ctl's
 * own keys are checked as strictly as in the daemons.  The environment
 * (PUSHGATE_<KEY>) and --set only know ctl's keys: a typo there is an error. */
#include "ctl.h"

#include "config.h"
#include "db_hosts.h"
#include "redis_cluster.h"
#include "redis_sentinel.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

ctl_settings ctl_cfg;

#define C(field) offsetof(ctl_settings, field)

static const pg_conf_def ctl_defs[] = {
    {"redis_host", PG_CONF_STRING, C(redis_host), "127.0.0.1", 0, 0, NULL,
     "Redis host (publish, dead)"},
    {"redis_port", PG_CONF_INT, C(redis_port), "6379", 1, 65535, NULL, "Redis port"},
    {"redis_sentinels", PG_CONF_STRING, C(redis_sentinels), "", 0, 0, NULL,
     "Redis Sentinel: host:port[,host:port...] of sentinels, asked for the primary of "
     "redis_master_name (publish, dead; empty: redis_host and redis_port)"},
    {"redis_master_name", PG_CONF_STRING, C(redis_master_name), "pushgate", 0, 0, NULL,
     "with redis_sentinels: the name the sentinels monitor the primary by"},
    {"redis_cluster_nodes", PG_CONF_STRING, C(redis_cluster_nodes), "", 0, 0, NULL,
     "Redis Cluster: host:port[,host:port...] of nodes asked for the slot map; publish sends "
     "to the primary serving the stream's slot (empty: no cluster)"},
    {"stream", PG_CONF_STRING, C(stream), "pushgate:worksheets", 0, 0, NULL,
     "stream work orders are published to (field msg) and dead letters replayed to; a set "
     "(a comma list, or a brace range pushgate:worksheets:{0..7}): publish picks the stream "
     "of crc32(first uuid) mod the number of streams"},
    {"dead_letter_stream", PG_CONF_STRING, C(dead_letter_stream), "pushgate:worksheets:dead", 0,
     0, NULL, "the consumer's dead-letter stream (dead list, dead replay)"},
    {"chat_token", PG_CONF_STRING, C(chat_token), "", 0, 0, NULL,
     "app token put in published work orders (apps.chat_token)"},
    {"mysql_hosts", PG_CONF_STRING, C(mysql_hosts), "", 0, 0, NULL,
     "MySQL/MariaDB servers in failover order, host:port,host:port,... ([addr]:port for IPv6), "
     "e.g. the nodes of a Galera cluster (empty: mysql_host and mysql_port)"},
    {"mysql_host", PG_CONF_STRING, C(mysql_host), "127.0.0.1", 0, 0, NULL,
     "MySQL/MariaDB host (nodes, online)"},
    {"mysql_port", PG_CONF_INT, C(mysql_port), "3306", 1, 65535, NULL, "MySQL/MariaDB port"},
    {"mysql_socket", PG_CONF_STRING, C(mysql_socket), "", 0, 0, NULL,
     "Unix socket instead of host and port (empty: TCP)"},
    {"mysql_user", PG_CONF_STRING, C(mysql_user), "pushgate", 0, 0, NULL, "MySQL user"},
    {"mysql_password", PG_CONF_STRING, C(mysql_password), "", 0, 0, NULL, "MySQL password"},
    {"mysql_database", PG_CONF_STRING, C(mysql_database), "pushgate", 0, 0, NULL, "database"},
    {"jwt_secret", PG_CONF_STRING, C(jwt_secret), "", 0, 0, NULL,
     "HS256 secret of browser tokens (token)"},
    {"pid_file", PG_CONF_STRING, C(pid_file), "", 0, 0, NULL,
     "pid file of the local node (start, stop, reload, status)"},
    {"log_file", PG_CONF_STRING, C(log_file), "", 0, 0, NULL,
     "the node's log file (start names it when the node fails to start)"},
    {"host", PG_CONF_STRING, C(host), "0.0.0.0", 0, 0, NULL,
     "address of the node's public port (0.0.0.0: status asks 127.0.0.1)"},
    {"port", PG_CONF_INT, C(port), "9501", 1, 65535, NULL, "the node's public port (status)"},
    {"admin_host", PG_CONF_STRING, C(admin_host), "127.0.0.1", 0, 0, NULL,
     "address of the node's admin listener"},
    {"admin_port", PG_CONF_INT, C(admin_port), "0", 0, 65535, NULL,
     "the node's admin listener (status and reload read /stats there; 0: the public port, "
     "with an operator token)"},
    {"admin_secret", PG_CONF_STRING, C(admin_secret), "", 0, 0, NULL,
     "the node's operator token for the public port (empty: an admin JWT made with "
     "jwt_secret)"},
};

#define NDEFS (sizeof(ctl_defs) / sizeof(ctl_defs[0]))

static const pg_conf_table ctl_table_def = {ctl_defs, NDEFS, &ctl_cfg};

/* Keys of other daemons found in the file, each with a string slot. */
typedef struct {
    pg_conf_def *defs;
    char **values;
    size_t n, cap;
} sink;

static bool known(const sink *s, const char *key, size_t len)
{
    for (size_t i = 0; i < NDEFS; i++)
        if (strlen(ctl_defs[i].key) == len && strncasecmp(ctl_defs[i].key, key, len) == 0)
            return true;
    for (size_t i = 0; i < s->n; i++)
        if (strlen(s->defs[i].key) == len && strncasecmp(s->defs[i].key, key, len) == 0)
            return true;
    return false;
}

static int sink_add(sink *s, const char *key, size_t len)
{
    if (known(s, key, len))
        return 0;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 32;
        pg_conf_def *d = realloc(s->defs, cap * sizeof(*d));
        if (!d)
            return -1;
        s->defs = d;
        s->cap = cap;
    }
    char *k = strndup(key, len);
    if (!k)
        return -1;
    s->defs[s->n] = (pg_conf_def){.key = k, .type = PG_CONF_STRING,
                                  .offset = s->n * sizeof(char *)};
    s->n++;
    return 0;
}

static void sink_free(sink *s)
{
    if (s->values) {
        pg_conf_table t = {s->defs, s->n, s->values};
        pg_config_free(&t, 1);
    }
    for (size_t i = 0; i < s->n; i++)
        free((char *)s->defs[i].key);
    free(s->defs);
    free(s->values);
}

/* The key of an INI line "key = value" (or "key: value"), if it is one. */
static int line_key(const char *line, const char **key, size_t *len)
{
    while (*line == ' ' || *line == '\t')
        line++;
    if (*line == ';' || *line == '#' || *line == '[' || *line == '\0' || *line == '\n')
        return 0;
    size_t n = strcspn(line, "=:");
    if (line[n] == '\0')
        return 0; /* not a setting: pg_config reports it */
    while (n > 0 && isspace((unsigned char)line[n - 1]))
        n--;
    *key = line;
    *len = n;
    return n > 0;
}

/* Lists the file's keys ctl does not know into s. */
static int scan_file(const char *path, sink *s)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        ctl_err("%s: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    const char *key;
    size_t len;
    while (rc == 0 && getline(&line, &cap, f) >= 0)
        if (line_key(line, &key, &len) && sink_add(s, key, len) < 0)
            rc = -1;
    if (rc < 0)
        ctl_err("out of memory");
    free(line);
    fclose(f);
    return rc;
}

static int load_file(const char *path)
{
    sink s = {0};
    int rc = scan_file(path, &s);
    if (rc == 0 && s.n && !(s.values = calloc(s.n, sizeof(char *)))) {
        ctl_err("out of memory");
        rc = -1;
    }
    if (rc == 0) {
        pg_conf_table tables[2] = {ctl_table_def, {s.defs, s.n, s.values}};
        char err[1024];
        if (pg_config_load_file(tables, s.n ? 2 : 1, path, err, sizeof(err)) < 0) {
            ctl_err("%s", err);
            rc = -1;
        }
    }
    sink_free(&s);
    return rc;
}

int ctl_settings_load(const char *file, const char *const *sets, size_t nsets)
{
    char err[1024];
    if (pg_config_defaults(&ctl_table_def, 1, err, sizeof(err)) < 0) {
        ctl_err("%s", err);
        return -1;
    }
    if (file && load_file(file) < 0)
        return -1;
    if (pg_config_load_env(&ctl_table_def, 1, err, sizeof(err)) < 0) {
        ctl_err("%s", err);
        return -1;
    }
    for (size_t i = 0; i < nsets; i++) {
        if (pg_config_set(&ctl_table_def, 1, sets[i], err, sizeof(err)) < 0) {
            ctl_err("%s", err);
            return -1;
        }
    }
    if (pg_redis_sentinel_settings_check(ctl_cfg.redis_sentinels, ctl_cfg.redis_master_name, err,
                                         sizeof(err)) < 0) {
        ctl_err("%s", err);
        return -1;
    }
    pg_redis_addr seeds[PG_CLUSTER_NODES_MAX];
    if (pg_cluster_nodes_parse(ctl_cfg.redis_cluster_nodes, seeds, PG_CLUSTER_NODES_MAX, err,
                               sizeof(err)) < 0) {
        ctl_err("%s", err);
        return -1;
    }
    pg_db_host_list hosts;
    if (pg_db_hosts_from(ctl_cfg.mysql_hosts, ctl_cfg.mysql_host, (int)ctl_cfg.mysql_port,
                         ctl_cfg.mysql_socket, &hosts, err, sizeof(err)) < 0) {
        ctl_err("%s", err);
        return -1;
    }
    return 0;
}

void ctl_settings_free(void)
{
    pg_config_free(&ctl_table_def, 1);
}

void ctl_settings_help(void)
{
    pg_config_print_help(stdout, &ctl_table_def, 1);
}

bool ctl_setting_is_ctl_only(const char *key, size_t keylen)
{
    static const char *const only[] = {"stream", "dead_letter_stream", "redis_cluster_nodes"};
    for (size_t i = 0; i < sizeof(only) / sizeof(only[0]); i++)
        if (strlen(only[i]) == keylen && strncasecmp(only[i], key, keylen) == 0)
            return true;
    return false;
}

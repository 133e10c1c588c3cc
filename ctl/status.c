/* status.c - pushgate-ctl status: is the local node running, and what its
 * /stats says, laid out for a person (the JSON stays available at /stats
 * for programs).  /stats is read on the node's admin listener when
 * admin_port is set, else on its public port with an operator token. */
#include "ctl.h"

#include "token.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HTTP_TIMEOUT_MS 5000
#define TOKEN_TTL_S 60

/* The address to ask: the node's host, or loopback when it listens on all. */
static const char *stats_host(void)
{
    const char *h = ctl_cfg.host;
    if (!*h || strcmp(h, "0.0.0.0") == 0 || strcmp(h, "::") == 0 || strcmp(h, "[::]") == 0)
        return "127.0.0.1";
    return h;
}

/* The operator token for the public port: admin_secret, else a short-lived
 * admin JWT made with jwt_secret (malloc'd), else NULL. */
static char *operator_token(void)
{
    if (*ctl_cfg.admin_secret)
        return strdup(ctl_cfg.admin_secret);
    if (*ctl_cfg.jwt_secret)
        return pg_token_mint_admin(CTL_PROGRAM, ctl_cfg.jwt_secret, time(NULL) + TOKEN_TTL_S);
    return NULL;
}

json_t *ctl_stats_fetch(char *err, size_t errlen)
{
    char *body = NULL;
    int admin = ctl_cfg.admin_port > 0;
    const char *host = admin ? ctl_cfg.admin_host : stats_host();
    int port = (int)(admin ? ctl_cfg.admin_port : ctl_cfg.port);
    char why[256];
    char *token = admin ? NULL : operator_token();
    int rc = ctl_http_get(host, port, "/stats", token, HTTP_TIMEOUT_MS, &body, why, sizeof(why));
    free(token);
    if (rc < 0) {
        snprintf(err, errlen, "GET http://%s:%d/stats: %s%s", host, port, why,
                 strstr(why, "401") ? " (set admin_port, admin_secret or jwt_secret as the node "
                                      "has them)" : "");
        return NULL;
    }
    json_error_t e;
    json_t *o = json_loads(body, 0, &e);
    free(body);
    if (!json_is_object(o)) {
        snprintf(err, errlen, "http://%s:%d/stats: not a JSON object: %s", host, port,
                 o ? "wrong type" : e.text);
        json_decref(o);
        return NULL;
    }
    return o;
}

size_t ctl_stats_pids(json_t *stats, const char *key, pid_t *out, size_t max)
{
    json_t *a = json_object_get(stats, key), *w;
    size_t i, n = 0;
    json_array_foreach(a, i, w) {
        if (n < max)
            out[n++] = (pid_t)json_integer_value(json_object_get(w, "pid"));
    }
    return n;
}

static long long num(json_t *o, const char *key, const char *sub)
{
    json_t *v = json_object_get(o, key);
    return json_integer_value(sub ? json_object_get(v, sub) : v);
}

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "-";
}

static void print_counters(json_t *st)
{
    static const char *const rows[][3] = {
        {"connections", "connections", NULL}, {"accepted", "accepted", NULL},
        {"closed", "closed", NULL}, {"refused", "refused", NULL},
        {"messages in", "messages", "in"}, {"messages pushed", "messages", "pushed"},
        {"messages forwarded", "messages", "forwarded"},
        {"messages stored", "messages", "stored"}, {"messages acked", "messages", "acked"},
        {"redelivered", "messages", "redelivered"},
        {"auth failures", "messages", "auth_failures"}, {"task queue", "task_queue", NULL},
    };
    printf("%-20s %s\n", "node", str(st, "node"));
    printf("%-20s %lld s\n", "uptime", num(st, "uptime", NULL));
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        printf("%-20s %lld\n", rows[i][0], num(st, rows[i][1], rows[i][2]));
    json_t *mysql = json_object_get(st, "mysql");
    printf("%-20s %s (%lld errors)\n", "mysql",
           json_is_true(json_object_get(mysql, "ok")) ? "ok" : "DOWN",
           num(st, "mysql", "errors"));
}

static int print_workers(json_t *st, const char *key, const char *title)
{
    static const char *const header[] = {"#", "PID", "STATE", "REQUESTS", "QUEUED", "RESPAWNS"};
    ctl_table t;
    if (ctl_table_init(&t, 6, header) < 0)
        return -1;
    json_t *w;
    size_t i;
    int rc = 0;
    json_array_foreach(json_object_get(st, key), i, w) {
        char c[6][32];
        snprintf(c[0], sizeof(c[0]), "%zu", i);
        snprintf(c[1], sizeof(c[1]), "%lld", num(w, "pid", NULL));
        snprintf(c[2], sizeof(c[2]), "%s", str(w, "state"));
        snprintf(c[3], sizeof(c[3]), "%lld", num(w, "requests", NULL));
        snprintf(c[4], sizeof(c[4]), "%lld", num(w, "queued", NULL));
        snprintf(c[5], sizeof(c[5]), "%lld", num(w, "respawns", NULL));
        const char *cells[6] = {c[0], c[1], c[2], c[3], c[4], c[5]};
        if (ctl_table_row(&t, cells) < 0)
            rc = -1;
    }
    printf("\n%s\n", title);
    ctl_table_print(&t, "  ");
    ctl_table_free(&t);
    return rc;
}

int ctl_cmd_status(const ctl_args *a)
{
    const char *path = ctl_pid_file(a);
    if (!path)
        return CTL_USAGE;
    pid_t pid = ctl_pid_running(path);
    if (pid < 0)
        return CTL_FAIL;
    char err[512];
    json_t *st = ctl_stats_fetch(err, sizeof(err));
    if (!st) {
        ctl_err("running as pid %ld, but %s", (long)pid, err);
        return CTL_FAIL;
    }
    printf("running, pid %ld (pid file %s)\n\n", (long)pid, path);
    print_counters(st);
    int rc = print_workers(st, "workers", "workers");
    if (print_workers(st, "task_workers", "task workers") < 0)
        rc = -1;
    json_decref(st);
    if (rc < 0)
        ctl_err("out of memory");
    return rc < 0 ? CTL_FAIL : CTL_OK;
}

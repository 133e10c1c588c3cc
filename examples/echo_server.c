/* echo_server.c - the seed's first example on the engine: Connect, Receive,
 * Close.  Every packet comes back framed the same way (raw, EOF-split or
 * length-prefixed, per the settings).  Two words are commands, for tests and
 * operators: "pid" answers with the pid of the worker that handled it,
 * "stats" with the node's counters as JSON, and "relay N TEXT" has worker N
 * answer "relayed by PID: TEXT" (worker-to-worker messages).
 *
 * With line_port set, a second port shows the protocol hook that the gateway
 * uses for HTTP and WebSocket: a line protocol, parsed in the reactor thread,
 * whose replies are written as "line: <data>\n".  On any port, "quit" makes the
 * worker close the session (on the line port, with a last line "bye").
 *
 *   echo_server [-c FILE] [--set key=value ...]    (--help lists the settings) */
#include "daemon.h"
#include "log.h"
#include "server.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *host;
    long long port;
    long long line_port;
    long long direct_port;
} echo_settings;

static const pg_conf_def echo_defs[] = {
    {"host", PG_CONF_STRING, offsetof(echo_settings, host), "127.0.0.1", 0, 0, NULL,
     "address to listen on"},
    {"port", PG_CONF_INT, offsetof(echo_settings, port), "9801", 0, 65535, NULL,
     "port to listen on (0: any free port, logged)"},
    {"line_port", PG_CONF_INT, offsetof(echo_settings, line_port), "0", 0, 65535, NULL,
     "port of the line protocol built on the protocol hook (0: none)"},
    {"direct_port", PG_CONF_INT, offsetof(echo_settings, direct_port), "0", 0, 65535, NULL,
     "port framed as the main one, served by the workers themselves (0: none)"},
};

/* ---- the line protocol: runs in reactor threads ---- */

static ssize_t line_on_data(pg_conn *c, const char *data, size_t len)
{
    size_t max = pg_server_settings_of(pg_conn_server(c))->package_max_length;
    size_t used = 0;
    const char *nl;
    while ((nl = memchr(data + used, '\n', len - used)) != NULL) {
        size_t n = (size_t)(nl - (data + used));
        if (pg_conn_dispatch(c, data + used, n) < 0)
            return -1;
        used += n + 1;
    }
    return len - used > max ? -1 : (ssize_t)used;
}

static int line_on_send(pg_conn *c, const char *data, size_t len)
{
    if (pg_conn_write(c, "line: ", 6) < 0 || pg_conn_write(c, data, len) < 0)
        return -1;
    return pg_conn_write(c, "\n", 1);
}

/* The worker closed the session: its reason is the last line. */
static void line_on_shutdown(pg_conn *c, const char *reason, size_t len)
{
    if (pg_conn_write(c, reason, len) == 0)
        pg_conn_write(c, "\n", 1);
}

static const pg_protocol line_protocol = {
    .on_data = line_on_data, .on_send = line_on_send, .on_shutdown = line_on_shutdown};

static json_t *worker_stats_json(const pg_worker_stats *w, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_pack("{s:i,s:i,s:I,s:I,s:I}", "pid", (int)w[i].pid,
                                           "state", w[i].state, "requests", (json_int_t)w[i].requests,
                                           "queued", (json_int_t)w[i].queued,
                                           "respawns", (json_int_t)w[i].respawns));
    return a;
}

static char *stats_json(pg_server *s)
{
    pg_server_stats_t st;
    pg_server_stats(s, &st);
    json_t *o = json_pack("{s:I,s:i,s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
                          "start_time", (json_int_t)st.start_time, "master_pid", (int)st.master_pid,
                          "manager_pid", (int)st.manager_pid,
                          "connections", (json_int_t)st.connections,
                          "accepted", (json_int_t)st.accepted, "closed", (json_int_t)st.closed,
                          "refused", (json_int_t)st.refused,
                          "packets_in", (json_int_t)st.packets_in,
                          "packets_out", (json_int_t)st.packets_out,
                          "bytes_in", (json_int_t)st.bytes_in, "bytes_out", (json_int_t)st.bytes_out,
                          "task_queue", (json_int_t)st.task_queue,
                          "tasks_done", (json_int_t)st.tasks_done);
    json_object_set_new(o, "workers", worker_stats_json(st.workers, st.worker_num));
    json_object_set_new(o, "task_workers", worker_stats_json(st.task_workers, st.task_worker_num));
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

/* "relay N TEXT": the session id, then TEXT, go to worker N. */
static void relay(pg_server *s, pg_session_id session, const char *data, size_t len)
{
    char *end;
    long worker = strtol(data + 6, &end, 10);
    size_t skip = (size_t)(end - data) + 1;
    char msg[sizeof(session) + 1024];
    if (skip > len || len - skip > 1024) {
        pg_server_send(s, session, "relay: bad request", 18);
        return;
    }
    memcpy(msg, &session, sizeof(session));
    memcpy(msg + sizeof(session), data + skip, len - skip);
    if (worker == pg_server_worker_id(s) ||
        pg_server_send_message(s, (int)worker, msg, sizeof(session) + len - skip) < 0)
        pg_server_send(s, session, "relay: refused", 14);
}

static void on_pipe_message(pg_server *s, int from_worker, const char *data, size_t len)
{
    (void)from_worker;
    pg_session_id session;
    if (len < sizeof(session))
        return;
    memcpy(&session, data, sizeof(session));
    char reply[1100];
    int n = snprintf(reply, sizeof(reply), "relayed by %ld: %.*s", (long)getpid(),
                     (int)(len - sizeof(session)), data + sizeof(session));
    pg_server_send(s, session, reply, (size_t)n);
}

static void on_connect(pg_server *s, pg_session_id session, int listener, const char *peer)
{
    (void)s;
    pg_debug("connect %llx from %s on listener %d", (unsigned long long)session, peer, listener);
}

static void on_receive(pg_server *s, pg_session_id session, int listener, const char *data,
                       size_t len)
{
    (void)listener;
    if (len == 3 && memcmp(data, "pid", 3) == 0) {
        char reply[32];
        int n = snprintf(reply, sizeof(reply), "%ld", (long)getpid());
        pg_server_send(s, session, reply, (size_t)n);
    } else if (len == 5 && memcmp(data, "stats", 5) == 0) {
        char *text = stats_json(s);
        if (text)
            pg_server_send(s, session, text, strlen(text));
        free(text);
    } else if (len > 6 && memcmp(data, "relay ", 6) == 0) {
        relay(s, session, data, len);
    } else if (len == 4 && memcmp(data, "quit", 4) == 0) {
        pg_server_close(s, session, "bye", 3);
    } else if (pg_server_send(s, session, data, len) < 0) {
        pg_warn("echo to %llx failed", (unsigned long long)session);
    }
}

static void on_close(pg_server *s, pg_session_id session, int listener)
{
    (void)s;
    (void)listener;
    pg_debug("close %llx", (unsigned long long)session);
}

int main(int argc, char **argv)
{
    pg_server_settings settings;
    echo_settings echo;
    pg_conf_table tables[] = {
        {pg_server_conf_defs, pg_server_conf_ndefs, &settings},
        {echo_defs, sizeof(echo_defs) / sizeof(echo_defs[0]), &echo},
    };
    int rc = pg_daemon_init(argc, argv, "echo_server", tables, 2);
    if (rc != 0)
        return rc < 0 ? 2 : 0;
    pg_server_callbacks cb = {.on_connect = on_connect, .on_receive = on_receive,
                              .on_close = on_close, .on_pipe_message = on_pipe_message};
    pg_server *s = pg_server_new("echo_server", &settings, &cb);
    pg_listen_options opts = pg_listen_options_from_settings(&settings);
    rc = 1;
    pg_listen_options line_opts = {.protocol = &line_protocol};
    pg_listen_options direct_opts = opts;
    direct_opts.direct = 1;
    if (s && pg_server_listen(s, echo.host, (int)echo.port, &opts) >= 0 &&
        (echo.line_port == 0 || pg_server_listen(s, echo.host, (int)echo.line_port, &line_opts) >= 0) &&
        (echo.direct_port == 0 ||
         pg_server_listen(s, echo.host, (int)echo.direct_port, &direct_opts) >= 0))
        rc = pg_server_start(s);
    pg_server_free(s);
    pg_daemon_done(tables, 2);
    return rc;
}

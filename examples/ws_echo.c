/* ws_echo.c - the gateway's HTTP + WebSocket hook (gateway/ws.c) on the
 * engine, with a worker that echoes: a small server for tests and for trying
 * the hook with a browser or any WebSocket client.
 *
 *   'O' + uuid  (WebSocket open)  -> {"event":"ONLINE","uuid":"<uuid>"}
 *   'T' + text  (text message)    -> the same text back; "close" makes the
 *                                    worker close the session with 4001 "bye"
 *   'H' + line  (other request)   -> 200, text/plain, the request line as body
 *
 *   ws_echo [-c FILE] [--set key=value ...]    (--help lists the settings)
 */
#include "token.h"
#include "ws.h"

#include "daemon.h"
#include "log.h"
#include "server.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *host;
    long long port;
    char *ws_path;
    char *jwt_secret;
    char *allowed_origins;
    size_t max_header_size;
    long long header_timeout_ms;
    size_t max_message;
    size_t max_incomplete_bytes;
} ws_echo_settings;

static const pg_conf_def ws_echo_defs[] = {
    {"host", PG_CONF_STRING, offsetof(ws_echo_settings, host), "127.0.0.1", 0, 0, NULL,
     "address to listen on"},
    {"port", PG_CONF_INT, offsetof(ws_echo_settings, port), "9802", 0, 65535, NULL,
     "port for HTTP and WebSocket"},
    {"ws_path", PG_CONF_STRING, offsetof(ws_echo_settings, ws_path), "/ws", 0, 0, NULL,
     "path of the WebSocket upgrade"},
    {"jwt_secret", PG_CONF_STRING, offsetof(ws_echo_settings, jwt_secret), "change-me", 0, 0, NULL,
     "HS256 secret of the ?token= JWTs"},
    {"allowed_origins", PG_CONF_STRING, offsetof(ws_echo_settings, allowed_origins), "", 0, 0,
     NULL, "comma-separated Origins allowed to connect (\"\" or \"*\": any)"},
    {"max_header_size", PG_CONF_SIZE, offsetof(ws_echo_settings, max_header_size), "8K", 256,
     1024 * 1024, NULL, "largest request line + headers (over: 431)"},
    {"header_timeout_ms", PG_CONF_INT, offsetof(ws_echo_settings, header_timeout_ms), "10000", 1,
     3600000, NULL, "time for a complete request after its first bytes (over: 408)"},
    {"max_message", PG_CONF_SIZE, offsetof(ws_echo_settings, max_message), "0", 0, 0, NULL,
     "largest WebSocket message (0: package_max_length; over: close 1009)"},
    {"max_incomplete_bytes", PG_CONF_SIZE, offsetof(ws_echo_settings, max_incomplete_bytes), "0",
     0, 0, NULL, "bytes all incomplete messages may hold (0: no limit; over: close 1013)"},
};

static void ws_echo_receive(pg_server *s, pg_session_id session, int listener, const char *data,
                            size_t len)
{
    (void)listener;
    if (len == 0)
        return;
    const char *body = data + 1;
    size_t body_len = len - 1;
    switch (data[0]) {
    case GW_MSG_OPEN: {
        json_t *o = json_pack("{s:s,s:s%}", "event", "ONLINE", "uuid", body, body_len);
        char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (text)
            pg_server_send(s, session, text, strlen(text));
        free(text);
        json_decref(o);
        break;
    }
    case GW_MSG_TEXT:
        if (body_len == 5 && memcmp(body, "close", 5) == 0) {
            char reason[128];
            size_t n = gw_ws_close_reason(reason, sizeof(reason), 4001, "bye");
            pg_server_close(s, session, reason, n);
        } else {
            pg_server_send(s, session, body, body_len);
        }
        break;
    case GW_MSG_HTTP: {
        char head[160];
        int n = snprintf(head, sizeof(head),
                         "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                         "Connection: close\r\n\r\n", body_len);
        char *resp = malloc((size_t)n + body_len);
        if (!resp)
            break;
        memcpy(resp, head, (size_t)n);
        memcpy(resp + n, body, body_len);
        pg_server_send(s, session, resp, (size_t)n + body_len);
        free(resp);
        break;
    }
    default:
        pg_warn("session %llx: unexpected message type %d", (unsigned long long)session, data[0]);
    }
}

int main(int argc, char **argv)
{
    pg_server_settings settings;
    ws_echo_settings opts;
    pg_conf_table tables[] = {
        {pg_server_conf_defs, pg_server_conf_ndefs, &settings},
        {ws_echo_defs, sizeof(ws_echo_defs) / sizeof(ws_echo_defs[0]), &opts},
    };
    int rc = pg_daemon_init(argc, argv, "ws_echo", tables, 2);
    if (rc != 0)
        return rc < 0 ? 2 : 0;
    gw_ws_config cfg = {
        .ws_path = opts.ws_path,
        .jwt_secret = opts.jwt_secret,
        .allowed_origins = opts.allowed_origins,
        .max_header_size = opts.max_header_size,
        .header_timeout_ms = (uint32_t)opts.header_timeout_ms,
        .max_message = opts.max_message,
        .max_incomplete_bytes = opts.max_incomplete_bytes,
    };
    pg_server_callbacks cb = {.on_receive = ws_echo_receive};
    pg_server *s = pg_server_new("ws_echo", &settings, &cb);
    pg_listen_options lo = {.protocol = gw_ws_protocol(&cfg)};
    rc = 1;
    if (s && lo.protocol && pg_server_listen(s, opts.host, (int)opts.port, &lo) >= 0)
        rc = pg_server_start(s);
    pg_server_free(s);
    pg_daemon_done(tables, 2);
    return rc;
}

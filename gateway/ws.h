/* ws.h - HTTP and WebSocket for browsers, as a protocol hook of the engine.
 *
 * Runs in the reactor threads (see pg_protocol in server.h).  A connection
 * starts as HTTP/1.1 (parsed with http-parser).  GET on the WebSocket path with
 * a valid upgrade becomes a WebSocket (RFC 6455, frames through wslay); any
 * other request is handed to a worker, whose answer is written as the HTTP
 * response and the connection is closed after it.
 *
 * What the workers receive (pg_conn_dispatch; first byte says what it is):
 *   'O' + uuid   the WebSocket is open; uuid from ?token= (empty: the browser
 *                must still authenticate with a CONNECT message)
 *   'T' + text   one complete text message (valid UTF-8, fragments joined)
 *   'H' + line   an HTTP request other than the upgrade: "METHOD PATH[?QUERY]"
 * What workers send (pg_server_send): on a WebSocket, the text of one message
 * (sent as a text frame); on an HTTP connection, the whole response (status
 * line, headers, body).  pg_server_close's reason on a WebSocket is a close
 * frame payload: 2-byte big-endian code, then UTF-8 text.
 *
 * Outcomes decided here: malformed request -> 400; headers over
 * max_header_size or not complete within header_timeout_ms -> 431 / 408 and
 * close; wrong Sec-WebSocket-Version -> 426 with "Sec-WebSocket-Version: 13";
 * Origin not allowed -> 403; bad or expired ?token= -> 401 before the upgrade.
 * After it: unmasked client frame -> close 1002; invalid UTF-8 -> 1007; a
 * message over max_message -> 1009; binary message -> 1003; ping -> pong.
 *
 * What a message costs before it is complete is bounded: its payload, plus
 * GW_WS_FRAGMENT_COST for each fragment after the first (what wslay spends to
 * keep a fragment apart), may not pass max_message (close 1009), and all the
 * connections of the process together may not hold more than
 * max_incomplete_bytes that way (the connection that would pass it is
 * closed with 1013, try again later). */
#ifndef GW_WS_H
#define GW_WS_H

#include <stddef.h>
#include <stdint.h>

#include "server.h"
#include "token.h"

enum {
    GW_MSG_OPEN = 'O',
    GW_MSG_TEXT = 'T',
    GW_MSG_HTTP = 'H',
    GW_MSG_PONG = 'P',          /* the browser answered pg_server_probe */
};

typedef struct {
    const char *ws_path;            /* "/ws" */
    const char *jwt_secret;
    const char *jwt_secret_previous;   /* "" or NULL: none (a rotation is not under way) */
    const char *allowed_origins;    /* comma-separated origins; "" or "*": any */
    size_t max_header_size;         /* e.g. 8192 */
    uint32_t header_timeout_ms;     /* e.g. 10000 */
    size_t max_message;             /* largest WebSocket message (package_max_length) */
    size_t max_incomplete_bytes;    /* all connections' incomplete messages; 0: no limit */
    uint32_t input_wait_us;         /* a message may wait for others to its worker; 0: no */
    int no_websocket;               /* HTTP only: an upgrade is handed over as a request */
} gw_ws_config;

/* What a fragment after a message's first costs beyond its payload: wslay
 * keeps each as a chunk record, its data and a queue entry, three mallocs. */
#define GW_WS_FRAGMENT_COST 64

/* Bytes that incomplete messages hold now, over all connections. */
size_t gw_ws_incomplete_bytes(void);

/* The hook for pg_listen_options.protocol; cfg must outlive the server. */
const pg_protocol *gw_ws_protocol(const gw_ws_config *cfg);

/* A browser token checked with jwt_secret, else with jwt_secret_previous:
 * 0 and its uuid, or -1 and why (the reason the current secret gave). */
int gw_ws_token_verify(const gw_ws_config *cfg, const char *token, size_t len,
                       char uuid[PG_UUID_MAX + 1], const char **why);

/* A close reason for pg_server_close: code + text into buf; returns its length. */
size_t gw_ws_close_reason(char *buf, size_t buflen, uint16_t code, const char *text);

#endif

/* wsclient.h - a minimal WebSocket client on a libevent bufferevent: the
 * HTTP/1.1 upgrade written and checked here (101 and Sec-WebSocket-Accept),
 * frames through wslay's client context (masking, pongs to pings, the close
 * handshake).  Text messages only; one object per connection attempt.
 *
 * Exactly one of on_fail / on_close ends every connection, and it is the
 * last thing the object does: the callback may pb_ws_free it (and open a
 * new one).  on_open and on_text may send and close, never free. */
#ifndef PB_WSCLIENT_H
#define PB_WSCLIENT_H

#include <event2/event.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

/* Why a connection never opened. */
enum {
    PB_WS_ERR_SOCKET,       /* socket() or bind() failed (no file descriptors, no port) */
    PB_WS_ERR_TCP,          /* connect failed or the connection dropped during the upgrade */
    PB_WS_ERR_TIMEOUT,      /* no 101 in time */
    PB_WS_ERR_HTTP,         /* an HTTP status other than 101 (e.g. 401) */
    PB_WS_ERR_HANDSHAKE,    /* a malformed response or a wrong Sec-WebSocket-Accept */
    PB_WS_ERR_KINDS
};

/* The close code when the TCP connection ended without a close frame. */
#define PB_WS_CLOSE_ABNORMAL 1006

/* Who ended an open connection. */
enum {
    PB_WS_BY_SERVER,        /* its close frame, or the connection dropped (1006) */
    PB_WS_BY_US,            /* we sent the first close frame (pb_ws_close) */
    PB_WS_BROKEN,           /* the server broke the protocol (bad frame, invalid UTF-8):
                               we closed with the code wslay chose, 1002 or 1007 */
};

typedef struct pb_ws pb_ws;

typedef struct {
    void (*on_open)(pb_ws *ws, void *arg);
    void (*on_text)(pb_ws *ws, void *arg, const char *text, size_t len);
    /* A non-text message (binary) arrived: the client ignores it. */
    void (*on_bad)(pb_ws *ws, void *arg);
    void (*on_fail)(pb_ws *ws, void *arg, int kind, int http_status);
    void (*on_close)(pb_ws *ws, void *arg, int code, int who);
} pb_ws_events;

/* Starts connecting to dst (from src when given) and sends the upgrade for
 * GET target (path and query) with Host hostport.  timeout_ms bounds the
 * connect and the upgrade (0: none).  NULL with *kind set when no socket
 * could be made; the callbacks never run then. */
pb_ws *pb_ws_connect(struct event_base *base, const struct sockaddr_in *dst,
                     const struct sockaddr_in *src, const char *hostport, const char *target,
                     unsigned timeout_ms, const pb_ws_events *ev, void *arg, int *kind);
/* Queues a text message, written once the loop pass's reads are done (so
 * that one simulated browser's send does not delay another's read): 0, or
 * -1 when the connection cannot take it. */
int pb_ws_send_text(pb_ws *ws, const char *text, size_t len);
/* Starts the close handshake with code. */
void pb_ws_close(pb_ws *ws, uint16_t code);
/* Sets (or with 0 clears) the read timeout: silence that long ends the
 * connection as PB_WS_CLOSE_ABNORMAL (or PB_WS_ERR_TIMEOUT before the 101). */
void pb_ws_set_timeout(pb_ws *ws, unsigned timeout_ms);
/* Bytes written to the kernel yet to go out of the buffer. */
size_t pb_ws_pending_output(const pb_ws *ws);
void pb_ws_free(pb_ws *ws);

#endif

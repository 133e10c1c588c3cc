/* ws.c - HTTP/1.1 and WebSocket (RFC 6455) for browsers, as a protocol hook
 * of the engine (see ws.h).  Everything here runs in reactor threads.
 *
 * A connection goes through these modes:
 *   WS_HTTP   reading one request with http-parser (state: ws_req, a few
 *             hundred bytes plus the interesting header values)
 *   WS_WAIT   a request other than the upgrade went to a worker as 'H'; input
 *             is ignored until the worker's answer, which closes the connection
 *   WS_OPEN   upgraded: frames through a wslay event context; text messages
 *             go to workers as 'T', the pong to a worker's probe as 'P', both
 *             after up to input_wait_us with others (pg_conn_dispatch_within)
 *   WS_DONE   an error response or a close frame is on its way; then closed
 *
 * Re-entrancy: the engine never frees a connection while code here may still
 * touch it (server.h, pg_protocol): a write or close that fails inside a hook
 * or a timer only marks it closed, and on_close, which frees the state and
 * the wslay context, runs afterwards.  So nothing here guards re-entry; a
 * failed write sets `failed`, and the rest of the call unwinds quietly.
 *
 * Idle connections hold no wslay context: it is ~8.8 KB (two 4 KB buffers)
 * and would be most of a connection's memory.  It is made when a frame header
 * is complete or something must be sent, and freed again once it holds nothing
 * a new one would not: at a frame boundary, no fragmented message being put
 * together, nothing queued, no close under way.  To know where frames end, the
 * frame lengths are read here (ws_frames_ready, lengths only: wslay checks
 * everything else); an incomplete header is left with the engine, which offers
 * it again with the next bytes, so wslay never holds a partial header. */
#include "ws.h"

#include "gateway.h"
#include "token.h"
#include "log.h"
#include "timer.h"
#include "utf8.h"

#include <http_parser.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>
#include <time.h>
#include <wslay/wslay.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"   /* RFC 6455 1.3 */
#define WS_ACCEPT_LEN 28            /* base64 of a 20-byte SHA-1 */
#define WS_TOKEN_MAX 4096
#define WS_CLOSE_TEXT_MAX 123       /* a control frame carries at most 125 bytes */
#define WS_DEFAULT_PATH "/ws"
#define WS_DEFAULT_HEADER_SIZE 8192
#define WS_DEFAULT_HEADER_TIMEOUT_MS 10000

enum { WS_HTTP, WS_WAIT, WS_OPEN, WS_DONE };

/* The request headers the handshake looks at. */
enum { H_HOST, H_UPGRADE, H_CONNECTION, H_KEY, H_VERSION, H_ORIGIN, H_AUTHORIZATION, H_COUNT };
static const char *const ws_header_names[H_COUNT] = {
    "host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version", "origin",
    "authorization",
};

typedef struct {
    http_parser parser;
    size_t nbytes;                  /* bytes of the request so far */
    char *url;
    size_t url_len;
    char *val[H_COUNT];             /* repeated headers joined with ", " */
    size_t val_len[H_COUNT];
    uint8_t seen[H_COUNT];
    char field[24];                 /* name of the header being read */
    uint8_t field_len, field_long;
    int8_t cur;                     /* its index in ws_header_names, or -1 */
    uint8_t in_value;               /* the last callback was on_header_value */
    uint8_t done;                   /* the request is complete */
    uint8_t body;                   /* it announced a body */
    uint8_t nomem;
} ws_req;

typedef struct {
    pg_conn *c;                     /* the engine frees st (on_close) before c */
    const gw_ws_config *cfg;
    ws_req *req;                    /* WS_HTTP only */
    wslay_event_context_ptr ws;     /* WS_OPEN and after; NULL while idle */
    const char *in;                 /* bytes for wslay's recv callback */
    size_t in_len;
    uint64_t frame_left;            /* bytes of the current frame not yet given
                                       to wslay; 0: at a frame boundary */
    size_t charged;                 /* cost of the message under way (ws.h) */
    int64_t timer;                  /* header timeout, 0: none */
    uint8_t mode;
    uint8_t failed;                 /* a write or dispatch failed: the engine closes it */
    uint16_t proto_error;           /* a frame wslay lets through breaks RFC 6455:
                                       the close code to send (1002, 1007) */
    uint8_t fragmented;             /* wslay is putting a fragmented message together */
    uint8_t in_data_frame;          /* the current frame is a data frame */
    uint16_t refused;               /* a frame over the limits: the close code */
    uint8_t probing;                /* a worker's ping is out: its pong goes to the worker */
} ws_conn;

/* ---- configuration ---- */

static pg_protocol ws_protocols[PG_SERVER_MAX_LISTENERS];
static size_t ws_nprotocols;

static const char *ws_cfg_path(const gw_ws_config *cfg)
{
    return cfg->ws_path && *cfg->ws_path ? cfg->ws_path : WS_DEFAULT_PATH;
}

static size_t ws_cfg_header_size(const gw_ws_config *cfg)
{
    return cfg->max_header_size ? cfg->max_header_size : WS_DEFAULT_HEADER_SIZE;
}

static uint32_t ws_cfg_header_timeout(const gw_ws_config *cfg)
{
    return cfg->header_timeout_ms ? cfg->header_timeout_ms : WS_DEFAULT_HEADER_TIMEOUT_MS;
}

/* The largest message: max_message, at most package_max_length (what one
 * dispatch to a worker may carry). */
static size_t ws_cfg_max_message(const gw_ws_config *cfg, pg_conn *c)
{
    size_t limit = pg_server_settings_of(pg_conn_server(c))->package_max_length;
    size_t max = cfg->max_message && cfg->max_message < limit ? cfg->max_message : limit;
    return max > 0 ? max : 1;
}

/* ---- small helpers (pure; unit-tested) ---- */

/* Sec-WebSocket-Accept for a key: base64(SHA-1(key + GUID)); out gets 28
 * characters and a NUL.  0, or -1 when OpenSSL fails. */
static int ws_accept_key(const char *key, size_t key_len, char out[WS_ACCEPT_LEN + 1])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_DigestInit_ex(md, EVP_sha1(), NULL) == 1 &&
             EVP_DigestUpdate(md, key, key_len) == 1 &&
             EVP_DigestUpdate(md, WS_GUID, sizeof(WS_GUID) - 1) == 1 &&
             EVP_DigestFinal_ex(md, digest, &dlen) == 1 && dlen == SHA_DIGEST_LENGTH;
    EVP_MD_CTX_free(md);
    out[0] = '\0';
    if (!ok)
        return -1;
    EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
    out[WS_ACCEPT_LEN] = '\0';
    return 0;
}

static int ws_is_space(char ch)
{
    return ch == ' ' || ch == '\t';
}

static void ws_trim(const char **s, size_t *len)
{
    while (*len > 0 && ws_is_space(**s)) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && ws_is_space((*s)[*len - 1]))
        (*len)--;
}

/* A Sec-WebSocket-Key: base64 of 16 bytes, i.e. 22 characters and "==". */
static int ws_key_ok(const char *key, size_t len)
{
    if (len != 24 || key[22] != '=' || key[23] != '=')
        return 0;
    for (size_t i = 0; i < 22; i++) {
        char ch = key[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '+' || ch == '/'))
            return 0;
    }
    return 1;
}

/* 1 when the comma-separated list holds token (case-insensitive). */
static int ws_list_has(const char *list, size_t len, const char *token)
{
    size_t tlen = strlen(token);
    size_t i = 0;
    while (i <= len) {
        size_t j = i;
        while (j < len && list[j] != ',')
            j++;
        const char *item = list + i;
        size_t ilen = j - i;
        ws_trim(&item, &ilen);
        if (ilen == tlen && strncasecmp(item, token, tlen) == 0)
            return 1;
        i = j + 1;
    }
    return 0;
}

/* 1 when origin may connect: allowed is "", "*", or a comma-separated list
 * (one item may be "*"). */
static int ws_origin_allowed(const char *allowed, const char *origin, size_t origin_len)
{
    if (!allowed)
        return 1;
    const char *a = allowed;
    size_t alen = strlen(allowed);
    ws_trim(&a, &alen);
    if (alen == 0 || ws_list_has(a, alen, "*"))
        return 1;
    ws_trim(&origin, &origin_len);
    if (origin_len == 0 || memchr(origin, ',', origin_len))
        return 0;
    char buf[512];
    if (origin_len >= sizeof(buf))
        return 0;
    memcpy(buf, origin, origin_len);
    buf[origin_len] = '\0';
    return ws_list_has(a, alen, buf);
}

static int ws_hex(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..len) ('+' is a space) into out (at most cap bytes, no
 * NUL added). Returns the decoded length, or -1 when it does not fit or a
 * %-escape is broken. */
static ssize_t ws_url_decode(const char *s, size_t len, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (ch == '%') {
            int hi, lo;
            if (i + 2 >= len || (hi = ws_hex(s[i + 1])) < 0 || (lo = ws_hex(s[i + 2])) < 0)
                return -1;
            ch = (char)(hi * 16 + lo);
            i += 2;
        } else if (ch == '+') {
            ch = ' ';
        }
        if (n >= cap)
            return -1;
        out[n++] = ch;
    }
    return (ssize_t)n;
}

/* Finds name=value in a query string; *value points into query. */
static int ws_query_param(const char *query, size_t len, const char *name, const char **value,
                          size_t *value_len)
{
    size_t nlen = strlen(name);
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && query[j] != '&')
            j++;
        if (j - i > nlen && query[i + nlen] == '=' && memcmp(query + i, name, nlen) == 0) {
            *value = query + i + nlen + 1;
            *value_len = j - i - nlen - 1;
            return 1;
        }
        if (j - i == nlen && memcmp(query + i, name, nlen) == 0) {
            *value = query + j;
            *value_len = 0;
            return 1;
        }
        i = j + 1;
    }
    return 0;
}

int gw_ws_token_verify(const gw_ws_config *cfg, const char *token, size_t len,
                       char uuid[PG_UUID_MAX + 1], const char **why)
{
    time_t now = time(NULL);
    if (pg_token_verify(token, len, cfg->jwt_secret, now, uuid, why) == 0)
        return 0;
    const char *current = *why;
    if (cfg->jwt_secret_previous && *cfg->jwt_secret_previous &&
        pg_token_verify(token, len, cfg->jwt_secret_previous, now, uuid, why) == 0)
        return 0;
    *why = current;
    return -1;
}

size_t gw_ws_close_reason(char *buf, size_t buflen, uint16_t code, const char *text)
{
    if (!buf || buflen < 2)
        return 0;
    buf[0] = (char)(code >> 8);
    buf[1] = (char)(code & 0xff);
    if (!text)
        return 2;
    size_t room = buflen - 2 < WS_CLOSE_TEXT_MAX ? buflen - 2 : WS_CLOSE_TEXT_MAX;
    size_t tlen = gw_utf8_prefix(text, strlen(text), room);
    memcpy(buf + 2, text, tlen);
    return 2 + tlen;
}

/* A close code an endpoint may send (RFC 6455 7.4 and the IANA registry). */
static int ws_close_code_ok(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* Code and text of a close frame from a pg_server_close reason (NULL: the
 * server is stopping -> 1001).  *text points into reason. */
static uint16_t ws_parse_reason(const char *reason, size_t len, const char **text, size_t *text_len)
{
    *text = NULL;
    *text_len = 0;
    if (!reason) {
        *text = "server shutting down";
        *text_len = strlen(*text);
        return 1001;
    }
    if (len < 2)
        return 1000;
    unsigned code = ((unsigned)(unsigned char)reason[0] << 8) | (unsigned char)reason[1];
    if (!ws_close_code_ok(code))
        code = 1000;
    if (gw_utf8_valid(reason + 2, len - 2)) {
        *text = reason + 2;
        *text_len = gw_utf8_prefix(reason + 2, len - 2, WS_CLOSE_TEXT_MAX);
    }
    return (uint16_t)code;
}

/* ---- connection state ---- */

static void ws_req_free(ws_req *r)
{
    if (!r)
        return;
    free(r->url);
    for (int i = 0; i < H_COUNT; i++)
        free(r->val[i]);
    free(r);
}

static void ws_clear_timer(ws_conn *st)
{
    if (st->timer > 0)
        pg_timer_clear(st->timer);
    st->timer = 0;
}

static void ws_drop_request(ws_conn *st)
{
    ws_req_free(st->req);
    st->req = NULL;
    ws_clear_timer(st);
}

static void ws_uncharge(ws_conn *st);

static void ws_free(ws_conn *st)
{
    ws_uncharge(st);
    ws_drop_request(st);
    if (st->ws)
        wslay_event_context_free(st->ws);
    free(st);
}

/* ---- HTTP responses ---- */

static const char *ws_status_text(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    default: return "Internal Server Error";
    }
}

/* A complete error response, then close after it. */
static void ws_http_error(ws_conn *st, int status, const char *extra_headers, const char *body)
{
    char buf[1024];
    int n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 %d %s\r\n%sContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s\n",
                     status, ws_status_text(status), extra_headers ? extra_headers : "",
                     strlen(body) + 1, body);
    if (n < 0 || (size_t)n >= sizeof(buf))
        n = 0;
    st->mode = WS_DONE;
    ws_drop_request(st);
    pg_conn *c = st->c;
    if (pg_conn_write(c, buf, (size_t)n) < 0) {
        st->failed = 1;          /* the engine has closed it */
        return;
    }
    pg_conn_close(c, 1);
}

/* ---- WebSocket (wslay) ---- */

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                          void *user_data)
{
    (void)flags;
    ws_conn *st = user_data;
    if (st->failed || st->in_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < st->in_len ? len : st->in_len;
    memcpy(buf, st->in, n);
    st->in += n;
    st->in_len -= n;
    return (ssize_t)n;
}

/* wslay gives a frame's header and then its payload to the send callback,
 * within one wslay_event_send, the header flagged WSLAY_MSG_MORE.  Holding
 * the header for its payload makes a push one writev and one TCP segment,
 * not two.  Held per reactor thread, not per connection, as it never
 * outlives that call (ws_pump writes what is left). */
static _Thread_local struct {
    ws_conn *owner;
    size_t len;
    uint8_t bytes[16];             /* a server frame's header is at most 10 */
} held;

static void held_write(void)
{
    ws_conn *st = held.owner;
    held.owner = NULL;
    if (st && !st->failed && pg_conn_write(st->c, held.bytes, held.len) < 0)
        st->failed = 1;
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                          void *user_data)
{
    ws_conn *st = user_data;
    if (held.owner && held.owner != st)
        held_write();
    if (!st->failed && (flags & WSLAY_MSG_MORE) && !held.owner && len <= sizeof(held.bytes)) {
        held.owner = st;
        held.len = len;
        memcpy(held.bytes, data, len);
        return (ssize_t)len;
    }
    struct iovec iov[2];
    int n = 0;
    if (held.owner == st) {
        iov[n++] = (struct iovec){held.bytes, held.len};
        held.owner = NULL;
    }
    iov[n++] = (struct iovec){(void *)data, len};
    if (st->failed || pg_conn_writev(st->c, iov, n) < 0) {
        st->failed = 1;
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

/* Fail the WebSocket: a close frame with code, read no more. */
static void ws_fail(ws_conn *st, uint16_t code, const char *text)
{
    wslay_event_queue_close(st->ws, code, (const uint8_t *)text, strlen(text));
    wslay_event_shutdown_read(st->ws);
}

static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *user_data)
{
    (void)ctx;
    ws_conn *st = user_data;
    if (st->failed)
        return;
    if (arg->opcode == WSLAY_TEXT_FRAME) {
        if (!gw_utf8_valid(arg->msg, arg->msg_length)) {
            ws_fail(st, 1007, "invalid UTF-8");
            return;
        }
        char stackbuf[1024];
        char *buf = arg->msg_length < sizeof(stackbuf) ? stackbuf : malloc(arg->msg_length + 1);
        if (!buf) {
            ws_fail(st, 1011, "out of memory");
            return;
        }
        buf[0] = GW_MSG_TEXT;
        if (arg->msg_length)
            memcpy(buf + 1, arg->msg, arg->msg_length);
        /* Most are ACKs, one per push from each browser: they may wait a
         * moment for others, so the worker wakes once for many. */
        if (pg_conn_dispatch_within(st->c, buf, arg->msg_length + 1, st->cfg->input_wait_us) < 0)
            st->failed = 1;      /* the engine closes the connection */
        if (buf != stackbuf)
            free(buf);
    } else if (arg->opcode == WSLAY_BINARY_FRAME) {
        ws_fail(st, 1003, "binary messages are not supported");
    } else if (arg->opcode == WSLAY_CONNECTION_CLOSE && arg->msg_length > 2 &&
               !gw_utf8_valid(arg->msg + 2, arg->msg_length - 2)) {
        /* wslay queued an echo of this close, reason included: a close
         * reason that is not UTF-8 fails the connection instead (RFC 6455
         * 8.1), with 1007, sent past wslay by ws_pump. */
        st->proto_error = 1007;
    } else if (arg->opcode == WSLAY_PONG && st->probing) {
        /* the answer to ws_on_probe's ping; other pongs (a browser may send
         * them unasked) cost the worker nothing */
        st->probing = 0;
        char pong = GW_MSG_PONG;
        if (pg_conn_dispatch_within(st->c, &pong, 1, st->cfg->input_wait_us) < 0)
            st->failed = 1;
    }
    /* ping (answered by wslay), other pongs: nothing; close: wslay queued the reply */
}

/* A close frame's payload is empty or starts with a 2-byte code: wslay
 * answers a 1-byte one with an empty close, RFC 6455 wants 1002. */
static void ws_frame_start_cb(wslay_event_context_ptr ctx,
                              const struct wslay_event_on_frame_recv_start_arg *arg,
                              void *user_data)
{
    (void)ctx;
    ws_conn *st = user_data;
    if (arg->opcode == WSLAY_CONNECTION_CLOSE && arg->payload_length == 1)
        st->proto_error = 1002;
}

static const struct wslay_event_callbacks ws_callbacks = {
    .recv_callback = ws_recv_cb,
    .send_callback = ws_send_cb,
    .on_frame_recv_start_callback = ws_frame_start_cb,
    .on_msg_recv_callback = ws_msg_cb,
};

/* The wslay context, made now if the connection is idle.  0, or -1. */
static int ws_ctx(ws_conn *st)
{
    if (st->ws)
        return 0;
    if (wslay_event_context_server_init(&st->ws, &ws_callbacks, st) != 0) {
        st->ws = NULL;
        return -1;
    }
    wslay_event_config_set_max_recv_msg_length(st->ws, ws_cfg_max_message(st->cfg, st->c));
    return 0;
}

/* Frees the wslay context when a new one would be the same: between frames,
 * no fragmented message, nothing queued, reading and writing still on (so no
 * close was received, queued or sent and no error happened). */
static void ws_ctx_release_if_idle(ws_conn *st)
{
    if (!st->ws || st->mode != WS_OPEN || st->failed || st->proto_error ||
        st->frame_left > 0 || st->fragmented || !wslay_event_get_read_enabled(st->ws) ||
        !wslay_event_get_write_enabled(st->ws) || wslay_event_want_write(st->ws) ||
        wslay_event_get_queued_msg_count(st->ws) > 0)
        return;
    wslay_event_context_free(st->ws);
    st->ws = NULL;
}

/* Length of the frame header at p (2 to 14 bytes) with its payload length in
 * *payload, or 0 while the header is incomplete. */
static size_t ws_frame_header(const uint8_t *p, size_t len, uint64_t *payload)
{
    if (len < 2)
        return 0;
    uint8_t len7 = p[1] & 0x7f;
    size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    size_t hlen = 2 + ext + (p[1] & 0x80 ? 4 : 0);
    if (len < hlen)
        return 0;
    *payload = len7;
    if (ext) {
        *payload = 0;
        for (size_t i = 0; i < ext; i++)
            *payload = (*payload << 8) | p[2 + i];
    }
    return hlen;
}

/* ---- what incomplete messages cost (ws.h) ---- */

typedef struct {
    size_t max_message;
    size_t max_total;               /* 0: no limit */
} ws_limits;

static _Atomic size_t ws_incomplete_total;

size_t gw_ws_incomplete_bytes(void)
{
    return atomic_load(&ws_incomplete_total);
}

static void ws_uncharge(ws_conn *st)
{
    if (st->charged)
        atomic_fetch_sub(&ws_incomplete_total, st->charged);
    st->charged = 0;
}

/* Charges a data frame to its message before wslay allocates for it:
 * 0, or the close code that refuses it. */
static uint16_t ws_charge(ws_conn *st, uint64_t payload, const ws_limits *lim)
{
    size_t cost = st->fragmented ? GW_WS_FRAGMENT_COST : 0;   /* a continuation */
    if (payload > lim->max_message || st->charged + cost + payload > lim->max_message)
        return 1009;
    cost += (size_t)payload;
    size_t total = atomic_fetch_add(&ws_incomplete_total, cost) + cost;
    if (lim->max_total && total > lim->max_total) {
        atomic_fetch_sub(&ws_incomplete_total, cost);
        return 1013;
    }
    st->charged += cost;
    return 0;
}

/* How many of data[0..len) may go to wslay now: whole frames, and the rest of
 * a frame whose header is complete; an incomplete header waits for more.
 * Tracks where frames end and whether a data message is fragmented (FIN
 * clear), which is all ws_ctx_release_if_idle needs; wslay checks the rest.
 * With lim, charges each data frame (ws_charge) and stops before one that
 * is refused, its close code in st->refused; a message's charge is dropped
 * once its last frame has gone to wslay. */
static size_t ws_frames_ready(ws_conn *st, const char *data, size_t len, const ws_limits *lim)
{
    size_t pos = 0;
    while (pos < len) {
        if (st->frame_left == 0) {
            const uint8_t *p = (const uint8_t *)data + pos;
            uint64_t payload;
            size_t hlen = ws_frame_header(p, len - pos, &payload);
            if (hlen == 0)
                break;
            st->in_data_frame = !(p[0] & 0x08);  /* not a control frame */
            if (st->in_data_frame && lim && (st->refused = ws_charge(st, payload, lim)) != 0)
                break;
            if (st->in_data_frame)
                st->fragmented = !(p[0] & 0x80);
            st->frame_left = payload > UINT64_MAX - hlen ? UINT64_MAX : payload + hlen;
        }
        size_t take = len - pos < st->frame_left ? len - pos : (size_t)st->frame_left;
        pos += take;
        st->frame_left -= take;
        if (st->frame_left == 0 && st->in_data_frame && !st->fragmented)
            ws_uncharge(st);                     /* the message is complete */
    }
    return pos;
}

/* Feeds in[0..len) to wslay and writes what it queued.  With may_close, closes
 * the connection once a close frame has gone out.  Returns -1 when the
 * connection is lost or was closed at once for an error. */
static int ws_pump(ws_conn *st, const char *in, size_t len, int may_close)
{
    int rc = 0;
    if (len > 0 && wslay_event_get_read_enabled(st->ws)) {
        st->in = in;
        st->in_len = len;
        rc = wslay_event_recv(st->ws);
        st->in = NULL;
        st->in_len = 0;
    }
    if (st->failed)
        return -1;
    if (st->proto_error ||
        (rc == WSLAY_ERR_CALLBACK_FAILURE && len > 0 && !wslay_event_get_close_sent(st->ws))) {
        /* Our callbacks did not fail, so wslay's frame layer refused the
         * input (a control frame over 125 bytes or fragmented, a 64-bit
         * length with the top bit set), or a close frame was 1 byte long
         * or had a reason that is not UTF-8 (1007).  wslay queued a close
         * without a code or an echo; send ours instead, past wslay (our
         * send callback never leaves a frame half written, so the stream
         * is at a frame boundary). */
        uint16_t code = st->proto_error == 1007 ? 1007 : 1002;
        const char close_frame[] = {(char)0x88, 2, (char)(code >> 8), (char)(code & 0xff)};
        st->mode = WS_DONE;
        if (pg_conn_write(st->c, close_frame, sizeof(close_frame)) < 0) {
            st->failed = 1;
            return -1;
        }
        if (may_close)
            pg_conn_close(st->c, 1);
        return 0;
    }
    if (rc == 0)
        rc = wslay_event_send(st->ws);
    if (held.owner == st)
        held_write();
    if (st->failed)
        return -1;
    if (rc != 0) {
        pg_debug("session %llx: websocket error %d; closing",
                 (unsigned long long)pg_conn_session(st->c), rc);
        st->mode = WS_DONE;
        pg_conn_close(st->c, 0);
        return -1;
    }
    if (wslay_event_get_close_sent(st->ws) && !wslay_event_want_write(st->ws)) {
        st->mode = WS_DONE;
        if (may_close)
            pg_conn_close(st->c, 1);
    }
    ws_ctx_release_if_idle(st);
    return 0;
}

/* The frames before a refused one go to wslay, then the close; the rest of
 * the input is dropped.  Returns -1 when the connection is lost. */
static int ws_refuse(ws_conn *st, const char *data, size_t n)
{
    uint16_t code = st->refused;
    pg_info("session %llx: %s; closing with %u", (unsigned long long)pg_conn_session(st->c),
            code == 1009 ? "message over max_message with its fragments"
                         : "incomplete messages over max_incomplete_bytes",
            code);
    if (ws_pump(st, data, n, 0) < 0 || ws_ctx(st) < 0)
        return -1;
    if (wslay_event_get_read_enabled(st->ws))
        ws_fail(st, code, code == 1009 ? "message too big" : "try again later");
    return ws_pump(st, NULL, 0, 1);
}

static ws_limits ws_limits_of(const ws_conn *st)
{
    return (ws_limits){.max_message = ws_cfg_max_message(st->cfg, st->c),
                       .max_total = st->cfg->max_incomplete_bytes};
}

/* Bytes on an open WebSocket: returns how many were used (an incomplete frame
 * header is left for the engine to offer again), or -1 to close. */
static ssize_t ws_open_data(ws_conn *st, const char *data, size_t len)
{
    if (st->refused || (st->ws && !wslay_event_get_read_enabled(st->ws)))
        return (ssize_t)len;     /* closing: wslay reads no more */
    ws_limits lim = ws_limits_of(st);
    size_t n = ws_frames_ready(st, data, len, &lim);
    if (n == 0 && !st->refused)
        return 0;
    if (ws_ctx(st) < 0) {
        pg_warn("session %llx: out of memory for the websocket; closing",
                (unsigned long long)pg_conn_session(st->c));
        return -1;
    }
    if (st->refused)
        return ws_refuse(st, data, n) < 0 ? -1 : (ssize_t)len;
    return ws_pump(st, data, n, 1) < 0 ? -1 : (ssize_t)n;
}

/* ---- the handshake ---- */

static int ws_on_url(http_parser *p, const char *at, size_t len);
static int ws_on_header_field(http_parser *p, const char *at, size_t len);
static int ws_on_header_value(http_parser *p, const char *at, size_t len);
static int ws_on_headers_complete(http_parser *p);
static int ws_on_message_complete(http_parser *p);

static const http_parser_settings ws_parser_settings = {
    .on_url = ws_on_url,
    .on_header_field = ws_on_header_field,
    .on_header_value = ws_on_header_value,
    .on_headers_complete = ws_on_headers_complete,
    .on_message_complete = ws_on_message_complete,
};

static int ws_append(ws_req *r, char **buf, size_t *len, const char *data, size_t n)
{
    char *p = realloc(*buf, *len + n + 1);
    if (!p) {
        r->nomem = 1;
        return -1;
    }
    memcpy(p + *len, data, n);
    *len += n;
    p[*len] = '\0';
    *buf = p;
    return 0;
}

static int ws_on_url(http_parser *p, const char *at, size_t len)
{
    ws_req *r = p->data;
    return ws_append(r, &r->url, &r->url_len, at, len) < 0 ? 1 : 0;
}

static int ws_on_header_field(http_parser *p, const char *at, size_t len)
{
    ws_req *r = p->data;
    if (r->in_value) {           /* a new header starts */
        r->in_value = 0;
        r->field_len = 0;
        r->field_long = 0;
    }
    if (r->field_len + len >= sizeof(r->field)) {
        r->field_long = 1;
    } else {
        memcpy(r->field + r->field_len, at, len);
        r->field_len = (uint8_t)(r->field_len + len);
    }
    return 0;
}

static int ws_on_header_value(http_parser *p, const char *at, size_t len)
{
    ws_req *r = p->data;
    if (!r->in_value) {          /* the name is complete: is it one we want? */
        r->in_value = 1;
        r->cur = -1;
        for (int i = 0; i < H_COUNT && !r->field_long; i++)
            if (strlen(ws_header_names[i]) == r->field_len &&
                strncasecmp(r->field, ws_header_names[i], r->field_len) == 0)
                r->cur = (int8_t)i;
        if (r->cur >= 0) {
            if (r->seen[r->cur] &&
                ws_append(r, &r->val[r->cur], &r->val_len[r->cur], ", ", 2) < 0)
                return 1;
            if (!r->val[r->cur] && ws_append(r, &r->val[r->cur], &r->val_len[r->cur], "", 0) < 0)
                return 1;
            r->seen[r->cur] = 1;
        }
    }
    if (r->cur >= 0 && len > 0 && ws_append(r, &r->val[r->cur], &r->val_len[r->cur], at, len) < 0)
        return 1;
    return 0;
}

static int ws_on_headers_complete(http_parser *p)
{
    ws_req *r = p->data;
    if ((p->flags & F_CHUNKED) || p->uses_transfer_encoding ||
        (p->content_length > 0 && p->content_length != UINT64_MAX)) {
        r->body = 1;             /* not supported for now: 413 */
        http_parser_pause(p, 1);
    }
    return 0;
}

static int ws_on_message_complete(http_parser *p)
{
    ws_req *r = p->data;
    r->done = 1;
    http_parser_pause(p, 1);     /* one request per connection */
    return 0;
}

/* The value of a header (trimmed), or NULL when absent. */
static const char *ws_header(const ws_req *r, int h, size_t *len)
{
    if (!r->seen[h]) {
        *len = 0;
        return NULL;
    }
    const char *v = r->val[h];
    *len = r->val_len[h];
    ws_trim(&v, len);
    return v;
}

/* A request other than the upgrade: 'H' + "METHOD URL" [+ "\n" +
 * Authorization] to a worker. */
static void ws_http_request(ws_conn *st)
{
    ws_req *r = st->req;
    const char *method = http_method_str((enum http_method)r->parser.method);
    size_t mlen = strlen(method), auth_len;
    const char *auth = ws_header(r, H_AUTHORIZATION, &auth_len);
    size_t n = 1 + mlen + 1 + r->url_len + (auth ? 1 + auth_len : 0);
    char *msg = malloc(n);
    if (!msg) {
        ws_http_error(st, 500, NULL, "out of memory");
        return;
    }
    msg[0] = GW_MSG_HTTP;
    memcpy(msg + 1, method, mlen);
    msg[1 + mlen] = ' ';
    memcpy(msg + 2 + mlen, r->url, r->url_len);
    if (auth) {                  /* http-parser lets no newline into a value */
        msg[2 + mlen + r->url_len] = '\n';
        memcpy(msg + 3 + mlen + r->url_len, auth, auth_len);
    }
    st->mode = WS_WAIT;
    ws_drop_request(st);
    if (pg_conn_dispatch(st->c, msg, n) < 0)
        st->failed = 1;
    free(msg);
}

/* The upgrade: checks, 101, 'O' + uuid to a worker.  The wslay context is
 * made when the first frame comes or the first message goes. */
static void ws_upgrade(ws_conn *st, const char *query, size_t query_len)
{
    ws_req *r = st->req;
    size_t len;
    const char *v;
    if (r->parser.method != HTTP_GET || r->parser.http_major != 1 || r->parser.http_minor < 1) {
        ws_http_error(st, 400, NULL, "bad request: a WebSocket handshake is GET over HTTP/1.1");
        return;
    }
    v = ws_header(r, H_CONNECTION, &len);
    if (!v || !ws_list_has(v, len, "upgrade")) {
        ws_http_error(st, 400, NULL, "bad request: Connection must include upgrade");
        return;
    }
    v = ws_header(r, H_UPGRADE, &len);
    if (!v || !ws_list_has(v, len, "websocket")) {
        ws_http_error(st, 400, NULL, "bad request: Upgrade must be websocket");
        return;
    }
    v = ws_header(r, H_VERSION, &len);
    if (!v || len != 2 || memcmp(v, "13", 2) != 0) {
        ws_http_error(st, 426, "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n",
                      "upgrade required: WebSocket version 13");
        return;
    }
    const char *key = ws_header(r, H_KEY, &len);
    size_t key_len = len;
    if (!key || !ws_key_ok(key, key_len)) {
        ws_http_error(st, 400, NULL, "bad request: bad Sec-WebSocket-Key");
        return;
    }
    v = ws_header(r, H_ORIGIN, &len);
    /* Browsers always send Origin; other clients may leave it out. */
    if (v && !ws_origin_allowed(st->cfg->allowed_origins, v, len)) {
        ws_http_error(st, 403, NULL, "forbidden: origin not allowed");
        return;
    }
    char uuid[PG_UUID_MAX + 1] = "";
    const char *tok;
    size_t tok_len;
    if (query && ws_query_param(query, query_len, "token", &tok, &tok_len) && tok_len > 0) {
        char token[WS_TOKEN_MAX];
        ssize_t n = ws_url_decode(tok, tok_len, token, sizeof(token));
        const char *why = "token too long or badly escaped";
        if (n <= 0 || gw_ws_token_verify(st->cfg, token, (size_t)n, uuid, &why) < 0) {
            char body[128];
            snprintf(body, sizeof(body), "unauthorized: %s", why);
            ws_http_error(st, 401, NULL, body);
            return;
        }
    }

    char accept[WS_ACCEPT_LEN + 1];
    if (ws_accept_key(key, key_len, accept) < 0) {
        ws_http_error(st, 500, NULL, "out of memory");
        return;
    }
    char resp[160];
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept);
    st->mode = WS_OPEN;
    ws_drop_request(st);
    if (pg_conn_write(st->c, resp, (size_t)n) < 0) {
        st->failed = 1;
        return;
    }
    char open[1 + PG_UUID_MAX + 1];
    size_t ulen = strlen(uuid);
    open[0] = GW_MSG_OPEN;
    memcpy(open + 1, uuid, ulen);
    if (pg_conn_dispatch(st->c, open, 1 + ulen) < 0)
        st->failed = 1;
}

/* The request is complete: route it. */
static void ws_request_done(ws_conn *st)
{
    ws_req *r = st->req;
    if (r->parser.http_major == 1 && r->parser.http_minor >= 1 && !r->seen[H_HOST]) {
        ws_http_error(st, 400, NULL, "bad request: no Host");
        return;
    }
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (!r->url || http_parser_parse_url(r->url, r->url_len, r->parser.method == HTTP_CONNECT, &u)) {
        ws_http_error(st, 400, NULL, "bad request: bad URL");
        return;
    }
    const char *path = "/";
    size_t path_len = 1;
    if (u.field_set & (1 << UF_PATH)) {
        path = r->url + u.field_data[UF_PATH].off;
        path_len = u.field_data[UF_PATH].len;
    }
    const char *query = NULL;
    size_t query_len = 0;
    if (u.field_set & (1 << UF_QUERY)) {
        query = r->url + u.field_data[UF_QUERY].off;
        query_len = u.field_data[UF_QUERY].len;
    }
    const char *ws_path = ws_cfg_path(st->cfg);
    if (r->seen[H_UPGRADE] && !st->cfg->no_websocket && path_len == strlen(ws_path) &&
        memcmp(path, ws_path, path_len) == 0)
        ws_upgrade(st, query, query_len);
    else
        ws_http_request(st);
}

/* Bytes while reading the request. Returns -1 when the connection must close. */
static ssize_t ws_http_data(ws_conn *st, const char *data, size_t len)
{
    ws_req *r = st->req;
    size_t limit = ws_cfg_header_size(st->cfg);
    size_t room = r->nbytes < limit ? limit - r->nbytes : 0;
    size_t feed = len < room + 1 ? len : room + 1;   /* never buffer more than the limit */
    size_t n = http_parser_execute(&r->parser, &ws_parser_settings, data, feed);
    r->nbytes += n;
    enum http_errno err = HTTP_PARSER_ERRNO(&r->parser);
    if (r->nomem)
        ws_http_error(st, 500, NULL, "out of memory");
    else if (r->body)
        ws_http_error(st, 413, NULL, "request bodies are not accepted");
    else if (r->nbytes > limit)
        ws_http_error(st, 431, NULL, "request headers too large");
    else if (r->done)
        ws_request_done(st);
    else if (err != HPE_OK)
        ws_http_error(st, 400, NULL, "bad request");
    if (st->failed)
        return -1;
    if (st->mode != WS_OPEN || n == len)
        return (ssize_t)len;
    /* Frames the client sent right behind the handshake. */
    ssize_t used = ws_open_data(st, data + n, len - n);
    return used < 0 ? -1 : (ssize_t)(n + (size_t)used);
}

static void ws_header_timeout(int64_t timer_id, void *arg)
{
    (void)timer_id;
    ws_conn *st = arg;
    st->timer = 0;               /* a one-shot timer is gone once it fired */
    if (st->mode != WS_HTTP)
        return;
    pg_debug("session %llx: no complete request within %u ms",
             (unsigned long long)pg_conn_session(st->c), ws_cfg_header_timeout(st->cfg));
    ws_http_error(st, 408, NULL, "request timeout");
}

static ws_conn *ws_conn_new(pg_conn *c)
{
    ws_conn *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->c = c;
    st->cfg = pg_conn_protocol(c)->arg;
    st->req = calloc(1, sizeof(*st->req));
    if (!st->req) {
        free(st);
        return NULL;
    }
    http_parser_init(&st->req->parser, HTTP_REQUEST);
    st->req->parser.data = st->req;
    st->req->in_value = 1;
    st->req->cur = -1;
    st->mode = WS_HTTP;
    /* Started at accept (on_open): a client that sends nothing is closed too. */
    st->timer = pg_timer_after(ws_cfg_header_timeout(st->cfg), ws_header_timeout, st);
    if (st->timer < 0) {
        pg_warn("session %llx: no header timer", (unsigned long long)pg_conn_session(c));
        st->timer = 0;
    }
    return st;
}

/* ---- the hook ---- */

static void ws_on_open(pg_conn *c)
{
    ws_conn *st = ws_conn_new(c);
    if (st)
        pg_conn_set_state(c, st);
    else
        pg_conn_close(c, 0);
}

static ssize_t ws_on_data(pg_conn *c, const char *data, size_t len)
{
    ws_conn *st = pg_conn_get_state(c);
    if (!st) {
        if (!(st = ws_conn_new(c)))
            return -1;
        pg_conn_set_state(c, st);
    }
    switch (st->mode) {
    case WS_HTTP:
        return ws_http_data(st, data, len);
    case WS_OPEN:
        return ws_open_data(st, data, len);
    default:                     /* waiting for a worker's answer, or closing */
        return (ssize_t)len;
    }
}

/* A worker's message for the browser; a push is SENT once it is queued
 * here (gw_push_message). */
static int ws_on_send(pg_conn *c, const char *data, size_t len)
{
    uint64_t push_key;
    int push = gw_push_message(data, len, &push_key);
    if (push) {
        data += GW_PUSH_HEADER;
        len -= GW_PUSH_HEADER;
    }
    ws_conn *st = pg_conn_get_state(c);
    if (st && st->mode == WS_DONE)
        return 0;                /* closing: dropped */
    if (!st || st->mode != WS_OPEN) {
        /* HTTP: the worker's whole response, then close. */
        if (st) {
            st->mode = WS_DONE;
            ws_drop_request(st);
        }
        if (pg_conn_write(c, data, len) == 0)
            pg_conn_close(c, 1);
        return 0;
    }
    struct wslay_event_msg msg = {WSLAY_TEXT_FRAME, (const uint8_t *)data, len};
    int rc = ws_ctx(st) < 0 ? WSLAY_ERR_NOMEM : wslay_event_queue_msg(st->ws, &msg);
    if (rc == 0) {
        if (push)
            gw_push_record_promote(push_key, GW_PUSH_QUEUED, GW_PUSH_SENT);
        ws_pump(st, NULL, 0, 1);
    } else if (rc != WSLAY_ERR_NO_MORE_MSG) {
        pg_warn("session %llx: websocket queue error %d; closing",
                (unsigned long long)pg_conn_session(c), rc);
        st->mode = WS_DONE;
        pg_conn_close(c, 0);
    }
    return 0;
}

static void ws_on_shutdown(pg_conn *c, const char *reason, size_t len)
{
    ws_conn *st = pg_conn_get_state(c);
    if (!st || st->mode != WS_OPEN)
        return;                  /* HTTP: the engine closes the connection */
    const char *text;
    size_t text_len;
    uint16_t code = ws_parse_reason(reason, len, &text, &text_len);
    if (ws_ctx(st) == 0) {
        wslay_event_queue_close(st->ws, code, (const uint8_t *)text, text_len);
        wslay_event_shutdown_read(st->ws);
        ws_pump(st, NULL, 0, 0); /* the engine closes after on_shutdown */
    }
    st->mode = WS_DONE;
}

/* A worker asks whether the browser is still there: a ping, whose pong
 * goes to the worker as GW_MSG_PONG. */
static void ws_on_probe(pg_conn *c)
{
    ws_conn *st = pg_conn_get_state(c);
    if (!st || st->mode != WS_OPEN || st->failed)
        return;
    struct wslay_event_msg ping = {WSLAY_PING, (const uint8_t *)"pushgate", 8};
    if (ws_ctx(st) == 0 && wslay_event_queue_msg(st->ws, &ping) == 0) {
        st->probing = 1;
        ws_pump(st, NULL, 0, 1);
    }
}

static void ws_on_close(pg_conn *c)
{
    ws_conn *st = pg_conn_get_state(c);
    if (!st)
        return;
    pg_conn_set_state(c, NULL);
    ws_free(st);
}

const pg_protocol *gw_ws_protocol(const gw_ws_config *cfg)
{
    if (!cfg)
        return NULL;
    for (size_t i = 0; i < ws_nprotocols; i++)
        if (ws_protocols[i].arg == cfg)
            return &ws_protocols[i];
    if (ws_nprotocols == PG_SERVER_MAX_LISTENERS)
        return NULL;
    ws_protocols[ws_nprotocols] = (pg_protocol){
        .on_open = ws_on_open,
        .on_data = ws_on_data,
        .on_send = ws_on_send,
        .on_shutdown = ws_on_shutdown,
        .on_probe = ws_on_probe,
        .on_close = ws_on_close,
        .arg = (void *)cfg,
    };
    return &ws_protocols[ws_nprotocols++];
}

/* conn.h - the engine's side of one connection, for the fuzz targets that
 * feed gateway/ws.c (ws_frames.c, http_upgrade.c).
 *
 * ws.c is a protocol hook (server.h, pg_protocol): the engine's reactor
 * reads a socket, keeps what the hook leaves (common/input.c) and offers it
 * again, and the hook answers through pg_conn_write, pg_conn_dispatch (and
 * _within) and pg_conn_close.  A reactor needs a running server, so this file is that
 * engine for one connection, as server_reactor.c does it: the real kept
 * input (pg_input_feed), offers stopped once the connection closes, and
 * on_close last.  What ws.c writes is collected and checked: it must be
 * whole server frames (unmasked, known opcodes, control frames of at most
 * 125 bytes, close codes a server may send), each write on its own once the
 * connection is upgraded (a frame in one system call, never a header
 * alone); what it dispatches to workers must be what ws.h promises. */
#ifndef FUZZ_CONN_H
#define FUZZ_CONN_H

#include "input.h"
#include "log.h"
#include "server.h"
#include "timer.h"
#include "token.h"
#include "utf8.h"

#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

struct pg_server {
    pg_server_settings settings;
};

struct pg_conn {
    const pg_protocol *protocol;
    void *state;
    int closing;
    pg_input in;
    char *out;                     /* everything written */
    size_t out_len, out_cap;
    int framing;                   /* upgraded: every write is whole frames */
    size_t max_message;            /* the largest 'T' a worker may get */
};

static struct pg_server fuzz_server = {.settings = {.package_max_length = 2 * 1024 * 1024}};

pg_session_id pg_conn_session(const pg_conn *c) { (void)c; return 1; }
pg_server *pg_conn_server(const pg_conn *c) { (void)c; return &fuzz_server; }
const pg_server_settings *pg_server_settings_of(const pg_server *s) { return &s->settings; }
const pg_protocol *pg_conn_protocol(const pg_conn *c) { return c->protocol; }
void *pg_conn_get_state(const pg_conn *c) { return c->state; }
void pg_conn_set_state(pg_conn *c, void *state) { c->state = state; }

void pg_conn_close(pg_conn *c, int graceful)
{
    (void)graceful;
    c->closing = 1;
}

static void fuzz_check_frames(const uint8_t *p, size_t len);

int pg_conn_write(pg_conn *c, const void *data, size_t len)
{
    if (c->closing)
        return -1;                 /* the engine refuses writes once closing */
    if (c->framing)
        fuzz_check_frames(data, len);
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 256;
        while (cap < c->out_len + len)
            cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p)
            abort();
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    c->framing = c->out_len >= 13 && memcmp(c->out, "HTTP/1.1 101 ", 13) == 0;
    return 0;
}

/* One write of the pieces together, as the reactor's writev. */
int pg_conn_writev(pg_conn *c, struct iovec *iov, int n)
{
    size_t len = 0, at = 0;
    for (int i = 0; i < n; i++)
        len += iov[i].iov_len;
    char *all = malloc(len ? len : 1);
    if (!all)
        abort();
    for (int i = 0; i < n; i++) {
        memcpy(all + at, iov[i].iov_base, iov[i].iov_len);
        at += iov[i].iov_len;
    }
    int rc = pg_conn_write(c, all, len);
    free(all);
    return rc;
}

/* What a worker gets: 'O' + a uuid a token may name (or none), 'T' + valid
 * UTF-8 of at most max_message bytes, 'H' + "METHOD URL". */
int pg_conn_dispatch(pg_conn *c, const char *data, size_t len)
{
    if (len < 1 || c->closing)
        abort();
    switch (data[0]) {
    case 'O':
        if (len > 1 && !pg_token_uuid_ok(data + 1, len - 1))
            abort();
        break;
    case 'T':
        if (len - 1 > c->max_message || !gw_utf8_valid(data + 1, len - 1))
            abort();
        break;
    case 'H':
        if (!memchr(data, ' ', len))
            abort();
        break;
    default:
        abort();
    }
    return 0;
}

/* A message that may wait (ACKs, chat): the same checks; the wait is the
 * engine's, not the hook's. */
int pg_conn_dispatch_within(pg_conn *c, const char *data, size_t len, unsigned within_us)
{
    (void)within_us;
    return pg_conn_dispatch(c, data, len);
}

static ssize_t fuzz_consume(void *arg, const char *data, size_t len, pg_input_offer *offer)
{
    pg_conn *c = arg;
    ssize_t used = c->protocol->on_data(c, data, len);
    offer->stop = c->closing;
    return used;
}

static void fuzz_conn_open(pg_conn *c, const pg_protocol *p, size_t max_message)
{
    static struct event_base *base;
    if (!base) {
        base = event_base_new();   /* timers are set, never run */
        pg_timer_bind(base);
        pg_log_set_level(PG_LOG_ERROR);
    }
    memset(c, 0, sizeof(*c));
    c->protocol = p;
    c->max_message = max_message;
    p->on_open(c);
}

/* One read of n bytes, as server_reactor.c's conn_process. */
static void fuzz_conn_read(pg_conn *c, const char *data, size_t n)
{
    if (c->closing || n == 0)
        return;
    size_t limit = fuzz_server.settings.package_max_length + 64 * 1024 + 65536;
    if (pg_input_feed(&c->in, data, n, limit, fuzz_consume, c) < 0)
        c->closing = 1;
}

/* Checks that p[0..len) is whole server frames. */
static void fuzz_check_frames(const uint8_t *p, size_t len)
{
    size_t pos = 0;
    while (pos < len) {
        if (len - pos < 2)
            abort();
        uint8_t b0 = p[pos], b1 = p[pos + 1];
        unsigned op = b0 & 0x0f;
        if ((b1 & 0x80) || (b0 & 0x70))
            abort();               /* masked, or RSV bits */
        if (op != 0x1 && op != 0x8 && op != 0x9 && op != 0xa && op != 0x0)
            abort();
        uint64_t n = b1 & 0x7f;
        size_t h = 2;
        if (n == 126) {
            if (len - pos < 4)
                abort();
            n = (uint64_t)p[pos + 2] << 8 | p[pos + 3];
            h = 4;
        } else if (n == 127) {
            if (len - pos < 10)
                abort();
            n = 0;
            for (int i = 0; i < 8; i++)
                n = n << 8 | p[pos + 2 + i];
            h = 10;
        }
        if ((op & 0x8) && (n > 125 || !(b0 & 0x80)))
            abort();               /* control frames: short, never fragmented */
        if (n > len - pos - h)
            abort();               /* a frame cut short */
        if (op == 0x8) {
            if (n == 1)
                abort();
            if (n >= 2) {
                unsigned code = (unsigned)p[pos + h] << 8 | p[pos + h + 1];
                int ok = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
                         (code >= 3000 && code <= 4999);
                if (!ok || !gw_utf8_valid((const char *)p + pos + h + 2, n - 2))
                    abort();
            }
        }
        pos += h + (size_t)n;
    }
}

/* The worker answers, the server closes it, the engine frees it; then
 * checks all that was written.  http: an HTTP response comes first. */
static void fuzz_conn_finish(pg_conn *c)
{
    int upgraded = c->out_len >= 13 && memcmp(c->out, "HTTP/1.1 101 ", 13) == 0;
    if (!c->closing && c->state && !upgraded && c->out_len == 0) {
        static const char answer[] = "HTTP/1.1 204 No Content\r\n\r\n";   /* a worker's */
        c->protocol->on_send(c, answer, sizeof(answer) - 1);
    } else if (!c->closing && c->state && upgraded) {
        c->protocol->on_send(c, "{\"event\":\"HEART_BEAT\"}", 22);
        if (!c->closing) {
            static const char reason[] = "\x0f\xa1" "bye";
            c->protocol->on_shutdown(c, reason, sizeof(reason) - 1);
        }
    }
    c->protocol->on_close(c);
    pg_input_free(&c->in);
    const char *end = c->out_len ? memmem(c->out, c->out_len, "\r\n\r\n", 4) : NULL;
    if (c->out_len && (c->out_len < 12 || memcmp(c->out, "HTTP/1.1 ", 9) != 0 || !end))
        abort();                   /* every connection starts with an HTTP response */
    if (upgraded) {
        size_t start = (size_t)(end + 4 - c->out);
        fuzz_check_frames((const uint8_t *)c->out + start, c->out_len - start);
    }
    free(c->out);
    memset(c, 0, sizeof(*c));
}

#endif

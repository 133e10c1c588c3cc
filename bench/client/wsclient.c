/* wsclient.c - WebSocket client: the upgrade by hand, frames by wslay
 * (see wsclient.h). */
#include "wsclient.h"

#include "net.h"
#include "util.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wslay/wslay.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_HEAD_MAX 8192
#define WS_MSG_MAX (16u << 20)

enum { WS_CONNECTING, WS_UPGRADING, WS_OPEN, WS_DONE };

struct pb_ws {
    struct bufferevent *bev;
    wslay_event_context_ptr ctx;        /* from the 101 on */
    const pb_ws_events *ev;
    void *arg;
    int state;
    int closing;                        /* we sent the first close frame */
    uint8_t stage[16];                  /* a frame header waiting for its payload */
    size_t staged;
    char accept[32];                    /* the Sec-WebSocket-Accept we expect */
    pb_ws *flush_prev, *flush_next;     /* in the pass's flush list */
    int flush_listed;
};

static uint64_t ws_rand_state;
static int ws_rand_seeded;

static void ws_rand_forked(void)
{
    ws_rand_seeded = 0;                 /* each forked process its own sequence */
}

static uint64_t ws_rand(void)
{
    if (!ws_rand_seeded) {
        static int hooked;
        if (!hooked)
            hooked = pthread_atfork(NULL, NULL, ws_rand_forked) == 0;
        ws_rand_state = pb_rand_seed();
        ws_rand_seeded = 1;
    }
    return pb_rand(&ws_rand_state);
}

static void ws_random_bytes(uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i += 8) {
        uint64_t r = ws_rand();
        memcpy(buf + i, &r, len - i < 8 ? len - i : 8);
    }
}

/* base64(SHA-1(key + GUID)) into out (29 bytes with the NUL). */
static int ws_accept_for(const char *key, char out[32])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned dlen = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_DigestInit_ex(md, EVP_sha1(), NULL) == 1 &&
             EVP_DigestUpdate(md, key, strlen(key)) == 1 &&
             EVP_DigestUpdate(md, WS_GUID, sizeof(WS_GUID) - 1) == 1 &&
             EVP_DigestFinal_ex(md, digest, &dlen) == 1 && dlen == SHA_DIGEST_LENGTH;
    EVP_MD_CTX_free(md);
    if (!ok)
        return -1;
    EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
    return 0;
}

/* ---- wslay callbacks: bytes come from and go to the bufferevent ---- */

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                          void *user)
{
    (void)flags;
    pb_ws *ws = user;
    int n = evbuffer_remove(bufferevent_get_input(ws->bev), buf, len);
    if (n <= 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    return n;
}

/* What the socket did not take waits in the output buffer for the write
 * event (ws_on_write turns it off again once that is written). */
static ssize_t ws_queue(pb_ws *ws, wslay_event_context_ptr ctx, const uint8_t *staged,
                        size_t staged_len, const uint8_t *data, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(ws->bev);
    bufferevent_enable(ws->bev, EV_WRITE);
    if (evbuffer_add(out, staged, staged_len) < 0 || evbuffer_add(out, data, len) < 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return 0;
}

/* Once open, a frame goes to the socket at once, header and payload in one
 * sendmsg, instead of through the bufferevent: with EV_WRITE enabled it
 * adds and removes its write event (two epoll_ctl calls) around every
 * ACK, which cost the client about as much as the write itself. */
static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                          int flags, void *user)
{
    pb_ws *ws = user;
    int more = flags & WSLAY_MSG_MORE;
    if (ws->state != WS_OPEN || evbuffer_get_length(bufferevent_get_output(ws->bev)) > 0) {
        size_t staged = ws->staged;
        ws->staged = 0;
        return ws_queue(ws, ctx, ws->stage, staged, data, len) < 0 ? -1 : (ssize_t)len;
    }
    if (more && ws->staged + len <= sizeof(ws->stage)) {
        memcpy(ws->stage + ws->staged, data, len);
        ws->staged += len;
        return (ssize_t)len;
    }
    struct iovec iov[2] = {{ws->stage, ws->staged}, {(void *)data, len}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
    ssize_t n = sendmsg(bufferevent_getfd(ws->bev), &msg,
                        MSG_NOSIGNAL | MSG_DONTWAIT | (more ? MSG_MORE : 0));
    size_t staged = ws->staged, sent = n > 0 ? (size_t)n : 0;
    ws->staged = 0;
    if (n < 0 && errno != EAGAIN && errno != EINTR)
        return (ssize_t)len;           /* the read side sees the broken connection */
    if (sent == staged + len)
        return (ssize_t)len;
    size_t from_stage = sent < staged ? sent : staged, from_data = sent - from_stage;
    return ws_queue(ws, ctx, ws->stage + from_stage, staged - from_stage, data + from_data,
                    len - from_data) < 0 ? -1 : (ssize_t)len;
}

static int ws_genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
    (void)ctx;
    (void)user;
    ws_random_bytes(buf, len);
    return 0;
}

static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *m,
                      void *user)
{
    (void)ctx;
    pb_ws *ws = user;
    if (m->opcode == WSLAY_TEXT_FRAME)
        ws->ev->on_text(ws, ws->arg, (const char *)m->msg, m->msg_length);
    else if (m->opcode == WSLAY_BINARY_FRAME && ws->ev->on_bad)
        ws->ev->on_bad(ws, ws->arg);
}

/* ---- endings: each is the last thing done with ws ---- */

static void ws_fail(pb_ws *ws, int kind, int status)
{
    ws->state = WS_DONE;
    bufferevent_disable(ws->bev, EV_READ | EV_WRITE);
    ws->ev->on_fail(ws, ws->arg, kind, status);
}

static void ws_closed(pb_ws *ws, int code, int who)
{
    ws->state = WS_DONE;
    bufferevent_disable(ws->bev, EV_READ);
    ws->ev->on_close(ws, ws->arg, code, ws->closing ? PB_WS_BY_US : who);
}

/* ---- the upgrade ---- */

static int ws_header_is(const char *line, const char *name, const char **value)
{
    size_t n = strlen(name);
    if (strncasecmp(line, name, n) != 0 || line[n] != ':')
        return 0;
    *value = line + n + 1;
    while (**value == ' ' || **value == '\t')
        (*value)++;
    return 1;
}

/* The response head (NUL-terminated, CRLF lines): -1 when it is a 101 with
 * the right accept, else the PB_WS_ERR_ kind of what is wrong. */
static int ws_check_head(pb_ws *ws, char *head, int *status)
{
    if (sscanf(head, "HTTP/1.%*d %d", status) != 1)
        return PB_WS_ERR_HANDSHAKE;
    if (*status != 101)
        return PB_WS_ERR_HTTP;
    int accepted = 0;
    char *save = NULL;
    for (char *line = strtok_r(head, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
        const char *v;
        if (ws_header_is(line, "Sec-WebSocket-Accept", &v))
            accepted = strncmp(v, ws->accept, 28) == 0 && (v[28] == '\0' || v[28] == ' ');
    }
    return accepted ? -1 : PB_WS_ERR_HANDSHAKE;
}

static int ws_start_frames(pb_ws *ws)
{
    static const struct wslay_event_callbacks cbs = {
        .recv_callback = ws_recv_cb, .send_callback = ws_send_cb,
        .genmask_callback = ws_genmask_cb, .on_msg_recv_callback = ws_msg_cb};
    if (wslay_event_context_client_init(&ws->ctx, &cbs, ws) != 0)
        return -1;
    wslay_event_config_set_max_recv_msg_length(ws->ctx, WS_MSG_MAX);
    return 0;
}

/* 0: the head is not complete yet; 1: open; -1: failed (ws ended). */
static int ws_read_head(pb_ws *ws)
{
    struct evbuffer *in = bufferevent_get_input(ws->bev);
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0) {
        if (evbuffer_get_length(in) > WS_HEAD_MAX) {
            ws_fail(ws, PB_WS_ERR_HANDSHAKE, 0);
            return -1;
        }
        return 0;
    }
    size_t len = (size_t)end.pos + 4;
    char *head = len <= WS_HEAD_MAX ? malloc(len + 1) : NULL;
    if (!head) {
        ws_fail(ws, PB_WS_ERR_HANDSHAKE, 0);
        return -1;
    }
    evbuffer_remove(in, head, len);
    head[len] = '\0';
    int status = 0, kind = ws_check_head(ws, head, &status);
    free(head);
    if (kind < 0 && ws_start_frames(ws) < 0)
        kind = PB_WS_ERR_HANDSHAKE;
    if (kind >= 0) {
        ws_fail(ws, kind, status);
        return -1;
    }
    ws->state = WS_OPEN;
    bufferevent_disable(ws->bev, EV_WRITE);   /* from now on ws_send_cb writes */
    return 1;
}

/* ---- sending at the end of the loop pass ----
 *
 * One process here stands for thousands of browsers.  Were a frame written
 * as soon as it is queued (an ACK, from inside the read callback of the
 * message it answers), every browser read later in the same loop pass
 * would wait for the earlier ones' sends, each a loopback send that runs
 * the server's TCP input too, and count that wait as the server's latency.
 * A real browser does not wait for another's ACK.  So frames queued while
 * the pass reads go out after all of its reads, from one event made active
 * once per pass (libevent runs it after the events already active). */

static struct event_base *flush_base;
static struct event *flush_ev;
static pb_ws *flush_head;

static void ws_unlist(pb_ws *ws)
{
    if (!ws->flush_listed)
        return;
    if (ws->flush_prev)
        ws->flush_prev->flush_next = ws->flush_next;
    else
        flush_head = ws->flush_next;
    if (ws->flush_next)
        ws->flush_next->flush_prev = ws->flush_prev;
    ws->flush_prev = ws->flush_next = NULL;
    ws->flush_listed = 0;
}

static void ws_flush_listed(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    pb_ws *ws;
    while ((ws = flush_head) != NULL) {
        ws_unlist(ws);
        if (ws->state == WS_OPEN)
            wslay_event_send(ws->ctx);  /* a broken socket: the read side sees it */
    }
}

/* Sends ws's queued frames after this pass's reads; at once when no event
 * can be made for that. */
static void ws_send_later(pb_ws *ws)
{
    struct event_base *base = bufferevent_get_base(ws->bev);
    if (base != flush_base) {
        struct event *ev = event_new(base, -1, 0, ws_flush_listed, NULL);
        if (!ev) {
            wslay_event_send(ws->ctx);
            return;
        }
        if (flush_ev && !flush_head)
            event_free(flush_ev);       /* a forked child's: its parent's base */
        flush_ev = ev;
        flush_base = base;
    }
    if (ws->flush_listed)
        return;
    if (!flush_head)
        event_active(flush_ev, EV_TIMEOUT, 0);
    ws->flush_next = flush_head;
    if (flush_head)
        flush_head->flush_prev = ws;
    flush_head = ws;
    ws->flush_listed = 1;
}

/* ---- frames ---- */

static void ws_on_write(struct bufferevent *bev, void *arg)
{
    (void)arg;
    bufferevent_disable(bev, EV_WRITE);
}

static void ws_read_frames(pb_ws *ws)
{
    int r = wslay_event_recv(ws->ctx);
    if (r == 0 && wslay_event_get_close_received(ws->ctx))
        r = wslay_event_send(ws->ctx);  /* the close reply goes before the ending */
    else if (r == 0 && wslay_event_want_write(ws->ctx))
        ws_send_later(ws);
    if (wslay_event_get_close_received(ws->ctx))
        ws_closed(ws, wslay_event_get_status_code_received(ws->ctx), PB_WS_BY_SERVER);
    else if (r != 0 || !wslay_event_get_read_enabled(ws->ctx))
        ws_closed(ws, r != 0 ? 1002 : wslay_event_get_status_code_sent(ws->ctx), PB_WS_BROKEN);
}

static void ws_on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    pb_ws *ws = arg;
    if (ws->state == WS_UPGRADING || ws->state == WS_CONNECTING) {
        ws->state = WS_UPGRADING;
        if (ws_read_head(ws) <= 0)
            return;
        ws->ev->on_open(ws, ws->arg);
        if (ws->state != WS_OPEN)
            return;
    }
    if (ws->state == WS_OPEN)
        ws_read_frames(ws);
}

static void ws_on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    pb_ws *ws = arg;
    if (what & BEV_EVENT_CONNECTED) {
        ws->state = WS_UPGRADING;
        return;
    }
    if (ws->state == WS_DONE)
        return;
    if (ws->state != WS_OPEN)
        ws_fail(ws, (what & BEV_EVENT_TIMEOUT) ? PB_WS_ERR_TIMEOUT : PB_WS_ERR_TCP, 0);
    else if (ws->closing && (what & BEV_EVENT_EOF))
        ws_closed(ws, wslay_event_get_status_code_sent(ws->ctx), PB_WS_BY_US);
    else
        ws_closed(ws, PB_WS_CLOSE_ABNORMAL, PB_WS_BY_SERVER);
}

/* ---- public ---- */

static int ws_write_upgrade(pb_ws *ws, const char *hostport, const char *target)
{
    uint8_t raw[16];
    char key[32];
    ws_random_bytes(raw, sizeof(raw));
    EVP_EncodeBlock((unsigned char *)key, raw, sizeof(raw));
    if (ws_accept_for(key, ws->accept) < 0)
        return -1;
    return evbuffer_add_printf(bufferevent_get_output(ws->bev),
                               "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                               "Sec-WebSocket-Version: 13\r\n\r\n",
                               target, hostport, key) < 0 ? -1 : 0;
}

pb_ws *pb_ws_connect(struct event_base *base, const struct sockaddr_in *dst,
                     const struct sockaddr_in *src, const char *hostport, const char *target,
                     unsigned timeout_ms, const pb_ws_events *ev, void *arg, int *kind)
{
    *kind = PB_WS_ERR_SOCKET;
    pb_ws *ws = calloc(1, sizeof(*ws));
    int fd = ws ? pb_net_socket(src) : -1;
    if (fd < 0) {
        free(ws);
        return NULL;
    }
    ws->ev = ev;
    ws->arg = arg;
    ws->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!ws->bev) {
        close(fd);
        free(ws);
        return NULL;
    }
    bufferevent_setcb(ws->bev, ws_on_read, ws_on_write, ws_on_event, ws);
    pb_ws_set_timeout(ws, timeout_ms);
    *kind = PB_WS_ERR_TCP;
    if (ws_write_upgrade(ws, hostport, target) < 0 ||
        bufferevent_enable(ws->bev, EV_READ | EV_WRITE) < 0 ||
        bufferevent_socket_connect(ws->bev, (const struct sockaddr *)dst, sizeof(*dst)) < 0) {
        pb_ws_free(ws);
        return NULL;
    }
    return ws;
}

int pb_ws_send_text(pb_ws *ws, const char *text, size_t len)
{
    if (ws->state != WS_OPEN || ws->closing)
        return -1;
    struct wslay_event_msg m = {.opcode = WSLAY_TEXT_FRAME, .msg = (const uint8_t *)text,
                                .msg_length = len};
    if (wslay_event_queue_msg(ws->ctx, &m) != 0)
        return -1;
    ws_send_later(ws);
    return 0;
}

void pb_ws_close(pb_ws *ws, uint16_t code)
{
    if (ws->state != WS_OPEN || ws->closing)
        return;
    ws->closing = 1;
    if (wslay_event_queue_close(ws->ctx, code, NULL, 0) == 0)
        wslay_event_send(ws->ctx);
}

void pb_ws_set_timeout(pb_ws *ws, unsigned timeout_ms)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    bufferevent_set_timeouts(ws->bev, timeout_ms ? &tv : NULL, timeout_ms ? &tv : NULL);
}

size_t pb_ws_pending_output(const pb_ws *ws)
{
    return evbuffer_get_length(bufferevent_get_output(ws->bev));
}

void pb_ws_free(pb_ws *ws)
{
    if (!ws)
        return;
    ws_unlist(ws);
    if (ws->bev)
        bufferevent_free(ws->bev);
    if (ws->ctx)
        wslay_event_context_free(ws->ctx);
    free(ws);
}

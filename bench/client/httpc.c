/* httpc.c - pipelined HTTP/1.1 POSTs on keep-alive connections (see httpc.h). */
#include "httpc.h"

#include "util.h"

#include <errno.h>
#include <http_parser.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_CHUNK 65536

typedef struct {
    pb_httpc *h;
    int fd;                     /* -1: closed, opened again at the next post */
    http_parser parser;
    char *out;                  /* requests not yet written: out[pos..len) */
    size_t len, cap, pos;
    uint64_t inflight;          /* requests written or queued, not yet answered */
    int close_after;            /* the server said it closes after this response */
} hconn;

struct pb_httpc {
    pb_url url;
    unsigned timeout_ms;
    int nconns, next;
    hconn conns[PB_HTTPC_CONNS_MAX];
    http_parser_settings settings;
    pb_httpc_stats stats;
    int warned;
    char *rbuf;
};

/* ---- responses ---- */

static int hc_on_message_complete(http_parser *p)
{
    hconn *c = p->data;
    pb_httpc_stats *s = &c->h->stats;
    unsigned status = p->status_code;
    if (!http_should_keep_alive(p))
        c->close_after = 1;
    if (c->inflight == 0)
        return 0;               /* an answer to nothing: not ours to count */
    c->inflight--;
    if (status >= 200 && status < 300) {
        s->ok++;
        s->accepted += status == 202;
    } else {
        s->errors++;
        if (!s->first_status)
            s->first_status = (int)status;
        if (!c->h->warned++)
            pb_err("publish: POST %s%s...: HTTP %u", c->h->url.hostport, c->h->url.path, status);
    }
    return 0;
}

/* ---- connections ---- */

static int hc_open(pb_httpc *h, hconn *c)
{
    int fd = pb_net_socket(NULL);
    if (fd < 0)
        return -1;
    if (connect(fd, (const struct sockaddr *)&h->url.addr, sizeof(h->url.addr)) < 0 &&
        errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    int err = 0;
    socklen_t elen = sizeof(err);
    if (poll(&pfd, 1, (int)h->timeout_ms) != 1 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err) {
        close(fd);
        errno = err ? err : ETIMEDOUT;
        return -1;
    }
    c->fd = fd;
    c->close_after = 0;
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    return 0;
}

/* The server closed (or broke) c: what it had not answered is lost. */
static void hc_drop(pb_httpc *h, hconn *c, const char *why)
{
    if (c->inflight) {
        h->stats.errors += c->inflight;
        if (!h->stats.first_status)
            h->stats.first_status = -1;
        if (!h->warned++)
            pb_err("publish: %s: %s with %llu requests unanswered", h->url.hostport, why,
                   (unsigned long long)c->inflight);
    }
    c->inflight = 0;
    c->len = c->pos = 0;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static int hc_append(hconn *c, const char *data, size_t n)
{
    if (c->len + n > c->cap) {
        if (c->pos > 0) {           /* drop what is written before growing */
            memmove(c->out, c->out + c->pos, c->len - c->pos);
            c->len -= c->pos;
            c->pos = 0;
        }
        size_t cap = c->cap ? c->cap : 16384;
        while (cap < c->len + n)
            cap *= 2;
        char *out = cap != c->cap ? realloc(c->out, cap) : c->out;
        if (!out)
            return -1;
        c->out = out;
        c->cap = cap;
    }
    memcpy(c->out + c->len, data, n);
    c->len += n;
    return 0;
}

int pb_httpc_post(pb_httpc *h, const char *path, const char *type, const char *body, size_t len)
{
    hconn *c = &h->conns[h->next];
    h->next = (h->next + 1) % h->nconns;
    if (c->fd < 0) {
        if (hc_open(h, c) < 0) {
            pb_err("publish: cannot connect again to %s: %s", h->url.hostport, strerror(errno));
            return -1;
        }
        h->stats.reconnects++;
    }
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                     path, h->url.hostport, type, len);
    if (n < 0 || (size_t)n >= sizeof(head) || hc_append(c, head, (size_t)n) < 0 ||
        hc_append(c, body, len) < 0)
        return -1;
    c->inflight++;
    return 0;
}

/* ---- the loop ---- */

static void hc_write(pb_httpc *h, hconn *c)
{
    while (c->pos < c->len) {
        ssize_t n = send(c->fd, c->out + c->pos, c->len - c->pos, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            hc_drop(h, c, "connection lost while writing");
            return;
        }
        c->pos += (size_t)n;
    }
    c->len = c->pos = 0;
}

static void hc_read(pb_httpc *h, hconn *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, h->rbuf, READ_CHUNK, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            hc_drop(h, c, n == 0 ? "the server closed the connection" : strerror(errno));
            return;
        }
        size_t used = http_parser_execute(&c->parser, &h->settings, h->rbuf, (size_t)n);
        if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK || used != (size_t)n) {
            hc_drop(h, c, http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
            return;
        }
    }
    if (c->close_after && c->inflight == 0)
        hc_drop(h, c, "Connection: close");
}

int pb_httpc_wait(pb_httpc *h, uint64_t deadline)
{
    struct pollfd pfds[PB_HTTPC_CONNS_MAX];
    hconn *which[PB_HTTPC_CONNS_MAX];
    for (;;) {
        int n = 0;
        for (int i = 0; i < h->nconns; i++) {
            hconn *c = &h->conns[i];
            if (c->fd >= 0 && c->pos < c->len)
                hc_write(h, c);
            if (c->fd < 0 || (c->inflight == 0 && c->pos == c->len))
                continue;
            pfds[n] = (struct pollfd){.fd = c->fd,
                                      .events = (short)(POLLIN | (c->pos < c->len ? POLLOUT : 0))};
            which[n++] = c;
        }
        if (n == 0)
            return 0;
        uint64_t now = pb_mono_us();
        if (now >= deadline)
            return 1;
        struct timespec wait = pb_timespec_us(deadline - now);
        int r = ppoll(pfds, (nfds_t)n, &wait, NULL);
        if (r < 0 && errno != EINTR)
            return -1;
        for (int i = 0; r > 0 && i < n; i++) {
            if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR))
                hc_read(h, which[i]);
            if (which[i]->fd >= 0 && (pfds[i].revents & POLLOUT))
                hc_write(h, which[i]);
        }
    }
}

const pb_httpc_stats *pb_httpc_stats_of(const pb_httpc *h)
{
    return &h->stats;
}

pb_httpc *pb_httpc_new(const pb_url *u, int conns, unsigned timeout_ms)
{
    if (conns < 1 || conns > PB_HTTPC_CONNS_MAX) {
        pb_err("publish: 1 to %d connections", PB_HTTPC_CONNS_MAX);
        return NULL;
    }
    pb_httpc *h = calloc(1, sizeof(*h));
    if (!h || !(h->rbuf = malloc(READ_CHUNK))) {
        free(h);
        pb_err("publish: out of memory");
        return NULL;
    }
    h->url = *u;
    h->timeout_ms = timeout_ms;
    h->nconns = conns;
    http_parser_settings_init(&h->settings);
    h->settings.on_message_complete = hc_on_message_complete;
    for (int i = 0; i < conns; i++) {
        h->conns[i].h = h;
        h->conns[i].fd = -1;
    }
    for (int i = 0; i < conns; i++)
        if (hc_open(h, &h->conns[i]) < 0) {
            pb_err("publish: connect %s: %s", u->hostport, strerror(errno));
            pb_httpc_free(h);
            return NULL;
        }
    return h;
}

void pb_httpc_free(pb_httpc *h)
{
    if (!h)
        return;
    for (int i = 0; i < h->nconns; i++) {
        if (h->conns[i].fd >= 0)
            close(h->conns[i].fd);
        free(h->conns[i].out);
    }
    free(h->rbuf);
    free(h);
}

/* http.c - one HTTP/1.1 GET over a plain socket, enough to read a node's
 * /stats: no extra library for a request to our own server.  Every step has
 * a timeout, and the answer is capped in size. */
#include "ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define RESPONSE_MAX (4 << 20)

/* A connected socket with send/receive timeouts, or -1 (err set). */
static int connect_to(const char *host, int port, int timeout_ms, char *err, size_t errlen)
{
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "%s: %s", host, gai_strerror(gai));
        return -1;
    }
    int fd = -1, e = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            e = errno;
            continue;
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        socklen_t l = sizeof(e);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            e = 0;
        else if (errno != EINPROGRESS)
            e = errno;
        else if (poll(&p, 1, timeout_ms) != 1)
            e = ETIMEDOUT;
        else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) < 0)
            e = errno;
        if (e) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "connect to %s:%d: %s", host, port, strerror(e));
        return -1;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    if (fcntl(fd, F_SETFL, 0) < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads until the server closes (the request says Connection: close). */
static char *read_all(int fd, size_t *len, char *err, size_t errlen)
{
    size_t cap = 8192, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 == cap) {
            char *more = cap < RESPONSE_MAX ? realloc(buf, cap * 2) : NULL;
            if (!more) {
                snprintf(err, errlen, "response too large or out of memory");
                break;
            }
            buf = more;
            cap *= 2;
        }
        ssize_t r = recv(fd, buf + n, cap - n - 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "read: %s", errno == EAGAIN ? "timed out" : strerror(errno));
            break;
        }
        if (r == 0) {
            buf[n] = '\0';
            *len = n;
            return buf;
        }
        n += (size_t)r;
    }
    if (!buf)
        snprintf(err, errlen, "out of memory");
    free(buf);
    return NULL;
}

/* The body of a 200 response in buf (moved to the front), or -1. */
static int parse_response(char *buf, size_t len, char *err, size_t errlen)
{
    int status = 0;
    char *body = strstr(buf, "\r\n\r\n");
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1 || !body) {
        snprintf(err, errlen, "not an HTTP response");
        return -1;
    }
    if (status != 200) {
        snprintf(err, errlen, "HTTP status %d", status);
        return -1;
    }
    body += 4;
    memmove(buf, body, len - (size_t)(body - buf) + 1);
    return 0;
}

int ctl_http_get(const char *host, int port, const char *path, const char *token,
                 int timeout_ms, char **body, char *err, size_t errlen)
{
    *body = NULL;
    int fd = connect_to(host, port, timeout_ms, err, errlen);
    if (fd < 0)
        return -1;
    char req[6144];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: " CTL_PROGRAM
                     "\r\n%s%s%sConnection: close\r\n\r\n", path, host, port,
                     token ? "Authorization: Bearer " : "", token ? token : "", token ? "\r\n" : "");
    size_t len = 0;
    char *buf = NULL;
    if (n < 0 || (size_t)n >= sizeof(req))
        snprintf(err, errlen, "request too long");
    else if (send_all(fd, req, (size_t)n) < 0)
        snprintf(err, errlen, "send: %s", strerror(errno));
    else
        buf = read_all(fd, &len, err, errlen);
    close(fd);
    if (!buf || parse_response(buf, len, err, errlen) < 0) {
        free(buf);
        return -1;
    }
    *body = buf;
    return 0;
}

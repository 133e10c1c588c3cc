/* metrics_http.c - /metrics and /healthz over evhttp (metrics_http.h).
 *
 * evhttp parses the requests, so no hand-written HTTP here; a scrape is
 * answered at once from counters in memory, never after a round trip. */
#include "metrics_http.h"

#include "log.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <stdlib.h>
#include <string.h>

#define IDLE_TIMEOUT_S 30
#define MAX_BODY 1024        /* of a request: a scrape has none */

struct pg_metrics_http {
    struct evhttp *http;
    pg_metrics_fn metrics;
    pg_health_fn health;
    void *arg;
};

int pg_metrics_http_bind(const char *host, int port)
{
    struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                    .ai_flags = EVUTIL_AI_PASSIVE | EVUTIL_AI_NUMERICSERV};
    struct evutil_addrinfo *ai = NULL;
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    int err = evutil_getaddrinfo(host, service, &hints, &ai);
    if (err) {
        pg_error("metrics_host %s: %s", host, evutil_gai_strerror(err));
        return -1;
    }
    evutil_socket_t fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0 || evutil_make_listen_socket_reuseable(fd) < 0 ||
        evutil_make_socket_nonblocking(fd) < 0 || evutil_make_socket_closeonexec(fd) < 0 ||
        bind(fd, ai->ai_addr, (socklen_t)ai->ai_addrlen) < 0 || listen(fd, 64) < 0) {
        pg_error("metrics port %s:%d: %s", host, port,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        if (fd >= 0)
            evutil_closesocket(fd);
        fd = -1;
    }
    evutil_freeaddrinfo(ai);
    return fd;
}

static void reply(struct evhttp_request *req, int code, const char *reason, const char *type,
                  struct evbuffer *body)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
    evhttp_send_reply(req, code, reason, body);
}

static void serve_health(pg_metrics_http *h, struct evhttp_request *req, struct evbuffer *body)
{
    const char *why = NULL;
    bool ok = !h->health || h->health(&why, h->arg);
    evbuffer_add_printf(body, "{\"status\":\"%s\"", ok ? "ok" : "unhealthy");
    if (why)
        evbuffer_add_printf(body, ",\"why\":\"%s\"", why);   /* fixed texts of the daemon */
    evbuffer_add(body, "}\n", 2);
    reply(req, ok ? 200 : 503, ok ? "OK" : "Service Unavailable", "application/json", body);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    pg_metrics_http *h = arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    struct evbuffer *body = evbuffer_new();
    if (!body) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    if (path && strcmp(path, "/metrics") == 0) {
        h->metrics(body, h->arg);
        reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body);
    } else if (path && strcmp(path, "/healthz") == 0) {
        serve_health(h, req, body);
    } else {
        evbuffer_add_printf(body, "not found\n");
        reply(req, 404, "Not Found", "text/plain", body);
    }
    evbuffer_free(body);
}

pg_metrics_http *pg_metrics_http_new(struct event_base *base, int fd, pg_metrics_fn metrics,
                                     pg_health_fn health, void *arg)
{
    pg_metrics_http *h = calloc(1, sizeof(*h));
    if (!h || !(h->http = evhttp_new(base)) || !evhttp_accept_socket_with_handle(h->http, fd)) {
        pg_error("cannot serve the metrics port");
        if (h && h->http)
            evhttp_free(h->http);
        free(h);
        return NULL;
    }
    h->metrics = metrics;
    h->health = health;
    h->arg = arg;
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_timeout(h->http, IDLE_TIMEOUT_S);
    evhttp_set_max_body_size(h->http, MAX_BODY);
    evhttp_set_gencb(h->http, on_request, h);
    return h;
}

void pg_metrics_http_free(pg_metrics_http *h)
{
    if (!h)
        return;
    evhttp_free(h->http);
    free(h);
}

/* metrics_http.h - a small HTTP port for /metrics and /healthz, on
 * libevent's evhttp, for daemons whose own port speaks no HTTP (the
 * consumer, the proxy).  Only GET and HEAD; anything else is 404/405. */
#ifndef PG_METRICS_HTTP_H
#define PG_METRICS_HTTP_H

#include <stdbool.h>

struct event_base;
struct evbuffer;

/* Writes the Prometheus text of the daemon into out. */
typedef void (*pg_metrics_fn)(struct evbuffer *out, void *arg);
/* true: healthy (200), false: 503; why (NULL: none) goes in the body. */
typedef bool (*pg_health_fn)(const char **why, void *arg);

typedef struct pg_metrics_http pg_metrics_http;

/* A listening socket on host:port (before fork, so a port in use is a
 * start-up error); -1 with the reason logged. */
int pg_metrics_http_bind(const char *host, int port);
/* Serves fd on base; the socket is closed by pg_metrics_http_free.  NULL
 * on failure (logged). */
pg_metrics_http *pg_metrics_http_new(struct event_base *base, int fd, pg_metrics_fn metrics,
                                     pg_health_fn health, void *arg);
void pg_metrics_http_free(pg_metrics_http *h);

#endif

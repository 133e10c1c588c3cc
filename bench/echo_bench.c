/* echo_bench.c - load client for the echo example: C connections each keep P
 * length-framed packets in flight until N packets have come back (or the time
 * cap passes), then prints packets/s and latency percentiles.
 *
 *   echo_bench [-h HOST] [-p PORT] [-c CONNS] [-n PACKETS] [-l BYTES] [-P PIPELINE] [-t SECONDS] */
#include <arpa/inet.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#define HIST_BUCKETS 4096   /* 10 us buckets up to ~41 ms, the last holds the rest */

typedef struct {
    struct event_base *base;
    long long target, sent, received, errors;
    int len, pipeline;
    char *payload;
    uint64_t hist[HIST_BUCKETS];
    uint64_t max_ns;
} bench;

typedef struct {
    bench *b;
    struct bufferevent *bev;
    uint64_t *sent_at;   /* ring of send times, one per packet in flight */
    int head, tail;
} client;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Written at once when nothing waits: through the bufferevent, every
 * packet would add and remove its write event (two epoll_ctl calls), which
 * cost the client more CPU than the write and left less for the server. */
static void send_one(client *c)
{
    bench *b = c->b;
    if (b->sent >= b->target)
        return;
    uint32_t n = htonl((uint32_t)b->len);
    struct iovec iov[2] = {{&n, 4}, {b->payload, (size_t)b->len}};
    size_t sent = 0, total = 4 + (size_t)b->len;
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        ssize_t w = writev(bufferevent_getfd(c->bev), iov, 2);
        sent = w > 0 ? (size_t)w : 0;
    }
    if (sent < 4)
        bufferevent_write(c->bev, (char *)&n + sent, 4 - sent);
    if (sent < total)
        bufferevent_write(c->bev, b->payload + (sent > 4 ? sent - 4 : 0),
                          total - (sent > 4 ? sent : 4));
    c->sent_at[c->head] = now_ns();
    c->head = (c->head + 1) % (b->pipeline + 1);
    b->sent++;
}

static void record(bench *b, uint64_t ns)
{
    uint64_t bucket = ns / 10000;
    b->hist[bucket < HIST_BUCKETS ? bucket : HIST_BUCKETS - 1]++;
    if (ns > b->max_ns)
        b->max_ns = ns;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    client *c = arg;
    bench *b = c->b;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        uint32_t n;
        if (evbuffer_copyout(in, &n, 4) < 4)
            return;
        size_t len = ntohl(n);
        if (evbuffer_get_length(in) < 4 + len)
            return;
        evbuffer_drain(in, 4 + len);
        record(b, now_ns() - c->sent_at[c->tail]);
        c->tail = (c->tail + 1) % (b->pipeline + 1);
        if (++b->received >= b->target) {
            event_base_loopbreak(b->base);
            return;
        }
        send_one(c);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    client *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        for (int i = 0; i < c->b->pipeline; i++)
            send_one(c);
        return;
    }
    c->b->errors++;
    fprintf(stderr, "connection error (events 0x%x)\n", what);
    event_base_loopbreak(c->b->base);
}

static double percentile(const bench *b, double p)
{
    uint64_t total = 0, seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++)
        total += b->hist[i];
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += b->hist[i];
        if (seen >= p * total)
            return (i + 1) * 0.01;   /* ms, bucket upper bound */
    }
    return b->max_ns / 1e6;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 9801, conns = 100, seconds = 30, opt;
    bench b = {.target = 1000000, .len = 64, .pipeline = 1};
    while ((opt = getopt(argc, argv, "h:p:c:n:l:P:t:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'c': conns = atoi(optarg); break;
        case 'n': b.target = atoll(optarg); break;
        case 'l': b.len = atoi(optarg); break;
        case 'P': b.pipeline = atoi(optarg); break;
        case 't': seconds = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: %s [-h HOST] [-p PORT] [-c CONNS] [-n PACKETS] [-l BYTES] "
                            "[-P PIPELINE] [-t SECONDS]\n", argv[0]);
            return 2;
        }
    }
    if (conns < 1 || b.len < 0 || b.pipeline < 1 || b.target < 1) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    b.base = event_base_new();
    b.payload = calloc(1, (size_t)b.len + 1);
    memset(b.payload, 'x', (size_t)b.len);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sin.sin_addr);
    client *clients = calloc((size_t)conns, sizeof(client));
    for (int i = 0; i < conns; i++) {
        client *c = &clients[i];
        c->b = &b;
        c->sent_at = calloc((size_t)b.pipeline + 1, sizeof(uint64_t));
        c->bev = bufferevent_socket_new(b.base, -1, BEV_OPT_CLOSE_ON_FREE);
        bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
        bufferevent_enable(c->bev, EV_READ | EV_WRITE);
        bufferevent_socket_connect(c->bev, (struct sockaddr *)&sin, sizeof(sin));
    }
    struct timeval cap = {seconds, 0};
    event_base_loopexit(b.base, &cap);
    uint64_t start = now_ns();
    event_base_dispatch(b.base);
    double elapsed = (now_ns() - start) / 1e9;
    printf("echo: %lld packets of %d bytes over %d connections (pipeline %d) in %.2f s = %.0f packets/s; "
           "latency ms p50 %.2f p90 %.2f p99 %.2f max %.2f; errors %lld\n",
           b.received, b.len, conns, b.pipeline, elapsed, b.received / elapsed, percentile(&b, 0.5),
           percentile(&b, 0.9), percentile(&b, 0.99), b.max_ns / 1e6, b.errors);
    for (int i = 0; i < conns; i++) {
        bufferevent_free(clients[i].bev);
        free(clients[i].sent_at);
    }
    free(clients);
    free(b.payload);
    event_base_free(b.base);
    return b.received >= b.target && b.errors == 0 ? 0 : 1;
}

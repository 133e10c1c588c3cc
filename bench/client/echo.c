/* echo.c - the seed's load tool against the engine's examples:
 *
 *   pushgate-bench -c C -n N -s tcp://127.0.0.1:9801 -f long_tcp|short_tcp|websocket
 *                  [-l LEN] [-p PIPELINE]
 *
 * long_tcp: C persistent connections, each keeping P requests in flight;
 * short_tcp: C slots, each connecting, sending one request, waiting for its
 * echo and closing, again and again; websocket: C ws:// connections (to
 * examples/ws_echo) keeping P text messages in flight.  TCP requests are
 * length-framed (4-byte big-endian length, then LEN bytes), as echo_server
 * with open_length_check=true expects and echoes back.  Latency is from the
 * send (for short_tcp: from the connect) to the whole echo. */
#include "bench.h"
#include "hist.h"
#include "net.h"
#include "report.h"
#include "util.h"
#include "wsclient.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { ECHO_LONG, ECHO_SHORT, ECHO_WS };

typedef struct {
    int mode;
    uint64_t conns, requests, len, pipeline;
    int src_addrs, json, quiet;
    double timeout;
    pb_url url;
} echo_opts;

typedef struct echo_run echo_run;

typedef struct {
    echo_run *r;
    struct bufferevent *bev;            /* tcp modes */
    pb_ws *ws;                          /* websocket */
    uint64_t *sent_at;                  /* ring of send times, pipeline + 1 */
    uint64_t head, tail, inflight;
    uint32_t index;
    int live;
} echo_conn;

struct echo_run {
    const echo_opts *o;
    struct event_base *base;
    struct event *timer, *show, *sigint, *sigterm;
    echo_conn *conns;
    char *frame;                        /* 4-byte length + payload */
    uint64_t sent, done, errors, conn_errors, live;
    uint64_t t0, t_end, last_done, last_show;
    struct sockaddr_in src[PB_SRC_ADDRS_MAX];
    const char *ended;
    pb_hist latency;
};

static void echo_usage(FILE *out)
{
    fprintf(out,
        "usage: " PB_NAME " -c CONCURRENCY -n REQUESTS -s tcp://127.0.0.1:9801\n"
        "         -f long_tcp|short_tcp|websocket [-l LEN] [-p PIPELINE] [--src-addrs K]\n"
        "         [--timeout 120] [--quiet] [--json]\n"
        "       " PB_NAME " connect ...   (--help: many browsers on the gateways)\n"
        "       " PB_NAME " publish ...   (--help: work orders into the Redis Stream)\n");
}

/* ---- bookkeeping shared by the modes ---- */

static void echo_done_if_finished(echo_run *r)
{
    if (r->done + r->errors >= r->o->requests || r->live == 0) {
        r->ended = r->done >= r->o->requests ? "complete" : r->live ? "errors" : "no connections";
        event_base_loopbreak(r->base);
    }
}

static int echo_take_request(echo_run *r)
{
    if (r->sent >= r->o->requests)
        return 0;
    r->sent++;
    return 1;
}

static void echo_mark_sent(echo_conn *c, uint64_t at)
{
    c->sent_at[c->head] = at;
    c->head = (c->head + 1) % (c->r->o->pipeline + 1);
    c->inflight++;
}

static void echo_record(echo_conn *c)
{
    pb_hist_add(&c->r->latency, pb_mono_us() - c->sent_at[c->tail]);
    c->tail = (c->tail + 1) % (c->r->o->pipeline + 1);
    c->inflight--;
    c->r->done++;
}

/* A connection is lost: what it had in flight failed with it. */
static void echo_lost(echo_conn *c)
{
    echo_run *r = c->r;
    r->conn_errors++;
    r->errors += c->inflight;
    c->inflight = 0;
    c->live = 0;
    r->live--;
}

/* ---- tcp: long and short ---- */

static void tcp_send(echo_conn *c)
{
    uint64_t len = c->r->o->len;
    if (!echo_take_request(c->r))
        return;
    bufferevent_write(c->bev, c->r->frame, 4 + len);
    echo_mark_sent(c, pb_mono_us());
}

static void tcp_start(echo_conn *c);

/* One echo: 1, none complete yet: 0, a wrong one: -1. */
static int tcp_read_one(echo_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    uint32_t nlen;
    if (evbuffer_copyout(in, &nlen, 4) < 4)
        return 0;
    uint64_t len = ntohl(nlen);
    if (len != c->r->o->len || c->inflight == 0)
        return -1;
    if (evbuffer_get_length(in) < 4 + len)
        return 0;
    evbuffer_drain(in, 4 + len);
    echo_record(c);
    return 1;
}

static void tcp_close(echo_conn *c)
{
    if (c->bev)
        bufferevent_free(c->bev);
    c->bev = NULL;
}

/* short_tcp: after the echo (or an error) the slot starts its next request. */
static void tcp_short_next(echo_conn *c, int failed)
{
    echo_run *r = c->r;
    tcp_close(c);
    if (failed) {
        r->errors += c->inflight;
        c->inflight = 0;
        c->head = c->tail = 0;
    }
    if (r->sent < r->o->requests) {
        tcp_start(c);
        return;
    }
    c->live = 0;
    r->live--;
    echo_done_if_finished(r);
}

static void tcp_on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    echo_conn *c = arg;
    echo_run *r = c->r;
    int got;
    while ((got = tcp_read_one(c)) > 0) {
        if (r->o->mode == ECHO_SHORT) {
            tcp_short_next(c, 0);
            return;
        }
        tcp_send(c);
    }
    if (got < 0) {
        tcp_close(c);
        echo_lost(c);
        r->errors++;                    /* the malformed echo itself */
    }
    echo_done_if_finished(r);
}

static void tcp_on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    echo_conn *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        if (c->r->o->mode == ECHO_LONG)
            for (uint64_t i = 0; i < c->r->o->pipeline; i++)
                tcp_send(c);
        return;
    }
    if (c->r->o->mode == ECHO_SHORT) {
        c->r->conn_errors++;
        tcp_short_next(c, 1);
        return;
    }
    tcp_close(c);
    echo_lost(c);
    echo_done_if_finished(c->r);
}

static void tcp_start(echo_conn *c)
{
    echo_run *r = c->r;
    const echo_opts *o = r->o;
    int fd = pb_net_socket(o->src_addrs ? &r->src[c->index % (unsigned)o->src_addrs] : NULL);
    c->bev = fd >= 0 ? bufferevent_socket_new(r->base, fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (!c->bev) {
        if (fd >= 0)
            close(fd);
        echo_lost(c);
        return;
    }
    bufferevent_setcb(c->bev, tcp_on_read, NULL, tcp_on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    if (o->mode == ECHO_SHORT) {        /* the request waits in the buffer for the connect */
        echo_take_request(r);
        bufferevent_write(c->bev, r->frame, 4 + o->len);
        echo_mark_sent(c, pb_mono_us());
    }
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&o->url.addr, sizeof(o->url.addr)) < 0) {
        tcp_close(c);
        r->errors += c->inflight;
        c->inflight = 0;
        echo_lost(c);
    }
}

/* ---- websocket ---- */

static void ws_send(echo_conn *c)
{
    echo_run *r = c->r;
    if (!echo_take_request(r))
        return;
    echo_mark_sent(c, pb_mono_us());
    if (pb_ws_send_text(c->ws, r->frame + 4, r->o->len) < 0)
        r->errors++;
}

static void ws_on_open(pb_ws *ws, void *arg)
{
    (void)ws;
    echo_conn *c = arg;
    for (uint64_t i = 0; i < c->r->o->pipeline; i++)
        ws_send(c);
}

static void ws_on_text(pb_ws *ws, void *arg, const char *text, size_t len)
{
    (void)ws;
    echo_conn *c = arg;
    echo_run *r = c->r;
    static const char online[] = "{\"event\":\"ONLINE\"";
    if (len >= sizeof(online) - 1 && memcmp(text, online, sizeof(online) - 1) == 0)
        return;                         /* ws_echo greets every connection */
    if (len != r->o->len || c->inflight == 0 || memcmp(text, r->frame + 4, len) != 0) {
        r->errors++;
    } else {
        echo_record(c);
        ws_send(c);
    }
    echo_done_if_finished(r);
}

static void ws_on_bad(pb_ws *ws, void *arg)
{
    (void)ws;
    ((echo_conn *)arg)->r->errors++;
}

static void ws_on_end(echo_conn *c)
{
    pb_ws_free(c->ws);
    c->ws = NULL;
    echo_lost(c);
    echo_done_if_finished(c->r);
}

static void ws_on_fail(pb_ws *ws, void *arg, int kind, int status)
{
    (void)ws;
    (void)kind;
    (void)status;
    ws_on_end(arg);
}

static void ws_on_close(pb_ws *ws, void *arg, int code, int who)
{
    (void)ws;
    (void)code;
    if (who == PB_WS_BROKEN)
        ((echo_conn *)arg)->r->errors++;
    ws_on_end(arg);
}

static const pb_ws_events ws_events = {.on_open = ws_on_open, .on_text = ws_on_text,
                                       .on_bad = ws_on_bad, .on_fail = ws_on_fail,
                                       .on_close = ws_on_close};

static void ws_start(echo_conn *c)
{
    echo_run *r = c->r;
    const echo_opts *o = r->o;
    int kind;
    c->ws = pb_ws_connect(r->base, &o->url.addr,
                          o->src_addrs ? &r->src[c->index % (unsigned)o->src_addrs] : NULL,
                          o->url.hostport, o->url.path, 10000, &ws_events, c, &kind);
    if (!c->ws)
        echo_lost(c);
}

/* ---- the run ---- */

static void echo_on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    echo_run *r = arg;
    r->ended = "timeout";
    event_base_loopbreak(r->base);
}

static void echo_on_signal(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    echo_run *r = arg;
    r->ended = "signal";
    event_base_loopbreak(r->base);
}

static void echo_on_show(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    echo_run *r = arg;
    uint64_t now = pb_mono_us();
    double dt = (double)(now - r->last_show) / 1e6;
    fprintf(stderr, "[%6.1fs] done %llu/%llu  errors %llu  %.0f/s  connections %llu\n",
            (double)(now - r->t0) / 1e6, (unsigned long long)r->done,
            (unsigned long long)r->o->requests, (unsigned long long)r->errors,
            dt > 0 ? (double)(r->done - r->last_done) / dt : 0.0, (unsigned long long)r->live);
    r->last_done = r->done;
    r->last_show = now;
}

static struct event *echo_event(echo_run *r, int sig, double secs, int persist,
                                event_callback_fn fn)
{
    struct event *ev = sig ? evsignal_new(r->base, sig, fn, r)
                           : event_new(r->base, -1, persist ? EV_PERSIST : 0, fn, r);
    struct timeval tv = {(time_t)secs, (suseconds_t)((secs - (double)(time_t)secs) * 1e6)};
    if (ev && event_add(ev, sig ? NULL : &tv) < 0) {
        event_free(ev);
        return NULL;
    }
    return ev;
}

static int echo_setup(echo_run *r)
{
    const echo_opts *o = r->o;
    pb_hist_init(&r->latency);
    for (int k = 0; k < o->src_addrs; k++)
        pb_net_src(k, &r->src[k]);
    r->base = event_base_new();
    r->conns = calloc(o->conns, sizeof(*r->conns));
    r->frame = malloc(4 + o->len + 1);
    if (!r->base || !r->conns || !r->frame)
        return -1;
    uint32_t nlen = htonl((uint32_t)o->len);
    memcpy(r->frame, &nlen, 4);
    memset(r->frame + 4, 'x', o->len);
    for (uint64_t i = 0; i < o->conns; i++) {
        echo_conn *c = &r->conns[i];
        c->r = r;
        c->index = (uint32_t)i;
        c->sent_at = calloc(o->pipeline + 1, sizeof(*c->sent_at));
        if (!c->sent_at)
            return -1;
    }
    r->timer = echo_event(r, 0, o->timeout, 0, echo_on_timer);
    r->show = o->quiet ? NULL : echo_event(r, 0, 1.0, 1, echo_on_show);
    r->sigint = echo_event(r, SIGINT, 0, 0, echo_on_signal);
    r->sigterm = echo_event(r, SIGTERM, 0, 0, echo_on_signal);
    return r->timer && r->sigint && r->sigterm && (o->quiet || r->show) ? 0 : -1;
}

static void echo_start_all(echo_run *r)
{
    r->t0 = r->last_show = pb_mono_us();
    r->live = r->o->conns;
    for (uint64_t i = 0; i < r->o->conns; i++) {
        echo_conn *c = &r->conns[i];
        c->live = 1;
        if (r->o->mode == ECHO_WS)
            ws_start(c);
        else
            tcp_start(c);
    }
    echo_done_if_finished(r);
}

static void echo_free(echo_run *r)
{
    for (uint64_t i = 0; r->conns && i < r->o->conns; i++) {
        tcp_close(&r->conns[i]);
        pb_ws_free(r->conns[i].ws);
        free(r->conns[i].sent_at);
    }
    struct event *evs[] = {r->timer, r->show, r->sigint, r->sigterm};
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
        if (evs[i])
            event_free(evs[i]);
    if (r->base)
        event_base_free(r->base);
    free(r->conns);
    free(r->frame);
}

static int echo_report(echo_run *r)
{
    static const char *modes[] = {"long_tcp", "short_tcp", "websocket"};
    const echo_opts *o = r->o;
    double secs = (double)(r->t_end - r->t0) / 1e6;
    int ok = r->done == o->requests && r->errors == 0;
    char server[400];
    snprintf(server, sizeof(server), "%s://%s%s", o->url.scheme, o->url.hostport,
             o->mode == ECHO_WS ? o->url.path : "");
    json_t *rep = json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:o,s:s,s:b}",
                            "mode", modes[o->mode], "server", server,
                            "concurrency", (json_int_t)o->conns, "requests", (json_int_t)o->requests,
                            "packet_len", (json_int_t)o->len, "pipeline", (json_int_t)o->pipeline,
                            "done", (json_int_t)r->done, "errors", (json_int_t)r->errors,
                            "connection_errors", (json_int_t)r->conn_errors, "seconds", secs,
                            "requests_per_s", secs > 0 ? (double)r->done / secs : 0.0,
                            "latency_ms", pb_report_latency(&r->latency),
                            "ended", r->ended ? r->ended : "?", "ok", ok);
    if (pb_report_print(stdout, rep, o->json) < 0)
        ok = 0;
    json_decref(rep);
    return ok ? PB_OK : PB_INCOMPLETE;
}

/* ---- options ---- */

static int echo_mode(const char *s)
{
    return strcmp(s, "long_tcp") == 0 ? ECHO_LONG : strcmp(s, "short_tcp") == 0 ? ECHO_SHORT
           : strcmp(s, "websocket") == 0 ? ECHO_WS : -1;
}

static int echo_option(echo_opts *o, int c, const char *arg, const char **server)
{
    uint64_t v;
    switch (c) {
    case 'c': return pb_parse_u64("-c", arg, 1, 1000000, &o->conns);
    case 'n': return pb_parse_u64("-n", arg, 1, 1ull << 40, &o->requests);
    case 's': *server = arg; return 0;
    case 'f':
        if ((o->mode = echo_mode(arg)) < 0)
            pb_err("-f: long_tcp, short_tcp or websocket, not '%s'", arg);
        return o->mode < 0 ? -1 : 0;
    case 'l': return pb_parse_u64("-l", arg, 0, 1u << 20, &o->len);
    case 'p': return pb_parse_u64("-p", arg, 1, 100000, &o->pipeline);
    case 'S':
        if (pb_parse_u64("--src-addrs", arg, 0, PB_SRC_ADDRS_MAX, &v) < 0)
            return -1;
        o->src_addrs = (int)v;
        return 0;
    case 't': return pb_parse_double("--timeout", arg, 1, 86400 * 7, &o->timeout);
    case 'q': o->quiet = 1; return 0;
    case 'j': o->json = 1; return 0;
    default: return -1;
    }
}

static int echo_check(echo_opts *o, const char *server)
{
    if (!server) {
        pb_err("-s tcp://HOST:PORT (or ws://HOST:PORT/PATH) is required");
        return -1;
    }
    if (pb_url_parse(server, o->mode == ECHO_WS ? "ws" : "tcp", "/ws", &o->url) < 0)
        return -1;
    if (o->mode == ECHO_WS && strcmp(o->url.path, "") == 0)
        strcpy(o->url.path, "/ws");
    if (o->mode == ECHO_SHORT)
        o->pipeline = 1;
    long nofile = pb_net_raise_nofile();
    if (nofile > 0 && o->conns + 64 > (uint64_t)nofile) {
        pb_err("-c %llu does not fit the open-file limit %ld", (unsigned long long)o->conns, nofile);
        return -1;
    }
    return 0;
}

static int echo_parse(echo_opts *o, int argc, char **argv)
{
    static const struct option longs[] = {
        {"src-addrs", required_argument, NULL, 'S'}, {"timeout", required_argument, NULL, 't'},
        {"quiet", no_argument, NULL, 'q'}, {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    memset(o, 0, sizeof(*o));
    o->conns = 100;
    o->requests = 100000;
    o->len = 64;
    o->pipeline = 1;
    o->timeout = 120;
    const char *server = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:n:s:f:l:p:", longs, NULL)) != -1) {
        if (c == 'h') {
            echo_usage(stdout);
            return 1;
        }
        if (c == '?' || echo_option(o, c, optarg, &server) < 0) {
            echo_usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        pb_err("unexpected argument '%s'", argv[optind]);
        return -1;
    }
    return echo_check(o, server);
}

int pb_echo_main(int argc, char **argv)
{
    echo_opts o;
    int rc = echo_parse(&o, argc, argv);
    if (rc != 0)
        return rc > 0 ? PB_OK : PB_USAGE;
    echo_run r = {.o = &o};
    rc = PB_INCOMPLETE;
    if (echo_setup(&r) < 0) {
        pb_err("cannot set up %llu connections (out of memory?)", (unsigned long long)o.conns);
    } else {
        echo_start_all(&r);
        if (!r.ended)
            event_base_dispatch(r.base);
        r.t_end = pb_mono_us();
        rc = echo_report(&r);
    }
    echo_free(&r);
    return rc;
}

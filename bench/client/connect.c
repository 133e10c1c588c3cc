/* connect.c - `pushgate-bench connect`: many authenticated browsers at once
 * (or, with --nchan, as many plain nchan WebSocket subscribers: bench/peer.py).
 *
 * The parent process holds no socket: it splits the clients over children
 * (fleet.c, at most --per-proc each, since one process may only open so
 * many files), prints READY when every child's clients are registered,
 * decides when the run ends (all --expect messages in plus a grace period,
 * --hold elapsed, --timeout, or a signal), then merges the children's
 * tallies into one report. */
#include "bench.h"
#include "fleet.h"
#include "procs.h"
#include "report.h"
#include "tally.h"
#include "util.h"

#include "token.h"

#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MISSING_SAMPLE 10
#define REAP_MS 15000

typedef struct {
    pb_fleet_conf fleet;
    double hold, timeout, grace;
    int json, quiet, timeout_given;
    uint64_t ramp_total, inflight_total;
} conn_opts;

typedef struct {
    const conn_opts *o;
    pb_proc *procs;
    pb_fleet_progress *progress;
    int *reported;
    pb_tally total;
    uint64_t t0, ready_at, complete_at;
    const char *ended;
} conn_run;

static volatile sig_atomic_t conn_signalled;

static void conn_on_signal(int sig)
{
    conn_signalled = sig;
}

static void conn_usage(FILE *out)
{
    fprintf(out,
        "usage: " PB_NAME " connect -n N [--url ws://127.0.0.1:9501/ws ...] --secret JWT_SECRET\n"
        "         [--prefix bench-user-] [--first 0] [--expect M] [--hold SECONDS]\n"
        "         [--ramp-rate R] [--inflight 256] [--reconnect] [--home-urls K] [--per-proc 19000]\n"
        "         [--src-addrs K] [--heartbeat 30] [--connect-timeout 10] [--grace 1]\n"
        "         [--token-ttl 86400] [--timeout SECONDS] [--slow-log FILE [--slow-ms 2]]\n"
        "         [--quiet] [--json]\n"
        "       " PB_NAME " connect --nchan -n N --url ws://127.0.0.1:8080/sub/ ... [the same]\n"
        "N WebSocket clients, client i authenticated as <prefix><first+i> with ?token=,\n"
        "spread round robin over the --url list (a path of / means /ws); each ACKs every\n"
        "WorksheetMsg and measures its latency from the body's ts.  Prints READY <n> (on\n"
        "stderr with --json, else stdout) once all are registered (ONLINE received).\n"
        "--home-urls K: first connects go to the first K URLs only; --reconnect moves a\n"
        "closed client on to the next URL of the whole list.  With --nchan, client i\n"
        "subscribes to the nchan channel <url path><prefix><first+i> (no token, no\n"
        "ACK, no HEART_BEAT): registered at the 101, each text frame is the published\n"
        "data object.  Prints COMPLETE <n> the same way once all --expect arrived.\n"
        "--slow-log FILE: each order later than --slow-ms is appended to FILE as a line\n"
        "<published, wall-clock us> <latency us> <id>, to line up with the daemons' logs.\n");
}

static int conn_add_url(conn_opts *o, const char *text)
{
    if (o->fleet.nurls >= PB_URLS_MAX) {
        pb_err("connect: at most %d --url", PB_URLS_MAX);
        return -1;
    }
    pb_url *u = &o->fleet.urls[o->fleet.nurls];
    if (pb_url_parse(text, "ws", "/ws", u) < 0)
        return -1;
    if (strcmp(u->scheme, "ws") != 0) {
        pb_err("connect: %s: only ws:// URLs", text);
        return -1;
    }
    o->fleet.nurls++;
    return 0;
}

static int conn_option(conn_opts *o, int c, const char *arg)
{
    pb_fleet_conf *f = &o->fleet;
    uint64_t v;
    switch (c) {
    case 'n': return pb_parse_u64("-n", arg, 1, 10000000, &f->n);
    case 'u': return conn_add_url(o, arg);
    case 's': f->secret = arg; return 0;
    case 'p': f->prefix = arg; return 0;
    case 'f': return pb_parse_u64("--first", arg, 0, 1000000000000ull, &f->first);
    case 'e': return pb_parse_u64("--expect", arg, 0, PB_SEQ_LIMIT, &f->expect);
    case 'H': return pb_parse_double("--hold", arg, 0, 86400 * 7, &o->hold);
    case 'r': return pb_parse_u64("--ramp-rate", arg, 0, 10000000, &o->ramp_total);
    case 'i': return pb_parse_u64("--inflight", arg, 1, 10000000, &o->inflight_total);
    case 'R': f->reconnect = 1; return 0;
    case 'U':
        if (pb_parse_u64("--home-urls", arg, 1, PB_URLS_MAX, &v) < 0)
            return -1;
        f->home_urls = (int)v;
        return 0;
    case 'P': return pb_parse_u64("--per-proc", arg, 1, 1000000, &f->per_proc);
    case 'S':
        if (pb_parse_u64("--src-addrs", arg, 0, PB_SRC_ADDRS_MAX, &v) < 0)
            return -1;
        f->src_addrs = (int)v;
        return 0;
    case 'b': return pb_parse_double("--heartbeat", arg, 0, 86400, &f->heartbeat);
    case 'c': return pb_parse_double("--connect-timeout", arg, 0.1, 3600, &f->connect_timeout);
    case 'g': return pb_parse_double("--grace", arg, 0, 3600, &o->grace);
    case 't': o->timeout_given = 1; return pb_parse_double("--timeout", arg, 1, 86400 * 7, &o->timeout);
    case 'T': return pb_parse_double("--token-ttl", arg, 60, 86400 * 365, &f->token_ttl);
    case 'N': f->nchan = 1; return 0;
    case 'L': f->slow_log = arg; return 0;
    case 'M': return pb_parse_double("--slow-ms", arg, 0, 3600000, &f->slow_ms);
    case 'q': o->quiet = 1; return 0;
    case 'j': o->json = 1; return 0;
    default: return -1;
    }
}

/* Defaults that depend on other options, and the checks across options. */
static int conn_finish_opts(conn_opts *o)
{
    pb_fleet_conf *f = &o->fleet;
    if (!f->secret)
        f->secret = getenv("PUSHGATE_JWT_SECRET");
    if (f->n == 0 || (!f->nchan && (!f->secret || !*f->secret))) {
        pb_err("connect: -n and --secret (or PUSHGATE_JWT_SECRET) are required");
        return -1;
    }
    if (f->nchan && f->nurls == 0) {
        pb_err("connect: --nchan needs --url ws://HOST:PORT/<subscriber location>/");
        return -1;
    }
    if (f->nurls == 0 && conn_add_url(o, "ws://127.0.0.1:9501/ws") < 0)
        return -1;
    for (int i = 0; !f->nchan && i < f->nurls; i++)
        if (strcmp(f->urls[i].path, "/") == 0)
            strcpy(f->urls[i].path, "/ws");
    if (f->nchan)
        f->heartbeat = 0;           /* nchan's subscribers send nothing */
    if (f->home_urls == 0 || f->home_urls > f->nurls)
        f->home_urls = f->nurls;
    char last[32];
    int digits = snprintf(last, sizeof(last), "%llu", (unsigned long long)(f->first + f->n - 1));
    if (!pb_uuid_chars_ok(f->prefix) || strlen(f->prefix) + (size_t)digits > PG_UUID_MAX) {
        pb_err("connect: --prefix: [A-Za-z0-9_.:@-] only, uuids of at most %d characters",
               PG_UUID_MAX);
        return -1;
    }
    long nofile = pb_net_raise_nofile();
    uint64_t fit = nofile > 1064 ? (uint64_t)nofile - 64 : 1000;
    if (f->per_proc == 0)
        f->per_proc = fit < 19000 ? fit : 19000;
    if (f->per_proc > fit) {
        pb_err("connect: --per-proc %llu does not fit the open-file limit %ld",
               (unsigned long long)f->per_proc, nofile);
        return -1;
    }
    f->procs = (int)((f->n + f->per_proc - 1) / f->per_proc);
    if (f->procs > 512) {
        pb_err("connect: %d processes is too many: raise --per-proc", f->procs);
        return -1;
    }
    if (f->src_addrs < 0)
        f->src_addrs = (int)((f->n + PB_CONNS_PER_SRC - 1) / PB_CONNS_PER_SRC);
    f->ramp_rate = (double)o->ramp_total / f->procs;
    uint64_t per = (o->inflight_total + (uint64_t)f->procs - 1) / (uint64_t)f->procs;
    f->inflight = (int)(per < 1000000 ? per : 1000000);
    if (!o->timeout_given)
        o->timeout = o->hold + 120;
    f->deadline = o->timeout + 30;      /* the children's own limit, should the parent hang */
    return 0;
}

static int conn_parse(conn_opts *o, int argc, char **argv)
{
    static const struct option longs[] = {
        {"url", required_argument, NULL, 'u'}, {"secret", required_argument, NULL, 's'},
        {"prefix", required_argument, NULL, 'p'}, {"first", required_argument, NULL, 'f'},
        {"expect", required_argument, NULL, 'e'}, {"hold", required_argument, NULL, 'H'},
        {"ramp-rate", required_argument, NULL, 'r'}, {"inflight", required_argument, NULL, 'i'},
        {"reconnect", no_argument, NULL, 'R'}, {"home-urls", required_argument, NULL, 'U'}, {"per-proc", required_argument, NULL, 'P'},
        {"src-addrs", required_argument, NULL, 'S'}, {"heartbeat", required_argument, NULL, 'b'},
        {"connect-timeout", required_argument, NULL, 'c'}, {"grace", required_argument, NULL, 'g'},
        {"timeout", required_argument, NULL, 't'}, {"token-ttl", required_argument, NULL, 'T'},
        {"quiet", no_argument, NULL, 'q'}, {"json", no_argument, NULL, 'j'},
        {"nchan", no_argument, NULL, 'N'}, {"slow-log", required_argument, NULL, 'L'},
        {"slow-ms", required_argument, NULL, 'M'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    memset(o, 0, sizeof(*o));
    o->fleet.prefix = "bench-user-";
    o->fleet.src_addrs = -1;
    o->fleet.heartbeat = 30;
    o->fleet.connect_timeout = 10;
    o->fleet.token_ttl = 86400;
    o->fleet.slow_ms = 2;
    o->grace = 1;
    o->inflight_total = 256;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "n:", longs, NULL)) != -1) {
        if (c == 'h') {
            conn_usage(stdout);
            return 1;
        }
        if (c == '?' || conn_option(o, c, optarg) < 0) {
            conn_usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        pb_err("connect: unexpected argument '%s'", argv[optind]);
        return -1;
    }
    return conn_finish_opts(o);
}

/* ---- the children ---- */

static int conn_child(int i, int fd, void *arg)
{
    const conn_opts *o = arg;
    const pb_fleet_conf *f = &o->fleet;
    uint64_t base = f->n / (uint64_t)f->procs, extra = f->n % (uint64_t)f->procs;
    uint64_t lo = (uint64_t)i * base + ((uint64_t)i < extra ? (uint64_t)i : extra);
    uint64_t hi = lo + base + ((uint64_t)i < extra ? 1 : 0);
    return pb_fleet_run(f, lo, hi, fd);
}

/* ---- the parent's loop ---- */

static void conn_take(conn_run *r, int i, uint32_t type, const char *data, uint32_t len)
{
    if (type == PB_MSG_PROGRESS && len == sizeof(pb_fleet_progress)) {
        memcpy(&r->progress[i], data, len);
    } else if (type == PB_MSG_TALLY && !r->reported[i]) {
        pb_tally t;
        if (pb_tally_unpack(data, len, &t) == 0 && pb_tally_merge(&r->total, &t) == 0)
            r->reported[i] = 1;
        else
            pb_err("connect: process %d sent a malformed report", i);
        pb_tally_free(&t);
    }
}

static pb_fleet_progress conn_sum(const conn_run *r, int *settled)
{
    pb_fleet_progress s = {0};
    *settled = 1;
    for (int i = 0; i < r->o->fleet.procs; i++) {
        const pb_fleet_progress *p = &r->progress[i];
        s.registered += p->registered;
        s.ever_registered += p->ever_registered;
        s.failed += p->failed;
        s.connect_errors += p->connect_errors;
        s.received += p->received;
        s.unique += p->unique;
        s.server_closes += p->server_closes;
        *settled &= p->settled != 0;
    }
    return s;
}

static void conn_show_progress(const conn_run *r, const pb_fleet_progress *s, uint64_t now)
{
    static uint64_t last_unique, last_at;
    double dt = last_at ? (double)(now - last_at) / 1e6 : (double)(now - r->t0) / 1e6;
    fprintf(stderr, "[%6.1fs] registered %llu/%llu  errors %llu  received %llu (unique %llu)  "
                    "%.0f/s  closes %llu\n",
            (double)(now - r->t0) / 1e6, (unsigned long long)s->registered,
            (unsigned long long)r->o->fleet.n, (unsigned long long)s->connect_errors,
            (unsigned long long)s->received, (unsigned long long)s->unique,
            dt > 0 ? (double)(s->unique - last_unique) / dt : 0.0,
            (unsigned long long)s->server_closes);
    last_unique = s->unique;
    last_at = now;
}

/* Why the run should end now, or NULL. */
static const char *conn_should_end(conn_run *r, const pb_fleet_progress *s, int open, uint64_t now)
{
    const conn_opts *o = r->o;
    if (conn_signalled)
        return "signal";
    if (open == 0)
        return "processes exited";
    if (o->fleet.expect && s->unique >= o->fleet.expect && !r->complete_at) {
        r->complete_at = now;
        /* the end of the delivery window for scripts (bench/peer.py), before
         * the clients close after --grace */
        fprintf(o->json ? stderr : stdout, "COMPLETE %llu\n", (unsigned long long)s->unique);
        fflush(o->json ? stderr : stdout);
    }
    if (r->complete_at && (double)(now - r->complete_at) / 1e6 >= o->grace)
        return "complete";
    if (r->ready_at && !o->fleet.expect && o->hold == 0)
        return "connected";
    if (r->ready_at && o->hold > 0 && (double)(now - r->ready_at) / 1e6 >= o->hold)
        return "hold";
    if ((double)(now - r->t0) / 1e6 >= o->timeout)
        return "timeout";
    return NULL;
}

static void conn_loop(conn_run *r)
{
    const conn_opts *o = r->o;
    int n = o->fleet.procs;
    uint64_t next_show = r->t0 + 1000000, end_by = 0;
    for (;;) {
        int open = pb_proc_poll(r->procs, n, 100);
        int reported = 0, settled;
        for (int i = 0; i < n; i++) {
            uint32_t type, len;
            const char *data;
            while (pb_proc_next(&r->procs[i], &type, &data, &len))
                conn_take(r, i, type, data, len);
            reported += r->reported[i];
        }
        uint64_t now = pb_mono_us();
        pb_fleet_progress s = conn_sum(r, &settled);
        if (settled && !r->ready_at) {
            r->ready_at = now;
            fprintf(o->json ? stderr : stdout, "READY %llu\n", (unsigned long long)s.registered);
            fflush(o->json ? stderr : stdout);
        }
        if (!r->ended && (r->ended = conn_should_end(r, &s, open < 0 ? 1 : open, now))) {
            pb_proc_signal(r->procs, n, SIGTERM);
            end_by = now + REAP_MS * 1000ull;
        }
        if (r->ended && (reported == n || open == 0 || now > end_by))
            return;
        if (!o->quiet && now >= next_show) {
            conn_show_progress(r, &s, now);
            next_show += 1000000;
        }
    }
}

/* ---- the report ---- */

static json_t *conn_close_codes(const pb_tally *t)
{
    json_t *o = json_object();
    for (int code = 0; code < PB_CLOSE_CODES; code++) {
        char key[16];
        snprintf(key, sizeof(key), "%d", code);
        if (t->close_codes[code])
            json_object_set_new(o, key, json_integer((json_int_t)t->close_codes[code]));
    }
    return o;
}

static json_t *conn_urls(const pb_fleet_conf *f)
{
    json_t *a = json_array();
    for (int i = 0; i < f->nurls; i++) {
        char text[400];
        snprintf(text, sizeof(text), "ws://%s%s", f->urls[i].hostport, f->urls[i].path);
        json_array_append_new(a, json_string(text));
    }
    return a;
}

static json_t *conn_missing(const pb_tally *t, uint64_t expect, uint64_t *missing)
{
    uint64_t sample[MISSING_SAMPLE];
    *missing = pb_seq_missing(&t->seqs, expect, sample, MISSING_SAMPLE);
    json_t *a = json_array();
    for (uint64_t i = 0; i < *missing && i < MISSING_SAMPLE; i++)
        json_array_append_new(a, json_integer((json_int_t)sample[i]));
    return a;
}

static int conn_ok(const conn_run *r, int reported, uint64_t missing)
{
    const pb_tally *t = &r->total;
    const pb_fleet_conf *f = &r->o->fleet;
    return reported == f->procs && t->ever_registered == f->n && missing == 0 &&
           strcmp(r->ended, "timeout") != 0 && strcmp(r->ended, "processes exited") != 0 &&
           (!f->reconnect || t->server_closes == 0 || t->all_back_ok);
}

static json_t *conn_report(const conn_run *r, int reported, int *ok)
{
    const pb_tally *t = &r->total;
    const pb_fleet_conf *f = &r->o->fleet;
    uint64_t missing = 0;
    json_t *sample = conn_missing(t, f->expect, &missing);
    json_t *span = pb_report_span(t->t_first_delivery, t->t_last_delivery);
    double secs = json_is_real(span) ? json_real_value(span) : 0;
    *ok = conn_ok(r, reported, missing);
    return json_pack(
        "{s:s,s:I,s:i,s:i,s:o,s:i,s:I,s:I,s:{s:I,s:I,s:I,s:I,s:I,s:I},s:o,s:I,"
        "s:I,s:I,s:I,s:o,s:o,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:o,s:o,"
        "s:I,s:o,s:I,s:o,s:f,s:s,s:b}",
        "mode", "connect", "clients", (json_int_t)f->n, "processes", f->procs,
        "processes_reported", reported, "urls", conn_urls(f), "src_addrs", f->src_addrs,
        "connected", (json_int_t)t->ever_registered, "connect_errors",
        (json_int_t)t->connect_errors, "connect_error_kinds",
        "socket", (json_int_t)t->errors_by_kind[PB_WS_ERR_SOCKET],
        "tcp", (json_int_t)t->errors_by_kind[PB_WS_ERR_TCP],
        "timeout", (json_int_t)t->errors_by_kind[PB_WS_ERR_TIMEOUT],
        "http", (json_int_t)t->errors_by_kind[PB_WS_ERR_HTTP],
        "handshake", (json_int_t)t->errors_by_kind[PB_WS_ERR_HANDSHAKE],
        "closed_before_online", (json_int_t)t->closed_early,
        "connect_seconds", pb_report_span(t->t_start, t->t_all_registered),
        "open_at_end", (json_int_t)t->open_at_end,
        "expected", (json_int_t)f->expect, "received", (json_int_t)t->received,
        "delivered", (json_int_t)t->seqs.unique,
        "missing", f->expect ? json_integer((json_int_t)missing) : json_null(),
        "missing_sample", sample, "duplicates", (json_int_t)t->seqs.dups,
        "out_of_range", (json_int_t)t->seqs.out_of_range, "not_bench", (json_int_t)t->not_bench,
        "bad_messages", (json_int_t)t->bad_messages,
        "protocol_errors", (json_int_t)t->protocol_errors, "acks", (json_int_t)t->acks,
        "other_events", (json_int_t)t->other_events,
        "latency_ms", pb_report_latency(&t->latency), "delivery_seconds", span,
        "delivered_per_s", secs > 0 ? json_real((double)t->seqs.unique / secs) : json_null(),
        "server_closes", (json_int_t)t->server_closes, "close_codes", conn_close_codes(t),
        "reconnects", (json_int_t)t->reconnects,
        "reconnect_seconds", t->server_closes && t->all_back_ok
                                 ? pb_report_span(t->t_first_close, t->t_all_back) : json_null(),
        "seconds", (double)(pb_mono_us() - r->t0) / 1e6, "ended", r->ended, "ok", *ok);
}

static int conn_finish(conn_run *r)
{
    int n = r->o->fleet.procs, reported = 0, ok = 0;
    pb_proc_reap(r->procs, n, 5000);
    for (int i = 0; i < n; i++)
        reported += r->reported[i];
    if (reported < n)
        pb_err("connect: %d of %d processes sent no report", n - reported, n);
    json_t *rep = conn_report(r, reported, &ok);
    if (rep)
        json_object_set_new(rep, "nchan", json_boolean(r->o->fleet.nchan));
    if (pb_report_print(stdout, rep, r->o->json) < 0)
        ok = 0;
    json_decref(rep);
    return ok ? PB_OK : PB_INCOMPLETE;
}

int pb_connect_main(int argc, char **argv)
{
    conn_opts o;
    int rc = conn_parse(&o, argc, argv);
    if (rc != 0)
        return rc > 0 ? PB_OK : PB_USAGE;
    conn_run r = {.o = &o, .ended = NULL};
    int n = o.fleet.procs;
    r.procs = calloc((size_t)n, sizeof(*r.procs));
    r.progress = calloc((size_t)n, sizeof(*r.progress));
    r.reported = calloc((size_t)n, sizeof(*r.reported));
    struct sigaction sa = {.sa_handler = conn_on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    rc = PB_INCOMPLETE;
    r.t0 = pb_mono_us();
    if (!r.procs || !r.progress || !r.reported || pb_tally_init(&r.total, o.fleet.expect) < 0) {
        pb_err("connect: out of memory");
    } else if (pb_proc_spawn(r.procs, n, conn_child, &o) == 0) {
        conn_loop(&r);
        rc = conn_finish(&r);
    }
    pb_tally_free(&r.total);
    if (r.procs)
        pb_proc_free(r.procs, n);
    free(r.procs);
    free(r.progress);
    free(r.reported);
    return rc;
}

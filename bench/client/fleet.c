/* fleet.c - one process's WebSocket clients for `connect` (see fleet.h).
 *
 * A client is queued, then attempted (at most `inflight` at a time, paced
 * by `ramp_rate`), then registered when the gateway's ONLINE arrives.  On a
 * failure or a server close it is given up, or with --reconnect queued
 * again for the next URL (at once after a close, 50 ms after a failure). */
#include "fleet.h"

#include "token.h"
#include "procs.h"
#include "tally.h"
#include "util.h"
#include "wsclient.h"

#include <errno.h>
#include <event2/event.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RETRY_DELAY_US 50000
#define TICK_MS 10
#define REPORT_MS 250
#define STOP_GRACE_MS 1000

enum { CL_QUEUED, CL_PENDING, CL_REGISTERED, CL_DONE };

typedef struct fleet fleet;

typedef struct {
    fleet *f;
    pb_ws *ws;
    uint64_t retry_at;          /* monotonic us: not attempted before */
    uint32_t local;             /* index in the fleet */
    uint32_t last_sent;         /* monotonic seconds of the last frame we sent */
    uint16_t url;
    uint8_t state;
    uint8_t ever;               /* registered at least once */
} client;

struct fleet {
    const pb_fleet_conf *conf;
    struct event_base *base;
    struct event *tick, *beat, *report, *sigterm, *sigint, *deadline, *stop_timer;
    client *clients;
    uint64_t lo, count;
    uint32_t *queue;            /* ring of local indices waiting for an attempt */
    uint64_t qhead, qlen;
    uint64_t pending, registered, failed, closing;
    double tokens;              /* ramp pacing: attempts allowed now */
    uint64_t tokens_at;
    int settled, stopping, fd;
    FILE *slow_log;             /* --slow-log, appended to by every process */
    int64_t slow_us;
    struct sockaddr_in src[PB_SRC_ADDRS_MAX];
    pb_tally tally;
};

static void fleet_pump(fleet *f);

static uint32_t now_s(void)
{
    return (uint32_t)(pb_mono_us() / 1000000u);
}

/* ---- reporting to the parent ---- */

static void fleet_progress(fleet *f)
{
    pb_fleet_progress p = {
        .registered = f->registered, .ever_registered = f->tally.ever_registered,
        .failed = f->failed, .connect_errors = f->tally.connect_errors,
        .received = f->tally.received, .unique = f->tally.seqs.unique,
        .server_closes = f->tally.server_closes, .settled = (uint64_t)f->settled};
    pb_proc_send(f->fd, PB_MSG_PROGRESS, &p, sizeof(p));
}

static void fleet_check_settled(fleet *f)
{
    if (!f->settled && f->registered + f->failed == f->count) {
        f->settled = 1;
        fleet_progress(f);
    }
}

/* ---- the queue ---- */

static void fleet_enqueue(fleet *f, client *c, uint64_t not_before)
{
    c->state = CL_QUEUED;
    c->retry_at = not_before;
    f->queue[(f->qhead + f->qlen) % f->count] = c->local;
    f->qlen++;
}

/* After a failure or a server close: again with the next URL, or given up. */
static void fleet_retry_or_give_up(fleet *f, client *c, uint64_t delay_us)
{
    if (f->conf->reconnect && !f->stopping) {
        c->url = (uint16_t)((c->url + 1) % f->conf->nurls);
        f->tally.reconnects++;
        fleet_enqueue(f, c, pb_mono_us() + delay_us);
        return;
    }
    c->state = CL_DONE;
    f->failed++;
    fleet_check_settled(f);
}

/* ---- one client's events ---- */

static void client_registered(client *c)
{
    fleet *f = c->f;
    if (c->state != CL_PENDING)
        return;
    c->state = CL_REGISTERED;
    f->pending--;
    f->registered++;
    if (!c->ever) {
        c->ever = 1;
        f->tally.ever_registered++;
    }
    pb_ws_set_timeout(c->ws, 0);
    /* spread the heartbeats over the interval */
    uint32_t hb = (uint32_t)f->conf->heartbeat;
    c->last_sent = now_s() - (hb ? (uint32_t)(c->local % hb) : 0);
    if (f->registered == f->count) {
        uint64_t now = pb_mono_us();
        if (!f->tally.t_all_registered)
            f->tally.t_all_registered = now;
        if (f->tally.t_first_close)
            f->tally.t_all_back = now;
    }
    fleet_check_settled(f);
    fleet_pump(f);
}

static void client_ack(client *c, const char *id)
{
    json_t *o = json_pack("{s:s,s:{s:s}}", "event", "ACK", "data", "id", id);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (text && pb_ws_send_text(c->ws, text, strlen(text)) == 0) {
        c->f->tally.acks++;
        c->last_sent = now_s();
    }
    free(text);
    json_decref(o);
}

/* An order later than --slow-ms: when it was published (wall clock, us),
 * its latency (us) and its id, for lining up with what the daemons saw. */
static void note_latency(fleet *f, int64_t latency_us, const char *id)
{
    if (f->slow_log && latency_us >= f->slow_us)
        fprintf(f->slow_log, "%llu %lld %s\n",
                (unsigned long long)(pb_wall_us() - (uint64_t)latency_us), (long long)latency_us,
                id ? id : "-");
}

static void client_worksheet(client *c, json_t *m)
{
    pb_tally *t = &c->f->tally;
    const char *id = json_string_value(json_object_get(m, "id"));
    json_t *response = json_object_get(m, "response");
    if (!id || !json_is_object(response)) {
        t->bad_messages++;
        if (!id)
            return;
    }
    note_latency(c->f, pb_tally_worksheet(t, response, pb_mono_us()), id);
    client_ack(c, id);
}

/* nchan: the frame is the publisher's body, the data object itself; no ACK. */
static void client_on_nchan_text(client *c, const char *text, size_t len)
{
    pb_tally *t = &c->f->tally;
    json_t *m = json_loadb(text, len, 0, NULL);
    if (json_is_object(m))
        note_latency(c->f, pb_tally_worksheet(t, m, pb_mono_us()), NULL);
    else
        t->bad_messages++;
    json_decref(m);
}

static void client_on_text(pb_ws *ws, void *arg, const char *text, size_t len)
{
    (void)ws;
    client *c = arg;
    pb_tally *t = &c->f->tally;
    if (c->f->conf->nchan) {
        client_on_nchan_text(c, text, len);
        return;
    }
    json_t *m = json_loadb(text, len, 0, NULL);
    const char *event = json_string_value(json_object_get(m, "event"));
    if (!json_is_object(m) || !event)
        t->bad_messages++;      /* not JSON, or the gateway's error object */
    else if (strcmp(event, "WorksheetMsg") == 0)
        client_worksheet(c, m);
    else if (strcmp(event, "ONLINE") == 0)
        client_registered(c);
    else
        t->other_events++;
    json_decref(m);
}

static void client_on_open(pb_ws *ws, void *arg)
{
    (void)ws;
    client *c = arg;
    if (c->f->conf->nchan)      /* nchan sends nothing: subscribed at the 101 */
        client_registered(c);
    /* pushgate: registered only with ONLINE */
}

static void client_on_bad(pb_ws *ws, void *arg)
{
    (void)ws;
    ((client *)arg)->f->tally.bad_messages++;
}

static void client_on_fail(pb_ws *ws, void *arg, int kind, int status)
{
    (void)status;
    client *c = arg;
    fleet *f = c->f;
    pb_ws_free(ws);
    c->ws = NULL;
    f->pending--;
    f->tally.connect_errors++;
    f->tally.errors_by_kind[kind]++;
    fleet_retry_or_give_up(f, c, RETRY_DELAY_US);
    fleet_pump(f);
}

static void client_on_close(pb_ws *ws, void *arg, int code, int who)
{
    client *c = arg;
    fleet *f = c->f;
    pb_ws_free(ws);
    c->ws = NULL;
    int was = c->state;
    c->state = CL_DONE;
    if (was == CL_PENDING)
        f->pending--;
    else if (was == CL_REGISTERED)
        f->registered--;
    if (f->stopping || who == PB_WS_BY_US) {
        if (f->closing > 0 && --f->closing == 0)
            event_base_loopbreak(f->base);
        return;
    }
    if (who == PB_WS_BROKEN)
        f->tally.protocol_errors++;
    else
        pb_tally_close_code(&f->tally, code);
    if (was == CL_PENDING) {            /* e.g. 4001 or 1011 before ONLINE */
        f->tally.connect_errors++;
        f->tally.closed_early++;
        fleet_retry_or_give_up(f, c, RETRY_DELAY_US);
    } else if (who == PB_WS_BROKEN) {
        fleet_retry_or_give_up(f, c, RETRY_DELAY_US);
    } else {
        f->tally.server_closes++;
        if (!f->tally.t_first_close)
            f->tally.t_first_close = pb_mono_us();
        f->tally.t_all_back = 0;
        fleet_retry_or_give_up(f, c, 0);
    }
    fleet_pump(f);
}

static const pb_ws_events client_events = {
    .on_open = client_on_open, .on_text = client_on_text, .on_bad = client_on_bad,
    .on_fail = client_on_fail, .on_close = client_on_close};

/* ---- attempts ---- */

static void client_start(fleet *f, client *c)
{
    const pb_fleet_conf *conf = f->conf;
    uint64_t global = f->lo + c->local;
    char uuid[PG_UUID_MAX + 1], target[4600];
    snprintf(uuid, sizeof(uuid), "%s%llu", conf->prefix, (unsigned long long)(conf->first + global));
    const pb_url *u = &conf->urls[c->url];
    int kind = PB_WS_ERR_SOCKET, n;
    if (conf->nchan) {
        n = snprintf(target, sizeof(target), "%s%s", u->path, uuid);    /* the channel */
    } else {
        char *token = pg_token_mint(uuid, conf->secret, time(NULL) + (time_t)conf->token_ttl);
        n = token ? snprintf(target, sizeof(target), "%s%stoken=%s", u->path,
                             strchr(u->path, '?') ? "&" : "?", token) : -1;
        free(token);
    }
    if (n > 0 && (size_t)n < sizeof(target))
        c->ws = pb_ws_connect(f->base, &u->addr,
                              conf->src_addrs ? &f->src[global % (uint64_t)conf->src_addrs] : NULL,
                              u->hostport, target, (unsigned)(conf->connect_timeout * 1000),
                              &client_events, c, &kind);
    if (!c->ws) {
        f->tally.connect_errors++;
        f->tally.errors_by_kind[kind]++;
        fleet_retry_or_give_up(f, c, RETRY_DELAY_US);
        return;
    }
    c->state = CL_PENDING;
    f->pending++;
}

/* Ramp pacing: a bucket refilled at ramp_rate, holding at most 1/10 s worth. */
static int fleet_may_start(fleet *f, uint64_t now)
{
    double rate = f->conf->ramp_rate;
    if (rate <= 0)
        return 1;
    double cap = rate / 10 > 1 ? rate / 10 : 1;
    f->tokens += rate * (double)(now - f->tokens_at) / 1e6;
    f->tokens_at = now;
    if (f->tokens > cap)
        f->tokens = cap;
    if (f->tokens < 1)
        return 0;
    f->tokens -= 1;
    return 1;
}

static void fleet_pump(fleet *f)
{
    uint64_t now = pb_mono_us();
    while (!f->stopping && f->qlen > 0 && f->pending < (uint64_t)f->conf->inflight) {
        client *c = &f->clients[f->queue[f->qhead]];
        if (c->retry_at > now || !fleet_may_start(f, now))
            break;
        f->qhead = (f->qhead + 1) % f->count;
        f->qlen--;
        client_start(f, c);
    }
}

/* ---- timers and signals ---- */

static void fleet_on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fleet_pump(arg);
}

static void fleet_on_beat(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fleet *f = arg;
    static const char beat[] = "{\"event\":\"HEART_BEAT\"}";
    uint32_t now = now_s(), every = (uint32_t)f->conf->heartbeat;
    for (uint64_t i = 0; every && i < f->count; i++) {
        client *c = &f->clients[i];
        if (c->state == CL_REGISTERED && now - c->last_sent >= every &&
            pb_ws_send_text(c->ws, beat, sizeof(beat) - 1) == 0)
            c->last_sent = now;
    }
}

static void fleet_on_report(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fleet_progress(arg);
}

static void fleet_on_stop_grace(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(((fleet *)arg)->base);
}

/* Registered clients close with 1000 (their ACKs flushed first); the rest
 * are dropped; the loop ends when all closes are answered or after 1 s. */
static void fleet_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fleet *f = arg;
    if (f->stopping)
        return;
    f->stopping = 1;
    f->tally.open_at_end = f->registered;
    for (uint64_t i = 0; i < f->count; i++) {
        client *c = &f->clients[i];
        if (c->state == CL_REGISTERED) {
            pb_ws_close(c->ws, 1000);
            f->closing++;
        } else if (c->ws) {
            pb_ws_free(c->ws);
            c->ws = NULL;
            c->state = CL_DONE;
        }
    }
    struct timeval grace = {STOP_GRACE_MS / 1000, (STOP_GRACE_MS % 1000) * 1000};
    if (f->closing == 0)
        event_base_loopbreak(f->base);
    else
        event_add(f->stop_timer, &grace);
}

/* ---- set-up and tear-down ---- */

static struct event *fleet_timer(fleet *f, int ms, event_callback_fn fn, int persist)
{
    struct event *ev = event_new(f->base, -1, persist ? EV_PERSIST : 0, fn, f);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (ev && ms > 0 && event_add(ev, &tv) < 0) {
        event_free(ev);
        return NULL;
    }
    return ev;
}

static int fleet_init(fleet *f, const pb_fleet_conf *conf, uint64_t lo, uint64_t hi, int fd)
{
    memset(f, 0, sizeof(*f));
    f->conf = conf;
    f->lo = lo;
    f->count = hi - lo;
    f->fd = fd;
    for (int k = 0; k < conf->src_addrs && k < PB_SRC_ADDRS_MAX; k++)
        pb_net_src(k, &f->src[k]);
    if (pb_tally_init(&f->tally, conf->expect) < 0)
        return -1;
    f->tally.procs = 1;
    f->tally.clients = f->count;
    f->clients = calloc(f->count ? f->count : 1, sizeof(*f->clients));
    f->queue = calloc(f->count ? f->count : 1, sizeof(*f->queue));
    f->base = event_base_new();
    if (!f->clients || !f->queue || !f->base)
        return -1;
    if (conf->slow_log) {
        if (!(f->slow_log = fopen(conf->slow_log, "a"))) {
            pb_err("connect: --slow-log %s: %s", conf->slow_log, strerror(errno));
            return -1;
        }
        setvbuf(f->slow_log, NULL, _IOLBF, 0);   /* whole lines from every process */
        f->slow_us = (int64_t)(conf->slow_ms * 1000);
    }
    f->tick = fleet_timer(f, TICK_MS, fleet_on_tick, 1);
    f->beat = fleet_timer(f, 1000, fleet_on_beat, 1);
    f->report = fleet_timer(f, REPORT_MS, fleet_on_report, 1);
    f->deadline = fleet_timer(f, (int)(conf->deadline * 1000), fleet_stop, 0);
    f->stop_timer = fleet_timer(f, 0, fleet_on_stop_grace, 0);
    f->sigterm = evsignal_new(f->base, SIGTERM, fleet_stop, f);
    f->sigint = evsignal_new(f->base, SIGINT, fleet_stop, f);
    if (!f->tick || !f->beat || !f->report || !f->deadline || !f->stop_timer || !f->sigterm ||
        !f->sigint || event_add(f->sigterm, NULL) < 0 || event_add(f->sigint, NULL) < 0)
        return -1;
    for (uint64_t i = 0; i < f->count; i++) {
        client *c = &f->clients[i];
        c->f = f;
        c->local = (uint32_t)i;
        c->url = (uint16_t)((lo + i) % (uint64_t)conf->home_urls);
        fleet_enqueue(f, c, 0);
    }
    f->tokens_at = pb_mono_us();
    f->tokens = 1;
    return 0;
}

static void fleet_free(fleet *f)
{
    for (uint64_t i = 0; f->clients && i < f->count; i++)
        pb_ws_free(f->clients[i].ws);
    struct event *evs[] = {f->tick, f->beat, f->report, f->deadline, f->stop_timer, f->sigterm,
                           f->sigint};
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
        if (evs[i])
            event_free(evs[i]);
    if (f->base)
        event_base_free(f->base);
    free(f->clients);
    free(f->queue);
    if (f->slow_log)
        fclose(f->slow_log);
    pb_tally_free(&f->tally);
}

static int fleet_send_tally(fleet *f)
{
    size_t len = 0;
    char *blob = pb_tally_pack(&f->tally, &len);
    int rc = blob ? pb_proc_send(f->fd, PB_MSG_TALLY, blob, len) : -1;
    free(blob);
    return rc;
}

int pb_fleet_run(const pb_fleet_conf *conf, uint64_t lo, uint64_t hi, int fd)
{
    fleet *f = malloc(sizeof(*f));
    int rc = PB_INCOMPLETE;
    if (f && fleet_init(f, conf, lo, hi, fd) == 0) {
        f->tally.t_start = pb_mono_us();
        fleet_pump(f);
        fleet_check_settled(f);
        event_base_dispatch(f->base);
        if (!f->stopping)
            f->tally.open_at_end = f->registered;
        f->tally.all_back_ok = f->tally.server_closes == 0 || f->tally.t_all_back != 0;
        rc = fleet_send_tally(f) == 0 ? PB_OK : PB_INCOMPLETE;
    } else {
        pb_err("connect: cannot set up clients %llu..%llu (out of memory?)",
               (unsigned long long)lo, (unsigned long long)hi);
    }
    if (f)
        fleet_free(f);
    free(f);
    return rc;
}

/* main.c - pushgate-consumer: hands work orders from a Redis Stream to the
 * gateways, at least once.
 *
 *   producer --XADD--> stream --XREADGROUP--> consumer --frame--> gateway
 *   gateway --{"code":0,"msg_id":...}--> consumer --XACK--> stream
 *
 * One process, one libevent loop: the work is I/O-bound and every library it
 * talks to (hiredis, bufferevents) is asynchronous; MySQL, which blocks,
 * has a thread of its own (mysql.c).  This file starts the modules, handles the
 * signals and stops in order: on SIGTERM/SIGINT reading stops, requests in
 * flight get until reply_timeout_ms (+1 s) to be answered, what is finished
 * is XACKed, and the process exits 0; whatever is left stays pending in
 * Redis for another consumer (or the next start) to reclaim.  SIGHUP
 * reopens the log file. */
#include "consumer.h"

#include "cpu_list.h"
#include "daemon.h"
#include "log.h"
#include "memory.h"
#include "timer.h"

#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

cs_context cs;

#define STOP_GRACE_MS 1000
#define MAX_SIGNALS 3

static struct event *signals[MAX_SIGNALS];
static struct event *finish_ev;
static int64_t stop_timer;

/* Runs after the callback that asked for it: by then an answered entry
 * has been queued for its XACK, so it is waited for. */
static void on_finish_check(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (!cs.stopping || cs.sent > 0)
        return;
    if (cs_acks_link_up() && !cs_acks_idle())
        return;
    event_base_loopbreak(cs.base);
}

void cs_check_finished(void)
{
    if (cs.stopping && finish_ev)
        event_active(finish_ev, EV_TIMEOUT, 1);
}

static void on_stop_deadline(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    stop_timer = 0;
    pg_warn("stop: %zu requests still unanswered after %lld ms; they stay pending in Redis",
            cs.sent, cs.cfg.reply_timeout_ms + STOP_GRACE_MS);
    event_base_loopbreak(cs.base);
}

static void begin_stop(void)
{
    cs.stopping = true;
    pg_notice("stopping: reading stopped; waiting for %zu requests in flight", cs.sent);
    cs_stream_stop_reading();
    stop_timer = pg_timer_after((uint32_t)(cs.cfg.reply_timeout_ms + STOP_GRACE_MS),
                                on_stop_deadline, NULL);
    if (stop_timer < 0)
        event_base_loopbreak(cs.base);
    cs_check_finished();
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    (void)arg;
    if (sig == SIGHUP) {
        if (pg_log_reopen() < 0)
            pg_error("cannot reopen the log file");
        return;
    }
    if (cs.stopping) {
        pg_warn("second stop signal: exiting now");
        event_base_loopbreak(cs.base);
        return;
    }
    begin_stop();
}

static int add_signals(void)
{
    static const int which[MAX_SIGNALS] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < MAX_SIGNALS; i++) {
        signals[i] = evsignal_new(cs.base, which[i], on_signal, NULL);
        if (!signals[i] || evsignal_add(signals[i], NULL) < 0) {
            pg_error("cannot watch signal %d", which[i]);
            return -1;
        }
    }
    return 0;
}

static void free_signals(void)
{
    for (int i = 0; i < MAX_SIGNALS; i++) {
        if (signals[i])
            event_free(signals[i]);
        signals[i] = NULL;
    }
}

static int start_modules(void)
{
    finish_ev = event_new(cs.base, -1, 0, on_finish_check, NULL);
    if (!finish_ev || cs_entries_init((size_t)cs.cfg.max_in_flight) < 0) {
        pg_error("out of memory");
        return -1;
    }
    if (add_signals() < 0 || cs_mysql_start() < 0 || cs_nodes_start() < 0 ||
        cs_hints_start() < 0 || cs_acks_start() < 0 || cs_stream_start() < 0 ||
        cs_trim_start() < 0 || cs_metrics_start() < 0 || cs_status_start() < 0)
        return -1;
    /* one file per gateway connection, three for Redis (six with sentinels; with a cluster
     * one per stream and one per node, and the route hints'): the limit is the capacity */
    long long open_files = pg_daemon_raise_nofile();
    char redis[512];
    cs_redis_where(redis, sizeof(redis));
    pg_info("started: consumer %s of group %s, stream %s (%zu stream%s), redis %s, "
            "max_in_flight %lld, open-file limit %lld",
            cs.cfg.consumer, cs.cfg.group, cs.cfg.stream, cs.nshards, cs.nshards == 1 ? "" : "s",
            redis, cs.cfg.max_in_flight, open_files);
    return 0;
}

/* In this order: nothing may call into a module already gone. */
static void stop_modules(void)
{
    size_t left = cs_entries_held();
    cs.stopping = true;
    cs_status_stop();
    cs_mysql_stop();
    cs_metrics_stop();
    cs_trim_stop();
    cs_stream_done();
    cs_nodes_stop();
    cs_hints_stop();
    cs_acks_done();
    cs_shards_done();
    pg_timer_clear_all();
    stop_timer = 0;
    cs_entries_done();
    free(cs.shards);
    cs.shards = NULL;
    cs.nshards = 0;
    free_signals();
    if (finish_ev)
        event_free(finish_ev);
    finish_ev = NULL;
    if (left)
        pg_notice("%zu entries were not finished: they stay pending and will be redelivered", left);
}

static int run(void)
{
    cs.base = event_base_new();
    if (!cs.base) {
        pg_error("cannot create the event loop");
        return 1;
    }
    pg_timer_bind(cs.base);
    int rc = 1;
    if (start_modules() == 0) {
        event_base_dispatch(cs.base);
        rc = 0;
    }
    stop_modules();
    pg_timer_bind(NULL);
    event_base_free(cs.base);
    cs.base = NULL;
    if (rc == 0)
        pg_info("stopped");
    return rc;
}

int main(int argc, char **argv)
{
    pg_memory_init();
    /* Its memory is bounded by max_entries, not by the load: it may keep
     * freed pages a second rather than return them one by one (refused:
     * logged, and they go back at once as in the other daemons). */
    (void)pg_memory_keep_freed(1000);
    int rc = cs_settings_load(argc, argv);
    if (rc != 0)
        return rc < 0 ? 2 : 0;
    char err[256];
    if (pg_cpu_affinity_apply(cs.cfg.cpu_affinity, err, sizeof(err)) < 0) {
        fprintf(stderr, "pushgate-consumer: %s\n", err);   /* before any thread starts */
        cs_settings_free();
        return 2;
    }
    pg_log_set_level((pg_log_level)cs.cfg.log_level);
    if (cs.cfg.log_file && *cs.cfg.log_file && pg_log_open(cs.cfg.log_file) < 0) {
        fprintf(stderr, "pushgate-consumer: log_file %s: %m\n", cs.cfg.log_file);
        cs_settings_free();
        return 2;
    }
    pg_log_set_role("consumer");
    signal(SIGPIPE, SIG_IGN);
    srandom((unsigned)getpid() ^ (unsigned)time(NULL));
    rc = run();
    cs_settings_free();
    pg_log_close();
    return rc;
}

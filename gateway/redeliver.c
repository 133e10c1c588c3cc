/* redeliver.c - workers: what other nodes stored for this node's browsers
 * while the path here was broken reaches them without a reconnect.
 *
 * A node that cannot forward a push to the node holding its browser (the
 * proxy down, this node unreachable) stores it, and names this node and the
 * uuid in `redeliveries` (tasks.c).  Worker 0 asks every
 * node_heartbeat_interval which uuids are named here, a query that almost
 * always finds nothing; each session of those uuids on this node (the uuid
 * index) is then sent its stored messages as at a connect, by its home
 * worker.  What a session has already is not pushed again (push_record.c),
 * so a message that reached it by another path meanwhile costs nothing. */
#include "gateway.h"

#include "log.h"
#include "timer.h"

#include <stdlib.h>
#include <string.h>

static int64_t poll_timer;

static void poll_redeliveries(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    pg_rec_writer w = {0};
    if (gw_uuids_put(&w, GW_TASK_REDELIVERIES, NULL, 0) < 0 ||
        gw_task_record(&w, gw_task_worker_of(0)) < 0)
        pg_warn("redeliveries not asked for: at the next heartbeat");
    pg_rec_writer_free(&w);
}

void gw_redeliver_start(void)
{
    if (pg_server_worker_id(gw.server) == 0)
        poll_timer = pg_timer_tick((uint32_t)(gw.cfg.node_heartbeat_interval * 1000),
                                   poll_redeliveries, NULL);
}

void gw_redeliver_stop(void)
{
    if (poll_timer > 0)
        pg_timer_clear(poll_timer);
    poll_timer = 0;
}

/* A session's stored messages, from its home worker (GW_PIPE_REDELIVER). */
static void redeliver_to(pg_session_id session)
{
    int home = pg_server_session_worker(gw.server, session);
    if (home == pg_server_worker_id(gw.server)) {
        gw_session_send_stored(session);
        return;
    }
    char msg[1 + sizeof(session)];
    msg[0] = GW_PIPE_REDELIVER;
    memcpy(msg + 1, &session, sizeof(session));
    if (pg_server_send_message(gw.server, home, msg, sizeof(msg)) < 0)
        pg_warn("session %llx: its stored messages wait for its next connect",
                (unsigned long long)session);
}

void gw_redeliver_answered(const char *data, size_t len)
{
    const char **uuids;
    uint32_t n;
    if (gw_uuids_get(data, len, &uuids, &n) < 0) {
        pg_error("a malformed redeliveries answer of %zu bytes", len);
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        pg_session_id sessions[GW_INDEX_SESSIONS];
        size_t found = gw_uuid_index_get(uuids[i], sessions, GW_INDEX_SESSIONS);
        for (size_t k = 0; k < found; k++)
            if (gw_session_is(sessions[k], uuids[i]))
                redeliver_to(sessions[k]);
    }
    if (n > 0)
        pg_info("stored messages sent to the sessions of %u uuid(s), which other nodes could "
                "not reach", n);
    free(uuids);
}

void gw_redeliver_pipe_message(const char *data, size_t len)
{
    pg_session_id session;
    if (len != sizeof(session)) {
        pg_error("malformed redelivery from another worker: %zu bytes", len);
        return;
    }
    memcpy(&session, data, sizeof(session));
    gw_session_send_stored(session);
}

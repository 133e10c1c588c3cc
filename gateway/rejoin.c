/* rejoin.c - workers: a node swept while alive puts back the rows of the
 * browsers that are still there, and only those.
 *
 * Other nodes sweep a node whose heartbeats stop (node.c), with its
 * online_clients rows.  If the node was alive all along (cut from the
 * network or from MySQL for longer than node_dead_after), its browsers
 * split in two: those still connected, and those that gave up on it and
 * moved to other nodes, whose connections still look open here until a
 * TCP close or reset gets through.  Putting every session's row back would
 * make the others route the moved browsers' orders here, where nobody reads
 * them.  So when task worker 0 finds the node swept it only notes when
 * (gw_counters.swept_at_ms); each worker then probes its sessions (a
 * WebSocket ping) and registers again each one that answers or sends
 * anything: its row comes back and it gets what was stored for it
 * meanwhile, with no new ONLINE.  A session that has not answered after
 * REJOIN_WAIT_MS is closed with 1012: a live browser reconnects and
 * registers as usual, a gone one costs nothing more. */
#include "gateway.h"

#include "idmap.h"
#include "log.h"
#include "timer.h"

#include <inttypes.h>
#include <stdlib.h>

#define REJOIN_CHECK_MS 250
#define REJOIN_WAIT_MS 10000

static pg_idmap *awaiting;           /* probed sessions yet to answer (value: unused) */
static uint64_t seen_swept_at;       /* the sweep this worker last probed for */
static uint64_t answer_by_ms;
static int64_t check_timer;

static int note_home_session(const char *key, const void *row, void *arg)
{
    (void)row;
    (void)arg;
    pg_session_id session = strtoull(key, NULL, 16);
    if (pg_server_session_worker(gw.server, session) == pg_server_worker_id(gw.server) &&
        pg_idmap_put(awaiting, session, (void *)1) == 0)
        pg_server_probe(gw.server, session);
    return 0;
}

static int collect_id(uint64_t id, void *value, void *arg)
{
    (void)value;
    pg_session_id **next = arg;
    *(*next)++ = id;
    return 0;
}

/* Sessions that never answered: closed, so that a live one reconnects. */
static void close_silent(void)
{
    size_t n = pg_idmap_count(awaiting);
    pg_session_id *ids = malloc(n * sizeof(*ids)), *next = ids;
    if (!ids)
        return;   /* tried again at the next check */
    pg_idmap_iterate(awaiting, collect_id, &next);
    pg_warn("%zu session(s) did not answer a ping after the node was swept; closing them", n);
    char reason[96];
    size_t len = gw_ws_close_reason(reason, sizeof(reason), 1012, "no answer after the node's "
                                                                  "registration was lost");
    for (size_t i = 0; i < n; i++) {
        pg_idmap_remove(awaiting, ids[i]);
        pg_server_close(gw.server, ids[i], reason, len);
    }
    free(ids);
}

static void check(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    uint64_t swept_at = atomic_load(&gw.counters->swept_at_ms);
    if (swept_at != seen_swept_at) {
        seen_swept_at = swept_at;
        answer_by_ms = pg_now_ms() + REJOIN_WAIT_MS;
        size_t before = pg_idmap_count(awaiting);
        pg_table_iterate(gw.sessions, note_home_session, NULL);
        pg_notice("the node was swept while alive: %zu session(s) asked to show they are still "
                  "there", pg_idmap_count(awaiting) - before);
    }
    if (pg_idmap_count(awaiting) > 0 && pg_now_ms() >= answer_by_ms)
        close_silent();
}

void gw_rejoin_start(void)
{
    awaiting = pg_idmap_new(64);
    /* A worker that replaces one during the wait probes again: what its
     * predecessor had asked died with it. */
    uint64_t swept_at = atomic_load(&gw.counters->swept_at_ms);
    seen_swept_at = swept_at + REJOIN_WAIT_MS > pg_now_ms() ? 0 : swept_at;
    check_timer = pg_timer_tick(REJOIN_CHECK_MS, check, NULL);
}

void gw_rejoin_stop(void)
{
    if (check_timer > 0)
        pg_timer_clear(check_timer);
    check_timer = 0;
    pg_idmap_free(awaiting);
    awaiting = NULL;
}

void gw_rejoin_heard(pg_session_id session)
{
    if (!awaiting || pg_idmap_count(awaiting) == 0 || !pg_idmap_remove(awaiting, session))
        return;
    pg_debug("session %016" PRIx64 " answered after the sweep: registering it again", session);
    gw_session_register_again(session);
}

void gw_rejoin_forget(pg_session_id session)
{
    if (awaiting && pg_idmap_count(awaiting) > 0)
        pg_idmap_remove(awaiting, session);
}

/* session.c - browser sessions of this node.
 *
 * Two views of a session.  The shared table (shm_table, every process) says
 * which sessions are open and whose they are, so any worker can route to a
 * local session and the internal port can refuse a stale client_id.  The home
 * worker of a session (the one that sees its connect and close) keeps the
 * rest in its own memory: the uuid, the grace timer for authentication, and
 * the messages pushed but not yet acknowledged.  Pushes made by another
 * worker travel to the home worker as pipe messages, so exactly one process
 * tracks what a browser has acknowledged; at close or after ack_timeout what
 * is still unacknowledged goes back to offline_messages.
 *
 * An ACK costs MySQL a DELETE only when it names a message in the store: one
 * delivered from it, or one that went back to it while the session stayed
 * open (ack_timeout, too many pending), of which the last STORED_IDS_MAX are
 * remembered.  Those deletes of one loop pass go to the task worker as one
 * task.  Any other ACK (a message pushed live, an id never sent) is settled
 * or dropped in memory, so a browser flooding ACKs delays no one. */
#include "gateway.h"

#include "idmap.h"
#include "log.h"
#include "memory.h"
#include "timer.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ACK_CHECK_MS 1000
#define STORED_IDS_MAX 64        /* ids a session remembers having gone back to the store */
#define ACK_BATCH_MAX 500        /* deletes per task */

typedef struct {
    char *id;
    char *payload;
    size_t bytes;                    /* what it holds, for max_pending_bytes */
    int from_offline;
    int held;                        /* not sent yet: the session waits for its ONLINE */
    time_t sent_at;
    uint64_t pushed_us;              /* for the push-to-ACK histogram (metrics.c) */
    gw_waiter *waiters;              /* requests waiting for its ACK or its store (handoff.c) */
    size_t nwaiters;
} pending_ack;

typedef struct {
    pg_session_id session;
    char uuid[PG_UUID_MAX + 1];      /* "" until authenticated */
    int64_t auth_timer;
    pending_ack *pending;
    size_t npending, cap;
    size_t pending_bytes;
    char **stored_ids;               /* NULL, or a ring of STORED_IDS_MAX */
    uint8_t stored_next;
    gw_bucket messages;              /* limits.c */
    int awaiting_online;             /* pushes are held until ONLINE is sent */
} browser_session;

static pg_idmap *local_sessions;     /* home worker: session id -> browser_session */
static int64_t ack_timer;
static gw_batch ack_deletes[PG_SERVER_MAX_WORKERS];   /* by task worker */

int gw_sessions_create(uint32_t capacity)
{
    gw.sessions = pg_table_new(capacity);
    if (!gw.sessions)
        return -1;
    gw.col_uuid = pg_table_column(gw.sessions, "uuid", PG_TABLE_STRING, PG_UUID_MAX + 1);
    gw.col_connected_at = pg_table_column(gw.sessions, "connected_at", PG_TABLE_INT, 0);
    return gw.col_uuid < 0 || gw.col_connected_at < 0 ? -1 : pg_table_create(gw.sessions);
}

void gw_session_key(pg_session_id session, char key[17])
{
    snprintf(key, 17, "%016" PRIx64, session);
}

/* base64("ip_port_session"): the seed's client_id shape, with a session id
 * that never repeats instead of a reusable fd. */
void gw_client_id_of(const char *ip, long long port, pg_session_id session, char *out, size_t len)
{
    char raw[128];
    int n = snprintf(raw, sizeof(raw), "%s_%lld_%" PRIu64, ip, port, session);
    if (n < 0 || (size_t)n >= sizeof(raw))
        n = 0;
    unsigned char enc[4 * sizeof(raw) / 3 + 4];
    EVP_EncodeBlock(enc, (const unsigned char *)raw, n);
    snprintf(out, len, "%s", enc);
}

void gw_client_id(pg_session_id session, char *out, size_t len)
{
    gw_client_id_of(gw.node_ip, gw.cfg.internal_port, session, out, len);
}

int gw_client_id_parse(const char *client_id, char *ip, size_t iplen, int *port,
                       pg_session_id *session)
{
    size_t len = strlen(client_id);
    unsigned char raw[192];
    if (len == 0 || len > 4 * (sizeof(raw) - 1) / 3 || len % 4 != 0)
        return -1;
    int n = EVP_DecodeBlock(raw, (const unsigned char *)client_id, (int)len);
    if (n < 0)
        return -1;
    raw[n] = '\0';   /* padding decodes to trailing NULs: strings stop there */
    char *first = strchr((char *)raw, '_');
    char *last = strrchr((char *)raw, '_');
    if (!first || first == last || (size_t)(first - (char *)raw) >= iplen)
        return -1;
    char *end;
    long p = strtol(first + 1, &end, 10);
    if (end != last || p <= 0 || p > 65535)
        return -1;
    unsigned long long sid = strtoull(last + 1, &end, 10);
    if (*end != '\0' || sid == 0)
        return -1;
    memcpy(ip, raw, (size_t)(first - (char *)raw));
    ip[first - (char *)raw] = '\0';
    *port = (int)p;
    *session = sid;
    return 0;
}

int gw_session_is(pg_session_id session, const char *uuid)
{
    char key[17];
    gw_session_key(session, key);
    char row[256];
    if (pg_table_row_size(gw.sessions) > sizeof(row) || pg_table_get(gw.sessions, key, row) < 0)
        return 0;
    size_t len;
    const char *stored = pg_table_row_get_string(gw.sessions, row, gw.col_uuid, &len);
    return len == strlen(uuid) && memcmp(stored, uuid, len) == 0;
}

static void free_pending(pending_ack *p)
{
    free(p->id);
    free(p->payload);
    free(p->waiters);
}

static int add_waiter(pending_ack *p, const gw_waiter *w)
{
    if (!w || !w->ticket)
        return 0;
    gw_waiter *more = realloc(p->waiters, (p->nwaiters + 1) * sizeof(*more));
    if (!more)
        return -1;
    more[p->nwaiters++] = *w;
    p->waiters = more;
    return 0;
}

/* Tells the requests waiting for p what became of it. */
static void settle_waiters(pending_ack *p, int outcome)
{
    for (size_t i = 0; i < p->nwaiters; i++)
        gw_waiter_settle(&p->waiters[i], outcome);
    free(p->waiters);
    p->waiters = NULL;
    p->nwaiters = 0;
}

/* p's waiters, handed to the store's task (whose answer settles them), are
 * p's no more. */
static void forget_waiters(pending_ack *p)
{
    free(p->waiters);
    p->waiters = NULL;
    p->nwaiters = 0;
}

/* Forgets the n oldest pending messages (stored or acknowledged by now). */
static void drop_oldest(browser_session *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        b->pending_bytes -= b->pending[i].bytes;
        free_pending(&b->pending[i]);
    }
    b->npending -= n;
    memmove(b->pending, b->pending + n, b->npending * sizeof(*b->pending));
}

/* items[0..n) of uuid, less those stored already, in one store task. */
static void store_batch(const char *uuid, pending_ack *items, size_t n, pg_session_id keep_away,
                        pg_session_id owner)
{
    gw_store_entry *entries = malloc((n ? n : 1) * sizeof(*entries));
    size_t count = 0;
    for (size_t i = 0; entries && i < n; i++)
        if (!items[i].from_offline)
            entries[count++] = (gw_store_entry){.uuid = uuid, .msg_id = items[i].id,
                                                .payload = items[i].payload,
                                                .nwaiters = items[i].nwaiters,
                                                .waiters = items[i].waiters};
    int rc = entries ? 0 : -1;
    if (entries && count)
        rc = gw_store_send(entries, count, keep_away, gw_task_worker_of(owner));
    free(entries);
    if (rc < 0)
        pg_error("%zu unacknowledged message(s) to %s could not be handed to a task worker", n, uuid);
    for (size_t i = 0; i < n; i++) {
        if (items[i].from_offline)
            continue;
        if (rc < 0)
            settle_waiters(&items[i], PG_ERR_BUSY);
        else
            forget_waiters(&items[i]);
    }
}

/* Everything still unacknowledged that is not already stored goes back, in
 * tasks of about GW_STORE_TASK_BYTES each.  keep_away: a
 * session still open that did not acknowledge them (ack_timeout), which must
 * not get them pushed again at once; 0 for none.  owner: the session whose
 * backlog it is (0: none); its tasks all go to that session's task worker,
 * a writer, so a big backlog keeps one writer busy, and routing, which
 * picks the least busy task worker, goes on at task worker 0 (batch.c). */
static void store_unacked(const char *uuid, pending_ack *items, size_t n, pg_session_id keep_away,
                          pg_session_id owner)
{
    size_t bytes = 0, total = 0, from = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i].from_offline) {
            settle_waiters(&items[i], GW_PUSH_STORED);   /* it is in the store already */
            continue;
        }
        bytes += strlen(items[i].payload) + strlen(items[i].id) + 64;
        if (bytes > GW_STORE_TASK_BYTES) {
            store_batch(uuid, items + from, i + 1 - from, keep_away, owner);
            from = i + 1;
            total += bytes;
            bytes = 0;
        }
    }
    store_batch(uuid, items + from, n - from, keep_away, owner);
    /* the freed heap of a big backlog: give it back */
    if (total > 0)
        pg_memory_trim();
}

/* ---- acknowledgements ---- */

/* A message of b's went back to the store while b stays open. */
static void remember_stored(browser_session *b, const char *id)
{
    if (!b->stored_ids && !(b->stored_ids = calloc(STORED_IDS_MAX, sizeof(*b->stored_ids))))
        return;
    char **slot = &b->stored_ids[b->stored_next];
    free(*slot);
    *slot = strdup(id);
    b->stored_next = (uint8_t)((b->stored_next + 1) % STORED_IDS_MAX);
}

/* Whether id is one of those; forgotten once asked (its ACK came). */
static int forget_stored(browser_session *b, const char *id)
{
    for (size_t i = 0; b->stored_ids && i < STORED_IDS_MAX; i++)
        if (b->stored_ids[i] && strcmp(b->stored_ids[i], id) == 0) {
            free(b->stored_ids[i]);
            b->stored_ids[i] = NULL;
            return 1;
        }
    return 0;
}

static void free_stored_ids(browser_session *b)
{
    for (size_t i = 0; b->stored_ids && i < STORED_IDS_MAX; i++)
        free(b->stored_ids[i]);
    free(b->stored_ids);
}

/* The stored copy of an acknowledged message goes, with the others of
 * this loop pass, on the session's task worker (after its store tasks). */
static void delete_stored(browser_session *b, const char *id)
{
    gw_ack_ref *ack = gw_ack_ref_new(b->uuid, id);
    if (ack)
        gw_batch_add(&ack_deletes[gw_task_worker_of(b->session)], ack,
                     16 + strlen(b->uuid) + strlen(id));
    else
        pg_warn("out of memory: the stored copy of %s stays and comes again at the next "
                "connect", id);
}

static void free_items(void **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(items[i]);
}

static void fail_ack_deletes(void **items, size_t n)
{
    pg_warn("%zu ACK(s) not handed to a task worker: their messages stay stored and come "
            "again at the next connect", n);
    free_items(items, n);
}

/* A batch's task, which w holds (written: what writing it returned), to
 * task worker dst; its items[0..n) are then freed, or, should it not go,
 * failed (fail frees them).  0 or -1. */
static int send_items(pg_rec_writer *w, int written, void **items, size_t n, int dst,
                      void (*fail)(void **items, size_t n))
{
    int rc = written == 0 ? gw_task_record(w, dst) : -1;
    pg_rec_writer_free(w);
    if (rc < 0)
        fail(items, n);
    else
        free_items(items, n);
    return rc;
}

static int send_ack_deletes(void **items, size_t n, int dst)
{
    pg_rec_writer w = {0};
    return send_items(&w, gw_acks_task_put(&w, (gw_ack_ref *const *)items, n), items, n, dst,
                      fail_ack_deletes);
}

/* The n oldest pending messages of an open session go back to the store;
 * their ids are remembered, so that a late ACK still deletes them. */
static void give_back_oldest(browser_session *b, size_t n)
{
    store_unacked(b->uuid, b->pending, n, b->session, b->session);
    for (size_t i = 0; i < n; i++) {
        remember_stored(b, b->pending[i].id);
        gw_push_record_set(b->session, b->pending[i].id, GW_PUSH_STORED);
    }
    drop_oldest(b, n);
}

static int expire_session_acks(uint64_t id, void *value, void *arg)
{
    (void)id;
    time_t limit = *(time_t *)arg;
    browser_session *b = value;
    size_t expired = 0;
    while (expired < b->npending && b->pending[expired].sent_at < limit)
        expired++;
    if (expired == 0)
        return 0;
    pg_info("%zu message(s) to %s not acknowledged within %lld s; stored for redelivery",
            expired, b->uuid, gw.cfg.ack_timeout);
    give_back_oldest(b, expired);
    return 0;
}

static void check_ack_timeouts(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    time_t limit = time(NULL) - (time_t)gw.cfg.ack_timeout;
    pg_idmap_iterate(local_sessions, expire_session_acks, &limit);
}

/* ---- pushes: QUEUED here, SENT by the master's reactor thread ---- */

/* Sends payload to the session as a push of id (gw_push_message): the
 * reactor thread that writes it makes its record SENT, whatever becomes of
 * this worker meanwhile.  QUEUED until then: a worker killed before its
 * message left takes the push with it, and its replacement sends it again.
 * 0, or -1 when it could not be queued. */
static int send_push(pg_session_id session, const char *id, const char *payload)
{
    size_t len = strlen(payload);
    char *msg = malloc(GW_PUSH_HEADER + len);
    if (!msg)
        return -1;
    uint64_t key = gw_push_record_key(session, id);
    gw_push_header(msg, key);
    memcpy(msg + GW_PUSH_HEADER, payload, len);
    gw_push_record_set_key(key, GW_PUSH_QUEUED);
    int rc = pg_server_send(gw.server, session, msg, GW_PUSH_HEADER + len);
    free(msg);
    return rc;
}

/* ---- registration ----
 * Registrations of one loop pass go to each task worker as one task
 * (batch.c): one multi-row REPLACE into online_clients and one query for
 * which uuids have stored messages, instead of a task and two or three
 * statements per browser; a burst of reconnecting browsers is what a node
 * sees after another node stopped.  One batch per task worker, because a
 * session's later tasks (ack, offline_page, unregister) are keyed to the
 * task worker that registers it. */

#define REGISTER_BATCH_MAX 500   /* sessions per task */

static gw_batch registrations[PG_SERVER_MAX_WORKERS];   /* by task worker */

/* Closes of one loop pass, too: one multi-row DELETE per task, not one
 * commit per closing tab, which a Galera cluster certifies one at a time
 * (bench/README.md, "MySQL churn").  Keyed: a batch goes after the
 * registrations waiting for its task worker. */
#define UNREGISTER_BATCH_MAX 500

static gw_batch unregistrations[PG_SERVER_MAX_WORKERS];   /* by task worker */

/* A batch of gw_session_ref items as one task (op: GW_TASK_REGISTER or
 * GW_TASK_UNREGISTER), as send_items. */
static int send_sessions(uint8_t op, void **items, size_t n, int dst,
                         void (*fail)(void **items, size_t n))
{
    pg_rec_writer w = {0};
    return send_items(&w, gw_sessions_task_put(&w, op, (gw_session_ref *const *)items, n), items,
                      n, dst, fail);
}

/* Not handed to a task worker: the rows stay until the node's next sweep
 * of its own (at its next start) or the others' (should it die); routes to
 * them find the session gone and store the order. */
static void fail_unregistrations(void **items, size_t n)
{
    pg_error("%zu closed session(s) not unregistered (no task worker took them); their "
             "online_clients rows stay until the node's rows are swept", n);
    free_items(items, n);
}

static int send_unregistrations(void **items, size_t n, int dst)
{
    return send_sessions(GW_TASK_UNREGISTER, items, n, dst, fail_unregistrations);
}

/* Not handed off: each session hears "registration failed" (close 1011). */
static void fail_registration(pg_session_id session, const char *uuid)
{
    gw_page failed = {.session = session, .uuid = uuid, .code = PG_ERR_INTERNAL};
    gw_browser_registered(&failed, 1);
}

static void fail_registrations(void **items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const gw_session_ref *s = items[i];
        fail_registration(s->session, s->uuid);
    }
    free_items(items, n);
}

static int send_registrations(void **items, size_t n, int dst)
{
    return send_sessions(GW_TASK_REGISTER, items, n, dst, fail_registrations);
}

/* again: the session was registered before (rejoin.c), so its answer
 * brings what is stored for it but no ONLINE. */
static void register_session(pg_session_id session, const char *uuid, int again)
{
    char client_id[192];
    gw_client_id(session, client_id, sizeof(client_id));
    gw_session_ref *s = gw_session_ref_new(session, uuid, client_id, again);
    if (s)
        gw_batch_add(&registrations[gw_task_worker_of(session)], s,
                     32 + strlen(uuid) + strlen(client_id));
    else
        fail_registration(session, uuid);
}

/* A registration batch's answer lets the next batch for that task worker
 * go; then each session hears its result.  An offline page's answer has
 * one result. */
void gw_session_registered(const char *data, size_t len)
{
    gw_pages t;
    if (gw_pages_get(data, len, &t) < 0) {
        pg_error("a malformed registration answer of %zu bytes", len);
        return;
    }
    int registered = t.head.op == GW_TASK_REGISTERED;
    if (registered && t.task_worker >= 0 && t.task_worker < gw.server_cfg.task_worker_num)
        gw_batch_answered(&registrations[t.task_worker]);
    for (uint32_t i = 0; i < t.n; i++) {
        if (registered && t.pages[i].code == PG_OK)
            gw_route_feed_announce(t.pages[i].uuid, true);   /* its row is in MySQL now */
        gw_browser_registered(&t.pages[i], registered);
    }
    gw_pages_free(&t);
}

/* The uuids of closed sessions, their rows gone from MySQL: every node
 * hears, and a tab of one still here keeps the consumer's hint. */
void gw_session_unregistered(const char *data, size_t len)
{
    const char **uuids;
    uint32_t n;
    if (gw_uuids_get(data, len, &uuids, &n) < 0) {
        pg_error("a malformed unregistration answer of %zu bytes", len);
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        pg_session_id other;
        gw_route_feed_announce(uuids[i], gw_uuid_index_get(uuids[i], &other, 1) > 0);
    }
    free(uuids);
}

/* A worker that replaced another (reload, max_request, crash) adopts the
 * sessions of the shared table whose home it is: their connections stayed
 * open in the master, and their identity is there; only the old worker's
 * unacknowledged messages are gone (it stored them on its way out, or they
 * come back at the next connect).  A session the old worker had not yet
 * authenticated is not in the table: it gets its record when it sends
 * CONNECT (gw_session_authenticate). */
static int adopt_session(const char *key, const void *row, void *arg)
{
    pg_session_id session = strtoull(key, NULL, 16);
    if (pg_server_session_worker(gw.server, session) != pg_server_worker_id(gw.server))
        return 0;
    browser_session *b = calloc(1, sizeof(*b));
    if (!b)
        return 0;
    size_t len;
    const char *uuid = pg_table_row_get_string(gw.sessions, row, gw.col_uuid, &len);
    b->session = session;
    snprintf(b->uuid, sizeof(b->uuid), "%.*s", (int)len, uuid);
    if (pg_idmap_put(local_sessions, session, b) < 0)
        free(b);
    else
        ++*(size_t *)arg;
    return 0;
}

void gw_session_worker_start(void)
{
    local_sessions = pg_idmap_new(1024);
    size_t adopted = 0;
    pg_table_iterate(gw.sessions, adopt_session, &adopted);
    if (adopted)
        pg_info("adopted %zu session(s) of the worker before", adopted);
    ack_timer = pg_timer_tick(ACK_CHECK_MS, check_ack_timeouts, NULL);
    for (int i = 0; i < gw.server_cfg.task_worker_num; i++) {
        registrations[i] = (gw_batch){.op = "register", .dst = i,
                                      .max_items = REGISTER_BATCH_MAX, .hold = 1,
                                      .send = send_registrations, .fail = fail_registrations};
        ack_deletes[i] = (gw_batch){.op = "ack", .dst = i, .max_items = ACK_BATCH_MAX,
                                    .send = send_ack_deletes, .fail = fail_ack_deletes};
        unregistrations[i] = (gw_batch){.op = "unregister", .dst = i,
                                        .max_items = UNREGISTER_BATCH_MAX, .keyed = 1,
                                        .send = send_unregistrations,
                                        .fail = fail_unregistrations};
    }
}

static void free_session(browser_session *b)
{
    for (size_t i = 0; i < b->npending; i++)
        free_pending(&b->pending[i]);
    free(b->pending);
    free_stored_ids(b);
    if (b->auth_timer > 0)
        pg_timer_clear(b->auth_timer);
    free(b);
}

static int stop_session(uint64_t id, void *value, void *arg)
{
    (void)id;
    (void)arg;
    browser_session *b = value;
    if (b->uuid[0])
        store_unacked(b->uuid, b->pending, b->npending, 0, b->session);
    free_session(b);
    return 0;
}

/* The worker stops (reload or shutdown): what it holds unacknowledged is
 * stored, since the browsers may never acknowledge it to the next worker. */
void gw_session_worker_stop(void)
{
    /* Sent rather than failed: the answers reach the worker that takes over. */
    for (int i = 0; i < gw.server_cfg.task_worker_num; i++) {
        gw_batch_stop(&registrations[i], 1);
        gw_batch_stop(&ack_deletes[i], 1);
        gw_batch_stop(&unregistrations[i], 1);
    }
    pg_timer_clear(ack_timer);
    pg_idmap_iterate(local_sessions, stop_session, NULL);
    pg_idmap_free(local_sessions);
    local_sessions = NULL;
}

static void auth_timeout(int64_t timer_id, void *arg)
{
    (void)timer_id;
    pg_session_id session = (pg_session_id)(uintptr_t)arg;
    browser_session *b = pg_idmap_get(local_sessions, session);
    if (!b || b->uuid[0])
        return;
    b->auth_timer = 0;
    atomic_fetch_add(&gw.counters->auth_failures, 1);
    char reason[64];
    size_t n = gw_ws_close_reason(reason, sizeof(reason), 4001, "authentication timeout");
    pg_server_close(gw.server, session, reason, n);
}

/* The session's record in this (home) worker, or NULL. */
static browser_session *find_session(pg_session_id session)
{
    return pg_idmap_get(local_sessions, session);
}

void gw_session_open(pg_session_id session, const char *uuid)
{
    browser_session *b = calloc(1, sizeof(*b));
    if (b)
        b->session = session;
    if (!b || pg_idmap_put(local_sessions, session, b) < 0) {
        free(b);
        pg_server_close(gw.server, session, NULL, 0);
        return;
    }
    if (uuid[0])
        gw_session_authenticate(session, uuid);
    else
        b->auth_timer = pg_timer_after((uint32_t)gw.cfg.auth_timeout_ms, auth_timeout,
                                       (void *)(uintptr_t)session);
}

/* Registers the session: shared table, then online_clients and the offline
 * messages waiting for it (browser.c sends them when the task answers). */
int gw_session_authenticate(pg_session_id session, const char *uuid)
{
    browser_session *b = find_session(session);
    if (!b && (b = calloc(1, sizeof(*b))) != NULL) {
        /* opened under the worker before this one, which did not see it sign in */
        b->session = session;
        if (pg_idmap_put(local_sessions, session, b) < 0) {
            free(b);
            b = NULL;
        }
    }
    if (!b || b->uuid[0])
        return -1;
    const char *refused = gw_penalized(uuid, (int64_t)pg_now_ms())
                              ? "closed for flooding a moment ago: wait"
                          : gw_uuid_index_add(uuid, session, gw.cfg.max_tabs_per_uuid) < 0
                              ? "too many connections for this user" : NULL;
    if (refused) {
        char reason[128];
        size_t n = gw_ws_close_reason(reason, sizeof(reason), 1008, refused);
        pg_debug("%s: session %016" PRIx64 " refused: %s", uuid, session, refused);
        atomic_fetch_add(&gw.counters->limited, 1);
        pg_server_close(gw.server, session, reason, n);
        return -1;
    }
    snprintf(b->uuid, sizeof(b->uuid), "%s", uuid);
    if (b->auth_timer > 0) {
        pg_timer_clear(b->auth_timer);
        b->auth_timer = 0;
    }
    char key[17], row[256];
    gw_session_key(session, key);
    memset(row, 0, sizeof(row));
    pg_table_row_set_string(gw.sessions, row, gw.col_uuid, uuid, strlen(uuid));
    pg_table_row_set_int(gw.sessions, row, gw.col_connected_at, (int64_t)time(NULL));
    if (pg_table_set(gw.sessions, key, row) < 0) {
        pg_error("session table full: session %s of %s is not routable locally", key, uuid);
        gw_uuid_index_remove(uuid, session);
    }
    b->awaiting_online = 1;
    register_session(session, uuid, 0);
    return 0;
}

void gw_session_register_again(pg_session_id session)
{
    browser_session *b = find_session(session);
    if (b && b->uuid[0])
        register_session(session, b->uuid, 1);
}

gw_bucket *gw_session_bucket(pg_session_id session)
{
    browser_session *b = find_session(session);
    return b ? &b->messages : NULL;
}

const char *gw_session_uuid(pg_session_id session)
{
    browser_session *b = find_session(session);
    return b && b->uuid[0] ? b->uuid : NULL;
}

int gw_session_known(pg_session_id session)
{
    return find_session(session) != NULL;
}

void gw_session_closed(pg_session_id session)
{
    browser_session *b = pg_idmap_remove(local_sessions, session);
    if (!b)
        return;
    gw_rejoin_forget(session);
    if (b->uuid[0]) {
        char key[17], client_id[192];
        gw_session_key(session, key);
        gw_uuid_index_remove(b->uuid, session);
        pg_table_del(gw.sessions, key);
        store_unacked(b->uuid, b->pending, b->npending, 0, b->session);
        gw_client_id(session, client_id, sizeof(client_id));
        gw_session_ref *s = gw_session_ref_new(session, b->uuid, client_id, 0);
        if (s)
            gw_batch_add(&unregistrations[gw_task_worker_of(session)], s,
                         32 + strlen(client_id) + strlen(b->uuid));
        else
            pg_error("out of memory: the online_clients row of %s stays until the node's "
                     "rows are swept", client_id);
    }
    free_session(b);
}

/* Past max_pending_acks or max_pending_bytes the oldest half (by count, and
 * more while over half the bytes) goes back to the store rather than memory
 * growing: in one go, not one task per push, since a browser that stopped
 * acknowledging usually stopped reading too. */
static void make_room(browser_session *b, size_t bytes)
{
    if (b->npending == 0 || (b->npending < (size_t)gw.cfg.max_pending_acks &&
                             b->pending_bytes + bytes <= gw.cfg.max_pending_bytes))
        return;
    size_t n = (b->npending + 1) / 2, kept = b->pending_bytes;
    for (size_t i = 0; i < n; i++)
        kept -= b->pending[i].bytes;
    for (; n < b->npending && kept + bytes > gw.cfg.max_pending_bytes / 2; n++)
        kept -= b->pending[n].bytes;
    give_back_oldest(b, n);
}

static int add_pending(browser_session *b, const char *id, const char *payload, int from_offline,
                       const gw_waiter *w)
{
    size_t bytes = strlen(id) + strlen(payload) + 2 + sizeof(pending_ack);
    make_room(b, bytes);
    if (b->npending == b->cap) {   /* from 4, not pg_grow's 16: there is one per browser */
        size_t cap = b->cap ? b->cap * 2 : 4;
        pending_ack *p = realloc(b->pending, cap * sizeof(*p));
        if (!p)
            return -1;
        b->pending = p;
        b->cap = cap;
    }
    pending_ack *p = &b->pending[b->npending];
    *p = (pending_ack){.id = strdup(id), .payload = strdup(payload), .bytes = bytes,
                       .from_offline = from_offline, .sent_at = time(NULL),
                       .pushed_us = pg_prom_now_us()};
    if (!p->id || !p->payload || add_waiter(p, w) < 0) {
        free_pending(p);
        return -1;
    }
    b->npending++;
    b->pending_bytes += bytes;
    return 0;
}

static pending_ack *find_pending(browser_session *b, const char *id)
{
    for (size_t i = 0; i < b->npending; i++)
        if (strcmp(b->pending[i].id, id) == 0)
            return &b->pending[i];
    return NULL;
}

/* A message that reached no session goes to the store; w, if any, hears
 * when it is there. */
static void store_lost(const char *uuid, const char *id, const char *payload, int from_offline,
                       const gw_waiter *w)
{
    pending_ack lost = {.id = (char *)id, .payload = (char *)payload, .from_offline = from_offline};
    if (add_waiter(&lost, w) < 0)
        gw_waiter_settle(w, PG_ERR_INTERNAL);
    store_unacked(uuid, &lost, 1, 0, 0);
    free(lost.waiters);
}

/* A push of an id this node pushed to the session before (seen: what the
 * push record says of it) is not sent again; only the store's copy, if
 * this push came from the store, is kept in step, and w hears of it when
 * the browser's ACK comes, or now if it came already.  A QUEUED one that
 * this worker does not know was queued by a worker killed before it could
 * send it: that one is sent (push_here). */
static void push_again(browser_session *b, const char *id, const char *payload, int from_offline,
                       int seen, const gw_waiter *w)
{
    atomic_fetch_add(&gw.counters->repeats, 1);
    pending_ack *p = find_pending(b, id);
    if (p) {
        p->from_offline |= from_offline;   /* its ACK deletes the stored copy too */
        if (add_waiter(p, w) < 0)
            gw_waiter_settle(w, PG_ERR_INTERNAL);
    } else if (seen == GW_PUSH_SENT) {
        /* pushed by the worker before this one, which died: the browser
         * has it, so its ACK (or ack_timeout) is waited for here */
        if (add_pending(b, id, payload, from_offline, w) < 0)
            gw_waiter_settle(w, PG_ERR_INTERNAL);
    } else if (seen == GW_PUSH_ACKED) {
        if (from_offline)
            delete_stored(b, id);
        gw_waiter_settle(w, GW_PUSH_ACKED);
    } else {
        /* it went back to the store while this session stayed open, and
         * waits there for the next connect */
        gw_waiter_settle(w, GW_PUSH_STORED);
    }
}

/* A push to a session whose ONLINE has not gone yet waits in its pending
 * list, unsent, so that ONLINE is the first thing a browser hears.  QUEUED
 * in the push record, as a push not yet out of this worker is: a worker
 * that replaces this one sends it again when it comes again. */
static void hold(browser_session *b, const char *id, const char *payload, int from_offline,
                 const gw_waiter *w)
{
    if (add_pending(b, id, payload, from_offline, w) < 0) {
        store_lost(b->uuid, id, payload, from_offline, w);
        return;
    }
    b->pending[b->npending - 1].held = 1;
    gw_push_record_set(b->session, id, GW_PUSH_QUEUED);
}

void gw_session_online(pg_session_id session)
{
    browser_session *b = find_session(session);
    if (!b || !b->awaiting_online)
        return;
    b->awaiting_online = 0;
    for (size_t i = 0; i < b->npending; i++) {
        pending_ack *p = &b->pending[i];
        if (!p->held)
            continue;
        /* one that cannot be sent stays pending: ack_timeout stores it */
        if (send_push(session, p->id, p->payload) < 0)
            continue;
        p->held = 0;
        p->sent_at = time(NULL);
        p->pushed_us = pg_prom_now_us();
        atomic_fetch_add(&gw.counters->pushed, 1);
    }
}

/* On the home worker: write and remember; a session gone meanwhile gets the
 * message stored instead.  intake_us: when the message came in (0: not
 * known), for the intake-to-push histogram. */
static void push_here(pg_session_id session, const char *uuid, const char *id,
                      const char *payload, int from_offline, const gw_waiter *w, uint64_t intake_us)
{
    browser_session *b = find_session(session);
    if (!b || strcmp(b->uuid, uuid) != 0) {
        store_lost(uuid, id, payload, from_offline, w);
        return;
    }
    int seen = gw_push_record_get(session, id);
    if (seen != GW_PUSH_NONE && (seen != GW_PUSH_QUEUED || find_pending(b, id))) {
        push_again(b, id, payload, from_offline, seen, w);
        return;
    }
    if (b->awaiting_online) {
        hold(b, id, payload, from_offline, w);
        return;
    }
    if (send_push(session, id, payload) < 0 ||
        add_pending(b, id, payload, from_offline, w) < 0) {
        store_lost(uuid, id, payload, from_offline, w);
        return;
    }
    atomic_fetch_add(&gw.counters->pushed, 1);
    if (!from_offline)
        pg_prom_observe_since(&gw.counters->intake_to_push, intake_us);
}

/* A push relayed to the session's home worker: this header, then uuid, id
 * and payload back to back, none NUL-terminated.  Binary rather than JSON:
 * half of all pushes take this hop, and printing and parsing an escaped
 * payload cost more than the rest of it. */
typedef struct {
    uint64_t session;
    uint64_t waiter_ticket;          /* 0: nothing waits for it */
    uint64_t intake_us;              /* see push_here */
    int32_t waiter_worker;
    uint32_t payload_len;
    uint16_t id_len;
    uint8_t uuid_len;
    uint8_t from_offline;
} relayed_push;

static void relay_push(int home, pg_session_id session, const char *uuid, const char *id,
                       const char *payload, int from_offline, const gw_waiter *w)
{
    size_t uuid_len = strlen(uuid), id_len = strlen(id), payload_len = strlen(payload);
    relayed_push head = {.session = session, .waiter_ticket = w ? w->ticket : 0,
                         .intake_us = gw_metrics_intake(),
                         .waiter_worker = w ? w->worker : 0, .payload_len = (uint32_t)payload_len,
                         .id_len = (uint16_t)id_len, .uuid_len = (uint8_t)uuid_len,
                         .from_offline = (uint8_t)(from_offline != 0)};
    size_t len = 1 + sizeof(head) + uuid_len + id_len + payload_len;
    char *msg = uuid_len <= PG_UUID_MAX && id_len <= UINT16_MAX && payload_len <= UINT32_MAX
                    ? malloc(len) : NULL;
    if (msg) {
        char *p = msg;
        *p++ = GW_PIPE_PUSH;
        memcpy(p, &head, sizeof(head));
        memcpy(p += sizeof(head), uuid, uuid_len);
        memcpy(p += uuid_len, id, id_len);
        memcpy(p + id_len, payload, payload_len);
    }
    if (!msg || pg_server_send_message(gw.server, home, msg, len) < 0)
        store_lost(uuid, id, payload, from_offline, w);
    else
        atomic_fetch_add(&gw.counters->relayed, 1);
    free(msg);
}

void gw_push(pg_session_id session, const char *uuid, const char *id, const char *payload,
             int from_offline, const gw_waiter *w)
{
    int home = pg_server_session_worker(gw.server, session);
    if (home == pg_server_worker_id(gw.server))
        push_here(session, uuid, id, payload, from_offline, w, gw_metrics_intake());
    else
        relay_push(home, session, uuid, id, payload, from_offline, w);
}

void gw_session_pipe_message(const char *data, size_t len)
{
    relayed_push head;
    if (len < sizeof(head)) {
        pg_error("malformed push from another worker: %zu bytes", len);
        return;
    }
    memcpy(&head, data, sizeof(head));
    if (len != sizeof(head) + head.uuid_len + head.id_len + head.payload_len) {
        pg_error("malformed push from another worker: %zu bytes", len);
        return;
    }
    /* strings of their own: push_here keeps id and payload */
    char uuid[PG_UUID_MAX + 1];
    const char *p = data + sizeof(head);
    char *id = strndup(p + head.uuid_len, head.id_len);
    char *payload = strndup(p + head.uuid_len + head.id_len, head.payload_len);
    snprintf(uuid, sizeof(uuid), "%.*s", (int)head.uuid_len, p);
    gw_waiter w = {.worker = head.waiter_worker, .ticket = head.waiter_ticket};
    if (id && payload)
        push_here((pg_session_id)head.session, uuid, id, payload, head.from_offline, &w,
                  head.intake_us);
    else
        pg_error("out of memory for a push from another worker");
    free(id);
    free(payload);
}

void gw_session_send_stored(pg_session_id session)
{
    browser_session *b = find_session(session);
    if (b && b->uuid[0])
        gw_browser_ask_stored(session, b->uuid);
}

int gw_session_ack(pg_session_id session, const char *id)
{
    browser_session *b = find_session(session);
    if (!b || !b->uuid[0])
        return -1;
    pending_ack *p = find_pending(b, id);
    if (p) {
        if (p->from_offline)
            delete_stored(b, id);
        settle_waiters(p, GW_PUSH_ACKED);
        pg_prom_observe_since(&gw.counters->push_to_ack, p->pushed_us);
        size_t i = (size_t)(p - b->pending);
        b->pending_bytes -= p->bytes;
        free_pending(p);
        memmove(b->pending + i, b->pending + i + 1, (--b->npending - i) * sizeof(*b->pending));
        atomic_fetch_add(&gw.counters->acked, 1);
        gw_push_record_set(session, id, GW_PUSH_ACKED);
        return 1;
    }
    if (forget_stored(b, id)) {
        delete_stored(b, id);
        gw_push_record_set(session, id, GW_PUSH_ACKED);
        return 1;
    }
    int seen = gw_push_record_get(session, id);
    if (seen != GW_PUSH_SENT && seen != GW_PUSH_QUEUED)
        return 0;
    gw_push_record_set(session, id, GW_PUSH_ACKED);   /* pushed by the worker before this one */
    return 1;
}

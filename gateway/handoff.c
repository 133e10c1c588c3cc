/* handoff.c - an internal request is answered a second time once every
 * browser it reached has acknowledged it, or it is stored.
 *
 * The consumer may XACK a stream entry only when the work order can no
 * longer be lost: when each target browser has ACKed it, or it is in
 * offline_messages.  A push alone is not enough (a node killed before the
 * browser's ACK takes the message with it), so a request that asks for it
 * ("handoff": true) gets two replies:
 *
 *   {"code":0, ..., "pending":n}   routed: pushed, forwarded, stored; n
 *                                  targets still wait for their browser
 *   {"code":0|error, "msg_id", ["req_id",] "final":true, "acked", "stored"}
 *                                  sent only when n > 0, once all n are
 *                                  settled; an error: some could be neither
 *                                  acknowledged nor stored, so retry
 *
 * The first reply is held back for up to HOLD_MS: when every target
 * settles meanwhile, which is the usual case (a browser ACKs within a
 * millisecond or two, and within some hundreds of them when the node is
 * flooded), it goes out alone, with no "pending" and no final one after
 * it.  That halves the replies a sender (the consumer, the proxy and the
 * node behind it) reads and the writes that carry them.  The held reply
 * waits in its ticket (ARMED), so the change that settles the last target
 * sends it, from whichever worker that is, and a hold costs its owner one
 * look when it is over rather than a scan of every held reply as they
 * settle.  A ticket one of whose targets failed meanwhile is answered with
 * the error instead.  HOLD_MS stays well below the senders' reply_timeout_ms
 * (3 s for the proxy, 5 s for the consumer) even after a route that waited
 * mysql_wait_ms.
 *
 * The worker that routes the request opens a ticket; each push that must
 * be waited for carries its id (a waiter) to the session's home worker,
 * which settles it when the browser ACKs, or when the message went back to
 * the store (ack_timeout, close, too many pending) and the store confirmed
 * it.  Tickets live in shared memory, so the home worker settles them
 * itself, with no message back, and whichever process brings a ticket to
 * its end sends the final reply: the count of targets waiting and the flag
 * "first reply sent" share one atomic word, so exactly one of them sees
 * both done.  A worker killed with pushes of its sessions still queued
 * (push_record.c) leaves their tickets waiting: its replacement fails every
 * ticket that waited on it at once, with a retry-later code, and the
 * node's push record keeps the retry from reaching any browser twice.  A
 * ticket not settled within ack_timeout + HANDOFF_GRACE_S is answered with
 * an error the same way. */
#include "gateway.h"

#include "log.h"
#include "memory.h"
#include "reply.h"
#include "shm.h"
#include "timer.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HANDOFF_GRACE_S 10
#define SWEEP_MS 1000
#define HOLD_MS 500                   /* a first reply waits this long for the final one */
#define ID_MAX 96
#define FIRST_MAX 192                 /* a first reply up to this long waits in its ticket */
#define HOLD_TICK_MS 50               /* and its end is looked for at most this often */
#define GATHER_MS 1                   /* replies sent alone leave together, this often, */
#define GATHER_MAX_MS 5               /* or this often on a worker that routes nothing */

/* A ticket's state word: its generation, two flags and how many targets
 * still wait.  Every change is one compare-and-swap that also checks the
 * generation, so a late settle of an ended ticket can never touch the
 * ticket that reuses its slot. */
#define COUNT_MASK UINT64_C(0x1fffffff)
#define ARMED (UINT64_C(1) << 29)     /* the first reply waits in the ticket */
#define FAILED (UINT64_C(1) << 30)    /* some target could not be settled */
#define REPLIED (UINT64_C(1) << 31)   /* the first reply went out */
#define GEN_SHIFT 32
#define GEN(word) ((uint32_t)((word) >> GEN_SHIFT))
/* Answered for good: nothing about it may change any more.  Generation 0
 * is a slot never opened. */
#define ENDED(word) (GEN(word) == 0 || (((word) & REPLIED) && ((word) & COUNT_MASK) == 0))

enum { SLOT_FREE = 0, SLOT_TAKEN };

typedef struct {
    _Atomic uint32_t state;          /* SLOT_FREE: anyone may open it */
    _Atomic uint64_t word;           /* generation | flags | count */
    _Atomic uint32_t acked, stored;
    _Atomic int32_t code;            /* the first failure's code */
    _Atomic uint64_t waits_on[PG_SERVER_MAX_WORKERS / 64];   /* home workers of its pushes */
    int32_t owner;                   /* the worker that opened it */
    int64_t deadline;                /* seconds */
    pg_session_id reply_to;          /* the connection to answer (consumer or proxy) */
    int64_t req_id;                  /* echoed when has_req_id */
    uint8_t has_req_id;
    char msg_id[ID_MAX];
    uint16_t first_len;              /* first[]: written before ARMED is set, then read-only */
    char first[FIRST_MAX];
} ticket;

static ticket *slots;
static uint32_t nslots;
static uint32_t cursor;              /* this worker's next place to look */
/* The ids of the tickets this worker opened and has not seen end: its
 * sweep looks at these, where a walk of every slot (megabytes of shared
 * memory) held its loop up for half a millisecond each second. */
static uint64_t *mine;
static size_t nmine, mine_cap;
static int64_t sweep_timer;

static int remember(uint64_t id);

int gw_handoff_create(uint32_t capacity)
{
    nslots = capacity;
    slots = capacity ? pg_shm_alloc((size_t)nslots * sizeof(*slots)) : NULL;
    return slots || !capacity ? 0 : -1;
}

void gw_handoff_destroy(void)
{
    if (slots)
        pg_shm_free(slots, (size_t)nslots * sizeof(*slots));
    slots = NULL;
}

/* A ticket id: the slot's generation above its index; never 0. */
static ticket *find(uint64_t id, uint32_t *gen)
{
    uint32_t index = (uint32_t)id;
    if (!slots || !id || index >= nslots)
        return NULL;
    *gen = (uint32_t)(id >> 32);
    return &slots[index];
}

/* The final reply, then the slot is free again.  Only the process whose
 * change ended the ticket calls this. */
static void send_final(ticket *t, uint64_t word)
{
    char tail[96];
    int code = !(word & FAILED) ? PG_OK : atomic_load(&t->code) ? atomic_load(&t->code) : PG_ERR_INTERNAL;
    snprintf(tail, sizeof(tail), ",\"final\":true,\"acked\":%u,\"stored\":%u",
             atomic_load(&t->acked), atomic_load(&t->stored));
    json_t *msg_id = json_string(t->msg_id);
    json_t *req_id = t->has_req_id ? json_integer((json_int_t)t->req_id) : NULL;
    size_t len;
    char *text = pg_reply_json(code, code == PG_OK ? "handed off" : pg_code_text(code), msg_id,
                               req_id, tail, &len);
    if (!text || pg_server_send(gw.server, t->reply_to, text, len) != 0)
        pg_error("request %s: the final reply could not be sent; the sender's wait expires", t->msg_id);
    free(text);
    json_decref(msg_id);
    json_decref(req_id);
    atomic_store(&t->state, SLOT_FREE);
}

static void open_slot(ticket *t, pg_session_id reply_to, const char *msg_id, json_t *req_id)
{
    atomic_store(&t->acked, 0);
    atomic_store(&t->stored, 0);
    atomic_store(&t->code, 0);
    for (size_t w = 0; w < sizeof(t->waits_on) / sizeof(t->waits_on[0]); w++)
        atomic_store(&t->waits_on[w], 0);
    t->owner = pg_server_worker_id(gw.server);
    t->deadline = (int64_t)time(NULL) + gw.cfg.ack_timeout + HANDOFF_GRACE_S;
    t->reply_to = reply_to;
    t->has_req_id = json_is_integer(req_id);
    t->req_id = t->has_req_id ? (int64_t)json_integer_value(req_id) : 0;
    snprintf(t->msg_id, sizeof(t->msg_id), "%s", msg_id);
}

uint64_t gw_handoff_open(pg_session_id reply_to, json_t *msg_id, json_t *req_id)
{
    const char *id = json_string_value(msg_id);
    if (!slots || !id || strlen(id) >= ID_MAX)
        return 0;
    for (uint32_t tries = 0; tries < nslots; tries++) {
        uint32_t i = cursor++ % nslots;
        uint32_t expected = SLOT_FREE;
        ticket *t = &slots[i];
        if (!atomic_compare_exchange_strong(&t->state, &expected, SLOT_TAKEN))
            continue;
        open_slot(t, reply_to, id, req_id);
        uint32_t gen = GEN(atomic_load(&t->word)) + 1;
        if (gen == 0)
            gen = 1;
        atomic_store(&t->word, (uint64_t)gen << GEN_SHIFT);
        uint64_t id = (uint64_t)gen << 32 | i;
        if (remember(id) < 0) {       /* it could never expire: not used */
            atomic_store(&t->word, (uint64_t)gen << GEN_SHIFT | REPLIED);
            atomic_store(&t->state, SLOT_FREE);
            pg_warn("out of memory opening a hand-off ticket: the request is answered once");
            return 0;
        }
        return id;
    }
    pg_warn("no free hand-off ticket (%u in use): the request is answered once", nslots);
    return 0;
}

gw_waiter gw_handoff_expect(uint64_t id, int home)
{
    uint32_t gen;
    ticket *t = find(id, &gen);
    if (!t)
        return (gw_waiter){0};
    uint64_t word = atomic_load(&t->word);
    do {
        if (GEN(word) != gen || (word & REPLIED) || (word & COUNT_MASK) == COUNT_MASK)
            return (gw_waiter){0};
    } while (!atomic_compare_exchange_weak(&t->word, &word, word + 1));
    if (home >= 0 && home < PG_SERVER_MAX_WORKERS)
        atomic_fetch_or(&t->waits_on[home / 64], UINT64_C(1) << (home % 64));
    return (gw_waiter){.worker = pg_server_worker_id(gw.server), .ticket = id};
}

/* Sends a first reply's text with "pending":n put before its closing '}'
 * (n 0: as it is). */
static void send_first(pg_session_id to, const char *text, size_t len, int pending)
{
    char *with = NULL;
    if (pending > 0) {
        if (!(with = malloc(len + 32))) {
            pg_error("out of memory: a first reply was not sent; the sender's wait expires");
            return;
        }
        memcpy(with, text, len - 1);
        len = len - 1 + (size_t)sprintf(with + len - 1, ",\"pending\":%d}", pending);
        text = with;
    }
    if (pg_server_send(gw.server, to, text, len) != 0)
        pg_error("a first reply could not be sent; the sender's wait expires");
    free(with);
}

/* ---- replies sent alone, gathered for a moment ---- */

/* A ticket's only reply goes out with the others of its millisecond from
 * this worker, when it next answers an order: in the write to the master
 * that carries that order's pushes, and in one write from there to the
 * sender.  Sent one by one as each browser's ACK settles its ticket, or
 * each millisecond on a timer of their own, they cost the reactor threads
 * 8 us, or the workers 4.5 us, an order more at 5,000/s.  The timer is for a
 * worker that routes nothing. */
typedef struct {
    pg_session_id to;
    char *text;
    size_t len;
} gathered;

static gathered *gathering;
static size_t ngathered, gathered_cap;
static uint64_t gathering_since_ms;
static int64_t gather_timer;

static void send_gathered(int64_t timer_id, void *arg)
{
    (void)arg;
    if (gather_timer > 0 && timer_id != gather_timer)
        pg_timer_clear(gather_timer);
    gather_timer = 0;
    for (size_t i = 0; i < ngathered; i++) {
        send_first(gathering[i].to, gathering[i].text, gathering[i].len, 0);
        free(gathering[i].text);
    }
    ngathered = 0;
}

static void send_soon(pg_session_id to, const char *text, size_t len)
{
    char *copy = malloc(len);
    if (!copy || pg_grow(&gathering, &gathered_cap, ngathered, sizeof(*gathering)) < 0) {
        free(copy);
        send_first(to, text, len, 0);
        return;
    }
    memcpy(copy, text, len);
    if (ngathered == 0)
        gathering_since_ms = pg_now_ms();
    gathering[ngathered++] = (gathered){.to = to, .text = copy, .len = len};
    if (gather_timer <= 0 &&
        (gather_timer = pg_timer_after(GATHER_MAX_MS, send_gathered, NULL)) < 0)
        send_gathered(0, NULL);
}

/* The ticket's only reply: its last target settled before the first reply
 * left.  Sent by the process whose change ended the ticket. */
static void send_only(ticket *t, uint64_t word)
{
    if (word & FAILED) {
        send_final(t, word);
        return;
    }
    send_soon(t->reply_to, t->first, t->first_len);
    atomic_store(&t->state, SLOT_FREE);
}

/* Marks ticket id's first reply as gone, unless it went already (or the
 * slot was reused): the ticket, and in *was its word before; or NULL. */
static ticket *claim_first(uint64_t id, uint64_t *was)
{
    uint32_t gen;
    ticket *t = find(id, &gen);
    uint64_t word = t ? atomic_load(&t->word) : 0;
    do {
        if (!t || GEN(word) != gen || (word & REPLIED))
            return NULL;
    } while (!atomic_compare_exchange_weak(&t->word, &word, word | REPLIED));
    *was = word;
    return t;
}

/* The first reply, not held, goes out now with the targets still waiting;
 * or the final error instead when all settled and one failed; or nothing
 * when the ticket was answered already. */
static void reply_now(uint64_t id, pg_session_id to, const char *text, size_t len)
{
    uint64_t word;
    ticket *t = claim_first(id, &word);
    if (!t)
        return;
    if ((word & COUNT_MASK) == 0 && (word & FAILED)) {
        send_final(t, word | REPLIED);
        return;
    }
    if ((word & COUNT_MASK) == 0)   /* nothing to wait for: that was the last reply */
        atomic_store(&t->state, SLOT_FREE);
    send_first(to, text, len, (int)(word & COUNT_MASK));
}

/* Puts the first reply in its ticket, after which whichever change settles
 * the last target sends it, alone.  1: armed; 0: every target had settled
 * already, and it went now; -1: the ticket was answered already. */
static int arm(uint64_t id, const char *text, size_t len)
{
    uint32_t gen;
    ticket *t = find(id, &gen);
    uint64_t word = t ? atomic_load(&t->word) : 0, next;
    if (!t || GEN(word) != gen || (word & REPLIED))
        return -1;
    /* Until it is armed only its owner, this worker, can end a ticket, so
     * the slot is not reused under first[]. */
    memcpy(t->first, text, len);
    t->first_len = (uint16_t)len;
    do {
        if (GEN(word) != gen || (word & REPLIED))
            return -1;
        next = word | ARMED | ((word & COUNT_MASK) == 0 ? REPLIED : 0);
    } while (!atomic_compare_exchange_weak(&t->word, &word, next));
    if (!(next & REPLIED))
        return 1;
    send_only(t, next);
    return 0;
}

/* Past the hold: the first reply goes out with the targets still waiting,
 * unless the last one settled meanwhile and its reply went alone.  The
 * reply is copied before the change that claims it: once claimed, the
 * ticket may end and its slot be reused at any moment. */
static void hold_over(uint64_t id)
{
    uint32_t gen;
    ticket *t = find(id, &gen);
    uint64_t word = t ? atomic_load(&t->word) : 0;
    if (!t || GEN(word) != gen || !(word & ARMED) || (word & REPLIED))
        return;
    char text[FIRST_MAX];
    size_t len = t->first_len;
    pg_session_id to = t->reply_to;
    memcpy(text, t->first, len);
    if (claim_first(id, &word))
        send_first(to, text, len, (int)(word & COUNT_MASK));
}

/* ---- first replies held back (this worker's, oldest first) ---- */

typedef struct {
    uint64_t id;
    uint64_t due_ms;
} held_reply;

static held_reply *held;             /* held[held_head..nheld): waiting, oldest first */
static size_t held_head, nheld, held_cap;
static int64_t held_timer;

/* Ends the hold of those due by due_by. */
static void release_due(uint64_t due_by)
{
    while (held_head < nheld && held[held_head].due_ms <= due_by)
        hold_over(held[held_head++].id);
    if (held_head == nheld)
        held_head = nheld = 0;
}

static void check_held(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    held_timer = 0;
    uint64_t now = pg_now_ms();
    release_due(now);
    if (held_head < nheld) {
        uint64_t due = held[held_head].due_ms;
        uint32_t wait = due > now + HOLD_TICK_MS ? (uint32_t)(due - now) + 1 : HOLD_TICK_MS;
        if ((held_timer = pg_timer_after(wait, check_held, NULL)) < 0)
            held_timer = 0;
    }
}

/* Room for one more: the part already released is reused first. */
static int room_to_hold(void)
{
    if (nheld < held_cap)
        return 0;
    if (held_head > 0) {
        memmove(held, held + held_head, (nheld - held_head) * sizeof(*held));
        nheld -= held_head;
        held_head = 0;
        return 0;
    }
    return pg_grow(&held, &held_cap, nheld, sizeof(*held));
}

void gw_handoff_reply(uint64_t id, pg_session_id to, char *text, size_t len)
{
    if (ngathered > 0 && pg_now_ms() >= gathering_since_ms + GATHER_MS)
        send_gathered(0, NULL);
    if (!text)
        return;
    if (!id) {
        if (pg_server_send(gw.server, to, text, len) != 0)
            pg_error("a reply could not be sent; the sender's wait expires");
    } else if (len == 0 || len > FIRST_MAX || text[len - 1] != '}' || room_to_hold() < 0) {
        reply_now(id, to, text, len);
    } else if (arm(id, text, len) > 0) {
        uint64_t now = pg_now_ms();
        release_due(now);
        held[nheld++] = (held_reply){.id = id, .due_ms = now + HOLD_MS};
        if (held_timer <= 0 && (held_timer = pg_timer_after(HOLD_MS + 1, check_held, NULL)) < 0)
            held_timer = 0;
    }
    free(text);
}

int gw_handoff_drop(uint64_t id)
{
    uint32_t gen;
    ticket *t = find(id, &gen);
    uint64_t word = t ? atomic_load(&t->word) : 0;
    do {
        if (!t || GEN(word) != gen || (word & REPLIED))
            return -1;
    } while (!atomic_compare_exchange_weak(&t->word, &word,
                                           (uint64_t)(gen + 1) << GEN_SHIFT | REPLIED));
    atomic_store(&t->state, SLOT_FREE);
    return 0;
}

/* One target settled; the change that settles the last one, after the
 * first reply, ends the ticket. */
static void settle(ticket *t, uint32_t gen, int outcome)
{
    int failed = outcome != GW_PUSH_ACKED && outcome != GW_PUSH_STORED;
    uint64_t word = atomic_load(&t->word), next;
    if (GEN(word) != gen)
        return;
    /* counted before the change that may end it, so its final sees them */
    if (failed) {
        int32_t none = 0;
        atomic_compare_exchange_strong(&t->code, &none, outcome);
    } else {
        atomic_fetch_add(outcome == GW_PUSH_ACKED ? &t->acked : &t->stored, 1);
    }
    do {
        if (GEN(word) != gen || (word & COUNT_MASK) == 0)
            return;
        next = (word - 1) | (failed ? FAILED : 0);
        if ((next & COUNT_MASK) == 0 && (next & ARMED))
            next |= REPLIED;          /* the first reply waits: this change sends it, alone */
    } while (!atomic_compare_exchange_weak(&t->word, &word, next));
    if ((next & COUNT_MASK) != 0)
        return;
    if (word & REPLIED)
        send_final(t, next);
    else if (next & ARMED)
        send_only(t, next);
}

void gw_handoff_settled(uint64_t id, int outcome)
{
    uint32_t gen;
    ticket *t = find(id, &gen);
    if (t)
        settle(t, gen, outcome);
}

void gw_waiter_settle(const gw_waiter *w, int outcome)
{
    if (w && w->ticket)
        gw_handoff_settled(w->ticket, outcome);
}

/* Every target still waiting fails at once with code: the sender retries.
 * seen: the ticket's word as the caller found it, whose generation it
 * means.  A ticket whose first reply went out; or, with orphan, one whose
 * owner died: whether that one's first reply, or the pushes it relayed to
 * other workers, left before it died, nobody knows.  One change takes all
 * its targets, so exactly one process answers. */
static void fail_ticket(ticket *t, uint64_t seen, int code, const char *why, int orphan)
{
    uint32_t gen = GEN(seen);
    uint64_t word = seen, failed = (uint64_t)gen << GEN_SHIFT | REPLIED | FAILED;
    do {
        if (GEN(word) != gen || ENDED(word) || (!orphan && !(word & REPLIED)))
            return;
    } while (!atomic_compare_exchange_weak(&t->word, &word, failed));
    int32_t none = 0;
    atomic_compare_exchange_strong(&t->code, &none, code);
    pg_warn("request %s: %llu push(es) %s; the sender retries", t->msg_id,
            (unsigned long long)(word & COUNT_MASK), why);
    send_final(t, failed);
}

/* Whether ticket id is still open: its slot not reused, its word not
 * ended.  *word: the word read. */
static ticket *open_ticket(uint64_t id, uint64_t *word)
{
    uint32_t gen;
    ticket *t = find(id, &gen);
    *word = t ? atomic_load(&t->word) : 0;
    return t && GEN(*word) == gen && !ENDED(*word) ? t : NULL;
}

/* Drops from mine the tickets that ended; with act, ends those that
 * expired, and those that some target failed already: their final reply is
 * an error whatever the rest do.  A ticket's other fields are those of the
 * generation of its word, read first, as long as that is not ended. */
static void walk_mine(int act)
{
    int64_t now = (int64_t)time(NULL);
    size_t kept = 0;
    for (size_t i = 0; i < nmine; i++) {
        uint64_t word;
        ticket *t = open_ticket(mine[i], &word);
        if (!t)
            continue;
        if (act && t->deadline < now)   /* with MySQL down, the store is why: not counted */
            fail_ticket(t, word, atomic_load(&gw.counters->mysql_ok) ? PG_ERR_INTERNAL
                                                                     : PG_ERR_UNAVAILABLE,
                        "neither acknowledged nor stored in time", 0);
        else if (act && (word & FAILED))
            fail_ticket(t, word, PG_ERR_INTERNAL, "left waiting after another failed", 0);
        mine[kept++] = mine[i];
    }
    nmine = kept;
}

/* The owner's look at its tickets, once a second. */
static void sweep(int64_t timer_id, void *arg)
{
    (void)timer_id;
    (void)arg;
    walk_mine(1);
}

/* Notes a ticket this worker opened, for its sweeps.  Ended ones are
 * dropped first once the list holds twice as many as can be open, so it
 * stays within that.  -1: no room (out of memory). */
static int remember(uint64_t id)
{
    if (nmine >= 2 * (size_t)nslots)
        walk_mine(0);
    if (pg_grow(&mine, &mine_cap, nmine, sizeof(*mine)) < 0)
        return -1;
    mine[nmine++] = id;
    return 0;
}

/* Marks a ticket failed with code; it ends now if its first reply went
 * out, else at its owner's first sweep after that reply. */
static void doom_ticket(ticket *t, uint64_t word, int code, const char *why)
{
    uint32_t gen = GEN(word);
    int32_t none = 0;
    atomic_compare_exchange_strong(&t->code, &none, code);
    do {
        if (GEN(word) != gen || ENDED(word))
            return;
    } while (!atomic_compare_exchange_weak(&t->word, &word, word | FAILED));
    if (word & REPLIED)
        fail_ticket(t, word | FAILED, code, why, 0);
}

/* A worker that starts may replace one that was killed.  What that one had
 * queued for its sessions may never have left (push_record.c), so every
 * ticket waiting on it fails rather than waits for its deadline; and so
 * may whatever it had queued at all, its replies and its pushes relayed to
 * other workers, so every ticket it opened is answered now, "busy": the
 * sender retries at once, and the push record keeps the retry from
 * reaching a browser twice. */
static void take_over_from_predecessor(void)
{
    int me = pg_server_worker_id(gw.server);
    for (uint32_t i = 0; i < nslots; i++) {
        ticket *t = &slots[i];
        uint64_t word = atomic_load(&t->word);
        if (ENDED(word))
            continue;
        if (t->owner == me)
            fail_ticket(t, word, PG_ERR_BUSY, "routed by a worker that was replaced", 1);
        else if (atomic_load(&t->waits_on[me / 64]) & (UINT64_C(1) << (me % 64)))
            doom_ticket(t, word, PG_ERR_BUSY, "waited on a worker that was replaced");
    }
}

void gw_handoff_start(void)
{
    if (!slots)
        return;
    take_over_from_predecessor();
    sweep_timer = pg_timer_tick(SWEEP_MS, sweep, NULL);
}

void gw_handoff_stop(void)
{
    if (sweep_timer > 0)
        pg_timer_clear(sweep_timer);
    sweep_timer = 0;
    if (held_timer > 0)
        pg_timer_clear(held_timer);
    held_timer = 0;
    release_due(UINT64_MAX);          /* the senders hear now */
    send_gathered(0, NULL);
    free(gathering);
    gathering = NULL;
    gathered_cap = 0;
    free(held);
    held = NULL;
    held_head = nheld = held_cap = 0;
    free(mine);
    mine = NULL;
    nmine = mine_cap = 0;
}

/* push_record.c - which message ids this node pushed to which session, in
 * shared memory.
 *
 * A node never pushes one id twice to one session, whatever path the second
 * push comes by: a consumer's retry after MySQL failed (the first attempt
 * had pushed to this node's sessions at once, route.c), an order reclaimed
 * after a timeout, a session listed twice by a lookup (its own row, and the
 * stale row of a dead node whose push fell back to the store and from
 * there to this session), or stored messages handed to a session that has
 * them already.  The home worker's list of a session's unacknowledged
 * messages dies with the worker, so this record is in shared memory, where
 * a worker's replacement finds it.
 *
 * A push is QUEUED while it is in its worker's queue to the master: a
 * worker killed before that queue left takes the push with it, and its
 * replacement sends such a push again.  The master's reactor thread that
 * writes it to the browser's connection makes it SENT (gw_push_message
 * marks it, ws.c promotes it): the browser has it, or will, while its
 * connection lasts.  The master outlives its workers, so a worker killed
 * just after its queue left cannot leave a push the browser has as QUEUED.
 *
 * It holds the node's recent pushes, a bounded number: sets of
 * GW_PUSH_RECORD_WAYS words, one word an entry (a hash of session and id,
 * the second it was written at, the state), a set chosen by the hash.  A
 * new entry takes an empty word of its set or the oldest; so an entry lasts
 * until its set has seen GW_PUSH_RECORD_WAYS newer ones.  A word is written
 * and read whole (atomics), so no lock is needed, and a process killed
 * mid-write leaves the old entry or the new one.  Two processes writing the
 * same set at once may lose one entry: at worst a duplicate, which browsers
 * drop by id. */
#include "gateway.h"

#include "shm.h"

#include <stdatomic.h>
#include <string.h>
#include <time.h>

#define GW_PUSH_RECORD_WAYS 8          /* a set is one 64-byte cache line */
#define STATE_BITS 3
#define STATE_MASK ((UINT64_C(1) << STATE_BITS) - 1)
#define TIME_BITS 16
#define TIME_SHIFT STATE_BITS
#define HASH_SHIFT (STATE_BITS + TIME_BITS)
#define TIME_MASK ((UINT64_C(1) << TIME_BITS) - 1)

static _Atomic uint64_t *words;
static size_t nsets;

int gw_push_record_create(uint32_t slots)
{
    nsets = slots / GW_PUSH_RECORD_WAYS;
    if (nsets == 0)
        nsets = 1;
    words = pg_shm_alloc(nsets * GW_PUSH_RECORD_WAYS * sizeof(*words));
    return words ? 0 : -1;
}

void gw_push_record_destroy(void)
{
    if (words)
        pg_shm_free((void *)words, nsets * GW_PUSH_RECORD_WAYS * sizeof(*words));
    words = NULL;
}

/* FNV-1a over the id, then the session mixed in (splitmix64's finish). */
static uint64_t entry_hash(pg_session_id session, const char *id)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * UINT64_C(0x100000001b3);
    h ^= session + UINT64_C(0x9e3779b97f4a7c15) + (h << 6) + (h >> 2);
    h = (h ^ (h >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    h = (h ^ (h >> 27)) * UINT64_C(0x94d049bb133111eb);
    return h ^ (h >> 31);
}

static uint64_t now_tick(void)
{
    return (uint64_t)time(NULL) & TIME_MASK;
}

static _Atomic uint64_t *set_of(uint64_t h)
{
    return words + (h % nsets) * GW_PUSH_RECORD_WAYS;
}

static int same_entry(uint64_t word, uint64_t h)
{
    return (word & STATE_MASK) != GW_PUSH_NONE && (word >> HASH_SHIFT) == (h >> HASH_SHIFT);
}

uint64_t gw_push_record_key(pg_session_id session, const char *id)
{
    return entry_hash(session, id);
}

/* The word of key's entry, or NULL. */
static _Atomic uint64_t *find(uint64_t h)
{
    _Atomic uint64_t *set = set_of(h);
    for (int i = 0; i < GW_PUSH_RECORD_WAYS; i++)
        if (same_entry(atomic_load_explicit(&set[i], memory_order_acquire), h))
            return &set[i];
    return NULL;
}

int gw_push_record_get(pg_session_id session, const char *id)
{
    _Atomic uint64_t *w = find(entry_hash(session, id));
    return w ? (int)(atomic_load_explicit(w, memory_order_acquire) & STATE_MASK) : GW_PUSH_NONE;
}

static uint64_t make_word(uint64_t h, uint64_t now, int state)
{
    return (h >> HASH_SHIFT << HASH_SHIFT) | (now << TIME_SHIFT) | ((uint64_t)state & STATE_MASK);
}

void gw_push_record_set(pg_session_id session, const char *id, int state)
{
    gw_push_record_set_key(entry_hash(session, id), state);
}

void gw_push_record_set_key(uint64_t h, int state)
{
    uint64_t now = now_tick();
    _Atomic uint64_t *set = set_of(h);
    int pick = 0;
    uint64_t oldest_age = 0;
    for (int i = 0; i < GW_PUSH_RECORD_WAYS; i++) {
        uint64_t w = atomic_load_explicit(&set[i], memory_order_relaxed);
        if (same_entry(w, h)) {
            pick = i;
            break;
        }
        uint64_t age = (w & STATE_MASK) == GW_PUSH_NONE
                           ? TIME_MASK + 1 : (now - ((w >> TIME_SHIFT) & TIME_MASK)) & TIME_MASK;
        if (age >= oldest_age) {
            oldest_age = age;
            pick = i;
        }
    }
    atomic_store_explicit(&set[pick], make_word(h, now, state), memory_order_release);
}

void gw_push_record_promote(uint64_t key, int from, int to)
{
    _Atomic uint64_t *w = words ? find(key) : NULL;
    if (!w)
        return;
    uint64_t old = atomic_load_explicit(w, memory_order_acquire);
    if (same_entry(old, key) && (int)(old & STATE_MASK) == from)
        atomic_compare_exchange_strong(w, &old, make_word(key, (old >> TIME_SHIFT) & TIME_MASK, to));
}

void gw_push_header(char *out, uint64_t key)
{
    out[0] = GW_PUSH_MARK;
    memcpy(out + 1, &key, sizeof(key));
}

int gw_push_message(const char *msg, size_t len, uint64_t *key)
{
    if (len < GW_PUSH_HEADER || msg[0] != GW_PUSH_MARK)
        return 0;
    memcpy(key, msg + 1, sizeof(*key));
    return 1;
}

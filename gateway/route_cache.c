/* route_cache.c - where a uuid's browsers are on other nodes, in shared
 * memory, so that most work orders need no MySQL lookup.
 *
 * MySQL's online_clients stays the truth; this only saves asking it.  An
 * entry holds what a lookup answered for one uuid: its sessions on other
 * nodes (at most GW_ROUTE_TARGETS), or none.  It is exactly as good as a
 * lookup only while every change is heard of: each registration and
 * unregistration, anywhere, is announced on a Redis channel (route_feed.c),
 * and the announced uuid's entry is dropped.  So:
 *  - the cache is trusted only while the feed is known to work: it must
 *    have spoken (an announcement or its own heartbeat) within
 *    FEED_SILENCE_MS, and not have been lost since; otherwise every order is
 *    looked up in MySQL;
 *  - when the feed (re)connects, the epoch moves on, and every entry made
 *    before is a miss: announcements may have been lost meanwhile;
 *  - a lookup that ran while its uuid was announced must not be cached: a
 *    lookup takes a mark first (epoch, and the count of announcements), an
 *    announcement stamps its uuid's slot of `announced` (a hash of uuids,
 *    many to a slot), and the answer is cached only if its uuid's slot is
 *    not newer than the mark and the epoch is the same;
 *  - entries older than ENTRY_TTL_S are misses anyway: a backstop should an
 *    announcement be lost without the feed seeming silent.
 *
 * Layout: sets of WAYS ways, a set chosen by the uuid's hash; a new entry
 * takes an empty way of its set, or the one least recently used.  A way
 * names its entry in a pool, given out in order the first time the way is
 * used and its own from then on: the pages touched are those of the ways
 * ever used, not the whole capacity, which hashing would spread a few
 * thousand uuids over (8 MiB at the default size).  A process that took an
 * entry and lost the race for its way keeps it for its next empty way; the
 * pool has POOL_SPARE entries besides, for those kept so and for those of
 * processes that died between taking one and placing it.  Each
 * entry has a sequence lock: a writer makes its counter odd, writes, makes it
 * even again; a reader copies the entry and keeps the copy only if the
 * counter was even and unchanged.  Writers claim an entry by compare and
 * swap, so two never write one entry at once; a writer killed while writing
 * leaves the entry odd, and a later writer takes it over once that process
 * is gone (the entry names its writer). */
#include "gateway.h"

#include "route_note.h"
#include "shm.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WAYS 4
#define POOL_SPARE 1024        /* entries taken and not (yet) placed */
#define NODES_MAX 256
#define ANNOUNCED_SLOTS 4096
#define FEED_SILENCE_MS 1500
#define ENTRY_TTL_S 60

typedef struct {
    char ip[64];
    int32_t port;
} cache_node;

typedef struct {
    _Atomic uint32_t seq;          /* odd while written */
    _Atomic int32_t writer;        /* pid of the process writing it */
    uint32_t epoch;
    uint32_t used;                 /* seconds: last fill or hit */
    uint64_t key;                  /* hash of the uuid; 0: empty */
    uint8_t ntargets;              /* 0: no session on another node */
    uint8_t node[GW_ROUTE_TARGETS];
    char uuid[PG_UUID_MAX + 1];
    uint64_t session[GW_ROUTE_TARGETS];
} cache_entry;

typedef struct {
    _Atomic uint32_t epoch;
    _Atomic uint64_t announcements;
    _Atomic uint64_t feed_ms;      /* when the feed last spoke (CLOCK_MONOTONIC) */
    _Atomic uint32_t nnodes;
    _Atomic int nodes_lock;
    cache_node nodes[NODES_MAX];
    gw_route_cache_stats stats;
    _Atomic uint64_t announced[ANNOUNCED_SLOTS];
    _Atomic uint32_t pool_used;    /* entries given to ways so far */
} cache_header;

typedef struct {
    _Atomic uint32_t way[WAYS];    /* index + 1 of the way's entry in the pool; 0: none yet */
} cache_set;

_Static_assert(sizeof(cache_entry) == 128, "an entry is two cache lines");

static cache_header *head;
static cache_set *sets;
static cache_entry *pool;
static uint32_t pool_size;
static size_t nsets;
static size_t mapped;

int gw_route_cache_create(uint32_t capacity)
{
    if (capacity == 0)
        return 0;              /* no cache: every order is looked up */
    nsets = (capacity + WAYS - 1) / WAYS;
    pool_size = (uint32_t)(nsets * WAYS + POOL_SPARE);
    mapped = sizeof(cache_header) + nsets * sizeof(cache_set) + pool_size * sizeof(cache_entry);
    head = pg_shm_alloc(mapped);
    if (!head)
        return -1;
    sets = (cache_set *)(head + 1);
    pool = (cache_entry *)(sets + nsets);
    atomic_store(&head->epoch, 1);
    return 0;
}

void gw_route_cache_destroy(void)
{
    if (head)
        pg_shm_free(head, mapped);
    head = NULL;
    sets = NULL;
    pool = NULL;
}

/* Never 0, which marks an empty entry. */
static uint64_t uuid_hash(const char *uuid)
{
    return pg_route_uuid_hash(uuid, strlen(uuid));
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint32_t now_s(void)
{
    return (uint32_t)(mono_ms() / 1000);
}

static int trusted(void)
{
    return head && mono_ms() - atomic_load(&head->feed_ms) < FEED_SILENCE_MS;
}

/* ---- nodes: entries name them by index ---- */

static int node_find(const char *ip, int port)
{
    uint32_t n = atomic_load_explicit(&head->nnodes, memory_order_acquire);
    for (uint32_t i = 0; i < n; i++)
        if (head->nodes[i].port == port && strcmp(head->nodes[i].ip, ip) == 0)
            return (int)i;
    return -1;
}

/* The node's index, added if new; -1 when the table is full or busy. */
static int node_index(const char *ip, int port)
{
    int i = node_find(ip, port);
    if (i >= 0 || strlen(ip) >= sizeof(head->nodes[0].ip))
        return i;
    int unlocked = 0;
    if (!atomic_compare_exchange_strong(&head->nodes_lock, &unlocked, 1))
        return -1;             /* someone adds one now: not cached this time */
    uint32_t n = atomic_load(&head->nnodes);
    if ((i = node_find(ip, port)) < 0 && n < NODES_MAX) {
        snprintf(head->nodes[n].ip, sizeof(head->nodes[n].ip), "%s", ip);
        head->nodes[n].port = port;
        atomic_store_explicit(&head->nnodes, n + 1, memory_order_release);
        i = (int)n;
    }
    atomic_store(&head->nodes_lock, 0);
    return i;
}

/* ---- entries ---- */

static cache_set *set_of(uint64_t key)
{
    return &sets[key % nsets];
}

/* The way's entry; NULL while the way was never used. */
static cache_entry *way_entry(cache_set *set, int way)
{
    uint32_t v = atomic_load_explicit(&set->way[way], memory_order_acquire);
    return v ? &pool[v - 1] : NULL;
}

/* An entry for a way never used: the next of the pool's, unless another
 * process gave the way one first.  NULL when the pool is used up (only
 * processes that died between taking an entry and placing it do that). */
static cache_entry *way_give(cache_set *set, int way)
{
    static uint32_t spare;         /* index + 1 of an entry taken and not placed */
    static pid_t spare_owner;      /* a forked child does not inherit it */
    if (spare_owner != getpid())
        spare = 0;
    if (!spare) {
        uint32_t n = atomic_fetch_add(&head->pool_used, 1);
        if (n >= pool_size) {
            atomic_store(&head->pool_used, pool_size);   /* no wrap past it */
            return NULL;
        }
        spare = n + 1;
        spare_owner = getpid();
    }
    uint32_t expected = 0;
    if (atomic_compare_exchange_strong(&set->way[way], &expected, spare)) {
        cache_entry *e = &pool[spare - 1];
        spare = 0;
        return e;
    }
    return &pool[expected - 1];
}

/* A consistent copy of e, or 0 when it is being written. */
static int read_entry(cache_entry *e, cache_entry *copy)
{
    uint32_t before = atomic_load_explicit(&e->seq, memory_order_acquire);
    if (before & 1)
        return 0;
    memcpy((char *)copy + sizeof(copy->seq) + sizeof(copy->writer),
           (char *)e + sizeof(e->seq) + sizeof(e->writer),
           sizeof(*e) - sizeof(e->seq) - sizeof(e->writer));
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&e->seq, memory_order_relaxed) == before;
}

/* Claims e for writing (its counter made odd); 0 when another process
 * writes it.  A writer that died mid-write leaves it odd: taken over. */
static int claim(cache_entry *e)
{
    uint32_t seq = atomic_load(&e->seq);
    if (seq & 1) {
        pid_t w = atomic_load(&e->writer);
        if (w > 0 && (kill(w, 0) == 0 || errno != ESRCH))
            return 0;
        atomic_store(&e->writer, (int32_t)getpid());
        return 1;              /* stays odd: ours now */
    }
    if (!atomic_compare_exchange_strong(&e->seq, &seq, seq + 1))
        return 0;
    atomic_store(&e->writer, (int32_t)getpid());
    return 1;
}

static void release(cache_entry *e)
{
    atomic_fetch_add_explicit(&e->seq, 1, memory_order_release);
}

static int fresh(const cache_entry *e, uint32_t epoch, uint32_t now)
{
    return e->key && e->epoch == epoch && now - e->used < ENTRY_TTL_S;
}

int gw_route_cache_get(const char *uuid, gw_routes *out)
{
    if (!trusted())
        return 0;
    uint64_t key = uuid_hash(uuid);
    uint32_t epoch = atomic_load(&head->epoch), now = now_s();
    cache_set *set = set_of(key);
    for (int i = 0; i < WAYS; i++) {
        cache_entry copy, *e = way_entry(set, i);
        if (!e || e->key != key || !read_entry(e, &copy) || !fresh(&copy, epoch, now) ||
            copy.key != key || strcmp(copy.uuid, uuid) != 0)
            continue;
        out->n = copy.ntargets;
        for (int t = 0; t < copy.ntargets; t++) {
            const cache_node *node = &head->nodes[copy.node[t]];
            snprintf(out->t[t].ip, sizeof(out->t[t].ip), "%s", node->ip);
            out->t[t].port = node->port;
            out->t[t].session = copy.session[t];
        }
        atomic_fetch_add_explicit(&head->stats.hits, 1, memory_order_relaxed);
        return 1;
    }
    atomic_fetch_add_explicit(&head->stats.misses, 1, memory_order_relaxed);
    return 0;
}

gw_route_mark gw_route_cache_mark(void)
{
    if (!head)
        return (gw_route_mark){0};
    /* the epoch before the count: a flush in between only spoils the mark */
    uint32_t epoch = atomic_load(&head->epoch);
    return (gw_route_mark){.epoch = epoch, .announcements = atomic_load(&head->announcements),
                           .trusted = trusted()};
}

/* Where a new entry for key goes: its own, a way never used, or the least
 * recently used (a stale one first); NULL when none can be had. */
static cache_entry *place_for(uint64_t key, const char *uuid, uint32_t epoch, uint32_t now)
{
    cache_set *set = set_of(key);
    cache_entry *pick = NULL;
    uint32_t oldest = 0;
    for (int i = 0; i < WAYS; i++) {
        cache_entry *e = way_entry(set, i);
        if (!e) {              /* ways are used in order: none after it has key */
            if (pick && oldest == UINT32_MAX)
                return pick;   /* a stale entry does as well as a new one */
            cache_entry *given = way_give(set, i);
            if (given)
                return given;
            break;
        }
        if (e->key == key && strcmp(e->uuid, uuid) == 0)
            return e;
        uint32_t age = fresh(e, epoch, now) ? now - e->used : UINT32_MAX;
        if (!pick || age >= oldest) {
            oldest = age;
            pick = e;
        }
    }
    if (pick && oldest != UINT32_MAX)
        atomic_fetch_add_explicit(&head->stats.evictions, 1, memory_order_relaxed);
    return pick;
}

void gw_route_cache_put(const char *uuid, const gw_routes *routes, gw_route_mark mark)
{
    if (!head || !mark.trusted || routes->n > GW_ROUTE_TARGETS)
        return;
    uint64_t key = uuid_hash(uuid);
    uint8_t nodes[GW_ROUTE_TARGETS];
    for (int t = 0; t < routes->n; t++) {
        int i = node_index(routes->t[t].ip, routes->t[t].port);
        if (i < 0)
            return;
        nodes[t] = (uint8_t)i;
    }
    uint32_t now = now_s();
    cache_entry *e = place_for(key, uuid, mark.epoch, now);
    if (!e || !claim(e))
        return;
    /* Announced since the lookup began, or flushed: the answer may be stale. */
    if (atomic_load(&head->announced[key % ANNOUNCED_SLOTS]) > mark.announcements ||
        atomic_load(&head->epoch) != mark.epoch) {
        release(e);
        return;
    }
    e->key = key;
    e->epoch = mark.epoch;
    e->used = now;
    e->ntargets = (uint8_t)routes->n;
    memcpy(e->node, nodes, (size_t)routes->n);
    for (int t = 0; t < routes->n; t++)
        e->session[t] = routes->t[t].session;
    snprintf(e->uuid, sizeof(e->uuid), "%s", uuid);
    release(e);
    atomic_fetch_add_explicit(&head->stats.fills, 1, memory_order_relaxed);
}

void gw_route_cache_forget(const char *uuid)
{
    if (!head)
        return;
    uint64_t key = uuid_hash(uuid);
    /* stamped before the entry goes, so a lookup running now is not cached */
    uint64_t n = atomic_fetch_add(&head->announcements, 1) + 1;
    atomic_store(&head->announced[key % ANNOUNCED_SLOTS], n);
    atomic_fetch_add_explicit(&head->stats.invalidations, 1, memory_order_relaxed);
    cache_set *set = set_of(key);
    for (int i = 0; i < WAYS; i++) {
        cache_entry *e = way_entry(set, i);
        if (!e)
            break;
        /* a writer holds an entry for microseconds: wait for it, as its
         * check of `announced` may have come before the stamp above */
        int claimed = 0;
        for (int tries = 0; tries < 10000 && e->key == key && !(claimed = claim(e)); tries++)
            sched_yield();
        if (!claimed)
            continue;
        if (e->key == key && strcmp(e->uuid, uuid) == 0)
            e->key = 0;
        release(e);
    }
}

void gw_route_cache_flush(void)
{
    if (!head)
        return;
    atomic_fetch_add(&head->epoch, 1);
    atomic_fetch_add_explicit(&head->stats.flushes, 1, memory_order_relaxed);
}

void gw_route_cache_feed_alive(void)
{
    if (head)
        atomic_store(&head->feed_ms, mono_ms());
}

void gw_route_cache_feed_lost(void)
{
    if (head)
        atomic_store(&head->feed_ms, 0);
}

void gw_route_cache_stats_get(gw_route_cache_stats *out)
{
    if (!head) {
        *out = (gw_route_cache_stats){0};
        return;
    }
    out->hits = atomic_load(&head->stats.hits);
    out->misses = atomic_load(&head->stats.misses);
    out->fills = atomic_load(&head->stats.fills);
    out->invalidations = atomic_load(&head->stats.invalidations);
    out->evictions = atomic_load(&head->stats.evictions);
    out->flushes = atomic_load(&head->stats.flushes);
    out->trusted = trusted();
}

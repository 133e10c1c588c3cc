/* shm_table.c - fixed-size hash table in one shared mapping (Swoole\Table's idea).
 *
 * Layout of the one mapping made by pg_table_create (before fork):
 *
 *   struct shared_hdr   pool lock, pool free list, pool bump index, row count
 *   slot[nb]            nb = next power of two >= capacity.  A slot is a bucket
 *                       (robust process-shared mutex + chain head) followed by the
 *                       bucket's "home" row, padded to whole cache lines
 *   pool[capacity]      overflow rows for keys whose home row is taken
 *
 * A row is a struct row_hdr (chain link, hash, key) followed by the value buffer.
 * Rows are named by a 32-bit index (i < nb: home row of slot i; otherwise pool
 * row i - nb), never by pointer.  Home row b is only ever used by bucket b, and
 * when it is on b's chain it is at the head; it is "free" exactly when it is not
 * on the chain, so there is no flag to get out of step.  Keeping a bucket's lock
 * and its first row in the same few cache lines of the same page matters: with
 * a million rows, every operation is a cache and TLB miss, and this makes most
 * of them one round trip to memory instead of two dependent ones.
 *
 * Locking: a chain and the rows on it are read and written under the bucket
 * lock; the pool free list under the pool lock; order is always bucket -> pool.
 * The row count is an atomic, reserved (compare-and-swap below capacity) before
 * a row is added, so the table holds exactly `capacity` rows, however they hash.
 *
 * Crash safety: a process killed while holding a lock leaves it to the next
 * locker with EOWNERDEAD, which marks it consistent and goes on.  Chains are
 * consistent at every instant: a new row is filled in completely before one
 * store links it, and unlinking is one store.  What a killed process can leave
 * behind is a half-copied value buffer of the row it was writing, or one unit of
 * count / one pool row lost if it died between reserving and linking, or between
 * unlinking and releasing.
 */
#include "shm_table.h"
#include "shm.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define NIL UINT32_MAX
#define COL_NAME_MAX 63
#define MAX_CAPACITY (1u << 30)
#define MAX_STRING_SIZE (1u << 20)
#define MAX_ROW_SIZE (1u << 24)
#define CACHE_LINE 64

struct col {
    char name[COL_NAME_MAX + 1];
    pg_table_type type;
    uint32_t size;   /* STRING: max bytes */
    size_t offset;   /* in the value buffer */
};

struct shared_hdr {
    pthread_mutex_t pool_lock;
    uint32_t free_head;    /* recycled pool rows (pool numbering), linked by next */
    uint32_t next_unused;  /* pool rows [next_unused, capacity) never used yet */
    char pad[CACHE_LINE];  /* keep count off the pool lock's line */
    _Atomic uint32_t count;
};

struct slot_hdr {
    pthread_mutex_t lock;
    uint32_t head;         /* first row of the chain, or NIL */
};

struct row_hdr {
    uint32_t next;
    uint32_t hash;         /* high 32 bits of the key's hash */
    uint8_t keylen;
    char key[PG_TABLE_KEY_MAX + 1];  /* NUL-terminated */
};

#define ROUND8(x) (((x) + 7) & ~(size_t)7)
#define ROW_VALUES_OFF ROUND8(sizeof(struct row_hdr))
#define HOME_OFF ROUND8(sizeof(struct slot_hdr))

struct pg_table {
    uint32_t capacity;
    uint32_t nb;           /* slots (buckets), a power of two */
    uint32_t nrows;        /* nb + capacity: row indexes are below this */
    struct col *cols;
    int ncols;
    size_t row_size;       /* value buffer bytes, multiple of 8 */
    size_t slot_size;      /* bytes per slot, multiple of CACHE_LINE */
    size_t stride;         /* bytes per pool row */
    void *mem;
    size_t mem_size;
    struct shared_hdr *hdr;
    char *slots;
    char *pool;
};

/* ---------------------------------------------------------------- helpers */

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

/* murmur3-style 64-bit hash, 8 bytes at a time. */
static uint64_t hash_key(const char *key, size_t len)
{
    const uint64_t c1 = 0x87c37b91114253d5ULL, c2 = 0x4cf5ad432745937fULL;
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (len * c1);
    const unsigned char *p = (const unsigned char *)key;
    size_t n = len;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w *= c1;
        w = rotl64(w, 31);
        w *= c2;
        h ^= w;
        h = rotl64(h, 27) * 5 + 0x52dce729;
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, p, n);
        w *= c1;
        w = rotl64(w, 31);
        w *= c2;
        h ^= w;
    }
    return fmix64(h);
}

/* Length of a valid key, or 0 (NULL, empty, longer than PG_TABLE_KEY_MAX). */
static inline size_t key_len(const char *key)
{
    if (key == NULL)
        return 0;
    size_t len = strnlen(key, PG_TABLE_KEY_MAX + 1);
    return len > PG_TABLE_KEY_MAX ? 0 : len;
}

static int lock(pthread_mutex_t *m)
{
    int r = pthread_mutex_lock(m);
    if (r == 0)
        return 0;
    if (r == EOWNERDEAD) {
        /* The owner died; the structures are consistent at every store (see
         * the top of the file), so take over. */
        pthread_mutex_consistent(m);
        return 0;
    }
    return -1;
}

static inline void unlock(pthread_mutex_t *m) { pthread_mutex_unlock(m); }

static inline struct slot_hdr *slot_at(const pg_table *t, uint32_t b)
{
    return (struct slot_hdr *)(t->slots + (size_t)b * t->slot_size);
}

static inline struct row_hdr *row_at(const pg_table *t, uint32_t i)
{
    if (i < t->nb)
        return (struct row_hdr *)((char *)slot_at(t, i) + HOME_OFF);
    return (struct row_hdr *)(t->pool + (size_t)(i - t->nb) * t->stride);
}

static inline char *row_values(struct row_hdr *r) { return (char *)r + ROW_VALUES_OFF; }

static inline int ready(const pg_table *t) { return t != NULL && t->hdr != NULL; }

static inline const struct col *col_of(const pg_table *t, int col, pg_table_type type)
{
    if (t == NULL || col < 0 || col >= t->ncols || t->cols[col].type != type)
        return NULL;
    return &t->cols[col];
}

/* Where a key lives: its slot, bucket number and 32-bit hash tag. */
struct loc {
    struct slot_hdr *slot;
    uint32_t b;
    uint32_t h;
    size_t len;
};

static inline int locate(const pg_table *t, const char *key, struct loc *l)
{
    l->len = key_len(key);
    if (!ready(t) || l->len == 0)
        return -1;
    uint64_t h64 = hash_key(key, l->len);
    l->h = (uint32_t)(h64 >> 32);
    l->b = (uint32_t)(h64 & (t->nb - 1));
    l->slot = slot_at(t, l->b);
    /* Fetch the home row's lines while the lock's line is being fetched. */
    const char *p = (const char *)l->slot;
    size_t n = t->slot_size < 4 * CACHE_LINE ? t->slot_size : 4 * CACHE_LINE;
    for (size_t off = CACHE_LINE; off < n; off += CACHE_LINE)
        __builtin_prefetch(p + off, 1, 3);
    return 0;
}

/* Find the key in l's bucket (locked). Returns the link that points at its row
 * (the head or the previous row's next), or NULL; *home_used tells whether the
 * home row is on the chain (only computed when the key is missing). */
static uint32_t *find(const pg_table *t, const struct loc *l, const char *key, int *home_used)
{
    uint32_t *link = &l->slot->head;
    uint32_t i = *link;
    int home = 0;
    while (i < t->nrows) {
        struct row_hdr *r = row_at(t, i);
        if (i >= t->nb) {
            /* A pool row: ask for its key and value lines along with the first. */
            __builtin_prefetch((char *)r + CACHE_LINE, 1, 3);
            __builtin_prefetch((char *)r + 2 * CACHE_LINE, 1, 3);
        }
        if (r->hash == l->h && r->keylen == l->len && memcmp(r->key, key, l->len) == 0)
            return link;
        home |= i == l->b;
        link = &r->next;
        i = *link;
    }
    if (home_used)
        *home_used = home;
    return NULL;
}

/* Pool rows are numbered 0..capacity-1 here; row index = nb + pool number. */
static uint32_t pool_get(pg_table *t)
{
    struct shared_hdr *hd = t->hdr;
    uint32_t i = NIL;
    if (lock(&hd->pool_lock) != 0)
        return NIL;
    if (hd->free_head < t->capacity) {
        i = hd->free_head;
        hd->free_head = row_at(t, t->nb + i)->next;
    } else if (hd->next_unused < t->capacity) {
        i = hd->next_unused++;
    }
    unlock(&hd->pool_lock);
    return i == NIL ? NIL : t->nb + i;
}

static void pool_put(pg_table *t, uint32_t row)
{
    struct shared_hdr *hd = t->hdr;
    if (lock(&hd->pool_lock) != 0)
        return;
    row_at(t, row)->next = hd->free_head;
    __atomic_store_n(&hd->free_head, row - t->nb, __ATOMIC_RELEASE);
    unlock(&hd->pool_lock);
}

static int reserve_count(pg_table *t)
{
    uint32_t c = atomic_load_explicit(&t->hdr->count, memory_order_relaxed);
    do {
        if (c >= t->capacity)
            return -1;
    } while (!atomic_compare_exchange_weak_explicit(&t->hdr->count, &c, c + 1,
                                                    memory_order_relaxed,
                                                    memory_order_relaxed));
    return 0;
}

/* With the bucket locked and the key missing: take a row (the home row if it
 * is free), fill key and values (values NULL: zeroed) and link it.  The row, or
 * NULL when the table is full. */
static struct row_hdr *insert(pg_table *t, const struct loc *l, const char *key,
                              int home_used, const void *values)
{
    if (reserve_count(t) != 0)
        return NULL;
    uint32_t i = l->b;
    if (home_used && (i = pool_get(t)) == NIL) {
        /* Cannot happen while count <= capacity, unless a killed process lost
         * pool rows. */
        atomic_fetch_sub_explicit(&t->hdr->count, 1, memory_order_relaxed);
        return NULL;
    }
    struct row_hdr *r = row_at(t, i);
    r->hash = l->h;
    r->keylen = (uint8_t)l->len;
    memcpy(r->key, key, l->len);
    r->key[l->len] = '\0';
    if (t->row_size) {
        if (values)
            memcpy(row_values(r), values, t->row_size);
        else
            memset(row_values(r), 0, t->row_size);
    }
    /* Home row first on the chain; an overflow row goes right after it. */
    uint32_t *link = &l->slot->head;
    if (i != l->b && *link == l->b)
        link = &row_at(t, l->b)->next;
    r->next = *link;
    /* The row is complete before it becomes reachable (crash safety): a
     * release store keeps the compiler and CPU from making it visible early. */
    __atomic_store_n(link, i, __ATOMIC_RELEASE);
    return r;
}

/* ------------------------------------------------------------ definition */

pg_table *pg_table_new(uint32_t capacity)
{
    if (capacity == 0 || capacity > MAX_CAPACITY)
        return NULL;
    pg_table *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->capacity = capacity;
    return t;
}

int pg_table_column(pg_table *t, const char *name, pg_table_type type, uint32_t size)
{
    if (t == NULL || t->hdr != NULL || name == NULL)
        return -1;
    size_t nlen = strnlen(name, COL_NAME_MAX + 1);
    if (nlen == 0 || nlen > COL_NAME_MAX)
        return -1;
    if (pg_table_column_index(t, name) >= 0)
        return -1;
    size_t bytes;
    switch (type) {
    case PG_TABLE_INT:
    case PG_TABLE_FLOAT:
        bytes = 8;
        break;
    case PG_TABLE_STRING:
        if (size == 0 || size > MAX_STRING_SIZE)
            return -1;
        bytes = sizeof(uint32_t) + (size_t)size;
        break;
    default:
        return -1;
    }
    bytes = ROUND8(bytes);
    if (t->row_size + bytes > MAX_ROW_SIZE || t->ncols >= 4096)
        return -1;
    struct col *cols = realloc(t->cols, (size_t)(t->ncols + 1) * sizeof *cols);
    if (cols == NULL)
        return -1;
    t->cols = cols;
    struct col *c = &cols[t->ncols];
    memset(c, 0, sizeof *c);
    memcpy(c->name, name, nlen);
    c->type = type;
    c->size = type == PG_TABLE_STRING ? size : 8;
    c->offset = t->row_size;
    t->row_size += bytes;
    return t->ncols++;
}

int pg_table_create(pg_table *t)
{
    if (t == NULL || t->hdr != NULL)
        return -1;
    uint32_t nb = 1;
    while (nb < t->capacity)
        nb <<= 1;
    size_t row_bytes = ROW_VALUES_OFF + t->row_size;
    size_t slot_size = (HOME_OFF + row_bytes + CACHE_LINE - 1) & ~(size_t)(CACHE_LINE - 1);
    size_t stride = ROUND8(row_bytes);
    size_t hdr_size = (sizeof(struct shared_hdr) + CACHE_LINE - 1) & ~(size_t)(CACHE_LINE - 1);
    /* The limits on capacity and row size keep these far from overflowing on a
     * 64-bit system; on a 32-bit one, check. */
    if ((size_t)nb > (SIZE_MAX / 4) / slot_size || (size_t)t->capacity > (SIZE_MAX / 4) / stride)
        return -1;
    size_t slots_size = (size_t)nb * slot_size;
    size_t total = hdr_size + slots_size + (size_t)t->capacity * stride;

    /* Pool pages are not touched until rows are taken from them. */
    char *mem = pg_shm_alloc(total);
    if (mem == NULL)
        return -1;

    pthread_mutexattr_t attr;
    if (pthread_mutexattr_init(&attr) != 0)
        goto fail;
    if (pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED) != 0 ||
        pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST) != 0) {
        pthread_mutexattr_destroy(&attr);
        goto fail;
    }
    struct shared_hdr *hd = (struct shared_hdr *)mem;
    char *slots = mem + hdr_size;
    int ok = pthread_mutex_init(&hd->pool_lock, &attr) == 0;
    for (uint32_t i = 0; ok && i < nb; i++) {
        struct slot_hdr *s = (struct slot_hdr *)(slots + (size_t)i * slot_size);
        ok = pthread_mutex_init(&s->lock, &attr) == 0;
        s->head = NIL;
    }
    pthread_mutexattr_destroy(&attr);
    if (!ok)
        goto fail;
    hd->free_head = NIL;
    hd->next_unused = 0;
    atomic_init(&hd->count, 0);

    t->nb = nb;
    t->nrows = nb + t->capacity;
    t->slot_size = slot_size;
    t->stride = stride;
    t->mem = mem;
    t->mem_size = total;
    t->slots = slots;
    t->pool = slots + slots_size;
    t->hdr = hd;
    return 0;
fail:
    pg_shm_free(mem, total);
    return -1;
}

void pg_table_destroy(pg_table *t)
{
    if (t == NULL)
        return;
    if (t->mem)
        pg_shm_free(t->mem, t->mem_size);
    free(t->cols);
    free(t);
}

int pg_table_column_index(const pg_table *t, const char *name)
{
    if (t == NULL || name == NULL)
        return -1;
    for (int i = 0; i < t->ncols; i++)
        if (strcmp(t->cols[i].name, name) == 0)
            return i;
    return -1;
}

uint32_t pg_table_capacity(const pg_table *t) { return t ? t->capacity : 0; }

uint32_t pg_table_count(const pg_table *t)
{
    if (!ready(t))
        return 0;
    return atomic_load_explicit(&t->hdr->count, memory_order_relaxed);
}

size_t pg_table_row_size(const pg_table *t) { return t ? t->row_size : 0; }

/* ------------------------------------------------------------- row buffers */

void pg_table_row_set_int(const pg_table *t, void *row, int col, int64_t value)
{
    const struct col *c = col_of(t, col, PG_TABLE_INT);
    if (c && row)
        memcpy((char *)row + c->offset, &value, sizeof value);
}

void pg_table_row_set_float(const pg_table *t, void *row, int col, double value)
{
    const struct col *c = col_of(t, col, PG_TABLE_FLOAT);
    if (c && row)
        memcpy((char *)row + c->offset, &value, sizeof value);
}

size_t pg_table_row_set_string(const pg_table *t, void *row, int col, const char *s, size_t len)
{
    const struct col *c = col_of(t, col, PG_TABLE_STRING);
    if (c == NULL || row == NULL)
        return 0;
    if (s == NULL)
        len = 0;
    if (len > c->size)
        len = c->size;
    char *p = (char *)row + c->offset;
    uint32_t l32 = (uint32_t)len;
    memcpy(p, &l32, sizeof l32);
    if (len)
        memcpy(p + sizeof l32, s, len);
    if (len < c->size)
        memset(p + sizeof l32 + len, 0, c->size - len);
    return len;
}

int64_t pg_table_row_get_int(const pg_table *t, const void *row, int col)
{
    const struct col *c = col_of(t, col, PG_TABLE_INT);
    int64_t v = 0;
    if (c && row)
        memcpy(&v, (const char *)row + c->offset, sizeof v);
    return v;
}

double pg_table_row_get_float(const pg_table *t, const void *row, int col)
{
    const struct col *c = col_of(t, col, PG_TABLE_FLOAT);
    double v = 0;
    if (c && row)
        memcpy(&v, (const char *)row + c->offset, sizeof v);
    return v;
}

const char *pg_table_row_get_string(const pg_table *t, const void *row, int col, size_t *len)
{
    const struct col *c = col_of(t, col, PG_TABLE_STRING);
    if (c == NULL || row == NULL) {
        if (len)
            *len = 0;
        return NULL;
    }
    const char *p = (const char *)row + c->offset;
    uint32_t l32;
    memcpy(&l32, p, sizeof l32);
    if (l32 > c->size)
        l32 = c->size;
    if (len)
        *len = l32;
    return p + sizeof l32;
}

/* ------------------------------------------------------------- operations */

int pg_table_set(pg_table *t, const char *key, const void *row)
{
    struct loc l;
    if (locate(t, key, &l) != 0 || (row == NULL && t->row_size))
        return -1;
    if (lock(&l.slot->lock) != 0)
        return -1;
    int rc = 0, home_used;
    uint32_t *link = find(t, &l, key, &home_used);
    if (link) {
        if (t->row_size)
            memcpy(row_values(row_at(t, *link)), row, t->row_size);
    } else if (insert(t, &l, key, home_used, row) == NULL) {
        rc = -1;
    }
    unlock(&l.slot->lock);
    return rc;
}

int pg_table_get(pg_table *t, const char *key, void *row)
{
    struct loc l;
    if (locate(t, key, &l) != 0)
        return -1;
    if (lock(&l.slot->lock) != 0)
        return -1;
    uint32_t *link = find(t, &l, key, NULL);
    if (link && row && t->row_size)
        memcpy(row, row_values(row_at(t, *link)), t->row_size);
    unlock(&l.slot->lock);
    return link ? 0 : -1;
}

/* Lock key's bucket and find or create (zeroed) its row.  The row, with the
 * bucket locked (*lp), or NULL with nothing locked. */
static struct row_hdr *find_or_create(pg_table *t, const char *key, struct loc *l)
{
    if (locate(t, key, l) != 0)
        return NULL;
    if (lock(&l->slot->lock) != 0)
        return NULL;
    int home_used;
    uint32_t *link = find(t, l, key, &home_used);
    struct row_hdr *r = link ? row_at(t, *link) : insert(t, l, key, home_used, NULL);
    if (r == NULL)
        unlock(&l->slot->lock);
    return r;
}

int pg_table_incr(pg_table *t, const char *key, int col, int64_t by, int64_t *result)
{
    const struct col *c = col_of(t, col, PG_TABLE_INT);
    if (c == NULL)
        return -1;
    struct loc l;
    struct row_hdr *r = find_or_create(t, key, &l);
    if (r == NULL)
        return -1;
    char *p = row_values(r) + c->offset;
    uint64_t v;
    memcpy(&v, p, sizeof v);
    v += (uint64_t)by; /* wraps instead of signed overflow */
    memcpy(p, &v, sizeof v);
    unlock(&l.slot->lock);
    if (result)
        *result = (int64_t)v;
    return 0;
}

int pg_table_incr_float(pg_table *t, const char *key, int col, double by, double *result)
{
    const struct col *c = col_of(t, col, PG_TABLE_FLOAT);
    if (c == NULL)
        return -1;
    struct loc l;
    struct row_hdr *r = find_or_create(t, key, &l);
    if (r == NULL)
        return -1;
    char *p = row_values(r) + c->offset;
    double v;
    memcpy(&v, p, sizeof v);
    v += by;
    memcpy(p, &v, sizeof v);
    unlock(&l.slot->lock);
    if (result)
        *result = v;
    return 0;
}

/* With the bucket locked: take the row link points at off its chain.  One
 * store, so the chain stays whole.  The row's index, for release_row. */
static uint32_t unlink_row(pg_table *t, uint32_t *link)
{
    uint32_t i = *link;
    __atomic_store_n(link, row_at(t, i)->next, __ATOMIC_RELAXED);
    return i;
}

/* After the bucket is unlocked: the unlinked row is unreachable, so it goes
 * back to the pool without the bucket lock. */
static void release_row(pg_table *t, uint32_t i)
{
    if (i >= t->nb)
        pool_put(t, i);
    atomic_fetch_sub_explicit(&t->hdr->count, 1, memory_order_relaxed);
}

int pg_table_del(pg_table *t, const char *key)
{
    struct loc l;
    if (locate(t, key, &l) != 0)
        return -1;
    if (lock(&l.slot->lock) != 0)
        return -1;
    uint32_t *link = find(t, &l, key, NULL);
    uint32_t i = link ? unlink_row(t, link) : NIL;
    unlock(&l.slot->lock);
    if (i == NIL)
        return -1;
    release_row(t, i);
    return 0;
}

int pg_table_update(pg_table *t, const char *key, pg_table_update_fn fn, void *arg)
{
    struct loc l;
    if (fn == NULL || locate(t, key, &l) != 0)
        return -1;
    if (lock(&l.slot->lock) != 0)
        return -1;
    int home_used;
    uint32_t *link = find(t, &l, key, &home_used);
    int found = link != NULL;
    struct row_hdr *r = found ? row_at(t, *link) : insert(t, &l, key, home_used, NULL);
    if (r == NULL) {
        unlock(&l.slot->lock);
        return -1;
    }
    pg_table_verdict verdict = fn(row_values(r), found, arg);
    uint32_t i = NIL;
    if (verdict == PG_TABLE_DELETE)
        i = unlink_row(t, found ? link : find(t, &l, key, NULL));
    unlock(&l.slot->lock);
    if (i != NIL)
        release_row(t, i);
    return (int)verdict;
}

void pg_table_iterate(pg_table *t, pg_table_iter_fn fn, void *arg)
{
    if (!ready(t) || fn == NULL)
        return;
    /* Copies: key (PG_TABLE_KEY_MAX + 1 bytes) then the value buffer. */
    const size_t ent = PG_TABLE_KEY_MAX + 1 + t->row_size;
    char *buf = NULL;
    size_t cap = 0; /* entries buf can hold */
    for (uint32_t b = 0; b < t->nb; b++) {
        struct slot_hdr *s = slot_at(t, b);
        /* Cheap unlocked peek to skip empty buckets; a row added meanwhile may
         * or may not be seen, as with any concurrent change. */
        if (__atomic_load_n(&s->head, __ATOMIC_RELAXED) == NIL)
            continue;
        if (lock(&s->lock) != 0)
            continue;
        size_t n = 0;
        for (uint32_t i = s->head; i < t->nrows; i = row_at(t, i)->next)
            n++;
        if (n > cap) {
            /* Grow outside the lock, then look at the chain again. */
            unlock(&s->lock);
            size_t ncap = cap ? cap : 8;
            while (ncap < n)
                ncap *= 2;
            char *nbuf = realloc(buf, ncap * ent);
            if (nbuf == NULL)
                break;
            buf = nbuf;
            cap = ncap;
            b--; /* redo this bucket (unsigned: wraps back to 0 at b++) */
            continue;
        }
        n = 0;
        for (uint32_t i = s->head; i < t->nrows; i = row_at(t, i)->next) {
            struct row_hdr *r = row_at(t, i);
            char *e = buf + n * ent;
            memcpy(e, r->key, PG_TABLE_KEY_MAX + 1);
            if (t->row_size)
                memcpy(e + PG_TABLE_KEY_MAX + 1, row_values(r), t->row_size);
            n++;
        }
        unlock(&s->lock);
        for (size_t k = 0; k < n; k++) {
            char *e = buf + k * ent;
            if (fn(e, e + PG_TABLE_KEY_MAX + 1, arg) != 0) {
                free(buf);
                return;
            }
        }
    }
    free(buf);
}

/* Test hook, not part of the public API: lock the bucket of key and keep it
 * locked (so a test can kill the process while it holds the lock). */
int pg_table__test_lock_key(pg_table *t, const char *key);
int pg_table__test_lock_key(pg_table *t, const char *key)
{
    struct loc l;
    if (locate(t, key, &l) != 0)
        return -1;
    return lock(&l.slot->lock);
}

/* idmap.c - a hash map from 64-bit ids to pointers (see idmap.h).
 *
 * Design notes
 *  - Open addressing over a power-of-two array of {id, value} slots, linear
 *    probing, id 0 marks an empty slot.
 *  - Ids are mostly sequential (session ids, timer ids), so the home slot
 *    comes from the splitmix64 finalizer, which spreads consecutive ids over
 *    the whole table.
 *  - The table doubles (rehash) before an insert would take the load above
 *    70 %.  Replacing an existing id never allocates.
 *  - Removal shifts the following entries of the probe run back (no
 *    tombstones), so lookups stay short however many removes happen.
 *  - initial_capacity is the number of entries expected: that many fit
 *    without growing. */
#include "idmap.h"

#include <stdlib.h>

typedef struct {
    uint64_t id;
    void *value;
} slot;

struct pg_idmap {
    slot *slots;
    size_t mask;    /* capacity - 1 */
    size_t count;
};

#define MIN_CAPACITY 8

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 31;
    return x;
}

static inline size_t home(const pg_idmap *m, uint64_t id)
{
    return (size_t)mix64(id) & m->mask;
}

/* true when count entries fit in capacity under the 70 % load limit */
static inline int fits(size_t count, size_t capacity)
{
    return count <= capacity / 10 * 7 + capacity % 10 * 7 / 10;
}

pg_idmap *pg_idmap_new(size_t initial_capacity)
{
    size_t cap = MIN_CAPACITY;
    while (!fits(initial_capacity, cap)) {
        if (cap > ((size_t)-1 >> 2) / sizeof(slot))
            return NULL;
        cap <<= 1;
    }
    pg_idmap *m = malloc(sizeof(*m));
    if (m == NULL)
        return NULL;
    m->slots = calloc(cap, sizeof(slot));
    if (m->slots == NULL) {
        free(m);
        return NULL;
    }
    m->mask = cap - 1;
    m->count = 0;
    return m;
}

void pg_idmap_free(pg_idmap *m)
{
    if (m == NULL)
        return;
    free(m->slots);
    free(m);
}

/* Index of id's slot, or of the empty slot where it would go. */
static inline size_t find(const pg_idmap *m, uint64_t id)
{
    size_t i = home(m, id);
    for (;;) {
        uint64_t k = m->slots[i].id;
        if (k == id || k == 0)
            return i;
        i = (i + 1) & m->mask;
    }
}

static int grow(pg_idmap *m)
{
    size_t old_cap = m->mask + 1;
    if (old_cap > ((size_t)-1 >> 2) / sizeof(slot))
        return -1;
    size_t cap = old_cap << 1;
    slot *fresh = calloc(cap, sizeof(slot));
    if (fresh == NULL)
        return -1;
    slot *old = m->slots;
    m->slots = fresh;
    m->mask = cap - 1;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].id != 0)
            m->slots[find(m, old[i].id)] = old[i];
    }
    free(old);
    return 0;
}

int pg_idmap_put(pg_idmap *m, uint64_t id, void *value)
{
    if (m == NULL || id == 0 || value == NULL)
        return -1;
    size_t i = find(m, id);
    if (m->slots[i].id == id) {
        m->slots[i].value = value;
        return 0;
    }
    if (!fits(m->count + 1, m->mask + 1)) {
        if (grow(m) != 0)
            return -1;
        i = find(m, id);
    }
    m->slots[i].id = id;
    m->slots[i].value = value;
    m->count++;
    return 0;
}

void *pg_idmap_get(const pg_idmap *m, uint64_t id)
{
    if (m == NULL || id == 0)
        return NULL;
    const slot *s = &m->slots[find(m, id)];
    return s->id == id ? s->value : NULL;
}

void *pg_idmap_remove(pg_idmap *m, uint64_t id)
{
    if (m == NULL || id == 0)
        return NULL;
    size_t i = find(m, id);
    if (m->slots[i].id != id)
        return NULL;
    void *value = m->slots[i].value;

    /* Backward shift: move each later entry of the run whose home is not in
     * the cyclic range (i, j] into the hole at i. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & m->mask;
        uint64_t k = m->slots[j].id;
        if (k == 0)
            break;
        size_t h = home(m, k);
        /* distance from home to j vs. from i to j, both cyclic */
        if (((j - h) & m->mask) >= ((j - i) & m->mask)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].id = 0;
    m->slots[i].value = NULL;
    m->count--;
    return value;
}

size_t pg_idmap_drop_below(pg_idmap *m, uint64_t below, void (*drop)(void *value))
{
    size_t dropped = 0, before;
    do {
        /* A removal shifts later entries back, around the end of the table
         * too, so a pass can miss one: passes until one drops nothing. */
        before = dropped;
        for (size_t i = 0; m != NULL && i <= m->mask;) {
            uint64_t id = m->slots[i].id;
            if (id == 0 || id >= below) {
                i++;
                continue;
            }
            void *value = pg_idmap_remove(m, id);
            if (drop)
                drop(value);
            dropped++;   /* slot i now holds a shifted entry, or none: look again */
        }
    } while (dropped != before);
    return dropped;
}

size_t pg_idmap_count(const pg_idmap *m)
{
    return m == NULL ? 0 : m->count;
}

void pg_idmap_iterate(const pg_idmap *m, pg_idmap_iter_fn fn, void *arg)
{
    if (m == NULL || fn == NULL)
        return;
    for (size_t i = 0; i <= m->mask; i++) {
        if (m->slots[i].id != 0 && fn(m->slots[i].id, m->slots[i].value, arg) != 0)
            return;
    }
}

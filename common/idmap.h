/* idmap.h - a hash map from 64-bit ids to pointers.
 *
 * Open addressing with linear probing and backward-shift deletion (no
 * tombstones), so a reactor thread can map session ids to its connections and
 * a process can map timer ids to timers in O(1) without locks: a map belongs
 * to one thread.  Id 0 is reserved (it marks empty slots). */
#ifndef PG_IDMAP_H
#define PG_IDMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct pg_idmap pg_idmap;

pg_idmap *pg_idmap_new(size_t initial_capacity);
void pg_idmap_free(pg_idmap *m);
/* Insert or replace. 0, or -1 (id 0, value NULL, or no memory). */
int pg_idmap_put(pg_idmap *m, uint64_t id, void *value);
/* The value, or NULL. */
void *pg_idmap_get(const pg_idmap *m, uint64_t id);
/* Removes and returns the value, or NULL when absent. */
void *pg_idmap_remove(pg_idmap *m, uint64_t id);
size_t pg_idmap_count(const pg_idmap *m);
/* Removes every entry whose id is below `below`, passing each value to drop
 * (may be NULL).  Returns how many.  For ids handed out in increasing
 * order, "below" means "older than": a sweep of requests never answered. */
size_t pg_idmap_drop_below(pg_idmap *m, uint64_t below, void (*drop)(void *value));
/* Calls fn for every entry; fn must not change the map. Non-zero stops. */
typedef int (*pg_idmap_iter_fn)(uint64_t id, void *value, void *arg);
void pg_idmap_iterate(const pg_idmap *m, pg_idmap_iter_fn fn, void *arg);

#endif

/* memory.h - the allocator: how it is set up, and giving freed memory back.
 *
 * Release builds link jemalloc (as Redis does): the workers' JSON trees are
 * many small blocks made and freed per message, and jemalloc's per-size
 * slabs and thread cache cost less CPU for that than glibc's bins.  Test
 * builds keep glibc's interface under the sanitizers' allocator. */
#ifndef PG_MEMORY_H
#define PG_MEMORY_H

#include <stddef.h>

/* Allocator settings for this process; call once, early.  A program that
 * calls it also links in jemalloc's settings (malloc_conf, memory.c). */
void pg_memory_init(void);

/* Freed pages stay up to ms before they go back to the kernel (the default
 * is at once).  Returning a page costs a system call and a TLB flush, and a
 * process that frees a little on every message pays them all the time
 * (the consumer: a tenth of its CPU at its highest rate); one whose memory
 * must follow its load (a gateway) keeps the default.  0, or -1 when the
 * allocator refused (logged; freed pages then go back at once). */
int pg_memory_keep_freed(long ms);

/* Return the heap that a burst of work freed (a slow browser's backlog, a
 * big task) to the kernel instead of keeping it for later. */
void pg_memory_trim(void);

/* Room for one more element in the array *array_ptr points to (a T **
 * given as void *), n of its *cap elements of size bytes in use: the
 * array doubles (to 16 at first) when it is full.  0, or -1 when out of
 * memory (the array is as it was). */
int pg_grow(void *array_ptr, size_t *cap, size_t n, size_t size);

/* "jemalloc 5.3.0-..." or "glibc malloc", for the start log line. */
const char *pg_memory_allocator(void);

#endif

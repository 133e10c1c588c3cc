/* memory.c - allocator settings for jemalloc (release builds, PG_JEMALLOC)
 * and for glibc's malloc (test builds).
 *
 * jemalloc: one arena, since a worker or task worker has one thread and a
 * master's reactor threads allocate little; freed pages go back to the
 * kernel at once (no decay), so a node's memory follows its connections and
 * a slow browser's backlog does not stay resident after it is gone.
 * Measured against glibc (bench/README.md): the gateways' CPU per order in
 * S2 about 12% lower (the workers' a fifth), S3's growth the same; with
 * jemalloc's default 10 s decay S3 grew 0.8-1 MiB more.  A process whose
 * memory need not follow its load keeps freed pages a while instead
 * (pg_memory_keep_freed: the consumer).  MALLOC_CONF in the environment
 * still overrides these (jemalloc reads it after). */
#include "memory.h"

#include <stdlib.h>
#include <string.h>

#ifdef PG_JEMALLOC
#include "log.h"

#include <jemalloc/jemalloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* read by jemalloc at its first allocation */
const char *malloc_conf = "narenas:1,dirty_decay_ms:0,muzzy_decay_ms:0";

void pg_memory_init(void)
{
}

/* jemalloc counts arenas it has not made (such as the one it keeps for
 * huge blocks) and refuses to set those (EFAULT): they hold nothing to
 * keep. */
static int set_arena_decay(unsigned arena, ssize_t decay)
{
    char name[64];
    bool made = false;
    size_t len = sizeof(made);
    snprintf(name, sizeof(name), "arena.%u.initialized", arena);
    int rc = mallctl(name, &made, &len, NULL, 0);
    if (rc != 0 || !made)
        return rc;
    snprintf(name, sizeof(name), "arena.%u.dirty_decay_ms", arena);
    return mallctl(name, NULL, NULL, &decay, sizeof(decay));
}

int pg_memory_keep_freed(long ms)
{
    if (getenv("MALLOC_CONF"))
        return 0;   /* the operator's settings win, as over malloc_conf */
    ssize_t decay = (ssize_t)ms;
    unsigned narenas = 0;
    size_t len = sizeof(narenas);
    int rc = mallctl("arenas.dirty_decay_ms", NULL, NULL, &decay, sizeof(decay));
    if (rc == 0)
        rc = mallctl("arenas.narenas", &narenas, &len, NULL, 0);
    for (unsigned i = 0; rc == 0 && i < narenas; i++)
        rc = set_arena_decay(i, decay);
    if (rc != 0) {
        pg_warn("jemalloc: could not keep freed pages %ld ms: %s", ms, strerror(rc));
        return -1;
    }
    return 0;
}

void pg_memory_trim(void)
{
    /* this thread's cached blocks first, so their pages can go too (this
     * fails only when MALLOC_CONF turned the thread cache off: nothing to do) */
    (void)mallctl("thread.tcache.flush", NULL, NULL, NULL, 0);
    char purge[64];
    snprintf(purge, sizeof(purge), "arena.%u.purge", (unsigned)MALLCTL_ARENAS_ALL);
    int rc = mallctl(purge, NULL, NULL, NULL, 0);
    if (rc != 0)
        pg_warn("jemalloc: could not return freed memory: %s", strerror(rc));
}

const char *pg_memory_allocator(void)
{
    static char name[96];
    const char *version = NULL;
    size_t len = sizeof(version);
    if (mallctl("version", &version, &len, NULL, 0) != 0 || !version)
        version = "?";
    snprintf(name, sizeof(name), "jemalloc %s", version);
    return name;
}

#else
#include <malloc.h>

void pg_memory_init(void)
{
    /* No fastbins: workers allocate in bursts (JSON of a whole batch), and
     * glibc merged the fastbins' chunks again at every larger request
     * (malloc_consolidate, 4% of a worker's time). */
    mallopt(M_MXFAST, 0);
}

int pg_memory_keep_freed(long ms)
{
    (void)ms;   /* glibc keeps what it frees until trimmed */
    return 0;
}

void pg_memory_trim(void)
{
    malloc_trim(0);
}

const char *pg_memory_allocator(void)
{
    return "glibc malloc";
}
#endif

int pg_grow(void *array_ptr, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    void *array;
    memcpy(&array, array_ptr, sizeof(array));
    size_t more = *cap ? *cap * 2 : 16;
    void *grown = realloc(array, more * size);
    if (!grown)
        return -1;
    memcpy(array_ptr, &grown, sizeof(grown));
    *cap = more;
    return 0;
}

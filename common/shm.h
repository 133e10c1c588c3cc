/* shm.h - shared memory that every process of a node sees.
 *
 * Memory is mapped MAP_SHARED|MAP_ANONYMOUS in the master before it forks, so
 * the manager, workers and task workers inherit the same pages at the same
 * addresses; pointers into it stay valid in every process. */
#ifndef PG_SHM_H
#define PG_SHM_H

#include <stddef.h>

/* Zero-filled shared mapping of at least size bytes; NULL on failure. */
void *pg_shm_alloc(size_t size);
void pg_shm_free(void *ptr, size_t size);

#endif

/* shm.c - shared anonymous memory, inherited across fork. */
#include "shm.h"

#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

static size_t page_round(size_t size)
{
    long ps = sysconf(_SC_PAGESIZE);
    size_t page = ps > 0 ? (size_t)ps : 4096;
    if (size > SIZE_MAX - (page - 1))
        return 0;
    return (size + page - 1) & ~(page - 1);
}

void *pg_shm_alloc(size_t size)
{
    if (size == 0)
        return NULL;
    size_t len = page_round(size);
    if (len == 0)
        return NULL;
    /* Anonymous mappings are zero-filled by the kernel. */
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void pg_shm_free(void *ptr, size_t size)
{
    if (ptr == NULL || size == 0)
        return;
    size_t len = page_round(size);
    if (len != 0)
        munmap(ptr, len);
}

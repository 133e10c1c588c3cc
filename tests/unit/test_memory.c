/* test_memory.c - unit tests for common/memory.c: the allocator the build
 * links, and pg_memory_trim giving a freed burst back to the kernel.
 *
 * make unit runs the test build (glibc's interface under the sanitizers);
 * tests/e2e/test_valgrind.py runs the release build's copy (jemalloc). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "memory.h"

#ifdef PG_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#define BLOCKS 4096
#define BLOCK_SIZE 4096      /* 16 MiB in all */

/* Resident pages of this process. */
static long resident_pages(void)
{
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2)
        resident = -1;
    fclose(f);
    return resident;
}

static void test_allocator_is_the_builds(void **state)
{
    (void)state;
    pg_memory_init();
#ifdef PG_JEMALLOC
    assert_non_null(strstr(pg_memory_allocator(), "jemalloc "));
#else
    assert_string_equal(pg_memory_allocator(), "glibc malloc");
#endif
}

static void test_trim_after_a_burst(void **state)
{
    (void)state;
    long before = resident_pages();
    char **blocks = calloc(BLOCKS, sizeof(*blocks));
    assert_non_null(blocks);
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = malloc(BLOCK_SIZE);
        assert_non_null(blocks[i]);
        memset(blocks[i], i & 0xff, BLOCK_SIZE);
    }
    long during = resident_pages();
    for (int i = 0; i < BLOCKS; i++)
        free(blocks[i]);
    free(blocks);
    pg_memory_trim();
    long after = resident_pages();
    long page = sysconf(_SC_PAGESIZE);
    assert_true(during - before >= (long)BLOCKS * BLOCK_SIZE / page / 2);
#ifdef PG_JEMALLOC
    /* no decay, then a purge: at most a tenth of the burst stays */
    assert_true(after - before <= (during - before) / 10);
#else
    /* the sanitizers' allocator keeps freed blocks in quarantine */
    (void)after;
#endif
}

/* An array grows by doubling, keeps what it held, and is untouched when
 * there is room. */
static void test_an_array_grows_as_it_fills(void **state)
{
    (void)state;
    long long *v = NULL;
    size_t n = 0, cap = 0;
    for (long long i = 0; i < 1000; i++) {
        assert_int_equal(pg_grow(&v, &cap, n, sizeof(*v)), 0);
        assert_true(cap > n);
        v[n++] = i * 7;
    }
    assert_true(cap >= 1000 && cap <= 2048);
    for (size_t i = 0; i < n; i++)
        assert_true(v[i] == (long long)i * 7);
    long long *before = v;
    size_t cap_before = cap;
    assert_int_equal(pg_grow(&v, &cap, cap - 1, sizeof(*v)), 0);
    assert_ptr_equal(v, before);
    assert_int_equal(cap, cap_before);
    free(v);
}

/* The consumer's setting takes on every arena made so far and is the
 * default of those to come; an arena jemalloc counts but has not made (the
 * one it keeps for huge blocks) is no error, nor is a huge block. */
static void test_keep_freed(void **state)
{
    (void)state;
    assert_int_equal(pg_memory_keep_freed(1000), 0);
#ifdef PG_JEMALLOC
    ssize_t decay = 0;
    size_t len = sizeof(decay);
    assert_int_equal(mallctl("arenas.dirty_decay_ms", &decay, &len, NULL, 0), 0);
    assert_int_equal(decay, 1000);
    assert_int_equal(mallctl("arena.0.dirty_decay_ms", &decay, &len, NULL, 0), 0);
    assert_int_equal(decay, 1000);
    unsigned narenas = 0;
    len = sizeof(narenas);
    assert_int_equal(mallctl("arenas.narenas", &narenas, &len, NULL, 0), 0);
    assert_true(narenas >= 2);   /* one of which is not made yet */
    char *huge = malloc(64 << 20);
    assert_non_null(huge);
    huge[0] = 1;
    free(huge);
    assert_int_equal(pg_memory_keep_freed(1000), 0);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allocator_is_the_builds),
        cmocka_unit_test(test_trim_after_a_burst),
        cmocka_unit_test(test_an_array_grows_as_it_fills),
        cmocka_unit_test(test_keep_freed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

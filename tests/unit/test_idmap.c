/* test_idmap.c - unit tests for common/idmap.c, checked against a flag array. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "idmap.h"

/* Values stored are fake pointers derived from the id, so no allocation. */
static void *val(uint64_t id, unsigned gen)
{
    return (void *)(uintptr_t)(id * 4 + 4 + (uintptr_t)gen * 0x10000000u);
}

static void test_basic(void **state)
{
    (void)state;
    pg_idmap *m = pg_idmap_new(0);
    assert_non_null(m);
    assert_int_equal(pg_idmap_count(m), 0);
    assert_null(pg_idmap_get(m, 1));
    assert_null(pg_idmap_remove(m, 1));

    int a, b, c;
    assert_int_equal(pg_idmap_put(m, 1, &a), 0);
    assert_int_equal(pg_idmap_put(m, 2, &b), 0);
    assert_int_equal(pg_idmap_put(m, UINT64_MAX, &c), 0);
    assert_int_equal(pg_idmap_count(m), 3);
    assert_ptr_equal(pg_idmap_get(m, 1), &a);
    assert_ptr_equal(pg_idmap_get(m, 2), &b);
    assert_ptr_equal(pg_idmap_get(m, UINT64_MAX), &c);
    assert_null(pg_idmap_get(m, 3));

    /* replace keeps the count */
    assert_int_equal(pg_idmap_put(m, 1, &c), 0);
    assert_int_equal(pg_idmap_count(m), 3);
    assert_ptr_equal(pg_idmap_get(m, 1), &c);

    assert_ptr_equal(pg_idmap_remove(m, 1), &c);
    assert_null(pg_idmap_get(m, 1));
    assert_null(pg_idmap_remove(m, 1));
    assert_int_equal(pg_idmap_count(m), 2);
    assert_ptr_equal(pg_idmap_get(m, 2), &b);

    /* id 0 and NULL values are rejected; id 0 is never found */
    assert_int_equal(pg_idmap_put(m, 0, &a), -1);
    assert_int_equal(pg_idmap_put(m, 5, NULL), -1);
    assert_null(pg_idmap_get(m, 0));
    assert_null(pg_idmap_remove(m, 0));
    assert_null(pg_idmap_get(m, 5));
    assert_int_equal(pg_idmap_count(m), 2);

    pg_idmap_free(m);
    pg_idmap_free(NULL);
}

static void test_null_map(void **state)
{
    (void)state;
    int a;
    assert_int_equal(pg_idmap_put(NULL, 1, &a), -1);
    assert_null(pg_idmap_get(NULL, 1));
    assert_null(pg_idmap_remove(NULL, 1));
    assert_int_equal(pg_idmap_count(NULL), 0);
    pg_idmap_iterate(NULL, NULL, NULL);
}

static void test_growth(void **state)
{
    (void)state;
    pg_idmap *m = pg_idmap_new(1);
    assert_non_null(m);
    for (uint64_t id = 1; id <= 5000; id++) {
        assert_int_equal(pg_idmap_put(m, id, val(id, 0)), 0);
        assert_int_equal(pg_idmap_count(m), id);
        /* spot-check earlier entries survive every rehash */
        assert_ptr_equal(pg_idmap_get(m, 1), val(1, 0));
        assert_ptr_equal(pg_idmap_get(m, id / 2 + 1), val(id / 2 + 1, 0));
    }
    for (uint64_t id = 1; id <= 5000; id++)
        assert_ptr_equal(pg_idmap_get(m, id), val(id, 0));
    pg_idmap_free(m);

    /* a large initial capacity works too */
    m = pg_idmap_new(100000);
    assert_non_null(m);
    assert_int_equal(pg_idmap_put(m, 42, val(42, 0)), 0);
    assert_ptr_equal(pg_idmap_get(m, 42), val(42, 0));
    pg_idmap_free(m);
}

#define N 100000

typedef struct {
    unsigned char *seen;
    const unsigned char *present;
    const unsigned *gen;
    const uint64_t *ids;
    size_t visits;
    size_t stop_at;
} iter_ctx;

/* Ids in this test are ids[i]; map value encodes i so we can find the slot. */
static int check_entry(uint64_t id, void *value, void *arg)
{
    iter_ctx *c = arg;
    uintptr_t v = (uintptr_t)value;
    size_t i = (size_t)(v >> 4);
    assert_true(i < N);
    assert_true(c->present[i]);
    assert_true(c->ids[i] == id);
    assert_int_equal(v & 0xf, (c->gen[i] & 0x7) + 1);
    assert_false(c->seen[i]);
    c->seen[i] = 1;
    c->visits++;
    return c->stop_at != 0 && c->visits >= c->stop_at;
}

static void *ival(size_t i, unsigned gen)
{
    return (void *)(uintptr_t)(((uintptr_t)i << 4) | ((gen & 0x7) + 1));
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rnd(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(2685821657736338717);
}

static void check_all(pg_idmap *m, const uint64_t *ids, const unsigned char *present,
                      const unsigned *gen, size_t expect_count)
{
    assert_int_equal(pg_idmap_count(m), expect_count);
    for (size_t i = 0; i < N; i++) {
        void *v = pg_idmap_get(m, ids[i]);
        if (present[i])
            assert_ptr_equal(v, ival(i, gen[i]));
        else
            assert_null(v);
    }
    unsigned char *seen = calloc(N, 1);
    assert_non_null(seen);
    iter_ctx c = { seen, present, gen, ids, 0, 0 };
    pg_idmap_iterate(m, check_entry, &c);
    assert_int_equal(c.visits, expect_count);
    free(seen);
}

/* ids[i] distinct and non-zero; random operations checked against present[]. */
static void run_reference(const uint64_t *ids)
{
    unsigned char *present = calloc(N, 1);
    unsigned *gen = calloc(N, sizeof(unsigned));
    assert_non_null(present);
    assert_non_null(gen);
    pg_idmap *m = pg_idmap_new(0);
    assert_non_null(m);
    size_t count = 0;

    /* insert all in order, removing an earlier one every third insert */
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(pg_idmap_put(m, ids[i], ival(i, gen[i])), 0);
        present[i] = 1;
        count++;
        if (i % 3 == 2) {
            size_t j = (size_t)(rnd() % (i + 1));
            void *v = pg_idmap_remove(m, ids[j]);
            if (present[j]) {
                assert_ptr_equal(v, ival(j, gen[j]));
                present[j] = 0;
                count--;
            } else {
                assert_null(v);
            }
        }
    }
    assert_int_equal(pg_idmap_count(m), count);
    check_all(m, ids, present, gen, count);

    /* random mix of put (insert or replace), remove, get */
    for (size_t k = 0; k < 3 * N; k++) {
        size_t i = (size_t)(rnd() % N);
        switch (rnd() % 3) {
        case 0:
            if (present[i])
                gen[i]++;
            else
                count++;
            assert_int_equal(pg_idmap_put(m, ids[i], ival(i, gen[i])), 0);
            present[i] = 1;
            break;
        case 1: {
            void *v = pg_idmap_remove(m, ids[i]);
            if (present[i]) {
                assert_ptr_equal(v, ival(i, gen[i]));
                present[i] = 0;
                count--;
            } else {
                assert_null(v);
            }
            break;
        }
        default: {
            void *v = pg_idmap_get(m, ids[i]);
            if (present[i])
                assert_ptr_equal(v, ival(i, gen[i]));
            else
                assert_null(v);
        }
        }
    }
    check_all(m, ids, present, gen, count);

    /* remove everything */
    for (size_t i = 0; i < N; i++) {
        void *v = pg_idmap_remove(m, ids[i]);
        if (present[i])
            assert_ptr_equal(v, ival(i, gen[i]));
        else
            assert_null(v);
        present[i] = 0;
    }
    assert_int_equal(pg_idmap_count(m), 0);
    check_all(m, ids, present, gen, 0);

    pg_idmap_free(m);
    free(present);
    free(gen);
}

static void test_sequential_ids(void **state)
{
    (void)state;
    uint64_t *ids = malloc(N * sizeof(uint64_t));
    assert_non_null(ids);
    for (size_t i = 0; i < N; i++)
        ids[i] = i + 1;
    run_reference(ids);
    /* sequential with a large stride (e.g. node id in the high bits) */
    for (size_t i = 0; i < N; i++)
        ids[i] = ((uint64_t)7 << 48) | ((uint64_t)(i + 1) << 16);
    run_reference(ids);
    free(ids);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_random_ids(void **state)
{
    (void)state;
    uint64_t *ids = malloc(N * sizeof(uint64_t));
    uint64_t *sorted = malloc(N * sizeof(uint64_t));
    assert_non_null(ids);
    assert_non_null(sorted);
    /* random distinct non-zero ids */
    for (;;) {
        for (size_t i = 0; i < N; i++) {
            do
                ids[i] = rnd();
            while (ids[i] == 0);
        }
        memcpy(sorted, ids, N * sizeof(uint64_t));
        qsort(sorted, N, sizeof(uint64_t), cmp_u64);
        size_t dup = 0;
        for (size_t i = 1; i < N; i++)
            dup += sorted[i] == sorted[i - 1];
        if (dup == 0)
            break;
    }
    run_reference(ids);
    free(ids);
    free(sorted);
}

static int count_visit(uint64_t id, void *value, void *arg)
{
    (void)value;
    size_t *n = arg;
    assert_true(id != 0);
    (*n)++;
    return *n >= 3;
}

static void test_iterate_stop(void **state)
{
    (void)state;
    pg_idmap *m = pg_idmap_new(4);
    assert_non_null(m);
    size_t n = 0;
    pg_idmap_iterate(m, count_visit, &n);
    assert_int_equal(n, 0);
    for (uint64_t id = 1; id <= 10; id++)
        assert_int_equal(pg_idmap_put(m, id, val(id, 0)), 0);
    pg_idmap_iterate(m, count_visit, &n);
    assert_int_equal(n, 3);
    pg_idmap_free(m);
}

/* Colliding probe runs that wrap around the end of the table: removes must
 * keep every other entry reachable. */
static void test_wraparound_removes(void **state)
{
    (void)state;
    for (unsigned round = 0; round < 200; round++) {
        pg_idmap *m = pg_idmap_new(0); /* 8 slots, up to 5 entries */
        assert_non_null(m);
        uint64_t ids[5];
        for (int i = 0; i < 5; i++) {
            ids[i] = (rnd() % 64) + 1 + (uint64_t)i * 64; /* distinct */
            assert_int_equal(pg_idmap_put(m, ids[i], val(ids[i], 0)), 0);
        }
        size_t order[5] = { 0, 1, 2, 3, 4 };
        for (int i = 4; i > 0; i--) {
            size_t j = (size_t)(rnd() % (uint64_t)(i + 1));
            size_t t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        for (int k = 0; k < 5; k++) {
            assert_ptr_equal(pg_idmap_remove(m, ids[order[k]]), val(ids[order[k]], 0));
            for (int r = k + 1; r < 5; r++)
                assert_ptr_equal(pg_idmap_get(m, ids[order[r]]), val(ids[order[r]], 0));
            assert_int_equal(pg_idmap_count(m), (size_t)(4 - k));
        }
        pg_idmap_free(m);
    }
}

static int dropped_values;

static void count_drop(void *value)
{
    (void)value;
    dropped_values++;
}

/* Ids handed out in order, some answered (removed): a sweep drops exactly
 * the old ones still there, whatever their slots after growth and shifts. */
static void test_drop_below(void **state)
{
    (void)state;
    pg_idmap *m = pg_idmap_new(4);
    static int v;
    for (uint64_t id = 1; id <= 5000; id++)
        assert_int_equal(pg_idmap_put(m, id, &v), 0);
    for (uint64_t id = 1; id <= 5000; id += 3)
        assert_ptr_equal(pg_idmap_remove(m, id), &v);
    size_t left_old = 0;
    for (uint64_t id = 1; id < 4000; id++)
        left_old += pg_idmap_get(m, id) != NULL;
    dropped_values = 0;
    assert_int_equal(pg_idmap_drop_below(m, 4000, count_drop), left_old);
    assert_int_equal(dropped_values, (int)left_old);
    for (uint64_t id = 1; id < 4000; id++)
        assert_null(pg_idmap_get(m, id));
    size_t left_new = 0;
    for (uint64_t id = 4000; id <= 5000; id++)
        left_new += pg_idmap_get(m, id) != NULL;
    assert_int_equal(pg_idmap_count(m), left_new);
    assert_int_equal(pg_idmap_drop_below(m, 4000, NULL), 0);
    assert_int_equal(pg_idmap_drop_below(NULL, 10, NULL), 0);
    pg_idmap_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_null_map),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_sequential_ids),
        cmocka_unit_test(test_random_ids),
        cmocka_unit_test(test_iterate_stop),
        cmocka_unit_test(test_wraparound_removes),
        cmocka_unit_test(test_drop_below),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_bench_stats.c - unit tests for pushgate-bench's figures: the
 * log-linear latency histogram (bench/client/hist.c) and the bitmap of
 * sequence numbers (bench/client/seqmap.c).
 *
 * The two modules are compiled in here: they are part of the pushgate-bench
 * program, not of a library. */
#include "../../bench/client/hist.c"
#include "../../bench/client/seqmap.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

/* ---- histogram ---- */

static void test_bucket_bounds(void **state)
{
    (void)state;
    /* exact below 256 */
    for (uint64_t v = 0; v < 256; v++) {
        assert_int_equal(pb_hist_bucket(v), v);
        assert_int_equal(pb_hist_bucket_high(pb_hist_bucket(v)), v);
    }
    /* above, every value lies in its bucket, and a bucket is under 1% wide */
    for (uint64_t v = 256; v < ((uint64_t)1 << 27); v = v * 17 / 16 + 1) {
        unsigned b = pb_hist_bucket(v);
        uint64_t high = pb_hist_bucket_high(b);
        uint64_t low = b > 0 ? pb_hist_bucket_high(b - 1) + 1 : 0;
        assert_true(low <= v && v <= high);
        assert_true((double)(high - low + 1) / (double)low <= 1.0 / 128);
        assert_true(b < PB_HIST_BUCKETS);
    }
    /* buckets are contiguous and increasing */
    for (unsigned b = 1; b < PB_HIST_BUCKETS; b++)
        assert_int_equal(pb_hist_bucket(pb_hist_bucket_high(b - 1) + 1), b);
    /* 100 s fits apart from the last bucket; far beyond goes to the last */
    assert_true(pb_hist_bucket(100000000) < PB_HIST_BUCKETS - 1);
    assert_int_equal(pb_hist_bucket(UINT64_MAX), PB_HIST_BUCKETS - 1);
}

static void test_percentiles(void **state)
{
    (void)state;
    pb_hist *h = malloc(sizeof(*h));
    assert_non_null(h);
    pb_hist_init(h);
    assert_int_equal(pb_hist_percentile(h, 50), 0);
    for (uint64_t v = 1; v <= 10000; v++)   /* 1 us .. 10 ms */
        pb_hist_add(h, v);
    assert_int_equal(h->count, 10000);
    assert_int_equal(h->min, 1);
    assert_int_equal(h->max, 10000);
    uint64_t p50 = pb_hist_percentile(h, 50), p99 = pb_hist_percentile(h, 99);
    assert_true(p50 >= 5000 && p50 <= 5000 * 1.01);
    assert_true(p99 >= 9900 && p99 <= 9900 * 1.01);
    assert_int_equal(pb_hist_percentile(h, 100), 10000);
    assert_true(pb_hist_percentile(h, 0) >= 1 && pb_hist_percentile(h, 0) <= 2);
    assert_true(pb_hist_mean(h) > 5000.4 && pb_hist_mean(h) < 5000.6);
    free(h);
}

static void test_merge(void **state)
{
    (void)state;
    pb_hist *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b)), *all = malloc(sizeof(*all));
    assert_true(a && b && all);
    pb_hist_init(a);
    pb_hist_init(b);
    pb_hist_init(all);
    for (uint64_t v = 0; v < 50000; v++) {
        uint64_t x = (v * 2654435761u) % 3000000;
        pb_hist_add(v % 2 ? a : b, x);
        pb_hist_add(all, x);
    }
    pb_hist_merge(a, b);
    assert_int_equal(a->count, all->count);
    assert_int_equal(a->min, all->min);
    assert_int_equal(a->max, all->max);
    assert_int_equal(a->sum, all->sum);
    assert_memory_equal(a->buckets, all->buckets, sizeof(a->buckets));
    for (double p = 1; p <= 100; p += 7)
        assert_int_equal(pb_hist_percentile(a, p), pb_hist_percentile(all, p));
    free(a);
    free(b);
    free(all);
}

/* ---- sequence numbers ---- */

static void test_seq_mark_and_missing(void **state)
{
    (void)state;
    pb_seq s;
    assert_int_equal(pb_seq_init(&s, 100), 0);
    for (uint64_t i = 0; i < 100; i++)
        if (i != 7 && i != 64 && i != 99)
            assert_int_equal(pb_seq_mark(&s, i), 1);
    assert_int_equal(pb_seq_mark(&s, 5), 0);              /* duplicate */
    assert_int_equal(pb_seq_mark(&s, 5000), 1);           /* grows */
    assert_int_equal(pb_seq_mark(&s, PB_SEQ_LIMIT), -1);  /* out of range */
    uint64_t missing[2];
    assert_int_equal(pb_seq_missing(&s, 100, missing, 2), 3);
    assert_int_equal(missing[0], 7);
    assert_int_equal(missing[1], 64);
    assert_int_equal(s.unique, 98);
    assert_int_equal(s.dups, 1);
    assert_int_equal(s.out_of_range, 1);
    pb_seq_free(&s);
}

static void test_seq_merge(void **state)
{
    (void)state;
    pb_seq a, b;
    assert_int_equal(pb_seq_init(&a, 10), 0);
    assert_int_equal(pb_seq_init(&b, 0), 0);
    for (uint64_t i = 0; i < 10; i += 2)
        pb_seq_mark(&a, i);                    /* 0 2 4 6 8 */
    pb_seq_mark(&b, 1);
    pb_seq_mark(&b, 4);                        /* also in a: a duplicate */
    pb_seq_mark(&b, 3000);
    pb_seq_mark(&b, 3000);                     /* a duplicate within b */
    assert_int_equal(pb_seq_merge(&a, &b), 0);
    assert_int_equal(a.unique, 7);
    assert_int_equal(a.dups, 2);
    assert_true(pb_seq_has(&a, 3000) && pb_seq_has(&a, 1) && !pb_seq_has(&a, 3));
    assert_int_equal(pb_seq_missing(&a, 10, NULL, 0), 4);   /* 3 5 7 9 */
    pb_seq_free(&a);
    pb_seq_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_bounds),
        cmocka_unit_test(test_percentiles),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_seq_mark_and_missing),
        cmocka_unit_test(test_seq_merge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

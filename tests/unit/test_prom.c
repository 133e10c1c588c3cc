/* test_prom.c - unit tests for common/prom.c: where an observation lands,
 * the cumulative text of a histogram, and label escaping. */
#include "prom.h"

#include <event2/buffer.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static char *text_of(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    return s;
}

static void test_observe_buckets(void **state)
{
    (void)state;
    pg_prom_hist h = {0};
    pg_prom_observe_us(&h, 0);          /* <= 0.5 ms */
    pg_prom_observe_us(&h, 500);        /* on the bound: le is inclusive */
    pg_prom_observe_us(&h, 501);        /* the next bucket, 1 ms */
    pg_prom_observe_us(&h, 60000000);   /* past 30 s: +Inf */
    assert_int_equal(h.bucket[0], 2);
    assert_int_equal(h.bucket[1], 1);
    assert_int_equal(h.bucket[PG_PROM_BUCKETS], 1);
    assert_int_equal(h.sum_us, 60001001);
    pg_prom_observe_since(&h, 0);                        /* unknown: nothing */
    pg_prom_observe_since(&h, pg_prom_now_us() + 1000000);   /* the future: nothing */
    uint64_t n = 0;
    for (int i = 0; i <= PG_PROM_BUCKETS; i++)
        n += h.bucket[i];
    assert_int_equal(n, 4);
}

static void test_histogram_text(void **state)
{
    (void)state;
    pg_prom_hist h = {0};
    pg_prom_observe_us(&h, 200);
    pg_prom_observe_us(&h, 2000);
    pg_prom_observe_us(&h, 40000000);
    struct evbuffer *b = evbuffer_new();
    pg_prom_histogram(b, "x_seconds", "X.", &h);
    char *s = text_of(b);
    assert_non_null(strstr(s, "# HELP x_seconds X.\n# TYPE x_seconds histogram\n"));
    assert_non_null(strstr(s, "x_seconds_bucket{le=\"0.0005\"} 1\n"));
    assert_non_null(strstr(s, "x_seconds_bucket{le=\"0.0025\"} 2\n"));
    assert_non_null(strstr(s, "x_seconds_bucket{le=\"30\"} 2\n"));
    assert_non_null(strstr(s, "x_seconds_bucket{le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(s, "x_seconds_sum 40.002200\nx_seconds_count 3\n"));
    free(s);
    evbuffer_free(b);
}

static void test_counter_and_labels(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    pg_prom_counter(b, "a_total", "A.", 7);
    char v[32];
    pg_prom_label_value(v, sizeof(v), "x\"y\\z\n");
    assert_string_equal(v, "x\\\"y\\\\z\\n");
    pg_prom_label_value(v, 4, "abcdef");   /* cut, still terminated */
    assert_true(strlen(v) < 4);
    pg_prom_sample(b, "a_total", "k=\"v\"", 1);
    char *s = text_of(b);
    assert_string_equal(s, "# HELP a_total A.\n# TYPE a_total counter\na_total 7\na_total{k=\"v\"} 1\n");
    free(s);
    evbuffer_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_observe_buckets),
        cmocka_unit_test(test_histogram_text),
        cmocka_unit_test(test_counter_and_labels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

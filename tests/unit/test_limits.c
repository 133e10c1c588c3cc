/* test_limits.c - unit tests for gateway/limits.c: the token bucket that
 * holds a browser to its message and chat rates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gateway.h"

gw_context gw;   /* main.c's, which the library leaves out */

static int takes(gw_bucket *b, double rate, double burst, int64_t at_ms, int n)
{
    int taken = 0;
    for (int i = 0; i < n; i++)
        taken += gw_bucket_take(b, rate, burst, at_ms);
    return taken;
}

static void test_a_new_bucket_holds_the_burst(void **state)
{
    (void)state;
    gw_bucket b = {0};
    assert_int_equal(takes(&b, 5, 10, 1000, 50), 10);
}

static void test_it_refills_at_the_rate_up_to_the_burst(void **state)
{
    (void)state;
    gw_bucket b = {0};
    takes(&b, 5, 10, 1000, 10);
    assert_int_equal(takes(&b, 5, 10, 1200, 5), 1);      /* 0.2 s at 5/s */
    assert_int_equal(takes(&b, 5, 10, 2200, 20), 5);     /* 1 s more */
    assert_int_equal(takes(&b, 5, 10, 3600000, 50), 10); /* an hour: never past the burst */
}

static void test_steady_sending_at_the_rate_is_never_refused(void **state)
{
    (void)state;
    gw_bucket b = {0};
    int refused = 0;
    for (int64_t ms = 1; ms < 60000; ms += 200)   /* 5/s for a minute */
        refused += !gw_bucket_take(&b, 5, 1, ms);
    assert_int_equal(refused, 0);
}

static void test_zero_rate_is_no_limit_and_a_clock_going_back_refills(void **state)
{
    (void)state;
    gw_bucket b = {0};
    assert_int_equal(takes(&b, 0, 1, 1000, 1000), 1000);
    gw_bucket c = {0};
    takes(&c, 1, 3, 5000, 3);
    assert_int_equal(takes(&c, 1, 3, 4000, 5), 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_new_bucket_holds_the_burst),
        cmocka_unit_test(test_it_refills_at_the_rate_up_to_the_burst),
        cmocka_unit_test(test_steady_sending_at_the_rate_is_never_refused),
        cmocka_unit_test(test_zero_rate_is_no_limit_and_a_clock_going_back_refills),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_daemon_status.c - unit tests for common/daemon_status.c's helpers:
 * the UTF-8 clean-up that keeps a daemon's id and the texts of its report
 * acceptable to jansson and to the utf8mb4 column, and the id's length. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "daemon_status.h"
#include "timer.h"

static void keeps_valid_text(void **state)
{
    (void)state;
    char out[64];
    const char *s = "ok \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80";   /* CJK and an emoji */
    assert_int_equal(pg_status_utf8(out, sizeof(out), s), strlen(s));
    assert_string_equal(out, s);
}

static void replaces_what_is_not_utf8(void **state)
{
    (void)state;
    char out[64];
    /* a lone continuation byte, an overlong '/', a surrogate, past U+10FFFF,
     * a sequence cut short */
    pg_status_utf8(out, sizeof(out), "a\x80" "b\xc0\xaf" "c\xed\xa0\x80" "d\xf4\x90\x80\x80"
                                     "e\xe4\xbd");
    assert_string_equal(out, "a?b??c???d????e??");
    json_t *v = json_string(out);
    assert_non_null(v);
    json_decref(v);
}

static void cuts_between_characters(void **state)
{
    (void)state;
    char out[6];
    /* 2 + 3 bytes fit in 5; the next 3-byte character does not */
    assert_int_equal(pg_status_utf8(out, sizeof(out), "ab\xe4\xbd\xa0\xe5\xa5\xbd"), 5);
    assert_string_equal(out, "ab\xe4\xbd\xa0");
    assert_int_equal(pg_status_utf8(out, 4, "ab\xe4\xbd\xa0"), 2);
    assert_string_equal(out, "ab");
}

static void string_of_anything(void **state)
{
    (void)state;
    json_t *v = pg_status_string("bad \xff byte");
    assert_non_null(v);
    assert_string_equal(json_string_value(v), "bad ? byte");
    json_decref(v);
}

static void id_fits_the_column(void **state)
{
    (void)state;
    char id[PG_STATUS_ID_MAX + 1], name[400];
    pg_status_id(id, sizeof(id), "consumer", "host-1");
    assert_string_equal(id, "consumer host-1");
    for (size_t i = 0; i + 3 < sizeof(name); i += 3)
        memcpy(name + i, "\xe4\xbd\xa0", 3);
    name[sizeof(name) - 1 - (sizeof(name) - 1) % 3] = '\0';
    pg_status_id(id, sizeof(id), "consumer", name);
    assert_true(strlen(id) <= PG_STATUS_ID_MAX);
    assert_true(strlen(id) > PG_STATUS_ID_MAX - 3);
    assert_int_equal((strlen(id) - strlen("consumer ")) % 3, 0);   /* whole characters */
}

static void wall_clock_in_ms(void **state)
{
    (void)state;
    int64_t ms = (int64_t)pg_wall_ms();
    int64_t s = (int64_t)time(NULL);
    assert_true(ms / 1000 >= s - 1 && ms / 1000 <= s + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keeps_valid_text),
        cmocka_unit_test(replaces_what_is_not_utf8),
        cmocka_unit_test(cuts_between_characters),
        cmocka_unit_test(string_of_anything),
        cmocka_unit_test(id_fits_the_column),
        cmocka_unit_test(wall_clock_in_ms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_json_slice.c - unit tests for common/json_slice.c: the bytes of a
 * member's value in an object's text, as jansson's tree has that member. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "json_slice.h"

/* The slice of key in text, as a string ("" when not found) and the code. */
static int slice(const char *text, const char *key, char *out, size_t size)
{
    const char *v = NULL;
    size_t n = 0;
    int rc = pg_json_member_slice(text, strlen(text), key, &v, &n);
    out[0] = '\0';
    if (rc == PG_SLICE_FOUND) {
        assert_true(n < size);
        memcpy(out, v, n);
        out[n] = '\0';
    }
    return rc;
}

static void finds_every_kind_of_value(void **state)
{
    (void)state;
    const char *text = "{\"s\":\"a,}\\\"b\",\"n\":-1.5e3,\"t\":true,\"z\":null,"
                       "\"o\":{\"k\":[1,{\"x\":\"]\"}]},\"a\":[],\"e\":{}}";
    static const char *const want[][2] = {
        {"s", "\"a,}\\\"b\""}, {"n", "-1.5e3"}, {"t", "true"}, {"z", "null"},
        {"o", "{\"k\":[1,{\"x\":\"]\"}]}"}, {"a", "[]"}, {"e", "{}"},
    };
    char out[128];
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_int_equal(slice(text, want[i][0], out, sizeof(out)), PG_SLICE_FOUND);
        assert_string_equal(out, want[i][1]);
    }
}

static void spaces_stay_outside_the_slice(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(slice(" {\n \"a\" :\t 12 ,\r\n \"b\" : { } } ", "a", out, sizeof(out)),
                     PG_SLICE_FOUND);
    assert_string_equal(out, "12");
    assert_int_equal(slice("{\"a\":1,\"b\" : { } }", "b", out, sizeof(out)), PG_SLICE_FOUND);
    assert_string_equal(out, "{ }");
}

static void the_last_of_a_repeated_name_wins(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(slice("{\"a\":1,\"a\":[2],\"b\":3}", "a", out, sizeof(out)), PG_SLICE_FOUND);
    assert_string_equal(out, "[2]");
}

static void nested_names_are_not_members(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(slice("{\"x\":{\"remote_data\":1},\"y\":\"remote_data\"}", "remote_data", out,
                           sizeof(out)),
                     PG_SLICE_ABSENT);
    assert_int_equal(slice("{}", "a", out, sizeof(out)), PG_SLICE_ABSENT);
}

static void escaped_names_and_non_objects_cannot_be_told(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(slice("{\"remote\\u005fdata\":{}}", "remote_data", out, sizeof(out)),
                     PG_SLICE_UNKNOWN);
    assert_int_equal(slice("[1,2]", "a", out, sizeof(out)), PG_SLICE_UNKNOWN);
    assert_int_equal(slice("", "a", out, sizeof(out)), PG_SLICE_UNKNOWN);
    assert_int_equal(slice("{\"a\":1", "a", out, sizeof(out)), PG_SLICE_UNKNOWN);
}

static void elements_come_in_order(void **state)
{
    (void)state;
    static const char text[] = " [ {\"uuid\":\"a\",\"data\":{\"k\":[1,\"]\"]}} , 2 ,\"s,\",[] ,null ] ";
    static const char *const want[] = {"{\"uuid\":\"a\",\"data\":{\"k\":[1,\"]\"]}}", "2",
                                       "\"s,\"", "[]", "null"};
    pg_json_elements it;
    assert_int_equal(pg_json_elements_begin(&it, text, strlen(text)), 0);
    const char *v;
    size_t n;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_int_equal(pg_json_elements_next(&it, &v, &n), PG_SLICE_FOUND);
        assert_int_equal(n, strlen(want[i]));
        assert_memory_equal(v, want[i], n);
    }
    assert_int_equal(pg_json_elements_next(&it, &v, &n), PG_SLICE_ABSENT);
    assert_int_equal(pg_json_elements_begin(&it, "[]", 2), 0);
    assert_int_equal(pg_json_elements_next(&it, &v, &n), PG_SLICE_ABSENT);
    assert_int_equal(pg_json_elements_begin(&it, "{\"a\":1}", 7), PG_SLICE_UNKNOWN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(finds_every_kind_of_value),
        cmocka_unit_test(spaces_stay_outside_the_slice),
        cmocka_unit_test(the_last_of_a_repeated_name_wins),
        cmocka_unit_test(nested_names_are_not_members),
        cmocka_unit_test(escaped_names_and_non_objects_cannot_be_told),
        cmocka_unit_test(elements_come_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_json_out.c - unit tests for common/json_out.c: strings written
 * member by member read back as the same strings, whether they were copied
 * as they are or escaped by jansson, and a frame is its length then its
 * body. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "json_out.h"

/* {"k":<s>} written with pg_json_put_str, parsed back. */
static json_t *object_with(const char *s)
{
    struct evbuffer *out = evbuffer_new();
    assert_int_equal(pg_json_put_str(out, s, "{\"k\":"), 0);
    assert_int_equal(evbuffer_add(out, "}", 1), 0);
    size_t len = evbuffer_get_length(out);
    json_t *o = json_loadb((const char *)evbuffer_pullup(out, -1), len, 0, NULL);
    evbuffer_free(out);
    assert_true(json_is_object(o));
    return o;
}

static void strings_read_back_the_same(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "agent-1", "", "a \"quoted\" \\ text", "tab\there", "line\nbreak", "caf\xc3\xa9", "\x7f",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        json_t *o = object_with(texts[i]);
        assert_string_equal(json_string_value(json_object_get(o, "k")), texts[i]);
        json_decref(o);
    }
    json_t *o = object_with(NULL);
    assert_true(json_is_null(json_object_get(o, "k")));
    json_decref(o);
}

static void a_string_that_is_not_utf8_is_refused(void **state)
{
    (void)state;
    struct evbuffer *out = evbuffer_new();
    assert_int_equal(pg_json_put_str(out, "bad \xff byte", ","), -1);
    evbuffer_free(out);
}

static void plain_means_nothing_to_escape(void **state)
{
    (void)state;
    assert_true(pg_json_plain("ok 1-2:3", 8));
    assert_false(pg_json_plain("a\"b", 3));
    assert_false(pg_json_plain("a\\b", 3));
    assert_false(pg_json_plain("a\nb", 3));
    assert_false(pg_json_plain("caf\xc3\xa9", 5));
}

static void a_frame_is_its_length_then_its_body(void **state)
{
    (void)state;
    struct evbuffer *out = evbuffer_new(), *body = evbuffer_new();
    assert_int_equal(pg_json_put(body, NULL, "{\"n\":%d}", 7), 0);
    assert_int_equal(pg_json_frame(out, body), 0);
    assert_int_equal(evbuffer_get_length(body), 0);
    unsigned char *bytes = evbuffer_pullup(out, -1);
    assert_int_equal(evbuffer_get_length(out), 4 + 7);
    assert_memory_equal(bytes, "\0\0\0\x07{\"n\":7}", 11);
    evbuffer_free(out);
    evbuffer_free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(strings_read_back_the_same),
        cmocka_unit_test(a_string_that_is_not_utf8_is_refused),
        cmocka_unit_test(plain_means_nothing_to_escape),
        cmocka_unit_test(a_frame_is_its_length_then_its_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

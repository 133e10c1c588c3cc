/* test_reply.c - unit tests for common/reply.c: every reply is one JSON
 * object with the code, a text, the request's msg_id (and req_id) as they
 * were, and the tail's members, whether its strings needed escaping or not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "reply.h"

/* The reply parsed back; msg_id and req_id are borrowed. */
static json_t *reply_of(int code, const char *msg, json_t *msg_id, json_t *req_id, const char *tail)
{
    size_t len = 0;
    char *text = pg_reply_json(code, msg, msg_id, req_id, tail, &len);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    json_t *r = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
    assert_true(json_is_object(r));
    free(text);
    return r;
}

static void strings_with_and_without_escapes(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "ok", "", "a \"quoted\" \\ text", "tab\there", "line\nbreak", "caf\xc3\xa9", "\x7f",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        json_t *id = json_string(texts[i]);
        json_t *r = reply_of(3, texts[i], id, id, ",\"n\":1");
        assert_int_equal(json_integer_value(json_object_get(r, "code")), 3);
        assert_string_equal(json_string_value(json_object_get(r, "msg")), texts[i]);
        assert_true(json_equal(json_object_get(r, "msg_id"), id));
        assert_true(json_equal(json_object_get(r, "req_id"), id));
        assert_int_equal(json_integer_value(json_object_get(r, "n")), 1);
        json_decref(r);
        json_decref(id);
    }
}

static void ids_of_any_kind(void **state)
{
    (void)state;
    json_t *ids[] = {json_integer(-12), json_real(1.5), json_true(), json_null(),
                     json_pack("{s:[i,s]}", "a", 1, "b\"")};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        json_t *r = reply_of(0, "ok", ids[i], NULL, "");
        assert_true(json_equal(json_object_get(r, "msg_id"), ids[i]));
        assert_null(json_object_get(r, "req_id"));
        json_decref(r);
        json_decref(ids[i]);
    }
    json_t *r = reply_of(0, "ok", NULL, NULL, "");   /* no msg_id: null */
    assert_true(json_is_null(json_object_get(r, "msg_id")));
    json_decref(r);
}

static void a_text_that_is_not_utf8_becomes_the_codes_word(void **state)
{
    (void)state;
    json_t *r = reply_of(4, "bad byte \xff here", NULL, NULL, "");
    assert_string_equal(json_string_value(json_object_get(r, "msg")), "error");
    json_decref(r);
    r = reply_of(0, "\xc3", NULL, NULL, "");
    assert_string_equal(json_string_value(json_object_get(r, "msg")), "ok");
    json_decref(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(strings_with_and_without_escapes),
        cmocka_unit_test(ids_of_any_kind),
        cmocka_unit_test(a_text_that_is_not_utf8_becomes_the_codes_word),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

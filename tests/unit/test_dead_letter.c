/* test_dead_letter.c - unit tests for ctl/dead_letter.c: reading a dead
 * letter from an XRANGE reply (every field checked, nothing trusted),
 * whether it can be replayed, --reason matching, and text made safe for a
 * terminal or for JSON.
 *
 * The module is compiled in here: it is part of pushgate-ctl, not of a
 * library.  Replies are built by hiredis's own parser from RESP text, so
 * they have exactly the shapes Redis (or anything posing as it) can send. */
#include "../../ctl/dead_letter.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- building replies ---- */

typedef struct {
    char *text;
    size_t len, cap;
} resp;

static void put(resp *r, const char *s, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        r->cap = (r->len + n + 1) * 2;
        r->text = realloc(r->text, r->cap);
        assert_non_null(r->text);
    }
    memcpy(r->text + r->len, s, n);
    r->len += n;
    r->text[r->len] = '\0';
}

static void put_bulk(resp *r, const char *s, size_t n)
{
    char head[32];
    put(r, head, (size_t)snprintf(head, sizeof(head), "$%zu\r\n", n));
    put(r, s, n);
    put(r, "\r\n", 2);
}

static void put_raw(resp *r, const char *s)
{
    put(r, s, strlen(s));
}

static redisReply *parse(const resp *r)
{
    redisReader *reader = redisReaderCreate();
    assert_non_null(reader);
    assert_int_equal(redisReaderFeed(reader, r->text, r->len), REDIS_OK);
    void *reply = NULL;
    assert_int_equal(redisReaderGetReply(reader, &reply), REDIS_OK);
    assert_non_null(reply);
    redisReaderFree(reader);
    free(r->text);
    return reply;
}

/* [id, [k1, v1, ...]] with every name and value a bulk string; a value of
 * NULL is written as an integer reply (a wrong type). */
static redisReply *entry(const char *id, const char *const *kv, size_t n)
{
    resp r = {0};
    put_raw(&r, "*2\r\n");
    put_bulk(&r, id, strlen(id));
    char head[32];
    put(&r, head, (size_t)snprintf(head, sizeof(head), "*%zu\r\n", n));
    for (size_t i = 0; i < n; i++) {
        if (kv[i])
            put_bulk(&r, kv[i], strlen(kv[i]));
        else
            put_raw(&r, ":7\r\n");
    }
    return parse(&r);
}

#define GOOD_MSG "{\"url\":\"/worksheet/send-message\",\"chat_token\":\"t\",\"data\":[]}"
#define GOOD_REASON "gave up after 5 deliveries; last: gateway 127.0.0.1:9601 answered code 10500"

static const char *const good[] = {
    "msg", GOOD_MSG, "reason", GOOD_REASON, "source_id", "1700000000000-3",
    "source_stream", "pushgate:worksheets", "deliveries", "5",
};
#define NGOOD (sizeof(good) / sizeof(good[0]))

/* good with field name's value replaced (NULL value: an integer). */
static redisReply *good_but(const char *name, const char *value, bool drop)
{
    const char *kv[NGOOD + 2];
    size_t n = 0;
    for (size_t i = 0; i < NGOOD; i += 2) {
        if (strcmp(good[i], name) == 0) {
            if (drop)
                continue;
            kv[n++] = good[i];
            kv[n++] = value;
        } else {
            kv[n++] = good[i];
            kv[n++] = good[i + 1];
        }
    }
    return entry("1700000000100-0", kv, n);
}

/* ---- stream ids ---- */

static void test_stream_ids(void **state)
{
    (void)state;
    static const char *const ok[] = {"0-0", "1-2", "1700000000000-12",
                                     "18446744073709551615-18446744073709551615"};
    static const char *const bad[] = {"", "1", "1-", "-1", "1-2-3", "a-1", "1-b", " 1-2",
                                      "1-2 ", "+1-2", "1--2", "18446744073709551616-0",
                                      "0-18446744073709551616", "000000000000000000001-0",
                                      "1:2", "1-2:0"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        assert_true(ctl_stream_id_valid(ok[i], strlen(ok[i])));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(ctl_stream_id_valid(bad[i], strlen(bad[i])));
    assert_false(ctl_stream_id_valid("1-2\0", 4));     /* a NUL inside */
    assert_false(ctl_stream_id_valid(NULL, 0));
    assert_true(ctl_stream_id_valid("1-23", 3));       /* only len counts */
    /* a msg_id: an entry id, or one with a shard's tag */
    assert_true(ctl_msg_id_valid("1700000000000-3", 15));
    assert_true(ctl_msg_id_valid("1700000000000-3@0", 17));
    assert_true(ctl_msg_id_valid("18446744073709551615-18446744073709551615@1023", 46));
    static const char *const bad_msg_ids[] = {"1700000000000-3@", "1700000000000-3@12345",
                                              "1700000000000-3@a", "@3", "1-2@3@4",
                                              "1700000000000-3:0", ""};
    for (size_t i = 0; i < sizeof(bad_msg_ids) / sizeof(bad_msg_ids[0]); i++)
        assert_false(ctl_msg_id_valid(bad_msg_ids[i], strlen(bad_msg_ids[i])));
    assert_false(ctl_msg_id_valid(NULL, 0));
    assert_int_equal(ctl_stream_id_ms("1700000000123-4"), 1700000000123ULL);
}

/* ---- parsing ---- */

static void test_parse_good(void **state)
{
    (void)state;
    redisReply *r = entry("1700000000100-0", good, NGOOD);
    ctl_dead_letter d;
    assert_int_equal(ctl_dead_letter_parse(r, &d), 0);
    assert_string_equal(d.problem, "");
    assert_string_equal(d.id, "1700000000100-0");
    assert_string_equal(d.original_id, "1700000000000-3");
    assert_int_equal(d.msg.len, strlen(GOOD_MSG));
    assert_memory_equal(d.msg.p, GOOD_MSG, d.msg.len);
    assert_memory_equal(d.reason.p, GOOD_REASON, d.reason.len);
    assert_null(d.fields.p);
    char buf[200];
    assert_null(ctl_dead_letter_unreplayable(&d, "pushgate:worksheets", buf, sizeof(buf)));
    const char *why = ctl_dead_letter_unreplayable(&d, "other", buf, sizeof(buf));
    assert_non_null(why);
    assert_non_null(strstr(why, "came from stream 'pushgate:worksheets', not 'other'"));
    freeReplyObject(r);
}

static void test_parse_original_id_from_fields(void **state)
{
    (void)state;
    /* a replayed entry that died again: its fields name the first id */
    const char *kv[NGOOD + 2];
    memcpy(kv, good, sizeof(good));
    kv[NGOOD] = "fields";
    kv[NGOOD + 1] = "{\"msg_id\":\"1600000000000-7\",\"other\":\"x\"}";
    redisReply *r = entry("1700000000100-0", kv, NGOOD + 2);
    ctl_dead_letter d;
    assert_int_equal(ctl_dead_letter_parse(r, &d), 0);
    assert_string_equal(d.problem, "");
    assert_string_equal(d.original_id, "1600000000000-7");
    assert_true(d.id_from_fields);
    freeReplyObject(r);
    /* the same from a shard of a set: the tag stays */
    kv[NGOOD + 1] = "{\"msg_id\":\"1600000000000-7@5\"}";
    r = entry("1700000000100-0", kv, NGOOD + 2);
    assert_int_equal(ctl_dead_letter_parse(r, &d), 0);
    assert_string_equal(d.problem, "");
    assert_string_equal(d.original_id, "1600000000000-7@5");
    freeReplyObject(r);

    static const char *const bad_fields[] = {
        "{\"msg_id\":\"1600000000000-7:0\"}", "{\"msg_id\":7}", "{\"msg_id\":\"\"}",
        "[1]", "not json",
    };
    for (size_t i = 0; i < sizeof(bad_fields) / sizeof(bad_fields[0]); i++) {
        kv[NGOOD + 1] = bad_fields[i];
        r = entry("1700000000100-0", kv, NGOOD + 2);
        assert_int_equal(ctl_dead_letter_parse(r, &d), 0);
        assert_string_not_equal(d.problem, "");
        char buf[200];
        assert_string_equal(ctl_dead_letter_unreplayable(&d, "pushgate:worksheets", buf,
                                                         sizeof(buf)),
                            d.problem);
        freeReplyObject(r);
    }
    /* fields without msg_id (an entry that had no msg): the entry's own id */
    kv[NGOOD + 1] = "{\"body\":\"x\"}";
    r = entry("1700000000100-0", kv, NGOOD + 2);
    assert_int_equal(ctl_dead_letter_parse(r, &d), 0);
    assert_string_equal(d.problem, "");
    assert_string_equal(d.original_id, "1700000000000-3");
    assert_false(d.id_from_fields);
    freeReplyObject(r);
}

static void test_parse_missing_and_wrong_fields(void **state)
{
    (void)state;
    static const char *const required[] = {"msg", "reason", "source_id", "source_stream",
                                           "deliveries"};
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        char want[64];
        ctl_dead_letter d;
        redisReply *r = good_but(required[i], NULL, true);
        assert_int_equal(ctl_dead_letter_parse(r, &d), 0);
        snprintf(want, sizeof(want), "no %s field", required[i]);
        assert_string_equal(d.problem, want);
        freeReplyObject(r);
        r = good_but(required[i], NULL, false);     /* an integer instead of a string */
        assert_int_equal(ctl_dead_letter_parse(r, &d), 0);
        snprintf(want, sizeof(want), "field %s is not a string", required[i]);
        assert_string_equal(d.problem, want);
        freeReplyObject(r);
    }
    static const struct {
        const char *name, *value, *problem;
    } bad[] = {
        {"source_id", "12", "source_id is not a stream entry id"},
        {"source_id", "1-2:0", "source_id is not a stream entry id"},
        {"source_stream", "", "source_stream is not a stream name"},
        {"deliveries", "five", "deliveries is not a number"},
        {"deliveries", "", "deliveries is not a number"},
        {"deliveries", "-1", "deliveries is not a number"},
        {"deliveries", "9999999999999999999", "deliveries is not a number"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ctl_dead_letter d;
        redisReply *r = good_but(bad[i].name, bad[i].value, false);
        assert_int_equal(ctl_dead_letter_parse(r, &d), 0);
        assert_string_equal(d.problem, bad[i].problem);
        freeReplyObject(r);
    }
}

static void test_parse_duplicates_and_extra_fields(void **state)
{
    (void)state;
    const char *kv[NGOOD + 4];
    kv[0] = "reason";
    kv[1] = "first";
    memcpy(kv + 2, good, sizeof(good));
    kv[NGOOD + 2] = "unknown";
    kv[NGOOD + 3] = "ignored";
    redisReply *r = entry("5-5", kv, NGOOD + 4);
    ctl_dead_letter d;
    assert_int_equal(ctl_dead_letter_parse(r, &d), 0);
    assert_string_equal(d.problem, "");
    assert_int_equal(d.reason.len, 5);      /* the first of duplicates, as the consumer reads */
    freeReplyObject(r);
}

static void test_parse_bad_shapes(void **state)
{
    (void)state;
    static const char *const shapes[] = {
        ":1\r\n",                                       /* not an array */
        "*1\r\n$3\r\n1-1\r\n",                          /* one element */
        "*2\r\n:5\r\n*0\r\n",                           /* id not a string */
        "*2\r\n$5\r\nhello\r\n*0\r\n",                  /* id not a stream id */
        "*2\r\n$5\r\n\x1b[31m\r\n*0\r\n",               /* an escape sequence as the id */
        "*3\r\n$3\r\n1-1\r\n*0\r\n*0\r\n",              /* three elements */
    };
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        resp t = {0};
        put_raw(&t, shapes[i]);
        redisReply *r = parse(&t);
        ctl_dead_letter d;
        assert_int_equal(ctl_dead_letter_parse(r, &d), -1);
        assert_string_not_equal(d.problem, "");
        assert_null(strchr(d.problem, '\x1b'));
        freeReplyObject(r);
    }
    assert_int_equal(ctl_dead_letter_parse(NULL, &(ctl_dead_letter){0}), -1);
    static const struct {
        const char *text, *problem;
    } fields[] = {
        {"*2\r\n$3\r\n1-1\r\n$-1\r\n", "it has no fields (deleted?)"},
        {"*2\r\n$3\r\n1-1\r\n*-1\r\n", "it has no fields (deleted?)"},
        {"*2\r\n$3\r\n1-1\r\n$3\r\nmsg\r\n", "its fields are not a list of pairs"},
        {"*2\r\n$3\r\n1-1\r\n*1\r\n$3\r\nmsg\r\n", "its fields are not a list of pairs"},
        {"*2\r\n$3\r\n1-1\r\n*2\r\n:1\r\n$1\r\nx\r\n", "a field name is not a string"},
        {"*2\r\n$3\r\n1-1\r\n*2\r\n$3\r\nmsg\r\n*0\r\n", "field msg is not a string"},
        {"*2\r\n$3\r\n1-1\r\n*0\r\n", "no msg field"},
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        resp t = {0};
        put_raw(&t, fields[i].text);
        redisReply *r = parse(&t);
        ctl_dead_letter d;
        assert_int_equal(ctl_dead_letter_parse(r, &d), 0);
        assert_string_equal(d.id, "1-1");
        assert_string_equal(d.problem, fields[i].problem);
        freeReplyObject(r);
    }
}

static void test_unreplayable(void **state)
{
    (void)state;
    static const struct {
        const char *msg, *why;
    } cases[] = {
        {"", "no msg field"},
        {"not json", "not a JSON object"},
        {"[1,2]", "not a JSON object"},
        {"\"text\"", "not a JSON object"},
        {"{}", NULL},               /* the consumer judges the rest */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        redisReply *r = good_but("msg", cases[i].msg, false);
        ctl_dead_letter d;
        char buf[200];
        assert_int_equal(ctl_dead_letter_parse(r, &d), 0);
        assert_string_equal(d.problem, "");
        const char *why = ctl_dead_letter_unreplayable(&d, "pushgate:worksheets", buf,
                                                       sizeof(buf));
        if (cases[i].why)
            assert_non_null(strstr(why, cases[i].why));
        else
            assert_null(why);
        freeReplyObject(r);
    }
}

/* ---- --reason ---- */

static bool matches(const char *reason, const char *filter)
{
    return ctl_reason_matches((ctl_bytes){reason, strlen(reason)}, filter);
}

static void test_reason_filter(void **state)
{
    (void)state;
    const char *r = "gave up after 5 deliveries; last: gateway 127.0.0.1:9601 answered code "
                    "10500: MySQL failed";
    assert_true(matches(r, "10500"));
    assert_false(matches(r, "1050"));
    assert_false(matches(r, "105001"));
    assert_false(matches(r, "500"));
    assert_true(matches(r, "9601"));
    assert_true(matches(r, "5"));
    assert_true(matches(r, "mysql"));
    assert_true(matches(r, "GAVE UP"));
    assert_true(matches(r, "code 10500"));
    assert_false(matches(r, "code 1050 "));
    assert_false(matches(r, "malformed"));
    assert_true(matches("refused by gateway x: code 10201: bad token", "10201"));
    assert_true(matches("10500", "10500"));
    assert_false(matches("", "10500"));
    assert_false(ctl_reason_matches((ctl_bytes){NULL, 0}, "x"));
    assert_false(ctl_reason_matches((ctl_bytes){"a\0b", 3}, "b c"));
    assert_true(ctl_reason_matches((ctl_bytes){"a\0b 10500", 9}, "10500"));
}

/* ---- text out ---- */

static void excerpt_is(const char *text, size_t len, size_t max, const char *want)
{
    char *got = ctl_excerpt((ctl_bytes){text, len}, max);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_excerpt(void **state)
{
    (void)state;
    excerpt_is("short", 5, 10, "short");
    excerpt_is("exactly10!", 10, 10, "exactly10!");
    excerpt_is("eleven char", 11, 10, "eleven ch...");
    excerpt_is("", 0, 10, "");
    excerpt_is("a\nb\tc\rd", 7, 10, "a b c d");
    excerpt_is("\x1b[31mred", 8, 20, "?[31mred");
    excerpt_is("bell\x07\x7f", 6, 20, "bell??");
    excerpt_is("nul\0x", 5, 20, "nul?x");
    excerpt_is("caf\xc3\xa9 \xe2\x9c\x93", 9, 20, "caf\xc3\xa9 \xe2\x9c\x93");
    excerpt_is("\xff\xfe ok", 5, 20, "?? ok");
    excerpt_is("\xc2\x9b" "2J", 4, 20, "?2J");                    /* C1 CSI */
    excerpt_is("\xc0\xaf", 2, 20, "??");                          /* overlong '/' */
    excerpt_is("\xed\xa0\x80", 3, 20, "???");                     /* a surrogate */
    excerpt_is("\xe2\x9c", 2, 20, "??");                          /* cut short */
    /* a cut never splits a character: the last kept one gives way to "..." */
    excerpt_is("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 8, 3, "\xc3\xa9\xc3\xa9...");
}

static void shows(const char *msg, const char *fields, const char *want)
{
    const char *kv[NGOOD + 2];
    memcpy(kv, good, sizeof(good));
    kv[1] = msg;
    kv[NGOOD] = "fields";
    kv[NGOOD + 1] = fields;
    redisReply *r = entry("9-9", kv, fields ? NGOOD + 2 : NGOOD);
    ctl_dead_letter d;
    assert_int_equal(ctl_dead_letter_parse(r, &d), 0);
    char *got = ctl_dead_letter_excerpt(&d, 30);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
    freeReplyObject(r);
}

static void test_message_excerpt(void **state)
{
    (void)state;
    /* a work order: its data, not the url and chat_token */
    shows(GOOD_MSG, NULL, "[]");
    shows("{\"chat_token\":\"secret\",\"data\":[{\"uuid\":\"a\",\"data\":{\"infos\":\"long text "
          "here\"}}]}", NULL, "[{\"uuid\":\"a\",\"data\":{\"infos\":...");
    shows("{\"data\":\"\\u001b[2J\"}", NULL, "\"\\u001B[2J\"");      /* escaped by JSON */
    shows("{\"no\":\"data\"}", NULL, "{\"no\":\"data\"}");
    shows("plain\x1b[2J text", NULL, "plain?[2J text");
    shows("", "{\"body\":\"x\"}", "(no msg) {\"body\":\"x\"}");
    shows("", NULL, "(no msg) ");
}

static void test_json_text(void **state)
{
    (void)state;
    json_t *j = ctl_json_text((ctl_bytes){"caf\xc3\xa9\xff\0z", 8});
    assert_non_null(j);
    assert_int_equal(json_string_length(j), 10);
    assert_memory_equal(json_string_value(j), "caf\xc3\xa9\xef\xbf\xbd\0z", 10);
    char *dumped = json_dumps(j, JSON_ENCODE_ANY);
    assert_string_equal(dumped, "\"caf\xc3\xa9\xef\xbf\xbd\\u0000z\"");
    free(dumped);
    json_decref(j);
    j = ctl_json_text((ctl_bytes){NULL, 0});
    assert_string_equal(json_string_value(j), "");
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_ids),
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_original_id_from_fields),
        cmocka_unit_test(test_parse_missing_and_wrong_fields),
        cmocka_unit_test(test_parse_duplicates_and_extra_fields),
        cmocka_unit_test(test_parse_bad_shapes),
        cmocka_unit_test(test_unreplayable),
        cmocka_unit_test(test_reason_filter),
        cmocka_unit_test(test_excerpt),
        cmocka_unit_test(test_message_excerpt),
        cmocka_unit_test(test_json_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

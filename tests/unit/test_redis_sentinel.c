/* test_redis_sentinel.c - common/redis_sentinel.c: the setting
 * redis_sentinels, and what sentinels and servers answer, fed as the raw
 * bytes a server would send (hiredis's own reader builds the replies), so
 * every shape a broken or hostile server could send is one line here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>

#include "redis_sentinel.h"

/* The reply hiredis makes of len bytes (one whole reply); free with freeReplyObject. */
static redisReply *reply_len(const char *raw, size_t len)
{
    redisReader *rd = redisReaderCreate();
    assert_non_null(rd);
    assert_int_equal(redisReaderFeed(rd, raw, len), REDIS_OK);
    void *r = NULL;
    assert_int_equal(redisReaderGetReply(rd, &r), REDIS_OK);
    redisReaderFree(rd);
    assert_non_null(r);
    return r;
}

static redisReply *reply_of(const char *raw)
{
    return reply_len(raw, strlen(raw));
}

/* ---- the setting ---- */

static int parse(const char *text, pg_redis_addr *out, char *err)
{
    err[0] = '\0';
    return pg_redis_addrs_parse(text, out, 4, err, 256);
}

static void test_settings_good(void **state)
{
    (void)state;
    pg_redis_addr a[4];
    char err[256];
    assert_int_equal(parse("", a, err), 0);
    assert_int_equal(parse("  \t ", a, err), 0);
    assert_int_equal(parse(NULL, a, err), 0);
    assert_int_equal(parse("127.0.0.1:26379", a, err), 1);
    assert_string_equal(a[0].host, "127.0.0.1");
    assert_int_equal(a[0].port, 26379);
    assert_int_equal(parse(" sentinel-1:1 , sentinel_2.local:65535,[::1]:26379 ", a, err), 3);
    assert_string_equal(a[0].host, "sentinel-1");
    assert_int_equal(a[0].port, 1);
    assert_string_equal(a[1].host, "sentinel_2.local");
    assert_int_equal(a[1].port, 65535);
    assert_string_equal(a[2].host, "::1");
    char text[PG_REDIS_ADDR_MAX];
    pg_redis_addr_format(&a[2], text, sizeof(text));
    assert_string_equal(text, "[::1]:26379");
    pg_redis_addr_format(&a[1], text, sizeof(text));
    assert_string_equal(text, "sentinel_2.local:65535");
}

static void test_settings_bad(void **state)
{
    (void)state;
    static const struct {
        const char *text, *says;
    } cases[] = {
        {"127.0.0.1", "is not host:port"},
        {"127.0.0.1:", "port"},
        {"127.0.0.1:0", "port"},
        {"127.0.0.1:65536", "port"},
        {"127.0.0.1:+1", "port"},
        {"127.0.0.1:26379x", "port"},
        {"127.0.0.1:123456", "port"},
        {":26379", "not a host"},
        {"::1:26379", "not a host"},
        {"[127.0.0.1]:1", "not a host"},
        {"[]:1", "not a host"},
        {"a b:1", "not a host"},
        {"host/x:1", "not a host"},
        {"a:1,,b:2", "empty item"},
        {"a:1,", "empty item"},
        {",a:1", "empty item"},
        {"a:1, ,b:2", "empty item"},
        {"a:1,b:2,a:1", "listed twice"},
        {"a:1,b:1,c:1,d:1,e:1", "more than 4"},
        {"h\x01st:1", "not a host"},
    };
    pg_redis_addr a[4];
    char err[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (parse(cases[i].text, a, err) != -1 || !strstr(err, cases[i].says))
            fail_msg("'%s': got '%s', wanted '%s'", cases[i].text, err, cases[i].says);
        assert_non_null(strstr(err, "redis_sentinels: "));
        for (const char *p = err; *p; p++)
            assert_true(*p >= 0x20 && *p < 0x7f);   /* printable, also for \x01 */
    }
    char long_host[400];
    memset(long_host, 'h', 300);
    snprintf(long_host + 300, 100, ":1");
    assert_int_equal(parse(long_host, a, err), -1);
}

static void test_settings_check(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(pg_redis_sentinel_settings_check("", "", err, sizeof(err)), 0);
    assert_int_equal(pg_redis_sentinel_settings_check("a:1", "pushgate", err, sizeof(err)), 0);
    assert_int_equal(pg_redis_sentinel_settings_check("a:1", "", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "redis_master_name"));
    assert_int_equal(pg_redis_sentinel_settings_check("a:1", "two words", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "no space"));
    char name[200];
    memset(name, 'n', 150);
    name[150] = '\0';
    assert_int_equal(pg_redis_sentinel_settings_check("a:1", name, err, sizeof(err)), -1);
    assert_int_equal(pg_redis_sentinel_settings_check("a", "x", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "redis_sentinels"));
}

/* ---- SENTINEL get-master-addr-by-name ---- */

static void test_master_reply(void **state)
{
    (void)state;
    pg_redis_addr a;
    char why[256];
    redisReply *r = reply_of("*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n");
    assert_int_equal(pg_redis_master_reply(r, &a, why, sizeof(why)), 0);
    assert_string_equal(a.host, "127.0.0.1");
    assert_int_equal(a.port, 6380);
    freeReplyObject(r);
    r = reply_of("*2\r\n$7\r\nfe80::1\r\n$4\r\n6380\r\n");
    assert_int_equal(pg_redis_master_reply(r, &a, why, sizeof(why)), 0);
    assert_string_equal(a.host, "fe80::1");
    freeReplyObject(r);

    static const struct {
        const char *raw, *says;
    } bad[] = {
        {"*-1\r\n", "does not monitor"},
        {"$-1\r\n", "does not monitor"},
        {"-ERR unknown command 'SENTINEL'\r\n", "refused: ERR unknown command"},
        {"-ERR \x1b[31mred\r\n", "refused: ERR ?[31mred"},
        {"+OK\r\n", "a status"},
        {":6379\r\n", "an integer"},
        {"$9\r\n127.0.0.1\r\n", "a string"},
        {"*0\r\n", "not [host, port]"},
        {"*1\r\n$9\r\n127.0.0.1\r\n", "not [host, port]"},
        {"*3\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\n2\r\n", "not [host, port]"},
        {"*2\r\n$9\r\n127.0.0.1\r\n:6379\r\n", "not [host, port]"},
        {"*2\r\n*1\r\n$1\r\na\r\n$4\r\n6379\r\n", "not [host, port]"},
        {"*2\r\n$0\r\n\r\n$4\r\n6379\r\n", "host '', port '6379'"},
        {"*2\r\n$8\r\nbad host\r\n$4\r\n6379\r\n", "host 'bad host'"},
        {"*2\r\n$9\r\n127.0.0.1\r\n$6\r\n999999\r\n", "port '999999'"},
        {"*2\r\n$9\r\n127.0.0.1\r\n$1\r\n0\r\n", "port '0'"},
        {"*2\r\n$9\r\n127.0.0.1\r\n$2\r\n-1\r\n", "port '-1'"},
        {"*2\r\n$9\r\n127.0.0.1\r\n$0\r\n\r\n", "port ''"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = reply_of(bad[i].raw);
        why[0] = '\0';
        int rc = pg_redis_master_reply(r, &a, why, sizeof(why));
        freeReplyObject(r);
        if (rc != -1 || !strstr(why, bad[i].says))
            fail_msg("case %zu: rc %d, why '%s', wanted '%s'", i, rc, why, bad[i].says);
    }
    assert_int_equal(pg_redis_master_reply(NULL, &a, why, sizeof(why)), -1);
    static const char nul[] = "*2\r\n$5\r\na\0b.c\r\n$4\r\n6379\r\n";
    r = reply_len(nul, sizeof(nul) - 1);
    assert_int_equal(pg_redis_master_reply(r, &a, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "host 'a?b.c'"));
    freeReplyObject(r);

    /* a host of 300 characters is no host */
    char raw[512];
    char host[301];
    memset(host, 'h', 300);
    host[300] = '\0';
    snprintf(raw, sizeof(raw), "*2\r\n$300\r\n%s\r\n$4\r\n6379\r\n", host);
    r = reply_of(raw);
    assert_int_equal(pg_redis_master_reply(r, &a, why, sizeof(why)), -1);
    assert_true(strlen(why) < 200);     /* quoted, cut */
    freeReplyObject(r);
}

/* ---- ROLE ---- */

static void test_role(void **state)
{
    (void)state;
    char why[256];
    redisReply *r = reply_of("*3\r\n$6\r\nmaster\r\n:3129659\r\n*0\r\n");
    assert_true(pg_redis_role_is_primary(r, why, sizeof(why)));
    freeReplyObject(r);
    static const struct {
        const char *raw, *says;
    } no[] = {
        {"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n$9\r\nconnected\r\n:1\r\n",
         "its role is slave"},
        {"*2\r\n$8\r\nsentinel\r\n*0\r\n", "its role is sentinel"},
        {"*1\r\n$7\r\nmasterx\r\n", "its role is masterx"},
        {"*1\r\n$5\r\nmaste\r\n", "its role is maste"},
        {"*0\r\n", "an array"},
        {"*1\r\n:1\r\n", "an array"},
        {"-NOPERM no\r\n", "ROLE refused: NOPERM"},
        {"$6\r\nmaster\r\n", "a string"},
        {"+master\r\n", "a status"},
        {"*-1\r\n", "nil"},
    };
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        r = reply_of(no[i].raw);
        why[0] = '\0';
        bool primary = pg_redis_role_is_primary(r, why, sizeof(why));
        freeReplyObject(r);
        if (primary || !strstr(why, no[i].says))
            fail_msg("case %zu: primary %d, why '%s', wanted '%s'", i, primary, why, no[i].says);
    }
    assert_false(pg_redis_role_is_primary(NULL, why, sizeof(why)));
}

/* ---- +switch-master ---- */

static int sw(const char *text, pg_redis_addr *a)
{
    return pg_redis_switch_parse(text, strlen(text), "pushgate", a);
}

static void test_switch_master(void **state)
{
    (void)state;
    pg_redis_addr a = {"unchanged", 1};
    assert_int_equal(sw("pushgate 127.0.0.1 6379 127.0.0.1 6380", &a), 1);
    assert_string_equal(a.host, "127.0.0.1");
    assert_int_equal(a.port, 6380);
    assert_int_equal(sw("other 127.0.0.1 6379 10.0.0.2 6380", &a), 0);
    assert_int_equal(sw("pushgatex 127.0.0.1 6379 10.0.0.2 6380", &a), 0);
    assert_int_equal(sw("pushgat 127.0.0.1 6379 10.0.0.2 6380", &a), 0);
    assert_int_equal(sw("pushgate ::1 6379 fe80::2 6380", &a), 1);
    assert_string_equal(a.host, "fe80::2");
    static const char *const bad[] = {
        "", " ", "pushgate", "pushgate 127.0.0.1 6379 127.0.0.1",
        "pushgate 127.0.0.1 6379 127.0.0.1 6380 extra",
        "pushgate  127.0.0.1 6379 127.0.0.1 6380", " pushgate 127.0.0.1 6379 127.0.0.1 6380",
        "pushgate 127.0.0.1 6379 127.0.0.1 6380 ", "pushgate 127.0.0.1 6379 127.0.0.1 0",
        "pushgate 127.0.0.1 6379 127.0.0.1 65536", "pushgate 127.0.0.1 x 127.0.0.1 6380",
        "pushgate 127.0.0.1 6379 bad/host 6380", "pushgate 127.0.0.1 6379 127.0.0.1 6380\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        strcpy(a.host, "unchanged");
        if (sw(bad[i], &a) != -1)
            fail_msg("'%s' was taken", bad[i]);
        assert_string_equal(a.host, "unchanged");
    }
    /* a NUL inside is not the end of the text */
    const char nul[] = "pushgate 127.0.0.1 6379 127.0.0.1 6380\0 x";
    assert_int_equal(pg_redis_switch_parse(nul, sizeof(nul) - 1, "pushgate", &a), -1);
}

static void test_printable(void **state)
{
    (void)state;
    char out[8];
    pg_redis_printable("abc", 3, out, sizeof(out));
    assert_string_equal(out, "abc");
    pg_redis_printable("a\nb\x80", 4, out, sizeof(out));
    assert_string_equal(out, "a?b?");
    pg_redis_printable("abcdefghij", 10, out, sizeof(out));
    assert_string_equal(out, "abcd...");
    pg_redis_printable("abc", 3, out, 1);
    assert_string_equal(out, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_settings_good),  cmocka_unit_test(test_settings_bad),
        cmocka_unit_test(test_settings_check), cmocka_unit_test(test_master_reply),
        cmocka_unit_test(test_role),           cmocka_unit_test(test_switch_master),
        cmocka_unit_test(test_printable),
    };
    return cmocka_run_group_tests_name("redis_sentinel", tests, NULL, NULL);
}

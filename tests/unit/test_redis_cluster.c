/* test_redis_cluster.c - common/redis_cluster.c: the setting stream as a
 * set of shards, the checksums (known values of the Redis Cluster
 * specification and of zlib's crc32), the setting redis_cluster_nodes, and
 * CLUSTER SLOTS fed as the raw bytes a server would send. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>

#include "redis_cluster.h"

static redisReply *reply_of(const char *raw)
{
    redisReader *rd = redisReaderCreate();
    assert_non_null(rd);
    assert_int_equal(redisReaderFeed(rd, raw, strlen(raw)), REDIS_OK);
    void *r = NULL;
    assert_int_equal(redisReaderGetReply(rd, &r), REDIS_OK);
    redisReaderFree(rd);
    assert_non_null(r);
    return r;
}

/* ---- the setting stream ---- */

static void test_set_single(void **state)
{
    (void)state;
    pg_stream_set s;
    char err[256];
    assert_int_equal(pg_stream_set_parse("pushgate:worksheets", &s, err, sizeof(err)), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.names[0], "pushgate:worksheets");
    pg_stream_set_free(&s);
    /* braces without a range are part of the name */
    assert_int_equal(pg_stream_set_parse("a:{x}", &s, err, sizeof(err)), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.names[0], "a:{x}");
    pg_stream_set_free(&s);
}

static void test_set_range(void **state)
{
    (void)state;
    pg_stream_set s;
    char err[256];
    assert_int_equal(pg_stream_set_parse("pushgate:worksheets:{0..7}", &s, err, sizeof(err)), 0);
    assert_int_equal(s.n, 8);
    assert_string_equal(s.names[0], "pushgate:worksheets:{0}");
    assert_string_equal(s.names[7], "pushgate:worksheets:{7}");
    assert_int_equal(pg_stream_set_find(&s, "pushgate:worksheets:{3}", 23), 3);
    assert_int_equal(pg_stream_set_find(&s, "pushgate:worksheets", 19), -1);
    pg_stream_set_free(&s);
    assert_int_equal(pg_stream_set_parse(" a , q:{10..12}:x ,b", &s, err, sizeof(err)), 0);
    assert_int_equal(s.n, 5);
    assert_string_equal(s.names[0], "a");
    assert_string_equal(s.names[1], "q:{10}:x");
    assert_string_equal(s.names[3], "q:{12}:x");
    assert_string_equal(s.names[4], "b");
    pg_stream_set_free(&s);
    assert_int_equal(pg_stream_set_parse("s{0..1023}", &s, err, sizeof(err)), 0);
    assert_int_equal(s.n, PG_STREAMS_MAX);
    pg_stream_set_free(&s);
}

static void bad(const char *text, const char *needle)
{
    pg_stream_set s;
    char err[256] = "";
    assert_int_equal(pg_stream_set_parse(text, &s, err, sizeof(err)), -1);
    assert_int_equal(s.n, 0);
    assert_null(s.names);
    if (!strstr(err, needle))
        fail_msg("'%s': '%s' has no '%s'", text, err, needle);
}

static void test_set_bad(void **state)
{
    (void)state;
    bad("", "empty");
    bad(NULL, "empty");
    bad("a,,b", "empty");
    bad("a,", "empty");
    bad("a b", "blanks");
    bad("s:{7..0}", "range");
    bad("s:{0..}", "range");
    bad("s:{..3}", "range");
    bad("s:{01..3}", "range");
    bad("s:{a..b}", "range");
    bad("s:{0..3", "range");
    bad("s:0..3", "outside a range");
    bad("s:{0..1}{2..3}", "one range");
    bad("s:{0..1024}", "more than 1024");
    bad("s:{0..999999999}", "more than 1024");
    bad("s:{9999999999..9999999999}", "range");
    bad("s{0..600},t{0..600}", "more than 1024");
    bad("a,b,a", "twice");
    bad("s:{0..3},s:{2}", "twice");
    char longname[PG_STREAM_NAME_MAX + 2];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    bad(longname, "longer");
}

/* ---- checksums ---- */

static void test_crc16_slots(void **state)
{
    (void)state;
    assert_int_equal(pg_cluster_crc16("123456789", 9), 0x31c3);   /* the spec's check value */
    assert_int_equal(pg_cluster_crc16("", 0), 0);
    assert_int_equal(pg_cluster_key_slot("foo", 3), 12182);
    assert_int_equal(pg_cluster_key_slot("bar", 3), 5061);
    assert_int_equal(pg_cluster_key_slot("hello", 5), 866);
    /* hash tags: the first {...} that is not empty */
    assert_int_equal(pg_cluster_key_slot("{user1000}.following", 20),
                     pg_cluster_key_slot("user1000", 8));
    assert_int_equal(pg_cluster_key_slot("foo{}{bar}", 10), pg_cluster_crc16("foo{}{bar}", 10) & 16383);
    assert_int_equal(pg_cluster_key_slot("foo{{bar}}zap", 13), pg_cluster_key_slot("{bar", 4));
    assert_int_equal(pg_cluster_key_slot("foo{bar}{zap}", 13), pg_cluster_key_slot("bar", 3));
    assert_int_equal(pg_cluster_key_slot("pushgate:worksheets:{3}", 23),
                     pg_cluster_key_slot("3", 1));
    assert_int_equal(pg_cluster_key_slot("{", 1), pg_cluster_crc16("{", 1) & 16383);
}

static void test_crc32_shard(void **state)
{
    (void)state;
    assert_int_equal(pg_crc32("123456789", 9), 0xcbf43926u);   /* zlib's, PHP's crc32() */
    assert_int_equal(pg_crc32("", 0), 0);
    assert_int_equal(pg_crc32("The quick brown fox jumps over the lazy dog", 43), 0x414fa339u);
    assert_int_equal(pg_stream_shard("123456789", 9, 8), 0xcbf43926u % 8);
    assert_int_equal(pg_stream_shard("x", 1, 1), 0);
    assert_int_equal(pg_stream_shard("x", 1, 0), 0);
}

/* ---- redis_cluster_nodes ---- */

static void test_nodes(void **state)
{
    (void)state;
    pg_redis_addr a[PG_CLUSTER_NODES_MAX];
    char err[256];
    assert_int_equal(pg_cluster_nodes_parse("", a, PG_CLUSTER_NODES_MAX, err, sizeof(err)), 0);
    assert_int_equal(pg_cluster_nodes_parse("127.0.0.1:7000, 127.0.0.1:7001", a,
                                            PG_CLUSTER_NODES_MAX, err, sizeof(err)), 2);
    assert_int_equal(a[1].port, 7001);
    assert_int_equal(pg_cluster_nodes_parse("127.0.0.1", a, PG_CLUSTER_NODES_MAX, err,
                                            sizeof(err)), -1);
    assert_non_null(strstr(err, "redis_cluster_nodes: "));
    assert_null(strstr(err, "sentinel"));
    assert_int_equal(pg_cluster_nodes_parse("a:1,b:2,c:3", a, 2, err, sizeof(err)), -1);
    assert_string_equal(err, "redis_cluster_nodes: more than 2 nodes");
}

/* ---- CLUSTER SLOTS ---- */

static void test_slots_good(void **state)
{
    (void)state;
    pg_redis_addr asked = {"127.0.0.1", 7000};
    pg_cluster_map m;
    char why[256];
    redisReply *r = reply_of(
        "*3\r\n"
        "*4\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$3\r\nid1\r\n"
        "*3\r\n$9\r\n127.0.0.1\r\n:7003\r\n$3\r\nid4\r\n"
        "*3\r\n:5461\r\n:10922\r\n*4\r\n$9\r\n127.0.0.2\r\n:7001\r\n$3\r\nid2\r\n*0\r\n"
        "*3\r\n:10923\r\n:16383\r\n*2\r\n$0\r\n\r\n:7002\r\n");
    assert_int_equal(pg_cluster_slots_parse(r, &asked, &m, why, sizeof(why)), 0);
    assert_int_equal(m.n, 3);
    assert_string_equal(pg_cluster_map_owner(&m, 0)->host, "127.0.0.1");
    assert_int_equal(pg_cluster_map_owner(&m, 5460)->port, 7000);
    assert_string_equal(pg_cluster_map_owner(&m, 5461)->host, "127.0.0.2");
    assert_int_equal(pg_cluster_map_owner(&m, 10922)->port, 7001);
    /* an empty host: the node asked */
    assert_string_equal(pg_cluster_map_owner(&m, 16383)->host, "127.0.0.1");
    assert_int_equal(pg_cluster_map_owner(&m, 16383)->port, 7002);
    assert_null(pg_cluster_map_owner(&m, 16384));
    assert_null(pg_cluster_map_owner(&m, -1));
    pg_cluster_map_free(&m);
    freeReplyObject(r);
    /* slots left uncovered have no owner */
    r = reply_of("*1\r\n*3\r\n:100\r\n:100\r\n*2\r\n$4\r\nhost\r\n:1\r\n");
    assert_int_equal(pg_cluster_slots_parse(r, NULL, &m, why, sizeof(why)), 0);
    assert_non_null(pg_cluster_map_owner(&m, 100));
    assert_null(pg_cluster_map_owner(&m, 99));
    pg_cluster_map_free(&m);
    freeReplyObject(r);
}

static void slots_bad(const char *raw, const char *needle)
{
    pg_redis_addr asked = {"127.0.0.1", 7000};
    pg_cluster_map m;
    char why[256] = "";
    redisReply *r = reply_of(raw);
    assert_int_equal(pg_cluster_slots_parse(r, &asked, &m, why, sizeof(why)), -1);
    assert_null(m.ranges);
    assert_int_equal(m.n, 0);
    if (!strstr(why, needle))
        fail_msg("'%s' has no '%s'", why, needle);
    freeReplyObject(r);
}

static void test_slots_bad(void **state)
{
    (void)state;
    slots_bad("-ERR This instance has cluster support disabled\r\n", "refused: ERR This");
    slots_bad("+OK\r\n", "not an array");
    slots_bad("*0\r\n", "no slots");
    slots_bad("*1\r\n:1\r\n", "range 0");
    slots_bad("*1\r\n*2\r\n:0\r\n:1\r\n", "range 0");
    slots_bad("*1\r\n*3\r\n:5\r\n:4\r\n*2\r\n$1\r\nh\r\n:1\r\n", "range 0");
    slots_bad("*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n", "range 0");
    slots_bad("*1\r\n*3\r\n:-1\r\n:1\r\n*2\r\n$1\r\nh\r\n:1\r\n", "range 0");
    slots_bad("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:0\r\n", "range 0");
    slots_bad("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n$4\r\n7000\r\n", "range 0");
    slots_bad("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\n?\r\n:1\r\n", "range 0");
    slots_bad("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$3\r\na\nb\r\n:1\r\n", "range 0");
    slots_bad("*2\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:1\r\n$1\r\nx\r\n", "range 1");
    pg_cluster_map m;
    char why[64];
    assert_int_equal(pg_cluster_slots_parse(NULL, NULL, &m, why, sizeof(why)), -1);
}

static void test_redirect(void **state)
{
    (void)state;
    assert_true(pg_cluster_is_redirect("MOVED 3999 127.0.0.1:6381", 25));
    assert_true(pg_cluster_is_redirect("ASK 3999 127.0.0.1:6381", 23));
    assert_false(pg_cluster_is_redirect("MOVED", 5));
    assert_false(pg_cluster_is_redirect("ERR x", 5));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_single),  cmocka_unit_test(test_set_range),
        cmocka_unit_test(test_set_bad),     cmocka_unit_test(test_crc16_slots),
        cmocka_unit_test(test_crc32_shard), cmocka_unit_test(test_nodes),
        cmocka_unit_test(test_slots_good),  cmocka_unit_test(test_slots_bad),
        cmocka_unit_test(test_redirect),
    };
    return cmocka_run_group_tests_name("redis_cluster", tests, NULL, NULL);
}

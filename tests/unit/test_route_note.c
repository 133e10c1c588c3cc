/* test_route_note.c - unit tests for common/route_note.c: the notes of the
 * route feed, which every gateway and the consumer parse from Redis. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "route_note.h"

static int parse(const char *text, pg_route_note *note)
{
    return pg_route_note_parse(text, strlen(text), note);
}

static void reads_every_form(void **state)
{
    (void)state;
    pg_route_note n;
    assert_int_equal(parse("u agent-7", &n), 0);
    assert_int_equal(n.kind, 'u');
    assert_string_equal(n.uuid, "agent-7");
    assert_string_equal(n.node_id, "");
    assert_int_equal(parse("u agent-7 10.0.0.5:9601", &n), 0);
    assert_string_equal(n.uuid, "agent-7");
    assert_string_equal(n.node_id, "10.0.0.5:9601");
    assert_int_equal(parse("u a@b.c:d ::1:9601", &n), 0);
    assert_string_equal(n.uuid, "a@b.c:d");
    assert_string_equal(n.node_id, "::1:9601");
    assert_int_equal(parse("h 10.0.0.5:9601", &n), 0);
    assert_int_equal(n.kind, 'h');
    assert_string_equal(n.node_id, "10.0.0.5:9601");
}

static void formats_what_it_parses(void **state)
{
    (void)state;
    char text[PG_ROUTE_NOTE_MAX];
    pg_route_note n;
    int len = pg_route_note_format(text, "agent-7", "127.0.0.1:9601");
    assert_int_equal(len, (int)strlen("u agent-7 127.0.0.1:9601"));
    assert_int_equal(pg_route_note_parse(text, (size_t)len, &n), 0);
    assert_string_equal(n.uuid, "agent-7");
    assert_string_equal(n.node_id, "127.0.0.1:9601");
    assert_int_equal(pg_route_note_format(text, "agent-7", NULL), 9);
    assert_string_equal(text, "u agent-7");
    /* the longest of both parts fits */
    char uuid[PG_UUID_MAX + 2], node[PG_NODE_ID_MAX + 2];
    memset(uuid, 'u', sizeof(uuid));
    memset(node, 'n', sizeof(node));
    uuid[PG_UUID_MAX] = node[PG_NODE_ID_MAX] = '\0';
    len = pg_route_note_format(text, uuid, node);
    assert_int_equal(len, PG_ROUTE_NOTE_MAX - 1);
    assert_int_equal(pg_route_note_parse(text, (size_t)len, &n), 0);
    /* one byte more of either is refused */
    uuid[PG_UUID_MAX] = 'u';
    uuid[PG_UUID_MAX + 1] = '\0';
    assert_int_equal(pg_route_note_format(text, uuid, NULL), -1);
    node[PG_NODE_ID_MAX] = 'n';
    node[PG_NODE_ID_MAX + 1] = '\0';
    assert_int_equal(pg_route_note_format(text, "a", node), -1);
    assert_int_equal(pg_route_note_format(text, "", NULL), -1);
    assert_int_equal(pg_route_note_format(text, "a", ""), -1);
}

static void refuses_what_is_not_a_note(void **state)
{
    (void)state;
    pg_route_note n;
    const char *bad[] = {"", "u", "u ", "x agent", "uagent", "u  agent", "u agent ",
                         "u agent node extra", "h", "h a b", "u a\tb", "u a\x7f",
                         "h " /* empty node */};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(parse(bad[i], &n), -1);
    /* a NUL inside is a control byte, not an end */
    assert_int_equal(pg_route_note_parse("u a\0b", 5, &n), -1);
    char long_uuid[2 + PG_UUID_MAX + 1];
    memset(long_uuid, 'a', sizeof(long_uuid));
    long_uuid[0] = 'u';
    long_uuid[1] = ' ';
    assert_int_equal(pg_route_note_parse(long_uuid, sizeof(long_uuid) - 1, &n), 0);
    assert_int_equal(pg_route_note_parse(long_uuid, sizeof(long_uuid), &n), -1);
}

static void hashes_by_bytes_and_never_to_zero(void **state)
{
    (void)state;
    assert_true(pg_route_uuid_hash("agent-7", 7) == pg_route_uuid_hash("agent-7x", 7));
    assert_true(pg_route_uuid_hash("agent-7", 7) != pg_route_uuid_hash("agent-8", 7));
    assert_true(pg_route_uuid_hash("", 0) != 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reads_every_form),
        cmocka_unit_test(formats_what_it_parses),
        cmocka_unit_test(refuses_what_is_not_a_note),
        cmocka_unit_test(hashes_by_bytes_and_never_to_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

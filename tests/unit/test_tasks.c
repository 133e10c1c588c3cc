/* test_tasks.c - unit tests for the parts of gateway/tasks.c that read
 * MySQL rows, without MySQL: rows are handed to the row callbacks as
 * libmariadb would.
 *
 * jansson is not built with the sanitizers, so a use of a JSON value after
 * jansson freed it goes unseen by ASan.  These tests give jansson an
 * allocator that puts each block on pages of its own and takes the pages
 * away when the block is freed: such a use then crashes the test.
 *
 * tasks.c is compiled in by inclusion to reach its static functions; the
 * gateway library linked after it then adds nothing of tasks.c's own. */
#include "../../gateway/tasks.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

gw_context gw;   /* main.c's, which the library leaves out */

/* ---- a guarded allocator for jansson ---- */

typedef struct {
    size_t map_len;
    size_t pad;      /* keeps the block 16-byte aligned */
} guard_head;

static void *guard_malloc(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t len = (sizeof(guard_head) + n + page - 1) / page * page;
    guard_head *h = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (h == MAP_FAILED)
        return NULL;
    h->map_len = len;
    return h + 1;
}

/* The pages stay mapped but unreadable: a later use faults. */
static void guard_free(void *p)
{
    if (!p)
        return;
    guard_head *h = (guard_head *)p - 1;
    mprotect(h, h->map_len, PROT_NONE);
}

static int use_guarded_json(void **state)
{
    (void)state;
    json_set_alloc_funcs(guard_malloc, guard_free);
    return 0;
}

static int use_plain_json(void **state)
{
    (void)state;
    json_set_alloc_funcs(malloc, free);
    return 0;
}

/* ---- online_clients rows ---- */

static void route_row(route_rows *rows, const char *uuid, size_t uuid_len, long long session)
{
    pg_db_value cols[5] = {
        PG_DB_STR_VALUE("client-id"),
        {.type = PG_DB_STRING, .s = uuid, .len = uuid_len},
        PG_DB_STR_VALUE("10.0.0.2"),
        PG_DB_INT_VALUE(9601),
        PG_DB_INT_VALUE(session),
    };
    assert_int_equal(collect_route(rows, cols, 5), 0);
}

static void test_route_rows_are_grouped_by_uuid(void **state)
{
    (void)state;
    route_rows rows = {.by_uuid = json_object()};
    route_row(&rows, "agent-1", 7, 11);
    route_row(&rows, "agent-1", 7, 12);
    route_row(&rows, "agent-2", 7, 13);
    assert_int_equal(json_object_size(rows.by_uuid), 2);
    json_t *list = json_object_get(rows.by_uuid, "agent-1");
    assert_int_equal(json_array_size(list), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(list, 1), "session")), 12);
    json_decref(rows.by_uuid);
}

/* A uuid of KELVIN SIGNs (3 bytes each), as a case-insensitive table may
 * return for an order's "k"s: cut to PG_UUID_MAX bytes it ends inside a
 * character, and jansson refuses it as a key (and frees the new list). */
static void test_route_row_with_uuid_cut_inside_a_character(void **state)
{
    (void)state;
    char uuid[1 + 39 * 3];
    uuid[0] = 'a';
    for (int i = 0; i < 39; i++)
        memcpy(uuid + 1 + 3 * i, "\xe2\x84\xaa", 3);
    route_rows rows = {.by_uuid = json_object()};
    route_row(&rows, uuid, sizeof(uuid), 21);
    assert_int_equal(json_object_size(rows.by_uuid), 0);
    /* a plain over-long uuid is not cut to another uuid's name either */
    char longer[PG_UUID_MAX + 2];
    memset(longer, 'b', sizeof(longer));
    route_row(&rows, longer, sizeof(longer), 22);
    assert_int_equal(json_object_size(rows.by_uuid), 0);
    route_row(&rows, "agent-3", 7, 23);
    assert_int_equal(json_object_size(rows.by_uuid), 1);
    json_decref(rows.by_uuid);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_route_rows_are_grouped_by_uuid, use_guarded_json,
                                        use_plain_json),
        cmocka_unit_test_setup_teardown(test_route_row_with_uuid_cut_inside_a_character,
                                        use_guarded_json, use_plain_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_tasks.c - unit tests for the parts of gateway/tasks.c that read
 * MySQL rows, without MySQL: rows are handed to the row callbacks as
 * libmariadb would.
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

#include <cmocka.h>

gw_context gw;   /* main.c's, which the library leaves out */

/* ---- online_clients rows ---- */

static gw_counters counters;   /* each_target reads draining */

static void route_row_of(route_rows *rows, const char *uuid, size_t uuid_len, long long session)
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

typedef struct {
    long long sessions[8];
    size_t n;
} seen_targets;

static void note_target(const route_row *row, int local, void *arg)
{
    seen_targets *seen = arg;
    assert_false(local);   /* 10.0.0.2 is not this node */
    assert_string_equal(row->ip, "10.0.0.2");
    assert_string_equal(row->client_id, "client-id");
    assert_int_equal(row->port, 9601);
    seen->sessions[seen->n++] = row->session;
}

static size_t targets_of(route_rows *rows, const char *uuid, seen_targets *seen)
{
    *seen = (seen_targets){0};
    return each_target(rows, uuid, 0, note_target, seen);
}

/* Rows come back in any order; each uuid's are found together, in the
 * order of the answer. */
static void test_route_rows_are_grouped_by_uuid(void **state)
{
    (void)state;
    gw.counters = &counters;
    snprintf(gw.node_ip, sizeof(gw.node_ip), "10.0.0.1");
    route_rows rows = {0};
    route_row_of(&rows, "agent-2", 7, 13);
    route_row_of(&rows, "agent-1", 7, 11);
    route_row_of(&rows, "agent-3", 7, 14);
    route_row_of(&rows, "agent-1", 7, 12);
    qsort(rows.v, rows.n, sizeof(*rows.v), by_uuid);
    seen_targets seen;
    assert_int_equal(targets_of(&rows, "agent-1", &seen), 2);
    assert_int_equal(seen.sessions[0], 11);
    assert_int_equal(seen.sessions[1], 12);
    assert_int_equal(targets_of(&rows, "agent-2", &seen), 1);
    assert_int_equal(seen.sessions[0], 13);
    assert_int_equal(targets_of(&rows, "agent-3", &seen), 1);
    assert_int_equal(targets_of(&rows, "agent-0", &seen), 0);
    assert_int_equal(targets_of(&rows, "agent-4", &seen), 0);
    route_rows_free(&rows);
}

/* A uuid of KELVIN SIGNs (3 bytes each), as a case-insensitive table may
 * return for an order's "k"s: longer than any uuid an order can name, it
 * is skipped, and so is one that is not UTF-8. */
static void test_route_rows_no_order_can_name_are_skipped(void **state)
{
    (void)state;
    char uuid[1 + 39 * 3];
    uuid[0] = 'a';
    for (int i = 0; i < 39; i++)
        memcpy(uuid + 1 + 3 * i, "\xe2\x84\xaa", 3);
    route_rows rows = {0};
    route_row_of(&rows, uuid, sizeof(uuid), 21);
    route_row_of(&rows, uuid, 21, 22);   /* cut inside a character */
    assert_int_equal(rows.n, 0);
    /* a plain over-long uuid is not cut to another uuid's name either */
    char longer[PG_UUID_MAX + 2];
    memset(longer, 'b', sizeof(longer));
    route_row_of(&rows, longer, sizeof(longer), 23);
    assert_int_equal(rows.n, 0);
    route_row_of(&rows, "agent-3", 7, 24);
    assert_int_equal(rows.n, 1);
    route_rows_free(&rows);
}

/* A list of uuids is made distinct and sorted; NULLs go. */
static void test_uuid_lists_are_made_distinct(void **state)
{
    (void)state;
    const char *uuids[] = {"b", NULL, "a", "b", "c", "a", NULL};
    size_t n = distinct(uuids, sizeof(uuids) / sizeof(uuids[0]));
    assert_int_equal(n, 3);
    assert_string_equal(uuids[0], "a");
    assert_string_equal(uuids[1], "b");
    assert_string_equal(uuids[2], "c");
}

/* Stored messages gather in a page until the next would pass the size of
 * a task's answer; the page then says there is more, and reads back from
 * the answer as gathered. */
static void test_offline_page_stops_at_the_answer_budget(void **state)
{
    (void)state;
    gw.server_cfg.package_max_length = 100;
    char payload[61];
    memset(payload, 'p', 60);
    payload[60] = '\0';
    pg_db_value first[3] = {PG_DB_INT_VALUE(5), PG_DB_STR_VALUE("m-1"), PG_DB_STR_VALUE(payload)};
    pg_db_value second[3] = {PG_DB_INT_VALUE(6), PG_DB_STR_VALUE("m-2"), PG_DB_STR_VALUE(payload)};
    offline_page page = {.n = 0};
    assert_int_equal(collect_offline(&page, first, 3), 0);
    assert_int_equal(collect_offline(&page, second, 3), 1);   /* 63 + 60 > 100: stop */
    assert_int_equal(page.n, 1);
    assert_true(page.more && page.last_id == 5);
    pg_rec_writer w = {0};
    put_page(&w, gw_pages_begin(&w, GW_TASK_PAGED, 0), (gw_page){.session = 3, .uuid = "agent-1"},
             PG_OK, &page);
    gw_pages t;
    assert_int_equal(gw_pages_get(w.data, w.len, &t), 0);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.pages[0].n, 1);
    assert_true(t.pages[0].more && t.pages[0].after == 5 && t.pages[0].session == 3);
    assert_string_equal(t.pages[0].messages[0].msg_id, "m-1");
    assert_string_equal(t.pages[0].messages[0].payload, payload);
    gw_pages_free(&t);
    pg_rec_writer_free(&w);
    pg_rec_writer_free(&page.messages);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_rows_are_grouped_by_uuid),
        cmocka_unit_test(test_route_rows_no_order_can_name_are_skipped),
        cmocka_unit_test(test_uuid_lists_are_made_distinct),
        cmocka_unit_test(test_offline_page_stops_at_the_answer_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

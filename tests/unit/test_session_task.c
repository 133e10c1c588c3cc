/* test_session_task.c - unit tests for gateway/session_task.c: the
 * sessions' task records read back as written, and a record cut short,
 * or one whose counts promise more than it holds, is refused whole. */
#include "gateway.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

gw_context gw;   /* main.c's, which the library leaves out */

/* A registration's answer: a page of two messages with more to come, and
 * a failed session with none. */
static pg_rec_writer registered_answer(void)
{
    pg_rec_writer w = {0}, messages = {0};
    size_t count_at = gw_pages_begin(&w, GW_TASK_REGISTERED, 2);
    gw_page_message_put(&messages, "m-1", 3, "{\"id\":\"m-1\"}", 12);
    gw_page_message_put(&messages, "m-2xx", 3, "{}", 2);   /* lengths count, not NULs */
    gw_page first = {.session = 11, .uuid = "agent-1", .code = PG_OK, .more = 1, .after = 41,
                     .n = 2};
    gw_pages_put(&w, count_at, &first, &messages);
    gw_page failed = {.session = 12, .uuid = "agent-2", .code = PG_ERR_INTERNAL, .again = 1};
    gw_pages_put(&w, count_at, &failed, NULL);
    pg_rec_writer_free(&messages);
    assert_int_equal(pg_rec_written(&w), 0);
    return w;
}

static void pages_read_back(void **state)
{
    (void)state;
    pg_rec_writer w = registered_answer();
    gw_pages t;
    assert_int_equal(gw_pages_get(w.data, w.len, &t), 0);
    assert_int_equal(t.head.op, GW_TASK_REGISTERED);
    assert_int_equal(t.task_worker, 2);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.pages[0].session, 11);
    assert_string_equal(t.pages[0].uuid, "agent-1");
    assert_true(t.pages[0].more && t.pages[0].after == 41 && !t.pages[0].again);
    assert_int_equal(t.pages[0].n, 2);
    assert_string_equal(t.pages[0].messages[0].msg_id, "m-1");
    assert_string_equal(t.pages[0].messages[0].payload, "{\"id\":\"m-1\"}");
    assert_string_equal(t.pages[0].messages[1].msg_id, "m-2");
    assert_string_equal(t.pages[0].messages[1].payload, "{}");
    assert_int_equal(t.pages[1].code, PG_ERR_INTERNAL);
    assert_true(t.pages[1].again && t.pages[1].n == 0);
    gw_pages_free(&t);
    pg_rec_writer_free(&w);
}

static void pages_cut_short_are_refused(void **state)
{
    (void)state;
    pg_rec_writer w = registered_answer();
    for (size_t cut = 0; cut < w.len; cut++) {
        char *copy = malloc(cut ? cut : 1);
        memcpy(copy, w.data, cut);
        gw_pages t;
        assert_int_equal(gw_pages_get(copy, cut, &t), -1);
        assert_null(t.pages);
        free(copy);
    }
    pg_rec_writer_free(&w);
}

/* A count of pages far beyond what the record holds sizes nothing. */
static void a_count_beyond_the_record_is_refused(void **state)
{
    (void)state;
    pg_rec_writer w = {0};
    gw_pages_begin(&w, GW_TASK_PAGED, 1);
    uint32_t huge = UINT32_MAX - 1;
    memcpy(w.data + w.len - 4, &huge, 4);
    gw_pages t;
    assert_int_equal(gw_pages_get(w.data, w.len, &t), -1);
    pg_rec_writer_free(&w);
}

static void sessions_read_back_and_trailing_bytes_are_refused(void **state)
{
    (void)state;
    gw_session_ref *v[2] = {gw_session_ref_new(11, "agent-1", "Y2xpZW50", 0),
                            gw_session_ref_new(12, "agent-2", "b3RoZXI=", 1)};
    pg_rec_writer w = {0};
    assert_int_equal(gw_sessions_task_put(&w, GW_TASK_REGISTER, v, 2), 0);
    gw_sessions_task t;
    assert_int_equal(gw_sessions_task_get(w.data, w.len, &t), 0);
    assert_int_equal(t.head.op, GW_TASK_REGISTER);
    assert_int_equal(t.n, 2);
    assert_string_equal(t.sessions[1].uuid, "agent-2");
    assert_string_equal(t.sessions[1].client_id, "b3RoZXI=");
    assert_true(t.sessions[1].session == 12 && t.sessions[1].again);
    gw_sessions_task_free(&t);
    pg_rec_put_u8(&w, 0);
    assert_int_equal(gw_sessions_task_get(w.data, w.len, &t), -1);
    pg_rec_writer_free(&w);
    free(v[0]);
    free(v[1]);
}

static void acks_uuids_and_tokens_read_back(void **state)
{
    (void)state;
    gw_ack_ref *a = gw_ack_ref_new("agent-1", "m-1");
    pg_rec_writer w = {0};
    assert_int_equal(gw_acks_task_put(&w, &a, 1), 0);
    gw_ack_ref *acks;
    uint32_t n;
    assert_int_equal(gw_acks_task_get(w.data, w.len, &acks, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(acks[0].msg_id, "m-1");
    free(acks);
    pg_rec_writer_free(&w);
    free(a);

    const char *list[] = {"agent-1", "agent-2"};
    const char **uuids;
    assert_int_equal(gw_uuids_put(&w, GW_TASK_UNREGISTERED, list, 2), 0);
    assert_int_equal(gw_uuids_get(w.data, w.len, &uuids, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(uuids[1], "agent-2");
    free(uuids);
    assert_int_equal(gw_uuids_get(w.data, w.len - 1, &uuids, &n), -1);
    pg_rec_writer_free(&w);

    gw_token_check c = {.head = {.op = GW_TASK_TOKEN_CHECKED, .t_in = 99}, .request = 7,
                        .chat_token = "app", .code = PG_ERR_BAD_TOKEN}, back;
    assert_int_equal(gw_token_task_put(&w, &c), 0);
    assert_int_equal(gw_token_task_get(w.data, w.len, &back), 0);
    assert_true(back.request == 7 && back.code == PG_ERR_BAD_TOKEN && back.head.t_in == 99);
    assert_string_equal(back.chat_token, "app");
    pg_rec_writer_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pages_read_back),
        cmocka_unit_test(pages_cut_short_are_refused),
        cmocka_unit_test(a_count_beyond_the_record_is_refused),
        cmocka_unit_test(sessions_read_back_and_trailing_bytes_are_refused),
        cmocka_unit_test(acks_uuids_and_tokens_read_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

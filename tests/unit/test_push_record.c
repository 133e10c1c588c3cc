/* test_push_record.c - unit tests for gateway/push_record.c: the node's
 * record of recent pushes, shared by its processes, and the mark a push
 * carries to the master. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway.h"

gw_context gw;   /* main.c's, which the library leaves out */

static int create_small(void **state)
{
    (void)state;
    return gw_push_record_create(1024);
}

static int destroy(void **state)
{
    (void)state;
    gw_push_record_destroy();
    return 0;
}

static void test_states_by_session_and_id(void **state)
{
    (void)state;
    assert_int_equal(gw_push_record_get(1, "m-1"), GW_PUSH_NONE);
    gw_push_record_set(1, "m-1", GW_PUSH_SENT);
    assert_int_equal(gw_push_record_get(1, "m-1"), GW_PUSH_SENT);
    /* the same id to another session, another id to the same session */
    assert_int_equal(gw_push_record_get(2, "m-1"), GW_PUSH_NONE);
    assert_int_equal(gw_push_record_get(1, "m-2"), GW_PUSH_NONE);
    gw_push_record_set(1, "m-1", GW_PUSH_ACKED);
    assert_int_equal(gw_push_record_get(1, "m-1"), GW_PUSH_ACKED);
    gw_push_record_set(1, "m-1", GW_PUSH_STORED);
    assert_int_equal(gw_push_record_get(1, "m-1"), GW_PUSH_STORED);
}

/* It holds the recent pushes: with as many entries as it has slots, most of
 * the newest half is still there, and a newer entry never loses to an
 * older one in the same set. */
static void test_recent_entries_stay(void **state)
{
    (void)state;
    char id[32];
    for (int i = 0; i < 1024; i++) {
        snprintf(id, sizeof(id), "order-%d", i);
        gw_push_record_set((pg_session_id)(i % 7 + 1), id, GW_PUSH_SENT);
    }
    int kept = 0;
    for (int i = 512; i < 1024; i++) {
        snprintf(id, sizeof(id), "order-%d", i);
        kept += gw_push_record_get((pg_session_id)(i % 7 + 1), id) == GW_PUSH_SENT;
    }
    assert_true(kept > 400);
    /* far more than it holds: the last ones are all there */
    for (int i = 0; i < 20000; i++) {
        snprintf(id, sizeof(id), "flood-%d", i);
        gw_push_record_set(9, id, GW_PUSH_SENT);
    }
    snprintf(id, sizeof(id), "flood-%d", 19999);
    assert_int_equal(gw_push_record_get(9, id), GW_PUSH_SENT);
}

/* Created before fork: what one process writes, another reads. */
/* A push as a worker sends it: the master finds its record's key, and
 * promotes the QUEUED record; a message that is not a push is left alone. */
static void test_push_messages_carry_their_key(void **state)
{
    (void)state;
    const char *event = "{\"event\":\"WorksheetMsg\",\"id\":\"m-7\"}";
    char msg[GW_PUSH_HEADER + 64];
    gw_push_header(msg, gw_push_record_key(7, "m-7"));
    memcpy(msg + GW_PUSH_HEADER, event, strlen(event));
    gw_push_record_set(7, "m-7", GW_PUSH_QUEUED);
    uint64_t key = 0;
    assert_int_equal(gw_push_message(msg, GW_PUSH_HEADER + strlen(event), &key), 1);
    gw_push_record_promote(key, GW_PUSH_QUEUED, GW_PUSH_SENT);
    assert_int_equal(gw_push_record_get(7, "m-7"), GW_PUSH_SENT);
    assert_int_equal(gw_push_message(event, strlen(event), &key), 0);
    assert_int_equal(gw_push_message(msg, GW_PUSH_HEADER - 1, &key), 0);
}

static void test_shared_between_processes(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        gw_push_record_set(42, "from-child", GW_PUSH_ACKED);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(gw_push_record_get(42, "from-child"), GW_PUSH_ACKED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_states_by_session_and_id, create_small, destroy),
        cmocka_unit_test_setup_teardown(test_recent_entries_stay, create_small, destroy),
        cmocka_unit_test_setup_teardown(test_push_messages_carry_their_key, create_small, destroy),
        cmocka_unit_test_setup_teardown(test_shared_between_processes, create_small, destroy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

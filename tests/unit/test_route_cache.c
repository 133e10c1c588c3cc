/* test_route_cache.c - unit tests for gateway/route_cache.c: the shared
 * cache of where uuids' sessions are on other nodes.
 *
 * route_cache.c is compiled in by inclusion, to reach an entry's claim; the
 * gateway library linked after it then adds nothing of route_cache.c's own. */
#include "../../gateway/route_cache.c"

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

gw_context gw;   /* main.c's, which the library leaves out */

static int create_small(void **state)
{
    (void)state;
    return gw_route_cache_create(16);    /* 4 sets of 4 */
}

static int destroy(void **state)
{
    (void)state;
    gw_route_cache_destroy();
    return 0;
}

static gw_routes on(const char *ip, int port, pg_session_id session)
{
    gw_routes r = {.n = 1};
    snprintf(r.t[0].ip, sizeof(r.t[0].ip), "%s", ip);
    r.t[0].port = port;
    r.t[0].session = session;
    return r;
}

static void put(const char *uuid, gw_routes r)
{
    gw_route_cache_put(uuid, &r, gw_route_cache_mark());
}

static void test_trusted_only_while_the_feed_speaks(void **state)
{
    (void)state;
    gw_routes got;
    put("agent-1", on("10.0.0.2", 9601, 42));     /* feed silent: not even kept */
    gw_route_cache_feed_alive();
    assert_int_equal(gw_route_cache_get("agent-1", &got), 0);
    put("agent-1", on("10.0.0.2", 9601, 42));
    assert_int_equal(gw_route_cache_get("agent-1", &got), 1);
    assert_int_equal(got.n, 1);
    assert_string_equal(got.t[0].ip, "10.0.0.2");
    assert_int_equal(got.t[0].port, 9601);
    assert_int_equal(got.t[0].session, 42);
    /* silent for longer than FEED_SILENCE_MS: asked in MySQL again */
    atomic_store(&head->feed_ms, mono_ms() - FEED_SILENCE_MS - 1);
    assert_int_equal(gw_route_cache_get("agent-1", &got), 0);
}

static void test_none_is_an_answer_too(void **state)
{
    (void)state;
    gw_route_cache_feed_alive();
    gw_routes none = {.n = 0}, got = {.n = 7};
    put("nobody", none);
    assert_int_equal(gw_route_cache_get("nobody", &got), 1);
    assert_int_equal(got.n, 0);
}

/* An announcement drops the entry, and a lookup that ran across it is not
 * cached; a flush drops everything. */
static void test_announcements_and_flushes(void **state)
{
    (void)state;
    gw_route_cache_feed_alive();
    gw_routes got;
    put("agent-2", on("10.0.0.3", 9601, 7));
    gw_route_cache_forget("agent-2");
    assert_int_equal(gw_route_cache_get("agent-2", &got), 0);

    gw_route_mark before = gw_route_cache_mark();     /* a lookup starts */
    gw_route_cache_forget("agent-2");                 /* agent-2 signs in elsewhere */
    gw_routes stale = on("10.0.0.3", 9601, 7);
    gw_route_cache_put("agent-2", &stale, before);    /* its answer comes */
    assert_int_equal(gw_route_cache_get("agent-2", &got), 0);
    /* announcements of other uuids do not spoil it (unless their slot is shared) */
    before = gw_route_cache_mark();
    gw_route_cache_forget("agent-unrelated");
    gw_route_cache_put("agent-2", &stale, before);
    int kept = gw_route_cache_get("agent-2", &got);
    assert_int_equal(kept, uuid_hash("agent-2") % ANNOUNCED_SLOTS !=
                               uuid_hash("agent-unrelated") % ANNOUNCED_SLOTS);

    put("agent-3", on("10.0.0.4", 9601, 8));
    before = gw_route_cache_mark();
    gw_route_cache_flush();
    assert_int_equal(gw_route_cache_get("agent-3", &got), 0);
    gw_route_cache_put("agent-3", &stale, before);    /* a lookup from before the flush */
    assert_int_equal(gw_route_cache_get("agent-3", &got), 0);
}

/* It never holds more than its capacity, and the most recent stay. */
static void test_bounded_with_eviction(void **state)
{
    (void)state;
    gw_route_cache_feed_alive();
    char uuid[32];
    for (int i = 0; i < 200; i++) {
        snprintf(uuid, sizeof(uuid), "u-%d", i);
        put(uuid, on("10.0.0.5", 9601, (pg_session_id)i + 1));
    }
    int held = 0;
    gw_routes got;
    for (int i = 0; i < 200; i++) {
        snprintf(uuid, sizeof(uuid), "u-%d", i);
        held += gw_route_cache_get(uuid, &got);
    }
    assert_true(held <= 16);
    assert_true(held >= 8);
    gw_route_cache_stats st;
    gw_route_cache_stats_get(&st);
    assert_true(st.evictions >= 200 - 16);
    assert_int_equal(st.fills, 200);
    assert_true(atomic_load(&head->pool_used) <= 16);
}

/* Entries come from the pool as ways are first used, so the memory touched
 * follows the uuids cached, not the capacity; a way keeps its entry, and a
 * dropped entry is used again before a new one is given. */
static void test_entries_follow_use(void **state)
{
    (void)state;
    gw_route_cache_feed_alive();
    put("a", on("10.0.0.7", 9601, 1));
    put("b", on("10.0.0.7", 9601, 2));
    put("c", on("10.0.0.7", 9601, 3));
    assert_int_equal(atomic_load(&head->pool_used), 3);
    put("a", on("10.0.0.7", 9601, 4));
    gw_route_cache_forget("b");
    put("b", on("10.0.0.7", 9601, 5));
    assert_int_equal(atomic_load(&head->pool_used), 3);
    gw_routes got;
    assert_int_equal(gw_route_cache_get("a", &got), 1);
    assert_int_equal(got.t[0].session, 4);
    assert_int_equal(gw_route_cache_get("b", &got), 1);
    assert_int_equal(got.t[0].session, 5);
}

/* Shared by the processes of a node; a writer killed mid-write does not
 * keep its entry locked. */
static void test_shared_and_a_dead_writer(void **state)
{
    (void)state;
    gw_route_cache_feed_alive();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        put("from-child", on("10.0.0.6", 9601, 99));
        cache_entry *e = place_for(uuid_hash("stuck"), "stuck", atomic_load(&head->epoch), now_s());
        claim(e);    /* and dies holding it */
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    gw_routes got;
    assert_int_equal(gw_route_cache_get("from-child", &got), 1);
    assert_int_equal(got.t[0].session, 99);
    put("stuck", on("10.0.0.6", 9601, 100));
    assert_int_equal(gw_route_cache_get("stuck", &got), 1);
    assert_int_equal(got.t[0].session, 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_trusted_only_while_the_feed_speaks, create_small, destroy),
        cmocka_unit_test_setup_teardown(test_none_is_an_answer_too, create_small, destroy),
        cmocka_unit_test_setup_teardown(test_announcements_and_flushes, create_small, destroy),
        cmocka_unit_test_setup_teardown(test_bounded_with_eviction, create_small, destroy),
        cmocka_unit_test_setup_teardown(test_entries_follow_use, create_small, destroy),
        cmocka_unit_test_setup_teardown(test_shared_and_a_dead_writer, create_small, destroy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

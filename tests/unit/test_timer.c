/* test_timer.c - unit tests for common/timer.c on a real libevent loop.
 *
 * event_base_dispatch() returns once no event is pending, so each test runs
 * the loop until its timers are done; alarm() guards against a hang. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "timer.h"

static struct event_base *base;

static int setup(void **state)
{
    (void)state;
    base = event_base_new();
    if (base == NULL)
        return -1;
    pg_timer_bind(base);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pg_timer_bind(NULL);
    event_base_free(base);
    base = NULL;
    return 0;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- a shared recorder ---- */

typedef struct {
    int fired;
    int64_t last_id;
    int count_in_cb;
    int clear_at;      /* clear own id when fired reaches this (0: never) */
    int clear_rc;
    int clear_again_rc;
    int count_after_clear;
    int64_t other;     /* another timer to clear from the callback */
    int other_rc;
    double at;         /* time of the last call */
} rec;

static void on_rec(int64_t id, void *arg)
{
    rec *r = arg;
    r->fired++;
    r->last_id = id;
    r->count_in_cb = pg_timer_count();
    r->at = now_ms();
    if (r->clear_at != 0 && r->fired == r->clear_at) {
        r->clear_rc = pg_timer_clear(id);
        r->clear_again_rc = pg_timer_clear(id);
        r->count_after_clear = pg_timer_count();
    }
    if (r->other != 0) {
        r->other_rc = pg_timer_clear(r->other);
        r->other = 0;
    }
}

static void test_no_base(void **state)
{
    (void)state;
    pg_timer_bind(NULL);
    assert_null(pg_timer_base());
    rec r = { 0 };
    assert_int_equal(pg_timer_after(10, on_rec, &r), -1);
    assert_int_equal(pg_timer_tick(10, on_rec, &r), -1);
    assert_int_equal(pg_timer_count(), 0);
    assert_int_equal(pg_timer_clear(1), -1);
    pg_timer_clear_all();
    pg_timer_bind(base);
    assert_ptr_equal(pg_timer_base(), base);
}

static void test_bad_args(void **state)
{
    (void)state;
    rec r = { 0 };
    assert_int_equal(pg_timer_tick(0, on_rec, &r), -1);
    assert_int_equal(pg_timer_tick(10, NULL, &r), -1);
    assert_int_equal(pg_timer_after(10, NULL, &r), -1);
    assert_int_equal(pg_timer_clear(0), -1);
    assert_int_equal(pg_timer_clear(-1), -1);
    assert_int_equal(pg_timer_clear(123456), -1);
    assert_int_equal(pg_timer_count(), 0);
}

static void test_after_once(void **state)
{
    (void)state;
    rec r = { 0 };
    double t0 = now_ms();
    int64_t id = pg_timer_after(10, on_rec, &r);
    assert_true(id > 0);
    assert_int_equal(pg_timer_count(), 1);
    assert_int_equal(event_base_dispatch(base), 1); /* no events left */
    assert_int_equal(r.fired, 1);
    assert_int_equal(r.last_id, id);
    assert_int_equal(r.count_in_cb, 1); /* still counted while its callback runs */
    assert_true(r.at - t0 >= 9.0);
    assert_int_equal(pg_timer_count(), 0);
    assert_int_equal(pg_timer_clear(id), -1); /* gone */

    /* after(0) runs on the next loop iteration */
    rec z = { 0 };
    assert_true(pg_timer_after(0, on_rec, &z) > 0);
    event_base_dispatch(base);
    assert_int_equal(z.fired, 1);
    assert_int_equal(pg_timer_count(), 0);
}

static void test_after_clear_inside(void **state)
{
    (void)state;
    rec r = { .clear_at = 1 };
    int64_t id = pg_timer_after(1, on_rec, &r);
    assert_true(id > 0);
    event_base_dispatch(base);
    assert_int_equal(r.fired, 1);
    assert_int_equal(r.clear_rc, 0);
    assert_int_equal(r.clear_again_rc, -1);
    assert_int_equal(r.count_after_clear, 0);
    assert_int_equal(pg_timer_count(), 0);
}

static void test_tick_clear_inside(void **state)
{
    (void)state;
    rec r = { .clear_at = 5 };
    double t0 = now_ms();
    int64_t id = pg_timer_tick(5, on_rec, &r);
    assert_true(id > 0);
    assert_int_equal(pg_timer_count(), 1);
    assert_int_equal(event_base_dispatch(base), 1);
    assert_int_equal(r.fired, 5);
    assert_int_equal(r.last_id, id);
    assert_int_equal(r.clear_rc, 0);
    assert_int_equal(r.clear_again_rc, -1);
    assert_int_equal(r.count_in_cb, 1);
    assert_int_equal(r.count_after_clear, 0);
    assert_true(r.at - t0 >= 24.0);
    assert_int_equal(pg_timer_count(), 0);
    assert_int_equal(pg_timer_clear(id), -1);
}

/* A tick cleared by an after timer from outside its own callback. */
static void test_tick_cleared_by_other(void **state)
{
    (void)state;
    rec t = { 0 };
    int64_t tick = pg_timer_tick(10, on_rec, &t);
    assert_true(tick > 0);
    rec a = { .other = tick };
    assert_true(pg_timer_after(35, on_rec, &a) > 0);
    assert_int_equal(pg_timer_count(), 2);
    event_base_dispatch(base);
    assert_int_equal(a.fired, 1);
    assert_int_equal(a.other_rc, 0);
    assert_true(t.fired >= 1 && t.fired <= 4); /* 3 normally; fewer if the loop stalls */
    assert_int_equal(pg_timer_count(), 0);
}

typedef struct {
    int order[4];
    int n;
} order_rec;

static order_rec ord;

static void on_order(int64_t id, void *arg)
{
    (void)id;
    ord.order[ord.n++] = (int)(intptr_t)arg;
}

static void test_order(void **state)
{
    (void)state;
    memset(&ord, 0, sizeof(ord));
    int64_t a = pg_timer_after(30, on_order, (void *)(intptr_t)30);
    int64_t b = pg_timer_after(10, on_order, (void *)(intptr_t)10);
    int64_t c = pg_timer_after(20, on_order, (void *)(intptr_t)20);
    assert_true(a > 0 && b > a && c > b); /* ids increase, never reused */
    assert_int_equal(pg_timer_count(), 3);
    event_base_dispatch(base);
    assert_int_equal(ord.n, 3);
    assert_int_equal(ord.order[0], 10);
    assert_int_equal(ord.order[1], 20);
    assert_int_equal(ord.order[2], 30);
    assert_int_equal(pg_timer_count(), 0);
}

/* Two timers due in the same iteration; the first run clears the second. */
static void test_clear_pending_active(void **state)
{
    (void)state;
    rec second = { 0 };
    rec first = { 0 };
    int64_t f = pg_timer_after(5, on_rec, &first);
    int64_t s = pg_timer_after(5, on_rec, &second);
    assert_true(f > 0 && s > 0);
    first.other = s;
    second.other = f; /* whichever runs first clears the other */
    usleep(10 * 1000); /* both due by now */
    event_base_dispatch(base);
    assert_int_equal(first.fired + second.fired, 1);
    assert_int_equal(first.fired ? first.other_rc : second.other_rc, 0);
    assert_int_equal(pg_timer_count(), 0);
}

static void test_clear_all(void **state)
{
    (void)state;
    rec r = { 0 };
    assert_true(pg_timer_tick(1, on_rec, &r) > 0);
    assert_true(pg_timer_tick(2, on_rec, &r) > 0);
    assert_true(pg_timer_after(1, on_rec, &r) > 0);
    assert_true(pg_timer_after(1000, on_rec, &r) > 0);
    assert_int_equal(pg_timer_count(), 4);
    pg_timer_clear_all();
    assert_int_equal(pg_timer_count(), 0);
    assert_int_equal(event_base_dispatch(base), 1); /* nothing pending */
    assert_int_equal(r.fired, 0);
    pg_timer_clear_all(); /* again, harmless */

    /* timers still work afterwards */
    assert_true(pg_timer_after(1, on_rec, &r) > 0);
    event_base_dispatch(base);
    assert_int_equal(r.fired, 1);
}

/* clear_all and bind(NULL) from inside a callback, with other timers pending */
static int inside_kind;
static int inside_fired;

static void on_clear_all_inside(int64_t id, void *arg)
{
    (void)id;
    (void)arg;
    inside_fired++;
    if (inside_kind == 0)
        pg_timer_clear_all();
    else
        pg_timer_bind(NULL);
    assert_int_equal(pg_timer_count(), 0);
}

static void test_clear_all_inside(void **state)
{
    (void)state;
    for (inside_kind = 0; inside_kind < 2; inside_kind++) {
        for (int persist = 0; persist < 2; persist++) {
            rec r = { 0 };
            inside_fired = 0;
            int64_t id = persist ? pg_timer_tick(1, on_clear_all_inside, NULL)
                                 : pg_timer_after(1, on_clear_all_inside, NULL);
            assert_true(id > 0);
            assert_true(pg_timer_tick(50, on_rec, &r) > 0);
            assert_true(pg_timer_after(50, on_rec, &r) > 0);
            event_base_dispatch(base);
            assert_int_equal(inside_fired, 1);
            assert_int_equal(r.fired, 0);
            assert_int_equal(pg_timer_count(), 0);
            pg_timer_bind(base);
        }
    }
}

/* A callback that adds new timers (re-arming itself a few times). */
static int rearm_left;

static void on_rearm(int64_t id, void *arg)
{
    (void)id;
    (void)arg;
    if (--rearm_left > 0)
        assert_true(pg_timer_after(1, on_rearm, NULL) > 0);
    assert_int_equal(pg_timer_count(), rearm_left > 0 ? 2 : 1);
}

static void test_add_inside(void **state)
{
    (void)state;
    rearm_left = 5;
    assert_true(pg_timer_after(1, on_rearm, NULL) > 0);
    event_base_dispatch(base);
    assert_int_equal(rearm_left, 0);
    assert_int_equal(pg_timer_count(), 0);
}

static void test_count_and_clear(void **state)
{
    (void)state;
    rec r = { 0 };
    int64_t ids[20];
    for (int i = 0; i < 20; i++) {
        ids[i] = i % 2 ? pg_timer_tick(1000 + (uint32_t)i, on_rec, &r)
                       : pg_timer_after(1000 + (uint32_t)i, on_rec, &r);
        assert_true(ids[i] > 0);
        for (int j = 0; j < i; j++)
            assert_true(ids[j] != ids[i]);
        assert_int_equal(pg_timer_count(), i + 1);
    }
    for (int i = 0; i < 20; i += 2) {
        assert_int_equal(pg_timer_clear(ids[i]), 0);
        assert_int_equal(pg_timer_clear(ids[i]), -1);
    }
    assert_int_equal(pg_timer_count(), 10);
    for (int i = 1; i < 20; i += 2)
        assert_int_equal(pg_timer_clear(ids[i]), 0);
    assert_int_equal(pg_timer_count(), 0);
    assert_int_equal(event_base_dispatch(base), 1);
    assert_int_equal(r.fired, 0);
}

/* Rebinding to another base drops the old base's timers. */
static void test_rebind(void **state)
{
    (void)state;
    rec r = { 0 };
    assert_true(pg_timer_after(1, on_rec, &r) > 0);
    struct event_base *other = event_base_new();
    assert_non_null(other);
    pg_timer_bind(base); /* same base: nothing changes */
    assert_int_equal(pg_timer_count(), 1);
    pg_timer_bind(other);
    assert_ptr_equal(pg_timer_base(), other);
    assert_int_equal(pg_timer_count(), 0);
    assert_int_equal(event_base_dispatch(base), 1);
    assert_true(pg_timer_after(1, on_rec, &r) > 0);
    event_base_dispatch(other);
    assert_int_equal(r.fired, 1);
    pg_timer_bind(base);
    event_base_free(other);
}

/* Timer state is per thread: a new thread has no base and its own ids. */
typedef struct {
    struct event_base *seen_base;
    int64_t first_id;
    int fired;
    int count_before;
} thread_out;

static void on_thread_timer(int64_t id, void *arg)
{
    (void)id;
    ((thread_out *)arg)->fired++;
}

static void *thread_main(void *arg)
{
    thread_out *o = arg;
    o->seen_base = pg_timer_base();
    o->count_before = pg_timer_count();
    struct event_base *b = event_base_new();
    if (b == NULL)
        return NULL;
    pg_timer_bind(b);
    o->first_id = pg_timer_after(1, on_thread_timer, o);
    event_base_dispatch(b);
    pg_timer_bind(NULL);
    event_base_free(b);
    return NULL;
}

static void test_thread_local(void **state)
{
    (void)state;
    rec r = { 0 };
    assert_true(pg_timer_after(1000, on_rec, &r) > 0);
    thread_out o = { 0 };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, thread_main, &o), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_null(o.seen_base);
    assert_int_equal(o.count_before, 0);
    assert_int_equal(o.first_id, 1);
    assert_int_equal(o.fired, 1);
    assert_int_equal(pg_timer_count(), 1); /* ours untouched */
}

int main(void)
{
    alarm(10);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_no_base, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_after_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_after_clear_inside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tick_clear_inside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tick_cleared_by_other, setup, teardown),
        cmocka_unit_test_setup_teardown(test_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clear_pending_active, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clear_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clear_all_inside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_add_inside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_count_and_clear, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rebind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thread_local, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

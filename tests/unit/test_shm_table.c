/* test_shm_table.c - the shared-memory table: types, limits, iteration,
 * collisions, concurrent processes and threads, and lock recovery after kill -9. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shm.h"
#include "shm_table.h"

/* Test hook in shm_table.c (not in the public header): lock key's bucket and
 * keep it locked. */
int pg_table__test_lock_key(pg_table *t, const char *key);

/* A test that hangs (a lock never recovered) fails instead of blocking make. */
static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "test_shm_table: timeout (a lock was not recovered?)\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(2);
}

static void set_timeout(unsigned seconds)
{
    signal(SIGALRM, on_alarm);
    alarm(seconds);
}

/* A table with columns i (INT), f (FLOAT), s (STRING 16). */
static pg_table *make_table(uint32_t capacity, int *ci, int *cf, int *cs)
{
    pg_table *t = pg_table_new(capacity);
    assert_non_null(t);
    *ci = pg_table_column(t, "i", PG_TABLE_INT, 0);
    *cf = pg_table_column(t, "f", PG_TABLE_FLOAT, 0);
    *cs = pg_table_column(t, "s", PG_TABLE_STRING, 16);
    assert_int_equal(*ci, 0);
    assert_int_equal(*cf, 1);
    assert_int_equal(*cs, 2);
    assert_int_equal(pg_table_create(t), 0);
    return t;
}

static void test_shm_alloc(void **state)
{
    (void)state;
    assert_null(pg_shm_alloc(0));
    size_t n = 10000;
    unsigned char *p = pg_shm_alloc(n);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(p[i], 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        p[0] = 42;
        p[n - 1] = 43;
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_int_equal(p[0], 42);
    assert_int_equal(p[n - 1], 43);
    pg_shm_free(p, n);
    pg_shm_free(NULL, 0);
}

static void test_columns(void **state)
{
    (void)state;
    assert_null(pg_table_new(0));
    pg_table *t = pg_table_new(16);
    assert_non_null(t);

    /* Before create: operations fail cleanly. */
    char buf[64] = {0};
    assert_int_equal(pg_table_set(t, "k", buf), -1);
    assert_int_equal(pg_table_get(t, "k", buf), -1);
    assert_int_equal(pg_table_del(t, "k"), -1);
    assert_int_equal(pg_table_count(t), 0);

    assert_int_equal(pg_table_column(t, NULL, PG_TABLE_INT, 0), -1);
    assert_int_equal(pg_table_column(t, "", PG_TABLE_INT, 0), -1);
    char longname[100];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(pg_table_column(t, longname, PG_TABLE_INT, 0), -1);
    assert_int_equal(pg_table_column(t, "bad", (pg_table_type)42, 0), -1);
    assert_int_equal(pg_table_column(t, "s0", PG_TABLE_STRING, 0), -1);
    assert_int_equal(pg_table_column(NULL, "x", PG_TABLE_INT, 0), -1);

    assert_int_equal(pg_table_column(t, "a", PG_TABLE_INT, 0), 0);
    assert_int_equal(pg_table_column(t, "a", PG_TABLE_FLOAT, 0), -1);
    assert_int_equal(pg_table_column(t, "s", PG_TABLE_STRING, 5), 1);
    assert_int_equal(pg_table_column(t, "b", PG_TABLE_FLOAT, 0), 2);
    assert_int_equal(pg_table_column_index(t, "a"), 0);
    assert_int_equal(pg_table_column_index(t, "s"), 1);
    assert_int_equal(pg_table_column_index(t, "b"), 2);
    assert_int_equal(pg_table_column_index(t, "zz"), -1);
    assert_int_equal(pg_table_column_index(t, NULL), -1);
    /* 8 + (4 + 5 -> 16) + 8 */
    assert_int_equal(pg_table_row_size(t), 32);
    assert_int_equal(pg_table_capacity(t), 16);

    assert_int_equal(pg_table_create(t), 0);
    assert_int_equal(pg_table_create(t), -1);
    assert_int_equal(pg_table_column(t, "late", PG_TABLE_INT, 0), -1);
    assert_int_equal(pg_table_row_size(t), 32);
    pg_table_destroy(t);
    pg_table_destroy(NULL);
}

static void test_types_roundtrip(void **state)
{
    (void)state;
    int ci, cf, cs;
    pg_table *t = make_table(64, &ci, &cf, &cs);
    size_t rs = pg_table_row_size(t);
    /* Deliberately misaligned row buffers: accessors must cope. */
    char *mem = calloc(1, rs + 1), *row = mem + 1;
    char *mem2 = calloc(1, rs + 3), *out = mem2 + 3;

    pg_table_row_set_int(t, row, ci, INT64_MIN + 7);
    pg_table_row_set_float(t, row, cf, -3.25e100);
    assert_int_equal(pg_table_row_set_string(t, row, cs, "hello\0world", 11), 11);
    assert_int_equal(pg_table_set(t, "key1", row), 0);

    memset(out, 0xAB, rs);
    assert_int_equal(pg_table_get(t, "key1", out), 0);
    assert_true(pg_table_row_get_int(t, out, ci) == INT64_MIN + 7);
    assert_true(pg_table_row_get_float(t, out, cf) == -3.25e100);
    size_t len = 0;
    const char *s = pg_table_row_get_string(t, out, cs, &len);
    assert_non_null(s);
    assert_int_equal(len, 11);
    assert_memory_equal(s, "hello\0world", 11);

    /* Wrong type / bad index: no effect, neutral results. */
    pg_table_row_set_int(t, row, cf, 5);
    pg_table_row_set_float(t, row, ci, 1.0);
    pg_table_row_set_int(t, row, 99, 5);
    pg_table_row_set_int(t, row, -1, 5);
    assert_int_equal(pg_table_row_set_string(t, row, ci, "x", 1), 0);
    assert_true(pg_table_row_get_int(t, row, ci) == INT64_MIN + 7);
    assert_true(pg_table_row_get_float(t, row, cf) == -3.25e100);
    assert_int_equal(pg_table_row_get_int(t, row, cf), 0);
    assert_true(pg_table_row_get_float(t, row, ci) == 0.0);
    assert_null(pg_table_row_get_string(t, row, ci, &len));
    assert_int_equal(len, 0);
    assert_null(pg_table_row_get_string(t, row, 7, NULL));
    assert_int_equal(pg_table_row_get_int(NULL, row, ci), 0);
    assert_int_equal(pg_table_row_get_int(t, NULL, ci), 0);

    /* Empty string, NULL string. */
    assert_int_equal(pg_table_row_set_string(t, row, cs, "", 0), 0);
    assert_int_equal(pg_table_row_set_string(t, row, cs, NULL, 5), 0);
    s = pg_table_row_get_string(t, row, cs, &len);
    assert_non_null(s);
    assert_int_equal(len, 0);

    free(mem);
    free(mem2);
    pg_table_destroy(t);
}

static void test_string_truncation(void **state)
{
    (void)state;
    int ci, cf, cs;
    pg_table *t = make_table(8, &ci, &cf, &cs);
    char *row = calloc(1, pg_table_row_size(t));
    const char *big = "0123456789abcdefXYZ-more-than-sixteen";
    assert_int_equal(pg_table_row_set_string(t, row, cs, big, strlen(big)), 16);
    pg_table_row_set_int(t, row, ci, 9);
    assert_int_equal(pg_table_set(t, "k", row), 0);
    memset(row, 0, pg_table_row_size(t));
    assert_int_equal(pg_table_get(t, "k", row), 0);
    size_t len;
    const char *s = pg_table_row_get_string(t, row, cs, &len);
    assert_int_equal(len, 16);
    assert_memory_equal(s, "0123456789abcdef", 16);
    /* Neighbouring column untouched. */
    assert_int_equal(pg_table_row_get_int(t, row, ci), 9);
    /* A shorter string replaces the longer one completely. */
    assert_int_equal(pg_table_row_set_string(t, row, cs, "ab", 2), 2);
    s = pg_table_row_get_string(t, row, cs, &len);
    assert_int_equal(len, 2);
    assert_memory_equal(s, "ab", 2);
    free(row);
    pg_table_destroy(t);
}

static void test_set_get_del(void **state)
{
    (void)state;
    int ci, cf, cs;
    pg_table *t = make_table(100, &ci, &cf, &cs);
    size_t rs = pg_table_row_size(t);
    char *row = calloc(1, rs);

    assert_int_equal(pg_table_count(t), 0);
    assert_int_equal(pg_table_get(t, "a", NULL), -1);
    pg_table_row_set_int(t, row, ci, 1);
    assert_int_equal(pg_table_set(t, "a", row), 0);
    assert_int_equal(pg_table_count(t), 1);
    assert_int_equal(pg_table_get(t, "a", NULL), 0);  /* exists */
    pg_table_row_set_int(t, row, ci, 2);
    assert_int_equal(pg_table_set(t, "a", row), 0);   /* replace */
    assert_int_equal(pg_table_count(t), 1);
    memset(row, 0, rs);
    assert_int_equal(pg_table_get(t, "a", row), 0);
    assert_int_equal(pg_table_row_get_int(t, row, ci), 2);

    char key[32];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof key, "user:%d", i);
        pg_table_row_set_int(t, row, ci, i);
        pg_table_row_set_string(t, row, cs, key, strlen(key));
        assert_int_equal(pg_table_set(t, key, row), i < 99 ? 0 : -1);
    }
    assert_int_equal(pg_table_count(t), 100);
    for (int i = 0; i < 99; i++) {
        snprintf(key, sizeof key, "user:%d", i);
        assert_int_equal(pg_table_get(t, key, row), 0);
        assert_int_equal(pg_table_row_get_int(t, row, ci), i);
        size_t len;
        const char *s = pg_table_row_get_string(t, row, cs, &len);
        assert_int_equal(len, strlen(key));
        assert_memory_equal(s, key, len);
    }
    for (int i = 0; i < 99; i += 2) {
        snprintf(key, sizeof key, "user:%d", i);
        assert_int_equal(pg_table_del(t, key), 0);
        assert_int_equal(pg_table_del(t, key), -1);
        assert_int_equal(pg_table_get(t, key, NULL), -1);
    }
    assert_int_equal(pg_table_count(t), 50);
    for (int i = 1; i < 99; i += 2) {
        snprintf(key, sizeof key, "user:%d", i);
        assert_int_equal(pg_table_get(t, key, row), 0);
        assert_int_equal(pg_table_row_get_int(t, row, ci), i);
    }
    assert_int_equal(pg_table_del(t, "a"), 0);
    assert_int_equal(pg_table_count(t), 49);
    /* Similar keys are distinct. */
    assert_int_equal(pg_table_set(t, "ab", row), 0);
    assert_int_equal(pg_table_get(t, "a", NULL), -1);
    assert_int_equal(pg_table_get(t, "abc", NULL), -1);
    free(row);
    pg_table_destroy(t);
}

static void test_bad_keys(void **state)
{
    (void)state;
    int ci, cf, cs;
    pg_table *t = make_table(8, &ci, &cf, &cs);
    char *row = calloc(1, pg_table_row_size(t));
    char k63[64], k64[65];
    memset(k63, 'k', 63);
    k63[63] = '\0';
    memset(k64, 'k', 64);
    k64[64] = '\0';

    assert_int_equal(pg_table_set(t, NULL, row), -1);
    assert_int_equal(pg_table_set(t, "", row), -1);
    assert_int_equal(pg_table_set(t, k64, row), -1);
    assert_int_equal(pg_table_get(t, k64, row), -1);
    assert_int_equal(pg_table_get(t, NULL, row), -1);
    assert_int_equal(pg_table_del(t, k64), -1);
    assert_int_equal(pg_table_del(t, ""), -1);
    assert_int_equal(pg_table_incr(t, k64, ci, 1, NULL), -1);
    assert_int_equal(pg_table_incr(t, NULL, ci, 1, NULL), -1);
    assert_int_equal(pg_table_incr_float(t, "", cf, 1, NULL), -1);
    assert_int_equal(pg_table_set(t, "k", NULL), -1);   /* no row buffer */
    assert_int_equal(pg_table_set(NULL, "k", row), -1);
    assert_int_equal(pg_table_get(NULL, "k", row), -1);
    assert_int_equal(pg_table_count(t), 0);

    pg_table_row_set_int(t, row, ci, 63);
    assert_int_equal(pg_table_set(t, k63, row), 0);   /* the longest key works */
    memset(row, 0, pg_table_row_size(t));
    assert_int_equal(pg_table_get(t, k63, row), 0);
    assert_int_equal(pg_table_row_get_int(t, row, ci), 63);
    assert_int_equal(pg_table_count(t), 1);
    free(row);
    pg_table_destroy(t);
}

static void test_full(void **state)
{
    (void)state;
    int ci, cf, cs;
    pg_table *t = make_table(4, &ci, &cf, &cs);
    char *row = calloc(1, pg_table_row_size(t));
    const char *keys[] = {"k0", "k1", "k2", "k3"};
    for (int i = 0; i < 4; i++) {
        pg_table_row_set_int(t, row, ci, 100 + i);
        assert_int_equal(pg_table_set(t, keys[i], row), 0);
    }
    assert_int_equal(pg_table_count(t), 4);
    assert_int_equal(pg_table_set(t, "k4", row), -1);
    assert_int_equal(pg_table_incr(t, "k5", ci, 1, NULL), -1);
    assert_int_equal(pg_table_incr_float(t, "k6", cf, 1, NULL), -1);
    assert_int_equal(pg_table_count(t), 4);
    assert_int_equal(pg_table_get(t, "k4", NULL), -1);
    /* Existing rows intact and still replaceable / incrementable when full. */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pg_table_get(t, keys[i], row), 0);
        assert_int_equal(pg_table_row_get_int(t, row, ci), 100 + i);
    }
    pg_table_row_set_int(t, row, ci, 7);
    assert_int_equal(pg_table_set(t, "k2", row), 0);
    int64_t v;
    assert_int_equal(pg_table_incr(t, "k2", ci, 3, &v), 0);
    assert_int_equal(v, 10);
    /* Free one, the new key fits. */
    assert_int_equal(pg_table_del(t, "k0"), 0);
    assert_int_equal(pg_table_set(t, "k4", row), 0);
    assert_int_equal(pg_table_set(t, "k0", row), -1);
    assert_int_equal(pg_table_count(t), 4);
    free(row);
    pg_table_destroy(t);
}

static void test_incr(void **state)
{
    (void)state;
    int ci, cf, cs;
    pg_table *t = make_table(16, &ci, &cf, &cs);
    char *row = calloc(1, pg_table_row_size(t));
    int64_t v = -1;
    assert_int_equal(pg_table_incr(t, "c", ci, 5, &v), 0);  /* creates */
    assert_int_equal(v, 5);
    assert_int_equal(pg_table_count(t), 1);
    assert_int_equal(pg_table_incr(t, "c", ci, -7, &v), 0);
    assert_int_equal(v, -2);
    assert_int_equal(pg_table_incr(t, "c", ci, 1, NULL), 0);
    assert_int_equal(pg_table_get(t, "c", row), 0);
    assert_int_equal(pg_table_row_get_int(t, row, ci), -1);
    /* The rest of a created row is zero. */
    assert_true(pg_table_row_get_float(t, row, cf) == 0.0);
    size_t len = 99;
    pg_table_row_get_string(t, row, cs, &len);
    assert_int_equal(len, 0);

    double d = 0;
    assert_int_equal(pg_table_incr_float(t, "d", cf, 1.5, &d), 0);
    assert_true(d == 1.5);
    assert_int_equal(pg_table_incr_float(t, "d", cf, 0.25, &d), 0);
    assert_true(d == 1.75);
    assert_int_equal(pg_table_incr_float(t, "c", cf, 2.0, &d), 0);  /* other column */
    assert_true(d == 2.0);
    assert_int_equal(pg_table_get(t, "c", row), 0);
    assert_int_equal(pg_table_row_get_int(t, row, ci), -1);
    assert_int_equal(pg_table_count(t), 2);

    /* Wrong types and bad columns, no row is created. */
    assert_int_equal(pg_table_incr(t, "x", cf, 1, NULL), -1);
    assert_int_equal(pg_table_incr(t, "x", cs, 1, NULL), -1);
    assert_int_equal(pg_table_incr(t, "x", 3, 1, NULL), -1);
    assert_int_equal(pg_table_incr(t, "x", -1, 1, NULL), -1);
    assert_int_equal(pg_table_incr_float(t, "x", ci, 1, NULL), -1);
    assert_int_equal(pg_table_incr(NULL, "x", ci, 1, NULL), -1);
    assert_int_equal(pg_table_count(t), 2);
    assert_int_equal(pg_table_get(t, "x", NULL), -1);

    /* Wrap-around is defined (no UB). */
    pg_table_row_set_int(t, row, ci, INT64_MAX);
    assert_int_equal(pg_table_set(t, "w", row), 0);
    assert_int_equal(pg_table_incr(t, "w", ci, 1, &v), 0);
    assert_true(v == INT64_MIN);
    free(row);
    pg_table_destroy(t);
}

struct iter_state {
    pg_table *t;
    int ci;
    int seen[1000];
    int calls;
    int stop_after;
    int delete_self;
    int delete_other;
    int errors;
};

static int iter_cb(const char *key, const void *row, void *arg)
{
    struct iter_state *st = arg;
    int n = -1;
    if (sscanf(key, "it:%d", &n) != 1 || n < 0 || n >= 1000 ||
        pg_table_row_get_int(st->t, row, st->ci) != n * 3) {
        st->errors++;
        return 1;
    }
    st->seen[n]++;
    st->calls++;
    if (st->delete_self && pg_table_del(st->t, key) != 0)
        st->errors++;
    if (st->delete_other) {
        /* Delete the partner key (it may already be gone). */
        char other[32];
        snprintf(other, sizeof other, "it:%d", n ^ 1);
        pg_table_del(st->t, other);
    }
    return st->stop_after && st->calls >= st->stop_after;
}

static void fill_iter(pg_table *t, int ci, int n)
{
    char *row = calloc(1, pg_table_row_size(t));
    char key[32];
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "it:%d", i);
        pg_table_row_set_int(t, row, ci, i * 3);
        assert_int_equal(pg_table_set(t, key, row), 0);
    }
    free(row);
}

static void test_iterate(void **state)
{
    (void)state;
    int ci, cf, cs;
    pg_table *t = make_table(1000, &ci, &cf, &cs);
    struct iter_state *st = calloc(1, sizeof *st);
    st->t = t;
    st->ci = ci;

    pg_table_iterate(t, iter_cb, st);  /* empty */
    assert_int_equal(st->calls, 0);
    pg_table_iterate(t, NULL, st);     /* no crash */

    fill_iter(t, ci, 1000);
    pg_table_iterate(t, iter_cb, st);
    assert_int_equal(st->calls, 1000);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(st->seen[i], 1);

    /* Stop early. */
    memset(st->seen, 0, sizeof st->seen);
    st->calls = 0;
    st->stop_after = 10;
    pg_table_iterate(t, iter_cb, st);
    assert_int_equal(st->calls, 10);

    /* Delete the current row during iteration. */
    memset(st->seen, 0, sizeof st->seen);
    st->calls = 0;
    st->stop_after = 0;
    st->delete_self = 1;
    pg_table_iterate(t, iter_cb, st);
    assert_int_equal(st->calls, 1000);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(st->seen[i], 1);
    assert_int_equal(pg_table_count(t), 0);
    assert_int_equal(st->errors, 0);

    /* Delete other rows during iteration.  A row deleted before its bucket is
     * reached is not seen; one in the bucket being visited was already copied
     * and is seen (then the pair deletes each other). */
    fill_iter(t, ci, 1000);
    memset(st->seen, 0, sizeof st->seen);
    st->calls = 0;
    st->delete_self = 0;
    st->delete_other = 1;
    pg_table_iterate(t, iter_cb, st);
    int one_seen = 0;
    for (int i = 0; i < 1000; i += 2) {
        assert_true(st->seen[i] <= 1 && st->seen[i + 1] <= 1);
        int both = st->seen[i] + st->seen[i + 1];
        assert_true(both >= 1);
        one_seen += both == 1;
        char ka[32], kb[32];
        snprintf(ka, sizeof ka, "it:%d", i);
        snprintf(kb, sizeof kb, "it:%d", i + 1);
        /* Seen alone: it survives and its partner is gone; both seen: both gone. */
        assert_int_equal(pg_table_get(t, ka, NULL), both == 1 && st->seen[i] ? 0 : -1);
        assert_int_equal(pg_table_get(t, kb, NULL), both == 1 && st->seen[i + 1] ? 0 : -1);
    }
    assert_int_equal(pg_table_count(t), one_seen);
    assert_int_equal(st->errors, 0);

    free(st);
    pg_table_destroy(t);
}

/* A full tiny table: every row is on some chain, chains are long. */
static int count_cb(const char *key, const void *row, void *arg)
{
    (void)key;
    (void)row;
    (*(int *)arg)++;
    return 0;
}

static void test_collisions(void **state)
{
    (void)state;
    int ci, cf, cs;
    pg_table *t = make_table(8, &ci, &cf, &cs);
    char *row = calloc(1, pg_table_row_size(t));
    enum { NKEYS = 24 };
    int64_t model[NKEYS];
    int present[NKEYS] = {0};
    int npresent = 0;
    char key[32];
    uint64_t rnd = 88172645463325252ULL;

    for (int op = 0; op < 200000; op++) {
        rnd ^= rnd << 13;
        rnd ^= rnd >> 7;
        rnd ^= rnd << 17;
        int k = (int)(rnd % NKEYS);
        snprintf(key, sizeof key, "c%d", k);
        if ((rnd >> 20) & 1) {
            pg_table_row_set_int(t, row, ci, op);
            int rc = pg_table_set(t, key, row);
            if (present[k] || npresent < 8) {
                assert_int_equal(rc, 0);
                if (!present[k])
                    npresent++;
                present[k] = 1;
                model[k] = op;
            } else {
                assert_int_equal(rc, -1);
            }
        } else {
            assert_int_equal(pg_table_del(t, key), present[k] ? 0 : -1);
            if (present[k])
                npresent--;
            present[k] = 0;
        }
        if ((op & 1023) == 0) {
            assert_int_equal(pg_table_count(t), npresent);
            for (int j = 0; j < NKEYS; j++) {
                snprintf(key, sizeof key, "c%d", j);
                int rc = pg_table_get(t, key, row);
                assert_int_equal(rc, present[j] ? 0 : -1);
                if (present[j])
                    assert_true(pg_table_row_get_int(t, row, ci) == model[j]);
            }
            int n = 0;
            pg_table_iterate(t, count_cb, &n);
            assert_int_equal(n, npresent);
        }
    }
    /* Empty it; then all 8 rows must be usable again (no leak in the free list). */
    for (int j = 0; j < NKEYS; j++) {
        snprintf(key, sizeof key, "c%d", j);
        pg_table_del(t, key);
    }
    assert_int_equal(pg_table_count(t), 0);
    for (int j = 0; j < 8; j++) {
        snprintf(key, sizeof key, "new%d", j);
        assert_int_equal(pg_table_set(t, key, row), 0);
    }
    assert_int_equal(pg_table_set(t, "one-too-many", row), -1);
    assert_int_equal(pg_table_count(t), 8);
    int n = 0;
    pg_table_iterate(t, count_cb, &n);
    assert_int_equal(n, 8);
    free(row);
    pg_table_destroy(t);
}

static const char *const hot_keys[10] = {"h0", "h1", "h2", "h3", "h4",
                                         "h5", "h6", "h7", "h8", "h9"};

/* Runs work(t, col, p) in nproc processes p = 0..nproc-1 at once; each must
 * return 0. */
static void in_processes(int nproc, pg_table *t, int col, int (*work)(pg_table *, int, int))
{
    pid_t pids[8];
    assert_true(nproc <= 8);
    for (int p = 0; p < nproc; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0)
            _exit(work(t, col, p) == 0 ? 0 : 1);
    }
    for (int p = 0; p < nproc; p++) {
        int st;
        assert_int_equal(waitpid(pids[p], &st, 0), pids[p]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
}

enum { INCR_PROCS = 4, INCR_PER_PROC = 20000 };

/* Column col (int) and col + 1 (float) of the hot keys, incremented. */
static int incr_hot_keys(pg_table *t, int col, int p)
{
    (void)p;
    for (int i = 0; i < INCR_PER_PROC; i++)
        if (pg_table_incr(t, hot_keys[i % 10], col, 1, NULL) != 0 ||
            pg_table_incr_float(t, hot_keys[i % 10], col + 1, 0.5, NULL) != 0)
            return -1;
    return 0;
}

/* Every hot key is there, with want in int column col (and want_float in
 * float column float_col, unless that is -1), and nothing else is. */
static void check_hot_keys(pg_table *t, int col, int64_t want, int float_col, double want_float)
{
    char *row = calloc(1, pg_table_row_size(t));
    for (int k = 0; k < 10; k++) {
        assert_int_equal(pg_table_get(t, hot_keys[k], row), 0);
        assert_int_equal(pg_table_row_get_int(t, row, col), want);
        assert_true(float_col < 0 || pg_table_row_get_float(t, row, float_col) == want_float);
    }
    assert_int_equal(pg_table_count(t), 10);
    free(row);
}

static void test_concurrent_processes(void **state)
{
    (void)state;
    set_timeout(30);
    int ci, cf, cs;
    pg_table *t = make_table(64, &ci, &cf, &cs);
    in_processes(INCR_PROCS, t, ci, incr_hot_keys);   /* make_table: cf is ci + 1 */
    enum { PER_KEY = INCR_PROCS * INCR_PER_PROC / 10 };
    check_hot_keys(t, ci, PER_KEY, cf, PER_KEY * 0.5);
    pg_table_destroy(t);
    alarm(0);
}

/* pg_table_update: column i as a set of bits; a row whose set empties goes. */
struct bit_change {
    int col;
    int64_t bit;
    int add;
    const pg_table *t;
};

static pg_table_verdict change_bit(void *row, int found, void *arg)
{
    struct bit_change *c = arg;
    int64_t bits = found ? pg_table_row_get_int(c->t, row, c->col) : 0;
    bits = c->add ? bits | c->bit : bits & ~c->bit;
    pg_table_row_set_int(c->t, row, c->col, bits);
    return bits ? PG_TABLE_KEEP : PG_TABLE_DELETE;
}

static int update_bit(pg_table *t, int col, const char *key, int bit, int add)
{
    struct bit_change c = {.col = col, .bit = (int64_t)1 << bit, .add = add, .t = t};
    return pg_table_update(t, key, change_bit, &c);
}

static void test_update(void **state)
{
    (void)state;
    int ci, cf, cs;
    pg_table *t = make_table(2, &ci, &cf, &cs);
    char *row = calloc(1, pg_table_row_size(t));
    /* a missing key that stays empty is not created */
    assert_int_equal(update_bit(t, ci, "a", 0, 0), PG_TABLE_DELETE);
    assert_int_equal(pg_table_count(t), 0);
    assert_int_equal(update_bit(t, ci, "a", 0, 1), PG_TABLE_KEEP);
    assert_int_equal(update_bit(t, ci, "a", 3, 1), PG_TABLE_KEEP);
    assert_int_equal(pg_table_get(t, "a", row), 0);
    assert_int_equal(pg_table_row_get_int(t, row, ci), 9);
    assert_int_equal(update_bit(t, ci, "b", 1, 1), PG_TABLE_KEEP);
    /* full: a new key fails, existing ones still change */
    assert_int_equal(update_bit(t, ci, "c", 1, 1), -1);
    assert_int_equal(update_bit(t, ci, "a", 0, 0), PG_TABLE_KEEP);
    assert_int_equal(update_bit(t, ci, "a", 3, 0), PG_TABLE_DELETE);
    assert_int_equal(pg_table_get(t, "a", NULL), -1);
    assert_int_equal(pg_table_count(t), 1);
    assert_int_equal(update_bit(t, ci, "c", 1, 1), PG_TABLE_KEEP);
    assert_int_equal(update_bit(t, ci, "", 1, 1), -1);
    assert_int_equal(pg_table_update(t, "a", NULL, NULL), -1);
    free(row);
    pg_table_destroy(t);
}

enum { UPDATE_ROUNDS = 5000 };

/* Process p's bit of the hot keys, added and removed, then added for good. */
static int flip_own_bit(pg_table *t, int col, int p)
{
    for (int i = 0; i < UPDATE_ROUNDS; i++)
        if (update_bit(t, col, hot_keys[i % 10], p, 1) < 0 ||
            update_bit(t, col, hot_keys[i % 10], p, 0) < 0)
            return -1;
    for (int k = 0; k < 10; k++)
        if (update_bit(t, col, hot_keys[k], p, 1) != PG_TABLE_KEEP)
            return -1;
    return 0;
}

/* Processes adding and removing their own bit of the same rows, which come
 * and go meanwhile: no change is lost. */
static void test_update_concurrent(void **state)
{
    (void)state;
    set_timeout(30);
    int ci, cf, cs;
    pg_table *t = make_table(64, &ci, &cf, &cs);
    enum { NPROC = 4 };
    in_processes(NPROC, t, ci, flip_own_bit);
    check_hot_keys(t, ci, (1 << NPROC) - 1, -1, 0);
    pg_table_destroy(t);
    alarm(0);
}

struct thr_arg {
    pg_table *t;
    int ci;
    int errors;
};

static void *thr_incr(void *p)
{
    struct thr_arg *a = p;
    for (int i = 0; i < 20000; i++)
        if (pg_table_incr(a->t, hot_keys[i % 10], a->ci, 1, NULL) != 0)
            a->errors++;
    return NULL;
}

static void test_concurrent_threads(void **state)
{
    (void)state;
    set_timeout(30);
    int ci, cf, cs;
    pg_table *t = make_table(64, &ci, &cf, &cs);
    pthread_t th[4];
    struct thr_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (struct thr_arg){t, ci, 0};
        assert_int_equal(pthread_create(&th[i], NULL, thr_incr, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(a[i].errors, 0);
    }
    int64_t v;
    for (int k = 0; k < 10; k++) {
        assert_int_equal(pg_table_incr(t, hot_keys[k], ci, 0, &v), 0);
        assert_int_equal(v, 4 * 20000 / 10);
    }
    pg_table_destroy(t);
    alarm(0);
}

/* Threads churn their own keys (set/del, so rows go through the pool) in a
 * small, crowded table while another thread iterates; each checks its model. */
struct churn_arg {
    pg_table *t;
    int ci;
    int id;
    int present;   /* rows of this thread in the table at the end */
    int errors;
};

static void *thr_churn(void *p)
{
    struct churn_arg *a = p;
    enum { KEYS = 12 };
    int have[KEYS] = {0};
    char key[32];
    char row[64];
    uint64_t rnd = 0x9E3779B97F4A7C15ULL * (uint64_t)(a->id + 1);
    memset(row, 0, sizeof row);
    for (int op = 0; op < 30000; op++) {
        rnd ^= rnd << 13;
        rnd ^= rnd >> 7;
        rnd ^= rnd << 17;
        int k = (int)(rnd % KEYS);
        snprintf(key, sizeof key, "t%d:%d", a->id, k);
        if (have[k]) {
            if (pg_table_get(a->t, key, row) != 0 ||
                pg_table_row_get_int(a->t, row, a->ci) != a->id * 1000 + k)
                a->errors++;
            if (pg_table_del(a->t, key) != 0)
                a->errors++;
            have[k] = 0;
        } else {
            pg_table_row_set_int(a->t, row, a->ci, a->id * 1000 + k);
            if (pg_table_set(a->t, key, row) != 0)  /* 4 x 12 < 64: never full */
                a->errors++;
            have[k] = 1;
        }
    }
    for (int k = 0; k < KEYS; k++) {
        snprintf(key, sizeof key, "t%d:%d", a->id, k);
        if ((pg_table_get(a->t, key, NULL) == 0) != have[k])
            a->errors++;
        a->present += have[k];
    }
    return NULL;
}

static int iter_check_cb(const char *key, const void *row, void *arg)
{
    struct churn_arg *a = arg;
    int id, k;
    if (sscanf(key, "t%d:%d", &id, &k) != 2 || pg_table_row_get_int(a->t, row, a->ci) != id * 1000 + k)
        a->errors++;
    return 0;
}

static void *thr_iter(void *p)
{
    struct churn_arg *a = p;
    for (int n = 0; n < 300; n++)
        pg_table_iterate(a->t, iter_check_cb, a);
    return NULL;
}

static void test_concurrent_churn(void **state)
{
    (void)state;
    set_timeout(30);
    int ci, cf, cs;
    pg_table *t = make_table(64, &ci, &cf, &cs);
    assert_true(pg_table_row_size(t) <= 64);
    pthread_t th[5];
    struct churn_arg a[5];
    for (int i = 0; i < 5; i++) {
        a[i] = (struct churn_arg){t, ci, i, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, i < 4 ? thr_churn : thr_iter, &a[i]), 0);
    }
    int present = 0;
    for (int i = 0; i < 5; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(a[i].errors, 0);
        present += a[i].present;
    }
    assert_int_equal(pg_table_count(t), present);
    int n = 0;
    pg_table_iterate(t, count_cb, &n);
    assert_int_equal(n, present);
    pg_table_destroy(t);
    alarm(0);
}

/* A child takes a bucket lock and is killed -9 while holding it: the parent must
 * get the lock (EOWNERDEAD, recovered) instead of hanging. */
static void test_kill_holding_lock(void **state)
{
    (void)state;
    set_timeout(10);
    int ci, cf, cs;
    pg_table *t = make_table(64, &ci, &cf, &cs);
    int64_t v;
    assert_int_equal(pg_table_incr(t, "victim", ci, 1, &v), 0);

    for (int round = 0; round < 3; round++) {
        int pfd[2];
        assert_int_equal(pipe(pfd), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(pfd[0]);
            if (pg_table__test_lock_key(t, "victim") != 0)
                _exit(1);
            char c = 'L';
            if (write(pfd[1], &c, 1) != 1)
                _exit(1);
            for (;;)
                pause();
        }
        close(pfd[1]);
        char c = 0;
        assert_int_equal(read(pfd[0], &c, 1), 1);
        assert_int_equal(c, 'L');
        close(pfd[0]);
        assert_int_equal(kill(pid, SIGKILL), 0);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

        assert_int_equal(pg_table_incr(t, "victim", ci, 1, &v), 0);
        assert_int_equal(v, 2 + round);
        assert_int_equal(pg_table_get(t, "victim", NULL), 0);
        assert_int_equal(pg_table_del(t, "victim"), 0);
        assert_int_equal(pg_table_incr(t, "victim", ci, 2 + round, &v), 0);
    }
    assert_int_equal(pg_table_count(t), 1);
    pg_table_destroy(t);
    alarm(0);
}

/* A child incrementing one key in a loop is killed -9 at random moments, many
 * times; the parent can always still use that key. */
static void test_kill_mid_incr(void **state)
{
    (void)state;
    set_timeout(20);
    int ci, cf, cs;
    pg_table *t = make_table(64, &ci, &cf, &cs);
    struct timespec ts0;
    clock_gettime(CLOCK_MONOTONIC, &ts0);
    srand((unsigned)ts0.tv_nsec);
    int64_t before, after;
    assert_int_equal(pg_table_incr(t, "hot", ci, 0, &before), 0);
    for (int round = 0; round < 20; round++) {
        int pfd[2];
        assert_int_equal(pipe(pfd), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(pfd[0]);
            pg_table_incr(t, "hot", ci, 1, NULL);
            char c = 'R';  /* running: one incr done, even on a loaded machine */
            if (write(pfd[1], &c, 1) != 1)
                _exit(1);
            for (;;)
                pg_table_incr(t, "hot", ci, 1, NULL);
        }
        close(pfd[1]);
        char c = 0;
        assert_int_equal(read(pfd[0], &c, 1), 1);
        close(pfd[0]);
        struct timespec d = {0, (rand() % 3000000L)}; /* 0-3 ms */
        nanosleep(&d, NULL);
        assert_int_equal(kill(pid, SIGKILL), 0);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_int_equal(pg_table_incr(t, "hot", ci, 1, &after), 0);
        assert_true(after > before);  /* the child made progress, we got in */
        before = after;
        assert_int_equal(pg_table_get(t, "hot", NULL), 0);
    }
    assert_int_equal(pg_table_count(t), 1);
    pg_table_destroy(t);
    alarm(0);
}

/* Forked children see rows set before and after the fork by anyone. */
static void test_shared_across_fork(void **state)
{
    (void)state;
    set_timeout(10);
    int ci, cf, cs;
    pg_table *t = make_table(32, &ci, &cf, &cs);
    char *row = calloc(1, pg_table_row_size(t));
    pg_table_row_set_string(t, row, cs, "parent", 6);
    assert_int_equal(pg_table_set(t, "p", row), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int ok = pg_table_get(t, "p", row) == 0;
        size_t len;
        const char *s = pg_table_row_get_string(t, row, cs, &len);
        ok = ok && len == 6 && memcmp(s, "parent", 6) == 0;
        pg_table_row_set_string(t, row, cs, "child", 5);
        ok = ok && pg_table_set(t, "c", row) == 0 && pg_table_del(t, "p") == 0;
        _exit(ok ? 0 : 1);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(pg_table_get(t, "p", NULL), -1);
    assert_int_equal(pg_table_get(t, "c", row), 0);
    size_t len;
    const char *s = pg_table_row_get_string(t, row, cs, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(s, "child", 5);
    assert_int_equal(pg_table_count(t), 1);
    free(row);
    pg_table_destroy(t);
    alarm(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shm_alloc),
        cmocka_unit_test(test_columns),
        cmocka_unit_test(test_types_roundtrip),
        cmocka_unit_test(test_string_truncation),
        cmocka_unit_test(test_set_get_del),
        cmocka_unit_test(test_bad_keys),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_incr),
        cmocka_unit_test(test_update),
        cmocka_unit_test(test_update_concurrent),
        cmocka_unit_test(test_iterate),
        cmocka_unit_test(test_collisions),
        cmocka_unit_test(test_concurrent_processes),
        cmocka_unit_test(test_concurrent_threads),
        cmocka_unit_test(test_concurrent_churn),
        cmocka_unit_test(test_kill_holding_lock),
        cmocka_unit_test(test_kill_mid_incr),
        cmocka_unit_test(test_shared_across_fork),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_log.c - line format, levels, roles, escaping, reopen, threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static char tmpdir[64];
static char logpath[128];
static regex_t line_re;

#define LINE_PATTERN \
    "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3} " \
    "\\[(DEBUG|INFO|NOTICE|WARN|ERROR)\\] [^\n]* \\(pid [0-9]+\\): [^\n]*$"

/* Reads the whole log file; caller frees. */
static char *slurp(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *buf = NULL;
    size_t cap = 0, len = 0;
    for (;;) {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 65536;
            buf = realloc(buf, cap + 1);
            assert_non_null(buf);
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);
    buf[len] = '\0';
    if (len_out)
        *len_out = len;
    return buf;
}

/* Splits buf into lines in place; returns the number of lines (each must end
 * with '\n'). */
static size_t split_lines(char *buf, char ***lines_out)
{
    size_t n = 0, cap = 16;
    char **lines = malloc(cap * sizeof(*lines));
    assert_non_null(lines);
    char *p = buf;
    while (*p) {
        char *nl = strchr(p, '\n');
        assert_non_null(nl); /* last line terminated too */
        *nl = '\0';
        if (n == cap) {
            cap *= 2;
            lines = realloc(lines, cap * sizeof(*lines));
            assert_non_null(lines);
        }
        lines[n++] = p;
        p = nl + 1;
    }
    *lines_out = lines;
    return n;
}

static int setup(void **state)
{
    (void)state;
    snprintf(logpath, sizeof(logpath), "%s/test.log", tmpdir);
    unlink(logpath);
    assert_int_equal(pg_log_open(logpath), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pg_log_close();
    unlink(logpath);
    pg_log_set_level(PG_LOG_INFO);
    pg_log_set_role("main");
    return 0;
}

static void test_format(void **state)
{
    (void)state;
    assert_string_equal(pg_log_get_role(), "main");
    pg_log_set_role("worker 0");
    pg_info("hello %s %d", "world", 42);
    pg_log_set_role("master");
    pg_error("boom");

    char *buf = slurp(logpath, NULL);
    char **lines;
    size_t n = split_lines(buf, &lines);
    assert_int_equal(n, 2);
    char want[128];
    for (size_t i = 0; i < n; i++)
        assert_int_equal(regexec(&line_re, lines[i], 0, NULL, 0), 0);
    snprintf(want, sizeof(want), " [INFO] worker 0 (pid %ld): hello world 42", (long)getpid());
    assert_string_equal(lines[0] + 23, want);
    snprintf(want, sizeof(want), " [ERROR] master (pid %ld): boom", (long)getpid());
    assert_string_equal(lines[1] + 23, want);
    free(lines);
    free(buf);
}

static void test_levels(void **state)
{
    (void)state;
    /* first test: the built-in defaults */
    assert_int_equal(pg_log_get_level(), PG_LOG_INFO);
    assert_string_equal(pg_log_get_role(), "main");
    pg_debug("d1");
    pg_info("i1");
    pg_notice("n1");
    pg_warn("w1");
    pg_error("e1");
    pg_log_set_level(PG_LOG_WARN);
    assert_int_equal(pg_log_get_level(), PG_LOG_WARN);
    pg_info("i2");
    pg_notice("n2");
    pg_warn("w2");
    pg_log_set_level(PG_LOG_DEBUG);
    pg_debug("d3");

    char *buf = slurp(logpath, NULL);
    char **lines;
    size_t n = split_lines(buf, &lines);
    static const char *const want[][2] = {
        { "[INFO]", "i1" }, { "[NOTICE]", "n1" }, { "[WARN]", "w1" }, { "[ERROR]", "e1" },
        { "[WARN]", "w2" }, { "[DEBUG]", "d3" },
    };
    assert_int_equal(n, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(regexec(&line_re, lines[i], 0, NULL, 0), 0);
        assert_non_null(strstr(lines[i], want[i][0]));
        const char *msg = strstr(lines[i], "): ");
        assert_non_null(msg);
        assert_string_equal(msg + 3, want[i][1]);
    }
    free(lines);
    free(buf);
}

static void test_level_names(void **state)
{
    (void)state;
    pg_log_level l;
    assert_int_equal(pg_log_level_parse("debug", &l), 0);
    assert_int_equal(l, PG_LOG_DEBUG);
    assert_int_equal(pg_log_level_parse("INFO", &l), 0);
    assert_int_equal(l, PG_LOG_INFO);
    assert_int_equal(pg_log_level_parse("notice", &l), 0);
    assert_int_equal(l, PG_LOG_NOTICE);
    assert_int_equal(pg_log_level_parse("warn", &l), 0);
    assert_int_equal(l, PG_LOG_WARN);
    assert_int_equal(pg_log_level_parse("Warning", &l), 0);
    assert_int_equal(l, PG_LOG_WARN);
    assert_int_equal(pg_log_level_parse("error", &l), 0);
    assert_int_equal(l, PG_LOG_ERROR);
    assert_int_equal(pg_log_level_parse("verbose", &l), -1);
    assert_int_equal(pg_log_level_parse("", &l), -1);
    assert_string_equal(pg_log_level_name(PG_LOG_DEBUG), "DEBUG");
    assert_string_equal(pg_log_level_name(PG_LOG_NOTICE), "NOTICE");
    assert_string_equal(pg_log_level_name(PG_LOG_WARN), "WARN");
}

static void test_escaping(void **state)
{
    (void)state;
    pg_info("GET /a\r\nX-Injected: 1\n2026-01-01 00:00:00.000 [ERROR] fake\ttab\x01\x7f end \xc3\xa9");
    char *buf = slurp(logpath, NULL);
    char **lines;
    size_t n = split_lines(buf, &lines);
    assert_int_equal(n, 1);
    const char *msg = strstr(lines[0], "): ");
    assert_non_null(msg);
    assert_string_equal(msg + 3,
        "GET /a\\r\\nX-Injected: 1\\n2026-01-01 00:00:00.000 [ERROR] fake\\ttab\\x01\\x7f end \xc3\xa9");
    free(lines);
    free(buf);
}

static void test_truncation(void **state)
{
    (void)state;
    size_t big = 100000;
    char *s = malloc(big + 1);
    assert_non_null(s);
    memset(s, 'x', big);
    s[big] = '\0';
    pg_info("%s", s);
    /* escapes expand 1 -> 4 bytes: still one bounded line */
    memset(s, '\n', big);
    pg_warn("%s", s);
    free(s);

    size_t len;
    char *buf = slurp(logpath, &len);
    char **lines;
    size_t n = split_lines(buf, &lines);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(regexec(&line_re, lines[i], 0, NULL, 0), 0);
        size_t l = strlen(lines[i]);
        assert_true(l < 9000);
        assert_true(l > 8000);
        assert_string_equal(lines[i] + l - 3, "...");
    }
    free(lines);
    free(buf);
}

static void test_role_truncated_and_errno(void **state)
{
    (void)state;
    char role[200];
    memset(role, 'r', sizeof(role) - 1);
    role[sizeof(role) - 1] = '\0';
    pg_log_set_role(role);
    assert_true(strlen(pg_log_get_role()) < sizeof(role) - 1);
    assert_memory_equal(pg_log_get_role(), role, strlen(pg_log_get_role()));
    pg_log_set_role("task 2");
    assert_string_equal(pg_log_get_role(), "task 2");
    errno = ECONNRESET;
    pg_info("x");
    assert_int_equal(errno, ECONNRESET);
}

static void test_reopen(void **state)
{
    (void)state;
    char rotated[160];
    snprintf(rotated, sizeof(rotated), "%s.1", logpath);
    pg_info("before");
    assert_int_equal(rename(logpath, rotated), 0);
    pg_info("after rename");   /* still the old file */
    assert_int_equal(pg_log_reopen(), 0);
    pg_info("after reopen");

    char *old = slurp(rotated, NULL);
    char *cur = slurp(logpath, NULL);
    assert_non_null(strstr(old, "before"));
    assert_non_null(strstr(old, "after rename"));
    assert_null(strstr(old, "after reopen"));
    assert_null(strstr(cur, "before"));
    assert_non_null(strstr(cur, "after reopen"));
    free(old);
    free(cur);
    unlink(rotated);

    /* reopen on stderr is a no-op; opening a bad path fails with errno */
    pg_log_close();
    assert_int_equal(pg_log_reopen(), 0);
    char bad[160];
    snprintf(bad, sizeof(bad), "%s/no/such/dir/x.log", tmpdir);
    assert_int_equal(pg_log_open(bad), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(pg_log_open(logpath), 0);
}

#define NTHREADS 4
#define NLINES 1000

static void *log_thread(void *arg)
{
    int id = (int)(intptr_t)arg;
    char role[32];
    snprintf(role, sizeof(role), "thread %d", id);
    pg_log_set_role(role);
    for (int i = 0; i < NLINES; i++)
        pg_info("thread %d line %d payload %s", id, i,
                "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789");
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, log_thread, (void *)(intptr_t)i), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    assert_string_equal(pg_log_get_role(), "main"); /* per thread */

    char *buf = slurp(logpath, NULL);
    char **lines;
    size_t n = split_lines(buf, &lines);
    assert_int_equal(n, NTHREADS * NLINES);
    int next[NTHREADS] = { 0 };
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(regexec(&line_re, lines[i], 0, NULL, 0), 0);
        int id, seq;
        char role[32];
        const char *p = strstr(lines[i], "] thread ");
        assert_non_null(p);
        assert_int_equal(sscanf(p, "] thread %d (pid", &id), 1);
        assert_true(id >= 0 && id < NTHREADS);
        snprintf(role, sizeof(role), "] thread %d (pid", id);
        assert_ptr_equal(strstr(lines[i], role), p);
        const char *msg = strstr(lines[i], "): ");
        assert_non_null(msg);
        assert_int_equal(sscanf(msg, "): thread %*d line %d payload", &seq), 1);
        assert_int_equal(seq, next[id]); /* each thread's lines in order, none lost */
        next[id]++;
        assert_non_null(strstr(msg, "payload abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789"));
    }
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(next[i], NLINES);
    free(lines);
    free(buf);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/pg_test_log.XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    if (regcomp(&line_re, LINE_PATTERN, REG_EXTENDED | REG_NOSUB) != 0) {
        fprintf(stderr, "regcomp failed\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_levels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_level_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_role_truncated_and_errno, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    regfree(&line_re);
    rmdir(tmpdir);
    return rc;
}

/* test_config.c - settings: defaults, value types, INI files, env, --set, argv. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

typedef struct {
    long long worker_num;
    long long offset;
    int daemonize;
    size_t buffer;
    size_t unbounded;
    char *name;
    char *empty;
    pg_conf_bytes sep;
    int level;
} test_conf;

static const pg_conf_def test_defs[] = {
    { "worker_num", PG_CONF_INT, offsetof(test_conf, worker_num), "4", 1, 256, NULL, "worker processes" },
    { "offset", PG_CONF_INT, offsetof(test_conf, offset), "-5", 0, 0, NULL, "unbounded int" },
    { "daemonize", PG_CONF_BOOL, offsetof(test_conf, daemonize), "no", 0, 0, NULL, "detach" },
    { "buffer", PG_CONF_SIZE, offsetof(test_conf, buffer), "64K", 1024, 1LL << 30, NULL, "buffer size" },
    { "unbounded", PG_CONF_SIZE, offsetof(test_conf, unbounded), NULL, 0, 0, NULL, "any size" },
    { "name", PG_CONF_STRING, offsetof(test_conf, name), "pushgate", 0, 0, NULL, "node name" },
    { "empty", PG_CONF_STRING, offsetof(test_conf, empty), NULL, 0, 0, NULL, "empty by default" },
    { "sep", PG_CONF_BYTES, offsetof(test_conf, sep), "\\r\\n", 0, 0, NULL, "separator" },
    { "log_level", PG_CONF_ENUM, offsetof(test_conf, level), "info", 0, 0, "debug|info|warn|error", "log level" },
};

typedef struct {
    char *name;     /* duplicate key: the first table wins */
    long long port;
} other_conf;

static const pg_conf_def other_defs[] = {
    { "name", PG_CONF_STRING, offsetof(other_conf, name), "other", 0, 0, NULL, "shadowed" },
    { "port", PG_CONF_INT, offsetof(other_conf, port), "9501", 1, 65535, NULL, "listen port" },
};

static test_conf tc;
static other_conf oc;
static pg_conf_table tables[2];
static char err[512];
static char tmpdir[64];

#define NT (sizeof(tables) / sizeof(tables[0]))

static const char *const env_names[] = {
    "PUSHGATE_WORKER_NUM", "PUSHGATE_OFFSET", "PUSHGATE_DAEMONIZE", "PUSHGATE_BUFFER",
    "PUSHGATE_UNBOUNDED", "PUSHGATE_NAME", "PUSHGATE_EMPTY", "PUSHGATE_SEP",
    "PUSHGATE_LOG_LEVEL", "PUSHGATE_PORT",
};

static int setup(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++)
        unsetenv(env_names[i]);
    memset(&tc, 0xa5, sizeof(tc)); /* defaults must not depend on prior contents */
    memset(&oc, 0xa5, sizeof(oc));
    tables[0] = (pg_conf_table){ test_defs, sizeof(test_defs) / sizeof(test_defs[0]), &tc };
    tables[1] = (pg_conf_table){ other_defs, sizeof(other_defs) / sizeof(other_defs[0]), &oc };
    err[0] = '\0';
    assert_int_equal(pg_config_defaults(tables, NT, err, sizeof(err)), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pg_config_free(tables, NT);
    for (size_t i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++)
        unsetenv(env_names[i]);
    return 0;
}

/* Writes content to a fresh file in tmpdir; returns its path (static). */
static const char *write_ini(const char *name, const char *content)
{
    static char path[128];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
    return path;
}

static int set(const char *a)
{
    return pg_config_set(tables, NT, a, err, sizeof(err));
}

/* ------------------------------------------------------------------ tests */

static void test_defaults(void **state)
{
    (void)state;
    assert_int_equal(tc.worker_num, 4);
    assert_int_equal(tc.offset, -5);
    assert_int_equal(tc.daemonize, 0);
    assert_int_equal(tc.buffer, 64 * 1024);
    assert_int_equal(tc.unbounded, 0);
    assert_string_equal(tc.name, "pushgate");
    assert_non_null(tc.empty);
    assert_string_equal(tc.empty, "");
    assert_int_equal(tc.sep.len, 2);
    assert_memory_equal(tc.sep.data, "\r\n", 2);
    assert_int_equal(tc.level, 1);
    assert_string_equal(oc.name, "other");
    assert_int_equal(oc.port, 9501);
}

static void test_free_twice(void **state)
{
    (void)state;
    pg_config_free(tables, NT);
    assert_null(tc.name);
    assert_null(tc.sep.data);
    assert_int_equal(tc.sep.len, 0);
    pg_config_free(tables, NT); /* teardown frees a third time */
}

static void test_int(void **state)
{
    (void)state;
    assert_int_equal(set("worker_num=256"), 0);
    assert_int_equal(tc.worker_num, 256);
    assert_int_equal(set("worker_num=1"), 0);
    assert_int_equal(tc.worker_num, 1);

    assert_int_equal(set("worker_num=0"), -1);
    assert_string_equal(err, "--set worker_num: 0 is out of range [1, 256]");
    assert_int_equal(tc.worker_num, 1); /* unchanged on error */
    assert_int_equal(set("worker_num=257"), -1);
    assert_string_equal(err, "--set worker_num: 257 is out of range [1, 256]");
    assert_int_equal(set("worker_num=abc"), -1);
    assert_string_equal(err, "--set worker_num: 'abc' is not a number");
    assert_int_equal(set("worker_num=12abc"), -1);
    assert_int_equal(set("worker_num="), -1);
    assert_int_equal(set("worker_num= 3"), -1);
    assert_int_equal(set("worker_num=99999999999999999999"), -1);

    /* min == max == 0: unbounded */
    assert_int_equal(set("offset=-9223372036854775808"), 0);
    assert_true(tc.offset == INT64_MIN);
    assert_int_equal(set("offset=123456789012"), 0);
    assert_true(tc.offset == 123456789012LL);
}

static void test_bool(void **state)
{
    (void)state;
    static const char *const yes[] = { "true", "TRUE", "yes", "Yes", "on", "ON", "1" };
    static const char *const no[] = { "false", "False", "no", "NO", "off", "Off", "0" };
    char buf[64];
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        tc.daemonize = 0;
        snprintf(buf, sizeof(buf), "daemonize=%s", yes[i]);
        assert_int_equal(set(buf), 0);
        assert_int_equal(tc.daemonize, 1);
        snprintf(buf, sizeof(buf), "daemonize=%s", no[i]);
        assert_int_equal(set(buf), 0);
        assert_int_equal(tc.daemonize, 0);
    }
    assert_int_equal(set("daemonize=maybe"), -1);
    assert_non_null(strstr(err, "--set daemonize: 'maybe' is not a boolean"));
    assert_int_equal(set("daemonize=2"), -1);
    assert_int_equal(set("daemonize="), -1);
}

static void test_size(void **state)
{
    (void)state;
    static const struct { const char *v; size_t want; } ok[] = {
        { "4096", 4096 },
        { "64K", 64ULL << 10 }, { "64k", 64ULL << 10 }, { "64KB", 64ULL << 10 }, { "64KiB", 64ULL << 10 },
        { "2M", 2ULL << 20 }, { "2mb", 2ULL << 20 }, { "2MiB", 2ULL << 20 },
        { "1G", 1ULL << 30 }, { "1GB", 1ULL << 30 }, { "1gib", 1ULL << 30 },
        { "1024B", 1024 },
    };
    char buf[64];
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        snprintf(buf, sizeof(buf), "buffer=%s", ok[i].v);
        assert_int_equal(set(buf), 0);
        assert_int_equal(tc.buffer, ok[i].want);
    }
    /* bounds [1024, 1G] */
    assert_int_equal(set("buffer=1023"), -1);
    assert_string_equal(err, "--set buffer: '1023' (1023 bytes) is out of range [1024, 1073741824]");
    assert_int_equal(set("buffer=2G"), -1);
    assert_non_null(strstr(err, "out of range"));
    assert_int_equal(tc.buffer, 1024);
    /* syntax */
    assert_int_equal(set("buffer=12X"), -1);
    assert_non_null(strstr(err, "--set buffer: '12X' is not a size"));
    assert_int_equal(set("buffer=-1K"), -1);
    assert_int_equal(set("buffer=K"), -1);
    assert_int_equal(set("buffer= 1K"), -1);
    assert_int_equal(set("buffer=1 K"), -1);
    assert_int_equal(set("buffer="), -1);
    /* overflow, unbounded */
    assert_int_equal(set("unbounded=17179869183G"), 0);
    assert_int_equal(tc.unbounded, 17179869183ULL << 30);
    assert_int_equal(set("unbounded=17179869184G"), -1);
    assert_non_null(strstr(err, "too large"));
    assert_int_equal(set("unbounded=18446744073709551616"), -1);
    assert_int_equal(set("unbounded=99999999999999999999999K"), -1);
    assert_int_equal(set("unbounded=0"), 0);
    assert_int_equal(tc.unbounded, 0);
}

static void test_string(void **state)
{
    (void)state;
    assert_int_equal(set("name=node-1"), 0); /* frees "pushgate" (ASan checks) */
    assert_string_equal(tc.name, "node-1");
    assert_int_equal(set("name=a=b c"), 0);  /* first '=' splits */
    assert_string_equal(tc.name, "a=b c");
    assert_int_equal(set("name="), 0);
    assert_string_equal(tc.name, "");
    /* first table wins for a key defined twice */
    assert_string_equal(oc.name, "other");
    /* keys match case-insensitively */
    assert_int_equal(set("NAME=x"), 0);
    assert_string_equal(tc.name, "x");
}

static void test_bytes(void **state)
{
    (void)state;
    assert_int_equal(set("sep=a\\r\\n\\t\\\\\\0\\x41\\xfFz"), 0);
    assert_int_equal(tc.sep.len, 9);
    assert_memory_equal(tc.sep.data, "a\r\n\t\\\0A\xffz", 9);
    assert_int_equal(tc.sep.data[9], '\0');
    assert_int_equal(set("sep="), 0);
    assert_int_equal(tc.sep.len, 0);
    assert_string_equal(tc.sep.data, "");

    assert_int_equal(set("sep=\\q"), -1);
    assert_non_null(strstr(err, "--set sep: bad escape '\\q'"));
    assert_int_equal(set("sep=\\x4"), -1);
    assert_non_null(strstr(err, "bad escape '\\x'"));
    assert_int_equal(set("sep=\\xg0"), -1);
    assert_int_equal(set("sep=abc\\"), -1);
    assert_non_null(strstr(err, "trailing backslash"));
    assert_int_equal(tc.sep.len, 0); /* unchanged */
}

static void test_enum(void **state)
{
    (void)state;
    assert_int_equal(set("log_level=debug"), 0);
    assert_int_equal(tc.level, 0);
    assert_int_equal(set("log_level=ERROR"), 0);
    assert_int_equal(tc.level, 3);
    assert_int_equal(set("log_level=Warn"), 0);
    assert_int_equal(tc.level, 2);
    assert_int_equal(set("log_level=warning"), -1);
    assert_string_equal(err, "--set log_level: 'warning' is not one of debug|info|warn|error");
    assert_int_equal(set("log_level=inf"), -1);
    assert_int_equal(set("log_level="), -1);
    assert_int_equal(tc.level, 2);
}

static void test_set_syntax(void **state)
{
    (void)state;
    assert_int_equal(set("nosuch=1"), -1);
    assert_string_equal(err, "--set: unknown setting 'nosuch'");
    assert_int_equal(set("worker_num"), -1);
    assert_non_null(strstr(err, "expected key=value"));
    assert_int_equal(set("=4"), -1);
    /* err may be NULL */
    assert_int_equal(pg_config_set(tables, NT, "nosuch=1", NULL, 0), -1);
}

static void test_bad_default(void **state)
{
    (void)state;
    test_conf c;
    static const pg_conf_def bad[] = {
        { "s", PG_CONF_STRING, offsetof(test_conf, name), "x", 0, 0, NULL, "" },
        { "n", PG_CONF_INT, offsetof(test_conf, worker_num), "0", 1, 8, NULL, "" },
    };
    pg_conf_table t = { bad, 2, &c };
    assert_int_equal(pg_config_defaults(&t, 1, err, sizeof(err)), -1);
    assert_string_equal(err, "default n: 0 is out of range [1, 8]");
    pg_config_free(&t, 1);
    assert_null(c.name);
}

static void test_file(void **state)
{
    (void)state;
    const char *path = write_ini("good.ini",
        "; comment\n"
        "# another comment\n"
        "worker_num = 8\n"
        "\n"
        "[server]\n"
        "  daemonize = yes   ; inline comment\n"
        "\tbuffer=2M\r\n"
        "name = \"  spaced name  \"\n"
        "[other]\n"
        "sep = \"\\x00\\n\"\n"
        "log_level = WARN\n"
        "port = 8080\n"
        "empty = \"\"\n");
    assert_int_equal(pg_config_load_file(tables, NT, path, err, sizeof(err)), 0);
    assert_int_equal(tc.worker_num, 8);
    assert_int_equal(tc.daemonize, 1);
    assert_int_equal(tc.buffer, 2 << 20);
    assert_string_equal(tc.name, "  spaced name  ");
    assert_int_equal(tc.sep.len, 2);
    assert_memory_equal(tc.sep.data, "\0\n", 2);
    assert_int_equal(tc.level, 2);
    assert_int_equal(oc.port, 8080);
    assert_string_equal(tc.empty, "");
    assert_string_equal(oc.name, "other");
}

static void test_file_empty_int(void **state)
{
    (void)state;
    const char *path = write_ini("emptyint.ini", "worker_num =\n");
    assert_int_equal(pg_config_load_file(tables, NT, path, err, sizeof(err)), -1);
    char want[256];
    snprintf(want, sizeof(want), "%s:1: worker_num: '' is not a number", path);
    assert_string_equal(err, want);
}

static void test_file_unknown_key(void **state)
{
    (void)state;
    const char *path = write_ini("unknown.ini",
        "worker_num = 2\n"
        "[section]\n"
        "; comment\n"
        "  foo = 1\n"
        "bar = 2\n");
    assert_int_equal(pg_config_load_file(tables, NT, path, err, sizeof(err)), -1);
    char want[256];
    snprintf(want, sizeof(want), "%s:4: unknown setting 'foo'", path);
    assert_string_equal(err, want);
}

static void test_file_bad_value(void **state)
{
    (void)state;
    const char *path = write_ini("badvalue.ini",
        "[a]\n"
        "worker_num = 2\n"
        "\n"
        "worker_num = abc\n");
    char want[256];
    assert_int_equal(pg_config_load_file(tables, NT, path, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s:4: worker_num: 'abc' is not a number", path);
    assert_string_equal(err, want);

    path = write_ini("range.ini", "\n\nworker_num = 0\n");
    assert_int_equal(pg_config_load_file(tables, NT, path, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s:3: worker_num: 0 is out of range [1, 256]", path);
    assert_string_equal(err, want);
}

static void test_file_syntax(void **state)
{
    (void)state;
    char want[256];
    const char *path = write_ini("syntax.ini", "worker_num = 2\njust words\nport = 1\n");
    assert_int_equal(pg_config_load_file(tables, NT, path, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s:2: syntax error", path);
    assert_memory_equal(err, want, strlen(want));

    path = write_ini("quote.ini", "\nname = \"abc\n");
    assert_int_equal(pg_config_load_file(tables, NT, path, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s:2: name: unterminated quoted value", path);
    assert_memory_equal(err, want, strlen(want));

    /* A line longer than inih's buffer is an error, not two half lines. */
    char longline[600];
    memset(longline, 0, sizeof(longline));
    strcpy(longline, "x=1\nname = ");
    memset(longline + strlen(longline), 'a', 400);
    strcat(longline, "\n");
    path = write_ini("long.ini", longline);
    assert_int_equal(pg_config_load_file(tables, NT, path, err, sizeof(err)), -1);
    /* line 1 has the unknown key 'x': the first error wins */
    snprintf(want, sizeof(want), "%s:1: unknown setting 'x'", path);
    assert_string_equal(err, want);
    path = write_ini("long2.ini", longline + 4);
    assert_int_equal(pg_config_load_file(tables, NT, path, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s:1: line too long", path);
    assert_memory_equal(err, want, strlen(want));
}

static void test_file_missing(void **state)
{
    (void)state;
    char path[128], want[256];
    snprintf(path, sizeof(path), "%s/does-not-exist.ini", tmpdir);
    assert_int_equal(pg_config_load_file(tables, NT, path, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s: No such file or directory", path);
    assert_string_equal(err, want);
}

static void test_env(void **state)
{
    (void)state;
    setenv("PUSHGATE_WORKER_NUM", "16", 1);
    setenv("PUSHGATE_NAME", "from-env", 1);
    setenv("PUSHGATE_LOG_LEVEL", "debug", 1);
    setenv("PUSHGATE_PORT", "7000", 1);
    assert_int_equal(pg_config_load_env(tables, NT, err, sizeof(err)), 0);
    assert_int_equal(tc.worker_num, 16);
    assert_string_equal(tc.name, "from-env");
    assert_string_equal(oc.name, "other"); /* shadowed key: only the first table */
    assert_int_equal(tc.level, 0);
    assert_int_equal(oc.port, 7000);

    setenv("PUSHGATE_WORKER_NUM", "abc", 1);
    assert_int_equal(pg_config_load_env(tables, NT, err, sizeof(err)), -1);
    assert_string_equal(err, "env PUSHGATE_WORKER_NUM: 'abc' is not a number");
    setenv("PUSHGATE_WORKER_NUM", "1000", 1);
    assert_int_equal(pg_config_load_env(tables, NT, err, sizeof(err)), -1);
    assert_string_equal(err, "env PUSHGATE_WORKER_NUM: 1000 is out of range [1, 256]");
}

static void test_precedence(void **state)
{
    (void)state;
    const char *path = write_ini("prec.ini", "worker_num = 2\nport = 1000\nname = file\n");
    assert_int_equal(pg_config_load_file(tables, NT, path, err, sizeof(err)), 0);
    assert_int_equal(tc.worker_num, 2);
    setenv("PUSHGATE_WORKER_NUM", "3", 1);
    setenv("PUSHGATE_PORT", "2000", 1);
    assert_int_equal(pg_config_load_env(tables, NT, err, sizeof(err)), 0);
    assert_int_equal(set("worker_num=5"), 0);
    assert_int_equal(tc.worker_num, 5); /* --set > env > file */
    assert_int_equal(oc.port, 2000);    /* env > file */
    assert_string_equal(tc.name, "file");
}

static void test_args(void **state)
{
    (void)state;
    pg_config_free(tables, NT); /* from_args applies defaults itself */
    const char *path = write_ini("args.ini", "worker_num = 2\nport = 1000\nname = file\nbuffer = 8K\n");
    setenv("PUSHGATE_WORKER_NUM", "3", 1);
    setenv("PUSHGATE_PORT", "2000", 1);
    /* --set before -c on the command line: still applied last */
    char *argv[] = { "prog", "--set", "worker_num=5", "-c", (char *)path, "-s", "name=cli",
                     "--set=log_level=error", NULL };
    int argc = (int)(sizeof(argv) / sizeof(argv[0])) - 1;
    assert_int_equal(pg_config_from_args(argc, argv, "prog", "1.2.3", tables, NT), 0);
    assert_int_equal(tc.worker_num, 5);
    assert_int_equal(oc.port, 2000);
    assert_string_equal(tc.name, "cli");
    assert_int_equal(tc.buffer, 8192);
    assert_int_equal(tc.level, 3);
    assert_int_equal(tc.daemonize, 0);

    /* no arguments: defaults + env */
    pg_config_free(tables, NT);
    char *argv0[] = { "prog", NULL };
    assert_int_equal(pg_config_from_args(1, argv0, "prog", "1.2.3", tables, NT), 0);
    assert_int_equal(tc.worker_num, 3);
    assert_string_equal(tc.name, "pushgate");
}

/* Runs from_args with stdout and stderr captured into files; returns rc. */
static int run_args(int argc, char **argv, char *out, size_t outlen, char *errout, size_t errlen)
{
    char po[128], pe[128];
    snprintf(po, sizeof(po), "%s/stdout", tmpdir);
    snprintf(pe, sizeof(pe), "%s/stderr", tmpdir);
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    FILE *fo = freopen(po, "w", stdout);
    FILE *fe = freopen(pe, "w", stderr);
    assert_non_null(fo);
    assert_non_null(fe);
    pg_config_free(tables, NT);
    int rc = pg_config_from_args(argc, argv, "pushgate-test", "9.9.9", tables, NT);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    clearerr(stdout);
    clearerr(stderr);
    FILE *f = fopen(po, "r");
    size_t n = fread(out, 1, outlen - 1, f);
    out[n] = '\0';
    fclose(f);
    f = fopen(pe, "r");
    n = fread(errout, 1, errlen - 1, f);
    errout[n] = '\0';
    fclose(f);
    return rc;
}

static void test_args_help_version(void **state)
{
    (void)state;
    static char out[8192], eout[2048];
    char *help[] = { "prog", "--set", "worker_num=0", "--help", NULL };
    /* --help wins over (not yet applied) bad settings */
    assert_int_equal(run_args(4, help, out, sizeof(out), eout, sizeof(eout)), 1);
    assert_non_null(strstr(out, "Usage: pushgate-test [-c FILE] [--set key=value ...]"));
    assert_non_null(strstr(out, "  worker_num = 4"));
    assert_non_null(strstr(out, "worker processes"));
    assert_non_null(strstr(out, "log_level = info"));
    assert_non_null(strstr(out, "port = 9501"));
    assert_string_equal(eout, "");
    assert_null(tc.name); /* nothing left allocated after rc != 0 */

    char *h[] = { "prog", "-h", NULL };
    assert_int_equal(run_args(2, h, out, sizeof(out), eout, sizeof(eout)), 1);
    assert_non_null(strstr(out, "Usage:"));

    char *ver[] = { "prog", "--version", NULL };
    assert_int_equal(run_args(2, ver, out, sizeof(out), eout, sizeof(eout)), 1);
    assert_string_equal(out, "pushgate-test 9.9.9\n");
    char *v[] = { "prog", "-v", NULL };
    assert_int_equal(run_args(2, v, out, sizeof(out), eout, sizeof(eout)), 1);
    assert_string_equal(out, "pushgate-test 9.9.9\n");
}

static void test_args_errors(void **state)
{
    (void)state;
    static char out[4096], eout[2048];
    char *unknown[] = { "prog", "--bogus", NULL };
    assert_int_equal(run_args(2, unknown, out, sizeof(out), eout, sizeof(eout)), -1);
    assert_non_null(strstr(eout, "pushgate-test: unknown argument '--bogus'"));
    assert_non_null(strstr(eout, "Usage: pushgate-test"));

    char *noarg[] = { "prog", "-c", NULL };
    assert_int_equal(run_args(2, noarg, out, sizeof(out), eout, sizeof(eout)), -1);
    assert_non_null(strstr(eout, "needs an argument"));

    char path[128];
    snprintf(path, sizeof(path), "%s/missing.ini", tmpdir);
    char *missing[] = { "prog", "--config", path, NULL };
    assert_int_equal(run_args(3, missing, out, sizeof(out), eout, sizeof(eout)), -1);
    char want[256];
    snprintf(want, sizeof(want), "pushgate-test: %s: No such file or directory\n", path);
    assert_string_equal(eout, want);

    char *badset[] = { "prog", "--set", "worker_num=0", NULL };
    assert_int_equal(run_args(3, badset, out, sizeof(out), eout, sizeof(eout)), -1);
    assert_string_equal(eout, "pushgate-test: --set worker_num: 0 is out of range [1, 256]\n");
    assert_null(tc.name);

    setenv("PUSHGATE_DAEMONIZE", "perhaps", 1);
    char *envbad[] = { "prog", NULL };
    assert_int_equal(run_args(1, envbad, out, sizeof(out), eout, sizeof(eout)), -1);
    assert_non_null(strstr(eout, "pushgate-test: env PUSHGATE_DAEMONIZE: 'perhaps' is not a boolean"));
}

static void test_print_help(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    pg_config_print_help(f, tables, NT);
    fclose(f);
    assert_non_null(strstr(buf, "  worker_num = 4"));
    assert_non_null(strstr(buf, "  empty = \"\""));
    assert_non_null(strstr(buf, "  sep = \\r\\n"));
    assert_non_null(strstr(buf, "\n\n  name = other")); /* tables separated */
    /* every line: two spaces, key = default, help */
    assert_int_equal(buf[len - 1], '\n');
    free(buf);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/pg_test_config.XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_int, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bool, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_string, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enum, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_syntax, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_default, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_empty_int, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_unknown_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_bad_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_syntax, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_args_help_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_args_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_print_help, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return rc;
}

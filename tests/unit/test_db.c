/* test_db.c - common/db.c against a real MariaDB.
 *
 * The server comes from PUSHGATE_MYSQL_HOST/_PORT/_USER/_PASSWORD/_DATABASE
 * (tests/e2e/test_db.py passes those of the throw-away stack); without
 * PUSHGATE_MYSQL_HOST every test is skipped.  A scratch table db_test_<pid>
 * is created and dropped at the end.
 *
 * With PG_DB_TEST_RESTART_DIR set only the restart test runs: it queries,
 * creates DIR/ready, waits for DIR/stopped (the server is down), checks that
 * a query fails cleanly, creates DIR/checked, waits for DIR/started and
 * checks that the next query reconnects.  Every wait is bounded.
 *
 * The server lists of mysql_hosts (db_hosts.c) are checked without a
 * server; failover is checked on the one server under two names
 * (PUSHGATE_MYSQL_HOST and localhost), so every move shows, and the
 * errors that make a statement run again (1047 moves on, 1213 backs off)
 * come from a procedure that SIGNALs them. */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <mysql.h>

#include "db.h"

#define TEST_TIMEOUT_S 300

static int have_db;
static pg_db_config cfg;
static pg_db *db;
static pg_db *other;          /* more handles; closed by test_teardown */
static pg_db *idle;
static char *scratch;         /* a test's big buffer; freed by test_teardown */
static char table[64];
static char proc[80];         /* a scratch procedure, table's name + "_p" */
static int small_buffers;     /* see mysql_fetch_fields below */

/* ------------------------------------------------------------ helpers */

/* The server's max_length always fits the longest value, so db.c's first
 * buffers always do too.  With small_buffers set this wrapper of libmariadb's
 * function reports max_length 0, so db.c starts small and has to grow its
 * buffers and fetch the columns that did not fit again. */
MYSQL_FIELD *STDCALL mysql_fetch_fields(MYSQL_RES *res)
{
    static MYSQL_FIELD *(*real)(MYSQL_RES *);
    if (real == NULL)
        real = (MYSQL_FIELD * (*)(MYSQL_RES *)) dlsym(RTLD_NEXT, "mysql_fetch_fields");
    if (real == NULL)
        fail_msg("dlsym mysql_fetch_fields: %s", dlerror());
    MYSQL_FIELD *f = real(res);
    if (small_buffers && f != NULL)
        for (unsigned i = 0; i < mysql_num_fields(res); i++)
            f[i].max_length = 0;
    return f;
}

#define NEED_DB()            \
    do {                     \
        if (!have_db) {      \
            skip();          \
            return;          \
        }                    \
    } while (0)

static void config_from_env(void)
{
    const char *host = getenv("PUSHGATE_MYSQL_HOST");
    if (host == NULL || *host == '\0')
        return;
    const char *port = getenv("PUSHGATE_MYSQL_PORT");
    const char *user = getenv("PUSHGATE_MYSQL_USER");
    const char *pass = getenv("PUSHGATE_MYSQL_PASSWORD");
    const char *name = getenv("PUSHGATE_MYSQL_DATABASE");
    memset(&cfg, 0, sizeof cfg);
    cfg.host = host;
    cfg.port = port ? atoi(port) : 3306;
    cfg.user = user ? user : "pushgate";
    cfg.password = pass ? pass : "";
    cfg.database = name ? name : "pushgate";
    cfg.connect_timeout_s = 5;
    cfg.read_timeout_s = 30;
    cfg.write_timeout_s = 30;
    have_db = 1;
}

static pg_db *open_db(void)
{
    char err[256];
    pg_db *d = pg_db_open(&cfg, err, sizeof err);
    if (d == NULL)
        fail_msg("pg_db_open: %s", err);
    return d;
}

static void exec_full(pg_db *d, const char *sql, const pg_db_value *p, int n,
                      unsigned long long *affected, unsigned long long *insert_id)
{
    if (pg_db_exec(d, sql, p, n, affected, insert_id) != 0)
        fail_msg("%s: %s (%u)", sql, pg_db_error(d), pg_db_errno(d));
}

static void exec_ok(pg_db *d, const char *sql, const pg_db_value *p, int n)
{
    exec_full(d, sql, p, n, NULL, NULL);
}

/* Collects the first column of each row as an int, and the row count. */
typedef struct {
    long long v[256];
    int n;
} ints;

static int collect_int(void *arg, const pg_db_value *cols, int ncols)
{
    ints *r = arg;
    assert_true(ncols >= 1);
    assert_int_equal(cols[0].type, PG_DB_INT);
    if (r->n < 256)
        r->v[r->n] = cols[0].i;
    r->n++;
    return 0;
}

static long long query_int(pg_db *d, const char *sql, const pg_db_value *p, int n)
{
    ints r = {.n = 0};
    long long rows = pg_db_query(d, sql, p, n, collect_int, &r);
    if (rows != 1)
        fail_msg("%s: %lld rows: %s (%u)", sql, rows, pg_db_error(d), pg_db_errno(d));
    assert_int_equal(r.n, 1);
    return r.v[0];
}

static int first_str_as_int(void *arg, const pg_db_value *cols, int ncols)
{
    long long *v = arg;
    assert_true(ncols >= 1);
    assert_int_equal(cols[0].type, PG_DB_STRING);
    char buf[32];
    size_t n = cols[0].len < sizeof buf - 1 ? cols[0].len : sizeof buf - 1;
    memcpy(buf, cols[0].s, n);
    buf[n] = '\0';
    *v = strtoll(buf, NULL, 10);
    return 0;
}

/* A counter of this connection (information_schema.SESSION_STATUS). */
static long long session_status(pg_db *d, const char *name)
{
    long long v = -1;
    pg_db_value p[1] = {PG_DB_STR_VALUE(name)};
    long long rows = pg_db_query(d, "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS "
                                    "WHERE VARIABLE_NAME = ?", p, 1, first_str_as_int, &v);
    if (rows != 1)
        fail_msg("session status %s: %lld rows: %s", name, rows, pg_db_error(d));
    return v;
}

/* A copy of one row's columns (strings duplicated). */
typedef struct {
    int ncols;
    int rows;
    pg_db_value cols[16];
    char *strs[16];
} row_copy;

static int copy_row(void *arg, const pg_db_value *cols, int ncols)
{
    row_copy *r = arg;
    r->rows++;
    if (r->rows > 1)
        return 0;
    assert_true(ncols <= 16);
    r->ncols = ncols;
    for (int i = 0; i < ncols; i++) {
        r->cols[i] = cols[i];
        if (cols[i].type == PG_DB_STRING) {
            r->strs[i] = malloc(cols[i].len + 1);
            assert_non_null(r->strs[i]);
            memcpy(r->strs[i], cols[i].s, cols[i].len);
            r->strs[i][cols[i].len] = '\0';
            r->cols[i].s = r->strs[i];
        }
    }
    return 0;
}

static row_copy qrow;        /* freed by test_teardown too */

static void row_free(row_copy *r)
{
    for (int i = 0; i < 16; i++)
        free(r->strs[i]);
    memset(r, 0, sizeof *r);
}

static void assert_str_col(const row_copy *r, int i, const char *want, size_t len)
{
    assert_int_equal(r->cols[i].type, PG_DB_STRING);
    assert_int_equal(r->cols[i].len, len);
    assert_memory_equal(r->cols[i].s, want, len);
}

static int wait_file(const char *dir, const char *name, int timeout_s)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct timespec ts = {0, 50 * 1000 * 1000};
    for (int i = 0; i < timeout_s * 20; i++) {
        if (access(path, F_OK) == 0)
            return 0;
        nanosleep(&ts, NULL);
    }
    return -1;
}

static void touch_file(const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    close(fd);
}

/* ------------------------------------------------------------ fixtures */

static int group_setup(void **state)
{
    (void)state;
    alarm(TEST_TIMEOUT_S);
    config_from_env();
    if (!have_db)
        return 0;
    char err[256];
    db = pg_db_open(&cfg, err, sizeof err);
    if (db == NULL) {
        fprintf(stderr, "test_db: cannot connect: %s\n", err);
        return -1;
    }
    snprintf(table, sizeof table, "db_test_%ld", (long)getpid());
    snprintf(proc, sizeof proc, "%s_p", table);
    char sql[512];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", table);
    if (pg_db_exec(db, sql, NULL, 0, NULL, NULL) != 0)
        return -1;
    snprintf(sql, sizeof sql,
             "CREATE TABLE %s (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, "
             "n INT NULL, s VARCHAR(255) NULL, t MEDIUMTEXT NULL, "
             "u BIGINT UNSIGNED NULL, d DECIMAL(10,3) NULL, f DOUBLE NULL, "
             "ts DATETIME NULL, b VARBINARY(64) NULL, g DOUBLE(255,30) NULL) "
             "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci",
             table);
    if (pg_db_exec(db, sql, NULL, 0, NULL, NULL) != 0) {
        fprintf(stderr, "test_db: %s: %s\n", sql, pg_db_error(db));
        return -1;
    }
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    pg_db_close(other);
    other = NULL;
    pg_db_close(idle);
    idle = NULL;
    free(scratch);
    scratch = NULL;
    row_free(&qrow);
    small_buffers = 0;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (db != NULL) {
        char sql[128];
        snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", table);
        if (pg_db_exec(db, sql, NULL, 0, NULL, NULL) != 0)
            fprintf(stderr, "test_db: %s: %s\n", sql, pg_db_error(db));
        snprintf(sql, sizeof sql, "DROP PROCEDURE IF EXISTS %s", proc);
        if (pg_db_exec(db, sql, NULL, 0, NULL, NULL) != 0)
            fprintf(stderr, "test_db: %s: %s\n", sql, pg_db_error(db));
        snprintf(sql, sizeof sql, "DROP PROCEDURE IF EXISTS %s_f", table);
        if (pg_db_exec(db, sql, NULL, 0, NULL, NULL) != 0)
            fprintf(stderr, "test_db: %s: %s\n", sql, pg_db_error(db));
        snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s_c", table);
        if (pg_db_exec(db, sql, NULL, 0, NULL, NULL) != 0)
            fprintf(stderr, "test_db: %s: %s\n", sql, pg_db_error(db));
        pg_db_close(db);
        db = NULL;
    }
    alarm(0);
    return 0;
}

/* ------------------------------------------------------------ tests */

static void test_open_wrong_password(void **state)
{
    (void)state;
    NEED_DB();
    pg_db_config c = cfg;
    c.password = "definitely-not-the-password";
    char err[256] = "unchanged";
    pg_db *d = pg_db_open(&c, err, sizeof err);
    assert_null(d);
    assert_true(strlen(err) > 0);
    assert_string_not_equal(err, "unchanged");
    assert_non_null(strstr(err, "1045"));       /* ER_ACCESS_DENIED_ERROR */
}

/* A free loopback port a moment ago: nothing listens there. */
static int closed_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &al), 0);
    close(s);
    return ntohs(a.sin_port);
}

static void test_open_closed_port(void **state)
{
    (void)state;
    NEED_DB();
    /* A port that was free a moment ago, on loopback: refused at once. */
    pg_db_config c = cfg;
    c.host = "127.0.0.1";
    c.port = closed_port();
    c.connect_timeout_s = 2;
    char err[256] = "";
    pg_db *d = pg_db_open(&c, err, sizeof err);
    assert_null(d);
    assert_true(strlen(err) > 0);

    /* Small error buffers are not overrun; NULL config is refused. */
    char tiny[8];
    assert_null(pg_db_open(&c, tiny, sizeof tiny));
    assert_true(strlen(tiny) < sizeof tiny);
    assert_null(pg_db_open(NULL, tiny, sizeof tiny));
    assert_null(pg_db_open(&c, NULL, 0));
}

static void test_ping(void **state)
{
    (void)state;
    NEED_DB();
    assert_int_equal(pg_db_ping(db), 0);
    assert_string_equal(pg_db_error(db), "");
    assert_int_equal(pg_db_errno(db), 0);
}

static void test_exec_insert(void **state)
{
    (void)state;
    NEED_DB();
    char sql[256];
    snprintf(sql, sizeof sql, "INSERT INTO %s (n, s, t, u) VALUES (?, ?, ?, ?)", table);
    unsigned long long affected = 99, id1 = 0, id2 = 0, id3 = 0;

    pg_db_value p1[4] = {PG_DB_INT_VALUE(42), PG_DB_STR_VALUE("hello"),
                         {.type = PG_DB_NULL}, PG_DB_INT_VALUE(7)};
    exec_full(db, sql, p1, 4, &affected, &id1);
    assert_int_equal(affected, 1);
    assert_true(id1 > 0);

    pg_db_value p2[4] = {{.type = PG_DB_NULL}, {.type = PG_DB_NULL},
                         PG_DB_STR_VALUE(""), {.type = PG_DB_NULL}};
    exec_full(db, sql, p2, 4, &affected, &id2);
    assert_int_equal(affected, 1);
    assert_int_equal(id2, id1 + 1);

    /* NULL out-pointers are allowed; a string with len but no NUL. */
    pg_db_value p3[4] = {PG_DB_INT_VALUE(-7), {.type = PG_DB_STRING, .s = "abcdef", .len = 3},
                         {.type = PG_DB_STRING, .s = NULL, .len = 0}, PG_DB_INT_VALUE(5)};
    exec_full(db, sql, p3, 4, NULL, NULL);
    exec_full(db, sql, p3, 4, NULL, &id3);
    assert_int_equal(id3, id2 + 2);

    snprintf(sql, sizeof sql, "UPDATE %s SET n = n + 1 WHERE n = ? OR n = ?", table);
    pg_db_value pu[2] = {PG_DB_INT_VALUE(-7), PG_DB_INT_VALUE(42)};
    exec_full(db, sql, pu, 2, &affected, NULL);
    assert_int_equal(affected, 3);

    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE s = ?", table);
    pg_db_value pc[1] = {PG_DB_STR_VALUE("abc")};
    assert_int_equal(query_int(db, sql, pc, 1), 2);

    /* Wrong parameter count: an error, not a crash, and the handle works on. */
    assert_int_equal(pg_db_exec(db, sql, pc, 0, NULL, NULL), -1);
    assert_true(pg_db_errno(db) != 0);
    assert_true(strlen(pg_db_error(db)) > 0);
    assert_int_equal(query_int(db, sql, pc, 1), 2);
    assert_string_equal(pg_db_error(db), "");

    /* An exec that returns rows is drained. */
    exec_full(db, sql, pc, 1, NULL, NULL);
    assert_int_equal(query_int(db, "SELECT 7", NULL, 0), 7);

    /* Values that cannot be bound and bad arguments: errors naming them. */
    pg_db_value bad[2] = {PG_DB_INT_VALUE(1), {.type = PG_DB_STRING, .s = NULL, .len = 3}};
    assert_int_equal(pg_db_query(db, "SELECT ?, ?", bad, 2, collect_int, NULL), -1);
    assert_int_equal(pg_db_errno(db), 2034);                 /* CR_INVALID_PARAMETER_NO */
    assert_string_equal(pg_db_error(db), "parameter 2: NULL string");
    bad[1] = (pg_db_value){.type = (pg_db_type)99};
    assert_int_equal(pg_db_exec(db, "SELECT ?, ?", bad, 2, NULL, NULL), -1);
    assert_string_equal(pg_db_error(db), "parameter 2: unknown type 99");
    assert_int_equal(pg_db_exec(db, "SELECT ?", NULL, 1, NULL, NULL), -1);
    assert_string_equal(pg_db_error(db), "bad arguments");
    assert_int_equal(pg_db_query(db, "SELECT 1", NULL, -1, NULL, NULL), -1);
    assert_int_equal(pg_db_query(db, NULL, NULL, 0, NULL, NULL), -1);
    assert_int_equal(pg_db_errno(db), 2034);
    assert_int_equal(query_int(db, "SELECT 8", NULL, 0), 8);

    /* A query of a statement without rows: 0 rows, fn never called. */
    snprintf(sql, sizeof sql, "UPDATE %s SET n = n WHERE s = ?", table);
    ints none = {.n = 0};
    assert_int_equal(pg_db_query(db, sql, pc, 1, collect_int, &none), 0);
    assert_int_equal(none.n, 0);

    snprintf(sql, sizeof sql, "DELETE FROM %s", table);
    exec_full(db, sql, NULL, 0, &affected, NULL);
    assert_int_equal(affected, 4);
}

/* Rows of (i, REPEAT(CHAR(97 + i), len[i]) or NULL when len[i] < 0). */
typedef struct {
    const int *len;
    int rows;
} repeats;

static int check_repeat(void *arg, const pg_db_value *cols, int ncols)
{
    repeats *r = arg;
    int i = r->rows++;
    assert_int_equal(ncols, 2);
    assert_int_equal(cols[0].type, PG_DB_INT);
    assert_int_equal(cols[0].i, i);
    if (r->len[i] < 0) {
        assert_int_equal(cols[1].type, PG_DB_NULL);
        return 0;
    }
    assert_int_equal(cols[1].type, PG_DB_STRING);
    assert_int_equal(cols[1].len, (size_t)r->len[i]);
    for (size_t k = 0; k < cols[1].len; k++)
        if (cols[1].s[k] != 'a' + i)
            fail_msg("row %d: byte %zu is %d", i, k, cols[1].s[k]);
    return 0;
}

/* Values longer than the first buffers, row after row: each grown buffer is
 * bound for the rows after it, shorter values after longer ones come out
 * right, and a value of exactly the buffer's size (no room for the NUL)
 * grows it too. */
static void check_buffers_grow(void)
{
    static const int len[] = {10, 64, 1000, -1, 63, 65, 5000, 1, 0, 70000};
    const int n = (int)(sizeof len / sizeof len[0]);
    char sql[2048];
    int used = 0;
    for (int i = 0; i < n; i++) {
        char val[64];
        if (len[i] < 0)
            snprintf(val, sizeof val, "NULL");
        else
            snprintf(val, sizeof val, "REPEAT(CHAR(%d), %d)", 97 + i, len[i]);
        used += snprintf(sql + used, sizeof sql - (size_t)used, "%sSELECT %d, %s",
                         i ? " UNION ALL " : "", i, val);
    }
    repeats r = {.len = len, .rows = 0};
    small_buffers = 1;
    long long rows = pg_db_query(db, sql, NULL, 0, check_repeat, &r);
    small_buffers = 0;
    if (rows != n)
        fail_msg("%lld rows: %s (%u)", rows, pg_db_error(db), pg_db_errno(db));
    assert_int_equal(r.rows, n);
    /* With the real max_length: the same rows. */
    r.rows = 0;
    assert_int_equal(pg_db_query(db, sql, NULL, 0, check_repeat, &r), n);
}

static void test_query_types(void **state)
{
    (void)state;
    NEED_DB();
    const size_t big = 100 * 1024;
    char *text = scratch = malloc(big + 1);
    assert_non_null(text);
    for (size_t i = 0; i < big; i++)
        text[i] = (char)('a' + (i * 7 + i / 26) % 26);
    text[big] = '\0';
    const char *utf = "中文测试 \xF0\x9F\x98\x80 emoji";   /* U+1F600: needs utf8mb4 */
    const unsigned char bin[5] = {0, 1, 0xff, 0x80, 0};

    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO %s (n, s, t, u, d, f, ts, b) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", table);
    unsigned long long id = 0;
    pg_db_value p[8] = {
        PG_DB_INT_VALUE(-2147483647LL - 1), PG_DB_STR_VALUE(utf),
        {.type = PG_DB_STRING, .s = text, .len = big}, PG_DB_STR_VALUE("18446744073709551615"),
        PG_DB_STR_VALUE("12.5"), PG_DB_STR_VALUE("0.25"), PG_DB_STR_VALUE("2024-02-29 13:14:15"),
        {.type = PG_DB_STRING, .s = (const char *)bin, .len = sizeof bin}};
    exec_full(db, sql, p, 8, NULL, &id);
    pg_db_value pn[8] = {{.type = PG_DB_NULL}, {.type = PG_DB_NULL}, {.type = PG_DB_NULL},
                         {.type = PG_DB_NULL}, {.type = PG_DB_NULL}, {.type = PG_DB_NULL},
                         {.type = PG_DB_NULL}, {.type = PG_DB_NULL}};
    unsigned long long idn = 0;
    exec_full(db, sql, pn, 8, NULL, &idn);

    snprintf(sql, sizeof sql,
             "SELECT id, n, s, t, u, d, f, ts, b, CHAR_LENGTH(s), LENGTH(t) FROM %s WHERE id = ?",
             table);
    pg_db_value pid[1] = {PG_DB_INT_VALUE((long long)id)};
    assert_int_equal(pg_db_query(db, sql, pid, 1, copy_row, &qrow), 1);
    assert_int_equal(qrow.ncols, 11);
    assert_int_equal(qrow.cols[0].type, PG_DB_INT);
    assert_int_equal(qrow.cols[0].i, (long long)id);
    assert_int_equal(qrow.cols[1].type, PG_DB_INT);
    assert_true(qrow.cols[1].i == -2147483647LL - 1);
    assert_str_col(&qrow, 2, utf, strlen(utf));
    assert_str_col(&qrow, 3, text, big);
    assert_int_equal(qrow.cols[4].type, PG_DB_INT);           /* unsigned: bits kept */
    assert_true((unsigned long long)qrow.cols[4].i == 18446744073709551615ULL);
    assert_str_col(&qrow, 5, "12.500", 6);
    assert_int_equal(qrow.cols[6].type, PG_DB_STRING);
    assert_true(strtod(qrow.cols[6].s, NULL) == 0.25);
    assert_str_col(&qrow, 7, "2024-02-29 13:14:15", 19);
    assert_str_col(&qrow, 8, (const char *)bin, sizeof bin);
    assert_int_equal(qrow.cols[9].type, PG_DB_INT);
    assert_int_equal(qrow.cols[9].i, 12);                     /* characters, not bytes */
    assert_int_equal(qrow.cols[10].i, (long long)big);
    row_free(&qrow);

    /* The same row again, starting from buffers too small for it. */
    small_buffers = 1;
    assert_int_equal(pg_db_query(db, sql, pid, 1, copy_row, &qrow), 1);
    small_buffers = 0;
    assert_int_equal(qrow.cols[0].i, (long long)id);
    assert_str_col(&qrow, 2, utf, strlen(utf));
    assert_str_col(&qrow, 3, text, big);
    assert_str_col(&qrow, 5, "12.500", 6);
    assert_str_col(&qrow, 7, "2024-02-29 13:14:15", 19);
    assert_str_col(&qrow, 8, (const char *)bin, sizeof bin);
    assert_int_equal(qrow.cols[10].i, (long long)big);
    row_free(&qrow);

    pid[0] = PG_DB_INT_VALUE((long long)idn);
    assert_int_equal(pg_db_query(db, sql, pid, 1, copy_row, &qrow), 1);
    for (int i = 1; i <= 10; i++)
        assert_int_equal(qrow.cols[i].type, PG_DB_NULL);
    row_free(&qrow);

    /* Numbers printed as long text are not cut short. */
    snprintf(sql, sizeof sql, "UPDATE %s SET g = 1e200, f = -1.2345678901234567e-300 WHERE id = ?",
             table);
    exec_ok(db, sql, pid, 1);
    snprintf(sql, sizeof sql, "SELECT g, f FROM %s WHERE id = ?", table);
    assert_int_equal(pg_db_query(db, sql, pid, 1, copy_row, &qrow), 1);
    assert_int_equal(qrow.cols[0].type, PG_DB_STRING);
    assert_int_equal(qrow.cols[0].len, 201 + 1 + 30);
    assert_memory_equal(qrow.cols[0].s + 201, ".000000000000000000000000000000", 31);
    assert_int_equal(qrow.cols[1].type, PG_DB_STRING);
    assert_true(strtod(qrow.cols[1].s, NULL) == -1.2345678901234567e-300);
    row_free(&qrow);

    /* Looked up by a utf8mb4 parameter. */
    snprintf(sql, sizeof sql, "SELECT id FROM %s WHERE s = ?", table);
    pg_db_value pu[1] = {PG_DB_STR_VALUE(utf)};
    assert_int_equal(query_int(db, sql, pu, 1), (long long)id);

    /* Expressions: integers of every width, a string, NULL, no rows. */
    assert_int_equal(pg_db_query(db, "SELECT CAST(1 AS SIGNED), 'x', NULL, 2.5, "
                                     "REPEAT('\xE4\xB8\xAD', 30000)", NULL, 0, copy_row, &qrow), 1);
    assert_int_equal(qrow.cols[0].type, PG_DB_INT);
    assert_str_col(&qrow, 1, "x", 1);
    assert_int_equal(qrow.cols[2].type, PG_DB_NULL);
    assert_str_col(&qrow, 3, "2.5", 3);
    assert_int_equal(qrow.cols[4].len, 90000);
    row_free(&qrow);
    assert_int_equal(pg_db_query(db, "SELECT 1 FROM DUAL WHERE 1 = 0", NULL, 0, copy_row, &qrow), 0);
    assert_int_equal(qrow.rows, 0);

    /* Many rows; stopping early counts the rows seen. */
    snprintf(sql, sizeof sql, "INSERT INTO %s (n) VALUES (?)", table);
    for (int i = 0; i < 20; i++) {
        pg_db_value pi[1] = {PG_DB_INT_VALUE(1000 + i)};
        exec_ok(db, sql, pi, 1);
    }
    snprintf(sql, sizeof sql, "SELECT n FROM %s WHERE n >= 1000 ORDER BY n", table);
    ints all = {.n = 0};
    assert_int_equal(pg_db_query(db, sql, NULL, 0, collect_int, &all), 20);
    for (int i = 0; i < 20; i++)
        assert_int_equal(all.v[i], 1000 + i);
    assert_int_equal(pg_db_query(db, sql, NULL, 0, NULL, NULL), 20);   /* no callback */
    free(text);
    scratch = NULL;

    check_buffers_grow();
}

static int stop_after_3(void *arg, const pg_db_value *cols, int ncols)
{
    (void)cols;
    (void)ncols;
    int *n = arg;
    return ++*n == 3;
}

static void test_query_stop(void **state)
{
    (void)state;
    NEED_DB();
    int n = 0;
    const char *sql = "SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 "
                      "UNION ALL SELECT 5";
    assert_int_equal(pg_db_query(db, sql, NULL, 0, stop_after_3, &n), 3);
    assert_int_equal(n, 3);
    /* The statement is reusable after an early stop. */
    n = 0;
    assert_int_equal(pg_db_query(db, sql, NULL, 0, stop_after_3, &n), 3);
    assert_int_equal(query_int(db, "SELECT 5", NULL, 0), 5);

    /* A CALL: the rows of its first result set; the second one and the
     * status are read and thrown away, after an early stop too. */
    char call[256], create[512];
    snprintf(create, sizeof create, "CREATE OR REPLACE PROCEDURE %s() BEGIN %s; "
             "SELECT 'second', 2; END", proc, sql);
    exec_ok(db, create, NULL, 0);
    snprintf(call, sizeof call, "CALL %s()", proc);
    ints all = {.n = 0};
    assert_int_equal(pg_db_query(db, call, NULL, 0, collect_int, &all), 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(all.v[i], i + 1);
    n = 0;
    assert_int_equal(pg_db_query(db, call, NULL, 0, stop_after_3, &n), 3);
    exec_ok(db, call, NULL, 0);
    assert_int_equal(query_int(db, "SELECT 6", NULL, 0), 6);
    /* A CALL without result sets: no rows. */
    snprintf(create, sizeof create, "CREATE OR REPLACE PROCEDURE %s() BEGIN DO 1; END", proc);
    exec_ok(db, create, NULL, 0);
    assert_int_equal(pg_db_query(db, call, NULL, 0, collect_int, &all), 0);
    snprintf(create, sizeof create, "DROP PROCEDURE %s", proc);
    exec_ok(db, create, NULL, 0);
    assert_int_equal(pg_db_reconnects(db), 0);
}

static void test_in_list_and_cache(void **state)
{
    (void)state;
    NEED_DB();
    char sql[1024];
    snprintf(sql, sizeof sql, "INSERT INTO %s (n) VALUES (?)", table);
    for (int i = 1; i <= 50; i++) {
        pg_db_value p[1] = {PG_DB_INT_VALUE(5000 + i)};
        exec_ok(db, sql, p, 1);
    }
    long long prep0 = session_status(db, "COM_STMT_PREPARE");
    long long close0 = session_status(db, "COM_STMT_CLOSE");
    pg_db_value params[50];
    /* 50 SQL texts, then 30 more: over the cache of 64, so some are evicted
     * and prepared again on the second round. */
    for (int round = 0; round < 2; round++) {
        for (int k = 1; k <= 50; k++) {
            int len = snprintf(sql, sizeof sql, "SELECT n FROM %s WHERE n IN (", table);
            for (int i = 0; i < k; i++) {
                len += snprintf(sql + len, sizeof sql - (size_t)len, i ? ",?" : "?");
                /* every other value is absent: k params, (k + 1) / 2 hits */
                params[i] = PG_DB_INT_VALUE(i % 2 == 0 ? 5001 + i : 9000000 + i);
            }
            snprintf(sql + len, sizeof sql - (size_t)len, ") ORDER BY n");
            ints r = {.n = 0};
            long long rows = pg_db_query(db, sql, params, k, collect_int, &r);
            if (rows != (k + 1) / 2)
                fail_msg("IN list of %d: %lld rows (%s)", k, rows, pg_db_error(db));
            for (int i = 0; i < r.n; i++)
                assert_int_equal(r.v[i], 5001 + 2 * i);
        }
        for (int k = 0; k < 30; k++) {
            snprintf(sql, sizeof sql, "SELECT ? + %d", k);
            pg_db_value p[1] = {PG_DB_INT_VALUE(round * 100)};
            assert_int_equal(query_int(db, sql, p, 1), round * 100 + k);
        }
    }
    /* 160 queries of 80 texts: more than 80 prepares (evicted ones were
     * prepared again), closes on eviction, never more than 64 open. */
    long long prep = session_status(db, "COM_STMT_PREPARE") - prep0;
    long long closed = session_status(db, "COM_STMT_CLOSE") - close0;
    if (prep <= 80 || closed <= 0 || prep - closed > 64 + 2)
        fail_msg("statement cache: %lld prepared, %lld closed", prep, closed);
    print_message("statement cache: %lld prepared, %lld closed\n", prep, closed);
    assert_int_equal(pg_db_reconnects(db), 0);
}

static void test_bad_sql(void **state)
{
    (void)state;
    NEED_DB();
    assert_int_equal(pg_db_query(db, "SELEC 1 FROM", NULL, 0, NULL, NULL), -1);
    assert_int_equal(pg_db_errno(db), 1064);                 /* ER_PARSE_ERROR */
    assert_non_null(strstr(pg_db_error(db), "SQL syntax"));
    assert_int_equal(query_int(db, "SELECT 11", NULL, 0), 11);
    assert_string_equal(pg_db_error(db), "");

    assert_int_equal(pg_db_exec(db, "INSERT INTO no_such_table_xyz VALUES (1)", NULL, 0,
                                NULL, NULL), -1);
    assert_int_equal(pg_db_errno(db), 1146);                 /* ER_NO_SUCH_TABLE */
    assert_true(strlen(pg_db_error(db)) > 0);

    /* An execution error on a cached statement leaves it usable. */
    char sql[256];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, n) VALUES (?, ?)", table);
    pg_db_value p[2] = {PG_DB_INT_VALUE(777777), PG_DB_INT_VALUE(1)};
    exec_ok(db, sql, p, 2);
    assert_int_equal(pg_db_exec(db, sql, p, 2, NULL, NULL), -1);
    assert_int_equal(pg_db_errno(db), 1062);                 /* ER_DUP_ENTRY */
    p[0] = PG_DB_INT_VALUE(777778);
    exec_ok(db, sql, p, 2);
    assert_int_equal(pg_db_reconnects(db), 0);
    assert_int_equal(pg_db_ping(db), 0);
}

static void test_reconnect_after_kill(void **state)
{
    (void)state;
    NEED_DB();
    other = open_db();
    const char *idsql = "SELECT CONNECTION_ID()";
    long long before = query_int(db, idsql, NULL, 0);
    unsigned long long rc0 = pg_db_reconnects(db);
    assert_true(before > 0);

    char kill[64];
    snprintf(kill, sizeof kill, "KILL %lld", before);
    exec_ok(other, kill, NULL, 0);

    /* The cached statement belongs to the dead connection: the call
     * reconnects, prepares again and succeeds. */
    long long after = query_int(db, idsql, NULL, 0);
    assert_true(after > 0);
    assert_true(after != before);
    assert_int_equal(pg_db_reconnects(db), rc0 + 1);
    assert_string_equal(pg_db_error(db), "");

    /* Again, for an exec and for a ping. */
    snprintf(kill, sizeof kill, "KILL %lld", after);
    exec_ok(other, kill, NULL, 0);
    char sql[256];
    snprintf(sql, sizeof sql, "INSERT INTO %s (n) VALUES (?)", table);
    pg_db_value p[1] = {PG_DB_INT_VALUE(31337)};
    exec_ok(db, sql, p, 1);
    assert_int_equal(pg_db_reconnects(db), rc0 + 2);

    long long third = query_int(db, idsql, NULL, 0);
    snprintf(kill, sizeof kill, "KILL %lld", third);
    exec_ok(other, kill, NULL, 0);
    assert_int_equal(pg_db_ping(db), 0);
    assert_int_equal(pg_db_reconnects(db), rc0 + 3);
    assert_true(query_int(db, idsql, NULL, 0) != third);

    assert_int_equal(pg_db_reconnects(other), 0);
}

/* ------------------------------------------------------------ server lists and failover */

static void refuse_hosts(const char *text, const char *why)
{
    pg_db_host_list l;
    char err[256] = "";
    if (pg_db_hosts_parse(text, &l, err, sizeof err) == 0)
        fail_msg("\"%s\" was accepted", text);
    if (strstr(err, why) == NULL)
        fail_msg("\"%s\": \"%s\" does not say \"%s\"", text, err, why);
}

/* No server needed: what mysql_hosts accepts, and what it refuses and why. */
static void test_hosts_parse(void **state)
{
    (void)state;
    pg_db_host_list l;
    char err[256] = "";
    assert_int_equal(pg_db_hosts_parse(" db-1.example:3306, 10.0.0.2:3307 ,[::1]:13306", &l, err,
                                       sizeof err), 0);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.v[0].name, "db-1.example");
    assert_int_equal(l.v[0].port, 3306);
    assert_string_equal(l.v[1].text, "10.0.0.2:3307");
    assert_string_equal(l.v[2].name, "::1");
    assert_string_equal(l.v[2].text, "[::1]:13306");
    assert_int_equal(pg_db_hosts_parse("", &l, err, sizeof err), 0);
    assert_int_equal(l.n, 0);
    assert_int_equal(pg_db_hosts_parse(" \t", &l, err, sizeof err), 0);
    assert_int_equal(l.n, 0);

    refuse_hosts("db1", "no port");
    refuse_hosts("db1:", "1 to 65535");
    refuse_hosts("db1:0", "1 to 65535");
    refuse_hosts("db1:65536", "1 to 65535");
    refuse_hosts("db1:33o6", "1 to 65535");
    refuse_hosts("db1:+3306", "1 to 65535");
    refuse_hosts("db1:3306,,db2:3306", "entry 2 \"\": empty");
    refuse_hosts("db1:3306,", "entry 2");
    refuse_hosts("::1:3306", "[addr]:port");
    refuse_hosts("[::1]3306", "[addr]:port");
    refuse_hosts("[db1]:3306", "IPv6");
    refuse_hosts("d b:3306", "not a host name");
    refuse_hosts(":3306", "not a host name");
    refuse_hosts("db1:3306, db1:3306", "the same as entry 1");
    char many[1024] = "";
    for (int i = 0; i <= PG_DB_HOSTS_MAX; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%sh%d:1", i ? "," : "", i);
    refuse_hosts(many, "more than 16");

    /* Without mysql_hosts: the one server of mysql_host/port or of the socket. */
    assert_int_equal(pg_db_hosts_from("", "db9", 3310, "", &l, err, sizeof err), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.v[0].text, "db9:3310");
    assert_int_equal(pg_db_hosts_from(NULL, "::1", 3310, NULL, &l, err, sizeof err), 0);
    assert_string_equal(l.v[0].text, "[::1]:3310");
    assert_int_equal(pg_db_hosts_from("", "x", 1, "/run/m.sock", &l, err, sizeof err), 0);
    assert_string_equal(l.v[0].text, "/run/m.sock");
    assert_int_equal(pg_db_hosts_from("a:1", "x", 1, "/run/m.sock", &l, err, sizeof err), -1);
    assert_non_null(strstr(err, "mysql_socket and mysql_hosts"));
    char line[64];
    assert_int_equal(pg_db_hosts_parse("a:1,b:2", &l, err, sizeof err), 0);
    pg_db_hosts_describe(&l, line, sizeof line);
    assert_string_equal(line, "a:1, b:2");

    /* A bad list is refused by pg_db_open too, before any connect. */
    pg_db_config c = {.hosts = "a:1,,b:2", .user = "u"};
    assert_null(pg_db_open(&c, err, sizeof err));
    assert_non_null(strstr(err, "empty"));
}

/* A handle on hosts (the test server under several names). */
static pg_db *open_hosts(const char *hosts)
{
    pg_db_config c = cfg;
    c.hosts = hosts;
    char err[512];
    pg_db *d = pg_db_open(&c, err, sizeof err);
    if (d == NULL)
        fail_msg("pg_db_open %s: %s", hosts, err);
    return d;
}

static void kill_connection(pg_db *d)
{
    char kill[64];
    snprintf(kill, sizeof kill, "KILL %lld", query_int(d, "SELECT CONNECTION_ID()", NULL, 0));
    exec_ok(other, kill, NULL, 0);
}

/* A server that refuses is passed over; a lost connection moves to the
 * next server of the list, round robin, and the statement still works;
 * a new handle of the process starts where the process is. */
static void test_failover_order(void **state)
{
    (void)state;
    NEED_DB();
    char hosts[256];
    int dead = closed_port();
    snprintf(hosts, sizeof hosts, "127.0.0.1:%d,%s:%d", dead, cfg.host, cfg.port);
    pg_db *d = open_hosts(hosts);
    assert_int_equal(pg_db_host_index(d), 1);
    assert_int_equal(pg_db_failovers(d), 0);
    pg_db_close(d);

    /* The same server under two names: every move is visible. */
    snprintf(hosts, sizeof hosts, "%s:%d,localhost:%d", cfg.host, cfg.port, cfg.port);
    other = open_db();
    idle = open_hosts(hosts);
    unsigned long long proc0 = pg_db_process_failovers();
    assert_int_equal(pg_db_host_index(idle), 0);
    kill_connection(idle);
    assert_int_equal(query_int(idle, "SELECT 5", NULL, 0), 5);
    assert_int_equal(pg_db_host_index(idle), 1);
    assert_int_equal(pg_db_failovers(idle), 1);
    assert_int_equal(pg_db_reconnects(idle), 1);
    assert_int_equal(pg_db_process_host(), 1);
    assert_int_equal(pg_db_process_failovers(), proc0 + 1);

    pg_db *later = open_hosts(hosts);
    assert_int_equal(pg_db_host_index(later), 1);      /* where the process is */
    assert_int_equal(pg_db_failovers(later), 0);
    pg_db_close(later);

    kill_connection(idle);                             /* round robin: back to the first */
    pg_db_value p[1] = {PG_DB_INT_VALUE(1)};
    char sql[256];
    snprintf(sql, sizeof sql, "INSERT INTO %s (n) VALUES (?)", table);
    exec_ok(idle, sql, p, 1);
    assert_int_equal(pg_db_host_index(idle), 0);
    char first[128];
    snprintf(first, sizeof first, "%s:%d", cfg.host, cfg.port);
    assert_string_equal(pg_db_host_text(idle), first);
    assert_int_equal(pg_db_failovers(idle), 2);
    assert_int_equal(pg_db_process_failovers(), proc0 + 2);
}

/* A procedure that fails with errno no the first `times` calls (counted
 * in a MEMORY table, which a failed statement does not roll back), then
 * succeeds. */
static void make_failing_proc(pg_db *d, unsigned no, int times)
{
    char sql[768];
    snprintf(sql, sizeof sql, "CREATE OR REPLACE TABLE %s_c (n INT NOT NULL) ENGINE=MEMORY", table);
    exec_ok(d, sql, NULL, 0);
    snprintf(sql, sizeof sql, "INSERT INTO %s_c VALUES (0)", table);
    exec_ok(d, sql, NULL, 0);
    snprintf(sql, sizeof sql,
             "CREATE OR REPLACE PROCEDURE %s_f() BEGIN UPDATE %s_c SET n = n + 1; "
             "IF (SELECT n FROM %s_c) <= %d THEN SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = %u, "
             "MESSAGE_TEXT = 'made to fail'; END IF; END",
             table, table, table, times, no);
    exec_ok(d, sql, NULL, 0);
}

static long long calls_made(pg_db *d)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT n FROM %s_c", table);
    return query_int(d, sql, NULL, 0);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* 1213 (a deadlock, or Galera's certification conflict): run again after
 * 5, 20 and 80 ms on the same connection, then the error. */
static void test_deadlock_backoff(void **state)
{
    (void)state;
    NEED_DB();
    char call[128];
    snprintf(call, sizeof call, "CALL %s_f()", table);
    make_failing_proc(db, 1213, 2);
    unsigned long long rc0 = pg_db_reconnects(db);
    double t0 = now_s();
    exec_ok(db, call, NULL, 0);
    assert_true(now_s() - t0 >= 0.025);
    assert_int_equal(calls_made(db), 3);
    assert_int_equal(pg_db_reconnects(db), rc0);

    make_failing_proc(db, 1213, 10);
    t0 = now_s();
    assert_int_equal(pg_db_exec(db, call, NULL, 0, NULL, NULL), -1);
    assert_true(now_s() - t0 >= 0.105);
    assert_int_equal(pg_db_errno(db), 1213);
    assert_int_equal(calls_made(db), 4);
    assert_int_equal(pg_db_unreachable(db), 0);
}

/* 1047 (a Galera node not ready): the next server, and the statement once
 * more; a second 1047 there is the caller's. */
static void test_not_ready_moves_on(void **state)
{
    (void)state;
    NEED_DB();
    char hosts[256], call[128];
    snprintf(hosts, sizeof hosts, "%s:%d,localhost:%d", cfg.host, cfg.port, cfg.port);
    snprintf(call, sizeof call, "CALL %s_f()", table);
    make_failing_proc(db, 1047, 1);
    idle = open_hosts(hosts);
    int from = pg_db_host_index(idle);
    exec_ok(idle, call, NULL, 0);
    assert_int_equal(calls_made(db), 2);
    assert_int_equal(pg_db_host_index(idle), 1 - from);
    assert_int_equal(pg_db_failovers(idle), 1);

    make_failing_proc(db, 1047, 2);
    assert_int_equal(pg_db_exec(idle, call, NULL, 0, NULL, NULL), -1);
    assert_int_equal(pg_db_errno(idle), 1047);
    assert_int_equal(pg_db_unreachable(idle), 1);
    assert_int_equal(calls_made(db), 2);
    assert_int_equal(pg_db_host_index(idle), 1 - from);   /* moved on twice: tried first next */
    assert_int_equal(pg_db_failovers(idle), 2);
}

/* Only with PG_DB_TEST_RESTART_DIR: the server restarts between queries. */
static void test_restart(void **state)
{
    (void)state;
    NEED_DB();
    const char *dir = getenv("PG_DB_TEST_RESTART_DIR");
    assert_non_null(dir);
    /* d is used while the server is down; idle only before and after. */
    pg_db *d = other = open_db();
    idle = open_db();
    const char *sql = "SELECT 40 + ?";
    pg_db_value p[1] = {PG_DB_INT_VALUE(2)};
    assert_int_equal(query_int(d, sql, p, 1), 42);
    assert_int_equal(query_int(idle, sql, p, 1), 42);

    touch_file(dir, "ready");
    if (wait_file(dir, "stopped", 120) != 0)
        fail_msg("no %s/stopped within 120 s", dir);
    /* The server is down: the call fails (no crash, no hang) and says why. */
    assert_int_equal(pg_db_query(d, sql, p, 1, NULL, NULL), -1);
    printf("restart: query while down: errno %u: %s\n", pg_db_errno(d), pg_db_error(d));
    assert_true(pg_db_errno(d) != 0);
    assert_int_equal(pg_db_ping(d), -1);
    printf("restart: ping while down: errno %u: %s\n", pg_db_errno(d), pg_db_error(d));
    assert_int_equal(pg_db_reconnects(d), 0);
    fflush(stdout);

    touch_file(dir, "checked");
    if (wait_file(dir, "started", 120) != 0)
        fail_msg("no %s/started within 120 s", dir);
    assert_int_equal(query_int(d, sql, p, 1), 42);
    assert_int_equal(pg_db_reconnects(d), 1);
    printf("restart: query after restart ok, reconnects %llu\n", pg_db_reconnects(d));
    /* The idle handle's socket died with the old server: its first query
     * fails inside, reconnects, prepares again and succeeds. */
    assert_int_equal(query_int(idle, sql, p, 1), 42);
    assert_int_equal(pg_db_reconnects(idle), 1);
    assert_string_equal(pg_db_error(idle), "");
    printf("restart: idle handle query after restart ok, reconnects %llu\n",
           pg_db_reconnects(idle));
}

int main(void)
{
    int rc;
    if (getenv("PG_DB_TEST_RESTART_DIR") != NULL) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_teardown(test_restart, test_teardown),
        };
        rc = cmocka_run_group_tests_name("db_restart", tests, group_setup, group_teardown);
    } else {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_teardown(test_open_wrong_password, test_teardown),
            cmocka_unit_test_teardown(test_open_closed_port, test_teardown),
            cmocka_unit_test_teardown(test_ping, test_teardown),
            cmocka_unit_test_teardown(test_exec_insert, test_teardown),
            cmocka_unit_test_teardown(test_query_types, test_teardown),
            cmocka_unit_test_teardown(test_query_stop, test_teardown),
            cmocka_unit_test_teardown(test_in_list_and_cache, test_teardown),
            cmocka_unit_test_teardown(test_bad_sql, test_teardown),
            cmocka_unit_test_teardown(test_reconnect_after_kill, test_teardown),
            cmocka_unit_test_teardown(test_hosts_parse, test_teardown),
            cmocka_unit_test_teardown(test_failover_order, test_teardown),
            cmocka_unit_test_teardown(test_deadlock_backoff, test_teardown),
            cmocka_unit_test_teardown(test_not_ready_moves_on, test_teardown),
        };
        rc = cmocka_run_group_tests_name("db", tests, group_setup, group_teardown);
    }
    mysql_library_end();
    return rc;
}

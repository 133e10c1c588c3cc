/* churn_bench.c - how many online_clients registrations and unregistrations
 * a MySQL server takes, written the way gateways write them.
 *
 * usage: churn_bench [rows [batch [procs [max_seconds]]]]
 *   defaults: 20000 64 2 60
 *
 * Forks procs processes, each one a gateway task worker of its own node
 * (its own connection and node_port).  Each registers its share of rows as
 * a task worker registers a loop pass's sessions (gateway/tasks.c): a
 * multi-row REPLACE INTO online_clients of `batch` rows (at most 64, as
 * there), then one SELECT of which of those uuids have stored messages.
 * Then each deletes its rows as a task worker deletes a loop pass's closed
 * sessions: `batch` rows a statement, DELETE ... WHERE client_id IN (...),
 * the list padded to a power of two (batch 1: one row a statement).  The
 * two phases are timed separately, from the common start to the last
 * process's end; max_seconds bounds each phase.
 *
 * The server comes from the PUSHGATE_MYSQL_* environment (HOST, PORT,
 * USER, PASSWORD, DATABASE, or HOSTS for a list, as the daemons read it).
 *
 * Output, one line per phase:
 *   churn: register N rows in S s = X rows/s [P processes, batch B]
 *   churn: unregister N rows in S s = X rows/s [P processes, batch B] */
#include "db.h"
#include "timer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BATCH_MAX 64
#define COLS 5

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *env(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

static pg_db *connect_db(void)
{
    pg_db_config cfg = {.hosts = env("PUSHGATE_MYSQL_HOSTS", NULL),
                        .host = env("PUSHGATE_MYSQL_HOST", "127.0.0.1"),
                        .port = atoi(env("PUSHGATE_MYSQL_PORT", "3306")),
                        .user = env("PUSHGATE_MYSQL_USER", "pushgate"),
                        .password = env("PUSHGATE_MYSQL_PASSWORD", ""),
                        .database = env("PUSHGATE_MYSQL_DATABASE", "pushgate"),
                        .connect_timeout_s = 5, .read_timeout_s = 30, .write_timeout_s = 30};
    char err[256];
    pg_db *db = pg_db_open(&cfg, err, sizeof(err));
    if (!db)
        fprintf(stderr, "churn_bench: %s\n", err);
    return db;
}

/* head followed by `rows` groups of `cols` placeholders: "(?,?),(?,?)". */
static void rows_sql(char *sql, size_t size, const char *head, int cols, long rows)
{
    size_t len = (size_t)snprintf(sql, size, "%s", head);
    for (long r = 0; r < rows && len + 64 < size; r++) {
        len += (size_t)snprintf(sql + len, size - len, "%s(", r ? "," : "");
        for (int c = 0; c < cols; c++)
            len += (size_t)snprintf(sql + len, size - len, "%s?", c ? "," : "");
        len += (size_t)snprintf(sql + len, size - len, ")");
    }
}

static int no_row(void *arg, const pg_db_value *cols, int ncols)
{
    (void)arg;
    (void)cols;
    (void)ncols;
    return 0;
}

/* One pass's registrations: rows [first, first + n) of process p. */
static int register_batch(pg_db *db, int p, long first, long n)
{
    static char client_ids[BATCH_MAX][48], uuids[BATCH_MAX][40];
    pg_db_value params[BATCH_MAX * COLS] = {{0}}, uuid_params[BATCH_MAX] = {{0}};
    for (long i = 0; i < n; i++) {
        snprintf(client_ids[i], sizeof(client_ids[i]), "churn-%d-%ld", p, first + i);
        snprintf(uuids[i], sizeof(uuids[i]), "churn-user-%d-%ld", p, first + i);
        pg_db_value *row = params + COLS * i;
        row[0] = PG_DB_STR_VALUE(client_ids[i]);
        row[1] = PG_DB_STR_VALUE(uuids[i]);
        row[2] = PG_DB_STR_VALUE("10.0.0.1");
        row[3] = PG_DB_INT_VALUE(9600 + p);
        row[4] = PG_DB_INT_VALUE(first + i + 1);
        uuid_params[i] = row[1];
    }
    char sql[BATCH_MAX * 16 + 256];
    rows_sql(sql, sizeof(sql),
             "REPLACE INTO online_clients (client_id, uuid, node_ip, node_port, session_id) VALUES",
             COLS, n);
    if (pg_db_exec(db, sql, params, (int)(n * COLS), NULL, NULL) < 0)
        return -1;
    size_t len = (size_t)snprintf(sql, sizeof(sql), "SELECT DISTINCT uuid FROM offline_messages "
                                                    "WHERE acked_at IS NULL AND uuid IN (");
    for (long i = 0; i < n; i++)
        len += (size_t)snprintf(sql + len, sizeof(sql) - len, i ? ",?" : "?");
    snprintf(sql + len, sizeof(sql) - len, ")");
    return pg_db_query(db, sql, uuid_params, (int)n, no_row, NULL) < 0 ? -1 : 0;
}

/* Rows [first, first + n) of process p, in one statement. */
static int unregister_batch(pg_db *db, int p, long first, long n)
{
    static char client_ids[BATCH_MAX][48];
    pg_db_value params[BATCH_MAX] = {{0}};
    long padded = 1;
    while (padded < n)
        padded *= 2;
    char sql[BATCH_MAX * 2 + 64];
    size_t len = (size_t)snprintf(sql, sizeof(sql), "DELETE FROM online_clients WHERE client_id IN (");
    for (long i = 0; i < padded; i++) {
        long row = i < n ? i : n - 1;   /* padded with the last one, as gateway/tasks.c */
        if (i < n)
            snprintf(client_ids[i], sizeof(client_ids[i]), "churn-%d-%ld", p, first + i);
        params[i] = PG_DB_STR_VALUE(client_ids[row]);
        len += (size_t)snprintf(sql + len, sizeof(sql) - len, i ? ",?" : "?");
    }
    snprintf(sql + len, sizeof(sql) - len, ")");
    return pg_db_exec(db, sql, params, (int)padded, NULL, NULL);
}

/* One process's part of a phase: its rows done, or -1. */
static long run_phase(int unregister, int p, long rows, long batch, uint64_t deadline_ms)
{
    pg_db *db = connect_db();
    if (!db)
        return -1;
    long done = 0;
    while (done < rows && pg_now_ms() < deadline_ms) {
        long n = rows - done < batch ? rows - done : batch;
        int rc = unregister ? unregister_batch(db, p, done, n) : register_batch(db, p, done, n);
        if (rc < 0) {
            fprintf(stderr, "churn_bench: %s\n", pg_db_error(db));
            break;
        }
        done += n;
    }
    pg_db_close(db);
    return done;
}

/* Runs a phase in procs processes; returns the rows all of them did. */
static long phase(int unregister, int procs, long rows_each, long batch, int max_seconds)
{
    int fds[2];
    if (pipe(fds) < 0)
        return -1;
    uint64_t deadline = pg_now_ms() + (uint64_t)max_seconds * 1000;
    for (int p = 0; p < procs; p++) {
        if (fork() == 0) {
            long done = run_phase(unregister, p, rows_each, batch, deadline);
            ssize_t w = write(fds[1], &done, sizeof(done));
            _exit(w == sizeof(done) && done >= 0 ? 0 : 1);
        }
    }
    close(fds[1]);
    long total = 0, done;
    while (read(fds[0], &done, sizeof(done)) == sizeof(done))
        total += done > 0 ? done : 0;
    close(fds[0]);
    while (wait(NULL) > 0)
        ;
    return total;
}

int main(int argc, char **argv)
{
    long rows = argc > 1 ? atol(argv[1]) : 20000;
    long batch = argc > 2 ? atol(argv[2]) : BATCH_MAX;
    int procs = argc > 3 ? atoi(argv[3]) : 2;
    int max_seconds = argc > 4 ? atoi(argv[4]) : 60;
    if (rows < 1 || batch < 1 || batch > BATCH_MAX || procs < 1 || procs > 64 || max_seconds < 1) {
        fprintf(stderr, "usage: churn_bench [rows [batch (1..%d) [procs (1..64) [max_seconds]]]]\n",
                BATCH_MAX);
        return 2;
    }
    long each = (rows + procs - 1) / procs;
    for (int unregister = 0; unregister < 2; unregister++) {
        double t0 = now_s();
        long done = phase(unregister, procs, each, batch, max_seconds);
        double s = now_s() - t0;
        if (done <= 0)
            return 1;
        printf("churn: %s %ld rows in %.3f s = %.0f rows/s [%d processes, batch %ld]\n",
               unregister ? "unregister" : "register", done, s, done / s, procs, batch);
        fflush(stdout);
    }
    return 0;
}

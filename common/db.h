/* db.h - MySQL/MariaDB access for task workers (libmariadb, mysqlclient API).
 *
 * libmariadb blocks, so only task workers use it.  Statements are prepared
 * once and cached by their SQL text.  When the server has gone away (errors
 * 2006 CR_SERVER_GONE_ERROR and 2013 CR_SERVER_LOST, and a failed reconnect
 * of an idle handle) the call reconnects, prepares again and retries once;
 * the deprecated MYSQL_OPT_RECONNECT is not used.  Values travel as
 * pg_db_value in both directions, so callers never touch MYSQL_BIND. */
#ifndef PG_DB_H
#define PG_DB_H

#include <stddef.h>

#include "config.h"

typedef struct pg_db pg_db;

typedef struct {
    const char *host;        /* "127.0.0.1"; ignored when socket is set */
    int port;
    const char *socket;      /* Unix socket path, or NULL/"" */
    const char *user;
    const char *password;
    const char *database;
    unsigned connect_timeout_s;
    unsigned read_timeout_s;
    unsigned write_timeout_s;
} pg_db_config;

typedef enum { PG_DB_NULL = 0, PG_DB_INT, PG_DB_STRING } pg_db_type;

typedef struct {
    pg_db_type type;
    long long i;             /* PG_DB_INT */
    const char *s;           /* PG_DB_STRING: not NUL-terminated in results; len bytes */
    size_t len;
} pg_db_value;

#define PG_DB_INT_VALUE(v) ((pg_db_value){.type = PG_DB_INT, .i = (v)})
#define PG_DB_STR_VALUE(str) ((pg_db_value){.type = PG_DB_STRING, .s = (str), .len = strlen(str)})

/* The mysql_* settings every pushgate program shares; add pg_db_conf_defs
 * as one of its pg_conf_tables. */
typedef struct {
    char *host;
    long long port;
    char *socket;
    char *user;
    char *password;
    char *database;
} pg_db_settings;

extern const pg_conf_def pg_db_conf_defs[];
extern const size_t pg_db_conf_ndefs;

/* pg_db_open with those settings; io_timeout_s bounds each read and write. */
pg_db *pg_db_connect(const pg_db_settings *s, unsigned connect_timeout_s, unsigned io_timeout_s,
                     char *err, size_t errlen);

/* Connects (utf8mb4). NULL with a message in err when it cannot. */
pg_db *pg_db_open(const pg_db_config *cfg, char *err, size_t errlen);
void pg_db_close(pg_db *db);

/* Runs an INSERT/UPDATE/DELETE with ? parameters. 0 or -1 (pg_db_error says why).
 * affected and insert_id may be NULL. */
int pg_db_exec(pg_db *db, const char *sql, const pg_db_value *params, int nparams,
               unsigned long long *affected, unsigned long long *insert_id);

/* Runs a SELECT; fn is called for each row with its columns (strings point
 * into a buffer valid during the call).  fn returns non-zero to stop.
 * Returns the number of rows seen, or -1. */
typedef int (*pg_db_row_fn)(void *arg, const pg_db_value *cols, int ncols);
long long pg_db_query(pg_db *db, const char *sql, const pg_db_value *params, int nparams,
                      pg_db_row_fn fn, void *arg);

/* Checks the connection (reconnecting if needed). 0 or -1. */
int pg_db_ping(pg_db *db);
/* The last error text ("" when none) and number (0 when none). */
const char *pg_db_error(const pg_db *db);
unsigned pg_db_errno(const pg_db *db);
/* 1 when the last error says the server could not be reached or went away
 * (as opposed to refusing a statement): retrying later may work. */
int pg_db_unreachable(const pg_db *db);
/* How many times the handle reconnected (for stats and tests). */
unsigned long long pg_db_reconnects(const pg_db *db);

#endif

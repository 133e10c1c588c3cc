/* db.h - MySQL/MariaDB access for task workers (libmariadb, mysqlclient API).
 *
 * libmariadb blocks, so only task workers use it.  Statements are prepared
 * once and cached by their SQL text; the deprecated MYSQL_OPT_RECONNECT is
 * not used.  Values travel as pg_db_value in both directions, so callers
 * never touch MYSQL_BIND.  Each statement is its own transaction
 * (autocommit); callers never open one, which is what makes the retries
 * below safe.
 *
 * Several servers, failover (mysql_hosts, db_hosts.h): a handle has an
 * ordered list of servers (one when only mysql_host/mysql_port is set) and
 * a current one.  The rules:
 *
 *  - connecting tries the current server, then the next ones in list order
 *    (round robin, wrapping), each once; the first that accepts and is
 *    ready becomes current.  Ready: not a Galera node out of the primary
 *    component (wsrep_on and wsrep_ready not ON: it would answer 1047 to
 *    every statement).  A server that is not MariaDB Galera is ready.
 *  - a statement that fails because the server went away (2006, 2013,
 *    2055), killed the connection (1927), is shutting down (1053) or is a
 *    Galera node that is not ready (1047) closes the connection, makes the
 *    next server current and runs again once, on a new connection (never
 *    after rows were handed to the caller).  A failed reconnect leaves the
 *    handle disconnected: its next call connects first.
 *  - a deadlock (1213: InnoDB's, or Galera's certification conflict at
 *    commit) rolled the statement back whole: it runs again on the same
 *    connection after 5, 20 and 80 ms, then the error is returned.
 *  - a statement whose answer was lost (2013 while reading it) may have
 *    been applied before it is run again: every write pushgate makes is
 *    idempotent (REPLACE by primary key, DELETE, UPDATE to a value, INSERT
 *    IGNORE on a unique key), and a new one must be too.
 *  - a process remembers the server its connections last reached, so a
 *    new handle with the same list starts there; the first connect of a
 *    process is logged once ("MySQL: using h:p"), and so is each failover
 *    ("MySQL: failed over from a to b (why)"), never each statement.
 *
 * A reconnect starts a new session: user variables and session settings
 * of the old one are gone. */
#ifndef PG_DB_H
#define PG_DB_H

#include <stdatomic.h>
#include <stddef.h>

#include "config.h"
#include "db_hosts.h"

typedef struct pg_db pg_db;

typedef struct {
    const char *hosts;       /* "h:p,h:p,..." (db_hosts.h); when set, host and port are not used */
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
    char *hosts;             /* mysql_hosts: "" for host and port */
    char *host;
    long long port;
    char *socket;
    char *user;
    char *password;
    char *database;
} pg_db_settings;

extern const pg_conf_def pg_db_conf_defs[];
extern const size_t pg_db_conf_ndefs;

/* The servers those settings name (db_hosts.h): a program checks them at
 * start, so a bad mysql_hosts stops it.  0, or -1 with the reason in err. */
int pg_db_settings_hosts(const pg_db_settings *s, pg_db_host_list *out, char *err, size_t errlen);

/* pg_db_open with those settings; io_timeout_s bounds each read and write. */
pg_db *pg_db_connect(const pg_db_settings *s, unsigned connect_timeout_s, unsigned io_timeout_s,
                     char *err, size_t errlen);

/* Connects (utf8mb4) to the first server of the list that answers and is
 * ready (see above).  NULL with a message in err when none does. */
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
/* The server the handle uses, or tries first when it is disconnected: its
 * place in the list and its text ("h:p", "[v6]:p" or the socket). */
int pg_db_host_index(const pg_db *db);
const char *pg_db_host_text(const pg_db *db);
/* How many times the handle's connection moved to another server. */
unsigned long long pg_db_failovers(const pg_db *db);

/* This process, over all its handles: the place in the list of the server
 * its last connect reached (-1: none yet), and how many times a connection
 * moved to another server. */
int pg_db_process_host(void);
unsigned long long pg_db_process_failovers(void);

/* The same for all the processes of a daemon, in memory they share (mapped
 * before fork).  After pg_db_share(shared), every connect of this process
 * and of the children it forks later stores its server there, and every
 * failover is counted there once. */
typedef struct {
    _Atomic int host;                    /* -1: none yet */
    _Atomic unsigned long long failovers;
} pg_db_shared;
void pg_db_share(pg_db_shared *shared);

#endif

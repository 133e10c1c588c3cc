/* db.c - MySQL/MariaDB access for task workers (libmariadb prepared statements).
 *
 * One pg_db is one connection, used by one thread at a time.  Statements are
 * prepared on first use and kept in a small cache keyed by their SQL text
 * (least recently used evicted, mysql_stmt_close on eviction).
 *
 * Lost connections and failover follow the rules written in db.h: when a
 * call fails with 2006/2013 (or the server killed the connection, is
 * shutting down, or is a Galera node that is not ready), every statement
 * is closed, the connection is closed, the next server of the list becomes
 * current and the call connects again (from that server on, each once),
 * prepares again and runs once more.  Deadlocks run again after a short
 * backoff.  A handle whose reconnect failed stays disconnected; its next
 * call connects first.  Every successful connect after pg_db_open counts
 * as a reconnect, and one to another server than the last as a failover.
 * MYSQL_OPT_RECONNECT is never used.
 *
 * Which server a process uses is kept process-wide too (proc_*), guarded
 * by a mutex as handles may live on several threads: new handles start
 * there, and the log says when it changes - not at every statement.
 *
 * Timeouts of 0 in pg_db_config mean 5 s to connect and 30 s per read and
 * write; with several servers a dead one that does not refuse costs the
 * connect timeout once per connect.
 *
 * Results are buffered client-side (mysql_stmt_store_result), so the row
 * callback never runs while the network can still fail, and a retry never
 * repeats rows already handed out. */
#include "db.h"

#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mysql.h>
#include <errmsg.h>
#include <mysqld_error.h>

#define DB_CACHE_MAX 64
#define DB_ERR_MAX 512
#define DB_CONNECT_TIMEOUT_DEFAULT 5
#define DB_READ_TIMEOUT_DEFAULT 30
#define DB_WRITE_TIMEOUT_DEFAULT 30
#define DB_MIN_COLBUF 64
#define DB_FLOAT_COLBUF 400           /* 1.8e308 with 30 decimals fits */
#define DB_WHY_MAX 200

/* Pauses before a deadlocked statement runs again, in ms: its rival
 * transaction commits meanwhile (a Galera certification conflict is with a
 * write set already ordered, which applies in milliseconds). */
static const unsigned deadlock_backoff_ms[] = {5, 20, 80};
#define DEADLOCK_RETRIES (sizeof(deadlock_backoff_ms) / sizeof(deadlock_backoff_ms[0]))

typedef struct {
    char *sql;
    uint64_t hash;
    MYSQL_STMT *stmt;
    unsigned long long used;     /* LRU clock value of the last use */
} db_stmt;

struct pg_db {
    MYSQL *mysql;                /* NULL while disconnected */
    char *socket, *user, *password, *database;
    pg_db_host_list hosts;       /* one entry (the socket's) with a socket */
    uint64_t hosts_hash;         /* names the list for the process-wide memory */
    int cur;                     /* the server in use, or tried first */
    int last;                    /* the server of the last connect (-1: none) */
    char why[DB_WHY_MAX];        /* why the current server was left */
    unsigned connect_timeout, read_timeout, write_timeout;

    db_stmt cache[DB_CACHE_MAX];
    int ncache;
    unsigned long long clock;

    unsigned long long reconnects, failovers;
    unsigned err_no;
    char err[DB_ERR_MAX];
};

/* ------------------------------------------------------------ errors */

static void set_err(pg_db *db, unsigned no, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(pg_db *db, unsigned no, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(db->err, sizeof db->err, fmt, ap);
    va_end(ap);
    db->err_no = no ? no : CR_UNKNOWN_ERROR;
}

static void clear_err(pg_db *db)
{
    db->err[0] = '\0';
    db->err_no = 0;
}

static void set_err_mysql(pg_db *db, MYSQL *m)
{
    unsigned no = m ? mysql_errno(m) : 0;
    const char *msg = m ? mysql_error(m) : "";
    set_err(db, no ? no : CR_UNKNOWN_ERROR, "%s", msg && *msg ? msg : "unknown MySQL error");
}

static void set_err_stmt(pg_db *db, MYSQL_STMT *st)
{
    unsigned no = mysql_stmt_errno(st);
    const char *msg = mysql_stmt_error(st);
    if (no == 0) {               /* some paths only set the connection's error */
        set_err_mysql(db, db->mysql);
        return;
    }
    set_err(db, no, "%s", msg && *msg ? msg : "unknown MySQL error");
}

/* Errors after which the connection cannot be used any more. */
static int conn_lost(unsigned no)
{
    switch (no) {
    case CR_SERVER_GONE_ERROR:   /* 2006 */
    case CR_SERVER_LOST:         /* 2013 */
    case CR_SERVER_LOST_EXTENDED:/* 2055 */
    case ER_CONNECTION_KILLED:   /* 1927: KILL of this connection */
    case ER_SERVER_SHUTDOWN:     /* 1053 */
        return 1;
    default:
        return 0;
    }
}

/* Errors after which the statement goes to the next server: the
 * connection is lost, or the server is a Galera node out of the primary
 * component (1047, "WSREP has not yet prepared node for application use"),
 * which refuses every statement until it rejoins. */
static int moves_on(unsigned no)
{
    return conn_lost(no) || no == ER_UNKNOWN_COM_ERROR;
}

/* ------------------------------------------------------------ which server, process-wide */

static pthread_mutex_t proc_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t proc_hosts_hash;       /* the list proc_host indexes (0: none yet) */
static int proc_host = -1;
static unsigned long long proc_failovers;
static pg_db_shared *proc_shared;     /* the daemon's, when it shares one */

static uint64_t fnv1a(const void *data, size_t len, uint64_t h)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* A hash of the servers' texts, in order: equal lists, equal hashes. */
static uint64_t hosts_hash(const pg_db_host_list *l)
{
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < l->n; i++)
        h = fnv1a(l->v[i].text, strlen(l->v[i].text) + 1, h);
    return h ? h : 1;
}

/* Where a new handle with this list starts: where the process is. */
static int proc_start(uint64_t hash, int n)
{
    pthread_mutex_lock(&proc_lock);
    int at = proc_hosts_hash == hash && proc_host >= 0 && proc_host < n ? proc_host : 0;
    pthread_mutex_unlock(&proc_lock);
    return at;
}

/* A handle of the process reached server i: the process now uses it.  Its
 * first server and every change are logged, here and only here. */
static void proc_reached(const pg_db *db, int i)
{
    pthread_mutex_lock(&proc_lock);
    if (proc_hosts_hash != db->hosts_hash) {
        proc_hosts_hash = db->hosts_hash;
        proc_host = -1;
    }
    int was = proc_host;
    proc_host = i;
    if (was >= 0 && was != i)
        proc_failovers++;
    if (proc_shared) {
        atomic_store(&proc_shared->host, i);
        if (was >= 0 && was != i)
            atomic_fetch_add(&proc_shared->failovers, 1);
    }
    pthread_mutex_unlock(&proc_lock);
    if (was < 0 && db->hosts.n > 1)
        pg_info("MySQL: using %s (server %d of %d)", db->hosts.v[i].text, i + 1, db->hosts.n);
    else if (was < 0)
        pg_info("MySQL: using %s", db->hosts.v[i].text);
    else if (was != i)
        pg_warn("MySQL: failed over from %s to %s (%s)", db->hosts.v[was].text,
                db->hosts.v[i].text, db->why[0] ? db->why : "it did not answer");
}

int pg_db_process_host(void)
{
    pthread_mutex_lock(&proc_lock);
    int at = proc_host;
    pthread_mutex_unlock(&proc_lock);
    return at;
}

unsigned long long pg_db_process_failovers(void)
{
    pthread_mutex_lock(&proc_lock);
    unsigned long long n = proc_failovers;
    pthread_mutex_unlock(&proc_lock);
    return n;
}

void pg_db_share(pg_db_shared *shared)
{
    pthread_mutex_lock(&proc_lock);
    proc_shared = shared;
    if (shared)
        atomic_store(&shared->host, proc_host);
    pthread_mutex_unlock(&proc_lock);
}

/* ------------------------------------------------------------ connection */

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_rc;

static void lib_init(void)
{
    lib_rc = mysql_library_init(0, NULL, NULL);
}

/* The value of the one row of a SHOW ... LIKE 'name' on m into out ("" when
 * there is no such row).  0, or -1 (m's error). */
static int show_value(MYSQL *m, const char *sql, char *out, size_t len)
{
    out[0] = '\0';
    if (mysql_query(m, sql) != 0)
        return -1;
    MYSQL_RES *res = mysql_store_result(m);
    if (res == NULL)
        return mysql_errno(m) ? -1 : 0;
    MYSQL_ROW row = mysql_fetch_row(res);
    if (row && mysql_num_fields(res) >= 2 && row[1])
        snprintf(out, len, "%s", row[1]);
    mysql_free_result(res);
    return 0;
}

/* A Galera node takes statements only while it is in the primary
 * component and synced enough (wsrep_ready ON); any other server always
 * does.  SHOW is answered even by a node that is not ready.  1, 0 (not
 * ready: db->err says so), or -1 (db->err: the server's error). */
static int server_ready(pg_db *db, MYSQL *m)
{
    char on[16], ready[16];
    if (show_value(m, "SHOW GLOBAL VARIABLES LIKE 'wsrep\\_on'", on, sizeof on) != 0 ||
        (strcmp(on, "ON") == 0 &&
         show_value(m, "SHOW GLOBAL STATUS LIKE 'wsrep\\_ready'", ready, sizeof ready) != 0)) {
        set_err_mysql(db, m);
        return -1;
    }
    if (strcmp(on, "ON") != 0 || strcmp(ready, "ON") == 0)
        return 1;
    set_err(db, ER_UNKNOWN_COM_ERROR, "Galera node not ready (wsrep_ready %s)",
            ready[0] ? ready : "unknown");
    return 0;
}

/* The options every connection gets.  0 or -1 (db->err set). */
static int set_options(pg_db *db, MYSQL *m)
{
    unsigned ct = db->connect_timeout, rt = db->read_timeout, wt = db->write_timeout;
    unsigned proto = (db->socket && *db->socket) ? MYSQL_PROTOCOL_SOCKET : MYSQL_PROTOCOL_TCP;
    unsigned infile = 0;
    if (mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &ct) ||
        mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &rt) ||
        mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &wt) ||
        mysql_options(m, MYSQL_OPT_PROTOCOL, &proto) ||
        mysql_options(m, MYSQL_OPT_LOCAL_INFILE, &infile) ||
        mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4")) {
        set_err_mysql(db, m);
        return -1;
    }
    return 0;
}

/* Connects db->mysql to server i of the list if it answers and is ready,
 * or -1 with db->err set. */
static int connect_host(pg_db *db, int i)
{
    const pg_db_host *h = &db->hosts.v[i];
    MYSQL *m = mysql_init(NULL);
    if (m == NULL) {
        set_err(db, CR_OUT_OF_MEMORY, "mysql_init: out of memory");
        return -1;
    }
    const char *sock = (db->socket && *db->socket) ? db->socket : NULL;
    if (set_options(db, m) != 0 ||
        mysql_real_connect(m, sock ? NULL : h->name, db->user, db->password, db->database,
                           (unsigned)(h->port > 0 ? h->port : 0), sock, 0) == NULL) {
        if (db->err_no == 0)
            set_err_mysql(db, m);
        mysql_close(m);
        return -1;
    }
    if (server_ready(db, m) != 1) {
        mysql_close(m);
        return -1;
    }
    db->mysql = m;
    return 0;
}

/* Server i answered: it is current, and a move from the last one is a
 * failover. */
static void reached(pg_db *db, int i)
{
    if (db->last >= 0 && db->last != i)
        db->failovers++;
    db->last = db->cur = i;
    proc_reached(db, i);
    db->why[0] = '\0';
}

/* Connects to the current server or, failing that, the next ones in list
 * order, each once (see db.h).  0, or -1 with db->err naming the last
 * server tried. */
static int db_connect(pg_db *db)
{
    for (int k = 0; k < db->hosts.n; k++) {
        int i = (db->cur + k) % db->hosts.n;
        clear_err(db);
        if (connect_host(db, i) == 0) {
            reached(db, i);
            return 0;
        }
        char why[DB_ERR_MAX];
        snprintf(why, sizeof why, "%s", db->err);
        snprintf(db->why, sizeof db->why, "%.60s: %.120s", db->hosts.v[i].text, why);
        set_err(db, db->err_no, "%s%s: %s", db->hosts.n > 1 ? "no server answered; last " : "",
                db->hosts.v[i].text, why);
    }
    return -1;
}

static void cache_entry_free(db_stmt *e)
{
    if (e->stmt)
        mysql_stmt_close(e->stmt);
    free(e->sql);
    memset(e, 0, sizeof *e);
}

/* Closes every statement and the connection; the handle is then idle. */
static void db_disconnect(pg_db *db)
{
    for (int i = 0; i < db->ncache; i++)
        cache_entry_free(&db->cache[i]);
    db->ncache = 0;
    if (db->mysql) {
        mysql_close(db->mysql);
        db->mysql = NULL;
    }
}

/* The connection failed in a way another server may not (moves_on): it is
 * closed and the next server is the one to try first. */
static void move_on(pg_db *db)
{
    db_disconnect(db);
    snprintf(db->why, sizeof db->why, "%.60s: %.120s (%u)", db->hosts.v[db->cur].text, db->err,
             db->err_no);
    db->cur = (db->cur + 1) % db->hosts.n;
}

/* Connects a handle that has no connection; counts the reconnect. */
static int db_reconnect(pg_db *db)
{
    db_disconnect(db);
    if (db_connect(db) != 0)
        return -1;
    db->reconnects++;
    return 0;
}

static char *dup_or_null(const char *s, int *fail)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *fail = 1;
    return d;
}

static void db_free(pg_db *db)
{
    db_disconnect(db);
    free(db->socket);
    free(db->user);
    free(db->password);
    free(db->database);
    free(db);
}

#define D(field) offsetof(pg_db_settings, field)

const pg_conf_def pg_db_conf_defs[] = {
    {"mysql_hosts", PG_CONF_STRING, D(hosts), "", 0, 0, NULL,
     "MySQL/MariaDB servers in failover order, host:port,host:port,... ([addr]:port for IPv6), "
     "e.g. the nodes of a Galera cluster (empty: mysql_host and mysql_port)"},
    {"mysql_host", PG_CONF_STRING, D(host), "127.0.0.1", 0, 0, NULL, "MySQL/MariaDB host"},
    {"mysql_port", PG_CONF_INT, D(port), "3306", 1, 65535, NULL, "MySQL/MariaDB port"},
    {"mysql_socket", PG_CONF_STRING, D(socket), "", 0, 0, NULL,
     "Unix socket instead of host and port (empty: TCP)"},
    {"mysql_user", PG_CONF_STRING, D(user), "pushgate", 0, 0, NULL, "MySQL user"},
    {"mysql_password", PG_CONF_STRING, D(password), "", 0, 0, NULL, "MySQL password"},
    {"mysql_database", PG_CONF_STRING, D(database), "pushgate", 0, 0, NULL, "database"},
};
const size_t pg_db_conf_ndefs = sizeof(pg_db_conf_defs) / sizeof(pg_db_conf_defs[0]);

int pg_db_settings_hosts(const pg_db_settings *s, pg_db_host_list *out, char *err, size_t errlen)
{
    return pg_db_hosts_from(s->hosts, s->host, (int)s->port, s->socket, out, err, errlen);
}

pg_db *pg_db_connect(const pg_db_settings *s, unsigned connect_timeout_s, unsigned io_timeout_s,
                     char *err, size_t errlen)
{
    pg_db_config c = {.hosts = s->hosts, .host = s->host, .port = (int)s->port,
                      .socket = s->socket, .user = s->user, .password = s->password,
                      .database = s->database, .connect_timeout_s = connect_timeout_s,
                      .read_timeout_s = io_timeout_s, .write_timeout_s = io_timeout_s};
    return pg_db_open(&c, err, errlen);
}

static void say(char *err, size_t errlen, const char *what)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", what);
}

/* A handle for cfg, not yet connected; NULL with err set. */
static pg_db *db_new(const pg_db_config *cfg, char *err, size_t errlen)
{
    pg_db *db = calloc(1, sizeof *db);
    if (db == NULL) {
        say(err, errlen, "pg_db_open: out of memory");
        return NULL;
    }
    char why[DB_ERR_MAX];
    if (pg_db_hosts_from(cfg->hosts, cfg->host, cfg->port, cfg->socket, &db->hosts, why,
                         sizeof why) != 0) {
        say(err, errlen, why);
        free(db);
        return NULL;
    }
    int fail = 0;
    db->socket = dup_or_null(cfg->socket, &fail);
    db->user = dup_or_null(cfg->user, &fail);
    db->password = dup_or_null(cfg->password, &fail);
    db->database = dup_or_null(cfg->database, &fail);
    db->hosts_hash = hosts_hash(&db->hosts);
    db->cur = proc_start(db->hosts_hash, db->hosts.n);
    db->last = -1;
    db->connect_timeout = cfg->connect_timeout_s ? cfg->connect_timeout_s : DB_CONNECT_TIMEOUT_DEFAULT;
    db->read_timeout = cfg->read_timeout_s ? cfg->read_timeout_s : DB_READ_TIMEOUT_DEFAULT;
    db->write_timeout = cfg->write_timeout_s ? cfg->write_timeout_s : DB_WRITE_TIMEOUT_DEFAULT;
    if (fail) {
        say(err, errlen, "pg_db_open: out of memory");
        db_free(db);
        return NULL;
    }
    return db;
}

pg_db *pg_db_open(const pg_db_config *cfg, char *err, size_t errlen)
{
    say(err, errlen, "");
    if (cfg == NULL) {
        say(err, errlen, "pg_db_open: no configuration");
        return NULL;
    }
    pthread_once(&lib_once, lib_init);
    if (lib_rc != 0) {
        say(err, errlen, "mysql_library_init failed");
        return NULL;
    }
    pg_db *db = db_new(cfg, err, errlen);
    if (db == NULL)
        return NULL;
    if (db_connect(db) != 0) {
        if (err && errlen)
            snprintf(err, errlen, "MySQL connect%s %s (%u)", db->hosts.n > 1 ? ":" : " to",
                     db->err, db->err_no);
        db_free(db);
        return NULL;
    }
    return db;
}

void pg_db_close(pg_db *db)
{
    if (db)
        db_free(db);
}

/* ------------------------------------------------------------ statement cache */

static uint64_t sql_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;       /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static int cache_find(const pg_db *db, const char *sql, uint64_t h)
{
    for (int i = 0; i < db->ncache; i++)
        if (db->cache[i].hash == h && strcmp(db->cache[i].sql, sql) == 0)
            return i;
    return -1;
}

static void cache_drop(pg_db *db, const char *sql)
{
    int i = cache_find(db, sql, sql_hash(sql));
    if (i < 0)
        return;
    cache_entry_free(&db->cache[i]);
    db->cache[i] = db->cache[--db->ncache];
    memset(&db->cache[db->ncache], 0, sizeof db->cache[0]);
}

/* The prepared statement for sql (prepared now if not cached), or NULL with
 * db->err set. */
static MYSQL_STMT *stmt_get(pg_db *db, const char *sql)
{
    uint64_t h = sql_hash(sql);
    int i = cache_find(db, sql, h);
    if (i >= 0) {
        db->cache[i].used = ++db->clock;
        return db->cache[i].stmt;
    }

    MYSQL_STMT *st = mysql_stmt_init(db->mysql);
    if (st == NULL) {
        set_err_mysql(db, db->mysql);
        return NULL;
    }
    my_bool on = 1;
    mysql_stmt_attr_set(st, STMT_ATTR_UPDATE_MAX_LENGTH, &on);
    if (mysql_stmt_prepare(st, sql, (unsigned long)strlen(sql)) != 0) {
        set_err_stmt(db, st);
        mysql_stmt_close(st);
        return NULL;
    }
    char *copy = strdup(sql);
    if (copy == NULL) {
        set_err(db, CR_OUT_OF_MEMORY, "out of memory");
        mysql_stmt_close(st);
        return NULL;
    }
    if (db->ncache == DB_CACHE_MAX) {
        int lru = 0;
        for (int k = 1; k < db->ncache; k++)
            if (db->cache[k].used < db->cache[lru].used)
                lru = k;
        cache_entry_free(&db->cache[lru]);
        i = lru;
    } else {
        i = db->ncache++;
    }
    db->cache[i].sql = copy;
    db->cache[i].hash = h;
    db->cache[i].stmt = st;
    db->cache[i].used = ++db->clock;
    return st;
}

/* ------------------------------------------------------------ running */

/* The copies a bound parameter points at: libmariadb reads them at execute. */
typedef struct {
    unsigned long len;
    long long i;
} db_param;

/* Points b at v, parameter number no (from 1), with p holding the copies it
 * reads. 0 or -1 (db->err set). */
static int bind_param(pg_db *db, MYSQL_BIND *b, db_param *p, const pg_db_value *v, int no)
{
    switch (v->type) {
    case PG_DB_NULL:
        b->buffer_type = MYSQL_TYPE_NULL;
        return 0;
    case PG_DB_INT:
        p->i = v->i;
        b->buffer_type = MYSQL_TYPE_LONGLONG;
        b->buffer = &p->i;
        return 0;
    case PG_DB_STRING:
        if (v->s == NULL && v->len > 0) {
            set_err(db, CR_INVALID_PARAMETER_NO, "parameter %d: NULL string", no);
            return -1;
        }
        p->len = (unsigned long)v->len;
        b->buffer_type = MYSQL_TYPE_STRING;
        b->buffer = (void *)(v->s ? v->s : "");
        b->buffer_length = p->len;
        b->length = &p->len;
        return 0;
    default:
        set_err(db, CR_INVALID_PARAMETER_NO, "parameter %d: unknown type %d", no, (int)v->type);
        return -1;
    }
}

/* Binds params and executes. 0 or -1 (db->err set). */
static int bind_and_execute(pg_db *db, MYSQL_STMT *st, const pg_db_value *params, int nparams)
{
    unsigned long want = mysql_stmt_param_count(st);
    if ((unsigned long)nparams != want) {
        set_err(db, CR_INVALID_PARAMETER_NO, "statement has %lu parameters, %d given",
                want, nparams);
        return -1;
    }
    MYSQL_BIND *b = NULL;
    db_param *p = NULL;
    int rc = -1;
    if (nparams > 0) {
        b = calloc((size_t)nparams, sizeof *b);
        p = calloc((size_t)nparams, sizeof *p);
        if (b == NULL || p == NULL) {
            set_err(db, CR_OUT_OF_MEMORY, "out of memory");
            goto out;
        }
        for (int i = 0; i < nparams; i++)
            if (bind_param(db, &b[i], &p[i], &params[i], i + 1) != 0)
                goto out;
        if (mysql_stmt_bind_param(st, b) != 0) {
            set_err_stmt(db, st);
            goto out;
        }
    }
    if (mysql_stmt_execute(st) != 0)
        set_err_stmt(db, st);
    else
        rc = 0;
out:
    free(b);
    free(p);
    return rc;
}

/* Buffers the current result set of st, if it has columns, so that no row
 * is read from the network later. 0 with the column count in *n, or -1. */
static int store_result(pg_db *db, MYSQL_STMT *st, unsigned *n)
{
    *n = mysql_stmt_field_count(st);
    if (*n > 0 && mysql_stmt_store_result(st) != 0) {
        set_err_stmt(db, st);
        return -1;
    }
    return 0;
}

/* Reads and throws away the current result set of st, if there is one.
 * 0 or -1. */
static int skip_result(pg_db *db, MYSQL_STMT *st)
{
    unsigned n;
    if (store_result(db, st, &n) != 0)
        return -1;
    if (n > 0)
        mysql_stmt_free_result(st);
    return 0;
}

/* Reads and throws away any further result sets (CALL). -1 on error. */
static int drain_results(pg_db *db, MYSQL_STMT *st)
{
    for (;;) {
        int r = mysql_stmt_next_result(st);
        if (r == -1)
            return 0;
        if (r > 0) {
            set_err_stmt(db, st);
            return -1;
        }
        if (skip_result(db, st) != 0)
            return -1;
    }
}

typedef struct {
    /* exec */
    unsigned long long affected, insert_id;
    /* query */
    pg_db_row_fn fn;
    void *arg;
    long long delivered;         /* rows handed to fn */
} run_ctx;

/* Runs a statement for its effect; rows it returns are thrown away. The
 * counts are read before that, as storing a result set changes them.
 * 0 or -1. */
static long long do_exec(pg_db *db, MYSQL_STMT *st, const pg_db_value *params, int nparams,
                         run_ctx *c)
{
    if (bind_and_execute(db, st, params, nparams) != 0)
        return -1;
    c->affected = (unsigned long long)mysql_stmt_affected_rows(st);
    c->insert_id = (unsigned long long)mysql_stmt_insert_id(st);
    if (skip_result(db, st) != 0)
        return -1;
    return drain_results(db, st) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------ reading rows */

/* Where mysql_stmt_fetch puts one column of a row. */
typedef struct {
    long long i;                 /* integer columns */
    char *buf;                   /* every other column, as text */
    unsigned long cap, len;
    my_bool is_null, error;
} db_col;

/* One result set being read.  Binds and values are arrays of their own
 * because libmariadb and the row callback take them so. */
typedef struct {
    unsigned n;
    MYSQL_RES *meta;
    MYSQL_BIND *b;
    db_col *cols;
    pg_db_value *vals;
} db_rows;

static int is_int_type(enum enum_field_types t)
{
    return t == MYSQL_TYPE_TINY || t == MYSQL_TYPE_SHORT || t == MYSQL_TYPE_LONG ||
           t == MYSQL_TYPE_LONGLONG || t == MYSQL_TYPE_INT24;
}

/* The first buffer size of a column read as text: its longest value in the
 * stored result (STMT_ATTR_UPDATE_MAX_LENGTH), so most rows fit at once. */
static unsigned long text_cap(const MYSQL_FIELD *f)
{
    unsigned long cap = f->max_length + 1;
    if (cap < DB_MIN_COLBUF)
        cap = DB_MIN_COLBUF;
    /* libmariadb prints FLOAT/DOUBLE in as many characters as the buffer
     * has, losing digits without reporting truncation: give them room for
     * any value. */
    if ((f->type == MYSQL_TYPE_DOUBLE || f->type == MYSQL_TYPE_FLOAT) && cap < DB_FLOAT_COLBUF)
        cap = DB_FLOAT_COLBUF;
    return cap;
}

/* Points the bind of column i at its buffers: integers as LONGLONG, every
 * other type as text. 0 or -1. */
static int bind_column(pg_db *db, db_rows *r, unsigned i, const MYSQL_FIELD *f)
{
    MYSQL_BIND *b = &r->b[i];
    db_col *c = &r->cols[i];
    b->length = &c->len;
    b->is_null = &c->is_null;
    b->error = &c->error;
    if (is_int_type(f->type)) {
        b->buffer_type = MYSQL_TYPE_LONGLONG;
        b->buffer = &c->i;
        b->is_unsigned = (f->flags & UNSIGNED_FLAG) ? 1 : 0;
        return 0;
    }
    c->cap = text_cap(f);
    c->buf = malloc(c->cap);
    if (c->buf == NULL) {
        set_err(db, CR_OUT_OF_MEMORY, "out of memory");
        return -1;
    }
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = c->buf;
    b->buffer_length = c->cap;
    return 0;
}

/* Allocates and binds the buffers for the stored result of st (n columns).
 * 0 or -1; rows_close frees them either way. */
static int rows_open(pg_db *db, MYSQL_STMT *st, unsigned n, db_rows *r)
{
    memset(r, 0, sizeof *r);
    r->n = n;
    r->meta = mysql_stmt_result_metadata(st);
    r->b = calloc(n, sizeof *r->b);
    r->cols = calloc(n, sizeof *r->cols);
    r->vals = calloc(n, sizeof *r->vals);
    if (r->meta == NULL || r->b == NULL || r->cols == NULL || r->vals == NULL) {
        if (r->meta == NULL && mysql_stmt_errno(st))
            set_err_stmt(db, st);
        else
            set_err(db, CR_OUT_OF_MEMORY, "out of memory");
        return -1;
    }
    MYSQL_FIELD *fields = mysql_fetch_fields(r->meta);
    for (unsigned i = 0; i < n; i++)
        if (bind_column(db, r, i, &fields[i]) != 0)
            return -1;
    if (mysql_stmt_bind_result(st, r->b) != 0) {
        set_err_stmt(db, st);
        return -1;
    }
    return 0;
}

/* Frees what rows_open allocated, also when it stopped half-way. */
static void rows_close(db_rows *r)
{
    if (r->meta)
        mysql_free_result(r->meta);
    if (r->cols)
        for (unsigned i = 0; i < r->n; i++)
            free(r->cols[i].buf);
    free(r->b);
    free(r->cols);
    free(r->vals);
}

/* Fetches column i of the current row again, as text, into buf. 0 or -1;
 * *len is the value's whole length and *cut says it did not fit. */
static int fetch_column(pg_db *db, MYSQL_STMT *st, unsigned i, char *buf, unsigned long cap,
                        unsigned long *len, my_bool *cut)
{
    MYSQL_BIND one;
    my_bool is_null = 0;
    memset(&one, 0, sizeof one);
    *len = 0;
    *cut = 0;
    one.buffer_type = MYSQL_TYPE_STRING;
    one.buffer = buf;
    one.buffer_length = cap;
    one.length = len;
    one.is_null = &is_null;
    one.error = cut;
    if (mysql_stmt_fetch_column(st, &one, i, 0) != 0) {
        set_err_stmt(db, st);
        return -1;
    }
    return 0;
}

/* Column i of the current row did not fit (or left no room for the NUL):
 * grows its buffer and fetches it again until it fits.  Strings report
 * their whole length; numbers converted to text (DOUBLE) only set the
 * error flag, so the buffer doubles until the value fits.  *len is the
 * length fetched; 0 with the new length in it, or -1. */
static int grow_column(pg_db *db, MYSQL_STMT *st, db_rows *r, unsigned i, unsigned long *len)
{
    db_col *c = &r->cols[i];
    for (int tries = 0;; tries++) {
        unsigned long want = *len >= c->cap ? *len + 1 : c->cap * 2;
        if (tries >= 24 || want <= c->cap) {
            set_err(db, CR_UNKNOWN_ERROR, "column %u: value does not fit", i + 1);
            return -1;
        }
        char *nb = realloc(c->buf, want);
        if (nb == NULL) {
            set_err(db, CR_OUT_OF_MEMORY, "out of memory");
            return -1;
        }
        c->buf = nb;
        c->cap = want;
        r->b[i].buffer = nb;
        r->b[i].buffer_length = want;
        my_bool cut;
        if (fetch_column(db, st, i, nb, want, len, &cut) != 0)
            return -1;
        if (*len < want && !cut)
            return 0;
    }
}

/* Puts column i of the row just fetched into r->vals[i], fetching it again
 * into a bigger buffer when it did not fit (then *grown is set). 0 or -1. */
static int column_value(pg_db *db, MYSQL_STMT *st, db_rows *r, unsigned i, int *grown)
{
    db_col *c = &r->cols[i];
    if (c->is_null) {
        r->vals[i] = (pg_db_value){.type = PG_DB_NULL};
        return 0;
    }
    if (r->b[i].buffer_type == MYSQL_TYPE_LONGLONG) {
        r->vals[i] = (pg_db_value){.type = PG_DB_INT, .i = c->i};
        return 0;
    }
    unsigned long len = c->len;
    if (len >= c->cap || c->error) {
        if (grow_column(db, st, r, i, &len) != 0)
            return -1;
        *grown = 1;
    }
    c->buf[len] = '\0';
    r->vals[i] = (pg_db_value){.type = PG_DB_STRING, .s = c->buf, .len = len};
    return 0;
}

/* Fills r->vals from the row just fetched. 0 or -1. */
static int row_values(pg_db *db, MYSQL_STMT *st, db_rows *r)
{
    int grown = 0;
    for (unsigned i = 0; i < r->n; i++)
        if (column_value(db, st, r, i, &grown) != 0)
            return -1;
    /* The next rows are fetched into the grown buffers. */
    if (grown && mysql_stmt_bind_result(st, r->b) != 0) {
        set_err_stmt(db, st);
        return -1;
    }
    return 0;
}

/* Fetches each row of the stored result and hands it to c->fn until fn
 * asks to stop. The number of rows seen, or -1. */
static long long fetch_rows(pg_db *db, MYSQL_STMT *st, db_rows *r, run_ctx *c)
{
    long long seen = 0;
    for (;;) {
        int f = mysql_stmt_fetch(st);
        if (f == MYSQL_NO_DATA)
            return seen;
        if (f == 1) {
            set_err_stmt(db, st);
            return -1;
        }
        /* 0 or MYSQL_DATA_TRUNCATED: row_values fetches what did not fit again. */
        if (row_values(db, st, r) != 0)
            return -1;
        c->delivered = ++seen;
        if (c->fn && c->fn(c->arg, r->vals, (int)r->n) != 0)
            return seen;
    }
}

/* Hands the rows of the stored result of st (n columns) to c->fn, then
 * frees the result. The number of rows seen, or -1. */
static long long read_rows(pg_db *db, MYSQL_STMT *st, unsigned n, run_ctx *c)
{
    db_rows r;
    long long rows = -1;
    if (rows_open(db, st, n, &r) == 0)
        rows = fetch_rows(db, st, &r, c);
    mysql_stmt_free_result(st);
    rows_close(&r);
    return rows;
}

/* Runs a statement and hands each row of its first result set to c->fn;
 * further result sets are thrown away. The number of rows seen, or -1. */
static long long do_query(pg_db *db, MYSQL_STMT *st, const pg_db_value *params, int nparams,
                          run_ctx *c)
{
    unsigned n;
    if (bind_and_execute(db, st, params, nparams) != 0 || store_result(db, st, &n) != 0)
        return -1;
    long long rows = n > 0 ? read_rows(db, st, n, c) : 0;
    if (rows < 0)
        return -1;
    return drain_results(db, st) == 0 ? rows : -1;
}

typedef long long (*run_fn)(pg_db *, MYSQL_STMT *, const pg_db_value *, int, run_ctx *);

/* Sleeps ms milliseconds (a deadlock's backoff). */
static void pause_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Gets the statement and runs fn, by the rules of db.h: on a lost
 * connection or a server not ready it moves to the next server and runs it
 * once more; a deadlock runs again after a backoff (neither after rows were
 * handed out). */
static long long run(pg_db *db, const char *sql, const pg_db_value *params, int nparams,
                     run_fn fn, run_ctx *c)
{
    if (sql == NULL || nparams < 0 || (nparams > 0 && params == NULL)) {
        set_err(db, CR_INVALID_PARAMETER_NO, "bad arguments");
        return -1;
    }
    int moved = 0, reprepared = 0;
    size_t deadlocks = 0;
    for (;;) {
        if (db->mysql == NULL && db_reconnect(db) != 0)
            return -1;
        long long r = -1;
        MYSQL_STMT *st = stmt_get(db, sql);
        if (st != NULL) {
            r = fn(db, st, params, nparams, c);
            if (r >= 0) {
                clear_err(db);       /* a retry succeeded: nothing to report */
                return r;
            }
        }
        if (c->delivered > 0)
            return -1;
        if (moves_on(db->err_no)) {
            /* The handle is dead either way; the next call connects.  If the
             * reconnect below fails, its error ("can't connect") is reported. */
            move_on(db);
            if (moved++)
                return -1;
        } else if (db->err_no == ER_LOCK_DEADLOCK && deadlocks < DEADLOCK_RETRIES) {
            pause_ms(deadlock_backoff_ms[deadlocks++]);
        } else if (db->err_no == ER_NEED_REPREPARE && !reprepared++) {
            cache_drop(db, sql);
        } else {
            return -1;
        }
    }
}

int pg_db_exec(pg_db *db, const char *sql, const pg_db_value *params, int nparams,
               unsigned long long *affected, unsigned long long *insert_id)
{
    if (db == NULL)
        return -1;
    clear_err(db);
    run_ctx c;
    memset(&c, 0, sizeof c);
    if (run(db, sql, params, nparams, do_exec, &c) < 0)
        return -1;
    if (affected)
        *affected = c.affected;
    if (insert_id)
        *insert_id = c.insert_id;
    return 0;
}

long long pg_db_query(pg_db *db, const char *sql, const pg_db_value *params, int nparams,
                      pg_db_row_fn fn, void *arg)
{
    if (db == NULL)
        return -1;
    clear_err(db);
    run_ctx c;
    memset(&c, 0, sizeof c);
    c.fn = fn;
    c.arg = arg;
    return run(db, sql, params, nparams, do_query, &c);
}

int pg_db_ping(pg_db *db)
{
    if (db == NULL)
        return -1;
    clear_err(db);
    for (int attempt = 0;; attempt++) {
        if (db->mysql == NULL && db_reconnect(db) != 0)
            return -1;
        if (mysql_ping(db->mysql) == 0)
            return 0;
        set_err_mysql(db, db->mysql);
        if (!moves_on(db->err_no))
            return -1;
        move_on(db);
        if (attempt > 0)
            return -1;
    }
}

const char *pg_db_error(const pg_db *db)
{
    return db ? db->err : "no database handle";
}

unsigned pg_db_errno(const pg_db *db)
{
    return db ? db->err_no : CR_UNKNOWN_ERROR;
}

int pg_db_unreachable(const pg_db *db)
{
    if (!db)
        return 1;
    switch (db->err_no) {
    case CR_CONNECTION_ERROR:    /* 2002 */
    case CR_CONN_HOST_ERROR:     /* 2003 */
    case CR_UNKNOWN_HOST:        /* 2005 */
    case ER_CON_COUNT_ERROR:     /* 1040: too many connections */
    case ER_UNKNOWN_COM_ERROR:   /* 1047: a Galera node not ready */
        return 1;
    default:
        return conn_lost(db->err_no);
    }
}

unsigned long long pg_db_reconnects(const pg_db *db)
{
    return db ? db->reconnects : 0;
}

int pg_db_host_index(const pg_db *db)
{
    return db ? db->cur : -1;
}

const char *pg_db_host_text(const pg_db *db)
{
    return db ? db->hosts.v[db->cur].text : "";
}

unsigned long long pg_db_failovers(const pg_db *db)
{
    return db ? db->failovers : 0;
}

/* mysql.c - the consumer's MySQL statements, on a thread of their own.
 *
 * libmariadb blocks, and the consumer's one loop hands every order on: a
 * statement run there held every order up for as long as MySQL took, and a
 * MySQL that hangs instead of refusing takes its timeouts (DB_TIMEOUT_S to
 * connect, as much again to read), seconds each time.  So the loop never
 * calls MySQL.  It queues a job (read gateway_nodes, write or remove the
 * status row); this thread runs the jobs in order on the one connection,
 * which it alone owns, and hands each back to the loop through a pipe, where
 * the job's done callback runs.
 *
 * A job is its caller's static object: queueing allocates nothing, and a
 * job still queued or running is not queued again, so the refreshes behind
 * one that hangs are skipped, not stacked up.
 *
 * A job that failed with the connection (or, when it asks for it, with any
 * error) closes the connection; the jobs after it are refused without a
 * statement for a back-off that doubles from nodes_refresh_ms up to
 * DB_BACKOFF_MAX_MS.  Failures are logged here, rate-limited.
 *
 * Lock order: `lock` alone, held only to move jobs between the lists. */
#include "consumer.h"

#include "db.h"
#include "log.h"
#include "timer.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#define DB_TIMEOUT_S 2
#define DB_BACKOFF_MAX_MS 30000

typedef struct {
    cs_mysql_job *head, *tail;
} job_list;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static job_list to_run, finished;       /* under lock */
static bool quitting;                   /* under lock */
static pthread_t thread;
static bool started;
static int done_pipe[2] = {-1, -1};     /* the thread writes a byte per finished job */
static struct event *done_ev;
static atomic_bool connection_ok = true;   /* until something fails */

/* The thread's own: the connection and its failures. */
static pg_db *db;
static unsigned failures;
static uint64_t next_try_ms;
static pg_ratelog db_log, error_log;

static void list_push(job_list *l, cs_mysql_job *j)
{
    j->next = NULL;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
}

static cs_mysql_job *list_take(job_list *l)
{
    cs_mysql_job *j = l->head;
    if (j && !(l->head = j->next))
        l->tail = NULL;
    return j;
}

/* ---- on the thread ---- */

static void back_off(void)
{
    uint64_t delay = (uint64_t)cs.cfg.nodes_refresh_ms;
    for (unsigned i = 0; i < failures && delay < DB_BACKOFF_MAX_MS; i++)
        delay *= 2;
    if (delay > DB_BACKOFF_MAX_MS)
        delay = DB_BACKOFF_MAX_MS;
    failures++;
    next_try_ms = pg_now_ms() + delay;
    atomic_store(&connection_ok, false);
}

static void failed(const char *what)
{
    pg_log_limited(&db_log, PG_LOG_WARN,
                   "%s failed (%s): the consumer goes on with what it knows; retrying", what,
                   db ? pg_db_error(db) : "no connection");
    pg_db_close(db);
    db = NULL;
    back_off();
}

static void worked(void)
{
    if (failures)
        pg_info("MySQL %s is reachable again", cs_mysql_server());
    db_log = (pg_ratelog){0};
    failures = 0;
    atomic_store(&connection_ok, true);
}

static bool connected(void)
{
    if (db)
        return true;
    char err[512];
    db = pg_db_connect(&cs.mysql, DB_TIMEOUT_S, DB_TIMEOUT_S, err, sizeof(err));
    if (!db) {
        pg_log_limited(&db_log, PG_LOG_WARN,
                       "MySQL unavailable (%s): the consumer goes on with what it knows; retrying",
                       err);
        back_off();
    }
    return db != NULL;
}

static void run_job(cs_mysql_job *j)
{
    if (pg_now_ms() < next_try_ms || !connected()) {
        j->rc = CS_MYSQL_SKIPPED;
        return;
    }
    j->rc = j->run(db, j->arg);
    if (j->rc == 0)
        worked();
    else if (j->drop_on_error || pg_db_unreachable(db))
        failed(j->what);
    else
        pg_log_limited(&error_log, PG_LOG_WARN, "%s failed: %s", j->what, pg_db_error(db));
}

static void *thread_main(void *arg)
{
    (void)arg;
    pg_log_set_role("consumer");
    pthread_mutex_lock(&lock);
    for (;;) {
        cs_mysql_job *j = list_take(&to_run);
        if (!j) {
            if (quitting)
                break;
            pthread_cond_wait(&wake, &lock);
            continue;
        }
        pthread_mutex_unlock(&lock);
        run_job(j);
        pthread_mutex_lock(&lock);
        list_push(&finished, j);
        /* a full pipe already holds a wake-up: the loop takes every finished job */
        ssize_t n = write(done_pipe[1], "", 1);
        (void)n;
    }
    pthread_mutex_unlock(&lock);
    pg_db_close(db);
    db = NULL;
    return NULL;
}

/* ---- on the loop ---- */

static void finish_jobs(void)
{
    for (;;) {
        pthread_mutex_lock(&lock);
        cs_mysql_job *j = list_take(&finished);
        pthread_mutex_unlock(&lock);
        if (!j)
            break;
        j->queued = false;
        if (j->done)
            j->done(j->rc, j->arg);
    }
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    (void)arg;
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    finish_jobs();
}

int cs_mysql_start(void)
{
    if (pipe2(done_pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
        pg_error("MySQL thread: pipe: %s", strerror(errno));
        return -1;
    }
    done_ev = event_new(cs.base, done_pipe[0], EV_READ | EV_PERSIST, on_done, NULL);
    if (!done_ev || event_add(done_ev, NULL) < 0) {
        pg_error("MySQL thread: no event (out of memory)");
        return -1;
    }
    /* Signals are the loop's (libevent's handlers): the thread starts with
     * them blocked, so none interrupts a statement there. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&thread, NULL, thread_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pg_error("MySQL thread: %s", strerror(rc));
        return -1;
    }
    started = true;
    return 0;
}

bool cs_mysql_submit(cs_mysql_job *job)
{
    if (job->queued || !started)
        return false;
    job->queued = true;
    pthread_mutex_lock(&lock);
    list_push(&to_run, job);
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
    return true;
}

void cs_mysql_stop(void)
{
    if (started) {
        pthread_mutex_lock(&lock);
        quitting = true;
        pthread_cond_signal(&wake);
        pthread_mutex_unlock(&lock);
        pthread_join(thread, NULL);
        started = false;
        finish_jobs();
    }
    if (done_ev)
        event_free(done_ev);
    done_ev = NULL;
    for (int i = 0; i < 2; i++) {
        if (done_pipe[i] >= 0)
            close(done_pipe[i]);
        done_pipe[i] = -1;
    }
}

bool cs_mysql_ok(void)
{
    return atomic_load(&connection_ok);
}

const char *cs_mysql_server(void)
{
    int at = pg_db_process_host();
    return at >= 0 && at < cs.mysql_hosts.n ? cs.mysql_hosts.v[at].text : "";
}

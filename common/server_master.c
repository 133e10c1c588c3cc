/* server_master.c - the master's main thread: accepts connections and hands
 * them to reactor threads, takes every signal, and runs the stop sequence:
 * stop accepting, let the manager stop the workers (they flush what they
 * send), then let the reactors deliver the last output and close. */
#include "server_internal.h"

#include "log.h"
#include "timer.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <event2/event.h>
#include <event2/thread.h>

#define REFUSAL_LOG_INTERVAL_MS 5000
#define MANAGER_GRACE_EXTRA_S 10

typedef struct {
    pg_server *s;
    struct event *accept_ev[PG_SERVER_MAX_LISTENERS];
    struct event *signal_ev[8];
    int nsignals;
    struct event *manager_deadline;
    int reserve_fd;                /* spare fd to refuse connections at EMFILE */
    uint64_t last_refusal_log;
    uint64_t refused_since_log;
} pg_master;

static void log_refusal(pg_master *m, const char *why)
{
    uint64_t now = pg_now_ms();
    m->refused_since_log++;
    atomic_fetch_add(&m->s->stats->refused, 1);
    if (now - m->last_refusal_log >= REFUSAL_LOG_INTERVAL_MS) {
        pg_warn("refused %llu connection(s): %s", (unsigned long long)m->refused_since_log, why);
        m->last_refusal_log = now;
        m->refused_since_log = 0;
    }
}

/* Out of file descriptors: free the spare one to accept and close a client,
 * so it gets a clean close instead of waiting in the backlog. */
static void refuse_at_fd_limit(pg_master *m, int listen_fd)
{
    if (m->reserve_fd >= 0) {
        close(m->reserve_fd);
        int fd = accept(listen_fd, NULL, NULL);
        if (fd >= 0)
            close(fd);
        m->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    log_refusal(m, "out of file descriptors (open-file limit reached)");
}

static void on_accept(evutil_socket_t listen_fd, short what, void *arg)
{
    (void)what;
    pg_master *m = arg;
    pg_server *s = m->s;
    int listener = 0;
    while (listener < s->listener_num && s->listeners[listener].fd != listen_fd)
        listener++;
    for (int i = 0; i < PG_ACCEPTS_PER_CALL; i++) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                refuse_at_fd_limit(m, listen_fd);
            else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                pg_warn("accept: %s", strerror(errno));
            return;
        }
        if (pg_listener_at_limit(s, listener)) {
            close(fd);
            log_refusal(m, s->listeners[listener].opts.max_conn > 0
                               ? "the port's own max_conn reached" : "max_conn reached");
            continue;
        }
        pg_conn_counted(s, listener);
        atomic_fetch_add(&s->stats->accepted, 1);
        if (pg_reactor_assign(s, fd, listener) < 0) {
            pg_error("cannot hand a connection to a reactor thread");
            close(fd);
            pg_conn_uncounted(s, listener);
        }
    }
}

static void stop_accepting(pg_master *m)
{
    pg_server *s = m->s;
    for (int i = 0; i < s->listener_num; i++) {
        if (m->accept_ev[i]) {
            event_free(m->accept_ev[i]);
            m->accept_ev[i] = NULL;
        }
        if (s->listeners[i].fd >= 0) {
            close(s->listeners[i].fd);
            s->listeners[i].fd = -1;
        }
    }
}

static void on_manager_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pg_server *s = ((pg_master *)arg)->s;
    pg_error("the manager did not stop in time; killing it");
    kill(s->manager_pid, SIGKILL);
}

static void begin_stop(pg_master *m, int exit_code)
{
    pg_server *s = m->s;
    if (s->stop_requested)
        return;
    s->stop_requested = 1;
    s->exit_code = exit_code;
    pg_notice("stopping");
    stop_accepting(m);
    if (s->cb.on_master_stop)
        s->cb.on_master_stop(s);
    if (s->manager_pid > 0) {
        kill(s->manager_pid, SIGTERM);
        struct timeval tv = {(time_t)s->settings->reload_timeout + MANAGER_GRACE_EXTRA_S, 0};
        m->manager_deadline = evtimer_new(s->main_base, on_manager_deadline, m);
        evtimer_add(m->manager_deadline, &tv);
    } else {
        event_base_loopbreak(s->main_base);
    }
}

static void on_manager_exit(pg_master *m)
{
    pg_server *s = m->s;
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid != s->manager_pid)
            continue;
        s->manager_pid = 0;
        if (!s->stop_requested) {
            pg_error("the manager exited unexpectedly (%s %d); stopping",
                     WIFSIGNALED(status) ? "signal" : "status",
                     WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
            begin_stop(m, 1);
        }
        event_base_loopbreak(s->main_base);
    }
}

static void on_signal(evutil_socket_t signo, short what, void *arg)
{
    (void)what;
    pg_master *m = arg;
    pg_server *s = m->s;
    switch (signo) {
    case SIGTERM:
    case SIGINT:
        begin_stop(m, 0);
        break;
    case SIGUSR1:
    case SIGUSR2:
        pg_notice("reloading %s", signo == SIGUSR1 ? "workers and task workers" : "task workers");
        if (s->manager_pid > 0)
            kill(s->manager_pid, (int)signo);
        break;
    case SIGHUP:
        pg_log_reopen();
        break;
    case SIGCHLD:
        on_manager_exit(m);
        break;
    }
}

static int master_setup(pg_master *m)
{
    pg_server *s = m->s;
    static const int signals[] = {SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGHUP, SIGCHLD};
    m->nsignals = (int)(sizeof(signals) / sizeof(signals[0]));
    for (int i = 0; i < m->nsignals; i++) {
        m->signal_ev[i] = evsignal_new(s->main_base, signals[i], on_signal, m);
        if (!m->signal_ev[i] || evsignal_add(m->signal_ev[i], NULL) < 0)
            return -1;
    }
    for (int i = 0; i < s->listener_num; i++) {
        if (s->listeners[i].opts.direct)
            continue;   /* the workers accept on it (server_direct.c) */
        m->accept_ev[i] = event_new(s->main_base, s->listeners[i].fd, EV_READ | EV_PERSIST,
                                    on_accept, m);
        if (!m->accept_ev[i] || event_add(m->accept_ev[i], NULL) < 0)
            return -1;
    }
    m->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return 0;
}

static void master_cleanup(pg_master *m)
{
    stop_accepting(m);
    for (int i = 0; i < m->nsignals; i++)
        if (m->signal_ev[i])
            event_free(m->signal_ev[i]);
    if (m->manager_deadline)
        event_free(m->manager_deadline);
    if (m->reserve_fd >= 0)
        close(m->reserve_fd);
}

int pg_master_run(pg_server *s)
{
    pg_master m = {.s = s, .reserve_fd = -1};
    pg_log_set_role("master");
    if (evthread_use_pthreads() < 0 || !(s->main_base = event_base_new())) {
        pg_error("cannot set up the event loop");
        kill(s->manager_pid, SIGTERM);
        waitpid(s->manager_pid, NULL, 0);
        return 1;
    }
    pg_timer_bind(s->main_base);
    int started = master_setup(&m) == 0 && pg_reactors_create(s) == 0 &&
                  pg_reactors_start(s) == 0;
    if (!started) {
        pg_error("cannot start the master: %s", strerror(errno));
        s->exit_code = 1;
        begin_stop(&m, 1);
    } else {
        pg_notice("%s started: master %ld, manager %ld", s->name, (long)getpid(),
                  (long)s->manager_pid);
        if (s->ready_fd >= 0) {
            if (write(s->ready_fd, "1", 1) != 1)
                pg_warn("could not tell the launching process that the server started");
            close(s->ready_fd);
            s->ready_fd = -1;
        }
        if (s->cb.on_master_start)
            s->cb.on_master_start(s);
        if (pg_server_stop_signalled())
            begin_stop(&m, 0);   /* asked before the loop watched for it */
    }
    /* Runs until the manager (and so every worker) has exited. */
    while (s->manager_pid > 0)
        event_base_loop(s->main_base, EVLOOP_ONCE);
    /* Freeing the loop restores default signal actions: a second SIGTERM
     * must not kill the master before it has cleaned up. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    if (s->reactors)
        pg_reactors_stop(s);
    pg_reactors_free(s);
    master_cleanup(&m);
    pg_timer_bind(NULL);
    event_base_free(s->main_base);
    s->main_base = NULL;
    pg_notice("stopped");
    return s->exit_code;
}

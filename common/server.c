/* server.c - settings, creating a server, listening sockets and the start-up
 * order.  The order is the point: shared memory, listening sockets and socket
 * pairs are made first, the manager is forked next, and only then does the
 * master start its reactor threads, so no process ever forks with threads. */
#include "server_internal.h"

#include "daemon.h"
#include "log.h"
#include "memory.h"
#include "proctitle.h"
#include "shm.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define S(field) offsetof(pg_server_settings, field)

const pg_conf_def pg_server_conf_defs[] = {
    {"reactor_num", PG_CONF_INT, S(reactor_num), "2", 1, PG_SERVER_MAX_REACTORS, NULL,
     "reactor threads in the master (socket I/O and framing)"},
    {"worker_num", PG_CONF_INT, S(worker_num), "2", 1, PG_SERVER_MAX_WORKERS, NULL,
     "worker processes (event loops running the callbacks)"},
    {"task_worker_num", PG_CONF_INT, S(task_worker_num), "2", 0, PG_SERVER_MAX_WORKERS, NULL,
     "task worker processes (synchronous work: MySQL)"},
    {"max_request", PG_CONF_INT, S(max_request), "0", 0, 1000000000000LL, NULL,
     "a worker is replaced after this many packets (0: never)"},
    {"task_max_request", PG_CONF_INT, S(task_max_request), "0", 0, 1000000000000LL, NULL,
     "a task worker is replaced after this many tasks (0: never)"},
    {"dispatch_mode", PG_CONF_INT, S(dispatch_mode), "2", 1, 3, NULL,
     "1 round robin, 2 fixed worker per connection, 3 least busy worker"},
    {"max_conn", PG_CONF_INT, S(max_conn), "10000", 1, 10000000, NULL,
     "connections held at most (capped by the open-file limit); past it: refused"},
    {"backlog", PG_CONF_INT, S(backlog), "511", 1, 65535, NULL, "listen(2) backlog"},
    {"daemonize", PG_CONF_BOOL, S(daemonize), "false", 0, 0, NULL,
     "detach from the terminal (set log_file too)"},
    {"pid_file", PG_CONF_STRING, S(pid_file), "", 0, 0, NULL,
     "file holding the master's pid while it runs (empty: none)"},
    {"log_file", PG_CONF_STRING, S(log_file), "", 0, 0, NULL, "log file (empty: stderr)"},
    {"log_level", PG_CONF_ENUM, S(log_level), "info", 0, 0, "debug|info|notice|warn|error",
     "lowest level written"},
    {"heartbeat_check_interval", PG_CONF_INT, S(heartbeat_check_interval), "30", 0, 86400, NULL,
     "seconds between idle checks (0: no check)"},
    {"heartbeat_idle_time", PG_CONF_INT, S(heartbeat_idle_time), "120", 1, 86400 * 7, NULL,
     "a connection silent this many seconds is closed"},
    {"open_eof_split", PG_CONF_BOOL, S(open_eof_split), "false", 0, 0, NULL,
     "split packets at package_eof (TCP listeners)"},
    {"package_eof", PG_CONF_BYTES, S(package_eof), "\\r\\n\\r\\n", 0, 0, NULL,
     "end-of-packet marker, 1 to 8 bytes, C escapes allowed"},
    {"open_length_check", PG_CONF_BOOL, S(open_length_check), "false", 0, 0, NULL,
     "packets are a 4-byte big-endian body length, then the body"},
    {"package_max_length", PG_CONF_SIZE, S(package_max_length), "2M", 1024, 256LL << 20, NULL,
     "largest packet or message; a larger one closes its connection"},
    {"buffer_output_size", PG_CONF_SIZE, S(buffer_output_size), "2M", 4096, 1LL << 30, NULL,
     "output queued for one connection at most; past it the connection is closed"},
    {"user", PG_CONF_STRING, S(user), "", 0, 0, NULL, "run as this user after binding (root only)"},
    {"group", PG_CONF_STRING, S(group), "", 0, 0, NULL, "run as this group after binding"},
    {"reload_timeout", PG_CONF_INT, S(reload_timeout), "30", 1, 3600, NULL,
     "seconds a stopping worker may take before it is killed"},
    {"cpu_affinity", PG_CONF_STRING, S(cpu_affinity), "", 0, 0, NULL,
     "CPUs this node and all its processes run on, e.g. 0 or 0-3,6 (empty: as started)"},
};
const size_t pg_server_conf_ndefs = sizeof(pg_server_conf_defs) / sizeof(pg_server_conf_defs[0]);

/* SIGTERM or SIGINT before the master's loop watches for them (while a
 * daemon listens and still sets up: registers in MySQL, forks) is noted
 * here rather than killing the process, and the master stops cleanly as
 * soon as it runs. */
static volatile sig_atomic_t stop_signalled;

static void note_stop(int signo)
{
    (void)signo;
    stop_signalled = 1;
}

int pg_server_stop_signalled(void)
{
    return stop_signalled;
}

pg_server *pg_server_new(const char *name, const pg_server_settings *settings,
                         const pg_server_callbacks *callbacks)
{
    pg_server *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    struct sigaction sa = {.sa_handler = note_stop};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    snprintf(s->name, sizeof(s->name), "%s", name);
    s->settings = settings;
    if (callbacks)
        s->cb = *callbacks;
    s->reactor_num = (int)settings->reactor_num;
    s->worker_num = (int)settings->worker_num;
    s->task_worker_num = (int)settings->task_worker_num;
    /* Room for a full packet, and for a task built from one (a worker may
     * expand what it received, e.g. one event per target). */
    s->ipc_max_message = 4 * settings->package_max_length + 64 * 1024;
    s->generation = (uint32_t)time(NULL) & PG_GENERATION_MASK;
    s->role = PG_ROLE_MASTER;
    s->worker_id = -1;
    s->ready_fd = -1;
    for (int i = 0; i < PG_SERVER_MAX_LISTENERS; i++)
        s->listeners[i].fd = -1;
    return s;
}

static void close_pairs(int (*pairs)[2], int n)
{
    for (int i = 0; pairs && i < n; i++)
        for (int j = 0; j < 2; j++)
            if (pairs[i][j] >= 0)
                close(pairs[i][j]);
}

void pg_server_free(pg_server *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->listener_num; i++)
        if (s->listeners[i].fd >= 0)
            close(s->listeners[i].fd);
    close_pairs(s->reactor_ipc, s->reactor_num * s->worker_num);
    close_pairs(s->task_ipc, s->worker_num * s->task_worker_num);
    close_pairs(s->worker_ipc, s->worker_num * s->worker_num);
    free(s->reactor_ipc);
    free(s->task_ipc);
    free(s->worker_ipc);
    while (s->hooks) {
        pg_hook_entry *next = s->hooks->next;
        free(s->hooks);
        s->hooks = next;
    }
    while (s->event_listeners) {
        pg_event_listener *next = s->event_listeners->next;
        free(s->event_listeners->name);
        free(s->event_listeners);
        s->event_listeners = next;
    }
    if (s->stats)
        pg_shm_free(s->stats, sizeof(*s->stats));
    free(s);
}

pg_listen_options pg_listen_options_from_settings(const pg_server_settings *st)
{
    pg_listen_options o = {0};
    o.frame.max_length = st->package_max_length;
    if (st->open_length_check) {
        o.frame.kind = PG_FRAME_LENGTH;
    } else if (st->open_eof_split) {
        o.frame.kind = PG_FRAME_EOF;
        o.frame.eof = st->package_eof.data;
        o.frame.eof_len = st->package_eof.len;
    }
    return o;
}

static int bind_socket(const char *host, int port, int backlog)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    int rc = getaddrinfo(host && *host ? host : NULL, service, &hints, &res);
    if (rc != 0) {
        pg_error("listen %s:%d: %s", host, port, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, backlog) < 0) {
        pg_error("listen %s:%d: %s", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

int pg_server_listen(pg_server *s, const char *host, int port, const pg_listen_options *opts)
{
    if (s->listener_num >= PG_SERVER_MAX_LISTENERS) {
        pg_error("listen %s:%d: at most %d listening ports", host, port, PG_SERVER_MAX_LISTENERS);
        return -1;
    }
    if (!opts->protocol && opts->frame.kind == PG_FRAME_EOF &&
        (opts->frame.eof_len < 1 || opts->frame.eof_len > sizeof(s->listeners[0].eof))) {
        pg_error("listen %s:%d: package_eof must be 1 to 8 bytes", host, port);
        return -1;
    }
    if (opts->max_conn < 0) {
        pg_error("listen %s:%d: max_conn must not be negative", host, port);
        return -1;
    }
    if (opts->dispatch_mode < 0 || opts->dispatch_mode > PG_DISPATCH_IDLE) {
        pg_error("listen %s:%d: dispatch_mode must be 0 to 3", host, port);
        return -1;
    }
    if (opts->direct && opts->protocol) {
        pg_error("listen %s:%d: a direct listener is framed, it takes no protocol", host, port);
        return -1;
    }
    int fd = bind_socket(host, port, (int)s->settings->backlog);
    if (fd < 0)
        return -1;
    pg_listener *l = &s->listeners[s->listener_num];
    l->fd = fd;
    l->opts = *opts;
    if (opts->frame.kind == PG_FRAME_EOF) {
        memcpy(l->eof, opts->frame.eof, opts->frame.eof_len);
        l->opts.frame.eof = l->eof;
    }
    snprintf(l->host, sizeof(l->host), "%s", host ? host : "");
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &len);
    l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
    pg_info("listening on %s:%d", l->host, l->port);
    return s->listener_num++;
}

int pg_server_listener_port(const pg_server *s, int listener)
{
    return listener >= 0 && listener < s->listener_num ? s->listeners[listener].port : -1;
}

void pg_server_set_generation(pg_server *s, uint32_t generation)
{
    s->generation = generation & PG_GENERATION_MASK;
}

void pg_server_set_data(pg_server *s, void *data) { s->data = data; }
void *pg_server_data(const pg_server *s) { return s->data; }
pg_role pg_server_role(const pg_server *s) { return s->role; }
int pg_server_worker_id(const pg_server *s) { return s->worker_id; }
const pg_server_settings *pg_server_settings_of(const pg_server *s) { return s->settings; }

int pg_server_session_reactor(const pg_server *s, pg_session_id session)
{
    return pg_session_reactor_of(session, s->reactor_num);
}

int pg_direct_wanted(int setting, long long worker_num)
{
    return setting == PG_DIRECT_ON || (setting == PG_DIRECT_AUTO && worker_num <= 2);
}

int pg_server_session_worker(const pg_server *s, pg_session_id session)
{
    return pg_session_home_worker(session, s->worker_num);
}

int pg_server_add_hook(pg_server *s, pg_hook hook, pg_hook_fn fn, void *arg)
{
    pg_hook_entry *e = calloc(1, sizeof(*e));
    if (!e)
        return -1;
    *e = (pg_hook_entry){.hook = hook, .fn = fn, .arg = arg};
    pg_hook_entry **tail = &s->hooks;
    while (*tail)
        tail = &(*tail)->next;
    *tail = e;
    return 0;
}

void pg_server_run_hooks(pg_server *s, pg_hook hook, int worker_id)
{
    for (pg_hook_entry *e = s->hooks; e; e = e->next)
        if (e->hook == hook)
            e->fn(s, worker_id, e->arg);
}

int pg_server_add_event_listener(pg_server *s, const char *name, pg_event_listener_fn fn,
                                 void *arg)
{
    pg_event_listener *l = calloc(1, sizeof(*l));
    if (!l || !(l->name = strdup(name))) {
        free(l);
        return -1;
    }
    l->fn = fn;
    l->arg = arg;
    l->next = s->event_listeners;
    s->event_listeners = l;
    return 0;
}

int pg_server_shutdown(pg_server *s)
{
    return kill(s->master_pid ? s->master_pid : getpid(), SIGTERM);
}

int pg_server_reload(pg_server *s, int task_workers_only)
{
    return kill(s->master_pid ? s->master_pid : getpid(), task_workers_only ? SIGUSR2 : SIGUSR1);
}

static void copy_worker_stats(pg_worker_stats *out, pg_shm_worker *in)
{
    out->pid = atomic_load(&in->pid);
    out->state = atomic_load(&in->state);
    out->requests = atomic_load(&in->requests);
    out->queued = atomic_load(&in->queued);
    out->respawns = atomic_load(&in->respawns);
}

void pg_server_stats(const pg_server *s, pg_server_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    pg_shm_stats *st = s->stats;
    if (!st)
        return;
    out->start_time = st->start_time;
    out->master_pid = atomic_load(&st->master_pid);
    out->manager_pid = atomic_load(&st->manager_pid);
    out->connections = atomic_load(&st->connections);
    out->accepted = atomic_load(&st->accepted);
    out->closed = atomic_load(&st->closed);
    out->refused = atomic_load(&st->refused);
    out->packets_in = atomic_load(&st->packets_in);
    out->packets_out = atomic_load(&st->packets_out);
    out->bytes_in = atomic_load(&st->bytes_in);
    out->bytes_out = atomic_load(&st->bytes_out);
    out->task_queue = atomic_load(&st->task_queue);
    out->tasks_done = atomic_load(&st->tasks_done);
    out->reactor_num = s->reactor_num;
    out->worker_num = s->worker_num;
    out->task_worker_num = s->task_worker_num;
    for (int i = 0; i < s->reactor_num; i++)
        out->sessions_per_reactor[i] = atomic_load(&st->sessions_per_reactor[i]);
    for (int i = 0; i < s->worker_num; i++)
        copy_worker_stats(&out->workers[i], &st->workers[i]);
    for (int i = 0; i < s->task_worker_num; i++)
        copy_worker_stats(&out->task_workers[i], &st->task_workers[i]);
}

/* ---- start-up ---- */

/* Raise the open-file limit to the hard limit and keep max_conn under it. */
static long long open_file_capacity(pg_server *s)
{
    long long reserved = 64 + 2LL * s->reactor_num * s->worker_num + s->listener_num;
    for (int i = 0; i < s->listener_num; i++)
        reserved += s->listeners[i].opts.max_conn;   /* ports with a limit of their own */
    long long capacity = pg_daemon_raise_nofile() - reserved;
    return capacity > 0 ? capacity : 1;
}

/* n pairs; with square set, only those above the diagonal of an
 * square x square matrix (one pair for each two workers). */
static int make_pairs(int (**pairs)[2], int n, int square)
{
    *pairs = malloc(sizeof(int[2]) * (size_t)(n ? n : 1));
    if (!*pairs)
        return -1;
    for (int i = 0; i < n; i++)
        (*pairs)[i][0] = (*pairs)[i][1] = -1;
    for (int i = 0; i < n; i++)
        if ((!square || i / square < i % square) && pg_ipc_socketpair((*pairs)[i]) < 0) {
            pg_error("socketpair: %s", strerror(errno));
            return -1;
        }
    return 0;
}

static int check_pid_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    long pid = 0;
    int n = fscanf(f, "%ld", &pid);
    fclose(f);
    if (n == 1 && pid > 0 && kill((pid_t)pid, 0) == 0) {
        pg_error("%s: already running as pid %ld", path, pid);
        return -1;
    }
    return 0;
}

static int write_pid_file(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0 || rename(tmp, path) < 0) {
        pg_error("%s: cannot write pid file: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* The launching process waits until the daemon says it started (a byte on
 * a pipe), so a daemon that fails to start still gives a non-zero exit. */
static int daemonize(pg_server *s)
{
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0) {
        char ok = 0;
        close(ready[1]);
        _exit(read(ready[0], &ok, 1) == 1 && ok == '1' ? 0 : 1);
    }
    close(ready[0]);
    s->ready_fd = ready[1];
    setsid();
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, 0);
        dup2(fd, 1);
        dup2(fd, 2);   /* log lines go to log_file */
        if (fd > 2)
            close(fd);
    }
    return 0;
}

static int drop_privileges(const pg_server_settings *st)
{
    if (st->group && *st->group) {
        struct group *g = getgrnam(st->group);
        if (!g || setgid(g->gr_gid) < 0) {
            pg_error("group %s: %s", st->group, g ? strerror(errno) : "no such group");
            return -1;
        }
    }
    if (st->user && *st->user) {
        struct passwd *p = getpwnam(st->user);
        if (!p || initgroups(p->pw_name, p->pw_gid) < 0 || setuid(p->pw_uid) < 0) {
            pg_error("user %s: %s", st->user, p ? strerror(errno) : "no such user");
            return -1;
        }
    }
    return 0;
}

static int prepare(pg_server *s)
{
    const pg_server_settings *st = s->settings;
    pg_memory_init();
    long long capacity = open_file_capacity(s);
    if (st->max_conn > capacity) {
        pg_warn("max_conn %lld is over what the open-file limit allows; holding at most %lld",
                st->max_conn, capacity);
        ((pg_server_settings *)st)->max_conn = capacity;
    }
    pg_info("capacity: %lld connections (max_conn), %d reactors, %d workers, %d task workers; %s",
            st->max_conn, s->reactor_num, s->worker_num, s->task_worker_num, pg_memory_allocator());
    if (st->daemonize && daemonize(s) < 0)
        return -1;
    if (st->pid_file && *st->pid_file &&
        (check_pid_file(st->pid_file) < 0 || write_pid_file(st->pid_file) < 0))
        return -1;
    s->stats = pg_shm_alloc(sizeof(*s->stats));
    if (!s->stats)
        return -1;
    s->stats->start_time = (int64_t)time(NULL);
    s->master_pid = getpid();
    atomic_store(&s->stats->master_pid, s->master_pid);
    if (make_pairs(&s->reactor_ipc, s->reactor_num * s->worker_num, 0) < 0 ||
        make_pairs(&s->task_ipc, s->worker_num * s->task_worker_num, 0) < 0 ||
        make_pairs(&s->worker_ipc, s->worker_num * s->worker_num, s->worker_num) < 0)
        return -1;
    return drop_privileges(st);
}

static void remove_pid_file(pg_server *s)
{
    const char *path = s->settings->pid_file;
    if (path && *path && s->master_pid == getpid())
        unlink(path);
}

int pg_server_start(pg_server *s)
{
    if (s->listener_num == 0) {
        pg_error("nothing to serve: no listening port");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    if (prepare(s) < 0) {
        remove_pid_file(s);
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        pg_error("fork: %s", strerror(errno));
        remove_pid_file(s);
        return 1;
    }
    if (pid == 0)
        pg_manager_main(s);
    s->manager_pid = pid;
    atomic_store(&s->stats->manager_pid, pid);
    /* The far ends belong to the manager and its children now. */
    for (int i = 0; i < s->reactor_num * s->worker_num; i++) {
        close(s->reactor_ipc[i][1]);
        s->reactor_ipc[i][1] = -1;
    }
    close_pairs(s->task_ipc, s->worker_num * s->task_worker_num);
    for (int i = 0; i < s->worker_num * s->task_worker_num; i++)
        s->task_ipc[i][0] = s->task_ipc[i][1] = -1;
    close_pairs(s->worker_ipc, s->worker_num * s->worker_num);
    for (int i = 0; i < s->worker_num * s->worker_num; i++)
        s->worker_ipc[i][0] = s->worker_ipc[i][1] = -1;
    pg_proctitle_set("%s: master", s->name);
    int rc = pg_master_run(s);
    remove_pid_file(s);
    return rc;
}

/* test_redis_link.c - common/redis_link.c against a real redis-server.
 *
 * The test starts its own redis-server (no persistence, a scratch dir) on a
 * free loopback port and stops it, by pid, at the end; the server also dies
 * with the test (PR_SET_PDEATHSIG) if the test is killed.  Without
 * redis-server on PATH every test is skipped.  Each wait runs the event
 * loop for a bounded time, and an alarm ends the whole run after
 * TEST_TIMEOUT_S.
 *
 * Covered: a command round trip, binary arguments and refused commands; a
 * subscription receiving what another link publishes; a link to a port
 * nobody listens on (on_down from the loop, never from pg_redis_new); the
 * server restarted under a command link and a subscribed link (on_down, then
 * on_up, subscribe again, messages flow again); pg_redis_free with commands
 * and a subscription pending (their callbacks get NULL once).
 *
 * With sentinels, against a primary, its replica and a real sentinel
 * (redis-server --sentinel) watching them as "pgtest", two more standalone
 * servers, and a fake sentinel in the test's own loop that answers what the
 * test tells it to: the primary is found past a dead sentinel and one that
 * is not a sentinel; every malformed answer (and silence, and a closed
 * connection, and a sentinel naming a replica) leaves the link down with
 * no crash, and the next good answer brings it up; malformed +switch-master
 * messages are ignored and a good one moves the link; a READONLY reply
 * moves it; a real failover (SENTINEL FAILOVER) moves a command link and a
 * subscribed link to the promoted replica.  Each server has a folder of its
 * own under the scratch dir (a replica writes the primary's snapshot
 * there). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <ftw.h>
#include <strings.h>

#include "log.h"
#include "redis_link.h"
#include "timer.h"

#define TEST_TIMEOUT_S 120
#define WAIT_MS 5000            /* for anything that should happen at once */
#define RESTART_WAIT_MS 15000   /* reconnect backoff is capped at 5 s */

#define FAILOVER_WAIT_MS 20000  /* a real failover, from SENTINEL FAILOVER to the move */
#define MASTER "pgtest"

static char server_path[4096];  /* "" : not on PATH */
static char dir[64];
static int port;                /* the standalone server X of the first tests */
static pid_t server_pid;
/* The sentinel set-up: primary A, replica B, sentinel S; and standalone Y. */
static int port_a, port_b, port_s, port_y;
static pid_t pid_a, pid_b, pid_s, pid_y;
static struct event_base *base;
static struct event *ticker;

/* ------------------------------------------------------------ the server */

static int find_on_path(const char *name, char *out, size_t cap)
{
    const char *path = getenv("PATH");
    if (!path)
        return -1;
    while (*path) {
        size_t n = strcspn(path, ":");
        if (n > 0 && (size_t)snprintf(out, cap, "%.*s/%s", (int)n, path, name) < cap &&
            access(out, X_OK) == 0)
            return 0;
        path += n;
        if (*path == ':')
            path++;
    }
    out[0] = '\0';
    return -1;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int p = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        p = ntohs(a.sin_port);
    close(fd);
    return p;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* PING answered on p with a blocking hiredis connection. */
static bool answers_on(int p)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", p, tv);
    bool ok = false;
    if (c && !c->err) {
        redisReply *rep = redisCommand(c, "PING");
        ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (rep)
            freeReplyObject(rep);
    }
    if (c)
        redisFree(c);
    return ok;
}

/* redis-server with args (NULL-terminated, after the program), its output
 * to /dev/null; dies with the test.  Waits until it answers on p. */
static pid_t spawn_on(int p, const char *const *args)
{
    const char *argv[32] = {server_path};
    size_t n = 1;
    while (args[n - 1] && n < 31) {
        argv[n] = args[n - 1];
        n++;
    }
    argv[n] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, STDIN_FILENO);
            dup2(null, STDOUT_FILENO);
            dup2(null, STDERR_FILENO);
        }
        execv(server_path, (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) {     /* 10 s */
        if (answers_on(p))
            return pid;
        if (waitpid(pid, NULL, WNOHANG) == pid)
            fail_msg("redis-server exited at start (port %d)", p);
        sleep_ms(100);
    }
    fail_msg("redis-server does not answer on port %d after 10 s", p);
    return -1;
}

/* A standalone server on p with no persistence, in dir/name. */
static pid_t plain_server(int p, const char *name, const char *replica_of)
{
    char port_s[16], sub[128], master[16];
    snprintf(port_s, sizeof(port_s), "%d", p);
    snprintf(sub, sizeof(sub), "%s/%s", dir, name);
    mkdir(sub, 0700);
    snprintf(master, sizeof(master), "%s", replica_of ? replica_of : "");
    const char *args[] = {"--port", port_s, "--bind", "127.0.0.1", "--dir", sub, "--save", "",
                          "--appendonly", "no", "--daemonize", "no",
                          replica_of ? "--replicaof" : NULL, "127.0.0.1", master, NULL};
    return spawn_on(p, args);
}

static void server_start(void)
{
    server_pid = plain_server(port, "x", NULL);
}

/* SIGTERM to a server we started, SIGKILL after 5 s; reaps it. */
static void stop_pid(pid_t *pidp)
{
    if (*pidp <= 0)
        return;
    pid_t pid = *pidp;
    *pidp = 0;
    kill(pid, SIGTERM);
    for (int i = 0; i < 50; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        sleep_ms(100);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void server_stop(void)
{
    stop_pid(&server_pid);
}

/* A command on the server at p, blocking; the reply (caller frees) or NULL. */
static redisReply *blocking(int p, const char *fmt, ...)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", p, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return r;
}

/* The reply of a blocking command has text in it (its string, status or
 * error, or any element's). */
static bool reply_has(const redisReply *r, const char *text)
{
    if (!r)
        return false;
    if (r->str && strstr(r->str, text))
        return true;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
        if (reply_has(r->element[i], text))
            return true;
    return false;
}

static bool blocking_has(int p, const char *text, const char *fmt, const char *arg)
{
    redisReply *r = blocking(p, fmt, arg);
    bool has = reply_has(r, text);
    if (r)
        freeReplyObject(r);
    return has;
}

/* ------------------------------------------------------------ the loop */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Runs the loop until *flag is true or ms passed; returns *flag. */
static bool run_until(const bool *flag, long ms)
{
    uint64_t end = pg_now_ms() + (uint64_t)ms;
    while (!*flag && pg_now_ms() < end)
        event_base_loop(base, EVLOOP_ONCE);
    return *flag;
}

static void run_for(long ms)
{
    bool never = false;
    run_until(&never, ms);
}


/* ------------------------------------------------------------ a fake sentinel */

/* A sentinel in the test's loop: it answers SENTINEL commands with answer
 * (raw RESP; NULL: silence; "": it closes the connection), confirms
 * SUBSCRIBE and sends what fake_publish gives to the subscribed. */
typedef struct fake_conn {
    struct bufferevent *bev;
    redisReader *rd;
    bool subscribed;
    struct fake_conn *next;
} fake_conn;

static struct {
    struct evconnlistener *lst;
    int port;
    const char *answer;
    int asked;
    fake_conn *conns;
} fake;

static void fake_close(fake_conn *c)
{
    for (fake_conn **pp = &fake.conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    redisReaderFree(c->rd);
    bufferevent_free(c->bev);
    free(c);
}

static void fake_command(fake_conn *c, const redisReply *r)
{
    const char *cmd = r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                      r->element[0]->type == REDIS_REPLY_STRING ? r->element[0]->str : "";
    if (strcasecmp(cmd, "SENTINEL") == 0) {
        fake.asked++;
        if (fake.answer)
            bufferevent_write(c->bev, fake.answer, strlen(fake.answer));
    } else if (strcasecmp(cmd, "SUBSCRIBE") == 0 && r->elements == 2) {
        c->subscribed = true;
        evbuffer_add_printf(bufferevent_get_output(c->bev), "*3\r\n$9\r\nsubscribe\r\n$%zu\r\n%s\r\n:1\r\n",
                            r->element[1]->len, r->element[1]->str);
    } else {
        bufferevent_write(c->bev, "-ERR not here\r\n", 15);
    }
}

static void fake_read(struct bufferevent *bev, void *arg)
{
    fake_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n = evbuffer_get_length(in);
    char buf[4096];
    while (n > 0) {
        size_t k = n < sizeof(buf) ? n : sizeof(buf);
        evbuffer_remove(in, buf, k);
        redisReaderFeed(c->rd, buf, k);
        n -= k;
    }
    void *reply = NULL;
    while (redisReaderGetReply(c->rd, &reply) == REDIS_OK && reply) {
        bool closes = fake.answer && !*fake.answer;
        fake_command(c, reply);
        freeReplyObject(reply);
        reply = NULL;
        if (closes && !c->subscribed) {
            fake_close(c);
            return;
        }
    }
}

static void fake_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        fake_close(arg);
}

static void fake_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                        int salen, void *arg)
{
    (void)l;
    (void)sa;
    (void)salen;
    (void)arg;
    fake_conn *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->rd = redisReaderCreate();
    assert_true(c->bev && c->rd);
    c->next = fake.conns;
    fake.conns = c;
    bufferevent_setcb(c->bev, fake_read, NULL, fake_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void fake_start(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    fake.lst = evconnlistener_new_bind(base, fake_accept, NULL,
                                       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
                                       (struct sockaddr *)&a, sizeof(a));
    assert_non_null(fake.lst);
    socklen_t len = sizeof(a);
    getsockname(evconnlistener_get_fd(fake.lst), (struct sockaddr *)&a, &len);
    fake.port = ntohs(a.sin_port);
}

static void fake_stop(void)
{
    while (fake.conns)
        fake_close(fake.conns);
    if (fake.lst)
        evconnlistener_free(fake.lst);
    fake.lst = NULL;
}

static size_t fake_subscribers(void)
{
    size_t n = 0;
    for (fake_conn *c = fake.conns; c; c = c->next)
        n += c->subscribed;
    return n;
}

/* raw: a whole RESP message, sent to every subscribed connection. */
static void fake_send_raw(const char *raw)
{
    for (fake_conn *c = fake.conns; c; c = c->next)
        if (c->subscribed)
            bufferevent_write(c->bev, raw, strlen(raw));
}

static void fake_publish(const char *text)
{
    char raw[512];
    snprintf(raw, sizeof(raw), "*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n$%zu\r\n%s\r\n",
             strlen(text), text);
    fake_send_raw(raw);
}

/* The answer naming 127.0.0.1:p, in a static buffer. */
static const char *names(int p)
{
    static char raw[64];
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", p);
    snprintf(raw, sizeof(raw), "*2\r\n$9\r\n127.0.0.1\r\n$%zu\r\n%s\r\n", strlen(ps), ps);
    return raw;
}

/* ------------------------------------------------------------ callbacks */

typedef struct {
    int ups, downs;
    bool up_seen, down_seen;
    int want_ups;               /* got_ups once ups reaches it */
    bool got_ups;
    char order[64];             /* 'U' and 'D' in the order they came */
    pg_redis *sub_again;        /* subscribe this link again in on_up */
    const char *channel;
    struct feed *feed;
} link_events;

typedef struct feed {
    int confirms, messages, nulls;
    char last[64];
    bool confirmed, got_null;
    int want;
    bool got_want;
} feed;

typedef struct {
    int calls, nulls;
    bool done;
    int type;
    char str[64];
    long long integer;
} answer;

static void note(link_events *ev, char c)
{
    size_t n = strlen(ev->order);
    if (n + 1 < sizeof(ev->order)) {
        ev->order[n] = c;
        ev->order[n + 1] = '\0';
    }
}

static void on_feed(struct redisReply *reply, void *priv)
{
    feed *f = priv;
    if (!reply) {
        f->nulls++;
        f->got_null = true;
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
        return;
    const char *kind = reply->element[0]->str;
    if (strcmp(kind, "subscribe") == 0) {
        f->confirms++;
        f->confirmed = true;
    } else if (strcmp(kind, "message") == 0) {
        f->messages++;
        snprintf(f->last, sizeof(f->last), "%s", reply->element[2]->str);
        if (f->messages >= f->want)
            f->got_want = true;
    }
}

static void on_up(pg_redis *r, void *arg)
{
    link_events *ev = arg;
    ev->ups++;
    ev->up_seen = true;
    ev->got_ups = ev->want_ups && ev->ups >= ev->want_ups;
    note(ev, 'U');
    if (ev->sub_again == r)
        assert_int_equal(pg_redis_subscribe(r, ev->channel, on_feed, ev->feed), 0);
}

static void on_down(pg_redis *r, void *arg)
{
    (void)r;
    link_events *ev = arg;
    ev->downs++;
    ev->down_seen = true;
    note(ev, 'D');
}

static void on_answer(struct redisReply *reply, void *priv)
{
    answer *a = priv;
    a->calls++;
    a->done = true;
    if (!reply) {
        a->nulls++;
        return;
    }
    a->type = reply->type;
    a->integer = reply->integer;
    if (reply->str)
        snprintf(a->str, sizeof(a->str), "%s", reply->str);
}

static pg_redis *link_new(const char *role, link_events *ev)
{
    pg_redis_config cfg = {
        .host = "127.0.0.1",
        .port = port,
        .role = role,
        .base = base,
        .on_up = on_up,
        .on_down = on_down,
        .arg = ev,
    };
    pg_redis *r = pg_redis_new(&cfg);
    assert_non_null(r);
    return r;
}

static pg_redis *link_up(const char *role, link_events *ev)
{
    pg_redis *r = link_new(role, ev);
    assert_false(pg_redis_up(r));  /* the connect callback comes from the loop */
    if (!run_until(&ev->up_seen, WAIT_MS))
        fail_msg("%s link not up within %d ms", role, WAIT_MS);
    assert_true(pg_redis_up(r));
    return r;
}

/* A link through the sentinels list (master MASTER); not waited for. */
static pg_redis *sentinel_link(const char *role, link_events *ev, const char *sentinels)
{
    pg_redis_config cfg = {
        .host = "127.0.0.1", .port = 1, .sentinels = sentinels, .master_name = MASTER,
        .role = role, .base = base, .on_up = on_up, .on_down = on_down, .arg = ev,
    };
    pg_redis *r = pg_redis_new(&cfg);
    assert_non_null(r);
    assert_false(pg_redis_up(r));
    return r;
}

static void assert_on(const pg_redis *r, int p)
{
    char want[32];
    snprintf(want, sizeof(want), "127.0.0.1:%d", p);
    assert_string_equal(pg_redis_server(r), want);
}

/* Sends a command and waits for its answer. */
static void command(pg_redis *r, answer *a, int argc, const char **argv, const size_t *lens)
{
    *a = (answer){0};
    assert_int_equal(pg_redis_argv(r, on_answer, a, argc, argv, lens), 0);
    if (!run_until(&a->done, WAIT_MS))
        fail_msg("no answer to %s within %d ms", argv[0], WAIT_MS);
    assert_int_equal(a->calls, 1);
}

static void publish(pg_redis *r, const char *channel, const char *msg, long long receivers)
{
    answer a;
    const char *argv[] = {"PUBLISH", channel, msg};
    command(r, &a, 3, argv, NULL);
    assert_int_equal(a.type, REDIS_REPLY_INTEGER);
    assert_int_equal(a.integer, receivers);
}

#define NEED_SERVER()                                                  \
    do {                                                               \
        if (!server_path[0]) {                                         \
            printf("redis-server is not on PATH: test skipped\n");    \
            skip();                                                    \
        }                                                              \
    } while (0)

/* ------------------------------------------------------------ tests */

static void test_round_trip(void **state)
{
    (void)state;
    NEED_SERVER();
    link_events ev = {0};
    pg_redis *r = link_up("control", &ev);
    answer a;

    const char *set[] = {"SET", "pg-link-key", "a\0b", NULL};
    size_t set_lens[] = {3, 11, 3};
    command(r, &a, 3, set, set_lens);
    assert_int_equal(a.type, REDIS_REPLY_STATUS);
    assert_string_equal(a.str, "OK");

    const char *len_cmd[] = {"STRLEN", "pg-link-key"};
    command(r, &a, 2, len_cmd, NULL);
    assert_int_equal(a.type, REDIS_REPLY_INTEGER);
    assert_int_equal(a.integer, 3);     /* the NUL byte went through */

    const char *bad[] = {"NO-SUCH-COMMAND"};
    command(r, &a, 1, bad, NULL);
    assert_int_equal(a.type, REDIS_REPLY_ERROR);

    /* Refused here, never sent: their callback would outlive one call. */
    const char *sub[] = {"subscribe", "x"};
    assert_int_equal(pg_redis_argv(r, on_answer, &a, 2, sub, NULL), -1);
    const char *mon[] = {"MONITOR"};
    assert_int_equal(pg_redis_argv(r, on_answer, &a, 1, mon, NULL), -1);
    assert_int_equal(pg_redis_argv(r, on_answer, &a, 0, sub, NULL), -1);

    assert_int_equal(ev.ups, 1);
    assert_int_equal(ev.downs, 0);
    pg_redis_free(r);
    assert_int_equal(ev.downs, 0);      /* freeing is not a loss */
}

static void test_unreachable(void **state)
{
    (void)state;
    NEED_SERVER();
    int dead_port = free_port();
    assert_true(dead_port > 0);
    link_events ev = {0};
    pg_redis_config cfg = {
        .host = "127.0.0.1", .port = dead_port, .role = "nobody", .base = base,
        .on_up = on_up, .on_down = on_down, .arg = &ev,
    };
    pg_redis *r = pg_redis_new(&cfg);
    assert_non_null(r);
    assert_int_equal(ev.downs, 0);      /* not from inside pg_redis_new */
    if (!run_until(&ev.down_seen, WAIT_MS))
        fail_msg("no on_down for a closed port within %d ms", WAIT_MS);
    assert_int_equal(ev.ups, 0);
    assert_false(pg_redis_up(r));
    answer a = {0};
    const char *ping[] = {"PING"};
    assert_int_equal(pg_redis_argv(r, on_answer, &a, 1, ping, NULL), -1);
    feed f = {0};
    assert_int_equal(pg_redis_subscribe(r, "x", on_feed, &f), -1);
    pg_redis_free(r);
    assert_int_equal(a.calls, 0);
    assert_int_equal(f.nulls, 0);

    pg_redis_config none = {.host = NULL, .port = port, .base = base};
    assert_null(pg_redis_new(&none));
    assert_null(pg_redis_new(NULL));
}

static void test_subscribe(void **state)
{
    (void)state;
    NEED_SERVER();
    link_events sev = {0}, pev = {0};
    pg_redis *sub = link_up("feed", &sev);
    pg_redis *pub = link_up("control", &pev);
    feed f = {.want = 3};

    assert_int_equal(pg_redis_subscribe(sub, "pg-link-chan", on_feed, &f), 0);
    assert_int_equal(pg_redis_subscribe(sub, "other", on_feed, &f), -1);  /* one per link */
    if (!run_until(&f.confirmed, WAIT_MS))
        fail_msg("no subscribe confirmation within %d ms", WAIT_MS);
    assert_int_equal(f.confirms, 1);

    /* A subscribed link takes no other command. */
    answer a = {0};
    const char *ping[] = {"PING"};
    assert_int_equal(pg_redis_argv(sub, on_answer, &a, 1, ping, NULL), -1);

    publish(pub, "pg-link-chan", "one", 1);
    publish(pub, "pg-link-chan", "two", 1);
    publish(pub, "pg-link-chan", "three", 1);
    publish(pub, "pg-link-elsewhere", "not for us", 0);
    if (!run_until(&f.got_want, WAIT_MS))
        fail_msg("got %d of 3 messages within %d ms", f.messages, WAIT_MS);
    run_for(100);
    assert_int_equal(f.messages, 3);
    assert_string_equal(f.last, "three");
    assert_int_equal(f.nulls, 0);

    pg_redis_free(sub);     /* the subscription's callback hears the end once */
    assert_int_equal(f.nulls, 1);
    assert_int_equal(a.calls, 0);
    assert_int_equal(sev.downs, 0);

    run_for(100);
    publish(pub, "pg-link-chan", "after", 0);
    assert_int_equal(f.messages, 3);
    pg_redis_free(pub);
}

static void test_restart(void **state)
{
    (void)state;
    NEED_SERVER();
    link_events cev = {0}, sev = {0};
    feed f = {.want = 1};
    pg_redis *ctl = link_up("control", &cev);
    pg_redis *sub = link_up("feed", &sev);
    sev.sub_again = sub;            /* on_up subscribes from now on */
    sev.channel = "pg-link-restart";
    sev.feed = &f;
    assert_int_equal(pg_redis_subscribe(sub, sev.channel, on_feed, &f), 0);
    assert_true(run_until(&f.confirmed, WAIT_MS));
    publish(ctl, sev.channel, "before", 1);
    assert_true(run_until(&f.got_want, WAIT_MS));

    /* A command still out when the server goes gets NULL. */
    answer blocked = {0};
    const char *blpop[] = {"BLPOP", "pg-link-nothing", "30"};
    assert_int_equal(pg_redis_argv(ctl, on_answer, &blocked, 3, blpop, NULL), 0);
    run_for(50);

    server_stop();
    if (!run_until(&cev.down_seen, WAIT_MS) || !run_until(&sev.down_seen, WAIT_MS))
        fail_msg("on_down not called within %d ms of the server stopping", WAIT_MS);
    assert_true(blocked.done);
    assert_int_equal(blocked.nulls, 1);
    assert_int_equal(f.nulls, 1);       /* the subscription ended, once */
    assert_false(pg_redis_up(ctl));
    assert_false(pg_redis_up(sub));
    answer a = {0};
    const char *ping[] = {"PING"};
    assert_int_equal(pg_redis_argv(ctl, on_answer, &a, 1, ping, NULL), -1);

    run_for(500);                       /* a few failed attempts */
    cev.up_seen = sev.up_seen = false;
    f.confirmed = false;
    server_start();
    if (!run_until(&cev.up_seen, RESTART_WAIT_MS) || !run_until(&sev.up_seen, RESTART_WAIT_MS))
        fail_msg("links not back within %d ms of the restart", RESTART_WAIT_MS);
    printf("restart: control %s, feed %s (U up, D down)\n", cev.order, sev.order);
    assert_int_equal(cev.ups, 2);
    assert_int_equal(sev.ups, 2);
    assert_true(cev.downs >= 1);
    assert_int_equal(cev.order[0], 'U');
    assert_int_equal(cev.order[1], 'D');
    assert_int_equal(cev.order[strlen(cev.order) - 1], 'U');

    command(ctl, &a, 1, ping, NULL);
    assert_string_equal(a.str, "PONG");
    assert_true(run_until(&f.confirmed, WAIT_MS));
    f.got_want = false;
    f.want = f.messages + 1;
    publish(ctl, sev.channel, "after", 1);
    assert_true(run_until(&f.got_want, WAIT_MS));
    assert_string_equal(f.last, "after");

    pg_redis_free(sub);
    assert_int_equal(f.nulls, 2);
    pg_redis_free(ctl);
    assert_int_equal(blocked.calls, 1);
    assert_int_equal(a.calls, 1);
}

static void test_free_pending(void **state)
{
    (void)state;
    NEED_SERVER();
    link_events ev = {0};
    pg_redis *r = link_up("reader", &ev);
    answer blocked = {0}, behind = {0}, more = {0};
    const char *blpop[] = {"BLPOP", "pg-link-nothing", "30"};
    const char *ping[] = {"PING"};
    assert_int_equal(pg_redis_argv(r, on_answer, &blocked, 3, blpop, NULL), 0);
    run_for(50);                        /* BLPOP is on the server, blocking */
    assert_int_equal(pg_redis_argv(r, on_answer, &behind, 1, ping, NULL), 0);
    assert_int_equal(pg_redis_argv(r, on_answer, &more, 1, ping, NULL), 0);
    run_for(50);
    assert_false(blocked.done);
    assert_false(behind.done);

    pg_redis_free(r);
    assert_int_equal(blocked.calls, 1);
    assert_int_equal(blocked.nulls, 1);
    assert_int_equal(behind.nulls, 1);
    assert_int_equal(more.nulls, 1);
    assert_int_equal(ev.downs, 0);
    run_for(100);                       /* nothing fires for the freed link */
    assert_int_equal(blocked.calls, 1);
    assert_int_equal(ev.ups, 1);
}


/* ------------------------------------------------------------ with sentinels */

#define NEED_SENTINELS()                                               \
    do {                                                               \
        NEED_SERVER();                                                 \
        if (pid_s <= 0) {                                              \
            printf("no sentinel set-up: test skipped\n");              \
            skip();                                                    \
        }                                                              \
    } while (0)

static void test_sentinel_finds_primary(void **state)
{
    (void)state;
    NEED_SENTINELS();
    int dead = free_port();
    char list[128];
    /* a dead port, a server that is no sentinel (it refuses the command), the sentinel */
    snprintf(list, sizeof(list), "127.0.0.1:%d, 127.0.0.1:%d ,127.0.0.1:%d", dead, port, port_s);
    link_events ev = {0};
    pg_redis *r = sentinel_link("control", &ev, list);
    assert_string_equal(pg_redis_server(r), "");
    if (!run_until(&ev.up_seen, WAIT_MS))
        fail_msg("no primary found through %s within %d ms", list, WAIT_MS);
    assert_on(r, port_a);
    answer a;
    const char *set[] = {"SET", "pg-sentinel-key", "v"};
    command(r, &a, 3, set, NULL);
    assert_string_equal(a.str, "OK");
    assert_int_equal(ev.downs, 0);
    pg_redis_free(r);

    pg_redis_config none = {.sentinels = "127.0.0.1:1", .master_name = "", .base = base};
    assert_null(pg_redis_new(&none));   /* no master name */
    pg_redis_config bad = {.sentinels = "127.0.0.1", .master_name = MASTER, .base = base};
    assert_null(pg_redis_new(&bad));
}

/* Each answer leaves the link down (on_down, no on_up) and asked again. */
static void test_sentinel_answers_checked(void **state)
{
    (void)state;
    NEED_SENTINELS();
    static const char *const bad[] = {
        "*-1\r\n", "-ERR No such master with that name\r\n", "+OK\r\n", ":1\r\n",
        "$9\r\n127.0.0.1\r\n", "*0\r\n", "*2\r\n$9\r\n127.0.0.1\r\n:6379\r\n",
        "*2\r\n$9\r\n127.0.0.1\r\n$6\r\n999999\r\n", "*2\r\n$8\r\nbad host\r\n$4\r\n6379\r\n",
        "*3\r\n$9\r\n127.0.0.1\r\n$4\r\n6379\r\n$1\r\nx\r\n",
        "*2\r\n*1\r\n$1\r\na\r\n*1\r\n$1\r\nb\r\n",
        "-\x01\x02\r\n",
        "", NULL,   /* it closes the connection; it says nothing (the connect timeout) */
        NULL,       /* (replaced: it names the replica, whose ROLE is slave) */
    };
    size_t n = sizeof(bad) / sizeof(bad[0]);
    char list[32];
    snprintf(list, sizeof(list), "127.0.0.1:%d", fake.port);
    for (size_t i = 0; i < n; i++) {
        fake.answer = i == n - 1 ? names(port_b) : bad[i];
        fake.asked = 0;
        link_events ev = {0};
        pg_redis *r = sentinel_link("reader", &ev, list);
        if (!run_until(&ev.down_seen, WAIT_MS))
            fail_msg("answer %zu: no on_down within %d ms", i, WAIT_MS);
        assert_int_equal(ev.ups, 0);
        assert_false(pg_redis_up(r));
        assert_true(fake.asked >= 1 || (bad[i] && !*bad[i]));
        answer a = {0};
        const char *ping[] = {"PING"};
        assert_int_equal(pg_redis_argv(r, on_answer, &a, 1, ping, NULL), -1);
        pg_redis_free(r);
        assert_int_equal(a.calls, 0);
    }
    /* and the next good answer brings a link up after bad ones */
    fake.answer = "*0\r\n";
    link_events ev = {0};
    pg_redis *r = sentinel_link("reader", &ev, list);
    assert_true(run_until(&ev.down_seen, WAIT_MS));
    fake.answer = names(port);
    if (!run_until(&ev.up_seen, RESTART_WAIT_MS))
        fail_msg("no on_up after a good answer within %d ms", RESTART_WAIT_MS);
    assert_on(r, port);
    pg_redis_free(r);
}

/* Messages on +switch-master: malformed ones and other masters' change
 * nothing; ours moves the link at once. */
static void test_sentinel_switch_message(void **state)
{
    (void)state;
    NEED_SENTINELS();
    char list[32];
    snprintf(list, sizeof(list), "127.0.0.1:%d", fake.port);
    fake.answer = names(port);
    link_events ev = {.want_ups = 2};
    pg_redis *r = sentinel_link("control", &ev, list);
    assert_true(run_until(&ev.up_seen, WAIT_MS));
    assert_on(r, port);
    for (int i = 0; i < WAIT_MS / 10 && fake_subscribers() == 0; i++)
        run_for(10);
    assert_int_equal(fake_subscribers(), 1);    /* the link's watch */

    char text[256];
    static const char *const junk[] = {
        "pgtest", "pgtest 127.0.0.1 1 127.0.0.1", "pgtest 127.0.0.1 1 127.0.0.1 0",
        "pgtest  127.0.0.1 1 127.0.0.1 2", "pgtest 127.0.0.1 1 bad\x01host 2",
        "pgtest 127.0.0.1 1 127.0.0.1 2 3",
    };
    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++)
        fake_publish(junk[i]);
    snprintf(text, sizeof(text), "other 127.0.0.1 %d 127.0.0.1 %d", port, port_a);
    fake_publish(text);
    fake_send_raw("*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n:12\r\n");
    fake_send_raw("*2\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n");
    run_for(300);
    assert_int_equal(ev.downs, 0);
    assert_on(r, port);

    fake.asked = 0;
    snprintf(text, sizeof(text), "%s 127.0.0.1 %d 127.0.0.1 %d", MASTER, port, port_a);
    fake_publish(text);
    if (!run_until(&ev.got_ups, WAIT_MS))
        fail_msg("the link did not move on +switch-master within %d ms", WAIT_MS);
    assert_int_equal(ev.downs, 1);
    assert_on(r, port_a);
    assert_int_equal(fake.asked, 0);            /* went straight there */
    answer a;
    const char *ping[] = {"PING"};
    command(r, &a, 1, ping, NULL);
    assert_string_equal(a.str, "PONG");
    run_for(200);
    fake_publish(text);                         /* the same again: already there */
    run_for(300);
    assert_int_equal(ev.downs, 1);
    pg_redis_free(r);
}

/* The server is demoted under the link: READONLY reaches the callback, then
 * the link asks again and moves. */
static void test_sentinel_readonly(void **state)
{
    (void)state;
    NEED_SENTINELS();
    char list[32], yport[16];
    snprintf(list, sizeof(list), "127.0.0.1:%d", fake.port);
    snprintf(yport, sizeof(yport), "%d", port_y);
    fake.answer = names(port);
    link_events ev = {.want_ups = 2};
    pg_redis *r = sentinel_link("control", &ev, list);
    assert_true(run_until(&ev.up_seen, WAIT_MS));
    assert_on(r, port);

    redisReply *rep = blocking(port, "REPLICAOF 127.0.0.1 %s", yport);
    assert_non_null(rep);
    freeReplyObject(rep);
    fake.answer = names(port_y);
    answer a;
    const char *set[] = {"SET", "pg-readonly", "v"};
    command(r, &a, 3, set, NULL);
    assert_int_equal(a.type, REDIS_REPLY_ERROR);
    assert_memory_equal(a.str, "READONLY", 8);
    if (!run_until(&ev.got_ups, WAIT_MS))
        fail_msg("the link did not move after READONLY within %d ms", WAIT_MS);
    assert_int_equal(ev.downs, 1);
    assert_on(r, port_y);
    command(r, &a, 3, set, NULL);
    assert_string_equal(a.str, "OK");
    pg_redis_free(r);
    rep = blocking(port, "REPLICAOF NO ONE");
    assert_non_null(rep);
    freeReplyObject(rep);
}

/* Until the sentinel knows the replica as a good candidate. */
static void wait_replica_known(void)
{
    for (int i = 0; i < 150; i++) {     /* 15 s */
        redisReply *r = blocking(port_s, "SENTINEL replicas %s", MASTER);
        bool good = reply_has(r, "master-link-status") && reply_has(r, "ok") &&
                    !reply_has(r, "disconnected") && !reply_has(r, "s_down");
        if (r)
            freeReplyObject(r);
        if (good)
            return;
        sleep_ms(100);
    }
    fail_msg("the sentinel does not list the replica as good after 15 s");
}

static void test_sentinel_failover(void **state)
{
    (void)state;
    NEED_SENTINELS();
    wait_replica_known();
    char list[64];
    snprintf(list, sizeof(list), "127.0.0.1:%d", port_s);
    link_events cev = {.want_ups = 2}, sev = {.want_ups = 2};
    feed f = {.want = 1};
    pg_redis *ctl = sentinel_link("control", &cev, list);
    pg_redis *sub = sentinel_link("feed", &sev, list);
    sev.sub_again = sub;
    sev.channel = "pg-link-failover";
    sev.feed = &f;
    if (!run_until(&cev.up_seen, WAIT_MS) || !run_until(&sev.up_seen, WAIT_MS))
        fail_msg("links not up within %d ms", WAIT_MS);
    assert_on(ctl, port_a);
    assert_on(sub, port_a);
    assert_true(run_until(&f.confirmed, WAIT_MS));

    uint64_t t0 = pg_now_ms();
    bool asked = false;
    for (int i = 0; i < 150 && !asked; i++) {   /* NOGOODSLAVE at first: retried 15 s */
        asked = blocking_has(port_s, "OK", "SENTINEL FAILOVER %s", MASTER);
        if (!asked)
            sleep_ms(100);
    }
    assert_true(asked);
    if (!run_until(&cev.got_ups, FAILOVER_WAIT_MS) || !run_until(&sev.got_ups, FAILOVER_WAIT_MS))
        fail_msg("links did not follow the failover within %d ms (%s, %s)", FAILOVER_WAIT_MS,
                 cev.order, sev.order);
    printf("failover: links on the promoted replica %llu ms after SENTINEL FAILOVER "
           "(control %s, feed %s)\n", (unsigned long long)(pg_now_ms() - t0), cev.order,
           sev.order);
    assert_on(ctl, port_b);
    assert_on(sub, port_b);
    assert_true(run_until(&f.confirmed, WAIT_MS));
    answer a;
    const char *set[] = {"SET", "pg-after-failover", "v"};
    command(ctl, &a, 3, set, NULL);
    assert_string_equal(a.str, "OK");
    f.got_want = false;
    f.want = f.messages + 1;
    publish(ctl, sev.channel, "after failover", 1);
    assert_true(run_until(&f.got_want, WAIT_MS));
    pg_redis_free(sub);
    pg_redis_free(ctl);
}

/* ------------------------------------------------------------ setup */

static int write_sentinel_conf(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "port %d\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir %s/s\n"
            "sentinel monitor %s 127.0.0.1 %d 1\n"
            "sentinel down-after-milliseconds %s 1000\n"
            "sentinel failover-timeout %s 5000\n",
            port_s, dir, MASTER, port_a, MASTER, MASTER);
    return fclose(f);
}

/* Until A lists its replica as online, so the sentinel's first look finds it. */
static void wait_replica_online(void)
{
    for (int i = 0; i < 100; i++) {
        if (blocking_has(port_a, "slave0:", "INFO %s", "replication"))
            return;
        sleep_ms(100);
    }
    fail_msg("the replica did not connect to the primary within 10 s");
}

/* Primary A, replica B, sentinel S watching A as MASTER, standalone Y. */
static int sentinels_setup(void)
{
    port_a = free_port();
    port_b = free_port();
    port_s = free_port();
    port_y = free_port();
    char a[16], sconf[160], sdir[128];
    snprintf(a, sizeof(a), "%d", port_a);
    pid_a = plain_server(port_a, "a", NULL);
    pid_b = plain_server(port_b, "b", a);
    pid_y = plain_server(port_y, "y", NULL);
    wait_replica_online();
    snprintf(sdir, sizeof(sdir), "%s/s", dir);
    snprintf(sconf, sizeof(sconf), "%s/sentinel.conf", sdir);
    mkdir(sdir, 0700);
    if (write_sentinel_conf(sconf) < 0)
        return -1;
    const char *args[] = {sconf, "--sentinel", NULL};
    pid_s = spawn_on(port_s, args);
    fake_start();
    return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int group_setup(void **state)
{
    (void)state;
    alarm(TEST_TIMEOUT_S);
    signal(SIGPIPE, SIG_IGN);
    base = event_base_new();
    if (!base)
        return -1;
    ticker = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 10000};     /* the loop wakes every 10 ms */
    if (!ticker || event_add(ticker, &tv) < 0)
        return -1;
    if (find_on_path("redis-server", server_path, sizeof(server_path)) < 0) {
        printf("redis-server is not on PATH: the redis_link tests are skipped\n");
        return 0;
    }
    snprintf(dir, sizeof(dir), "/tmp/pg-redis-link-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    port = free_port();
    if (port <= 0)
        return -1;
    server_start();
    return sentinels_setup();
}

static int group_teardown(void **state)
{
    (void)state;
    server_stop();
    fake_stop();
    stop_pid(&pid_s);
    stop_pid(&pid_b);
    stop_pid(&pid_a);
    stop_pid(&pid_y);
    if (dir[0])
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    if (ticker)
        event_free(ticker);
    if (base)
        event_base_free(base);
    alarm(0);
    return 0;
}

int main(void)
{
    pg_log_set_level(PG_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_subscribe),
        cmocka_unit_test(test_restart),
        cmocka_unit_test(test_free_pending),
        cmocka_unit_test(test_sentinel_finds_primary),
        cmocka_unit_test(test_sentinel_answers_checked),
        cmocka_unit_test(test_sentinel_switch_message),
        cmocka_unit_test(test_sentinel_readonly),
        cmocka_unit_test(test_sentinel_failover),
    };
    return cmocka_run_group_tests_name("redis_link", tests, group_setup, group_teardown);
}

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
 * and a subscription pending (their callbacks get NULL once). */
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

#include "log.h"
#include "redis_link.h"
#include "timer.h"

#define TEST_TIMEOUT_S 120
#define WAIT_MS 5000            /* for anything that should happen at once */
#define RESTART_WAIT_MS 15000   /* reconnect backoff is capped at 5 s */

static char server_path[4096];  /* "" : not on PATH */
static char dir[64];
static int port;
static pid_t server_pid;
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

/* PING answered with a blocking hiredis connection. */
static bool server_answers(void)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
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

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void server_start(void)
{
    char port_s[16];
    snprintf(port_s, sizeof(port_s), "%d", port);
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
        execl(server_path, server_path, "--port", port_s, "--bind", "127.0.0.1", "--dir", dir,
              "--save", "", "--appendonly", "no", "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    server_pid = pid;
    for (int i = 0; i < 100; i++) {     /* 10 s */
        if (server_answers())
            return;
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            server_pid = 0;
            fail_msg("redis-server exited at start (port %d)", port);
        }
        sleep_ms(100);
    }
    fail_msg("redis-server does not answer on port %d after 10 s", port);
}

/* SIGTERM to the server we started, SIGKILL after 5 s; reaps it. */
static void server_stop(void)
{
    if (server_pid <= 0)
        return;
    pid_t pid = server_pid;
    server_pid = 0;
    kill(pid, SIGTERM);
    for (int i = 0; i < 50; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        sleep_ms(100);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
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

/* ------------------------------------------------------------ callbacks */

typedef struct {
    int ups, downs;
    bool up_seen, down_seen;
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

/* ------------------------------------------------------------ setup */

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
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    server_stop();
    if (dir[0]) {
        char path[128];
        snprintf(path, sizeof(path), "%s/dump.rdb", dir);
        unlink(path);
        rmdir(dir);
    }
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
    };
    return cmocka_run_group_tests_name("redis_link", tests, group_setup, group_teardown);
}

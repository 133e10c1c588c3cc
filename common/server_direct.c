/* server_direct.c - listeners whose connections the workers serve themselves
 * (Swoole's SWOOLE_BASE mode, for one listener).
 *
 * On a direct listener no reactor thread stands between the socket and the
 * worker: every worker accepts on the listening socket it inherited, and
 * reads, frames and writes its own connections in its own loop.  A request
 * and its reply each cross one process less, which is what a daemon of a few
 * busy links (the proxy) wants.  The price is the master's promise: a direct
 * connection lives and dies with its worker (a crash, a reload, max_request),
 * so only peers that reconnect and own their retries belong on one.  The
 * idle check (heartbeat_check_interval) does not apply to them.
 *
 * Session ids of direct connections have PG_DIRECT_SESSION_BIT set and
 * carry their worker's id (server_internal.h), so pg_server_send knows at
 * once whose a session is: its own it writes, another worker's it hands to
 * that worker over their pipe (one hop, as a reactor's session costs).
 * Framing is the listener's (frame.h); protocol hooks are for the reactor's
 * connections only.
 *
 * Freeing: a connection that goes is only marked, and freed (and its
 * on_close run) when the loop pass ends, so a callback is never re-entered
 * and never sees a connection vanish under it, as with the reactor's.
 *
 * Closing (pg_server_close) is the reactor's too: the output is written,
 * then FIN, then what the peer still sends is read and dropped until it
 * closes or PG_LINGER_S pass.  Closing a socket that holds unread input
 * sends RST, which a peer reads as an error, and which can destroy what was
 * written last before the peer reads it.  The worker hears of the close
 * (on_close) when the linger ends. */
#include "server_internal.h"

#include "idmap.h"
#include "log.h"
#include "timer.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#define GIVE_WAY_MS 5          /* how long a busier worker leaves a connection to the others */
#define FD_LIMIT_PAUSE_MS 100  /* out of file descriptors: try again after */

typedef struct direct_conn direct_conn;

struct direct_conn {
    pg_direct *d;
    pg_session_id session;
    struct bufferevent *bev;
    int listener;
    int closing;           /* no more input taken; lingers once the output is written */
    int dead;
    uint64_t linger_until; /* pg_now_ms(): lingering (FIN sent) until then; 0: not */
    size_t need;           /* input bytes needed before splitting again (frame.h) */
    size_t searched;
    size_t kept;           /* input left unconsumed by the last split (counted) */
    direct_conn *prev, *next;
    direct_conn *next_dead;
};

typedef struct {
    pg_direct *d;
    int listener;
    int gave_way;          /* the last wake-up was left to the others */
    pg_ratelog fd_limit_log;
} direct_listener;

struct pg_direct {
    pg_server *s;
    struct event_base *base;
    direct_listener listeners[PG_SERVER_MAX_LISTENERS];
    struct event *readable[PG_SERVER_MAX_LISTENERS];   /* a listening socket to accept on */
    struct event *resume[PG_SERVER_MAX_LISTENERS];     /* ends a pause in accepting */
    pg_idmap *sessions;
    direct_conn *conns;
    direct_conn *dead;     /* dropped: freed when the loop pass ends */
    struct event *free_dead_ev;
    uint32_t seq;
};

/* ---- closing ---- */

static void conn_free(direct_conn *c, int tell_worker)
{
    pg_direct *d = c->d;
    pg_server *s = d->s;
    pg_idmap_remove(d->sessions, c->session);
    if (c->prev)
        c->prev->next = c->next;
    else
        d->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    bufferevent_free(c->bev);
    atomic_fetch_add(&s->stats->closed, 1);
    atomic_fetch_sub(&s->stats->connections, 1);
    atomic_fetch_sub(&s->stats->workers[s->worker_id].direct_connections[c->listener], 1);
    pg_session_id session = c->session;
    int listener = c->listener;
    free(c);
    if (tell_worker && s->cb.on_close)
        s->cb.on_close(s, session, listener);
}

static void conn_drop(direct_conn *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    c->next_dead = c->d->dead;
    c->d->dead = c;
    if (!c->next_dead)
        event_active(c->d->free_dead_ev, EV_TIMEOUT, 0);
}

static void free_dead(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pg_direct *d = arg;
    while (d->dead) {
        direct_conn *c = d->dead;
        d->dead = c->next_dead;
        conn_free(c, 1);
    }
}

/* ---- reading ---- */

static int emit_packet(void *arg, const char *packet, size_t len)
{
    direct_conn *c = arg;
    pg_server *s = c->d->s;
    atomic_fetch_add_explicit(&s->stats->packets_in, 1, memory_order_relaxed);
    if (s->cb.on_receive)
        s->cb.on_receive(s, c->session, c->listener, packet, len);
    pg_worker_count_handled(s);
    return c->dead || c->closing;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    direct_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    if (len < c->need || c->closing || c->dead)
        return;
    const pg_listener *l = &c->d->s->listeners[c->listener];
    atomic_fetch_add_explicit(&c->d->s->stats->bytes_in, len - c->kept, memory_order_relaxed);
    c->kept = len;
    const char *data = (const char *)evbuffer_pullup(in, -1);
    ssize_t used = data ? pg_frame_split_resume(&l->opts.frame, data, len, emit_packet, c,
                                                &c->need, &c->searched)
                        : -1;
    if (used < 0) {
        pg_warn("session %llx: packet over package_max_length %zu; closing",
                (unsigned long long)c->session, l->opts.frame.max_length);
        conn_drop(c);
        return;
    }
    evbuffer_drain(in, (size_t)used);
    c->kept = len - (size_t)used;
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    direct_conn *c = arg;
    if (what & BEV_EVENT_ERROR)
        pg_debug("session %llx: %s", (unsigned long long)c->session, strerror(errno));
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        conn_drop(c);
}

/* Input after FIN: dropped, until EOF, an error or linger_until. */
static void on_linger_read(struct bufferevent *bev, void *arg)
{
    direct_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    if (pg_now_ms() >= c->linger_until)
        conn_drop(c);
}

/* The output is written: FIN, and read until the peer closes too. */
static void conn_linger(direct_conn *c)
{
    if (shutdown(bufferevent_getfd(c->bev), SHUT_WR) < 0) {
        conn_drop(c);
        return;
    }
    c->linger_until = pg_now_ms() + PG_LINGER_S * 1000;
    struct timeval quiet = {PG_LINGER_S, 0};
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    bufferevent_setcb(c->bev, on_linger_read, NULL, on_event, c);
    bufferevent_set_timeouts(c->bev, &quiet, NULL);
    if (bufferevent_enable(c->bev, EV_READ) < 0)
        conn_drop(c);
}

/* pg_server_close: the output is written, the connection lingers. */
static void on_drained(struct bufferevent *bev, void *arg)
{
    (void)bev;
    direct_conn *c = arg;
    if (c->closing && !c->linger_until && !c->dead)
        conn_linger(c);
}

/* ---- accepting ---- */

static pg_session_id new_session(pg_direct *d)
{
    pg_server *s = d->s;
    pg_session_id session;
    do {
        uint64_t counter = PG_DIRECT_SESSION_BIT |
                           ((uint64_t)s->worker_id << PG_DIRECT_SEQ_BITS) |
                           (++d->seq & ((UINT32_C(1) << PG_DIRECT_SEQ_BITS) - 1));
        session = ((uint64_t)s->generation << PG_SESSION_COUNTER_BITS) | counter;
    } while (pg_idmap_get(d->sessions, session));   /* after the counter wrapped */
    return session;
}

/* Takes an accepted connection into this worker's loop. */
static void take(pg_direct *d, int listener, int fd)
{
    pg_server *s = d->s;
    if (pg_listener_at_limit(s, listener)) {
        atomic_fetch_add(&s->stats->refused, 1);
        close(fd);
        return;
    }
    pg_session_id session = new_session(d);
    direct_conn *c = calloc(1, sizeof(*c));
    struct bufferevent *bev = bufferevent_socket_new(d->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c || !bev || pg_idmap_put(d->sessions, session, c) < 0) {
        pg_warn("out of memory accepting a connection; closed");
        free(c);
        if (bev)
            bufferevent_free(bev);
        else
            close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    *c = (direct_conn){.d = d, .session = session, .bev = bev, .listener = listener,
                       .next = d->conns};
    if (d->conns)
        d->conns->prev = c;
    d->conns = c;
    atomic_fetch_add(&s->stats->connections, 1);
    atomic_fetch_add(&s->stats->workers[s->worker_id].direct_connections[listener], 1);
    atomic_fetch_add(&s->stats->accepted, 1);
    bufferevent_setcb(bev, on_read, NULL, on_event, c);
    bufferevent_enable(bev, EV_READ);
    char peer[80];
    pg_fd_peer(fd, peer, sizeof(peer));
    if (s->cb.on_connect)
        s->cb.on_connect(s, session, listener, peer);
}

/* Every worker is woken for a new connection and the first to run takes
 * it, which on a quiet machine is the same worker each time.  A worker
 * that holds more of the listener's connections than another running
 * worker lets that one take it, as nginx's accept_disabled does. */
static int another_holds_fewer(const pg_direct *d, int listener)
{
    const pg_server *s = d->s;
    long long mine = atomic_load(&s->stats->workers[s->worker_id].direct_connections[listener]);
    for (int i = 0; i < s->worker_num; i++) {
        const pg_shm_worker *w = &s->stats->workers[i];
        int state = atomic_load(&w->state);
        if (i != s->worker_id && atomic_load(&w->pid) > 0 && state != PG_WORKER_STOPPING &&
            state != PG_WORKER_EXITED && atomic_load(&w->direct_connections[listener]) < mine)
            return 1;
    }
    return 0;
}

static void pause_accepting(pg_direct *d, int listener, int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    event_del(d->readable[listener]);
    evtimer_add(d->resume[listener], &tv);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    direct_listener *dl = arg;
    event_add(dl->d->readable[dl->listener], NULL);
}

static void on_readable(evutil_socket_t listen_fd, short what, void *arg)
{
    (void)what;
    direct_listener *dl = arg;
    pg_direct *d = dl->d;
    int listener = dl->listener;
    for (int i = 0; i < PG_ACCEPTS_PER_CALL; i++) {
        if (!dl->gave_way && another_holds_fewer(d, listener)) {
            dl->gave_way = 1;   /* once: if no one took it meanwhile, this worker does */
            pause_accepting(d, listener, GIVE_WAY_MS);
            return;
        }
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        dl->gave_way = 0;
        if (fd >= 0) {
            take(d, listener, fd);
            continue;
        }
        if (errno == EMFILE || errno == ENFILE) {
            pg_log_limited(&dl->fd_limit_log, PG_LOG_WARN,
                           "accept: out of file descriptors; accepting paused");
            pause_accepting(d, listener, FD_LIMIT_PAUSE_MS);
        } else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
            pg_warn("accept: %s", strerror(errno));
        }
        return;
    }
}

int pg_direct_start(pg_server *s, struct event_base *base)
{
    pg_direct *d = calloc(1, sizeof(*d));
    if (!d)
        return -1;
    d->s = s;
    d->base = base;
    s->direct = d;
    d->sessions = pg_idmap_new(16);
    d->free_dead_ev = event_new(base, -1, 0, free_dead, d);
    if (!d->sessions || !d->free_dead_ev)
        return -1;
    for (int i = 0; i < s->listener_num; i++) {
        if (!s->listeners[i].opts.direct)
            continue;
        /* the socket is the other workers' too: every worker waits on it */
        direct_listener *dl = &d->listeners[i];
        *dl = (direct_listener){.d = d, .listener = i};
        d->readable[i] = event_new(base, s->listeners[i].fd, EV_READ | EV_PERSIST,
                                   on_readable, dl);
        d->resume[i] = evtimer_new(base, on_resume, dl);
        if (!d->readable[i] || !d->resume[i] || event_add(d->readable[i], NULL) < 0)
            return -1;
    }
    return 0;
}

/* ---- the worker's side ---- */

static direct_conn *find(pg_server *s, pg_session_id session)
{
    direct_conn *c = s->direct ? pg_idmap_get(s->direct->sessions, session) : NULL;
    return c && !c->dead && !c->closing ? c : NULL;
}

int pg_direct_send(pg_server *s, pg_session_id session, const void *data, size_t len)
{
    direct_conn *c = find(s, session);
    if (!c)
        return -1;
    const pg_frame_settings *fs = &s->listeners[c->listener].opts.frame;
    char header[PG_FRAME_LENGTH_HEADER];
    size_t header_len = pg_frame_encode_header(fs, len, header), trailer_len;
    const char *trailer = pg_frame_encode_trailer(fs, &trailer_len);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_add(out, header, header_len) < 0 || evbuffer_add(out, data, len) < 0 ||
        evbuffer_add(out, trailer, trailer_len) < 0) {
        conn_drop(c);
        return -1;
    }
    atomic_fetch_add_explicit(&s->stats->packets_out, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->stats->bytes_out, header_len + len + trailer_len,
                              memory_order_relaxed);
    size_t queued = evbuffer_get_length(out);
    if (queued > s->settings->buffer_output_size) {
        pg_warn("session %llx: %zu bytes of output queued, over buffer_output_size %zu; closing",
                (unsigned long long)session, queued, s->settings->buffer_output_size);
        conn_drop(c);
    }
    return 0;
}

int pg_direct_close(pg_server *s, pg_session_id session)
{
    direct_conn *c = find(s, session);
    if (!c)
        return -1;
    c->closing = 1;
    bufferevent_disable(c->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        conn_linger(c);
    else
        bufferevent_setcb(c->bev, on_read, on_drained, on_event, c);
    return 0;
}

static void free_accept_events(pg_direct *d)
{
    for (int i = 0; i < PG_SERVER_MAX_LISTENERS; i++) {
        if (d->readable[i])
            event_free(d->readable[i]);
        if (d->resume[i])
            event_free(d->resume[i]);
        d->readable[i] = d->resume[i] = NULL;
    }
}

/* This process's copy of the socket goes too, so that new connections are
 * refused once no process accepts, instead of waiting in a backlog (the
 * other workers go on accepting during a reload). */
void pg_direct_stop_accepting(pg_server *s)
{
    pg_direct *d = s->direct;
    if (d)
        free_accept_events(d);
    pg_direct_close_listeners(s);
    for (direct_conn *c = d ? d->conns : NULL; c; c = c->next)
        bufferevent_disable(c->bev, EV_READ);
}

void pg_direct_close_listeners(pg_server *s)
{
    for (int i = 0; i < s->listener_num; i++)
        if (s->listeners[i].opts.direct && s->listeners[i].fd >= 0) {
            close(s->listeners[i].fd);
            s->listeners[i].fd = -1;
        }
}

/* Writes what waits for c, waiting for room until deadline_ms. */
static void write_out(direct_conn *c, uint64_t deadline_ms)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    int fd = bufferevent_getfd(c->bev);
    evbuffer_unfreeze(out, 1);   /* a socket bufferevent writes its output only itself */
    while (evbuffer_get_length(out) > 0) {
        if (evbuffer_write(out, fd) < 0 && errno != EAGAIN && errno != EINTR)
            return;
        uint64_t now = pg_now_ms();
        if (evbuffer_get_length(out) == 0 || now >= deadline_ms)
            return;
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        poll(&pfd, 1, (int)(deadline_ms - now));
    }
}

void pg_direct_finish(pg_server *s, int timeout_ms)
{
    pg_direct *d = s->direct;
    uint64_t start = pg_now_ms(), deadline = start + (uint64_t)timeout_ms;
    size_t left = 0;
    if (d)
        d->dead = NULL;   /* every connection goes now */
    while (d && d->conns) {
        write_out(d->conns, deadline);
        left += evbuffer_get_length(bufferevent_get_output(d->conns->bev));
        conn_free(d->conns, 0);
    }
    if (left > 0)
        pg_warn("direct connections closed after %llu ms with %zu bytes of output unwritten "
                "(peers not reading)", (unsigned long long)(pg_now_ms() - start), left);
}

void pg_direct_free(pg_server *s)
{
    pg_direct *d = s->direct;
    if (!d)
        return;
    d->dead = NULL;
    while (d->conns)
        conn_free(d->conns, 0);
    if (d->free_dead_ev)
        event_free(d->free_dead_ev);
    free_accept_events(d);
    if (d->sessions)
        pg_idmap_free(d->sessions);
    free(d);
    s->direct = NULL;
}

void pg_direct_forget_worker(pg_server *s, int worker_id)
{
    pg_shm_worker *w = &s->stats->workers[worker_id];
    for (int i = 0; i < s->listener_num; i++) {
        long long n = atomic_exchange(&w->direct_connections[i], 0);
        if (n <= 0)
            continue;
        atomic_fetch_sub(&s->stats->connections, (uint64_t)n);
        atomic_fetch_add(&s->stats->closed, (uint64_t)n);
    }
}

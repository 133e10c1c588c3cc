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
 * and never sees a connection vanish under it, as with the reactor's. */
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
#include <event2/listener.h>

typedef struct direct_conn direct_conn;

struct direct_conn {
    pg_direct *d;
    pg_session_id session;
    struct bufferevent *bev;
    int listener;
    int closing;           /* no more reads; closed once the output is written */
    int dead;
    size_t need;           /* input bytes needed before splitting again (frame.h) */
    size_t searched;
    size_t kept;           /* input left unconsumed by the last split (counted) */
    direct_conn *prev, *next;
    direct_conn *next_dead;
};

struct pg_direct {
    pg_server *s;
    struct evconnlistener *accepting[PG_SERVER_MAX_LISTENERS];
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
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        conn_drop(c);
}

/* pg_server_close: the output is written, the connection goes. */
static void on_drained(struct bufferevent *bev, void *arg)
{
    (void)bev;
    direct_conn *c = arg;
    if (c->closing)
        conn_drop(c);
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

static void on_accept(struct evconnlistener *el, evutil_socket_t fd, struct sockaddr *addr,
                      int socklen, void *arg)
{
    (void)addr;
    (void)socklen;
    pg_direct *d = arg;
    pg_server *s = d->s;
    int listener = 0;
    while (listener < s->listener_num && d->accepting[listener] != el)
        listener++;
    if (pg_listener_at_limit(s, listener)) {
        atomic_fetch_add(&s->stats->refused, 1);
        close(fd);
        return;
    }
    pg_session_id session = new_session(d);
    direct_conn *c = calloc(1, sizeof(*c));
    struct bufferevent *bev = bufferevent_socket_new(evconnlistener_get_base(el), fd,
                                                     BEV_OPT_CLOSE_ON_FREE);
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

int pg_direct_start(pg_server *s, struct event_base *base)
{
    pg_direct *d = calloc(1, sizeof(*d));
    if (!d)
        return -1;
    d->s = s;
    s->direct = d;
    d->sessions = pg_idmap_new(16);
    d->free_dead_ev = event_new(base, -1, 0, free_dead, d);
    if (!d->sessions || !d->free_dead_ev)
        return -1;
    for (int i = 0; i < s->listener_num; i++) {
        if (!s->listeners[i].opts.direct)
            continue;
        /* not LEV_OPT_CLOSE_ON_FREE: the socket is the other workers' too;
         * backlog 0: it listens already, with the server's backlog */
        d->accepting[i] = evconnlistener_new(base, on_accept, d, 0, 0, s->listeners[i].fd);
        if (!d->accepting[i])
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
        conn_drop(c);
    else
        bufferevent_setcb(c->bev, on_read, on_drained, on_event, c);
    return 0;
}

/* This process's copy of the socket goes too, so that new connections are
 * refused once no process accepts, instead of waiting in a backlog (the
 * other workers go on accepting during a reload). */
void pg_direct_stop_accepting(pg_server *s)
{
    pg_direct *d = s->direct;
    for (int i = 0; d && i < PG_SERVER_MAX_LISTENERS; i++)
        if (d->accepting[i]) {
            evconnlistener_free(d->accepting[i]);
            d->accepting[i] = NULL;
        }
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
    for (int i = 0; i < PG_SERVER_MAX_LISTENERS; i++)
        if (d->accepting[i])
            evconnlistener_free(d->accepting[i]);
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

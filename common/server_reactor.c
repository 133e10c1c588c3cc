/* server_reactor.c - reactor threads: each runs one libevent loop that owns a
 * share of the connections.  It reads sockets, cuts packets (or lets a protocol
 * hook do it), hands them to workers over IPC channels, and writes what the
 * workers send back.  A connection keeps no buffer while idle: input is read
 * into the thread's buffer and only an incomplete packet is kept, output is
 * written at once and only what the socket refuses is queued. */
#include "server_internal.h"

#include "idmap.h"
#include "input.h"
#include "log.h"
#include "timer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#define READ_BUFFER_SIZE (64 * 1024)
#define STOP_DEADLINE_MS 5000

enum {
    CONN_CLOSING = 1,     /* no more reads; close once output is written */
    CONN_IN_CALLBACK = 2, /* a hook or the framing runs: free afterwards */
    CONN_DEAD = 4,        /* closed: freed when the callback returns, or in r->dead */
    CONN_WRITING = 8,     /* EV_WRITE is part of ev */
    CONN_BATCHED = 16,    /* output waits for the end of the loop pass (r->batched) */
    CONN_LISTED_DEAD = 32,/* in r->dead */
    CONN_LINGERING = 64,  /* output written and FIN sent: input is read and dropped */
    CONN_PROTO_ENDED = 128, /* the protocol's on_close has run */
};

struct pg_conn {
    struct event ev;
    pg_session_id session;
    pg_reactor *reactor;
    pg_conn *prev, *next;
    pg_input in;               /* an incomplete packet (input.h) */
    uint32_t last_active;      /* seconds, reactor clock */
    struct evbuffer *out;      /* NULL while nothing waits to be written */
    pg_conn *next_listed;      /* in r->batched (CONN_BATCHED) or r->dead (CONN_DEAD) */
    void *proto_state;
    int fd;
    uint8_t listener;
    uint8_t flags;
};

typedef struct {
    int fd;
    int listener;
} pending_accept;

struct pg_reactor {
    pg_server *s;
    int id;
    pthread_t thread;
    struct event_base *base;
    int wake_fd;
    struct event *wake_ev;
    pthread_mutex_t lock;
    pending_accept *queue;     /* guarded by lock */
    size_t queue_len, queue_cap;
    int stop_requested;        /* guarded by lock */

    pg_idmap *sessions;
    pg_conn *conns;
    uint64_t seq;
    int next_worker;
    int read_worker;        /* round_robin_reads: the worker of this read; -1 between reads */
    pg_ipc_channel **workers;
    int channels_open;
    struct event *heartbeat_ev, *deadline_ev;
    pg_conn *batched;          /* connections whose output waits for the pass's end */
    struct event *write_batched_ev;
    pg_conn *dead;             /* closed outside any callback: freed at the pass's end */
    struct event *free_dead_ev;
    int stopping;
    char *rbuf;
};

static void conn_on_event(evutil_socket_t fd, short what, void *arg);

static uint32_t reactor_clock(pg_reactor *r)
{
    struct timeval tv;
    event_base_gettimeofday_cached(r->base, &tv);
    return (uint32_t)tv.tv_sec;
}

/* ---- closing ----
 *
 * A connection is never freed under code that may still touch it: not while
 * a protocol hook or the framing runs (CONN_IN_CALLBACK; it is freed when
 * the outermost call returns), and not right away when it is closed from
 * anywhere else, such as a protocol's timer (it waits in r->dead until the
 * loop pass ends).  This is the engine's one guard against re-entry; the
 * protocols need none of their own (server.h, pg_protocol). */

/* Takes c out of the list at *head it is in (linked by next_listed). */
static void conn_unlist(pg_conn **head, pg_conn *c)
{
    for (pg_conn **p = head; *p; p = &(*p)->next_listed)
        if (*p == c) {
            *p = c->next_listed;
            break;
        }
    c->next_listed = NULL;
}

/* The session's worker learns that it is gone (not while stopping: the
 * workers are going too). */
static void conn_tell_closed(pg_conn *c)
{
    pg_reactor *r = c->reactor;
    if (r->stopping)
        return;
    pg_ipc_header h = {.id = c->session, .type = PG_IPC_CLOSE, .listener = c->listener};
    pg_ipc_send(r->workers[pg_session_home_worker(c->session, r->s->worker_num)], &h, NULL, 0);
}

/* The protocol frees its state: at the free, or once the connection
 * lingers (its state, such as a half-received message, is of no more use). */
static void conn_end_protocol(pg_conn *c)
{
    if (c->flags & CONN_PROTO_ENDED)
        return;
    c->flags |= CONN_PROTO_ENDED;
    const pg_protocol *proto = pg_conn_protocol(c);
    if (proto && proto->on_close)
        proto->on_close(c);
}

static void conn_free(pg_conn *c)
{
    pg_reactor *r = c->reactor;
    pg_server *s = r->s;
    conn_end_protocol(c);
    event_del(&c->ev);
    close(c->fd);
    pg_idmap_remove(r->sessions, c->session);
    if (c->prev)
        c->prev->next = c->next;
    else
        r->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->flags & CONN_BATCHED)
        conn_unlist(&r->batched, c);
    if (c->flags & CONN_LISTED_DEAD)
        conn_unlist(&r->dead, c);
    if (!(c->flags & CONN_LINGERING))
        conn_tell_closed(c);
    atomic_fetch_add(&s->stats->closed, 1);
    pg_conn_uncounted(s, c->listener);
    atomic_fetch_sub(&s->stats->sessions_per_reactor[r->id], 1);
    if (c->out)
        evbuffer_free(c->out);
    pg_input_free(&c->in);
    free(c);
    if (r->stopping && !r->conns && r->channels_open == 0)
        event_base_loopbreak(r->base);
}

/* The loop pass is over: the connections closed outside a callback go. */
static void free_dead(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pg_reactor *r = arg;
    while (r->dead)
        conn_free(r->dead);
}

/* Closes c without waiting for its output; see the note above on when it
 * is freed. */
static void conn_close_now(pg_conn *c)
{
    if (c->flags & CONN_DEAD)
        return;
    c->flags |= CONN_DEAD;
    if (c->flags & CONN_IN_CALLBACK)
        return;
    pg_reactor *r = c->reactor;
    event_del(&c->ev);
    if (c->flags & CONN_BATCHED)
        conn_unlist(&r->batched, c);
    c->flags = (uint8_t)((c->flags & ~CONN_BATCHED) | CONN_LISTED_DEAD);
    c->next_listed = r->dead;
    r->dead = c;
    if (!c->next_listed)
        event_active(r->free_dead_ev, EV_TIMEOUT, 0);
}

/* These two bracket every call into a hook or the framing, so that a
 * connection closed meanwhile is freed only afterwards. */
static uint8_t conn_enter(pg_conn *c)
{
    uint8_t outer = c->flags & CONN_IN_CALLBACK;
    c->flags |= CONN_IN_CALLBACK;
    return outer;
}

/* Returns -1 when the connection was closed (and is freed now). */
static int conn_leave(pg_conn *c, uint8_t outer)
{
    if (outer)
        return c->flags & CONN_DEAD ? -1 : 0;
    c->flags &= (uint8_t)~CONN_IN_CALLBACK;
    if (!(c->flags & CONN_DEAD)) {
        if (c->flags & CONN_LINGERING)
            conn_end_protocol(c);
        return 0;
    }
    conn_free(c);
    return -1;
}

static void conn_set_events(pg_conn *c, int writing)
{
    int reading = !(c->flags & CONN_CLOSING) || (c->flags & CONN_LINGERING);
    short what = (reading ? EV_READ : 0) | (writing ? EV_WRITE : 0) | EV_PERSIST;
    struct timeval linger = {PG_LINGER_S, 0};
    event_del(&c->ev);
    event_assign(&c->ev, c->reactor->base, c->fd, what, conn_on_event, c);
    event_add(&c->ev, c->flags & CONN_LINGERING ? &linger : NULL);
    c->flags = (uint8_t)(writing ? c->flags | CONN_WRITING : c->flags & ~CONN_WRITING);
}

/* The output is written: send FIN and read until the peer closes, for at
 * most PG_LINGER_S.  Closing a socket that still holds unread input makes the
 * kernel send RST, which can destroy the close frame (or HTTP error) just
 * written before the peer reads it: a browser that was sending while its
 * node stopped would see 1006 instead of 1001.  The worker learns of the
 * close now, the protocol frees its state, and the session takes no more
 * output. */
static void conn_linger(pg_conn *c)
{
    if (c->flags & (CONN_LINGERING | CONN_DEAD))
        return;
    if (shutdown(c->fd, SHUT_WR) < 0) {
        conn_close_now(c);
        return;
    }
    conn_tell_closed(c);
    c->flags |= CONN_CLOSING | CONN_LINGERING;
    c->last_active = reactor_clock(c->reactor);
    conn_set_events(c, 0);
    if (!(c->flags & CONN_IN_CALLBACK))
        conn_end_protocol(c);    /* else when the callback returns */
}

/* Input after FIN: dropped, until EOF, an error or PG_LINGER_S. */
static void conn_read_lingering(pg_conn *c, short what)
{
    pg_reactor *r = c->reactor;
    if (!(what & (EV_READ | EV_TIMEOUT)))
        return;
    ssize_t n = (what & EV_READ) ? read(c->fd, r->rbuf, READ_BUFFER_SIZE) : 0;
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0 || reactor_clock(r) - c->last_active >= PG_LINGER_S)
        conn_close_now(c);
}

void pg_conn_close(pg_conn *c, int graceful)
{
    if (c->flags & CONN_DEAD)
        return;
    if (!graceful) {
        conn_close_now(c);
        return;
    }
    c->flags |= CONN_CLOSING;
    if (c->out && evbuffer_get_length(c->out) > 0)
        conn_set_events(c, 1);
    else
        conn_linger(c);
}

/* ---- writing ---- */

static int conn_output_over_limit(pg_conn *c)
{
    size_t queued = evbuffer_get_length(c->out);
    if (queued <= c->reactor->s->settings->buffer_output_size)
        return 0;
    pg_warn("session %llx: %zu bytes of output queued, over buffer_output_size %zu; closing",
            (unsigned long long)c->session, queued, c->reactor->s->settings->buffer_output_size);
    conn_close_now(c);
    return 1;
}

static int conn_writev(pg_conn *c, struct iovec *iov, int n)
{
    if (c->flags & CONN_DEAD)
        return -1;
    pg_shm_stats *st = c->reactor->s->stats;
    if (!c->out || evbuffer_get_length(c->out) == 0) {
        ssize_t w = writev(c->fd, iov, n);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            pg_debug("session %llx: write: %s", (unsigned long long)c->session, strerror(errno));
            conn_close_now(c);
            return -1;
        }
        size_t done = w > 0 ? (size_t)w : 0;
        atomic_fetch_add(&st->bytes_out, done);
        for (; n > 0 && done >= iov->iov_len; n--, iov++)
            done -= iov->iov_len;
        if (n == 0)
            return 0;
        iov->iov_base = (char *)iov->iov_base + done;
        iov->iov_len -= done;
    }
    if (!c->out && !(c->out = evbuffer_new())) {
        conn_close_now(c);
        return -1;
    }
    for (int i = 0; i < n; i++)
        evbuffer_add(c->out, iov[i].iov_base, iov[i].iov_len);
    if (conn_output_over_limit(c))
        return -1;
    if (!(c->flags & CONN_WRITING))
        conn_set_events(c, 1);
    return 0;
}

int pg_conn_write(pg_conn *c, const void *data, size_t len)
{
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    return conn_writev(c, &iov, 1);
}

int pg_conn_writev(pg_conn *c, struct iovec *iov, int n)
{
    return conn_writev(c, iov, n);
}

static void conn_flush(pg_conn *c)
{
    int n = evbuffer_write(c->out, c->fd);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        conn_close_now(c);
        return;
    }
    if (n > 0)
        atomic_fetch_add(&c->reactor->s->stats->bytes_out, (uint64_t)n);
    if (evbuffer_get_length(c->out) > 0)
        return;
    evbuffer_free(c->out);
    c->out = NULL;
    if (c->flags & CONN_CLOSING)
        conn_linger(c);
    else
        conn_set_events(c, 0);
}

/* The loop pass is over: each batched connection's output in one write. */
static void write_batched(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pg_reactor *r = arg;
    while (r->batched) {
        pg_conn *c = r->batched;
        r->batched = c->next_listed;
        c->flags &= (uint8_t)~CONN_BATCHED;
        if ((c->flags & CONN_WRITING) || !c->out)
            continue;   /* waits for writability already */
        int n = evbuffer_write(c->out, c->fd);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            conn_close_now(c);
            continue;
        }
        if (n > 0)
            atomic_fetch_add(&r->s->stats->bytes_out, (uint64_t)n);
        if (evbuffer_get_length(c->out) > 0) {
            conn_set_events(c, 1);
        } else {
            evbuffer_free(c->out);
            c->out = NULL;
        }
    }
}

/* Queues a frame of a batch_output listener for write_batched. */
static void conn_batch(pg_conn *c, struct iovec *iov, int n)
{
    if (c->flags & CONN_DEAD)
        return;
    if (!c->out && !(c->out = evbuffer_new())) {
        conn_close_now(c);
        return;
    }
    for (int i = 0; i < n; i++)
        evbuffer_add(c->out, iov[i].iov_base, iov[i].iov_len);
    if (conn_output_over_limit(c) || (c->flags & (CONN_WRITING | CONN_BATCHED)))
        return;
    pg_reactor *r = c->reactor;
    c->flags |= CONN_BATCHED;
    c->next_listed = r->batched;
    r->batched = c;
    if (!c->next_listed)
        event_active(r->write_batched_ev, EV_TIMEOUT, 0);
}

/* A worker's data for a session, framed the way its listener frames. */
static void conn_send_from_worker(pg_conn *c, const char *data, size_t len)
{
    pg_listener *l = &c->reactor->s->listeners[c->listener];
    atomic_fetch_add(&c->reactor->s->stats->packets_out, 1);
    if (l->opts.protocol) {
        if (l->opts.protocol->on_send(c, data, len) < 0)
            conn_close_now(c);
        return;
    }
    char header[PG_FRAME_LENGTH_HEADER];
    size_t trailer_len;
    const char *trailer = pg_frame_encode_trailer(&l->opts.frame, &trailer_len);
    struct iovec iov[3];
    int n = 0;
    iov[n++] = (struct iovec){header, pg_frame_encode_header(&l->opts.frame, len, header)};
    iov[n++] = (struct iovec){(void *)data, len};
    iov[n++] = (struct iovec){(void *)trailer, trailer_len};
    if (l->opts.batch_output)
        conn_batch(c, iov, n);
    else
        conn_writev(c, iov, n);
}

/* ---- reading and dispatch ---- */

static int choose_worker(pg_reactor *r, pg_conn *c, const char *data, size_t len)
{
    pg_server *s = r->s;
    const pg_listen_options *opts = &s->listeners[c->listener].opts;
    int mode = opts->dispatch_mode;
    switch (mode ? mode : s->settings->dispatch_mode) {
    case PG_DISPATCH_ROUND_ROBIN:
        if (opts->prefer_worker) {
            int w = opts->prefer_worker(data, len, opts->prefer_worker_arg);
            if (w >= 0 && w < s->worker_num)
                return w;
        }
        if (r->read_worker >= 0 && opts->round_robin_reads)
            return r->read_worker;
        r->next_worker = (r->next_worker + 1) % s->worker_num;
        r->read_worker = r->next_worker;
        return r->next_worker;
    case PG_DISPATCH_IDLE:
        return pg_least_queued(s->stats->workers, s->worker_num);
    default:
        return pg_session_home_worker(c->session, s->worker_num);
    }
}

int pg_conn_dispatch(pg_conn *c, const char *data, size_t len)
{
    return pg_conn_dispatch_within(c, data, len, 0);
}

int pg_conn_dispatch_within(pg_conn *c, const char *data, size_t len, unsigned within_us)
{
    pg_reactor *r = c->reactor;
    pg_shm_stats *st = r->s->stats;
    int w = choose_worker(r, c, data, len);
    pg_ipc_header h = {.id = c->session, .type = PG_IPC_RECEIVE, .listener = c->listener};
    if (pg_ipc_channel_closed(r->workers[w])) {
        /* The workers are gone: the server is stopping. Keep the connection,
         * so it is closed properly (a protocol's goodbye) with the rest. */
        pg_debug("session %llx: packet dropped, the server is stopping", (unsigned long long)c->session);
        return 0;
    }
    atomic_fetch_add_explicit(&st->workers[w].queued, 1, memory_order_relaxed);
    if (pg_ipc_send_within(r->workers[w], &h, data, len, within_us) < 0) {
        pg_queued_done(&st->workers[w]);
        pg_error("session %llx: worker %d does not keep up; closing the connection",
                 (unsigned long long)c->session, w);
        conn_close_now(c);
        return -1;
    }
    atomic_fetch_add_explicit(&st->packets_in, 1, memory_order_relaxed);
    return 0;
}

static int emit_packet(void *arg, const char *packet, size_t len)
{
    pg_conn *c = arg;
    pg_conn_dispatch(c, packet, len);
    return (c->flags & (CONN_DEAD | CONN_CLOSING)) ? 1 : 0;
}

/* The consumer of a connection's input (input.h): its listener's protocol
 * hook, or the framing, which dispatches each packet. */
static ssize_t conn_consume(void *arg, const char *data, size_t len, pg_input_offer *offer)
{
    pg_conn *c = arg;
    pg_listener *l = &c->reactor->s->listeners[c->listener];
    ssize_t used;
    if (l->opts.protocol) {
        used = l->opts.protocol->on_data(c, data, len);
    } else {
        used = pg_frame_split_resume(&l->opts.frame, data, len, emit_packet, c, &offer->need,
                                     &offer->searched);
        if (used < 0)
            pg_warn("session %llx: packet over package_max_length %zu; closing",
                    (unsigned long long)c->session, l->opts.frame.max_length);
    }
    c->reactor->read_worker = -1;   /* the next read, of any connection, deals anew */
    offer->stop = (c->flags & (CONN_DEAD | CONN_CLOSING)) != 0;
    return used;
}

/* Offers a read to the consumer with what the connection kept; -1 when the
 * connection must close. */
static int conn_process(pg_conn *c, const char *data, size_t n)
{
    size_t limit = c->reactor->s->settings->package_max_length + 64 * 1024 + READ_BUFFER_SIZE;
    int rc = pg_input_feed(&c->in, data, n, limit, conn_consume, c);
    if (rc == PG_INPUT_TOO_LONG)
        pg_warn("session %llx: over %zu bytes without a complete packet; closing",
                (unsigned long long)c->session, limit);
    return rc < 0 ? -1 : 0;
}

static void conn_read(pg_conn *c)
{
    pg_reactor *r = c->reactor;
    ssize_t n = read(c->fd, r->rbuf, READ_BUFFER_SIZE);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        if (n < 0)
            pg_debug("session %llx: read: %s", (unsigned long long)c->session, strerror(errno));
        conn_close_now(c);
        return;
    }
    atomic_fetch_add_explicit(&r->s->stats->bytes_in, (uint64_t)n, memory_order_relaxed);
    c->last_active = reactor_clock(r);
    uint8_t outer = conn_enter(c);
    if (conn_process(c, r->rbuf, (size_t)n) < 0)
        conn_close_now(c);
    conn_leave(c, outer);
}

static void conn_on_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    pg_conn *c = arg;
    if (what & EV_WRITE) {
        uint8_t outer = conn_enter(c);
        conn_flush(c);
        if (conn_leave(c, outer) < 0)
            return;
    }
    if (c->flags & CONN_LINGERING)
        conn_read_lingering(c, what);
    else if ((what & EV_READ) && !(c->flags & CONN_CLOSING))
        conn_read(c);
}

/* ---- accepting ---- */

static void conn_open(pg_reactor *r, int fd, int listener)
{
    pg_server *s = r->s;
    pg_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        pg_conn_uncounted(s, listener);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    uint64_t counter = (r->seq++ * (uint64_t)s->reactor_num + (uint64_t)r->id) &
                       (PG_DIRECT_SESSION_BIT - 1);
    c->session = ((uint64_t)s->generation << PG_SESSION_COUNTER_BITS) | counter;
    c->reactor = r;
    c->fd = fd;
    c->listener = (uint8_t)listener;
    c->last_active = reactor_clock(r);
    c->next = r->conns;
    if (r->conns)
        r->conns->prev = c;
    r->conns = c;
    pg_idmap_put(r->sessions, c->session, c);
    atomic_fetch_add(&s->stats->sessions_per_reactor[r->id], 1);
    event_assign(&c->ev, r->base, fd, EV_READ | EV_PERSIST, conn_on_event, c);
    event_add(&c->ev, NULL);

    char peer[80];
    pg_conn_peer(c, peer, sizeof(peer));
    pg_ipc_header h = {.id = c->session, .type = PG_IPC_CONNECT, .listener = c->listener};
    pg_ipc_send(r->workers[pg_session_home_worker(c->session, s->worker_num)], &h, peer,
                strlen(peer) + 1);
    const pg_protocol *proto = pg_conn_protocol(c);
    if (proto && proto->on_open) {
        uint8_t outer = conn_enter(c);
        proto->on_open(c);
        conn_leave(c, outer);
    }
}

static void begin_stop(pg_reactor *r);

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    pg_reactor *r = arg;
    uint64_t value;
    if (read(fd, &value, sizeof(value)) < 0 && errno != EAGAIN)
        pg_warn("reactor %d: eventfd read: %s", r->id, strerror(errno));
    pthread_mutex_lock(&r->lock);
    pending_accept *q = r->queue;
    size_t n = r->queue_len;
    r->queue = NULL;
    r->queue_len = r->queue_cap = 0;
    int stop = r->stop_requested;
    pthread_mutex_unlock(&r->lock);
    for (size_t i = 0; i < n; i++) {
        if (r->stopping) {
            close(q[i].fd);
            pg_conn_uncounted(r->s, q[i].listener);
        } else {
            conn_open(r, q[i].fd, q[i].listener);
        }
    }
    free(q);
    if (stop && !r->stopping)
        begin_stop(r);
}

int pg_reactor_assign(pg_server *s, int fd, int listener)
{
    static int next;   /* main thread only */
    pg_reactor *r = &s->reactors[next];
    next = (next + 1) % s->reactor_num;
    pthread_mutex_lock(&r->lock);
    if (r->queue_len == r->queue_cap) {
        size_t cap = r->queue_cap ? r->queue_cap * 2 : 64;
        pending_accept *q = realloc(r->queue, cap * sizeof(*q));
        if (!q) {
            pthread_mutex_unlock(&r->lock);
            return -1;
        }
        r->queue = q;
        r->queue_cap = cap;
    }
    r->queue[r->queue_len++] = (pending_accept){fd, listener};
    pthread_mutex_unlock(&r->lock);
    uint64_t one = 1;
    return write(r->wake_fd, &one, sizeof(one)) == sizeof(one) ? 0 : -1;
}

/* ---- messages from workers ---- */

static void on_worker_message(pg_ipc_channel *ch, const pg_ipc_header *h, const char *data,
                              void *arg)
{
    (void)ch;
    pg_reactor *r = arg;
    pg_conn *c = pg_idmap_get(r->sessions, h->id);
    if (!c || (c->flags & (CONN_CLOSING | CONN_DEAD))) {
        pg_debug("session %llx is gone; message type %u dropped", (unsigned long long)h->id, h->type);
        return;
    }
    uint8_t outer = conn_enter(c);
    if (h->type == PG_IPC_SEND) {
        conn_send_from_worker(c, data, h->length);
    } else if (h->type == PG_IPC_SHUTDOWN) {
        const pg_protocol *proto = pg_conn_protocol(c);
        if (proto && proto->on_shutdown)
            proto->on_shutdown(c, data, h->length);
        if (!(c->flags & CONN_DEAD))
            pg_conn_close(c, 1);
    } else if (h->type == PG_IPC_PROBE) {
        const pg_protocol *proto = pg_conn_protocol(c);
        if (proto && proto->on_probe)
            proto->on_probe(c);
    } else {
        pg_warn("reactor %d: unexpected message type %u from a worker", r->id, h->type);
    }
    conn_leave(c, outer);
}

/* Once stopping and every worker is gone (what they sent is delivered),
 * close the connections after their output. */
static void close_when_drained(pg_reactor *r)
{
    if (r->stopping && r->channels_open == 0) {
        for (pg_conn *c = r->conns, *next; c; c = next) {
            next = c->next;
            if (c->flags & (CONN_DEAD | CONN_LINGERING))
                continue;   /* freed at the end of the pass, or closed already */
            const pg_protocol *proto = pg_conn_protocol(c);
            uint8_t outer = conn_enter(c);
            if (proto && proto->on_shutdown)
                proto->on_shutdown(c, NULL, 0);   /* the server is stopping */
            if (!(c->flags & CONN_DEAD))
                pg_conn_close(c, 1);
            conn_leave(c, outer);
        }
        if (!r->conns)
            event_base_loopbreak(r->base);
    }
}

static void on_worker_channel_closed(pg_ipc_channel *ch, void *arg)
{
    pg_reactor *r = arg;
    /* A stopping worker takes no more input, so what this reactor sent it
     * meanwhile (closes, packets) is left unread at its exit: expected then.
     * The master asks for the stop before the workers get SIGTERM. */
    if (pg_ipc_channel_reset(ch) && !r->s->stop_requested)
        pg_warn("reactor %d: ipc fd %d: the workers' side closed with messages unread", r->id,
                pg_ipc_channel_fd(ch));
    r->channels_open--;
    close_when_drained(r);
}

/* ---- heartbeat and stopping ---- */

static void on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pg_reactor *r = arg;
    uint32_t now = reactor_clock(r);
    uint32_t idle = (uint32_t)r->s->settings->heartbeat_idle_time;
    for (pg_conn *c = r->conns, *next; c; c = next) {
        next = c->next;
        if (now - c->last_active > idle) {
            pg_info("session %llx idle for over %u s; closing", (unsigned long long)c->session, idle);
            conn_close_now(c);
        }
    }
}

static void on_stop_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pg_reactor *r = arg;
    if (r->conns)
        pg_warn("reactor %d: closing connections whose output did not drain in time", r->id);
    while (r->conns)
        conn_free(r->conns);
    event_base_loopbreak(r->base);
}

static void begin_stop(pg_reactor *r)
{
    r->stopping = 1;
    struct timeval tv = {STOP_DEADLINE_MS / 1000, (STOP_DEADLINE_MS % 1000) * 1000};
    r->deadline_ev = evtimer_new(r->base, on_stop_deadline, r);
    evtimer_add(r->deadline_ev, &tv);
    /* Stop reading clients; keep reading workers until they are all gone. */
    for (pg_conn *c = r->conns; c; c = c->next) {
        if (c->flags & CONN_DEAD)
            continue;
        c->flags |= CONN_CLOSING;
        conn_set_events(c, (c->flags & CONN_WRITING) != 0);
    }
    close_when_drained(r);
}

static void *reactor_thread(void *arg)
{
    pg_reactor *r = arg;
    char role[32];
    snprintf(role, sizeof(role), "reactor %d", r->id);
    pg_log_set_role(role);
    pg_timer_bind(r->base);
    event_base_dispatch(r->base);
    pg_timer_bind(NULL);
    while (r->conns)
        conn_free(r->conns);
    return NULL;
}

int pg_reactors_create(pg_server *s)
{
    s->reactors = calloc((size_t)s->reactor_num, sizeof(pg_reactor));
    if (!s->reactors)
        return -1;
    for (int i = 0; i < s->reactor_num; i++) {
        pg_reactor *r = &s->reactors[i];
        r->s = s;
        r->id = i;
        r->read_worker = -1;
        pthread_mutex_init(&r->lock, NULL);
        r->base = event_base_new();
        r->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        r->sessions = pg_idmap_new(1024);
        r->rbuf = malloc(READ_BUFFER_SIZE);
        r->workers = calloc((size_t)s->worker_num, sizeof(*r->workers));
        if (!r->base || r->wake_fd < 0 || !r->sessions || !r->rbuf || !r->workers)
            return -1;
        r->wake_ev = event_new(r->base, r->wake_fd, EV_READ | EV_PERSIST, on_wake, r);
        r->write_batched_ev = event_new(r->base, -1, 0, write_batched, r);
        r->free_dead_ev = event_new(r->base, -1, 0, free_dead, r);
        if (!r->wake_ev || !r->write_batched_ev || !r->free_dead_ev)
            return -1;
        event_add(r->wake_ev, NULL);
        for (int w = 0; w < s->worker_num; w++) {
            int fd = s->reactor_ipc[i * s->worker_num + w][0];
            r->workers[w] = pg_ipc_channel_new(r->base, fd, s->ipc_max_message, on_worker_message,
                                               on_worker_channel_closed, r);
            if (!r->workers[w] || pg_ipc_channel_start(r->workers[w]) < 0)
                return -1;
            r->channels_open++;
        }
        if (s->settings->heartbeat_check_interval > 0) {
            struct timeval tv = {(time_t)s->settings->heartbeat_check_interval, 0};
            r->heartbeat_ev = event_new(r->base, -1, EV_PERSIST, on_heartbeat, r);
            event_add(r->heartbeat_ev, &tv);
        }
    }
    return 0;
}

int pg_reactors_start(pg_server *s)
{
    sigset_t all, old;
    sigfillset(&all);
    /* Reactor threads take no signals: the main thread handles them all. */
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = 0;
    for (int i = 0; i < s->reactor_num && rc == 0; i++)
        if (pthread_create(&s->reactors[i].thread, NULL, reactor_thread, &s->reactors[i]) != 0)
            rc = -1;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

void pg_reactors_stop(pg_server *s)
{
    for (int i = 0; i < s->reactor_num; i++) {
        pg_reactor *r = &s->reactors[i];
        pthread_mutex_lock(&r->lock);
        r->stop_requested = 1;
        pthread_mutex_unlock(&r->lock);
        uint64_t one = 1;
        if (write(r->wake_fd, &one, sizeof(one)) < 0)
            pg_warn("reactor %d: wake: %s", i, strerror(errno));
    }
    for (int i = 0; i < s->reactor_num; i++)
        if (s->reactors[i].thread)
            pthread_join(s->reactors[i].thread, NULL);
}

void pg_reactors_free(pg_server *s)
{
    if (!s->reactors)
        return;
    for (int i = 0; i < s->reactor_num; i++) {
        pg_reactor *r = &s->reactors[i];
        for (int w = 0; r->workers && w < s->worker_num; w++)
            pg_ipc_channel_free(r->workers[w]);
        free(r->workers);
        if (r->wake_ev)
            event_free(r->wake_ev);
        if (r->heartbeat_ev)
            event_free(r->heartbeat_ev);
        if (r->write_batched_ev)
            event_free(r->write_batched_ev);
        if (r->free_dead_ev)
            event_free(r->free_dead_ev);
        if (r->deadline_ev)
            event_free(r->deadline_ev);
        if (r->base)
            event_base_free(r->base);
        if (r->wake_fd >= 0)
            close(r->wake_fd);
        for (size_t q = 0; q < r->queue_len; q++)
            close(r->queue[q].fd);
        free(r->queue);
        pg_idmap_free(r->sessions);
        free(r->rbuf);
        pthread_mutex_destroy(&r->lock);
    }
    free(s->reactors);
    s->reactors = NULL;
}

/* ---- accessors for protocol hooks ---- */

pg_session_id pg_conn_session(const pg_conn *c) { return c->session; }
int pg_conn_listener(const pg_conn *c) { return c->listener; }
int pg_conn_reactor(const pg_conn *c) { return c->reactor->id; }
pg_server *pg_conn_server(const pg_conn *c) { return c->reactor->s; }

const pg_protocol *pg_conn_protocol(const pg_conn *c)
{
    return c->reactor->s->listeners[c->listener].opts.protocol;
}
void *pg_conn_get_state(const pg_conn *c) { return c->proto_state; }
void pg_conn_set_state(pg_conn *c, void *state) { c->proto_state = state; }

const char *pg_conn_peer(const pg_conn *c, char *buf, size_t len)
{
    return pg_fd_peer(c->fd, buf, len);
}

const char *pg_fd_peer(int fd, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
            port = ntohs(a->sin6_port);
        } else if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
            port = ntohs(a->sin_port);
        }
    }
    snprintf(buf, len, "%s:%d", ip, port);
    return buf;
}

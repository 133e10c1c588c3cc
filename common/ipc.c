/* ipc.c - chunked messages over SOCK_SEQPACKET socket pairs; see ipc.h. */
#include "ipc.h"
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <event2/event.h>

#define IPC_SOCKET_BUFFER (4 * 1024 * 1024)
#define IPC_DEFAULT_MAX_PENDING (64u * 1024 * 1024)
#define IPC_READS_PER_CALL 64
#define IPC_NO_DATAGRAM ((size_t)-1)

struct pg_ipc_channel {
    int fd;
    struct event_base *base;
    struct event *read_ev, *write_ev, *flush_ev;
    pg_ipc_message_fn on_message;
    pg_ipc_closed_fn on_closed;
    void *arg;
    size_t max_message, max_pending;
    int reading, want_reading, closed;
    int flush_scheduled;       /* flush_ev is active: a flush at the loop pass's end */
    int flush_timed;           /* flush_ev waits for a timeout (pg_ipc_send_within) */
    int reset;                 /* closed by ECONNRESET: the peer left ours unread */

    /* Outgoing queue: datagrams stored as [uint32 size][bytes]. */
    char *out;
    size_t out_len, out_cap, out_off;
    size_t open_datagram;      /* offset of the last datagram's size, if still growing */

    /* Incoming: one datagram, and the message being put together. */
    char *rbuf;
    pg_ipc_header cur;
    char *msg;                 /* NULL while skipping an oversize message */
    size_t msg_have;
    int in_message;
};

int pg_ipc_socketpair(int fds[2])
{
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0)
        return -1;
    int size = IPC_SOCKET_BUFFER;
    for (int i = 0; i < 2; i++) {
        /* Best effort: the kernel caps these at net.core.[rw]mem_max. */
        (void)setsockopt(fds[i], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
        (void)setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    }
    return 0;
}

static void channel_closed(pg_ipc_channel *ch)
{
    if (ch->closed)
        return;
    ch->closed = 1;
    event_del(ch->read_ev);
    event_del(ch->write_ev);
    ch->reading = 0;
    if (ch->on_closed)
        ch->on_closed(ch, ch->arg);
}

static void drop_partial(pg_ipc_channel *ch, const char *why)
{
    if (ch->in_message)
        pg_warn("ipc fd %d: dropping unfinished message type %u of %u bytes: %s",
                ch->fd, ch->cur.type, ch->cur.length, why);
    free(ch->msg);
    ch->msg = NULL;
    ch->msg_have = 0;
    ch->in_message = 0;
}

static void handle_record(pg_ipc_channel *ch, const pg_ipc_header *h, const char *body)
{
    if (h->flags & PG_IPC_BEGIN) {
        if (ch->in_message)
            drop_partial(ch, "a new message began (sender restarted?)");
        if (h->length > ch->max_message) {
            pg_error("ipc fd %d: message type %u of %u bytes is over the limit of %zu, dropped",
                     ch->fd, h->type, h->length, ch->max_message);
        } else if ((h->flags & PG_IPC_END) && h->chunk == h->length) {
            ch->on_message(ch, h, body, ch->arg);
            return;
        } else if (h->chunk <= h->length) {
            ch->msg = malloc(h->length ? h->length : 1);
            if (!ch->msg)
                pg_error("ipc fd %d: no memory for a message of %u bytes", ch->fd, h->length);
        }
        ch->cur = *h;
        ch->in_message = 1;
        ch->msg_have = 0;
    } else if (!ch->in_message) {
        pg_debug("ipc fd %d: record without its beginning, skipped", ch->fd);
        return;
    }
    if (ch->msg_have + h->chunk > ch->cur.length) {
        drop_partial(ch, "records longer than announced");
        return;
    }
    if (ch->msg)
        memcpy(ch->msg + ch->msg_have, body, h->chunk);
    ch->msg_have += h->chunk;
    if (!(h->flags & PG_IPC_END))
        return;
    if (ch->msg && ch->msg_have == ch->cur.length) {
        pg_ipc_header whole = ch->cur;
        whole.chunk = whole.length;
        whole.flags = PG_IPC_BEGIN | PG_IPC_END;
        char *msg = ch->msg;
        ch->msg = NULL;
        ch->in_message = 0;
        ch->on_message(ch, &whole, msg, ch->arg);
        free(msg);
    } else {
        drop_partial(ch, ch->msg ? "records shorter than announced" : "over the limit");
    }
}

static void handle_datagram(pg_ipc_channel *ch, const char *d, size_t n)
{
    size_t off = 0;
    while (n - off >= sizeof(pg_ipc_header)) {
        pg_ipc_header h;
        memcpy(&h, d + off, sizeof(h));
        off += sizeof(h);
        if (h.chunk > n - off) {
            pg_error("ipc fd %d: malformed record (%u bytes announced, %zu present)",
                     ch->fd, h.chunk, n - off);
            drop_partial(ch, "malformed record");
            return;
        }
        handle_record(ch, &h, d + off);
        off += h.chunk;
        if (ch->closed)
            return;
    }
}

static void update_read_interest(pg_ipc_channel *ch)
{
    int want = !ch->closed && (ch->want_reading || ch->in_message);
    if (want && !ch->reading)
        event_add(ch->read_ev, NULL);
    else if (!want && ch->reading)
        event_del(ch->read_ev);
    ch->reading = want;
}

/* ECONNRESET: the peer's last process closed its end with messages of ours
 * unread.  Whether that is trouble (a crash) or expected (a stopping worker
 * takes no more input) only the owner knows; it asks pg_ipc_channel_reset(). */
static void note_recv_error(pg_ipc_channel *ch, int err)
{
    ch->reset = err == ECONNRESET;
    pg_log(ch->reset ? PG_LOG_DEBUG : PG_LOG_WARN, "ipc fd %d: recv: %s", ch->fd, strerror(err));
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    pg_ipc_channel *ch = arg;
    for (int i = 0; i < IPC_READS_PER_CALL && ch->reading; i++) {
        ssize_t n = recv(fd, ch->rbuf, PG_IPC_DATAGRAM_MAX, MSG_DONTWAIT);
        if (n > 0) {
            handle_datagram(ch, ch->rbuf, (size_t)n);
            update_read_interest(ch);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n < 0)
            note_recv_error(ch, errno);
        channel_closed(ch);
        return;
    }
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pg_ipc_flush(arg);
}

static void on_flush_due(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pg_ipc_channel *ch = arg;
    ch->flush_scheduled = ch->flush_timed = 0;
    pg_ipc_flush(ch);
}

pg_ipc_channel *pg_ipc_channel_new(struct event_base *base, int fd, size_t max_message,
                                   pg_ipc_message_fn on_message, pg_ipc_closed_fn on_closed,
                                   void *arg)
{
    pg_ipc_channel *ch = calloc(1, sizeof(*ch));
    if (!ch)
        return NULL;
    ch->fd = fd;
    ch->base = base;
    ch->max_message = max_message;
    ch->max_pending = IPC_DEFAULT_MAX_PENDING;
    ch->on_message = on_message;
    ch->on_closed = on_closed;
    ch->arg = arg;
    ch->open_datagram = IPC_NO_DATAGRAM;
    ch->rbuf = malloc(PG_IPC_DATAGRAM_MAX);
    ch->read_ev = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, ch);
    ch->write_ev = event_new(base, fd, EV_WRITE | EV_PERSIST, on_writable, ch);
    ch->flush_ev = event_new(base, -1, 0, on_flush_due, ch);
    if (!ch->rbuf || !ch->read_ev || !ch->write_ev || !ch->flush_ev) {
        pg_ipc_channel_free(ch);
        return NULL;
    }
    return ch;
}

void pg_ipc_channel_free(pg_ipc_channel *ch)
{
    if (!ch)
        return;
    if (ch->read_ev)
        event_free(ch->read_ev);
    if (ch->write_ev)
        event_free(ch->write_ev);
    if (ch->flush_ev)
        event_free(ch->flush_ev);
    free(ch->rbuf);
    free(ch->msg);
    free(ch->out);
    free(ch);
}

int pg_ipc_channel_fd(const pg_ipc_channel *ch)
{
    return ch->fd;
}

int pg_ipc_channel_start(pg_ipc_channel *ch)
{
    if (ch->closed)
        return -1;
    ch->want_reading = 1;
    update_read_interest(ch);
    return 0;
}

void pg_ipc_channel_stop(pg_ipc_channel *ch)
{
    ch->want_reading = 0;
    update_read_interest(ch);
}

int pg_ipc_channel_closed(const pg_ipc_channel *ch)
{
    return ch->closed;
}

int pg_ipc_channel_reset(const pg_ipc_channel *ch)
{
    return ch->reset;
}

int pg_ipc_channel_reading_message(const pg_ipc_channel *ch)
{
    return ch->in_message;
}

static int out_reserve(pg_ipc_channel *ch, size_t more)
{
    if (ch->out_len + more <= ch->out_cap)
        return 0;
    if (ch->out_off > 0 && ch->out_off >= ch->out_len / 2) {
        /* Slide the unsent part to the front before growing. */
        memmove(ch->out, ch->out + ch->out_off, ch->out_len - ch->out_off);
        ch->out_len -= ch->out_off;
        if (ch->open_datagram != IPC_NO_DATAGRAM)
            ch->open_datagram -= ch->out_off;
        ch->out_off = 0;
        if (ch->out_len + more <= ch->out_cap)
            return 0;
    }
    size_t cap = ch->out_cap ? ch->out_cap : 4096;
    while (cap < ch->out_len + more)
        cap *= 2;
    char *p = realloc(ch->out, cap);
    if (!p)
        return -1;
    ch->out = p;
    ch->out_cap = cap;
    return 0;
}

/* Appends one record, to the growing datagram when it fits, else to a new one. */
static int append_record(pg_ipc_channel *ch, const pg_ipc_header *h, const char *body)
{
    size_t rec = sizeof(*h) + h->chunk;
    uint32_t size;
    if (ch->open_datagram != IPC_NO_DATAGRAM) {
        memcpy(&size, ch->out + ch->open_datagram, sizeof(size));
        if (size + rec > PG_IPC_DATAGRAM_MAX)
            ch->open_datagram = IPC_NO_DATAGRAM;
    }
    if (out_reserve(ch, rec + sizeof(size)) < 0)
        return -1;
    if (ch->open_datagram == IPC_NO_DATAGRAM) {
        ch->open_datagram = ch->out_len;
        size = 0;
        memcpy(ch->out + ch->out_len, &size, sizeof(size));
        ch->out_len += sizeof(size);
    }
    memcpy(ch->out + ch->out_len, h, sizeof(*h));
    if (h->chunk > 0)
        memcpy(ch->out + ch->out_len + sizeof(*h), body, h->chunk);
    ch->out_len += rec;
    memcpy(&size, ch->out + ch->open_datagram, sizeof(size));
    size += (uint32_t)rec;
    memcpy(ch->out + ch->open_datagram, &size, sizeof(size));
    return 0;
}

static void schedule_flush(pg_ipc_channel *ch)
{
    if (!ch->flush_scheduled) {
        ch->flush_scheduled = 1;
        event_active(ch->flush_ev, EV_TIMEOUT, 0);
    }
}

/* Queues a message, cut into records; the caller schedules the flush. */
static int queue_message(pg_ipc_channel *ch, const pg_ipc_header *h, const void *data, size_t len)
{
    if (ch->closed || len > ch->max_message || len > UINT32_MAX)
        return -1;
    if (pg_ipc_pending(ch) + len > ch->max_pending) {
        pg_error("ipc fd %d: %zu bytes already queued for a peer that does not read; "
                 "message type %u of %zu bytes refused", ch->fd, pg_ipc_pending(ch), h->type, len);
        return -1;
    }
    const size_t room = PG_IPC_DATAGRAM_MAX - sizeof(pg_ipc_header);
    pg_ipc_header rec = *h;
    rec.length = (uint32_t)len;
    size_t off = 0;
    do {
        size_t chunk = len - off < room ? len - off : room;
        rec.chunk = (uint32_t)chunk;
        rec.flags = (off == 0 ? PG_IPC_BEGIN : 0) | (off + chunk == len ? PG_IPC_END : 0);
        if (append_record(ch, &rec, (const char *)data + off) < 0)
            return -1;
        off += chunk;
    } while (off < len);
    return 0;
}

int pg_ipc_send_within(pg_ipc_channel *ch, const pg_ipc_header *h, const void *data, size_t len,
                       unsigned within_us)
{
    if (queue_message(ch, h, data, len) < 0)
        return -1;
    if (within_us == 0) {
        schedule_flush(ch);
    } else if (!ch->flush_scheduled && !ch->flush_timed) {
        /* An active flush_ev (schedule_flush) runs at once and ends the wait. */
        struct timeval wait = {within_us / 1000000, within_us % 1000000};
        if (event_add(ch->flush_ev, &wait) == 0)
            ch->flush_timed = 1;
        else
            schedule_flush(ch);
    }
    return 0;
}

int pg_ipc_send(pg_ipc_channel *ch, const pg_ipc_header *h, const void *data, size_t len)
{
    return pg_ipc_send_within(ch, h, data, len, 0);
}

static void out_reset(pg_ipc_channel *ch)
{
    ch->out_len = ch->out_off = 0;
    ch->open_datagram = IPC_NO_DATAGRAM;
    if (ch->out_cap > 1024 * 1024) {
        /* Give back what a burst of large messages took. */
        free(ch->out);
        ch->out = NULL;
        ch->out_cap = 0;
    }
}

int pg_ipc_flush(pg_ipc_channel *ch)
{
    if (ch->closed)
        return -1;
    while (ch->out_off < ch->out_len) {
        uint32_t size;
        memcpy(&size, ch->out + ch->out_off, sizeof(size));
        ssize_t n = send(ch->fd, ch->out + ch->out_off + sizeof(size), size,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
            event_add(ch->write_ev, NULL);
            return 0;
        }
        if (n < 0) {
            /* EPIPE: the peer processes are gone (a normal part of stopping). */
            pg_log(errno == EPIPE ? PG_LOG_DEBUG : PG_LOG_WARN, "ipc fd %d: send: %s", ch->fd,
                   strerror(errno));
            channel_closed(ch);
            return -1;
        }
        if (ch->open_datagram == ch->out_off)
            ch->open_datagram = IPC_NO_DATAGRAM;
        ch->out_off += sizeof(size) + size;
    }
    out_reset(ch);
    event_del(ch->write_ev);
    return 1;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int pg_ipc_flush_blocking(pg_ipc_channel *ch, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        int r = pg_ipc_flush(ch);
        if (r != 0)
            return r > 0 ? 0 : -1;
        long long left = deadline - now_ms();
        if (left <= 0)
            return -1;
        struct pollfd p = { .fd = ch->fd, .events = POLLOUT };
        if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
            return -1;
    }
}

size_t pg_ipc_pending(const pg_ipc_channel *ch)
{
    return ch->out_len - ch->out_off;
}

void pg_ipc_set_max_pending(pg_ipc_channel *ch, size_t max_pending)
{
    ch->max_pending = max_pending;
}

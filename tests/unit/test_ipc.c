/* test_ipc.c - chunked messages over SEQPACKET pairs: sizes from 0 to 2 MiB,
 * coalescing of small messages, messages that may wait, recovery from a
 * sender that died mid-message, limits, and end of file (clean, or with
 * messages left unread). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <event2/event.h>

#include "ipc.h"

typedef struct {
    int messages;
    size_t total_bytes;
    uint64_t last_id;
    uint16_t last_type;
    char *last;          /* copy of the last message */
    size_t last_len;
    int closed;
    int ok_pattern;      /* every message matched pattern(id) */
} sink;

static char pattern_byte(uint64_t id, size_t i)
{
    return (char)((i * 31 + id) & 0xff);
}

static void on_message(pg_ipc_channel *ch, const pg_ipc_header *h, const char *data, void *arg)
{
    (void)ch;
    sink *k = arg;
    k->messages++;
    k->total_bytes += h->length;
    k->last_id = h->id;
    k->last_type = h->type;
    free(k->last);
    k->last = malloc(h->length + 1);
    memcpy(k->last, data, h->length);
    k->last_len = h->length;
    for (size_t i = 0; i < h->length; i++)
        if (data[i] != pattern_byte(h->id, i)) {
            k->ok_pattern = 0;
            break;
        }
}

static void on_closed(pg_ipc_channel *ch, void *arg)
{
    (void)ch;
    ((sink *)arg)->closed = 1;
}

typedef struct {
    struct event_base *base;
    int fds[2];
    pg_ipc_channel *tx, *rx;
    sink k;
} rig;

static void rig_up(rig *r, size_t max_message)
{
    memset(r, 0, sizeof(*r));
    r->k.ok_pattern = 1;
    r->base = event_base_new();
    assert_int_equal(pg_ipc_socketpair(r->fds), 0);
    r->tx = pg_ipc_channel_new(r->base, r->fds[0], max_message, on_message, on_closed, &r->k);
    r->rx = pg_ipc_channel_new(r->base, r->fds[1], max_message, on_message, on_closed, &r->k);
    assert_non_null(r->tx);
    assert_non_null(r->rx);
    assert_int_equal(pg_ipc_channel_start(r->rx), 0);
}

static void rig_down(rig *r)
{
    pg_ipc_channel_free(r->tx);
    pg_ipc_channel_free(r->rx);
    if (r->fds[0] >= 0)
        close(r->fds[0]);
    close(r->fds[1]);
    event_base_free(r->base);
    free(r->k.last);
}

/* Runs the loop until n messages arrived (bounded). */
static void pump(rig *r, int n)
{
    for (int i = 0; i < 10000 && r->k.messages < n && !r->k.closed; i++)
        event_base_loop(r->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

/* Sends pattern(id) of len bytes; within_us > 0: with pg_ipc_send_within. */
static int send_pattern_within(rig *r, uint64_t id, size_t len, unsigned within_us)
{
    char *buf = malloc(len ? len : 1);
    for (size_t i = 0; i < len; i++)
        buf[i] = pattern_byte(id, i);
    pg_ipc_header h = {.id = id, .type = PG_IPC_RECEIVE, .listener = 1, .worker_id = 3};
    int rc = within_us ? pg_ipc_send_within(r->tx, &h, buf, len, within_us)
                       : pg_ipc_send(r->tx, &h, buf, len);
    free(buf);
    return rc;
}

static int send_pattern(rig *r, uint64_t id, size_t len)
{
    return send_pattern_within(r, id, len, 0);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_sizes_round_trip(void **state)
{
    (void)state;
    rig r;
    rig_up(&r, 3u << 20);
    size_t sizes[] = {0, 1, 100, PG_IPC_DATAGRAM_MAX - sizeof(pg_ipc_header),
                      PG_IPC_DATAGRAM_MAX - sizeof(pg_ipc_header) + 1, PG_IPC_DATAGRAM_MAX * 3 + 7,
                      1u << 20, 2u << 20};
    size_t n = sizeof(sizes) / sizeof(sizes[0]);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(send_pattern(&r, 100 + i, sizes[i]), 0);
        pump(&r, (int)i + 1);
        assert_int_equal(r.k.messages, (int)i + 1);
        assert_int_equal(r.k.last_len, sizes[i]);
        assert_int_equal(r.k.last_id, 100 + i);
        assert_int_equal(r.k.last_type, PG_IPC_RECEIVE);
    }
    assert_true(r.k.ok_pattern);
    assert_int_equal(pg_ipc_pending(r.tx), 0);
    rig_down(&r);
}

static void test_small_messages_share_datagrams(void **state)
{
    (void)state;
    rig r;
    rig_up(&r, 1u << 20);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(send_pattern(&r, (uint64_t)i + 1, 20), 0);
    /* Nothing left yet: sending only queues until the loop flushes. */
    assert_true(pg_ipc_pending(r.tx) > 0);
    assert_int_equal(pg_ipc_flush(r.tx), 1);
    /* 1000 records of 44 bytes fit in well under 10 datagrams. */
    int datagrams = 0;
    char buf[PG_IPC_DATAGRAM_MAX];
    ssize_t got;
    while ((got = recv(r.fds[1], buf, sizeof(buf), MSG_DONTWAIT)) > 0)
        datagrams++;
    assert_true(datagrams >= 1 && datagrams <= 2);
    rig_down(&r);
}

static void test_order_kept_under_backpressure(void **state)
{
    (void)state;
    rig r;
    rig_up(&r, 1u << 20);
    /* More than a socket buffer holds: the rest waits for writability. */
    for (int i = 0; i < 200; i++)
        assert_int_equal(send_pattern(&r, (uint64_t)i + 1, 100000), 0);
    pump(&r, 200);
    assert_int_equal(r.k.messages, 200);
    assert_int_equal(r.k.last_id, 200);
    assert_true(r.k.ok_pattern);
    rig_down(&r);
}

/* A message that may wait leaves when its wait is over, not at the end of
 * the loop pass, and many sent meanwhile leave together. */
static void test_waiting_messages_leave_when_the_wait_is_over(void **state)
{
    (void)state;
    rig r;
    rig_up(&r, 1u << 20);
    double start = now_s();
    for (int i = 0; i < 50; i++)
        assert_int_equal(send_pattern_within(&r, (uint64_t)i + 1, 20, 200000), 0);
    for (int i = 0; i < 20; i++)
        event_base_loop(r.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    if (now_s() - start < 0.15) {   /* the loop passes were quick: still waiting */
        assert_int_equal(r.k.messages, 0);
        assert_true(pg_ipc_pending(r.tx) > 0);
    }
    /* The wait's timer is the only event due: each pass blocks until it. */
    for (int i = 0; i < 10 && r.k.messages < 50; i++)
        event_base_loop(r.base, EVLOOP_ONCE);
    assert_int_equal(r.k.messages, 50);
    assert_int_equal(r.k.last_id, 50);
    assert_true(r.k.ok_pattern);
    assert_true(now_s() - start >= 0.15);
    assert_int_equal(pg_ipc_pending(r.tx), 0);
    rig_down(&r);
}

/* A message sent at once takes the waiting ones along, in order; a wait of 0
 * is no wait. */
static void test_a_message_sent_now_ends_the_wait(void **state)
{
    (void)state;
    rig r;
    rig_up(&r, 1u << 20);
    double start = now_s();
    assert_int_equal(send_pattern_within(&r, 1, 100, 10000000), 0);
    assert_int_equal(send_pattern_within(&r, 2, 100, 10000000), 0);
    assert_int_equal(send_pattern(&r, 3, 100), 0);
    pump(&r, 3);
    assert_int_equal(r.k.messages, 3);
    assert_int_equal(r.k.last_id, 3);
    assert_int_equal(send_pattern_within(&r, 4, 100, 0), 0);
    pump(&r, 4);
    assert_int_equal(r.k.messages, 4);
    assert_int_equal(r.k.last_id, 4);
    assert_true(r.k.ok_pattern);
    assert_true(now_s() - start < 5.0);
    rig_down(&r);
}

/* A raw record, as a sender that died half-way would have left it. */
static void raw_record(int fd, uint64_t id, uint32_t length, uint32_t chunk, uint8_t flags)
{
    char buf[sizeof(pg_ipc_header) + 64] = {0};
    pg_ipc_header h = {.id = id, .length = length, .chunk = chunk, .type = PG_IPC_TASK,
                       .flags = flags};
    memcpy(buf, &h, sizeof(h));
    memset(buf + sizeof(h), 'z', chunk);
    assert_int_equal(send(fd, buf, sizeof(h) + chunk, 0), (ssize_t)(sizeof(h) + chunk));
}

static void test_half_message_from_dead_sender_is_dropped(void **state)
{
    (void)state;
    rig r;
    rig_up(&r, 1u << 20);
    raw_record(r.fds[0], 1, 100, 10, PG_IPC_BEGIN);      /* begun, never ended */
    raw_record(r.fds[0], 2, 64, 64, 0);                   /* middle without a beginning */
    assert_int_equal(send_pattern(&r, 7, 5000), 0);       /* the replacement's message */
    pump(&r, 1);
    assert_int_equal(r.k.messages, 1);
    assert_int_equal(r.k.last_id, 7);
    assert_true(r.k.ok_pattern);
    rig_down(&r);
}

static void test_limits(void **state)
{
    (void)state;
    rig r;
    rig_up(&r, 1000);
    assert_int_equal(send_pattern(&r, 1, 1001), -1);      /* over max_message */
    raw_record(r.fds[0], 2, 5000, 10, PG_IPC_BEGIN);      /* announced over the limit */
    raw_record(r.fds[0], 2, 5000, 10, PG_IPC_END);
    raw_record(r.fds[0], 3, 20, 30, PG_IPC_BEGIN | PG_IPC_END); /* chunk longer than announced */
    assert_int_equal(send_pattern(&r, 4, 999), 0);
    pump(&r, 1);
    assert_int_equal(r.k.messages, 1);
    assert_int_equal(r.k.last_id, 4);
    pg_ipc_set_max_pending(r.tx, 5000);
    assert_int_equal(send_pattern(&r, 5, 900), 0);
    for (int i = 0; i < 10; i++)
        send_pattern(&r, 6, 900);
    assert_true(pg_ipc_pending(r.tx) <= 5000 + 1000);
    rig_down(&r);
}

static void test_peer_gone(void **state)
{
    (void)state;
    rig r;
    rig_up(&r, 1000);
    close(r.fds[0]);
    pg_ipc_channel_free(r.tx);
    r.tx = NULL;
    r.fds[0] = -1;
    pump(&r, 1);
    assert_true(r.k.closed);
    assert_false(pg_ipc_channel_reset(r.rx));
    rig_down(&r);
}

/* A peer that exits with our messages unread (a stopping worker) resets the
 * channel; the owner is told, so it can judge whether that was expected. */
static void test_peer_gone_with_messages_unread(void **state)
{
    (void)state;
    rig r;
    rig_up(&r, 1000);
    pg_ipc_header h = {.id = 1, .type = PG_IPC_CLOSE};
    assert_int_equal(pg_ipc_send(r.rx, &h, NULL, 0), 0);
    assert_int_equal(pg_ipc_flush(r.rx), 1);
    pg_ipc_channel_free(r.tx);   /* never read what rx sent */
    r.tx = NULL;
    close(r.fds[0]);
    r.fds[0] = -1;
    pump(&r, 1);
    assert_true(r.k.closed);
    assert_true(pg_ipc_channel_reset(r.rx));
    rig_down(&r);
}

static void test_stop_finishes_the_message_in_progress(void **state)
{
    (void)state;
    rig r;
    rig_up(&r, 1u << 20);
    assert_int_equal(send_pattern(&r, 9, 300000), 0);
    assert_int_equal(send_pattern(&r, 10, 10), 0);
    assert_int_equal(pg_ipc_flush(r.tx), 1);
    /* Read the first record only, then stop: the message must still complete. */
    event_base_loop(r.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    pg_ipc_channel_stop(r.rx);
    pump(&r, 1);
    assert_int_equal(r.k.messages >= 1, 1);
    assert_int_equal(r.k.last_id >= 9, 1);
    assert_false(pg_ipc_channel_reading_message(r.rx));
    rig_down(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes_round_trip),
        cmocka_unit_test(test_small_messages_share_datagrams),
        cmocka_unit_test(test_order_kept_under_backpressure),
        cmocka_unit_test(test_waiting_messages_leave_when_the_wait_is_over),
        cmocka_unit_test(test_a_message_sent_now_ends_the_wait),
        cmocka_unit_test(test_half_message_from_dead_sender_is_dropped),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_peer_gone),
        cmocka_unit_test(test_peer_gone_with_messages_unread),
        cmocka_unit_test(test_stop_finishes_the_message_in_progress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

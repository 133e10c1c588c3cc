/* test_input.c - unit tests for common/input.c: how the reactor keeps a
 * connection's incomplete input and offers it again to a protocol hook or
 * the framing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "frame.h"
#include "input.h"

/* A consumer shaped like the WebSocket hook: messages are a length byte and
 * that many bytes; it takes whole messages and leaves an incomplete one,
 * header included, without saying what it needs. */
typedef struct {
    char got[64][32];
    size_t ngot;
    size_t offers;
    int fail_at;            /* a message whose first byte is this fails (0: none) */
    int stop_after;         /* stop (closing) after this many messages (0: never) */
} hook;

static ssize_t hook_consume(void *arg, const char *data, size_t len, pg_input_offer *offer)
{
    hook *h = arg;
    size_t used = 0;
    h->offers++;
    while (used < len && used + 1 + (unsigned char)data[used] <= len) {
        size_t n = (unsigned char)data[used];
        if (h->fail_at && n > 0 && data[used + 1] == h->fail_at)
            return -1;
        memcpy(h->got[h->ngot], data + used + 1, n);
        h->got[h->ngot++][n] = '\0';
        used += 1 + n;
        if (h->stop_after && (int)h->ngot == h->stop_after) {
            offer->stop = 1;
            break;
        }
    }
    return (ssize_t)used;
}

static const char stream[] = "\3one\3two\5three\0\4four";
#define STREAM_LEN (sizeof(stream) - 1)

static void assert_all_five(const hook *h)
{
    static const char *want[] = {"one", "two", "three", "", "four"};
    assert_int_equal(h->ngot, 5);
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(h->got[i], want[i]);
}

/* The bug this module fixes: cut anywhere, the rest arriving later (in one
 * or many pieces) completes every message at once, however few bytes the
 * hook kept. */
static void test_hook_gets_kept_bytes_with_any_more(void **state)
{
    (void)state;
    for (size_t cut = 1; cut < STREAM_LEN; cut++) {
        hook h = {0};
        pg_input in = {0};
        assert_int_equal(pg_input_feed(&in, stream, cut, 1024, hook_consume, &h), 0);
        assert_int_equal(pg_input_feed(&in, stream + cut, STREAM_LEN - cut, 1024, hook_consume, &h), 0);
        assert_all_five(&h);
        assert_int_equal(pg_input_kept(&in), 0);
        assert_null(in.data);
    }
    for (size_t piece = 1; piece <= 3; piece++) {
        hook h = {0};
        pg_input in = {0};
        for (size_t at = 0; at < STREAM_LEN; at += piece) {
            size_t n = STREAM_LEN - at < piece ? STREAM_LEN - at : piece;
            assert_int_equal(pg_input_feed(&in, stream + at, n, 1024, hook_consume, &h), 0);
        }
        assert_all_five(&h);
        assert_null(in.data);
    }
}

static void test_nothing_kept_holds_no_buffer(void **state)
{
    (void)state;
    hook h = {0};
    pg_input in = {0};
    assert_int_equal(pg_input_feed(&in, stream, STREAM_LEN, 1024, hook_consume, &h), 0);
    assert_all_five(&h);
    assert_null(in.data);
    assert_int_equal(in.cap, 0);
    assert_int_equal(pg_input_feed(&in, "\2o", 2, 1024, hook_consume, &h), 0);
    assert_int_equal(pg_input_kept(&in), 2);
    assert_non_null(in.data);
    pg_input_free(&in);
    assert_null(in.data);
}

static void test_consumer_failure_and_stop(void **state)
{
    (void)state;
    hook h = {.fail_at = 't'};
    pg_input in = {0};
    assert_int_equal(pg_input_feed(&in, stream, 5, 1024, hook_consume, &h), 0);
    assert_int_equal(pg_input_feed(&in, stream + 5, STREAM_LEN - 5, 1024, hook_consume, &h), -1);
    pg_input_free(&in);

    /* closing: what follows the last message is not kept */
    hook s = {.stop_after = 2};
    assert_int_equal(pg_input_feed(&in, stream, STREAM_LEN, 1024, hook_consume, &s), 0);
    assert_int_equal(s.ngot, 2);
    assert_int_equal(pg_input_kept(&in), 0);
}

static void test_limit_on_kept_bytes(void **state)
{
    (void)state;
    hook h = {0};
    pg_input in = {0};
    char big[200] = {(char)199};
    assert_int_equal(pg_input_feed(&in, big, 100, 150, hook_consume, &h), 0);
    assert_int_equal(pg_input_feed(&in, big + 100, 60, 150, hook_consume, &h), PG_INPUT_TOO_LONG);
    pg_input_free(&in);
}

/* ---- the engine's framings as consumers ---- */

typedef struct {
    const pg_frame_settings *fs;
    size_t packets, bytes;
    size_t offers;
    size_t searched_seen;   /* the largest searched value offered */
} framer;

static int count_packet(void *arg, const char *packet, size_t len)
{
    (void)packet;
    framer *f = arg;
    f->packets++;
    f->bytes += len;
    return 0;
}

static ssize_t frame_consume(void *arg, const char *data, size_t len, pg_input_offer *offer)
{
    framer *f = arg;
    f->offers++;
    if (offer->searched > f->searched_seen)
        f->searched_seen = offer->searched;
    return pg_frame_split_resume(f->fs, data, len, count_packet, f, &offer->need, &offer->searched);
}

/* Length framing: the consumer's need spares offers until a packet can be
 * complete, however the bytes come. */
static void test_length_framing_offers_only_when_complete(void **state)
{
    (void)state;
    static const pg_frame_settings fs = {PG_FRAME_LENGTH, NULL, 0, 4096};
    char data[2 * (4 + 1000)];
    for (int k = 0; k < 2; k++) {
        char *p = data + k * 1004;
        p[0] = 0, p[1] = 0, p[2] = 1000 >> 8, p[3] = (char)(1000 & 0xff);
        memset(p + 4, 'a' + k, 1000);
    }
    framer f = {.fs = &fs};
    pg_input in = {0};
    for (size_t i = 0; i < sizeof(data); i++)
        assert_int_equal(pg_input_feed(&in, data + i, 1, 8192, frame_consume, &f), 0);
    assert_int_equal(f.packets, 2);
    assert_int_equal(f.bytes, 2000);
    /* one offer per header byte, then one per packet: not one per byte */
    assert_true(f.offers < 20);
    assert_null(in.data);
}

/* EOF framing: a packet arriving a byte at a time is searched once, not
 * from its start again at every byte. */
static void test_eof_framing_resumes_its_search(void **state)
{
    (void)state;
    static const pg_frame_settings fs = {PG_FRAME_EOF, "\r\n\r\n", 4, 1 << 20};
    enum { BODY = 5000 };
    char *data = malloc(BODY + 4);
    assert_non_null(data);
    memset(data, 'x', BODY);
    memcpy(data + BODY, "\r\n\r\n", 4);
    framer f = {.fs = &fs};
    pg_input in = {0};
    for (size_t i = 0; i < BODY + 4; i++) {
        assert_int_equal(pg_input_feed(&in, data + i, 1, 2 << 20, frame_consume, &f), 0);
        /* the kept bytes were searched, but for a marker's last 3 */
        if (i >= 3 && i < BODY)
            assert_int_equal(in.searched, i + 1 - 3);
    }
    assert_int_equal(f.packets, 1);
    assert_int_equal(f.bytes, BODY);
    assert_int_equal(f.searched_seen, BODY + 3 - 3);
    assert_null(in.data);
    free(data);
}

/* A marker cut between reads at every position is still found. */
static void test_eof_marker_cut_anywhere(void **state)
{
    (void)state;
    static const pg_frame_settings fs = {PG_FRAME_EOF, "\r\n\r\n", 4, 1024};
    static const char two[] = "first\r\n\r\nsecond\r\n\r\n";
    size_t len = sizeof(two) - 1;
    for (size_t cut = 1; cut < len; cut++) {
        for (size_t cut2 = cut + 1; cut2 < len; cut2++) {
            framer f = {.fs = &fs};
            pg_input in = {0};
            assert_int_equal(pg_input_feed(&in, two, cut, 4096, frame_consume, &f), 0);
            assert_int_equal(pg_input_feed(&in, two + cut, cut2 - cut, 4096, frame_consume, &f), 0);
            assert_int_equal(pg_input_feed(&in, two + cut2, len - cut2, 4096, frame_consume, &f), 0);
            assert_int_equal(f.packets, 2);
            assert_int_equal(f.bytes, 11);
            assert_null(in.data);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hook_gets_kept_bytes_with_any_more),
        cmocka_unit_test(test_nothing_kept_holds_no_buffer),
        cmocka_unit_test(test_consumer_failure_and_stop),
        cmocka_unit_test(test_limit_on_kept_bytes),
        cmocka_unit_test(test_length_framing_offers_only_when_complete),
        cmocka_unit_test(test_eof_framing_resumes_its_search),
        cmocka_unit_test(test_eof_marker_cut_anywhere),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_frame.c - unit tests for common/frame.c (EOF, length and raw framing). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "frame.h"

/* ---- collecting emitted packets ---- */

#define MAX_PACKETS 256

typedef struct {
    size_t n;
    size_t len[MAX_PACKETS];
    char *data[MAX_PACKETS];
    size_t stop_after; /* emit returns 1 once n reaches this (0: never) */
} packets;

static int collect(void *arg, const char *p, size_t len)
{
    packets *ps = arg;
    assert_true(ps->n < MAX_PACKETS);
    ps->data[ps->n] = malloc(len + 1);
    assert_non_null(ps->data[ps->n]);
    if (len > 0)
        memcpy(ps->data[ps->n], p, len);
    ps->data[ps->n][len] = '\0';
    ps->len[ps->n] = len;
    ps->n++;
    return ps->stop_after != 0 && ps->n >= ps->stop_after;
}

static void packets_free(packets *ps)
{
    for (size_t i = 0; i < ps->n; i++)
        free(ps->data[i]);
    ps->n = 0;
}

static void assert_packet(const packets *ps, size_t i, const char *s, size_t len)
{
    assert_true(i < ps->n);
    assert_int_equal(ps->len[i], len);
    if (len > 0)
        assert_memory_equal(ps->data[i], s, len);
}

#define PACKET_STR(ps, i, s) assert_packet((ps), (i), (s), sizeof(s) - 1)

/* ---- a reactor-like feeder: appends each read to a buffer, splits, keeps the rest ---- */

typedef struct {
    char *buf;
    size_t len, cap;
    int closed;     /* split returned -1 */
    size_t calls;   /* split calls made */
    size_t skipped; /* calls avoided thanks to need */
    size_t need;
} feeder;

static void feeder_free(feeder *f)
{
    free(f->buf);
    memset(f, 0, sizeof(*f));
}

/* use_need: skip splitting while the kept bytes are below *need. */
static void feed(feeder *f, const pg_frame_settings *fs, const char *data, size_t n,
                 packets *ps, int use_need)
{
    if (f->closed)
        return;
    if (f->len + n > f->cap) {
        size_t cap = f->cap ? f->cap : 64;
        while (cap < f->len + n)
            cap *= 2;
        f->buf = realloc(f->buf, cap);
        assert_non_null(f->buf);
        f->cap = cap;
    }
    if (n > 0)
        memcpy(f->buf + f->len, data, n);
    f->len += n;
    if (use_need && f->len < f->need) {
        f->skipped++;
        return;
    }
    for (;;) {
        f->calls++;
        size_t need = 12345;
        ssize_t used = pg_frame_split(fs, f->buf, f->len, collect, ps, &need);
        if (used < 0) {
            f->closed = 1;
            return;
        }
        assert_true((size_t)used <= f->len);
        if (used > 0) {
            memmove(f->buf, f->buf + used, f->len - (size_t)used);
            f->len -= (size_t)used;
        }
        f->need = need;
        if (need != 0) /* 0: stopped early, go on */
            break;
    }
}

static const pg_frame_settings crlf2 = { PG_FRAME_EOF, "\r\n\r\n", 4, 64 };
static const pg_frame_settings nl = { PG_FRAME_EOF, "\n", 1, 16 };
static const pg_frame_settings len_fs = { PG_FRAME_LENGTH, NULL, 0, 64 };
static const pg_frame_settings raw_fs = { PG_FRAME_RAW, NULL, 0, 64 };

/* ---- EOF framing ---- */

static void test_eof_basic(void **state)
{
    (void)state;
    packets ps = { 0 };
    size_t need = 0;
    const char in[] = "hello\r\n\r\nworld\r\n\r\npart";
    ssize_t r = pg_frame_split(&crlf2, in, sizeof(in) - 1, collect, &ps, &need);
    assert_int_equal(r, 18);
    assert_int_equal(ps.n, 2);
    PACKET_STR(&ps, 0, "hello");
    PACKET_STR(&ps, 1, "world");
    assert_int_equal(need, sizeof(in) - 1 - 18 + 1); /* 4 left, need 5 */
    packets_free(&ps);

    /* nothing at all */
    r = pg_frame_split(&crlf2, "", 0, collect, &ps, &need);
    assert_int_equal(r, 0);
    assert_int_equal(ps.n, 0);
    assert_int_equal(need, 1);

    /* need may be NULL; emit may be NULL */
    r = pg_frame_split(&crlf2, "ab\r\n\r\ncd", 8, collect, &ps, NULL);
    assert_int_equal(r, 6);
    PACKET_STR(&ps, 0, "ab");
    packets_free(&ps);
    r = pg_frame_split(&crlf2, "ab\r\n\r\ncd", 8, NULL, NULL, &need);
    assert_int_equal(r, 6);
    assert_int_equal(need, 3);
}

static void test_eof_partial_marker(void **state)
{
    (void)state;
    packets ps = { 0 };
    size_t need;
    /* marker incomplete: nothing consumed */
    assert_int_equal(pg_frame_split(&crlf2, "abc\r\n\r", 6, collect, &ps, &need), 0);
    assert_int_equal(ps.n, 0);
    assert_int_equal(need, 7);
    /* "\r\n\r\n\r\n" holds one marker at 0 then an incomplete one */
    assert_int_equal(pg_frame_split(&crlf2, "\r\n\r\n\r\n", 6, collect, &ps, &need), 4);
    assert_int_equal(ps.n, 1);
    assert_int_equal(ps.len[0], 0);
    assert_int_equal(need, 3);
    packets_free(&ps);
}

static void test_eof_empty_packets(void **state)
{
    (void)state;
    packets ps = { 0 };
    size_t need;
    assert_int_equal(pg_frame_split(&nl, "\n\na\n\n", 5, collect, &ps, &need), 5);
    assert_int_equal(ps.n, 4);
    assert_int_equal(ps.len[0], 0);
    assert_int_equal(ps.len[1], 0);
    PACKET_STR(&ps, 2, "a");
    assert_int_equal(ps.len[3], 0);
    assert_int_equal(need, 1);
    packets_free(&ps);

    assert_int_equal(pg_frame_split(&crlf2, "\r\n\r\n\r\n\r\n", 8, collect, &ps, &need), 8);
    assert_int_equal(ps.n, 2);
    assert_int_equal(ps.len[0], 0);
    assert_int_equal(ps.len[1], 0);
    packets_free(&ps);
}

static void test_eof_one_byte_marker_with_nul(void **state)
{
    (void)state;
    pg_frame_settings fs = { PG_FRAME_EOF, "\0", 1, 16 };
    packets ps = { 0 };
    size_t need;
    const char in[] = { 'a', 'b', 0, 'c', 0, 'd' };
    assert_int_equal(pg_frame_split(&fs, in, sizeof(in), collect, &ps, &need), 5);
    assert_int_equal(ps.n, 2);
    PACKET_STR(&ps, 0, "ab");
    PACKET_STR(&ps, 1, "c");
    assert_int_equal(need, 2);
    packets_free(&ps);

    /* a multi-byte marker with a NUL in it */
    pg_frame_settings fs2 = { PG_FRAME_EOF, "\0\xff", 2, 16 };
    const char in2[] = { 'x', 0, 'y', 0, (char)0xff, 'z' };
    assert_int_equal(pg_frame_split(&fs2, in2, sizeof(in2), collect, &ps, &need), 5);
    assert_int_equal(ps.n, 1);
    assert_packet(&ps, 0, "x\0y", 3);
    packets_free(&ps);
}

/* A stream of packets with the given marker, built into buf. */
static size_t build_eof_stream(char *buf, const char *eof, size_t eof_len)
{
    static const char *bodies[] = { "first", "", "a longer packet body here", "x", "", "last one" };
    size_t n = 0;
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        memcpy(buf + n, bodies[i], strlen(bodies[i]));
        n += strlen(bodies[i]);
        memcpy(buf + n, eof, eof_len);
        n += eof_len;
    }
    return n;
}

static void check_eof_stream(const packets *ps)
{
    assert_int_equal(ps->n, 6);
    PACKET_STR(ps, 0, "first");
    assert_int_equal(ps->len[1], 0);
    PACKET_STR(ps, 2, "a longer packet body here");
    PACKET_STR(ps, 3, "x");
    assert_int_equal(ps->len[4], 0);
    PACKET_STR(ps, 5, "last one");
}

static void run_splits(const pg_frame_settings *fs, const char *stream, size_t n,
                       void (*check)(const packets *))
{
    /* byte by byte, with and without need */
    for (int use_need = 0; use_need <= 1; use_need++) {
        packets ps = { 0 };
        feeder f = { 0 };
        for (size_t i = 0; i < n; i++)
            feed(&f, fs, stream + i, 1, &ps, use_need);
        assert_false(f.closed);
        assert_int_equal(f.len, 0);
        check(&ps);
        packets_free(&ps);
        feeder_free(&f);
    }
    /* every single split point, and every pair of split points */
    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b++) {
            packets ps = { 0 };
            feeder f = { 0 };
            feed(&f, fs, stream, a, &ps, 1);
            feed(&f, fs, stream + a, b - a, &ps, 1);
            feed(&f, fs, stream + b, n - b, &ps, 1);
            assert_false(f.closed);
            assert_int_equal(f.len, 0);
            check(&ps);
            packets_free(&ps);
            feeder_free(&f);
        }
    }
}

static void test_eof_split_reads(void **state)
{
    (void)state;
    char stream[256];
    size_t n = build_eof_stream(stream, "\r\n\r\n", 4);
    run_splits(&crlf2, stream, n, check_eof_stream);
    n = build_eof_stream(stream, "\n", 1);
    pg_frame_settings fs = nl;
    fs.max_length = 64;
    run_splits(&fs, stream, n, check_eof_stream);
}

static void test_eof_many_in_one(void **state)
{
    (void)state;
    char buf[200 * 8];
    size_t n = 0;
    for (int i = 0; i < 200; i++) {
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%03d\r\n\r\n", i);
    }
    packets ps = { 0 };
    size_t need;
    assert_int_equal(pg_frame_split(&crlf2, buf, n, collect, &ps, &need), (ssize_t)n);
    assert_int_equal(ps.n, 200);
    for (int i = 0; i < 200; i++) {
        char want[16];
        snprintf(want, sizeof(want), "%03d", i);
        assert_packet(&ps, (size_t)i, want, 3);
    }
    assert_int_equal(need, 1);
    packets_free(&ps);
}

static void test_eof_oversize(void **state)
{
    (void)state;
    packets ps = { 0 };
    size_t need;
    char buf[128];

    /* body of exactly max_length (16) with the marker: fine */
    memset(buf, 'a', 16);
    buf[16] = '\n';
    assert_int_equal(pg_frame_split(&nl, buf, 17, collect, &ps, &need), 17);
    assert_int_equal(ps.n, 1);
    assert_int_equal(ps.len[0], 16);
    packets_free(&ps);

    /* max_length + eof_len bytes without a marker: still waiting */
    memset(buf, 'a', sizeof(buf));
    assert_int_equal(pg_frame_split(&nl, buf, 17, collect, &ps, &need), 0);
    assert_int_equal(need, 18);
    /* one more: too large */
    assert_int_equal(pg_frame_split(&nl, buf, 18, collect, &ps, &need), -1);
    /* a marker beyond the limit does not save it */
    buf[17] = '\n';
    assert_int_equal(pg_frame_split(&nl, buf, 18, collect, &ps, &need), -1);
    assert_int_equal(ps.n, 0);

    /* a good packet first, then an oversize one */
    memset(buf, 'a', sizeof(buf));
    memcpy(buf, "ok\n", 3);
    assert_int_equal(pg_frame_split(&nl, buf, 3 + 18, collect, &ps, &need), -1);
    packets_free(&ps);

    /* \r\n\r\n with max 64: 64-byte body ok, 65 rejected once 69 bytes are in */
    memset(buf, 'b', sizeof(buf));
    memcpy(buf + 64, "\r\n\r\n", 4);
    assert_int_equal(pg_frame_split(&crlf2, buf, 68, collect, &ps, &need), 68);
    assert_int_equal(ps.len[0], 64);
    packets_free(&ps);
    memset(buf, 'b', sizeof(buf));
    assert_int_equal(pg_frame_split(&crlf2, buf, 68, collect, &ps, &need), 0);
    memcpy(buf + 65, "\r\n\r\n", 4);
    assert_int_equal(pg_frame_split(&crlf2, buf, 69, collect, &ps, &need), -1);
    assert_int_equal(ps.n, 0);

    /* through the feeder, byte by byte: closes */
    feeder f = { 0 };
    memset(buf, 'c', sizeof(buf));
    for (size_t i = 0; i < sizeof(buf); i++)
        feed(&f, &crlf2, buf + i, 1, &ps, 1);
    assert_true(f.closed);
    assert_int_equal(ps.n, 0);
    feeder_free(&f);
}

static void test_eof_stop_early(void **state)
{
    (void)state;
    packets ps = { 0 };
    ps.stop_after = 2;
    size_t need = 99;
    const char in[] = "a\nbb\nccc\nd";
    ssize_t r = pg_frame_split(&nl, in, sizeof(in) - 1, collect, &ps, &need);
    assert_int_equal(r, 5); /* up to and including "bb\n" */
    assert_int_equal(ps.n, 2);
    assert_int_equal(need, 0);
    ps.stop_after = 0;
    r = pg_frame_split(&nl, in + 5, sizeof(in) - 1 - 5, collect, &ps, &need);
    assert_int_equal(r, 4);
    assert_int_equal(ps.n, 3);
    PACKET_STR(&ps, 2, "ccc");
    assert_int_equal(need, 2);
    packets_free(&ps);

    /* stopping on the first */
    ps.stop_after = 1;
    assert_int_equal(pg_frame_split(&nl, in, sizeof(in) - 1, collect, &ps, &need), 2);
    assert_int_equal(ps.n, 1);
    packets_free(&ps);
}

/* ---- length framing ---- */

static size_t put_len_packet(char *buf, const pg_frame_settings *fs, const char *body, size_t len)
{
    char hdr[PG_FRAME_LENGTH_HEADER];
    size_t h = pg_frame_encode_header(fs, len, hdr);
    memcpy(buf, hdr, h);
    if (len > 0)
        memcpy(buf + h, body, len);
    return h + len;
}

static size_t build_len_stream(char *buf)
{
    size_t n = 0;
    n += put_len_packet(buf + n, &len_fs, "first", 5);
    n += put_len_packet(buf + n, &len_fs, "", 0);
    n += put_len_packet(buf + n, &len_fs, "a longer packet body here", 25);
    n += put_len_packet(buf + n, &len_fs, "x", 1);
    n += put_len_packet(buf + n, &len_fs, "", 0);
    n += put_len_packet(buf + n, &len_fs, "last\0one", 8);
    return n;
}

static void check_len_stream(const packets *ps)
{
    assert_int_equal(ps->n, 6);
    PACKET_STR(ps, 0, "first");
    assert_int_equal(ps->len[1], 0);
    PACKET_STR(ps, 2, "a longer packet body here");
    PACKET_STR(ps, 3, "x");
    assert_int_equal(ps->len[4], 0);
    PACKET_STR(ps, 5, "last\0one");
}

static void test_length_basic(void **state)
{
    (void)state;
    char buf[256];
    size_t n = build_len_stream(buf);
    packets ps = { 0 };
    size_t need;
    assert_int_equal(pg_frame_split(&len_fs, buf, n, collect, &ps, &need), (ssize_t)n);
    check_len_stream(&ps);
    assert_int_equal(need, PG_FRAME_LENGTH_HEADER);
    packets_free(&ps);

    /* header only partly in */
    assert_int_equal(pg_frame_split(&len_fs, buf, 2, collect, &ps, &need), 0);
    assert_int_equal(need, PG_FRAME_LENGTH_HEADER);
    /* header in, body not: need is the whole packet */
    assert_int_equal(pg_frame_split(&len_fs, buf, 6, collect, &ps, &need), 0);
    assert_int_equal(need, 4 + 5);
    /* first packet in plus half of the second header */
    assert_int_equal(pg_frame_split(&len_fs, buf, 11, collect, &ps, &need), 9);
    assert_int_equal(ps.n, 1);
    assert_int_equal(need, PG_FRAME_LENGTH_HEADER);
    packets_free(&ps);
}

static void test_length_split_reads(void **state)
{
    (void)state;
    char buf[256];
    size_t n = build_len_stream(buf);
    run_splits(&len_fs, buf, n, check_len_stream);
}

static void test_length_oversize(void **state)
{
    (void)state;
    packets ps = { 0 };
    size_t need;
    char buf[128] = { 0 };
    char body[64];
    memset(body, 'q', sizeof(body));
    /* exactly max_length is fine */
    size_t n = put_len_packet(buf, &len_fs, body, 64);
    assert_int_equal(pg_frame_split(&len_fs, buf, n, collect, &ps, &need), (ssize_t)n);
    assert_int_equal(ps.n, 1);
    assert_int_equal(ps.len[0], 64);
    packets_free(&ps);

    /* 65: rejected as soon as the header is in, without the body */
    pg_frame_encode_header(&len_fs, 65, buf);
    assert_int_equal(pg_frame_split(&len_fs, buf, 3, collect, &ps, &need), 0);
    assert_int_equal(pg_frame_split(&len_fs, buf, 4, collect, &ps, &need), -1);
    /* a huge length (0xffffffff) */
    memset(buf, 0xff, 4);
    assert_int_equal(pg_frame_split(&len_fs, buf, 4, collect, &ps, &need), -1);
    /* after a good packet */
    n = put_len_packet(buf, &len_fs, "ok", 2);
    pg_frame_encode_header(&len_fs, 1000, buf + n);
    assert_int_equal(pg_frame_split(&len_fs, buf, n + 4, collect, &ps, &need), -1);
    packets_free(&ps);
}

static void test_length_stop_early(void **state)
{
    (void)state;
    char buf[256];
    size_t n = build_len_stream(buf);
    packets ps = { 0 };
    ps.stop_after = 1;
    size_t need = 99;
    assert_int_equal(pg_frame_split(&len_fs, buf, n, collect, &ps, &need), 9);
    assert_int_equal(ps.n, 1);
    assert_int_equal(need, 0);
    packets_free(&ps);

    /* a reactor that goes on after each stop (need == 0) still gets them all,
     * fed byte by byte and fed at once */
    feeder f = { 0 };
    for (size_t i = 0; i < n; i++)
        feed(&f, &len_fs, buf + i, 1, &ps, 1);
    assert_int_equal(f.len, 0);
    check_len_stream(&ps);
    packets_free(&ps);
    feeder_free(&f);

    ps.stop_after = 1; /* every emit asks to stop */
    feed(&f, &len_fs, buf, n, &ps, 1);
    assert_int_equal(f.len, 0);
    assert_int_equal(f.calls, 7); /* six stops, then one that finds nothing */
    check_len_stream(&ps);
    packets_free(&ps);
    feeder_free(&f);
}

/* ---- raw ---- */

static void test_raw(void **state)
{
    (void)state;
    packets ps = { 0 };
    size_t need = 0;
    assert_int_equal(pg_frame_split(&raw_fs, "abc\r\n", 5, collect, &ps, &need), 5);
    assert_int_equal(ps.n, 1);
    PACKET_STR(&ps, 0, "abc\r\n");
    assert_int_equal(need, 1);
    assert_int_equal(pg_frame_split(&raw_fs, "", 0, collect, &ps, &need), 0);
    assert_int_equal(ps.n, 1);
    packets_free(&ps);
}

/* ---- encoding ---- */

static void test_encode(void **state)
{
    (void)state;
    char hdr[PG_FRAME_LENGTH_HEADER];
    size_t tl = 99;

    assert_int_equal(pg_frame_encode_header(&len_fs, 0x01020304, hdr), 4);
    assert_memory_equal(hdr, "\x01\x02\x03\x04", 4);
    assert_int_equal(pg_frame_encode_header(&len_fs, 0, hdr), 4);
    assert_memory_equal(hdr, "\0\0\0\0", 4);
    assert_non_null(pg_frame_encode_trailer(&len_fs, &tl));
    assert_int_equal(tl, 0);

    assert_int_equal(pg_frame_encode_header(&crlf2, 10, hdr), 0);
    const char *t = pg_frame_encode_trailer(&crlf2, &tl);
    assert_int_equal(tl, 4);
    assert_memory_equal(t, "\r\n\r\n", 4);

    assert_int_equal(pg_frame_encode_header(&raw_fs, 10, hdr), 0);
    tl = 99;
    assert_non_null(pg_frame_encode_trailer(&raw_fs, &tl));
    assert_int_equal(tl, 0);

    /* round trip: header + body + trailer for each framing, then split */
    const pg_frame_settings *all[] = { &len_fs, &crlf2, &nl };
    const char *bodies[] = { "", "hello", "0123456789abcde" };
    for (size_t k = 0; k < 3; k++) {
        char buf[256];
        size_t n = 0;
        for (size_t i = 0; i < 3; i++) {
            size_t bl = strlen(bodies[i]);
            n += pg_frame_encode_header(all[k], bl, buf + n);
            memcpy(buf + n, bodies[i], bl);
            n += bl;
            const char *tr = pg_frame_encode_trailer(all[k], &tl);
            memcpy(buf + n, tr, tl);
            n += tl;
        }
        packets ps = { 0 };
        size_t need;
        assert_int_equal(pg_frame_split(all[k], buf, n, collect, &ps, &need), (ssize_t)n);
        assert_int_equal(ps.n, 3);
        for (size_t i = 0; i < 3; i++)
            assert_packet(&ps, i, bodies[i], strlen(bodies[i]));
        packets_free(&ps);
    }
}

/* ---- need lets a reactor skip calls on a large packet ---- */

static void test_need_skips(void **state)
{
    (void)state;
    pg_frame_settings fs = { PG_FRAME_LENGTH, NULL, 0, 1 << 20 };
    size_t body = 100000;
    char *buf = malloc(body + 4);
    assert_non_null(buf);
    memset(buf + 4, 'z', body);
    pg_frame_encode_header(&fs, body, buf);
    packets ps = { 0 };
    feeder f = { 0 };
    for (size_t off = 0; off < body + 4; off += 1000) {
        size_t n = body + 4 - off < 1000 ? body + 4 - off : 1000;
        feed(&f, &fs, buf + off, n, &ps, 1);
    }
    assert_int_equal(ps.n, 1);
    assert_int_equal(ps.len[0], body);
    assert_int_equal(f.calls, 2); /* once to see the header, once when complete */
    assert_int_equal(f.len, 0);
    packets_free(&ps);
    feeder_free(&f);
    free(buf);
}

static void test_bad_settings(void **state)
{
    (void)state;
    pg_frame_settings fs = { PG_FRAME_EOF, NULL, 0, 10 };
    size_t need;
    assert_int_equal(pg_frame_split(&fs, "a\n", 2, collect, NULL, &need), -1);
    fs.kind = (pg_frame_kind)42;
    assert_int_equal(pg_frame_split(&fs, "a\n", 2, collect, NULL, &need), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eof_basic),
        cmocka_unit_test(test_eof_partial_marker),
        cmocka_unit_test(test_eof_empty_packets),
        cmocka_unit_test(test_eof_one_byte_marker_with_nul),
        cmocka_unit_test(test_eof_split_reads),
        cmocka_unit_test(test_eof_many_in_one),
        cmocka_unit_test(test_eof_oversize),
        cmocka_unit_test(test_eof_stop_early),
        cmocka_unit_test(test_length_basic),
        cmocka_unit_test(test_length_split_reads),
        cmocka_unit_test(test_length_oversize),
        cmocka_unit_test(test_length_stop_early),
        cmocka_unit_test(test_raw),
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_need_skips),
        cmocka_unit_test(test_bad_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_ws.c - unit tests for the pure parts of gateway/ws.c and gateway/utf8.c:
 * the Sec-WebSocket-Accept computation, key and header-list checks, Origin
 * matching, query and percent-decoding, close reasons, and the strict UTF-8
 * validator.  The connection-level behaviour is tested end to end by
 * tests/e2e/test_ws_hook.py through examples/ws_echo.c.
 *
 * ws.c is compiled in by inclusion to reach its static helpers; the
 * gateway library linked after it then adds nothing of its own. */
#include "../../gateway/ws.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- accept key ---- */

static void test_accept_key_rfc6455_example(void **state)
{
    (void)state;
    char out[WS_ACCEPT_LEN + 1];
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    assert_int_equal(ws_accept_key(key, strlen(key), out), 0);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_accept_key_other(void **state)
{
    (void)state;
    /* the key of the handshake example on MDN; checked with Python hashlib */
    char out[WS_ACCEPT_LEN + 1];
    const char *key = "x3JJHMbDL1EzLkh9GBhXDw==";
    assert_int_equal(ws_accept_key(key, strlen(key), out), 0);
    assert_string_equal(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}

static void test_key_ok(void **state)
{
    (void)state;
    assert_true(ws_key_ok("dGhlIHNhbXBsZSBub25jZQ==", 24));
    assert_true(ws_key_ok("AAAAAAAAAAAAAAAAAAAA+/==", 24));
    assert_false(ws_key_ok("dGhlIHNhbXBsZSBub25jZQ=", 23));     /* short */
    assert_false(ws_key_ok("dGhlIHNhbXBsZSBub25jZQ===", 25));   /* long */
    assert_false(ws_key_ok("dGhlIHNhbXBsZSBub25jZQAA", 24));    /* 18 bytes */
    assert_false(ws_key_ok("dGhlIHNhbXBsZSBub25jZ!==", 24));    /* bad char */
    assert_false(ws_key_ok("", 0));
}

/* ---- header lists, Origin, query ---- */

static void test_list_has(void **state)
{
    (void)state;
    const char *v = "keep-alive, Upgrade";
    assert_true(ws_list_has(v, strlen(v), "upgrade"));
    assert_true(ws_list_has(v, strlen(v), "keep-alive"));
    assert_false(ws_list_has(v, strlen(v), "close"));
    v = "upgrade";
    assert_true(ws_list_has(v, strlen(v), "upgrade"));
    v = "upgraded";
    assert_false(ws_list_has(v, strlen(v), "upgrade"));
    v = " WebSocket ,";
    assert_true(ws_list_has(v, strlen(v), "websocket"));
    v = "";
    assert_false(ws_list_has(v, 0, "websocket"));
}

static void test_origin_allowed(void **state)
{
    (void)state;
    const char *o = "https://app.example";
    assert_true(ws_origin_allowed(NULL, o, strlen(o)));
    assert_true(ws_origin_allowed("", o, strlen(o)));
    assert_true(ws_origin_allowed("*", o, strlen(o)));
    assert_true(ws_origin_allowed(" * ", o, strlen(o)));
    assert_true(ws_origin_allowed("https://app.example", o, strlen(o)));
    assert_true(ws_origin_allowed("http://a, https://APP.example", o, strlen(o)));
    assert_false(ws_origin_allowed("https://app.example.evil", o, strlen(o)));
    assert_false(ws_origin_allowed("http://app.example", o, strlen(o)));
    const char *two = "https://app.example, https://x";
    assert_false(ws_origin_allowed("https://app.example", two, strlen(two)));
    assert_false(ws_origin_allowed("https://app.example", "", 0));
}

static void test_query_param_and_decode(void **state)
{
    (void)state;
    const char *q = "a=1&token=ab%2Ecd&tokenx=2";
    const char *v;
    size_t n;
    assert_true(ws_query_param(q, strlen(q), "token", &v, &n));
    assert_int_equal(n, 7);
    assert_memory_equal(v, "ab%2Ecd", 7);
    char out[16];
    assert_int_equal(ws_url_decode(v, n, out, sizeof(out)), 5);
    assert_memory_equal(out, "ab.cd", 5);
    assert_false(ws_query_param("a=1&b=2", 7, "token", &v, &n));
    assert_true(ws_query_param("token", 5, "token", &v, &n));
    assert_int_equal(n, 0);
    assert_true(ws_query_param("x&token=", 8, "token", &v, &n));
    assert_int_equal(n, 0);
    /* broken escapes, too long */
    assert_int_equal(ws_url_decode("%2", 2, out, sizeof(out)), -1);
    assert_int_equal(ws_url_decode("%zz", 3, out, sizeof(out)), -1);
    assert_int_equal(ws_url_decode("a+b", 3, out, sizeof(out)), 3);
    assert_memory_equal(out, "a b", 3);
    assert_int_equal(ws_url_decode("abc", 3, out, 2), -1);
}

/* ---- close reasons ---- */

static void test_close_reason(void **state)
{
    (void)state;
    char buf[200];
    size_t n = gw_ws_close_reason(buf, sizeof(buf), 4001, "bye");
    assert_int_equal(n, 5);
    assert_memory_equal(buf, "\x0f\xa1" "bye", 5);
    n = gw_ws_close_reason(buf, sizeof(buf), 1000, NULL);
    assert_int_equal(n, 2);
    assert_memory_equal(buf, "\x03\xe8", 2);
    n = gw_ws_close_reason(buf, 4, 1001, "going");
    assert_int_equal(n, 4);
    assert_memory_equal(buf, "\x03\xe9" "go", 4);
    assert_int_equal(gw_ws_close_reason(buf, 1, 1000, "x"), 0);
    /* text over 123 bytes is cut, never inside a character */
    char big[300];
    memset(big, 'a', 122);
    strcpy(big + 122, "\xc3\xa9tail");          /* "é" spans bytes 122..123 */
    n = gw_ws_close_reason(buf, sizeof(buf), 1000, big);
    assert_int_equal(n, 2 + 122);
    assert_true(gw_utf8_valid(buf + 2, n - 2));
}

static void test_parse_reason(void **state)
{
    (void)state;
    const char *text;
    size_t len;
    assert_int_equal(ws_parse_reason(NULL, 0, &text, &len), 1001);
    assert_int_equal(ws_parse_reason("", 0, &text, &len), 1000);
    assert_int_equal(len, 0);
    assert_int_equal(ws_parse_reason("\x0f\xa1" "bye", 5, &text, &len), 4001);
    assert_int_equal(len, 3);
    assert_memory_equal(text, "bye", 3);
    /* codes an endpoint must not send become 1000 */
    assert_int_equal(ws_parse_reason("\x03\xed", 2, &text, &len), 1000);   /* 1005 */
    assert_int_equal(ws_parse_reason("\x03\xee", 2, &text, &len), 1000);   /* 1006 */
    assert_int_equal(ws_parse_reason("\x00\x01", 2, &text, &len), 1000);
    assert_int_equal(ws_parse_reason("\x13\x88", 2, &text, &len), 1000);   /* 5000 */
    assert_int_equal(ws_parse_reason("\x03\xf3", 2, &text, &len), 1011);
    /* invalid UTF-8 text is dropped */
    assert_int_equal(ws_parse_reason("\x0f\xa1\xff", 3, &text, &len), 4001);
    assert_int_equal(len, 0);
}

static void test_close_code_ok(void **state)
{
    (void)state;
    assert_true(ws_close_code_ok(1000));
    assert_true(ws_close_code_ok(1003));
    assert_false(ws_close_code_ok(1004));
    assert_false(ws_close_code_ok(1005));
    assert_false(ws_close_code_ok(1006));
    assert_true(ws_close_code_ok(1007));
    assert_true(ws_close_code_ok(1011));
    assert_false(ws_close_code_ok(1015));
    assert_false(ws_close_code_ok(2999));
    assert_true(ws_close_code_ok(3000));
    assert_true(ws_close_code_ok(4999));
    assert_false(ws_close_code_ok(5000));
}

/* ---- UTF-8 ---- */

#define VALID(s) assert_true(gw_utf8_valid(s, sizeof(s) - 1))
#define INVALID(s) assert_false(gw_utf8_valid(s, sizeof(s) - 1))

static void test_utf8_valid(void **state)
{
    (void)state;
    VALID("");
    VALID("hello, world: plain ASCII over eight bytes");
    VALID("\x00");                                  /* NUL is a character */
    VALID("\xc2\x80");                              /* U+0080 */
    VALID("\xdf\xbf");                              /* U+07FF */
    VALID("\xe0\xa0\x80");                          /* U+0800 */
    VALID("\xed\x9f\xbf");                          /* U+D7FF */
    VALID("\xee\x80\x80");                          /* U+E000 */
    VALID("\xef\xbf\xbf");                          /* U+FFFF */
    VALID("\xf0\x90\x80\x80");                      /* U+10000 */
    VALID("\xf4\x8f\xbf\xbf");                      /* U+10FFFF */
    VALID("\xe4\xbd\xa0\xe6\x9c\x89\xe4\xb8\x80\xe6\x9d\xa1");   /* 你有一条 */
    VALID("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5 abcdefgh \xf0\x9f\x98\x80");
}

static void test_utf8_invalid(void **state)
{
    (void)state;
    INVALID("\x80");                                /* lone continuation */
    INVALID("\xbf");
    INVALID("\xc0\x80");                            /* overlong NUL */
    INVALID("\xc1\xbf");                            /* overlong */
    INVALID("\xe0\x80\x80");                        /* overlong 3 bytes */
    INVALID("\xe0\x9f\xbf");                        /* overlong U+07FF */
    INVALID("\xf0\x80\x80\x80");                    /* overlong 4 bytes */
    INVALID("\xf0\x8f\xbf\xbf");                    /* overlong U+FFFF */
    INVALID("\xed\xa0\x80");                        /* U+D800 surrogate */
    INVALID("\xed\xbf\xbf");                        /* U+DFFF surrogate */
    INVALID("\xed\xa0\x80\xed\xb0\x80");            /* surrogate pair */
    INVALID("\xf4\x90\x80\x80");                    /* U+110000 */
    INVALID("\xf5\x80\x80\x80");
    INVALID("\xf8\x88\x80\x80\x80");                /* 5-byte form */
    INVALID("\xfe");
    INVALID("\xff");
    INVALID("\xc2");                                /* truncated */
    INVALID("\xe4\xbd");
    INVALID("\xf0\x9f\x98");
    INVALID("abcdefgh\xf0\x9f\x98");                /* truncated after an ASCII run */
    INVALID("\xc2\x41");                            /* bad continuation */
    INVALID("\xe4\x41\xa0");
    INVALID("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64");
}

static void test_utf8_prefix(void **state)
{
    (void)state;
    const char *s = "a\xc3\xa9" "b";             /* a é b */
    assert_int_equal(gw_utf8_prefix(s, 4, 10), 4);
    assert_int_equal(gw_utf8_prefix(s, 4, 3), 3);
    assert_int_equal(gw_utf8_prefix(s, 4, 2), 1);   /* would cut é */
    assert_int_equal(gw_utf8_prefix(s, 4, 1), 1);
    assert_int_equal(gw_utf8_prefix(s, 4, 0), 0);
    const char *e = "\xf0\x9f\x98\x80";
    assert_int_equal(gw_utf8_prefix(e, 4, 3), 0);
}

/* ---- frame boundaries (when the wslay context may be dropped) ---- */

static void test_frame_header(void **state)
{
    (void)state;
    uint64_t n = 99;
    const uint8_t small[] = {0x81, 0x85, 1, 2, 3, 4};          /* masked, 5 bytes */
    for (size_t len = 0; len < 6; len++)
        assert_int_equal(ws_frame_header(small, len, &n), 0);
    assert_int_equal(ws_frame_header(small, 6, &n), 6);
    assert_int_equal(n, 5);
    const uint8_t mid[] = {0x01, 0xfe, 0x01, 0x2c, 1, 2, 3, 4};  /* 300 */
    assert_int_equal(ws_frame_header(mid, 7, &n), 0);
    assert_int_equal(ws_frame_header(mid, 8, &n), 8);
    assert_int_equal(n, 300);
    const uint8_t big[] = {0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4};  /* 2^32 */
    assert_int_equal(ws_frame_header(big, 13, &n), 0);
    assert_int_equal(ws_frame_header(big, 14, &n), 14);
    assert_int_equal(n, (uint64_t)1 << 32);
    const uint8_t unmasked[] = {0x89, 0x7e, 0x00, 0x80};         /* no mask key */
    assert_int_equal(ws_frame_header(unmasked, 4, &n), 4);
    assert_int_equal(n, 128);
}

/* Feeds data in pieces of `step` bytes the way the engine does: what is not
 * taken is offered again in front of the next piece.  Returns bytes taken. */
static size_t feed_in_steps(ws_conn *st, const uint8_t *data, size_t len, size_t step)
{
    size_t taken = 0, avail = 0;
    while (avail < len) {
        avail = avail + step < len ? avail + step : len;
        taken += ws_frames_ready(st, (const char *)data + taken, avail - taken, NULL);
        assert_true(taken <= avail);
        /* What is held back is never more than a header. */
        assert_true(avail - taken < 14);
    }
    return taken;
}

static void test_frames_ready_in_any_pieces(void **state)
{
    (void)state;
    /* text "hel" FIN=0, ping "p", continuation of 300 bytes FIN=0, final
     * continuation "o" FIN=1: all masked, with a zero key. */
    uint8_t data[3 * 14 + 3 + 1 + 300 + 1 + 6];
    size_t n = 0;
    const uint8_t h1[] = {0x01, 0x83, 0, 0, 0, 0};
    memcpy(data + n, h1, sizeof(h1)), n += sizeof(h1);
    memcpy(data + n, "hel", 3), n += 3;
    const uint8_t h2[] = {0x89, 0x81, 0, 0, 0, 0};
    memcpy(data + n, h2, sizeof(h2)), n += sizeof(h2);
    data[n++] = 'p';
    const uint8_t h3[] = {0x00, 0xfe, 0x01, 0x2c, 0, 0, 0, 0};
    memcpy(data + n, h3, sizeof(h3)), n += sizeof(h3);
    memset(data + n, 'l', 300), n += 300;
    const uint8_t h4[] = {0x80, 0x81, 0, 0, 0, 0};
    memcpy(data + n, h4, sizeof(h4)), n += sizeof(h4);
    data[n++] = 'o';
    size_t ends[] = {9, 16, 324, n};  /* where each frame ends */
    for (size_t step = 1; step <= n; step++) {
        ws_conn st = {0};
        assert_int_equal(feed_in_steps(&st, data, n, step), n);
        assert_int_equal(st.frame_left, 0);
        assert_false(st.fragmented);
    }
    /* At each frame end: the boundary, and whether a message is open. */
    int open_after[] = {1, 1, 1, 0};
    for (size_t i = 0; i < 4; i++) {
        ws_conn st = {0};
        assert_int_equal(ws_frames_ready(&st, (const char *)data, ends[i], NULL), ends[i]);
        assert_int_equal(st.frame_left, 0);
        assert_int_equal(st.fragmented, open_after[i]);
    }
    /* Inside a payload: taken, but not at a boundary. */
    ws_conn st = {0};
    assert_int_equal(ws_frames_ready(&st, (const char *)data, 30, NULL), 30);
    assert_int_equal(st.frame_left, 324 - 30);
    /* A header cut short is left for later (here inside its 16-bit length). */
    ws_conn st2 = {0};
    assert_int_equal(ws_frames_ready(&st2, (const char *)data, 16 + 3, NULL), 16);
    assert_int_equal(st2.frame_left, 0);
}

static void test_frames_ready_huge_length(void **state)
{
    (void)state;
    /* A 64-bit length with the top bit set (wslay refuses it): no overflow. */
    const uint8_t h[] = {0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 'x'};
    ws_conn st = {0};
    assert_int_equal(ws_frames_ready(&st, (const char *)h, sizeof(h), NULL), sizeof(h));
    assert_true(st.frame_left == UINT64_MAX - sizeof(h));
}

/* ---- what incomplete messages cost ---- */

/* A masked frame header (zero key) for a payload of n bytes, n < 126. */
static size_t small_frame(uint8_t *out, int fin, uint8_t opcode, size_t n)
{
    out[0] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    out[1] = (uint8_t)(0x80 | n);
    memset(out + 2, 0, 4);
    memset(out + 6, 'x', n);
    return 6 + n;
}

static void test_whole_message_costs_its_payload_until_done(void **state)
{
    (void)state;
    ws_limits lim = {.max_message = 100, .max_total = 0};
    uint8_t f[6 + 100];
    size_t n = small_frame(f, 1, 1, 100);
    ws_conn st = {0};
    /* the header alone: the frame is charged before its payload arrives */
    assert_int_equal(ws_frames_ready(&st, (const char *)f, 6, &lim), 6);
    assert_int_equal(st.refused, 0);
    assert_int_equal(gw_ws_incomplete_bytes(), 100);
    assert_int_equal(ws_frames_ready(&st, (const char *)f + 6, n - 6, &lim), n - 6);
    assert_int_equal(gw_ws_incomplete_bytes(), 0);
    assert_int_equal(st.charged, 0);
    /* one byte more than max_message is refused at its header */
    uint8_t g[6 + 101];
    small_frame(g, 1, 1, 101);
    assert_int_equal(ws_frames_ready(&st, (const char *)g, 6, &lim), 0);
    assert_int_equal(st.refused, 1009);
    assert_int_equal(gw_ws_incomplete_bytes(), 0);
}

/* 1-byte fragments: each after the first costs GW_WS_FRAGMENT_COST more, so
 * a message of max_message bytes cannot be sent that way. */
static void test_tiny_fragments_are_charged_their_overhead(void **state)
{
    (void)state;
    ws_limits lim = {.max_message = 1000, .max_total = 0};
    ws_conn st = {0};
    uint8_t f[7];
    size_t accepted = 0;
    for (int i = 0; i < 100 && !st.refused; i++) {
        size_t n = small_frame(f, 0, i == 0 ? 1 : 0, 1);
        accepted += ws_frames_ready(&st, (const char *)f, n, &lim) == n;
    }
    assert_int_equal(st.refused, 1009);
    assert_int_equal(accepted, 1 + (1000 - 1) / (GW_WS_FRAGMENT_COST + 1));
    assert_true(gw_ws_incomplete_bytes() <= 1000);
    /* a ping between fragments costs nothing */
    ws_uncharge(&st);
    assert_int_equal(gw_ws_incomplete_bytes(), 0);
}

static void test_incomplete_messages_share_a_total(void **state)
{
    (void)state;
    ws_limits lim = {.max_message = 100, .max_total = 150};
    uint8_t f[6 + 80];
    small_frame(f, 1, 1, 80);
    ws_conn a = {0}, b = {0}, c = {0};
    assert_int_equal(ws_frames_ready(&a, (const char *)f, 10, &lim), 10);
    assert_int_equal(gw_ws_incomplete_bytes(), 80);
    /* a second 80-byte message would make 160 */
    assert_int_equal(ws_frames_ready(&b, (const char *)f, 10, &lim), 0);
    assert_int_equal(b.refused, 1013);
    assert_int_equal(gw_ws_incomplete_bytes(), 80);
    /* once the first is done (or its connection gone), there is room */
    ws_uncharge(&a);
    assert_int_equal(ws_frames_ready(&c, (const char *)f, 10, &lim), 10);
    assert_int_equal(c.refused, 0);
    ws_uncharge(&c);
    assert_int_equal(gw_ws_incomplete_bytes(), 0);
}

/* ---- the protocol table ---- */

static void test_protocol_per_config(void **state)
{
    (void)state;
    static gw_ws_config a = {.ws_path = "/ws"}, b = {.ws_path = "/other"};
    const pg_protocol *pa = gw_ws_protocol(&a);
    const pg_protocol *pb = gw_ws_protocol(&b);
    assert_non_null(pa);
    assert_non_null(pb);
    assert_ptr_not_equal(pa, pb);
    assert_ptr_equal(gw_ws_protocol(&a), pa);
    assert_ptr_equal(pa->arg, &a);
    assert_non_null(pa->on_data);
    assert_non_null(pa->on_send);
    assert_non_null(pa->on_shutdown);
    assert_non_null(pa->on_close);
    assert_null(gw_ws_protocol(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_key_rfc6455_example),
        cmocka_unit_test(test_accept_key_other),
        cmocka_unit_test(test_key_ok),
        cmocka_unit_test(test_list_has),
        cmocka_unit_test(test_origin_allowed),
        cmocka_unit_test(test_query_param_and_decode),
        cmocka_unit_test(test_close_reason),
        cmocka_unit_test(test_parse_reason),
        cmocka_unit_test(test_close_code_ok),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_utf8_invalid),
        cmocka_unit_test(test_utf8_prefix),
        cmocka_unit_test(test_frame_header),
        cmocka_unit_test(test_frames_ready_in_any_pieces),
        cmocka_unit_test(test_frames_ready_huge_length),
        cmocka_unit_test(test_whole_message_costs_its_payload_until_done),
        cmocka_unit_test(test_tiny_fragments_are_charged_their_overhead),
        cmocka_unit_test(test_incomplete_messages_share_a_total),
        cmocka_unit_test(test_protocol_per_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

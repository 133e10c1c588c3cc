/* framing.c - fuzzes the engine's packet framing: length-prefixed (4-byte
 * big-endian length, then the body) and EOF-terminated packets
 * (common/frame.c), fed the way a reactor feeds them: reads of any size
 * through the kept-input buffer (common/input.c), with resumed EOF search.
 *
 * The first byte chooses the framing, the EOF marker, the largest packet
 * and how the rest is cut into reads; the rest is the byte stream.  The
 * packets that come out of the reads must be the packets one call to
 * pg_frame_split finds in the whole stream, every packet
 * must be within the limit, both must refuse the stream or neither, and
 * the bytes kept must be the incomplete packet at the end. */
#include "frame.h"
#include "input.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PACKETS 9000              /* more than -max_len=8192 can make */

typedef struct {
    size_t n;
    size_t max_length;
    const char *pkt[MAX_PACKETS];  /* into the whole stream */
    size_t len[MAX_PACKETS];
} packets;

static int collect_whole(void *arg, const char *packet, size_t len)
{
    packets *p = arg;
    if (len > p->max_length || p->n == MAX_PACKETS)
        abort();
    p->pkt[p->n] = packet;
    p->len[p->n++] = len;
    return 0;
}

typedef struct {
    const packets *whole;
    size_t n;                      /* packets seen so far */
    int differs;                   /* more packets than the whole stream holds */
    const pg_frame_settings *fs;
    size_t max_length;
} reads;

static int check_read_packet(void *arg, const char *packet, size_t len)
{
    reads *r = arg;
    if (len > r->max_length)
        abort();
    if (r->n >= r->whole->n) {
        r->differs = 1;            /* judged at the end */
    } else if (r->whole->len[r->n] != len || memcmp(r->whole->pkt[r->n], packet, len) != 0) {
        abort();                   /* a different packet than one call finds */
    }
    r->n++;
    return 0;
}

static ssize_t consume(void *arg, const char *data, size_t len, pg_input_offer *offer)
{
    reads *r = arg;
    return pg_frame_split_resume(r->fs, data, len, check_read_packet, r, &offer->need,
                                 &offer->searched);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const markers[] = {"\r\n\r\n", "\n", "\0", "ab", "aab", "\r\n",
                                          "\xff\xff\xff\xff\xff\xff\xff\xff", "aaaa"};
    static const size_t marker_len[] = {4, 1, 1, 2, 3, 2, 8, 4};
    static const size_t max_lengths[] = {0, 1, 7, 64, 300, 2048, 8192, 1 << 20};
    if (size < 1)
        return 0;
    uint8_t opt = data[0];
    const char *stream = (const char *)data + 1;
    size_t len = size - 1;
    pg_frame_settings fs = {
        .kind = (opt & 1) ? PG_FRAME_EOF : PG_FRAME_LENGTH,
        .eof = markers[(opt >> 1) & 7],
        .eof_len = marker_len[(opt >> 1) & 7],
        .max_length = max_lengths[(opt >> 4) & 7],
    };
    size_t read_size = (opt & 0x80) ? 1 : 0;   /* 0: sizes taken from the stream */

    static packets whole;
    whole.n = 0;
    whole.max_length = fs.max_length;
    size_t need = 0;
    ssize_t used = pg_frame_split(&fs, stream, len, collect_whole, &whole, &need);
    int whole_failed = used < 0;
    if (!whole_failed && ((size_t)used > len || need == 0))
        abort();

    /* the same stream in reads, through the kept input */
    reads r = {.whole = &whole, .fs = &fs, .max_length = fs.max_length};
    pg_input in = {0};
    size_t limit = fs.max_length + 64 * 1024 + 65536;   /* as the reactor's */
    int failed = 0;
    for (size_t pos = 0, i = 0; pos < len && !failed; i++) {
        size_t n = read_size ? read_size : 1 + (size_t)(uint8_t)stream[i % len] % 97;
        if (n > len - pos)
            n = len - pos;
        int rc = pg_input_feed(&in, stream + pos, n, limit, consume, &r);
        if (rc < 0)
            failed = 1;
        else if (pg_input_kept(&in) > limit)
            abort();
        pos += n;
    }
    size_t kept = pg_input_kept(&in);
    pg_input_free(&in);

    /* the same packets, the same verdict, and the same bytes left over */
    if (failed != whole_failed || r.differs || r.n != whole.n)
        abort();
    if (!failed && kept != len - (size_t)used)
        abort();
    return 0;
}

/* frame.c - splitting a TCP byte stream into packets (see frame.h).
 *
 * Design notes
 *  - Pure functions over bytes already read: no state, no allocation, so the
 *    reactor can call them on every read.  The caller keeps whatever was not
 *    consumed and calls again once more bytes arrived (and, thanks to *need,
 *    only when enough arrived to possibly complete a packet).
 *  - EOF framing searches for the marker with memchr (1-byte markers) or
 *    memmem, never further than max_length + eof_len bytes past the start of
 *    the packet: a marker beyond that would make the body too large anyway.
 *  - Length framing rejects an oversize body as soon as the 4-byte header is
 *    in, without waiting for the body.
 *  - When emit asks to stop, *need is 0: the remaining data may already hold
 *    complete packets, so the caller may call again right away.
 *  - A caller that keeps the unconsumed bytes says how far into them the last
 *    call searched (pg_frame_split_resume): the search goes on from there,
 *    less eof_len - 1 bytes for a marker cut between two reads. */
#include "frame.h"

#include <string.h>

static const char *find_eof(const pg_frame_settings *fs, const char *p, size_t n)
{
    if (fs->eof_len == 1)
        return memchr(p, (unsigned char)fs->eof[0], n);
    return memmem(p, n, fs->eof, fs->eof_len);
}

/* How much of an unconsumed rest of len bytes, with no marker found in it,
 * the next call need not search again: all but a marker's last byte. */
static size_t searched_of(const pg_frame_settings *fs, size_t len)
{
    return len >= fs->eof_len ? len - (fs->eof_len - 1) : 0;
}

static ssize_t split_eof(const pg_frame_settings *fs, const char *data, size_t len,
                         pg_frame_emit_fn emit, void *arg, size_t *need, size_t *searched)
{
    size_t eof_len = fs->eof_len;
    if (fs->eof == NULL || eof_len == 0)
        return -1;
    size_t limit = fs->max_length + eof_len; /* largest packet incl. marker */
    if (limit < fs->max_length)
        limit = (size_t)-1;

    size_t pos = 0;
    size_t skip = *searched;         /* of the first packet only */
    *searched = 0;
    while (pos < len) {
        size_t rest = len - pos;
        size_t window = rest < limit ? rest : limit;
        if (skip > window)
            skip = window;
        const char *hit = window - skip >= eof_len ? find_eof(fs, data + pos + skip, window - skip)
                                                   : NULL;
        skip = 0;
        if (hit == NULL) {
            if (rest > limit)
                return -1;
            *searched = searched_of(fs, rest);
            break;
        }
        size_t body = (size_t)(hit - (data + pos));
        size_t next = pos + body + eof_len;
        if (emit != NULL && emit(arg, data + pos, body) != 0) {
            if (need != NULL)
                *need = 0;
            return (ssize_t)next;
        }
        pos = next;
    }
    if (need != NULL)
        *need = len - pos + 1;
    return (ssize_t)pos;
}

static uint32_t get_be32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | (uint32_t)u[3];
}

static ssize_t split_length(const pg_frame_settings *fs, const char *data, size_t len,
                            pg_frame_emit_fn emit, void *arg, size_t *need)
{
    size_t pos = 0;
    size_t want = PG_FRAME_LENGTH_HEADER;
    while (len - pos >= PG_FRAME_LENGTH_HEADER) {
        size_t body = get_be32(data + pos);
        if (body > fs->max_length)
            return -1;
        want = PG_FRAME_LENGTH_HEADER + body;
        if (len - pos < want)
            break;
        size_t next = pos + want;
        if (emit != NULL && emit(arg, data + pos + PG_FRAME_LENGTH_HEADER, body) != 0) {
            if (need != NULL)
                *need = 0;
            return (ssize_t)next;
        }
        pos = next;
        want = PG_FRAME_LENGTH_HEADER;
    }
    if (need != NULL)
        *need = want;
    return (ssize_t)pos;
}

ssize_t pg_frame_split(const pg_frame_settings *fs, const char *data, size_t len,
                       pg_frame_emit_fn emit, void *arg, size_t *need)
{
    size_t searched = 0;
    return pg_frame_split_resume(fs, data, len, emit, arg, need, &searched);
}

ssize_t pg_frame_split_resume(const pg_frame_settings *fs, const char *data, size_t len,
                              pg_frame_emit_fn emit, void *arg, size_t *need, size_t *searched)
{
    size_t searched_in = *searched;
    *searched = 0;
    if (fs == NULL || (data == NULL && len > 0))
        return -1;
    switch (fs->kind) {
    case PG_FRAME_EOF:
        *searched = searched_in;
        return split_eof(fs, data, len, emit, arg, need, searched);
    case PG_FRAME_LENGTH:
        return split_length(fs, data, len, emit, arg, need);
    case PG_FRAME_RAW:
        if (need != NULL)
            *need = 1;
        if (len > 0 && emit != NULL)
            emit(arg, data, len);
        return (ssize_t)len;
    }
    return -1;
}

size_t pg_frame_encode_header(const pg_frame_settings *fs, size_t len, char header[PG_FRAME_LENGTH_HEADER])
{
    if (fs == NULL || fs->kind != PG_FRAME_LENGTH)
        return 0;
    uint32_t n = (uint32_t)len;
    header[0] = (char)(n >> 24);
    header[1] = (char)(n >> 16);
    header[2] = (char)(n >> 8);
    header[3] = (char)n;
    return PG_FRAME_LENGTH_HEADER;
}

const char *pg_frame_encode_trailer(const pg_frame_settings *fs, size_t *len)
{
    if (fs != NULL && fs->kind == PG_FRAME_EOF && fs->eof != NULL) {
        if (len != NULL)
            *len = fs->eof_len;
        return fs->eof;
    }
    if (len != NULL)
        *len = 0;
    return ""; /* never NULL, so memcpy(dst, trailer, 0) stays defined */
}

/* frame.h - splitting a TCP byte stream into packets.
 *
 * Two of Swoole's framings: EOF split (a packet ends with package_eof, e.g.
 * "\r\n\r\n") and length check (a 4-byte big-endian body length, then the
 * body).  The functions here are pure: they look at bytes already read and
 * report complete packets, so the reactor can feed them data split across
 * reads or many packets in one read, and they are tested without sockets.
 * Packets are delivered without their framing (no EOF marker, no length
 * header); pg_frame_encode_* add it back when sending. */
#ifndef PG_FRAME_H
#define PG_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef enum {
    PG_FRAME_RAW = 0,   /* no framing: every read is delivered as it came */
    PG_FRAME_EOF,       /* packets end with eof[0..eof_len) */
    PG_FRAME_LENGTH,    /* 4-byte big-endian body length, then the body */
} pg_frame_kind;

typedef struct {
    pg_frame_kind kind;
    const char *eof;        /* PG_FRAME_EOF: the marker (may contain NUL bytes) */
    size_t eof_len;         /* 1..8 */
    size_t max_length;      /* largest packet body accepted (package_max_length) */
} pg_frame_settings;

#define PG_FRAME_LENGTH_HEADER 4

/* Called for each complete packet; return 0 to go on, non-zero to stop. */
typedef int (*pg_frame_emit_fn)(void *arg, const char *packet, size_t len);

/* Finds the complete packets at the start of data[0..len), calling emit for
 * each, and returns the number of bytes consumed (the rest is an incomplete
 * packet to keep for the next read).  Returns -1 when a packet is larger than
 * max_length (for EOF framing: when len - consumed exceeds max_length + eof_len
 * with no marker found), which means the connection must be closed.  When emit
 * returns non-zero, stops and returns the bytes consumed up to and including
 * that packet.  *need (may be NULL) gets how many bytes in total the remaining
 * data must reach before another call can make progress (len - consumed + 1 for
 * EOF framing; the whole packet size for length framing once its header is in),
 * so callers can skip needless calls on large packets. */
ssize_t pg_frame_split(const pg_frame_settings *fs, const char *data, size_t len,
                       pg_frame_emit_fn emit, void *arg, size_t *need);

/* pg_frame_split for a caller that keeps an incomplete packet between calls:
 * *searched (in) says how many bytes at the start of data an earlier call
 * already searched for the EOF marker without finding one, and (out) the same
 * of what is left unconsumed now.  Those bytes are not searched again, so a
 * packet that arrives a byte at a time costs linear time, not quadratic.  0
 * is always a safe value in; length and raw framing always give 0 out. */
ssize_t pg_frame_split_resume(const pg_frame_settings *fs, const char *data, size_t len,
                              pg_frame_emit_fn emit, void *arg, size_t *need, size_t *searched);

/* Writes the framing that goes before a body of len bytes into header and
 * returns its size (4 for length framing, 0 otherwise). */
size_t pg_frame_encode_header(const pg_frame_settings *fs, size_t len, char header[PG_FRAME_LENGTH_HEADER]);
/* The bytes that go after a body (the EOF marker), or len 0. */
const char *pg_frame_encode_trailer(const pg_frame_settings *fs, size_t *len);

#endif

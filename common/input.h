/* input.h - what a connection keeps of its input between reads.
 *
 * A reactor thread reads every socket into one buffer of its own and offers
 * the bytes to a consumer: the listener's framing or its protocol hook.  The
 * consumer takes the complete messages at the front and says how many bytes
 * it used; the rest, an incomplete message, is kept here.  When more bytes
 * arrive they are added to the kept ones, and the whole is offered again as
 * soon as it has reached the consumer's need: by default, as soon as anything
 * at all has arrived, so a message is never held back once its last byte is
 * in.  A connection with nothing kept holds no buffer.
 *
 * The functions here do not read sockets and do not know connections, so
 * the reactor's handling of hooks is unit tested without either. */
#ifndef PG_INPUT_H
#define PG_INPUT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct {
    char *data;                /* NULL while nothing is kept */
    uint32_t len, cap;
    uint32_t need;             /* offer again once len reaches this */
    uint32_t searched;         /* see pg_input_offer.searched */
} pg_input;

/* What a consumer is told of an offer, and tells back. */
typedef struct {
    /* in: bytes at the start of the data the consumer searched through, on
     * the offer before, without finding a message's end (EOF framing); out:
     * the same of the bytes it leaves. 0 whenever unsure. */
    size_t searched;
    /* out: how many bytes what it leaves must reach before another offer
     * can make progress; anything up to what it leaves (the preset 0) means
     * one byte more, i.e. offer again as soon as anything arrives. */
    size_t need;
    /* out: non-zero when the connection is closing, so nothing is kept. */
    int stop;
} pg_input_offer;

/* Takes the complete messages at the front of data[0..len) and returns the
 * bytes used, or -1 when the connection must close.  It must take every
 * complete message it can: what it leaves is offered again only with more. */
typedef ssize_t (*pg_input_consume_fn)(void *arg, const char *data, size_t len,
                                       pg_input_offer *offer);

/* Offers what came in a read (n > 0) together with what is kept, and keeps
 * what the consumer leaves.  0; or, and the caller closes, -1 when the
 * consumer failed or memory ran out, PG_INPUT_TOO_LONG when the kept bytes
 * would go over limit. */
#define PG_INPUT_TOO_LONG (-2)
int pg_input_feed(pg_input *in, const char *data, size_t n, size_t limit,
                  pg_input_consume_fn consume, void *arg);

/* Bytes kept now. */
size_t pg_input_kept(const pg_input *in);
void pg_input_free(pg_input *in);

#endif

/* input.c - what a connection keeps of its input between reads (see input.h).
 *
 * Design notes
 *  - The first offer of a read is made from the reactor's own buffer when
 *    nothing is kept, so the usual case (whole messages in one read) copies
 *    nothing; only what the consumer leaves is copied here.
 *  - The need is relative to the kept bytes and never below "one more than
 *    kept": a consumer that leaves an incomplete header is offered the rest
 *    as soon as any of it arrives, whatever it said. */
#include "input.h"

#include <stdlib.h>
#include <string.h>

static int input_append(pg_input *in, const char *data, size_t n, size_t limit)
{
    if ((size_t)in->len + n > limit || (size_t)in->len + n > UINT32_MAX)
        return PG_INPUT_TOO_LONG;
    if (in->len + n > in->cap) {
        size_t cap = in->cap ? in->cap : 1024;
        while (cap < in->len + n)
            cap *= 2;
        if (cap > UINT32_MAX)
            cap = UINT32_MAX;
        char *p = realloc(in->data, cap);
        if (!p)
            return -1;
        in->data = p;
        in->cap = (uint32_t)cap;
    }
    memcpy(in->data + in->len, data, n);
    in->len += (uint32_t)n;
    return 0;
}

/* Forgets the used bytes at the front; the buffer goes once empty. */
static void input_drop(pg_input *in, size_t used)
{
    in->len -= (uint32_t)used;
    if (in->len == 0)
        pg_input_free(in);
    else if (used > 0)
        memmove(in->data, in->data + used, in->len);
}

/* What the consumer said of the bytes now kept. */
static void input_note(pg_input *in, const pg_input_offer *o)
{
    size_t need = o->need > in->len ? o->need : (size_t)in->len + 1;
    in->need = need > UINT32_MAX ? UINT32_MAX : (uint32_t)need;
    in->searched = (uint32_t)(o->searched < in->len ? o->searched : in->len);
}

int pg_input_feed(pg_input *in, const char *data, size_t n, size_t limit,
                  pg_input_consume_fn consume, void *arg)
{
    pg_input_offer o = {0};
    if (in->len == 0) {
        ssize_t used = consume(arg, data, n, &o);
        if (used < 0 || (size_t)used > n)
            return -1;
        if (o.stop || (size_t)used == n)
            return 0;
        int rc = input_append(in, data + used, n - (size_t)used, limit);
        if (rc == 0)
            input_note(in, &o);
        return rc;
    }
    int rc = input_append(in, data, n, limit);
    if (rc < 0)
        return rc;
    if (in->len < in->need)
        return 0;
    o.searched = in->searched;
    ssize_t used = consume(arg, in->data, in->len, &o);
    if (used < 0 || (size_t)used > in->len)
        return -1;
    if (o.stop)
        return 0;
    input_drop(in, (size_t)used);
    input_note(in, &o);
    return 0;
}

size_t pg_input_kept(const pg_input *in)
{
    return in->len;
}

void pg_input_free(pg_input *in)
{
    free(in->data);
    *in = (pg_input){0};
}

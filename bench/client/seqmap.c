/* seqmap.c - bitmap of received sequence numbers (see seqmap.h). */
#include "seqmap.h"

#include <stdlib.h>
#include <string.h>

size_t pb_seq_bytes(const pb_seq *s)
{
    return (size_t)((s->nbits + 7) / 8);
}

static int seq_grow(pb_seq *s, uint64_t nbits)
{
    if (nbits <= s->nbits)
        return 0;
    if (nbits > PB_SEQ_LIMIT)
        return -1;
    uint64_t want = s->nbits ? s->nbits : 1024;
    while (want < nbits)
        want *= 2;
    if (want > PB_SEQ_LIMIT)
        want = PB_SEQ_LIMIT;
    size_t old = pb_seq_bytes(s), size = (size_t)((want + 7) / 8);
    uint8_t *bits = realloc(s->bits, size);
    if (!bits)
        return -1;
    memset(bits + old, 0, size - old);
    s->bits = bits;
    s->nbits = want;
    return 0;
}

int pb_seq_init(pb_seq *s, uint64_t expect)
{
    memset(s, 0, sizeof(*s));
    return seq_grow(s, expect ? expect : 1024);
}

void pb_seq_free(pb_seq *s)
{
    free(s->bits);
    s->bits = NULL;
    s->nbits = 0;
}

int pb_seq_has(const pb_seq *s, uint64_t seq)
{
    return seq < s->nbits && (s->bits[seq / 8] >> (seq % 8) & 1);
}

int pb_seq_mark(pb_seq *s, uint64_t seq)
{
    if (seq >= PB_SEQ_LIMIT || seq_grow(s, seq + 1) < 0) {
        s->out_of_range++;
        return -1;
    }
    uint8_t bit = (uint8_t)(1u << (seq % 8));
    if (s->bits[seq / 8] & bit) {
        s->dups++;
        return 0;
    }
    s->bits[seq / 8] |= bit;
    s->unique++;
    return 1;
}

uint64_t pb_seq_missing(const pb_seq *s, uint64_t expect, uint64_t *out, size_t max)
{
    uint64_t missing = 0;
    for (uint64_t i = 0; i < expect; i++) {
        if (i % 8 == 0 && i + 8 <= expect && i < s->nbits && s->bits[i / 8] == 0xff) {
            i += 7;
            continue;
        }
        if (!pb_seq_has(s, i)) {
            if (missing < max)
                out[missing] = i;
            missing++;
        }
    }
    return missing;
}

int pb_seq_merge(pb_seq *dst, const pb_seq *src)
{
    if (seq_grow(dst, src->nbits) < 0)
        return -1;
    for (size_t i = 0; i < pb_seq_bytes(src); i++) {
        uint8_t both = dst->bits[i] & src->bits[i];
        uint8_t fresh = src->bits[i] & (uint8_t)~dst->bits[i];
        dst->dups += (uint64_t)__builtin_popcount(both);
        dst->unique += (uint64_t)__builtin_popcount(fresh);
        dst->bits[i] |= src->bits[i];
    }
    dst->dups += src->dups;
    dst->out_of_range += src->out_of_range;
    return 0;
}

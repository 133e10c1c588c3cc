/* seqmap.h - which sequence numbers arrived: one bit per number, so a run
 * of a million messages costs 125 KB and missing and duplicate ids are
 * exact.  The map starts at the expected count and grows on demand up to a
 * limit; numbers past the limit are counted as out of range.  Maps of
 * several processes merge: a number set in both is a duplicate. */
#ifndef PB_SEQMAP_H
#define PB_SEQMAP_H

#include <stddef.h>
#include <stdint.h>

#define PB_SEQ_LIMIT ((uint64_t)1 << 30)    /* largest map: 128 MB */

typedef struct {
    uint8_t *bits;
    uint64_t nbits;             /* numbers 0..nbits-1 fit */
    uint64_t unique, dups, out_of_range;
} pb_seq;

int pb_seq_init(pb_seq *s, uint64_t expect);
void pb_seq_free(pb_seq *s);
/* 1: first time, 0: duplicate, -1: out of range (or out of memory). */
int pb_seq_mark(pb_seq *s, uint64_t seq);
int pb_seq_has(const pb_seq *s, uint64_t seq);
/* Numbers below expect that never arrived; the first max of them in out. */
uint64_t pb_seq_missing(const pb_seq *s, uint64_t expect, uint64_t *out, size_t max);
int pb_seq_merge(pb_seq *dst, const pb_seq *src);
size_t pb_seq_bytes(const pb_seq *s);

#endif

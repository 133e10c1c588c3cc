/* hist.h - latency histogram with log-linear buckets (HdrHistogram-style).
 *
 * Values are whole microseconds.  Below 256 every value has its own bucket;
 * above, each power of two is cut into 128 equal buckets, so a bucket is at
 * most 1/128 (< 1%) of its values wide: two significant digits from 1 us to
 * beyond 100 s.  Values of 2^27 us (134 s) and more share the last bucket
 * (the exact maximum is kept).  Percentiles come from the buckets, never by
 * sorting samples; histograms of different processes merge by adding. */
#ifndef PB_HIST_H
#define PB_HIST_H

#include <stdint.h>

#define PB_HIST_SUB_BITS 7                          /* 128 buckets per power of two */
#define PB_HIST_SUB (1u << PB_HIST_SUB_BITS)
#define PB_HIST_EXP_MAX 26                          /* highest exponent kept apart */
#define PB_HIST_BUCKETS (2 * PB_HIST_SUB + (PB_HIST_EXP_MAX - PB_HIST_SUB_BITS) * PB_HIST_SUB)

typedef struct {
    uint64_t count, min, max, sum;
    uint64_t buckets[PB_HIST_BUCKETS];
} pb_hist;

void pb_hist_init(pb_hist *h);
void pb_hist_add(pb_hist *h, uint64_t us);
void pb_hist_merge(pb_hist *dst, const pb_hist *src);
/* The value at percentile p (0..100): the highest value of the bucket that
 * holds it, never above the maximum; 0 when empty. */
uint64_t pb_hist_percentile(const pb_hist *h, double p);
double pb_hist_mean(const pb_hist *h);

/* Bucket arithmetic, exposed for tests. */
unsigned pb_hist_bucket(uint64_t us);
uint64_t pb_hist_bucket_high(unsigned bucket);

#endif
